"""modelcache: every model file on the machine, in one place."""

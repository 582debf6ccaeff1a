"""The acting side: the only package that changes files on disk.

Everything here takes a plan made by the finding side (or a download's file list) and carries
it out journaled, re-checking every fact first. `fsops` is the one module that removes, renames,
links or copies a file; the rest decide when and journal what it did. Only the CLI and the
download entry point import this package.
"""

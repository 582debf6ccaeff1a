"""The acting side: the only package that changes files on disk.

Everything here takes a plan made by the finding side (or a download's file list) and carries
it out journaled, re-checking every fact first. Only the CLI and the download entry point
(`hub.fetch`) import this package; it imports the finding side, the neutral modules and the
hub's finding modules, never the CLI or the report.

- `fsops`: the one module that removes, renames, links or copies a file;
- `journal`: the write-ahead journal of every change, and the writer lock;
- `results`: `Outcome`, `RunResult`, `Skip`: what a command returns;
- `runs`: the journaled run every command goes through (writer lock, recovery, journal, its end),
  and the change records several commands write;
- `guards`: the re-checks before a change (facts, roots, download locks, the byte comparison);
- `recover`: finishing or rolling back what an interrupted run left open;
- `consolidate`: `consolidate` and `apply`; `adopt`: `consolidate --adopt`;
- `undo`: reversing a consolidate or apply run;
- `clean`: clean's removals; `repair`: the re-downloads of `clean --repair` and `verify --repair`;
- `place`: a download's reuse, placing verified bytes from this machine as blobs of the cache.
"""

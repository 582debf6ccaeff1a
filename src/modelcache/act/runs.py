"""A journaled run, the one way every command that changes files goes about it, and the change records
several commands write.

    with exclusive() as recovered, journaled("clean", min_age=...) as journal:
        ...

`exclusive` takes the writer lock (one modelcache process changes files at a time) and first
finishes or rolls back what interrupted runs left; `journaled` starts a run's journal and ends it
`complete`, or `interrupted` when anything escapes the block. They are two steps so that a command
can look at the journals between them (undo finds the run to reverse after recovery, and an error
there leaves no journal behind).

Also here, because consolidate, adopt and clean all journal them: the `begin` record of a change to
one copy (`begin_change`) and the removal of an emptied folder. Imports `recover`, `journal`,
`fsops` and the plan's types only, so that the executors never import one another in a circle.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..plan import Action
from . import fsops
from .journal import Journal, WriterLock
from .recover import recover


@contextmanager
def exclusive() -> Iterator[list[str]]:
    """Hold the writer lock for the block, after recovering interrupted runs; yields their ids."""
    with WriterLock():
        yield recover()


@contextmanager
def journaled(command: str, **fields: Any) -> Iterator[Journal]:
    """A new run's journal for the block (call inside `exclusive`): ended `complete`, or `interrupted`
    when an exception (a Ctrl-C too) leaves the block."""
    journal = Journal.start(command, **fields)
    try:
        yield journal
    except BaseException:
        journal.finish("interrupted")
        raise
    journal.finish("complete")


def _snapshot_state(st: os.stat_result) -> dict[str, int]:
    return {
        "mode": st.st_mode,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "atime_ns": st.st_atime_ns,
        "mtime_ns": st.st_mtime_ns,
    }


def begin_change(journal: Journal, action: Action, op: str, target_st: os.stat_result, **extra: Any) -> dict[str, Any]:
    """Journal (fsynced) the `begin` of a change to `action`'s copy: all that recovery needs to finish or
    roll it back, and undo to restore the copy as it was (`target_state`)."""
    record = {
        "type": "begin",
        "action": action.id,
        "op": op,
        "target": action.target.path,
        "keep": action.keep.path,
        "digest": action.digest,
        "size": action.target.size,
        "target_ino": target_st.st_ino,
        "target_state": _snapshot_state(target_st),
        **extra,
    }
    journal.append(record)
    return record


def holds_only(folder: str, empty: Sequence[str]) -> bool:
    """True when every entry of `folder` is one of the `empty` folders."""
    try:
        with os.scandir(folder) as it:
            return all(entry.path in empty and entry.is_dir(follow_symlinks=False) for entry in it)
    except OSError:
        return False


def remove_empty_dir(folder: str, journal: Journal) -> bool:
    """Remove `folder` if it is empty, journaled; False when it is not (or no longer) empty."""
    if not holds_only(folder, ()):
        return False
    journal.append({"type": "begin", "action": f"rmdir:{folder}", "op": "rmdir", "target": folder})
    try:
        fsops.remove_dir(folder)
    except OSError as e:
        journal.append({"type": "abandoned", "action": f"rmdir:{folder}", "reason": e.strerror})
        return False
    journal.append({"type": "done", "action": f"rmdir:{folder}", "op": "rmdir"})
    return True

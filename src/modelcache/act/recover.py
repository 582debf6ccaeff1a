"""Closing changes a run left open: recovery of interrupted runs, and settling one change after an error.

Every command that changes files calls `recover` first (through `runs.exclusive`). A change is
decided from the disk alone: done if its rename (or removal) happened, else rolled back. Also here,
because recovery, adopt and undo all need them: rolling back an adoption, and putting back the
kept copy's mtime and mode that a hard link changed.

Imports `fsops`, `journal`, `aside` (prune's whole-or-nothing removal) and neutral modules only: the
executors import this module, never the other way round.
"""

from __future__ import annotations

import os
import stat
from contextlib import suppress
from typing import Any

from ..common import FILE_LIST_CAP, read_capped
from . import aside, fsops
from .journal import Journal, iter_open_changes, read_records, runs


def recover() -> list[str]:
    """Finish or roll back every change an interrupted run left open; returns those runs' ids.

    Decided from the disk alone: a change whose rename happened is done (the path holds a
    link to identical bytes, or a restored copy); any other is rolled back (its temporary
    file removed, a lowered mtime put back).
    """
    recovered = []
    for run in runs():
        records = read_records(run.path)
        open_changes = list(iter_open_changes(records))
        if run.finished and not open_changes:
            continue
        journal = Journal(run.path, run.run_id)
        for begin in open_changes:
            settle(begin, journal, recovered=True)
        if not run.finished:
            journal.finish("recovered")
        recovered.append(run.run_id)
    return recovered


def settle(begin: dict[str, Any], journal: Journal, recovered: bool = False) -> bool:
    """Close an open change from what the disk shows: done if its rename (or removal) happened,
    else rolled back (temporary file removed, the kept copy's mtime and mode put back).

    Used by recovery and right after an error, which can come after the change took effect (a
    folder fsync failing after the rename). Returns whether the change happened.
    """
    note = {"recovered": True} if recovered else {}
    if begin["op"] == "prune":  # a unit moved aside whole: finished once its first entry moved, else dropped
        gone = aside.settle(begin)
        journal.append({"type": "done" if gone else "abandoned", "action": begin["action"], "op": "prune", **note})
        return gone
    if begin["op"] == "adopt":
        roll_back_adoption(begin)
        journal.append({"type": "abandoned", "action": begin["action"], **note})
        return False
    if _happened(begin):
        journal.append({"type": "done", "action": begin["action"], "op": begin["op"], **note})
        return True
    restore_keep(begin)
    journal.append({"type": "abandoned", "action": begin["action"], **note})
    return False


def _happened(begin: dict[str, Any]) -> bool:
    target = begin["target"]
    if begin.get("tmp"):
        fsops.discard(begin["tmp"])  # done or not, the temporary name is no longer needed
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return begin["op"] in ("delete", "rmdir", "clean")
    if begin["op"] in ("delete", "rmdir", "clean"):
        return False
    return st.st_ino != begin.get("target_ino")


def restore_keep(begin: dict[str, Any]) -> None:
    """Put back the kept copy's mtime and mode where a hard link changed them (and nothing since)."""
    if begin.get("op") != "hardlink":
        return
    try:
        st = os.lstat(begin["keep"])
    except OSError:
        return
    if st.st_ino != begin["keep_ino"]:
        return
    if begin.get("lowered_mtime_ns") is not None and st.st_mtime_ns == begin["lowered_mtime_ns"]:
        fsops.set_mtime(begin["keep"], begin["keep_atime_ns"], begin["keep_mtime_ns"])
    if begin.get("protected_mode") is not None and stat.S_IMODE(st.st_mode) == begin["protected_mode"]:
        fsops.set_mode(begin["keep"], begin["keep_mode"])


def roll_back_adoption(begin: dict[str, Any]) -> None:
    """Take out what an adoption put in the cache, where it is still ours, and give the local file back its
    mode. The local file's bytes are never touched, and a blob that is the only copy left of them stays.

    A hard-linked blob is ours while it is the local file's inode. A cloned one while it is the inode the
    adoption journaled (`blob_ino`, learned once it was placed) or, before that, the inode its second name
    (`blob_tmp`) still names; and while the local file is as the adoption found it (else the clone is the
    only copy of the bytes it adopted).
    """
    for name in ("tmp", "ref_tmp", "tree_tmp"):
        if begin.get(name):
            fsops.discard(begin[name])
    tree = begin.get("tree")
    if tree and not begin.get("tree_existed") and read_text(tree) is not None:
        fsops.remove(tree)
    snapshot = begin["snapshot"]
    if not begin["snapshot_existed"] and os.path.islink(snapshot) and os.readlink(snapshot) == begin["link_text"]:
        fsops.remove(snapshot)
    ref = begin.get("ref")
    if ref and not begin["ref_existed"] and read_text(ref) == begin["commit"]:
        fsops.remove(ref)
    blob_st: os.stat_result | None = None
    local_st: os.stat_result | None = None
    with suppress(OSError):  # the blob was never made, or the local file is gone: then the blob must stay
        blob_st, local_st = os.lstat(begin["blob"]), os.lstat(begin["target"])
    if local_st is not None and local_st.st_ino == begin["keep_ino"]:
        protected = begin.get("protected_mode")
        if protected is not None and stat.S_IMODE(local_st.st_mode) == protected:
            fsops.set_mode(begin["target"], begin["keep_mode"])
    witness = begin.get("blob_ino") or _inode(begin.get("blob_tmp"))
    if begin.get("blob_tmp"):
        fsops.discard(begin["blob_tmp"])
    if blob_st is None or local_st is None or local_st.st_ino != begin["keep_ino"]:
        return
    if begin.get("method", "hardlink") == "hardlink":
        ours = blob_st.st_ino == local_st.st_ino
    else:
        as_found = (begin["size"], begin["target_state"]["mtime_ns"])
        ours = blob_st.st_ino == witness and (local_st.st_size, local_st.st_mtime_ns) == as_found
    if ours:
        fsops.remove(begin["blob"])


def _inode(path: str | None) -> int | None:
    try:
        return os.lstat(path).st_ino if path else None
    except OSError:
        return None


def read_text(path: str) -> str | None:
    """A ref or file list, as text; None for anything else (a link, a FIFO, past the size a file list has)."""
    try:
        return read_capped(path, FILE_LIST_CAP).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None

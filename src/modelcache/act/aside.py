"""Removing one unit of `prune` whole or not at all: its entries are moved aside, in order, into a
folder of modelcache's own in the unit's store (`<store>/.modelcache-<run>-<hex>.tmp/`, renames on one
file system), and then that folder is removed.

The first entry (a repo folder, a revision's snapshot folder, an Ollama manifest, ...) is the commit
point: its rename is atomic, and once it is done the tool no longer sees the unit. The entries after it
are those nothing else should name by then (blobs, a file list); a blob is moved only while it is still
the inode the plan saw and no snapshot (or manifest) left names it, so that a revision or model
downloaded meanwhile keeps its blobs. Killed at any point, the journal's `begin` record (written before
the folder is made) is enough for recovery: before the first rename, nothing happened (the empty folder
goes); after it, the rest is moved and the folder removed.

Imports `fsops` and the finding side's checks of what still names a blob; the executor (`prune.py`)
and recovery (`recover.py`) import this module.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from ..prune_units import blob_still_named, ollama_blob_still_named
from . import fsops

# What names a blob, by the folder that is read again (`unused_in` of a step): a repo folder's snapshots,
# or Ollama's manifests.
SNAPSHOTS, MANIFESTS = "snapshots", "manifests"


def remove_unit(begin: dict[str, Any]) -> int:
    """Carry out the removal `begin` journals; returns the bytes it freed (inodes whose last name went).
    An error before the first entry moved leaves the unit whole (the caller settles it either way)."""
    aside = begin["aside"]
    fsops.make_dirs(aside)
    fsops.fsync_dir(os.path.dirname(aside))
    fsops.move_aside(begin["steps"][0]["path"], os.path.join(aside, "0"))
    return finish(begin)


def happened(begin: dict[str, Any]) -> bool:
    """Whether the unit is gone for its tool: its first entry moved aside (or gone by other hands)."""
    first = begin["steps"][0]["path"]
    return os.path.lexists(os.path.join(begin["aside"], "0")) or not os.path.lexists(first)


def settle(begin: dict[str, Any]) -> bool:
    """Recovery: finish a removal whose first entry moved, else drop the folder it may have made. Returns
    whether the unit is gone."""
    if happened(begin):
        finish(begin)
        return True
    if os.path.lexists(begin["aside"]):
        _remove_tree(begin["aside"])
    return False


def finish(begin: dict[str, Any]) -> int:
    """Move the entries after the first (each only while it is as the plan found it and, for a blob, nothing
    left names it), then remove the folder with all it holds; returns the bytes that frees."""
    aside = begin["aside"]
    if not os.path.isdir(aside):  # the first entry went by other hands before the folder was made
        fsops.make_dirs(aside)
    for k, step in enumerate(begin["steps"][1:], start=1):
        moved = os.path.join(aside, str(k))
        if os.path.lexists(moved) or not _as_found(step) or _still_named(step):
            continue
        fsops.move_aside(step["path"], moved)
    return _remove_tree(aside)


def _as_found(step: dict[str, Any]) -> bool:
    try:
        st = os.lstat(step["path"])
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (step["dev"], step["ino"])


def _still_named(step: dict[str, Any]) -> bool:
    where, by = step.get("unused_in"), step.get("named_by")
    if where is None:
        return False
    if by == MANIFESTS:
        return ollama_blob_still_named(where, step["path"])
    return blob_still_named(where, step["path"])


def _remove_tree(folder: str) -> int:
    """Remove `folder` and everything in it, deepest first; the bytes of the inodes whose last name went."""
    freed = 0
    for dirpath, dirs, files in os.walk(folder, topdown=False):
        for name in [*files, *dirs]:
            st = fsops.remove_entry(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                freed += st.st_size
    fsops.remove_dir(folder)
    return freed

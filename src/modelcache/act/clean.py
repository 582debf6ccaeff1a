"""Carry out a clean plan: remove the garbage `clean.plan_clean` found, journaled, each item re-checked.

A partial download or a lock is removed under its lock, only while it is still the inode and mtime
the plan saw; a folder (a detached revision, an empty folder) entry by entry, then the folder;
a shared-store file through huggingface_hub's own sweep; a snapshot's missing file is downloaded
again (`repair`). Folders a removal left empty go too, up to the cache folder (or, for what clean
removes in a tool's own cache on request, up to that cache's folder).

Imports `fsops`, `runs`, `guards`, `recover`, `repair` and the finding side's clean plan.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from ..clean import CleanPlan, Garbage, revision_leftovers
from ..common import display, within
from . import fsops
from .guards import holding
from .journal import Journal
from .recover import read_text, settle
from .repair import repair
from .results import Outcome, RunResult, Skip
from .runs import exclusive, journaled, remove_empty_dir


def execute_clean(plan: CleanPlan, cache_dir: str, on_item: Callable[[Outcome], None] | None = None) -> RunResult:
    """Remove what `plan_clean` found, journaled; each item re-checked (same inode and mtime, lock free)."""
    with exclusive() as recovered, journaled("clean", min_age=plan.min_age) as journal:
        outcomes: list[Outcome] = []
        # Items the plan keeps (young, locked, in a repo being downloaded) are listed, not acted on.
        for i, item in enumerate((i for i in plan.items if i.fix != "keep"), start=1):
            outcome = _clean_one(i, item, journal, os.path.abspath(cache_dir))
            outcomes.append(outcome)
            if on_item is not None:
                on_item(outcome)
    return RunResult(journal.run_id, tuple(outcomes), 0, (), (), tuple(recovered))


def _clean_one(i: int, item: Garbage, journal: Journal, cache_dir: str) -> Outcome:
    try:
        if item.fix == "repair":
            repair(i, item, journal, cache_dir)
            return Outcome(i, item.path, "done", "repair")
        if item.fix == "sweep":
            return Outcome(i, item.path, "done", "sweep", freed=_sweep(i, item, journal, cache_dir))
        freed = _remove_garbage(i, item, journal)
        up_to = cache_dir if _below(item.path, cache_dir) else item.empty_up_to
        if up_to is not None and _below(item.path, up_to):
            _remove_emptied_parents(os.path.dirname(item.path), up_to, journal)
        return Outcome(i, item.path, "done", "remove", freed=freed)
    except Skip as e:
        return Outcome(i, item.path, "skipped", reason=str(e))
    except OSError as e:
        reason = f"{e.strerror}: {display(e.filename or item.path)}"
        begin = journal.open_begin(i)
        if begin is not None and settle(begin, journal):  # removed before the error (flushing the folder)
            return Outcome(i, item.path, "done", "remove", f"done, then: {reason}", item.frees)
        journal.append({"type": "failed", "action": i, "target": item.path, "reason": e.strerror})
        return Outcome(i, item.path, "failed", reason=reason)


def _below(path: str, folder: str) -> bool:
    """`path` lies inside `folder` and is not `folder` itself."""
    return path != folder and within(path, folder)


def _remove_garbage(i: int, item: Garbage, journal: Journal) -> int:
    if item.is_dir:
        return _remove_tree(i, item, journal)
    with holding(item.lock, "a live download holds its lock"):
        # Checked under the lock: a download may have finished (renamed its partial file) before it.
        try:
            st = os.lstat(item.path)
        except FileNotFoundError:
            raise Skip("already gone") from None
        if (st.st_ino, st.st_mtime_ns) != (item.ino, item.mtime_ns):
            raise Skip("changed since it was found")
        journal.append(
            {"type": "begin", "action": i, "op": "clean", "kind": item.kind, "target": item.path, "size": item.size}
        )
        fsops.remove(item.path)
        journal.append({"type": "done", "action": i, "op": "clean"})
    return item.frees


def _remove_tree(i: int, item: Garbage, journal: Journal) -> int:
    """A detached revision's snapshot (or markers) folder, or an empty folder: entries, then folders."""
    if item.kind == "detached-revision":
        repo_dir = os.path.dirname(os.path.dirname(item.path))
        commit = os.path.basename(item.path)
        refs = os.path.join(repo_dir, "refs")
        for dirpath, _dirs, files in os.walk(refs):
            if any(read_text(os.path.join(dirpath, f)) == commit for f in files):
                raise Skip("a ref points to this revision now")
        left = [p for p in revision_leftovers(repo_dir, commit) if p != item.path and os.path.lexists(p)]
        if os.path.basename(os.path.dirname(item.path)) == "snapshots" and left:
            # Its snapshot folder is how the next clean finds the revision's file list and markers.
            raise Skip(f"kept while {display(left[0])} is there (removing it failed)")
    entries = []
    for dirpath, dirs, files in os.walk(item.path, topdown=False):
        entries += [os.path.join(dirpath, f) for f in files] + [os.path.join(dirpath, d) for d in dirs]
    if item.kind == "empty-dir" and entries:
        raise Skip("no longer empty")
    journal.append(
        {"type": "begin", "action": i, "op": "clean", "kind": item.kind, "target": item.path, "entries": entries}
    )
    freed = 0
    for path in entries:  # deepest first: each folder is empty by the time its turn comes
        st = fsops.remove_entry(path)
        freed += st.st_size if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 else 0
    fsops.remove_dir(item.path)
    journal.append({"type": "done", "action": i, "op": "clean"})
    return freed


def _remove_emptied_parents(folder: str, up_to: str, journal: Journal) -> None:
    """Folders a removal left empty, up to (not including) `up_to` (the cache folder, or the tool's
    cache folder the item was in). A folder that a download fills again meanwhile stays (the removal
    it followed is done all the same)."""
    while _below(folder, up_to) and remove_empty_dir(folder, journal):
        folder = os.path.dirname(folder)


def _sweep(i: int, item: Garbage, journal: Journal, cache_dir: str) -> int:
    """A shared-store file, collected by huggingface_hub's own `sweep_shared_blob` (it re-checks under its lock)."""
    from huggingface_hub.utils._shared_blobs import sweep_shared_blob

    journal.append({"type": "begin", "action": i, "op": "clean", "kind": item.kind, "target": item.path})
    freed = sweep_shared_blob(Path(item.path), cache_dir=cache_dir)
    if not freed:
        journal.append({"type": "abandoned", "action": i, "reason": "still referenced"})
        raise Skip("huggingface_hub found it still referenced (or its manifest unreadable): kept")
    journal.append({"type": "done", "action": i, "op": "clean"})
    return freed if item.frees else 0

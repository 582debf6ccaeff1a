"""Undo a consolidate or apply run: every link it made becomes an independent copy again, every file it
removed comes back, every adoption is taken out of the cache, every folder it removed is made again.
Undo a prune run: the revisions it removed are downloaded again from the Hub (`prune.undo_prune`).

Changes are reversed newest first. A restored file is copied from the kept copy, whose bytes must
still hash to the sha256 the run verified; its mode, owner and times are put back as they were.
A path that changed since the run is left as it is (a skip). The undo is a journaled run itself.

Imports `fsops`, `runs`, `recover`, `journal`, `digests`, and `prune` (its undo).
"""

from __future__ import annotations

import os
import stat
from typing import Any

from ..common import display
from ..digests import Hasher
from ..errors import ModelcacheError
from ..inventory import Digest
from . import fsops
from .journal import Journal, RunInfo, find_run, latest_changes, read_records, runs
from .prune import undo_prune
from .recover import restore_keep, roll_back_adoption, settle
from .results import UNDOABLE, OnBytes, Outcome, RunResult, Skip
from .runs import exclusive, journaled


def undo(run_id: str | None = None, on_bytes: OnBytes = None) -> RunResult:
    """Turn every link a run made back into an independent copy, and restore every removed file.

    Each restored file is copied from the kept copy, whose bytes are checked against the
    sha256 the run verified; its mode, owner and times are put back as they were.
    """
    with exclusive() as recovered:
        # Found after recovery (which may close the run's changes) and before this undo's own journal:
        # "nothing to undo" leaves no journal behind.
        run = find_run(run_id) if run_id else _latest_undoable()
        if run.command == "undo":
            raise ModelcacheError("that run is an undo itself; undo the consolidate run it reversed")
        if run.command not in UNDOABLE:
            raise ModelcacheError(
                f"that run is a {run.command} run: undo puts back what consolidate, apply and prune changed"
            )
        records = read_records(run.path)
        begins = latest_changes(records)
        done = [begins[r["action"]] for r in records if r.get("type") == "done" and r["action"] in begins]
        with journaled("undo", of_run=run.run_id) as journal:
            outcomes: list[Outcome] = []
            verified = 0
            for i, change in enumerate(reversed(done), start=1):
                outcome, read = _undo_one(i, change, journal, on_bytes)
                outcomes.append(outcome)
                verified += read
    return RunResult(journal.run_id, tuple(outcomes), verified, (), (), tuple(recovered))


def _latest_undoable() -> RunInfo:
    all_runs = runs()
    undone = set()
    for r in all_runs:
        if r.command == "undo" and r.status == "complete":
            records = read_records(r.path)
            if not any(rec.get("type") == "failed" for rec in records):  # a failed restore: not undone
                undone.add(records[0].get("of_run"))
    candidates = [r for r in all_runs if r.command in UNDOABLE and r.run_id not in undone and r.changes]
    if not candidates:
        raise ModelcacheError("nothing to undo: no journaled run made changes that are not undone yet")
    return candidates[-1]


def _undo_one(i: int, change: dict[str, Any], journal: Journal, on_bytes: OnBytes) -> tuple[Outcome, int]:
    target, op = change["target"], change["op"]
    try:
        if op == "prune":  # downloaded again from the Hub (the network is needed)
            return undo_prune(i, change, journal), 0
        if op == "adopt":
            roll_back_adoption(change)
            return Outcome(i, target, "done", "unadopt"), 0
        if op == "rmdir":
            if not os.path.isdir(target):
                journal.append({"type": "begin", "action": i, "op": "mkdir", "target": target})
                fsops.make_dirs(target)
                journal.append({"type": "done", "action": i, "op": "mkdir"})
            return Outcome(i, target, "done", "mkdir"), 0
        state = change["target_state"]
        try:
            st: os.stat_result | None = os.lstat(target)
        except FileNotFoundError:
            st = None
        if op == "delete":
            if st is not None:
                raise Skip("a file is back at this path already; left as is")
        elif op == "hardlink":
            if st is None or st.st_ino != change["keep_ino"]:
                restore_keep(change)  # restored by an undo cut short before it put these back
                raise Skip("no longer linked to the kept copy; left as is")
        elif op == "symlink":
            if st is None or not stat.S_ISLNK(st.st_mode) or os.readlink(target) != change.get("symlink_to"):
                raise Skip("no longer the symlink consolidate made; left as is")
        elif op == "reflink":
            if st is None or (st.st_size, st.st_mtime_ns) != (change["size"], state["mtime_ns"]):
                raise Skip("changed since consolidate; left as is")
        else:
            raise Skip(f"unknown change {op!r} in the journal")
        read = _restore_copy(i, change, st, journal, on_bytes)
        restore_keep(change)
        return Outcome(i, target, "done", "restore"), read
    except Skip as e:
        return Outcome(i, target, "skipped", reason=str(e)), 0
    except OSError as e:
        journal.append({"type": "failed", "action": i, "target": target, "reason": e.strerror})
        return Outcome(i, target, "failed", reason=f"{e.strerror}: {display(e.filename or target)}"), 0


def _restore_copy(
    i: int, change: dict[str, Any], st: os.stat_result | None, journal: Journal, on_bytes: OnBytes
) -> int:
    """Put an independent copy of the kept bytes at the change's path, as the file was before."""
    target, state = change["target"], change["target_state"]
    tmp = fsops.temp_name(target, journal.run_id)
    journal.append(
        {
            "type": "begin",
            "action": i,
            "op": "restore",
            "target": target,
            "tmp": tmp,
            "target_ino": st.st_ino if st is not None else None,
            "of": change["action"],
        }
    )
    hasher = Hasher(change["size"])

    def seen(chunk: bytes) -> None:
        hasher.update(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))

    # A hard link is the kept copy's own inode: read it through this path, which works even when the kept
    # copy's name is gone since (clean removes a blob no snapshot uses, and consolidate may have kept one).
    source = target if change["op"] == "hardlink" and st is not None else change["keep"]
    try:
        if st is None:
            fsops.make_dirs(os.path.dirname(target))
        fsops.copy_to(
            source,
            tmp,
            state["mode"],
            state["atime_ns"],
            state["mtime_ns"],
            (state["uid"], state["gid"]),
            on_chunk=seen,
        )
        if not hasher.matches(Digest("sha256", change["digest"])):
            raise Skip(f"the kept copy {display(change['keep'])} no longer holds the bytes; not restored")
        fsops.replace(tmp, target)
    except BaseException:
        if settle(journal.last_begin, journal):  # restored before the error (a folder fsync)
            return hasher.seen
        raise
    journal.append({"type": "done", "action": i, "op": "restore"})
    return hasher.seen

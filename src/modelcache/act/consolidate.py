"""Carry out a consolidate plan (`consolidate`, `apply`): each duplicate linked to its kept copy or removed.

For each action, in this order:

1. re-check the facts the plan relied on (inode, size, mtime_ns of both copies);
2. take huggingface_hub's lock on the blob and skip a repo that is being downloaded;
3. compare the two copies byte for byte, and the kept one against its sha256 (read ahead by a
   pool of readers; a reading counts only if both copies are still the inodes, sizes, mtimes
   and ctimes it read, else they are read again here);
4. re-check the facts (a file written to while being read is skipped);
5. journal `begin` (fsynced) with all that is needed to finish or undo the change;
6. make the new entry under a temporary name beside the old one, re-check, rename it over;
7. journal `done`.

A crash anywhere leaves each path with its old bytes or a link to identical bytes, and at
most a temporary file that `recover` (run before any command that changes files) removes.
Adoptions are carried out by `adopt`. Imports `fsops`, `runs`, `guards`, `recover`, `adopt`,
`locks` and the finding side's types.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict

from .. import locks
from ..common import TMP_PREFIX, display
from ..plan import Action, FileState, Plan
from . import fsops, runs
from .adopt import adopt
from .guards import ReadAhead, Reading, check, compare, holding, inside_roots, still_verified
from .journal import Journal
from .recover import settle
from .results import OnBytes, Outcome, RunResult, Skip


def execute(
    plan: Plan,
    *,
    command: str = "consolidate",
    remove_empty_dirs: bool = False,
    on_bytes: OnBytes = None,
    on_action: Callable[[Outcome], None] | None = None,
) -> RunResult:
    """Carry out `plan`, journaled. Interrupted runs are recovered first."""
    with runs.exclusive() as recovered, runs.journaled(command, plan_header=asdict(plan.header)) as journal:
        outcomes: list[Outcome] = []
        verified = 0
        busy: dict[str, bool] = {}
        lowered: dict[tuple[int, int], int] = {}
        roots = tuple(os.path.realpath(r) for r in plan.header.roots)
        with ReadAhead(plan.actions, roots) as readings:
            for action in plan.actions:
                ahead = readings.take(action)
                outcome, read = _apply_one(action, journal, on_bytes, busy, lowered, roots, ahead)
                outcomes.append(outcome)
                verified += read
                if on_action is not None:
                    on_action(outcome)
        emptied = _emptied_dirs(plan, outcomes)
        removed: list[str] = []
        if remove_empty_dirs:
            for folder in emptied:
                if runs.remove_empty_dir(folder, journal):
                    removed.append(folder)
    return RunResult(journal.run_id, tuple(outcomes), verified, tuple(emptied), tuple(removed), tuple(recovered))


def nothing_to_do(plan: Plan) -> RunResult:
    """The result of a plan that changes nothing (every copy skipped or left alone): nothing runs or is journaled."""
    return RunResult("", tuple(_unchanged(a) for a in plan.actions), 0, (), (), ())


def _unchanged(action: Action) -> Outcome:
    """The outcome of an action that changes nothing: a skipped copy, or one left alone (which is no warning)."""
    status = "left_alone" if action.kind == "leave" else "skipped"
    return Outcome(action.id, action.target.path, status, reason=action.reason)


# -- one action --------------------------------------------------------------------------------------


def _apply_one(
    action: Action,
    journal: Journal,
    on_bytes: OnBytes,
    busy: dict[str, bool],
    lowered: dict[tuple[int, int], int],
    roots: Sequence[str],
    ahead: Reading | None = None,
) -> tuple[Outcome, int]:
    """One action. `lowered`: kept copies whose mtime this run lowered (for a hard link), by inode.
    `roots`: the real paths of the folders the plan was made from. `ahead`: its copies as a reader
    found them a moment ago, if one did."""
    if not action.changes:
        return _unchanged(action), 0
    try:
        adopted = (action.adopt.blob, action.adopt.snapshot) if action.adopt else ()
        inside_roots((action.target.path, action.keep.path, *adopted), roots)
        if action.kind == "adopt":
            return adopt(action, journal, on_bytes)
        keep_mtime = lowered.get((action.keep.dev, action.keep.ino))
        target_st = check(action.target, "this", lowered.get((action.target.dev, action.target.ino)))
        keep_st = check(action.keep, "the kept", keep_mtime)
        with _download_locks(action, busy):
            read = compare(action, on_bytes, ahead)
            target_st = check(action.target, "this", lowered.get((action.target.dev, action.target.ino)))
            keep_st = check(action.keep, "the kept", keep_mtime)
            if action.kind == "delete":
                return _delete(action, journal, target_st, keep_st, roots), read
            failures: list[str] = []
            for method in action.methods:
                try:
                    outcome = _link(action, method, journal, target_st, keep_st, roots)
                    if outcome.status == "done" and method == "hardlink":
                        lowered[(keep_st.st_dev, keep_st.st_ino)] = os.lstat(action.keep.path).st_mtime_ns
                    return outcome, read
                except OSError as e:
                    if method == "reflink" and e.errno in fsops.UNSUPPORTED:
                        failures.append(f"reflink: {e.strerror}")
                        continue
                    raise
            if action.reason is not None:  # auto planned a reflink alone: no hard link is safe here
                reason = f"{'; '.join(failures)}; {action.reason}"
                journal.append({"type": "left_alone", "action": action.id, "target": action.target.path})
                return Outcome(action.id, action.target.path, "left_alone", reason=reason), read
            raise Skip("; ".join(failures) or "no link method applies")
    except Skip as e:
        journal.append({"type": "skip", "action": action.id, "target": action.target.path, "reason": str(e)})
        return Outcome(action.id, action.target.path, "skipped", reason=str(e)), 0
    except OSError as e:
        reason = _os_reason(e)
        begin = journal.open_begin(action.id)
        if begin is not None and settle(begin, journal):  # it took effect before the error
            done = Outcome(action.id, action.target.path, "done", begin["op"], f"done, then: {reason}", action.frees)
            return done, 0
        journal.append({"type": "failed", "action": action.id, "target": action.target.path, "reason": reason})
        return Outcome(action.id, action.target.path, "failed", reason=reason), 0


def _os_reason(e: OSError) -> str:
    """strerror and the path that failed: os.link, os.symlink and os.replace name the new path second,
    and a failure on one of our temporary names is a failure to write in its folder."""
    where = e.filename2 or e.filename
    if not where:
        return str(e.strerror or e)
    where = str(where)
    if os.path.basename(where).startswith(TMP_PREFIX):
        return f"{e.strerror}: cannot write in {display(os.path.dirname(where))}"
    return f"{e.strerror}: {display(where)}"


def _download_locks_of(state: FileState) -> tuple[str | None, list[str]]:
    """(folder of the repo's locks, the locks of this file) as huggingface_hub makes them, for a copy in
    the HF cache or a local_dir; none for any other copy."""
    if state.store == "local_dir":
        return None, [locks.local_dir_lock(state.repo, os.path.relpath(state.path, state.repo))]
    repo_dir = state.repo
    if state.store != "hf_cache" or not os.path.basename(repo_dir).count("--"):
        return None, []
    parts = os.path.relpath(state.path, repo_dir).split(os.sep)
    blob = [locks.blob_lock_of(state.path)] if len(parts) == 2 and parts[0] == "blobs" else []
    return locks.repo_locks(os.path.dirname(repo_dir), os.path.basename(repo_dir)), blob


@contextmanager
def _download_locks(action: Action, busy_repos: dict[str, bool]) -> Iterator[None]:
    """Hold huggingface_hub's locks on both copies; `Skip` when a download holds one.

    Only locks huggingface_hub made are taken: creating one would leave a file undo cannot explain.
    """
    with ExitStack() as stack:
        for state in (action.keep, action.target):
            repo_locks, file_locks = _download_locks_of(state)
            if repo_locks is not None:
                if repo_locks not in busy_repos:
                    busy_repos[repo_locks] = locks.repo_busy(repo_locks)
                if busy_repos[repo_locks]:
                    raise Skip(f"{os.path.basename(state.repo)} is being downloaded")
            for lock_path in file_locks:
                stack.enter_context(holding(lock_path, f"{display(state.path)} is being downloaded"))
        yield


# -- the two changes -----------------------------------------------------------------------------------


def _delete(
    action: Action, journal: Journal, target_st: os.stat_result, keep_st: os.stat_result, roots: Sequence[str]
) -> Outcome:
    runs.begin_change(journal, action, "delete", target_st, keep_ino=action.keep.ino)
    try:
        still_verified(action, keep_st, roots)
    except Skip as e:
        journal.append({"type": "abandoned", "action": action.id, "reason": str(e)})
        raise
    fsops.remove(action.target.path)
    journal.append({"type": "done", "action": action.id, "op": "delete"})
    return Outcome(action.id, action.target.path, "done", "delete", freed=action.target.size)


def _link(
    action: Action,
    method: str,
    journal: Journal,
    target_st: os.stat_result,
    keep_st: os.stat_result,
    roots: Sequence[str],
) -> Outcome:
    target = action.target.path
    tmp = fsops.temp_name(target, journal.run_id)
    # A hard link shares one mtime: keep the older, so that huggingface_hub still trusts a
    # local_dir file (it does while the file is no newer than its metadata timestamp).
    lowered = method == "hardlink" and target_st.st_mtime_ns < keep_st.st_mtime_ns
    # A hard link also shares one content: a program that rewrites one name in place rewrites
    # every copy. huggingface_hub does exactly that when it updates a local_dir to a revision
    # whose new file is already cached (shutil.copyfile onto the existing file). Clearing the
    # write bits turns that silent corruption of the cache into a "Permission denied" (for
    # every user but root, whom no mode stops).
    protected = stat.S_IMODE(keep_st.st_mode) & ~0o222 if method == "hardlink" else None
    if protected == stat.S_IMODE(keep_st.st_mode):
        protected = None
    runs.begin_change(
        journal,
        action,
        method,
        target_st,
        tmp=tmp,
        keep_ino=keep_st.st_ino,
        keep_atime_ns=keep_st.st_atime_ns,
        keep_mtime_ns=keep_st.st_mtime_ns,
        lowered_mtime_ns=target_st.st_mtime_ns if lowered else None,
        keep_mode=stat.S_IMODE(keep_st.st_mode),
        protected_mode=protected,
        symlink_to=action.symlink_to,
    )
    try:
        if method == "hardlink":
            if lowered:
                fsops.set_mtime(action.keep.path, keep_st.st_atime_ns, target_st.st_mtime_ns)
            if protected is not None:
                fsops.set_mode(action.keep.path, protected)
            fsops.hardlink(action.keep.path, tmp)
        elif method == "reflink":
            fsops.reflink(action.keep.path, tmp, like=target_st)
        elif method == "symlink":
            assert action.symlink_to is not None
            fsops.symlink(action.symlink_to, tmp)
        else:
            raise Skip(f"unknown link method {method!r}")
        now = os.lstat(target)  # the last moment before the rename
        if (now.st_ino, now.st_size, now.st_mtime_ns) != (target_st.st_ino, target_st.st_size, target_st.st_mtime_ns):
            raise Skip("this copy changed since the plan was made")
        still_verified(action, keep_st, roots, tmp, method)
        fsops.replace(tmp, target)
    except BaseException:
        # Settled from the disk: the rename may have happened before the error (a folder fsync).
        if settle(journal.last_begin, journal):
            return Outcome(
                action.id, target, "done", method, "done, then an error flushing the folder", action.target.size
            )
        raise
    journal.append({"type": "done", "action": action.id, "op": method})
    return Outcome(action.id, target, "done", method, freed=action.target.size)


# -- folders the removals emptied ------------------------------------------------------------------------


def _emptied_dirs(plan: Plan, outcomes: Sequence[Outcome]) -> list[str]:
    """Folders that removals left empty (or holding only such folders), deepest first.

    Never above the copy's own repo or model folder.
    """
    deleted = {o.action_id for o in outcomes if o.status == "done" and o.method == "delete"}
    roots = {a.target.path: a.target.repo for a in plan.actions if a.id in deleted}
    empty: list[str] = []
    for path, root in sorted(roots.items(), key=lambda kv: -kv[0].count(os.sep)):
        folder = os.path.dirname(path)
        while folder not in empty and runs.holds_only(folder, empty):
            empty.append(folder)
            if folder == root:
                break
            folder = os.path.dirname(folder)
    return sorted(empty, key=lambda p: -p.count(os.sep))

"""Carry out a plan, undo a run, recover an interrupted one. The only caller of `fsops`.

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
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .act import fsops
from .act.journal import Journal, RunInfo, WriterLock, find_run, iter_open_changes, read_records, runs
from .clean import CleanPlan, Garbage
from .common import FILE_LIST_CAP, TMP_PREFIX, display, read_capped, within
from .digests import hash_file
from .duplicates import READERS
from .errors import ModelcacheError
from .plan import Action, FileState, Plan

CHUNK = 1 << 20
UNDOABLE = ("consolidate", "apply")  # what clean removed and verify --repair downloaded is not put back
OnBytes = Callable[[int], None] | None


@dataclass(frozen=True, slots=True)
class Outcome:
    action_id: int
    target: str
    status: str  # "done", "skipped", "failed"
    method: str | None = None
    reason: str | None = None
    freed: int = 0


@dataclass(frozen=True)
class RunResult:
    run_id: str
    outcomes: tuple[Outcome, ...]
    bytes_verified: int
    empty_dirs: tuple[str, ...]
    removed_dirs: tuple[str, ...]
    recovered: tuple[str, ...]  # interrupted runs finished or rolled back first

    @property
    def bytes_freed(self) -> int:
        return sum(o.freed for o in self.outcomes)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


class Skip(Exception):
    """This action is not carried out; the message says why. Nothing was changed."""


# -- finding the locks huggingface_hub uses ------------------------------------------------------------


def _hf_locks(state: FileState) -> tuple[str | None, str | None]:
    """(lock of this blob, folder of the repo's locks) for a file in the HF cache."""
    repo_dir = state.repo
    if state.store != "hf_cache" or not os.path.basename(repo_dir).count("--"):
        return None, None
    locks = os.path.join(os.path.dirname(repo_dir), ".locks", os.path.basename(repo_dir))
    rel = os.path.relpath(state.path, repo_dir)
    parts = rel.split(os.sep)
    blob_lock = os.path.join(locks, parts[1] + ".lock") if len(parts) == 2 and parts[0] == "blobs" else None
    return blob_lock, locks


def _local_dir_lock(state: FileState) -> str | None:
    if state.store != "local_dir":
        return None
    rel = os.path.relpath(state.path, state.repo)
    return os.path.join(state.repo, ".cache", "huggingface", "download", rel + ".lock")


def _held(lock_path: str) -> bool:
    """True when another process holds this lock (tried without waiting; an absent lock is free)."""
    if not os.path.exists(lock_path):
        return False
    lock = FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    except OSError:
        return False
    lock.release()
    return False


@contextmanager
def _download_locks(action: Action, busy_repos: dict[str, bool]) -> Iterator[None]:
    """Hold huggingface_hub's locks on both copies; `Skip` when a download holds one."""
    with ExitStack() as stack:
        for state in (action.keep, action.target):
            blob_lock, repo_locks = _hf_locks(state)
            if repo_locks is not None:
                if repo_locks not in busy_repos:
                    try:
                        names = os.listdir(repo_locks)
                    except OSError:
                        names = []
                    busy_repos[repo_locks] = any(_held(os.path.join(repo_locks, n)) for n in names)
                if busy_repos[repo_locks]:
                    raise Skip(f"{os.path.basename(state.repo)} is being downloaded")
            for lock_path in (blob_lock, _local_dir_lock(state)):
                # Only locks huggingface_hub made: creating one would leave a file undo cannot explain.
                if lock_path is None or not os.path.exists(lock_path):
                    continue
                lock = FileLock(lock_path, timeout=0)
                try:
                    lock.acquire()
                except Timeout:
                    raise Skip(f"{display(state.path)} is being downloaded") from None
                stack.callback(lock.release)
        yield


# -- checks ----------------------------------------------------------------------------------------------


def _check(state: FileState, what: str, mtime_ns: int | None = None) -> os.stat_result:
    """lstat `state.path` and compare with the plan; `mtime_ns` overrides the plan's where this run set it."""
    try:
        st = os.lstat(state.path)
    except OSError as e:
        raise Skip(f"{what} copy is gone or unreadable: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise Skip(f"{what} copy is no longer a regular file")
    expected_mtime = state.mtime_ns if mtime_ns is None else mtime_ns
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (state.dev, state.ino, state.size, expected_mtime):
        raise Skip(f"{what} copy changed since the plan was made")
    return st


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _inside_roots(paths: Iterable[str], roots: Sequence[str]) -> None:
    """`Skip` unless the folder of each path, every symlink resolved, lies inside one of `roots` (real
    paths): a folder swapped for a symlink since the plan leads out of the roots, where nothing is touched."""
    for path in paths:
        folder = os.path.realpath(os.path.dirname(path))
        if not any(within(folder, root) for root in roots):
            raise Skip(f"{display(path)} is now reached through a symlink out of the scanned folders")


def _still_verified(
    action: Action, keep_st: os.stat_result, roots: Sequence[str], made: str | None = None, method: str = ""
) -> None:
    """The last check before a copy is replaced or removed: the kept copy is still the inode whose bytes
    were compared (not a file put in its place since), the new entry `made` (a hard link or symlink) leads
    to that inode, and neither copy is now reached through a symlink out of the roots."""
    try:
        kept = os.lstat(action.keep.path)
        new = None
        if made is not None and method in ("hardlink", "symlink"):
            new = os.lstat(made) if method == "hardlink" else os.stat(made)  # a symlink: where it leads
    except OSError:
        raise Skip("the kept copy changed while this copy was being replaced") from None
    if not _same_file(kept, keep_st) or (new is not None and not _same_file(new, keep_st)):
        raise Skip("the kept copy changed while this copy was being replaced")
    _inside_roots((action.target.path, action.keep.path), roots)


# dev, ino, size, mtime_ns, ctime_ns: the ctime moves on any write, even one that puts the mtime back
Identity = tuple[int, int, int, int, int]


def _identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Stopped(Exception):
    """The run ended while a reader was still reading ahead."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What reading both copies of one action found, and which inode each copy was while it was read."""

    keep: Identity  # as the open file was before the read; after it, the same, else `stable` is False
    target: Identity
    stable: bool
    keep_digest: str | None  # None when the bytes differ: the reading stopped there
    same: bool
    read: int  # bytes read, both copies


def _read_both(action: Action, stop: threading.Event | None = None) -> Reading:
    """Read both copies in step: hash the kept one, compare the other with it byte for byte (equal
    bytes have equal digests, so one sha256 proves both). Stops at the first difference. OSError
    passes up; `stop` set ends the reading early with `_Stopped`. Which inodes were read comes from
    the open files, before and after."""
    keep_hash = hashlib.sha256()
    a, b = bytearray(CHUNK), bytearray(CHUNK)
    read = 0
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)  # a path swapped for a symlink is not followed
    with (
        open(os.open(action.keep.path, flags), "rb", buffering=0) as k,
        open(os.open(action.target.path, flags), "rb", buffering=0) as t,
    ):
        keep_before, target_before = _identity(os.fstat(k.fileno())), _identity(os.fstat(t.fileno()))
        same = True
        while True:
            if stop is not None and stop.is_set():
                raise _Stopped
            n, m = k.readinto(a), t.readinto(b)
            read += n + m
            if n != m or a[:n] != b[:m]:
                same = False
                break
            if not n:
                break
            keep_hash.update(memoryview(a)[:n])
        stable = (keep_before, target_before) == (_identity(os.fstat(k.fileno())), _identity(os.fstat(t.fileno())))
    return Reading(keep_before, target_before, stable, keep_hash.hexdigest() if same else None, same, read)


def _sha256(state: FileState) -> str | None:
    """sha256 of a copy, or None if it cannot be read whole: only to say which copy changed."""
    try:
        return hash_file(state.path, state.size).sha256
    except OSError:
        return None


class ReadAhead:
    """Reads the copies of the next actions in a pool of readers while the journaled steps run one
    at a time: on a cold disk many reads in flight are faster, and hashing uses every core.

    A reading is a hint, never a verdict: `_compare`, under the download locks, uses it only if
    both copies are still exactly what was read (inode, size, mtime and ctime: nothing has written
    to them or changed their metadata since), and reads them again itself otherwise.
    """

    def __init__(self, actions: Sequence[Action], roots: Sequence[str], workers: int = READERS) -> None:
        self._todo = iter([a for a in actions if a.kind not in ("skip", "adopt")])
        self._roots = roots
        self._workers = max(1, workers)
        self._pending: dict[int, Future[Reading | None]] = {}
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> ReadAhead:
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="modelcache-compare")
        self._fill()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _fill(self) -> None:
        assert self._pool is not None
        while len(self._pending) < 2 * self._workers:
            action = next(self._todo, None)
            if action is None:
                return
            self._pending[action.id] = self._pool.submit(self._read, action)

    def _read(self, action: Action) -> Reading | None:
        try:
            _inside_roots((action.target.path, action.keep.path), self._roots)  # nothing read out of the roots
            return _read_both(action, self._stop)
        except (OSError, Skip, _Stopped):
            return None  # `_compare` reads again and says why

    def take(self, action: Action) -> Reading | None:
        """The reading of `action`'s copies if one was made (waits for it), and reads further ahead."""
        future = self._pending.pop(action.id, None)
        self._fill()
        return None if future is None else future.result()


def _current(reading: Reading | None, action: Action) -> bool:
    """Whether `reading` read both copies as they are now: the same inodes, sizes, mtimes and ctimes
    (a change of metadata by this run, such as a hard link to the kept copy, also voids it)."""
    if reading is None or not reading.stable:
        return False
    try:
        now = (_identity(os.lstat(action.keep.path)), _identity(os.lstat(action.target.path)))
    except OSError:
        return False
    return now == (reading.keep, reading.target)


def _compare(action: Action, on_bytes: OnBytes, ahead: Reading | None = None) -> int:
    """Prove both copies hold `action.digest`: the kept one hashed, the other equal byte for byte.
    Uses the reading made ahead if it is still current, else reads now. `Skip` on any difference;
    returns the bytes read."""
    reading = ahead if _current(ahead, action) else None
    if reading is None:
        try:
            reading = _read_both(action)
        except OSError as e:
            raise Skip(f"cannot read: {e.strerror}") from None
    if on_bytes is not None:
        on_bytes(reading.read)
    if reading.same and reading.keep_digest == action.digest:
        return reading.read
    # Something differs: hash each copy whole to say which (rare, so read again).
    kept, dropped = _sha256(action.keep), _sha256(action.target)
    if kept != action.digest and dropped != action.digest:
        raise Skip(f"neither copy holds sha256 {action.digest[:12]} any more")
    if kept != action.digest:
        raise Skip(f"the kept copy {display(action.keep.path)} no longer matches its sha256: corrupted? not used")
    raise Skip(f"this copy differs from sha256 {action.digest[:12]} of the kept copy: corrupted? left as is")


def _snapshot_state(st: os.stat_result) -> dict[str, int]:
    return {
        "mode": st.st_mode,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "atime_ns": st.st_atime_ns,
        "mtime_ns": st.st_mtime_ns,
    }


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
    if action.kind == "skip":
        return Outcome(action.id, action.target.path, "skipped", reason=action.reason), 0
    try:
        adopted = (action.adopt.blob, action.adopt.snapshot) if action.adopt else ()
        _inside_roots((action.target.path, action.keep.path, *adopted), roots)
        if action.kind == "adopt":
            return _adopt(action, journal, on_bytes)
        keep_mtime = lowered.get((action.keep.dev, action.keep.ino))
        target_st = _check(action.target, "this", lowered.get((action.target.dev, action.target.ino)))
        keep_st = _check(action.keep, "the kept", keep_mtime)
        with _download_locks(action, busy):
            read = _compare(action, on_bytes, ahead)
            target_st = _check(action.target, "this", lowered.get((action.target.dev, action.target.ino)))
            keep_st = _check(action.keep, "the kept", keep_mtime)
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


def _begin(journal: Journal, action: Action, op: str, target_st: os.stat_result, **extra: Any) -> dict[str, Any]:
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


def _delete(
    action: Action, journal: Journal, target_st: os.stat_result, keep_st: os.stat_result, roots: Sequence[str]
) -> Outcome:
    _begin(journal, action, "delete", target_st, keep_ino=action.keep.ino)
    try:
        _still_verified(action, keep_st, roots)
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
    _begin(
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
        _still_verified(action, keep_st, roots, tmp, method)
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


def _verify_etag(action: Action, on_bytes: OnBytes) -> int:
    """Hash the local file and compare with the etag its metadata claims (sha256 or git blob sha1)."""
    size = action.target.size
    sha, git = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    try:
        with open(action.target.path, "rb") as f:
            while chunk := f.read(CHUNK):
                sha.update(chunk)
                git.update(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
    except OSError as e:
        raise Skip(f"cannot read: {e.strerror}") from None
    if action.digest not in (sha.hexdigest(), git.hexdigest()):
        raise Skip(f"bytes do not match the etag {action.digest[:12]} in its metadata: corrupted? not adopted")
    return size


def _adopt(action: Action, journal: Journal, on_bytes: OnBytes) -> tuple[Outcome, int]:
    """Make a local_dir file the cache's blob (a hard link: same inode, same mtime), with its snapshot link."""
    adoption = action.adopt
    assert adoption is not None
    target_st = _check(action.target, "this")
    read = _verify_etag(action, on_bytes)
    target_st = _check(action.target, "this")
    if os.path.lexists(adoption.blob):
        raise Skip("the HF cache holds this blob now")
    lock_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(adoption.blob))), ".locks")
    lock = FileLock(
        os.path.join(
            lock_dir, os.path.basename(os.path.dirname(os.path.dirname(adoption.blob))), adoption.etag + ".lock"
        ),
        timeout=0,
    )
    os.makedirs(os.path.dirname(lock.lock_file), exist_ok=True)
    try:
        lock.acquire()
    except Timeout:
        raise Skip("this blob is being downloaded") from None
    try:
        tmp = fsops.temp_name(adoption.snapshot, journal.run_id)
        ref_tmp = fsops.temp_name(adoption.ref, journal.run_id) if adoption.ref else None
        _begin(
            journal,
            action,
            "adopt",
            target_st,
            keep_ino=target_st.st_ino,
            blob=adoption.blob,
            snapshot=adoption.snapshot,
            link_text=adoption.link_text,
            snapshot_existed=os.path.lexists(adoption.snapshot),
            ref=adoption.ref,
            ref_existed=bool(adoption.ref and os.path.lexists(adoption.ref)),
            tree=adoption.tree,
            tree_existed=bool(adoption.tree and os.path.lexists(adoption.tree)),
            tree_tmp=fsops.temp_name(adoption.tree, journal.run_id) if adoption.tree else None,
            commit=adoption.commit,
            tmp=tmp,
            ref_tmp=ref_tmp,
        )
        try:
            fsops.make_dirs(os.path.dirname(adoption.blob))
            fsops.hardlink(action.target.path, adoption.blob)  # never overwrites: EEXIST if it appeared
            if not _same_file(os.lstat(adoption.blob), target_st):  # replaced since its etag was checked
                fsops.remove(adoption.blob)
                raise Skip("this copy changed while it was being adopted")
            if not os.path.lexists(adoption.snapshot):
                fsops.make_dirs(os.path.dirname(adoption.snapshot))
                fsops.symlink(adoption.link_text, tmp)
                fsops.replace(tmp, adoption.snapshot)
            if adoption.ref and ref_tmp and not os.path.lexists(adoption.ref):
                fsops.make_dirs(os.path.dirname(adoption.ref))
                fsops.write_new(ref_tmp, adoption.commit.encode())
                fsops.replace(ref_tmp, adoption.ref)
            tree_tmp = journal.last_begin.get("tree_tmp")
            if adoption.tree and adoption.tree_source and tree_tmp and not os.path.lexists(adoption.tree):
                # The commit's file list lets huggingface_hub (and `list`) tell the snapshot is complete.
                listing = read_capped(adoption.tree_source, FILE_LIST_CAP)
                fsops.make_dirs(os.path.dirname(adoption.tree))
                fsops.write_new(tree_tmp, listing)
                fsops.replace(tree_tmp, adoption.tree)
        except BaseException as e:
            _roll_back_adoption(journal.last_begin)
            journal.append({"type": "abandoned", "action": action.id, "reason": str(e)})
            raise
        journal.append({"type": "done", "action": action.id, "op": "adopt"})
    finally:
        lock.release()
    return Outcome(action.id, action.target.path, "done", "adopt"), read


def _roll_back_adoption(begin: dict[str, Any]) -> None:
    """Take out what an adoption put in the cache, where it is still ours; the local file is never touched."""
    for name in ("tmp", "ref_tmp", "tree_tmp"):
        if begin.get(name):
            fsops.discard(begin[name])
    tree = begin.get("tree")
    if tree and not begin.get("tree_existed") and _read_text(tree) is not None:
        fsops.remove(tree)
    snapshot = begin["snapshot"]
    if not begin["snapshot_existed"] and os.path.islink(snapshot) and os.readlink(snapshot) == begin["link_text"]:
        fsops.remove(snapshot)
    ref = begin.get("ref")
    if ref and not begin["ref_existed"] and _read_text(ref) == begin["commit"]:
        fsops.remove(ref)
    try:
        blob_st, local_st = os.lstat(begin["blob"]), os.lstat(begin["target"])
    except OSError:
        return  # the blob was never made, or the local file is gone: then the blob must stay
    if blob_st.st_ino == local_st.st_ino == begin["keep_ino"]:
        fsops.remove(begin["blob"])


def _read_text(path: str) -> str | None:
    """A ref or file list, as text; None for anything else (a link, a FIFO, past the size a file list has)."""
    try:
        return read_capped(path, FILE_LIST_CAP).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


# -- a whole plan ------------------------------------------------------------------------------------


def execute(
    plan: Plan,
    *,
    command: str = "consolidate",
    remove_empty_dirs: bool = False,
    on_bytes: OnBytes = None,
    on_action: Callable[[Outcome], None] | None = None,
) -> RunResult:
    """Carry out `plan`, journaled. Interrupted runs are recovered first."""
    with WriterLock():
        recovered = recover()
        journal = Journal.start(command, plan_header=asdict(plan.header))
        outcomes: list[Outcome] = []
        verified = 0
        busy: dict[str, bool] = {}
        lowered: dict[tuple[int, int], int] = {}
        roots = tuple(os.path.realpath(r) for r in plan.header.roots)
        try:
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
                    if _remove_empty_dir(folder, journal):
                        removed.append(folder)
        except BaseException:
            journal.finish("interrupted")
            raise
        journal.finish("complete")
    return RunResult(journal.run_id, tuple(outcomes), verified, tuple(emptied), tuple(removed), tuple(recovered))


def nothing_to_do(plan: Plan) -> RunResult:
    """The result of a plan whose every action is a skip: nothing runs, nothing is journaled."""
    outcomes = tuple(Outcome(a.id, a.target.path, "skipped", reason=a.reason) for a in plan.actions)
    return RunResult("", outcomes, 0, (), (), ())


def _emptied_dirs(plan: Plan, outcomes: Sequence[Outcome]) -> list[str]:
    """Folders that removals left empty (or holding only such folders), deepest first.

    Never above the copy's own repo or model folder.
    """
    deleted = {o.action_id for o in outcomes if o.status == "done" and o.method == "delete"}
    roots = {a.target.path: a.target.repo for a in plan.actions if a.id in deleted}
    empty: list[str] = []
    for path, root in sorted(roots.items(), key=lambda kv: -kv[0].count(os.sep)):
        folder = os.path.dirname(path)
        while folder not in empty and _holds_only(folder, empty):
            empty.append(folder)
            if folder == root:
                break
            folder = os.path.dirname(folder)
    return sorted(empty, key=lambda p: -p.count(os.sep))


def _holds_only(folder: str, empty: Sequence[str]) -> bool:
    """True when every entry of `folder` is one of the `empty` folders."""
    try:
        with os.scandir(folder) as it:
            return all(entry.path in empty and entry.is_dir(follow_symlinks=False) for entry in it)
    except OSError:
        return False


def _remove_empty_dir(folder: str, journal: Journal) -> bool:
    if not _holds_only(folder, ()):
        return False
    journal.append({"type": "begin", "action": f"rmdir:{folder}", "op": "rmdir", "target": folder})
    try:
        fsops.remove_dir(folder)
    except OSError as e:
        journal.append({"type": "abandoned", "action": f"rmdir:{folder}", "reason": e.strerror})
        return False
    journal.append({"type": "done", "action": f"rmdir:{folder}", "op": "rmdir"})
    return True


# -- recovery ------------------------------------------------------------------------------------------


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
    if begin["op"] == "adopt":
        _roll_back_adoption(begin)
        journal.append({"type": "abandoned", "action": begin["action"], **note})
        return False
    if _happened(begin):
        journal.append({"type": "done", "action": begin["action"], "op": begin["op"], **note})
        return True
    _restore_keep(begin)
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


def _restore_keep(begin: dict[str, Any]) -> None:
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


# -- undo ------------------------------------------------------------------------------------------------


def undo(run_id: str | None = None, on_bytes: OnBytes = None) -> RunResult:
    """Turn every link a run made back into an independent copy, and restore every removed file.

    Each restored file is copied from the kept copy, whose bytes are checked against the
    sha256 the run verified; its mode, owner and times are put back as they were.
    """
    with WriterLock():
        recovered = recover()
        run = find_run(run_id) if run_id else _latest_undoable()
        if run.command == "undo":
            raise ModelcacheError("that run is an undo itself; undo the consolidate run it reversed")
        if run.command not in UNDOABLE:
            raise ModelcacheError(f"that run is a {run.command} run: undo puts back what consolidate and apply changed")
        records = read_records(run.path)
        begins = {r["action"]: r for r in records if r.get("type") == "begin"}
        done = [begins[r["action"]] for r in records if r.get("type") == "done" and r["action"] in begins]
        journal = Journal.start("undo", of_run=run.run_id)
        outcomes: list[Outcome] = []
        verified = 0
        try:
            for i, change in enumerate(reversed(done), start=1):
                outcome, read = _undo_one(i, change, journal, on_bytes)
                outcomes.append(outcome)
                verified += read
        except BaseException:
            journal.finish("interrupted")
            raise
        journal.finish("complete")
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
        if op == "adopt":
            _roll_back_adoption(change)
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
                _restore_keep(change)  # restored by an undo cut short before it put these back
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
        _restore_keep(change)
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
    digest = hashlib.sha256()
    read = 0

    def seen(chunk: bytes) -> None:
        nonlocal read
        digest.update(chunk)
        read += len(chunk)
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
        if digest.hexdigest() != change["digest"]:
            raise Skip(f"the kept copy {display(change['keep'])} no longer holds the bytes; not restored")
        fsops.replace(tmp, target)
    except BaseException:
        if settle(journal.last_begin, journal):  # restored before the error (a folder fsync)
            return read
        raise
    journal.append({"type": "done", "action": i, "op": "restore"})
    return read


# -- clean ---------------------------------------------------------------------------------------------


def execute_clean(plan: CleanPlan, cache_dir: str, on_item: Callable[[Outcome], None] | None = None) -> RunResult:
    """Remove what `plan_clean` found, journaled; each item re-checked (same inode and mtime, lock free)."""
    with WriterLock():
        recovered = recover()
        journal = Journal.start("clean", min_age=plan.min_age)
        outcomes: list[Outcome] = []
        try:
            # Items the plan keeps (young, locked, in a repo being downloaded) are listed, not acted on.
            for i, item in enumerate((i for i in plan.items if i.fix != "keep"), start=1):
                outcome = _clean_one(i, item, journal, os.path.abspath(cache_dir))
                outcomes.append(outcome)
                if on_item is not None:
                    on_item(outcome)
        except BaseException:
            journal.finish("interrupted")
            raise
        journal.finish("complete")
    return RunResult(journal.run_id, tuple(outcomes), 0, (), (), tuple(recovered))


def _clean_one(i: int, item: Garbage, journal: Journal, cache_dir: str) -> Outcome:
    try:
        if item.fix == "repair":
            _repair(i, item, journal, cache_dir)
            return Outcome(i, item.path, "done", "repair")
        if item.fix == "sweep":
            return Outcome(i, item.path, "done", "sweep", freed=_sweep(i, item, journal, cache_dir))
        freed = _remove_garbage(i, item, journal)
        if within_folder(item.path, cache_dir):
            _remove_emptied_parents(os.path.dirname(item.path), cache_dir, journal)
        return Outcome(i, item.path, "done", "remove", freed=freed)
    except Skip as e:
        return Outcome(i, item.path, "skipped", reason=str(e))
    except OSError as e:
        journal.append({"type": "failed", "action": i, "target": item.path, "reason": e.strerror})
        return Outcome(i, item.path, "failed", reason=f"{e.strerror}: {display(e.filename or item.path)}")


def within_folder(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


@contextmanager
def _lock_free(lock_path: str | None) -> Iterator[None]:
    """Hold `lock_path` (an existing lock file) for the block; `Skip` when a live process holds it."""
    if lock_path is None or not os.path.exists(lock_path):
        yield
        return
    lock = FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise Skip("a live download holds its lock") from None
    try:
        yield
    finally:
        lock.release()


def _remove_garbage(i: int, item: Garbage, journal: Journal) -> int:
    if item.is_dir:
        return _remove_tree(i, item, journal)
    with _lock_free(item.lock):
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
            if any(_read_text(os.path.join(dirpath, f)) == commit for f in files):
                raise Skip("a ref points to this revision now")
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


def _remove_emptied_parents(folder: str, cache_dir: str, journal: Journal) -> None:
    """Folders a removal left empty, up to (not including) the cache folder itself. A folder that a
    download fills again meanwhile stays (the removal it followed is done all the same)."""
    while within_folder(folder, cache_dir) and _remove_empty_dir(folder, journal):
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


def _repair(i: int, item: Garbage, journal: Journal, cache_dir: str) -> None:
    """Download a snapshot's missing file again, through huggingface_hub (which relinks the snapshot)."""
    assert item.repair is not None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    repo_type, repo_id, commit, filename = item.repair
    journal.append({"type": "begin", "action": i, "op": "repair", "target": item.path})
    try:
        hf_hub_download(repo_id, filename, revision=commit, repo_type=repo_type, cache_dir=cache_dir)
    except (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as e:
        journal.append({"type": "abandoned", "action": i, "reason": str(e)})
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise Skip(f"could not download it again: {first_line}") from None
    journal.append({"type": "done", "action": i, "op": "repair"})


# -- verify --repair -------------------------------------------------------------------------------------


def redownload(targets: Sequence[tuple[str, tuple[str, str, str, str, str | None]]], cache_dir: str) -> RunResult:
    """Download corrupted files again through huggingface_hub, which replaces each by an atomic rename.

    `targets`: (corrupt path, (repo_type, repo_id, revision, filename, local_dir or None)).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    with WriterLock():
        recovered = recover()
        journal = Journal.start("verify-repair")
        outcomes: list[Outcome] = []
        for i, (path, (repo_type, repo_id, revision, filename, local_dir)) in enumerate(targets, start=1):
            journal.append({"type": "begin", "action": i, "op": "redownload", "target": path})
            try:
                hf_hub_download(
                    repo_id,
                    filename,
                    revision=revision,
                    repo_type=repo_type,
                    cache_dir=cache_dir,
                    local_dir=local_dir,
                    force_download=True,
                )
            except (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as e:
                journal.append({"type": "abandoned", "action": i, "reason": str(e)})
                first_line = (str(e).strip().splitlines() or [e.__class__.__name__])[0]
                outcomes.append(Outcome(i, path, "failed", reason=f"could not download it again: {first_line}"))
                continue
            journal.append({"type": "done", "action": i, "op": "redownload"})
            outcomes.append(Outcome(i, path, "done", "redownload"))
        journal.finish("complete")
    return RunResult(journal.run_id, tuple(outcomes), 0, (), (), tuple(recovered))

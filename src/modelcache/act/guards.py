"""The re-checks made before a copy is replaced or removed: nothing is forced, a changed fact is a `Skip`.

- `check`: a copy is still the inode, size and mtime the plan saw;
- `inside_roots`: its folder is still reached without a symlink out of the scanned folders;
- `still_verified`: the last check before the rename, that the kept copy is still the inode compared;
- `compare`: both copies hold the plan's sha256, the kept one hashed and the other equal byte for
  byte, from a reading made ahead by `ReadAhead` while it is still current, else read now;
- `holding`: a download lock held for the change, a live download being a `Skip`;
- `still_prunable`: a unit of prune is still as the plan saw it (the same files, no revision or file
  downloaded into it), unused since, and neither being downloaded nor in use.

Reads only (and takes locks): imports the finding side's types, `digests`, `locks` and neutral
modules, never `fsops`.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass

from .. import locks
from ..common import display, open_quietly, within
from ..digests import Hasher, hash_file, read_in_step
from ..duplicates import READERS
from ..plan import Action, FileState
from ..prune import Decision
from ..prune_units import REPO, REVISION, Unit
from ..stores.base import walk
from .results import OnBytes, Skip


def check(state: FileState, what: str, mtime_ns: int | None = None) -> os.stat_result:
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


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def inside_roots(paths: Iterable[str], roots: Sequence[str]) -> None:
    """`Skip` unless the folder of each path, every symlink resolved, lies inside one of `roots` (real
    paths): a folder swapped for a symlink since the plan leads out of the roots, where nothing is touched."""
    for path in paths:
        folder = os.path.realpath(os.path.dirname(path))
        if not any(within(folder, root) for root in roots):
            raise Skip(f"{display(path)} is now reached through a symlink out of the scanned folders")


def still_verified(
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
    if not same_file(kept, keep_st) or (new is not None and not same_file(new, keep_st)):
        raise Skip("the kept copy changed while this copy was being replaced")
    inside_roots((action.target.path, action.keep.path), roots)


@contextmanager
def holding(lock_path: str | None, busy: str, *, create: bool = False) -> Iterator[None]:
    """Hold a download lock for the block (`locks.hold`); `Skip(busy)` when a live process holds it."""
    with ExitStack() as stack:
        try:
            stack.enter_context(locks.hold(lock_path, create=create))
        except locks.Busy:
            raise Skip(busy) from None
        yield


# -- comparing the two copies ------------------------------------------------------------------------------

# dev, ino, size, mtime_ns, ctime_ns: the ctime moves on any write, even one that puts the mtime back
Identity = tuple[int, int, int, int, int]


def identity(st: os.stat_result) -> Identity:
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


def read_both(action: Action, stop: threading.Event | None = None) -> Reading:
    """Read both copies in step: hash the kept one, compare the other with it byte for byte (equal
    bytes have equal digests, so one sha256 proves both). Stops at the first difference. OSError
    passes up; `stop` set ends the reading early with `_Stopped`. Which inodes were read comes from
    the open files, before and after. Neither copy's access time moves where the kernel allows
    (`open_quietly`)."""
    read = 0

    def counted(n: int) -> None:
        nonlocal read
        if stop is not None and stop.is_set():
            raise _Stopped
        read += n

    nofollow = getattr(os, "O_NOFOLLOW", 0)  # a path swapped for a symlink is not followed
    with (
        open(open_quietly(action.keep.path, nofollow), "rb", buffering=0) as k,
        open(open_quietly(action.target.path, nofollow), "rb", buffering=0) as t,
    ):
        keep_before, target_before = identity(os.fstat(k.fileno())), identity(os.fstat(t.fileno()))
        keep_hash = Hasher(keep_before[2])  # the size the open file has
        (alike,) = read_in_step(k.fileno(), [t.fileno()], keep_hash, on_bytes=counted)
        if isinstance(alike, OSError):
            raise alike
        same = alike
        stable = (keep_before, target_before) == (identity(os.fstat(k.fileno())), identity(os.fstat(t.fileno())))
    # A file that changed size while it was read has no digest of its bytes: none matches the plan's.
    digest = keep_hash.result().sha256 if same and keep_hash.seen == keep_hash.size else None
    return Reading(keep_before, target_before, stable, digest, same, read)


def _sha256(state: FileState) -> str | None:
    """sha256 of a copy, or None if it cannot be read whole: only to say which copy changed."""
    try:
        return hash_file(state.path, state.size).sha256
    except OSError:
        return None


class ReadAhead:
    """Reads the copies of the next actions in a pool of readers while the journaled steps run one
    at a time: on a cold disk many reads in flight are faster, and hashing uses every core.

    A reading is a hint, never a verdict: `compare`, under the download locks, uses it only if
    both copies are still exactly what was read (inode, size, mtime and ctime: nothing has written
    to them or changed their metadata since), and reads them again itself otherwise.
    """

    def __init__(self, actions: Sequence[Action], roots: Sequence[str], workers: int = READERS) -> None:
        self._todo = iter([a for a in actions if a.changes and a.kind != "adopt"])
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
            inside_roots((action.target.path, action.keep.path), self._roots)  # nothing read out of the roots
            return read_both(action, self._stop)
        except (OSError, Skip, _Stopped):
            return None  # `compare` reads again and says why

    def take(self, action: Action) -> Reading | None:
        """The reading of `action`'s copies if one was made (waits for it), and reads further ahead."""
        future = self._pending.pop(action.id, None)
        self._fill()
        return None if future is None else future.result()


def current(reading: Reading | None, action: Action) -> bool:
    """Whether `reading` read both copies as they are now: the same inodes, sizes, mtimes and ctimes
    (a change of metadata by this run, such as a hard link to the kept copy, also voids it)."""
    if reading is None or not reading.stable:
        return False
    try:
        now = (identity(os.lstat(action.keep.path)), identity(os.lstat(action.target.path)))
    except OSError:
        return False
    return now == (reading.keep, reading.target)


def compare(action: Action, on_bytes: OnBytes, ahead: Reading | None = None) -> int:
    """Prove both copies hold `action.digest`: the kept one hashed, the other equal byte for byte.
    Uses the reading made ahead if it is still current, else reads now. `Skip` on any difference;
    returns the bytes read."""
    reading = ahead if current(ahead, action) else None
    if reading is None:
        try:
            reading = read_both(action)
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


def still_prunable(decision: Decision, cache_dir: str) -> None:
    """The last checks before a unit of prune goes (its download locks already held): `Skip` when its first
    entry is gone or another inode, a file of it was replaced or written or a revision or file downloaded into
    it since the plan, a file of it was used since (a newer access time, or modification time where the plan
    read those), a use of it was recorded since, or it is being downloaded or in use now."""
    from ..clean import open_files
    from ..prune_units import busy, in_use
    from ..uses import recorded_uses

    unit = decision.unit
    first = unit.steps[0]
    try:
        st = os.lstat(first.path)
    except OSError:
        raise Skip("already gone") from None
    if (st.st_dev, st.st_ino) != (first.dev, first.ino):
        raise Skip(f"{display(first.path)} changed since the plan was made")
    changed = _unlike_the_plan(unit)
    if changed is not None:
        raise Skip(changed)
    newest = 0
    for record in unit.used_by:
        try:
            now = os.lstat(record.path)
        except OSError:
            continue
        newest = max(newest, now.st_atime_ns if decision.by_atime else now.st_mtime_ns)
    if newest > decision.files_used_ns:
        raise Skip("used since the plan was made")
    folder = unit.repo_folder
    if folder is not None:
        uses = recorded_uses(cache_dir)
        if any(uses.get((folder, r.commit), 0.0) > decision.last_used for r in unit.revisions):
            raise Skip("located through modelcache since the plan was made (a recorded use)")
    open_now = open_files()
    why = busy(unit, open_now, probe=False) or in_use(unit, open_now, recheck=True)
    if why is not None:
        raise Skip(why)


def _unlike_the_plan(unit: Unit) -> str | None:
    """Why `unit` is no longer what the plan saw, or None: a file of it is another file now (another inode, size
    or modification time: replaced, or written), or one of its snapshots holds a revision or a file the plan did
    not see (a download into it since: its bytes would go with the unit). A file of it that is gone is no change
    (a detached revision of a repo goes before its repo, in the same run)."""
    for record in unit.files:
        try:
            st = os.lstat(record.path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (record.dev, record.ino, record.size, record.mtime_ns):
            return f"{record.relpath} was replaced or written since the plan was made"
    planned = {r.commit: set(r.files) for r in unit.revisions}
    snapshots: dict[str, str] = {}  # commit -> its snapshot folder, as the unit holds them now
    if unit.kind == REPO:
        folder = os.path.join(unit.path, "snapshots")
        with suppress(OSError):  # no snapshot at all: nothing downloaded into it
            paths = {commit: os.path.join(folder, commit) for commit in os.listdir(folder)}
            snapshots = {c: p for c, p in paths.items() if os.path.isdir(p)}  # as the scan: a file is no revision
    elif unit.kind == REVISION:
        snapshots = {r.commit: unit.path for r in unit.revisions}
    for commit, folder in sorted(snapshots.items()):
        if commit not in planned:
            return f"a revision the plan did not see was downloaded into it since: {commit[:12]}"
        new = sorted(set(_entries(folder)) - planned[commit])
        if new:
            return f"a file the plan did not see was downloaded into it since: {new[0]}"
    return None


def _entries(snapshot: str) -> Iterator[str]:
    """The paths (relative to `snapshot`) of its files and links, walked as the scan walks it: what a revision's
    file list names (what the scan skips, as modelcache's own leftovers, is not counted either)."""
    for entry in walk(snapshot, lambda _path, _why: None):
        if entry.is_file or entry.is_symlink:
            yield entry.relpath

"""huggingface_hub's download locks: where they are, whether a live process holds one, and taking one.

huggingface_hub (2.4, `file_download.py`) holds `<cache>/.locks/<repo folder>/<etag>.lock` while it
writes a blob, and `<local_dir>/.cache/huggingface/download/<path>.lock` while it writes a local_dir
file; both are `filelock` locks (flock on Linux). modelcache reads them in two ways:

- finding (`clean`'s plan, `consolidate`'s planner) only probes: `is_locked` opens the lock file
  read-only and tries a non-blocking flock, so it never creates a lock file;
- acting takes them (`hold`) for the length of a change, so that no download starts on the file
  meanwhile; a lock that is held raises `Busy` at once, never waits.

A repo with any of its locks held is being downloaded (`repo_busy`): every part of it is left alone.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

LOCKS = ".locks"
# Held by `modelcache download` for the whole download, in the repo's lock folder: `clean` and
# `consolidate` leave a repo alone while any of its locks is held, so a reused blob is never taken for
# an orphan in the moment before huggingface_hub links it into the snapshot.
DOWNLOAD_LOCK = "modelcache.download.lock"


class Busy(Exception):
    """A live process holds the lock; nothing was done."""


def repo_locks(cache_dir: str, repo_folder: str) -> str:
    """The folder of one repo's locks: `<cache>/.locks/<repo folder>`."""
    return os.path.join(cache_dir, LOCKS, repo_folder)


def blob_lock(cache_dir: str, repo_folder: str, etag: str) -> str:
    """The lock huggingface_hub holds while it writes `blobs/<etag>` of a repo."""
    return os.path.join(cache_dir, LOCKS, repo_folder, etag + ".lock")


def blob_lock_of(blob: str) -> str:
    """The lock of a blob given by its path, `<cache>/<repo folder>/blobs/<etag>`."""
    repo_dir = os.path.dirname(os.path.dirname(blob))
    return blob_lock(os.path.dirname(repo_dir), os.path.basename(repo_dir), os.path.basename(blob))


def local_dir_lock(local_dir: str, relpath: str) -> str:
    """The lock huggingface_hub holds while it writes `relpath` (os-separated) of a local_dir."""
    return os.path.join(local_dir, ".cache", "huggingface", "download", relpath + ".lock")


def is_locked(lock_path: str) -> bool:
    """True when a process holds this lock file. Tried read-only and without waiting: creates nothing,
    and an absent or unreadable lock file is free."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def held_lock_inodes(proc_locks: str = "/proc/locks") -> set[int] | None:
    """Inode numbers of the files some process holds a lock on (flock, POSIX or OFD), read from the kernel's
    table in one go; None where it cannot be read (then probe each lock file with `is_locked`). Matched by
    inode number alone: the table's device is the file system's, which on btrfs subvolumes is not what
    `stat` says; a number that is also another file system's reads as held (a lock kept, never one missed).
    Lines `N: -> ...` are waiters, which hold nothing."""
    try:
        with open(proc_locks, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    held: set[int] = set()
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        try:
            held.add(int(fields[5].rsplit(":", 1)[1]))
        except (IndexError, ValueError):
            continue
    return held


def repo_busy(locks_dir: str) -> bool:
    """True when any lock in a repo's lock folder is held: the repo is being downloaded."""
    try:
        names = os.listdir(locks_dir)
    except OSError:
        return False
    return any(is_locked(os.path.join(locks_dir, name)) for name in names)


@contextmanager
def hold(lock_path: str | None, *, create: bool = False, mode: int = 0o644, wait: bool = False) -> Iterator[None]:
    """Hold `lock_path` for the block; `Busy` at once when a live process holds it (`wait`: wait for it).

    Without `create`, a lock file that does not exist is not made (nothing to hold: no download
    runs without one), so that acting leaves no file that undo could not explain. `create` makes it
    as huggingface_hub does (its folder must exist).
    """
    if lock_path is None or (not create and not os.path.exists(lock_path)):
        yield
        return
    from filelock import FileLock, Timeout

    lock = FileLock(lock_path, timeout=-1 if wait else 0, mode=mode)
    try:
        lock.acquire()
    except Timeout:
        raise Busy(lock_path) from None
    try:
        yield
    finally:
        lock.release()

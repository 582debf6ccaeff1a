"""Folders walked ahead of the scan, so that a cold disk serves many metadata reads at once.

A scan reads folder listings, inodes (an `lstat` or `readlink` of every entry) and small
bookkeeping files (refs, tree listings, local_dir `.metadata`), one after the other: on a cold disk
each is a read that waits for the disk in turn (measured: a scan of 300 repos took 0.19 s with
the page cache warm and 0.9 s after it was dropped; docs/performance.md). `Prefetch` walks the
same folders in a few threads, a folder each, and asks for the small files' bytes
(`POSIX_FADV_WILLNEED`), so that those reads are in flight together and the scan finds them in
memory. It reads nothing the scan will not, keeps nothing, and never changes what the scan
finds: the scan still makes every system call itself.

It stops as soon as it is of no use: when the folders it walked made its thread read nothing
from the disk (`read_bytes` of /proc/thread-self/io: the page cache held them), the cache is
warm and walking twice would only cost time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from .common import open_quietly

THREADS = 4  # folders walked at once: a few reads in flight, without crowding the scan off the GIL
WARM_FOLDERS = 2  # folders in a row read without a byte from the disk: the rest is warm too, stop
SMALL_FILE = 1 << 20  # files asked for ahead (the bookkeeping files the scan reads are far smaller)
_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)
_READ_FILES = (".metadata", ".json")  # local_dir download metadata, tree listings; and refs/* below
_UNREAD = (".lock", ".locks")  # huggingface_hub's lock files and the cache's folder of them


def _disk_bytes() -> int | None:
    """Bytes this thread has had read from a disk so far (None where Linux does not say)."""
    try:
        fd = open_quietly("/proc/thread-self/io")
        try:
            text = os.read(fd, 4096)
        finally:
            os.close(fd)
        return int(text.split(b"read_bytes:")[1].split()[0])
    except (OSError, ValueError, IndexError):
        return None


class Prefetch:
    """Walks `folders` (in this order, `THREADS` at a time) ahead of a scan; `stop()` when the scan is done."""

    def __init__(self, folders: Sequence[str], threads: int | None = None) -> None:
        self.folders = list(folders)
        self.lock = threading.Lock()
        self.next = 0
        self.warm_in_a_row = 0
        self.stopped = False
        self.threads = [
            threading.Thread(target=self._run, name=f"modelcache-prefetch-{i}", daemon=True)
            for i in range(min(THREADS if threads is None else threads, len(self.folders)))
        ]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Stop walking, and wait for the threads (each ends the folder it is in): nothing of the scan
        goes on after it."""
        self.stopped = True
        for thread in self.threads:
            thread.join()

    def _run(self) -> None:
        try:
            while not self.stopped:
                with self.lock:
                    if self.next >= len(self.folders):
                        return
                    folder = self.folders[self.next]
                    self.next += 1
                before = _disk_bytes()
                self._walk(folder)
                after = _disk_bytes()
                if before is None or after is None:
                    continue
                with self.lock:
                    self.warm_in_a_row = self.warm_in_a_row + 1 if after == before else 0
                    if self.warm_in_a_row >= WARM_FOLDERS:
                        self.stopped = True
        except Exception:
            pass  # a prefetch that fails costs the scan nothing but the time it would have saved

    def _walk(self, folder: str) -> None:
        stack = [folder]
        while stack and not self.stopped:  # checked a folder at a time: `stop` waits for no more
            path = stack.pop()
            try:
                with os.scandir(path) as it:
                    entries = list(it)
            except OSError:
                continue
            in_refs = path.endswith("/refs") or "/refs/" in path
            for entry in entries:
                name = entry.name
                if name.endswith(_UNREAD):
                    continue  # lock files: the scan does not read them either
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        continue
                    st = entry.stat(follow_symlinks=False)  # the inode, as the scan's lstat or readlink
                except OSError:
                    continue
                if _WILLNEED is not None and st.st_size <= SMALL_FILE and (in_refs or name.endswith(_READ_FILES)):
                    _ask_for(entry.path, st.st_size)


def _ask_for(path: str, size: int) -> None:
    """Start reading a small file the scan will read (its bytes then wait in the page cache)."""
    try:
        fd = open_quietly(path, os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, size, _WILLNEED)  # type: ignore[arg-type]
    except OSError:
        pass
    finally:
        os.close(fd)


def folders_of(roots: Sequence[str]) -> list[str]:
    """The folders a scan of `roots` reads, as units of work: each root's subfolders, sorted (the
    order the readers go in)."""
    out: list[str] = []
    for root in roots:
        try:
            with os.scandir(root) as it:
                subs = sorted(e.path for e in it if e.is_dir(follow_symlinks=False) and not e.name.endswith(_UNREAD))
        except OSError:
            continue
        out.extend(subs)
    return out

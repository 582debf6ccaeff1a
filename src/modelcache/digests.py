"""Content digests and the persistent digest index.

A file is hashed once until it changes: the index keys each digest by the file's
(device, inode) and remembers the size and mtime_ns it had when hashed; any change to
either makes the entry stale. The index is an optimisation and never fatal: if it cannot
be opened or written, scanning goes on without it (with a warning).

Acting code (consolidate, clean) must never trust the index: it compares bytes itself.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .common import open_quietly
from .inventory import INODE_KEY, SHA256_RE, Digest, FileFacts, inode_key

CHUNK = 1 << 20  # 1 MiB reads into a reused buffer: large enough that hashlib (which frees the GIL) dominates
SMALL = 64 * 1024  # files up to this size are read with one read() call

_local = threading.local()


@dataclass(frozen=True, slots=True)
class HashResult:
    sha256: str
    gitsha1: str | None  # only computed when asked for (to check a git-blob claim)

    def matches(self, claim: Digest) -> bool:
        """Whether these are the bytes `claim` names (its sha256, or its git blob sha1)."""
        return (self.sha256 if claim.algorithm == "sha256" else self.gitsha1) == claim.hexdigest


class Hasher:
    """The one streaming hasher: sha256 of the bytes fed to it and, when asked, their git blob sha1
    (sha1 of `b"blob <size>\\0" + bytes`, the name of a small file's blob in the HF cache).

    The git header needs the size up front; `result()` refuses bytes of another length, so that a
    file that changed while it was read never yields a digest.

    >>> h = Hasher(2, gitsha1=True); h.update(b"hi"); h.result().gitsha1
    '32f95c0d1244a78b2be1bab8de17906fabb2c4a8'
    """

    __slots__ = ("_git", "_sha", "seen", "size")

    def __init__(self, size: int, *, gitsha1: bool = False) -> None:
        self.size = size
        self.seen = 0
        self._sha = hashlib.sha256()
        self._git = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False) if gitsha1 else None

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self._sha.update(chunk)
        if self._git is not None:
            self._git.update(chunk)
        self.seen += len(chunk)

    def result(self) -> HashResult:
        """The digests of what was fed; `OSError` unless that was exactly `size` bytes."""
        if self.seen != self.size:
            raise OSError(f"file changed while being read ({self.seen} bytes, expected {self.size})")
        return HashResult(self._sha.hexdigest(), self._git.hexdigest() if self._git is not None else None)

    def matches(self, claim: Digest) -> bool:
        """Whether the bytes fed are exactly `size` bytes whose digest is `claim` (sha256 or git blob sha1)."""
        return self.seen == self.size and self.result().matches(claim)


def _buffer(k: int) -> bytearray:
    """This thread's read buffer `k`: 0 for the file hashed, 1 for a file compared with it (made when
    first needed: a thread that only hashes holds one MiB, not two)."""
    bufs: list[bytearray] | None = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = []
    while len(bufs) <= k:
        bufs.append(bytearray(CHUNK))
    return bufs[k]


def _equal(a: bytearray, b: bytearray, n: int) -> bool:
    """`a[:n] == b[:n]`, copying nothing when `n` is the whole buffer: a slice of a MiB is a new
    allocation whose pages the kernel maps on first touch (0.75 ms, slower than hashing it)."""
    return a == b if n == len(a) else a[:n] == b[:n]


def _read_small(fd: int, size: int) -> bytes:
    """A small file's bytes, and a byte more if it has grown: usually one read() for the bytes and one
    that finds the end."""
    data = b""
    while len(data) <= size and (more := os.read(fd, size + 1 - len(data))):
        data += more
    return data


def read_in_step(
    fd: int,
    others: Sequence[int],
    hasher: Hasher,
    *,
    on_bytes: Callable[[int], None] | None = None,
    ahead: Callable[[int, int, int, int], int] | None = None,
) -> list[bool | OSError]:
    """Feed the bytes of `fd` (open at offset 0) to `hasher`, and read each of `others` in step with
    it, compared byte for byte: equal bytes have equal digests, so one hash proves them all, at the
    cost of a memcmp for each other file instead of a hash.

    Returns, for each other file, True if it held exactly the same bytes, False at its first
    difference (where its reading stops), or the `OSError` that stopped it. `fd` is read to its
    end, or, when there are other files, until none is left alike: then `hasher` may have seen
    only part of it (`result()` raises). An `OSError` of `fd` passes up. `ahead(fd, asked, done, size)` asks the
    kernel for more of each file as it is read (`reading.will_need_ahead`); `on_bytes(n)` is told
    of every read, whichever file it was."""
    size = hasher.size
    if size <= SMALL:  # read whole, without the large buffers (a thread that never needs them has none)
        data = _read_small(fd, size)
        hasher.update(data)
        if on_bytes is not None:
            on_bytes(len(data))
        alike: list[bool | OSError] = []
        for o in others:
            try:
                theirs = _read_small(o, size)
            except OSError as e:
                alike.append(e)
                continue
            if on_bytes is not None:
                on_bytes(len(theirs))
            alike.append(theirs == data)
        return alike
    buf = _buffer(0)
    other = _buffer(1) if others else buf  # `other` is not read into without others
    view, other_view = memoryview(buf), memoryview(other)
    alike = [True] * len(others)
    asked = [0] * (1 + len(others))
    try:
        while True:
            if ahead is not None:
                asked[0] = ahead(fd, asked[0], hasher.seen, size)
            n = os.readv(fd, [buf])
            hasher.update(view[:n])
            if on_bytes is not None and n:
                on_bytes(n)
            for i, o in enumerate(others):
                if alike[i] is not True:
                    continue
                try:
                    if ahead is not None:
                        asked[i + 1] = ahead(o, asked[i + 1], hasher.seen - n, size)
                    # At the end of `fd`, a byte more: the other file must end there too.
                    m = os.readv(o, [other_view[: n or 1]])
                except OSError as e:
                    alike[i] = e
                    continue
                if m != n or not _equal(buf, other, n):
                    alike[i] = False
                elif on_bytes is not None and m:
                    on_bytes(m)
            if not n or (others and True not in alike):
                return alike
    finally:
        view.release()
        other_view.release()


def hash_file(
    path: str, size: int, *, gitsha1: bool = False, on_bytes: Callable[[int], None] | None = None
) -> HashResult:
    """sha256 of a file's bytes and, optionally, its git blob sha1, in one read (a `Hasher`).

    `size` is the size the caller expects; the git blob header needs it up front, and a file
    that changed size while being read raises `OSError` rather than yield a wrong digest.
    The file's access time stays as it was where the kernel allows (`open_quietly`).
    Thread-safe: each thread reads into a buffer of its own.
    """
    fd = open_quietly(path)
    try:
        if size > SMALL:
            # Tell the kernel the whole file will be read: it doubles its readahead.
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        hasher = Hasher(size, gitsha1=gitsha1)
        read_in_step(fd, (), hasher, on_bytes=on_bytes)
        return hasher.result()
    finally:
        os.close(fd)


EDGE = 64 * 1024  # the fingerprint's block at each end


def edge_block(size: int, block: int = EDGE) -> int:
    return min(block, size)


def edge_fingerprint(path: str, size: int, block: int = EDGE) -> bytes:
    """sha256 of the first and last `block` bytes: splits same-size groups before full hashes."""
    fd = open_quietly(path)
    try:
        return fingerprint_open(fd, size, block)
    finally:
        os.close(fd)


def fingerprint_open(fd: int, size: int, block: int = EDGE) -> bytes:
    """`edge_fingerprint` of a file already open."""
    h = hashlib.sha256()
    h.update(os.pread(fd, block, 0))
    if size > block:
        h.update(os.pread(fd, block, max(block, size - block)))
    return h.digest()


# Digests are written to the index in transactions of this many rows: few enough commits to cost
# nothing next to the hashing, few enough rows queued to cost no memory.
WRITE_ROWS = 4096
# ... or after this many seconds, whichever comes first: a run over a few large files that is
# stopped keeps all but the last seconds of its work too (a commit costs milliseconds).
WRITE_SECONDS = 5.0
ROWS_PER_STATEMENT = 199  # 5 values a row: under the 999 variables a statement of SQLite before 3.32
_ENTRY = struct.Struct("=qq")  # size, mtime_ns
T = TypeVar("T")


@functools.lru_cache(maxsize=8)
def _insert(rows: int) -> str:
    return "INSERT OR REPLACE INTO digests VALUES " + ", ".join(["(?, ?, ?, ?, ?)"] * rows)


class DigestIndex:
    """SQLite index of sha256 digests keyed by (dev, ino), valid while size and mtime_ns match.

    >>> idx = DigestIndex(Path("/tmp/digests.sqlite"))  # doctest: +SKIP
    >>> idx.lookup(facts)                                # None until hashed  # doctest: +SKIP
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.error: str | None = None
        self._db: sqlite3.Connection | None = None
        self._cache: dict[bytes, bytes] = {}  # inode_key -> _ENTRY (size, mtime_ns) + raw sha256
        self._pending: list[tuple[int, int, int, int, str]] = []
        self._written_at = time.monotonic()
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(path), timeout=30)
            db.execute(
                "CREATE TABLE IF NOT EXISTS digests (dev INTEGER, ino INTEGER, size INTEGER, "
                "mtime_ns INTEGER, sha256 TEXT NOT NULL, PRIMARY KEY (dev, ino))"
            )
            # The last `verify` verdict of each inode that did not match its claim (`list` shows "corrupt").
            db.execute(
                "CREATE TABLE IF NOT EXISTS corrupt (dev INTEGER, ino INTEGER, size INTEGER, "
                "mtime_ns INTEGER, claim TEXT NOT NULL, PRIMARY KEY (dev, ino))"
            )
            db.commit()
            self._db = db
        except (OSError, sqlite3.Error) as e:
            self.error = f"digest index unusable, hashing without it: {path}: {e}"

    def known(self, items: Iterable[T], facts_of: Callable[[T], FileFacts]) -> Iterator[tuple[T, Digest]]:
        """(item, digest) for each item whose inode the index holds a digest of, taken at the item's
        size and mtime. One query, and nothing kept: a warm index held in memory was 50 MB at a
        million files. The items must be of distinct inodes.

        >>> for node, digest in index.known(nodes, lambda n: n.record): ...  # doctest: +SKIP
        """
        rows = self._rows()
        if not rows:
            return  # a first run: nothing to look for (the wanted inodes alone would cost 25 MB at 1M files)
        wanted = {inode_key(facts_of(item)): item for item in items}
        for key, size, mtime_ns, sha in self._select(wanted, rows):
            item = wanted[key]
            facts = facts_of(item)
            if facts.size == size and facts.mtime_ns == mtime_ns:
                yield item, Digest("sha256", sha)

    def load(self, files: Iterable[FileFacts]) -> None:
        """Read the entries of the inodes of `files` into memory (for `lookup`), in one query.

        Held packed: 16-byte inode keys, and size, mtime and the raw digest in one bytes object
        (170 bytes an entry rather than 400).
        """
        rows = self._rows()
        if not rows:
            return
        cache = self._cache
        wanted = {key for f in files if (key := inode_key(f)) not in cache}
        for key, size, mtime_ns, sha in self._select(wanted, rows):
            cache[key] = _ENTRY.pack(size, mtime_ns) + bytes.fromhex(sha)

    def _rows(self) -> int:
        if self._db is None:
            return 0
        try:
            return int(self._db.execute("SELECT count(*) FROM digests").fetchone()[0])
        except sqlite3.Error as e:
            self.error = f"digest index unreadable, hashing without it: {self.path}: {e}"
            self._db = None
            return 0

    def _select(self, wanted: Collection[bytes], rows: int) -> Iterator[tuple[bytes, int, int, str]]:
        """The rows of the `wanted` inode keys (of an index of `rows` rows): (key, size, mtime_ns,
        sha256), damaged rows left out.

        When the wanted inodes are a good part of the index, one pass over the table filtered here
        costs least (~2 us a row); otherwise a temporary table of them is matched against the
        primary key (~5 us an inode).
        """
        db = self._db
        if db is None or not wanted:
            return
        try:
            if 3 * len(wanted) >= rows:
                found = db.execute("SELECT dev, ino, size, mtime_ns, sha256 FROM digests")
            else:
                db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (dev INTEGER, ino INTEGER)")
                db.execute("DELETE FROM temp.wanted")
                db.executemany("INSERT INTO temp.wanted VALUES (?, ?)", map(INODE_KEY.unpack, wanted))
                found = db.execute(
                    "SELECT dev, ino, size, mtime_ns, sha256 FROM digests "
                    "WHERE (dev, ino) IN (SELECT dev, ino FROM temp.wanted)"
                )
            for dev, ino, size, mtime_ns, sha in found:
                try:
                    key = INODE_KEY.pack(dev, ino)
                except (struct.error, TypeError):
                    continue  # a row no file of this machine can have: never a match
                if (
                    key in wanted
                    and sha.__class__ is str
                    and SHA256_RE.fullmatch(sha)
                    and size.__class__ is int
                    and mtime_ns.__class__ is int
                ):
                    yield key, size, mtime_ns, sha
            db.execute("DROP TABLE IF EXISTS temp.wanted")
            db.commit()
        except sqlite3.Error as e:
            self.error = f"digest index unreadable, hashing without it: {self.path}: {e}"
            self._db = None

    def lookup(self, facts: FileFacts) -> Digest | None:
        """The sha256 recorded for this inode, if it was hashed with this exact size and mtime."""
        entry = self._cache.get(inode_key(facts))
        if entry is None or _ENTRY.unpack_from(entry) != (facts.size, facts.mtime_ns):
            return None
        return Digest("sha256", entry[_ENTRY.size :].hex())

    def record(self, facts: FileFacts, sha256: str) -> None:
        """Queue a digest for the index; written every `WRITE_ROWS` digests or `WRITE_SECONDS`, and at `flush`.

        Not added to what `lookup` answers: lookups tell what earlier runs recorded, and holding
        every new digest in memory as well cost ~100 MB at a million files.
        """
        self._pending.append((facts.dev, facts.ino, facts.size, facts.mtime_ns, sha256))
        if len(self._pending) >= WRITE_ROWS or time.monotonic() - self._written_at >= WRITE_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write queued digests in one transaction (so a long run that is stopped keeps what it hashed)."""
        if self._db is None or not self._pending:
            self._pending.clear()
            return
        rows = self._pending
        self._written_at = time.monotonic()
        try:
            with self._db:
                # Many rows a statement: sqlite3 lets go of the GIL around each step, and while the
                # hashing threads run, taking it back costs up to a switch interval: executemany (a
                # step a row) spent 0.25 s of a 1.1 s run writing 32,853 rows (docs/performance.md).
                for i in range(0, len(rows), ROWS_PER_STATEMENT):
                    chunk = rows[i : i + ROWS_PER_STATEMENT]
                    self._db.execute(_insert(len(chunk)), [value for row in chunk for value in row])
        except sqlite3.Error as e:
            self.error = f"digest index not updated: {self.path}: {e}"
        self._pending.clear()

    def set_verdict(self, facts: FileFacts, corrupt_claim: str | None) -> None:
        """Remember that `verify` found this inode corrupt (`corrupt_claim`), or whole (None)."""
        if self._db is None:
            return
        try:
            with self._db:
                self._db.execute("DELETE FROM corrupt WHERE dev=? AND ino=?", facts.inode)
                if corrupt_claim is not None:
                    self._db.execute(
                        "INSERT INTO corrupt VALUES (?, ?, ?, ?, ?)",
                        (facts.dev, facts.ino, facts.size, facts.mtime_ns, corrupt_claim),
                    )
        except sqlite3.Error as e:
            self.error = f"digest index not updated: {self.path}: {e}"

    def corrupt(self) -> set[tuple[int, int, int, int]]:
        """(dev, ino, size, mtime_ns) of every inode the last `verify` found corrupt."""
        if self._db is None:
            return set()
        try:
            return set(self._db.execute("SELECT dev, ino, size, mtime_ns FROM corrupt"))
        except sqlite3.Error:
            return set()

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None

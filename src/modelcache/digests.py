"""Content digests and the persistent digest index.

A file is hashed once until it changes: the index keys each digest by the file's
(device, inode) and remembers the size and mtime_ns it had when hashed; any change to
either makes the entry stale. The index is an optimisation and never fatal: if it cannot
be opened or written, scanning goes on without it (with a warning).

Acting code (consolidate, clean) must never trust the index: it compares bytes itself.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .inventory import Digest, FileFacts

CHUNK = 1 << 20  # 1 MiB reads: large enough that hashlib (which frees the GIL) dominates


@dataclass(frozen=True, slots=True)
class HashResult:
    sha256: str
    gitsha1: str | None  # only computed when asked for (to check a git-blob claim)


def hash_file(
    path: str, size: int, *, gitsha1: bool = False, on_bytes: Callable[[int], None] | None = None
) -> HashResult:
    """sha256 of a file's bytes and, optionally, its git blob sha1, in one read.

    `size` is the size the caller expects; the git blob header needs it up front, and a file
    that changed size while being read raises `OSError` rather than yield a wrong digest.
    """
    sha = hashlib.sha256()
    git = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False) if gitsha1 else None
    seen = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            if git is not None:
                git.update(chunk)
            seen += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    if seen != size:
        raise OSError(f"file changed while being read ({seen} bytes, expected {size})")
    return HashResult(sha.hexdigest(), git.hexdigest() if git is not None else None)


def edge_fingerprint(path: str, size: int, block: int = 64 * 1024) -> bytes:
    """sha256 of the first and last `block` bytes: splits same-size groups before full hashes."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        h.update(f.read(block))
        if size > block:
            f.seek(max(block, size - block))
            h.update(f.read(block))
    return h.digest()


class DigestIndex:
    """SQLite index of sha256 digests keyed by (dev, ino), valid while size and mtime_ns match.

    >>> idx = DigestIndex(Path("/tmp/digests.sqlite"))  # doctest: +SKIP
    >>> idx.lookup(facts)                                # None until hashed  # doctest: +SKIP
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.error: str | None = None
        self._db: sqlite3.Connection | None = None
        self._cache: dict[tuple[int, int], tuple[int, int, str]] = {}
        self._pending: list[tuple[int, int, int, int, str]] = []
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

    def load(self, inodes: Iterable[tuple[int, int]]) -> None:
        """Read the entries of `inodes` into memory in one pass (one query per 500 inodes)."""
        if self._db is None:
            return
        wanted = [i for i in set(inodes) if i not in self._cache]
        try:
            for start in range(0, len(wanted), 500):
                batch = wanted[start : start + 500]
                clause = " OR ".join("(dev=? AND ino=?)" for _ in batch)
                params = [v for pair in batch for v in pair]
                for dev, ino, size, mtime_ns, sha in self._db.execute(
                    f"SELECT dev, ino, size, mtime_ns, sha256 FROM digests WHERE {clause}", params
                ):
                    self._cache[(dev, ino)] = (size, mtime_ns, sha)
        except sqlite3.Error as e:
            self.error = f"digest index unreadable, hashing without it: {self.path}: {e}"
            self._db = None

    def lookup(self, facts: FileFacts) -> Digest | None:
        """The sha256 recorded for this inode, if it was hashed with this exact size and mtime."""
        entry = self._cache.get(facts.inode)
        if entry is None or entry[0] != facts.size or entry[1] != facts.mtime_ns:
            return None
        return Digest("sha256", entry[2])

    def record(self, facts: FileFacts, sha256: str) -> None:
        self._cache[facts.inode] = (facts.size, facts.mtime_ns, sha256)
        self._pending.append((facts.dev, facts.ino, facts.size, facts.mtime_ns, sha256))

    def flush(self) -> None:
        """Write recorded digests in one transaction."""
        if self._db is None or not self._pending:
            self._pending.clear()
            return
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?)", self._pending)
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

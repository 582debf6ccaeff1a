"""Facts found on disk, as frozen values.

Store readers yield `FileRecord`s; `Inventory` holds them with the repos and the warnings
found on the way. Nothing here touches the disk: these are the values that the finding
side hands to the planning and reporting side.

Sizes count each inode once (`FileFacts.inode`): hard links share one inode, symlinks are
not records at all (a snapshot symlink is a `LinkRecord` pointing at the record it
resolves to).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from typing import Any

from .store_kind import StoreKind

SHA256_RE = re.compile(r"[0-9a-f]{64}")
GIT_SHA1_RE = re.compile(r"[0-9a-f]{40}")


class Role(str, Enum):
    """What a file is for. Only `MODEL` files are candidates for duplicates."""

    MODEL = "model"
    METADATA = "metadata"  # huggingface_hub's own: trees/*.json, refs, CACHEDIR.TAG, .metadata, locks
    INCOMPLETE = "incomplete"  # a download in progress or abandoned
    CACHE = "cache"  # a tool's own working cache (hf_xet's chunks and shards): counted, never a model file


class RepoStatus(str, Enum):
    COMPLETE = "complete"  # every file the revision's file list names is on disk and readable
    INCOMPLETE = "incomplete"  # files missing, or a partial download lies beside it
    BROKEN = "broken"  # a snapshot link whose blob is gone, or an unreadable file
    UNKNOWN = "unknown"  # no file list on disk to compare against (single-file downloads)


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest: `sha256` of the bytes, or `gitsha1` (sha1 of `b"blob <len>\\0" + bytes`)."""

    algorithm: str
    hexdigest: str

    @classmethod
    def from_name(cls, name: str) -> Digest | None:
        """The digest a Hub blob or etag name claims, or None when the name is no digest.

        >>> Digest.from_name("a" * 64)
        Digest(algorithm='sha256', hexdigest='aaaa...')  # doctest: +SKIP
        """
        n = len(name)
        if n == 64 and SHA256_RE.fullmatch(name):
            return cls("sha256", name)
        if n == 40 and GIT_SHA1_RE.fullmatch(name):
            return cls("gitsha1", name)
        return None

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


# The six numbers of `FileFacts`, packed into one bytes object per file (48 bytes instead of six
# int objects and their slots: the inventory holds one per file, a million of them on a big machine).
_PACKED = struct.Struct("=QQqqQq")  # dev, ino, size, mtime_ns, nlink, atime_ns
INODE_KEY = struct.Struct("=QQ")  # (dev, ino), as `inode_key` packs them
_ONE = struct.Struct("=q")
_UONE = struct.Struct("=Q")
_INTS: dict[int, int] = {}  # one int object per distinct small value that records share (relpath offsets)


def _pack(dev: int, ino: int, size: int, mtime_ns: int, nlink: int, atime_ns: int) -> bytes | tuple[int, ...]:
    try:
        return _PACKED.pack(dev, ino, size, mtime_ns, nlink, atime_ns)
    except struct.error:  # out of the packed range (a time past 2262): kept as plain ints
        return (dev, ino, size, mtime_ns, nlink, atime_ns)


def pack_stat(st: os.stat_result) -> bytes | tuple[int, ...]:
    """The numbers of `FileFacts.from_stat(st)`, as a record holds them."""
    return _pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_nlink, st.st_atime_ns)


def shared_int(n: int) -> int:
    """One int object per value, for numbers that many records hold (relpath offsets)."""
    return _INTS.setdefault(n, n)


class FileFacts(tuple):  # type: ignore[type-arg]
    """What `lstat` says of a regular file; enough to tell later whether it changed.

    `FileFacts(dev, ino, size, mtime_ns, nlink, atime_ns=0)`; immutable. The numbers are held
    packed (see `_PACKED`) and unpacked on access.
    """

    __slots__ = ()

    def __new__(cls, dev: int, ino: int, size: int, mtime_ns: int, nlink: int, atime_ns: int = 0) -> FileFacts:
        return tuple.__new__(cls, (_pack(dev, ino, size, mtime_ns, nlink, atime_ns),))

    @classmethod
    def from_stat(cls, st: os.stat_result) -> FileFacts:
        return tuple.__new__(FileFacts, (pack_stat(st),))

    def _field(self, i: int) -> int:
        st = self[0]
        if st.__class__ is not bytes:
            return st[i]  # type: ignore[no-any-return]
        return (_ONE if i in (2, 3, 5) else _UONE).unpack_from(st, 8 * i)[0]  # type: ignore[no-any-return]

    @property
    def dev(self) -> int:
        return self._field(0)

    @property
    def ino(self) -> int:
        return self._field(1)

    @property
    def size(self) -> int:
        st = self[0]
        return _ONE.unpack_from(st, 16)[0] if st.__class__ is bytes else st[2]  # type: ignore[no-any-return]

    @property
    def mtime_ns(self) -> int:
        return self._field(3)

    @property
    def nlink(self) -> int:
        return self._field(4)

    @property
    def atime_ns(self) -> int:
        """Last access, for `list` (where the file system records it)."""
        return self._field(5)

    @property
    def inode(self) -> tuple[int, int]:
        st = self[0]
        return INODE_KEY.unpack_from(st) if st.__class__ is bytes else (st[0], st[1])

    def _values(self) -> tuple[int, ...]:
        st = self[0]
        return _PACKED.unpack(st) if st.__class__ is bytes else st

    def __repr__(self) -> str:
        dev, ino, size, mtime_ns, nlink, atime_ns = self._values()
        return f"FileFacts(dev={dev}, ino={ino}, size={size}, mtime_ns={mtime_ns}, nlink={nlink}, atime_ns={atime_ns})"

    def __getnewargs__(self) -> tuple[int, ...]:  # pickling and copying
        return self._values()


class FileRecord(FileFacts):
    """One regular file on disk (never a symlink).

    `repo_key` names the `Repo` it belongs to; `relpath` is its path inside that repo (for a
    blob, `blobs/<name>`; for a snapshot or local copy, the file's path in the repo).

    A record is its own `facts` (the same numbers and properties as `FileFacts`). It holds its
    folder (a string every file of the folder shares) and its name rather than a path of its own,
    its `relpath` as an offset into the path (`path` and `relpath` are made on access), and its
    store, role, repo_key and revision in a tuple it shares with its neighbours.
    Construct as `FileRecord(path, store, role, repo_key, relpath, facts, claimed=None,
    revision=None)`; immutable.
    """

    __slots__ = ()

    def __new__(
        cls,
        path: str,
        store: StoreKind,
        role: Role,
        repo_key: str,
        relpath: str,
        facts: FileFacts,
        claimed: Digest | None = None,
        revision: str | None = None,
    ) -> FileRecord:
        cut = path.rfind("/") + 1
        folder, name = path[:cut], path[cut:]
        context = (store, role, repo_key, revision, rel_of(folder, name, relpath))
        return make_record(facts[0], folder, name, context, claimed)

    @property
    def path(self) -> str:
        return self[1] + self[2]  # type: ignore[no-any-return]

    @property
    def folder(self) -> str:
        """The path's folder, with its trailing '/'."""
        return self[1]  # type: ignore[no-any-return]

    @property
    def name(self) -> str:
        return self[2]  # type: ignore[no-any-return]

    @property
    def store(self) -> StoreKind:
        return self[3][0]  # type: ignore[no-any-return]

    @property
    def role(self) -> Role:
        return self[3][1]  # type: ignore[no-any-return]

    @property
    def repo_key(self) -> str:
        return self[3][2]  # type: ignore[no-any-return]

    @property
    def relpath(self) -> str:
        rel = self[3][4]
        if rel.__class__ is str:
            return rel
        folder = self[1]
        if rel >= len(folder):
            return self[2][rel - len(folder) :]  # type: ignore[no-any-return]
        return (folder + self[2])[rel:]  # type: ignore[no-any-return]

    @property
    def claimed(self) -> Digest | None:
        claimed = self[4]
        if claimed.__class__ is str:  # a name that is its own claim (a blob's): see `make_record`
            return Digest(claimed, self[2])
        return claimed  # type: ignore[no-any-return]

    def claimed_hex(self, algorithm: str) -> str | None:
        """The hex digest it claims with `algorithm`, if that is its claim's (no `Digest` made)."""
        claimed = self[4]
        if claimed is None:
            return None
        if claimed.__class__ is str:
            return self[2] if claimed == algorithm else None
        return claimed.hexdigest if claimed.algorithm == algorithm else None

    @property
    def revision(self) -> str | None:
        """The commit a local_dir file was downloaded at (from its metadata)."""
        return self[3][3]  # type: ignore[no-any-return]

    @property
    def facts(self) -> FileFacts:
        return self

    def with_claim(self, claimed: Digest | None) -> FileRecord:
        return make_record(self[0], self[1], self[2], self[3], claimed)

    def __repr__(self) -> str:
        return (
            f"FileRecord(path={self.path!r}, store={self.store}, role={self.role}, repo_key={self.repo_key!r}, "
            f"relpath={self.relpath!r}, facts={FileFacts.__repr__(self)}, claimed={self.claimed!r}, "
            f"revision={self.revision!r})"
        )

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (
            self.path,
            self.store,
            self.role,
            self.repo_key,
            self.relpath,
            FileFacts(*self._values()),
            self.claimed,
            self.revision,
        )


_new_tuple = tuple.__new__


# What the records of one folder usually share, held once: (store, role, repo_key, revision, relpath
# offset from `rel_of`).
Context = tuple[StoreKind, Role, str, str | None, int | str]


def make_record(
    st: bytes | tuple[int, ...], folder: str, name: str, context: Context, claimed: Digest | None
) -> FileRecord:
    """A record from its parts: `st` as `FileFacts` packs it, `folder` ending in '/'."""
    if claimed is not None and claimed.hexdigest == name:
        # A blob named by its digest holds only the algorithm: the name is the rest (48 bytes a
        # blob, 14 MB at a million files).
        return _new_tuple(FileRecord, (st, folder, name, context, claimed.algorithm))
    return _new_tuple(FileRecord, (st, folder, name, context, claimed))


def rel_of(folder: str, name: str, relpath: str) -> int | str:
    """How a record holds `relpath`: its offset in `folder + name` when it is a suffix of it, else itself."""
    n = len(relpath)
    if n <= len(name):
        suffix = name.endswith(relpath)
    else:
        suffix = relpath.endswith(name) and folder.endswith(relpath[: n - len(name)])
    if not suffix:
        return relpath
    return shared_int(len(folder) + len(name) - n)


@dataclass(frozen=True, slots=True)
class SnapshotLink:
    """A snapshot entry that is a symlink, and the regular file it leads to (a blob)."""

    path: str
    target: str


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    """A symlink in `snapshots/<commit>/`: which blob it names and whether it leads to a file."""

    path: str
    commit: str
    relpath: str  # the file's path in the repo
    blob: str | None  # the name in this repo's blobs/ it points at (None: it points elsewhere)
    ok: bool  # False: broken (blob gone), a loop, or out of the cache


@dataclass(frozen=True)
class RepoLayout:
    """The parts of one HF cache repo folder, as `clean` needs them (finding garbage is layout work)."""

    repo_dir: str
    repo_type: str
    repo_id: str
    blobs: dict[str, str]  # name -> path of the entry in blobs/ (a file, or a symlink into the shared store)
    refs: dict[str, str]  # ref name ("main", "pr/1") -> commit
    ref_paths: dict[str, str]  # ref name -> path of the ref file (also for refs that hold no commit)
    commits: tuple[str, ...]  # folders in snapshots/
    snapshot_links: tuple[SnapshotEntry, ...]
    snapshot_files: dict[str, tuple[str, ...]]  # commit -> real files in it (no-symlink caches)


@dataclass(frozen=True, slots=True)
class Repo:
    """A repo in the cache, a local_dir download, or a plain model folder."""

    key: str  # unique: the folder it lives in
    repo_id: str  # "org/name" where known, else the folder's name
    repo_type: str  # model, dataset, space, or "folder" for plain folders
    store: StoreKind
    path: str
    revisions: tuple[str, ...]
    status: RepoStatus
    problems: tuple[str, ...] = ()
    origin: str | None = None  # for a local_dir download: the HF cache repo folder of its commit


@dataclass(frozen=True, slots=True)
class Warning_:
    """Damage or unreadable input found while scanning; scanning goes on."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class SnapshotScan:
    """One `snapshots/<commit>/` folder as read, held compactly: the symlinks as parallel tuples
    (their names in the repo are shared strings), the blob each names and the record it leads to."""

    commit: str
    relpaths: tuple[str, ...]  # every symlink, in walk order
    blobs: tuple[str | None, ...]  # the name in blobs/ it points at (None: it points elsewhere)
    targets: tuple[FileRecord | None, ...]  # the record of that blob (None: not a blob of this repo)
    ok: tuple[bool, ...]  # False: broken (blob gone), a loop, or out of the cache
    files: tuple[FileRecord, ...]  # real files (no-symlink caches)


@dataclass(frozen=True, slots=True)
class RepoScan:
    """What the HF cache reader keeps of one repo folder to make its `RepoLayout` and `SnapshotLink`s
    when a command asks for them (analyze never does: they would cost a few hundred bytes a file)."""

    repo_dir: str
    repo_type: str
    repo_id: str
    blob_names: tuple[str, ...]  # entries of blobs/ (files, and symlinks into the shared store), in walk order
    refs: dict[str, str]
    ref_paths: dict[str, str]
    commits: tuple[str, ...]
    snapshots: tuple[SnapshotScan, ...]  # one per commit, in order

    def snapshot_dir(self, snap: SnapshotScan) -> str:
        return os.path.join(self.repo_dir, "snapshots", snap.commit) + os.sep

    def links(self) -> Iterator[SnapshotLink]:
        for snap in self.snapshots:
            folder = self.snapshot_dir(snap)
            for relpath, target in zip(snap.relpaths, snap.targets, strict=True):
                if target is not None:
                    yield SnapshotLink(folder + relpath, target.path)

    def layout(self) -> RepoLayout:
        blobs_dir = os.path.join(self.repo_dir, "blobs") + os.sep
        entries = []
        for snap in self.snapshots:
            folder = self.snapshot_dir(snap)
            for relpath, blob, ok in zip(snap.relpaths, snap.blobs, snap.ok, strict=True):
                entries.append(SnapshotEntry(folder + relpath, snap.commit, relpath, blob, ok))
        return RepoLayout(
            self.repo_dir,
            self.repo_type,
            self.repo_id,
            {name: blobs_dir + name for name in self.blob_names},
            self.refs,
            self.ref_paths,
            self.commits,
            tuple(entries),
            {snap.commit: tuple(r.path for r in snap.files) for snap in self.snapshots},
        )


@dataclass(frozen=True)
class Inventory:
    """Everything the readers found under the scanned roots.

    `links` and `layouts` are made from `hf_repos` on first use (plan, clean and verify use them).
    """

    roots: tuple[str, ...]
    records: tuple[FileRecord, ...]
    repos: tuple[Repo, ...]
    warnings: tuple[Warning_, ...] = ()
    hf_repos: tuple[RepoScan, ...] = ()
    leftovers: tuple[str, ...] = ()  # temporary files an interrupted modelcache run left

    @cached_property
    def links(self) -> tuple[SnapshotLink, ...]:
        return tuple(link for repo in self.hf_repos for link in repo.links())

    @cached_property
    def layouts(self) -> tuple[RepoLayout, ...]:
        return tuple(repo.layout() for repo in self.hf_repos)

    def store_bytes(self) -> dict[StoreKind, int]:
        """Bytes per store, each inode counted once, in the first store (by StoreKind order) that holds it."""
        kinds = list(StoreKind)
        totals = {kind: 0 for kind in kinds}
        linked: list[FileRecord] = []  # records of inodes with other names: only these are compared
        for r in self.records:
            size, nlink = _size_nlink(r)
            if nlink == 1:
                totals[r[3][0]] += size
            else:
                linked.append(r)
        bits = len(kinds).bit_length()
        mask = (1 << bits) - 1
        for owner in _first_owners(linked, kinds, bits).values():
            totals[kinds[owner & mask]] += owner >> bits
        return totals

    def role_bytes(self, role: Role) -> int:
        return distinct_inode_bytes(r for r in self.records if r.role is role)

    def total_bytes(self) -> int:
        return distinct_inode_bytes(self.records)


def still_names(record: FileRecord) -> bool:
    """Whether the record's path still names the inode it was found with."""
    try:
        st = os.lstat(record.path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == record.inode


def inode_key(record: FileFacts) -> bytes:
    """(dev, ino) as 16 bytes: a cheaper dict key than the tuple."""
    st = record[0]
    return st[:16] if st.__class__ is bytes else INODE_KEY.pack(st[0], st[1])


def _size(record: FileFacts) -> int:
    st = record[0]
    return _ONE.unpack_from(st, 16)[0] if st.__class__ is bytes else st[2]  # type: ignore[no-any-return]


def _key_size(record: FileFacts) -> tuple[bytes, int]:
    """`inode_key` and size at once."""
    st = record[0]
    if st.__class__ is bytes:
        return st[:16], _ONE.unpack_from(st, 16)[0]
    return INODE_KEY.pack(st[0], st[1]), st[2]


def _size_nlink(record: FileFacts) -> tuple[int, int]:
    st = record[0]
    if st.__class__ is bytes:
        return _ONE.unpack_from(st, 16)[0], _UONE.unpack_from(st, 32)[0]
    return st[2], st[4]


def distinct_inode_bytes(records: Iterable[FileRecord]) -> int:
    """Sum of `st_size` over the distinct inodes among `records` (an inode's size: its last record's).

    A file with one link is the only path to its inode (records are unique by path), so only files
    with more links are told apart by inode: a dict of every inode was 45 MB at a million files.
    """
    total = 0
    seen: dict[bytes, int] = {}
    for r in records:
        size, nlink = _size_nlink(r)
        if nlink == 1:
            total += size
            continue
        key = inode_key(r)
        if size:
            seen[key] = size
        elif key in seen:  # an empty file adds nothing unless it overrides an earlier record of its inode
            seen[key] = 0
    return total + sum(seen.values())


def _first_owners(records: Sequence[FileRecord], kinds: Sequence[StoreKind], bits: int) -> dict[bytes, int]:
    """Per inode: the size of its first record (in order) in the first store (in the order of
    `kinds`) that holds it, as `size << bits | index of the store in kinds` (`bits` holds any index)."""
    order = {kind: i for i, kind in enumerate(kinds)}
    mask = (1 << bits) - 1
    owners: dict[bytes, int] = {}
    get = owners.get
    for r in records:
        key, size = _key_size(r)
        if not size:
            continue  # an empty file adds nothing, wherever it is owned: see below
        rank = order[r[3][0]]
        current = get(key)
        if current is None or rank < current & mask:
            owners[key] = size << bits | rank
    # An empty file's record counts only where its inode also shows another size (it changed
    # between two lstats): those inodes are worked out again from all their records, in order.
    mixed = {key for r in records if not _size(r) and (key := inode_key(r)) in owners}
    if mixed:
        for key in mixed:
            del owners[key]
        for r in records:
            key = inode_key(r)
            if key in mixed:
                rank = order[r[3][0]]
                current = get(key)
                if current is None or rank < current & mask:
                    owners[key] = _size(r) << bits | rank
    return owners

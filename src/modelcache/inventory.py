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
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

SHA256_RE = re.compile(r"[0-9a-f]{64}")
GIT_SHA1_RE = re.compile(r"[0-9a-f]{40}")


class StoreKind(str, Enum):
    """Which layout a file was found in; also the order in which stores own a shared inode and
    in which `consolidate` picks the copy to keep (the HF cache first: it is what most tools read)."""

    HF_CACHE = "hf_cache"
    LLAMACPP = "llamacpp"
    MODELSCOPE = "modelscope"
    OLLAMA = "ollama"
    LMSTUDIO = "lmstudio"
    JAN = "jan"
    GPT4ALL = "gpt4all"
    COMFYUI = "comfyui"
    TORCH_HUB = "torch_hub"
    TEXTGEN_WEBUI = "textgen_webui"
    LOCAL_DIR = "local_dir"
    PLAIN = "plain"


# Stores whose tools own their files: copies there are only ever replaced by reflinks or hard links,
# never by symlinks (their tools delete or mishandle link targets) and never deleted.
TOOL_STORES = frozenset(StoreKind) - {StoreKind.LOCAL_DIR, StoreKind.PLAIN}


class Role(str, Enum):
    """What a file is for. Only `MODEL` files are candidates for duplicates."""

    MODEL = "model"
    METADATA = "metadata"  # huggingface_hub's own: trees/*.json, refs, CACHEDIR.TAG, .metadata, locks
    INCOMPLETE = "incomplete"  # a download in progress or abandoned


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
        if SHA256_RE.fullmatch(name):
            return cls("sha256", name)
        if GIT_SHA1_RE.fullmatch(name):
            return cls("gitsha1", name)
        return None

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What `lstat` says of a regular file; enough to tell later whether it changed."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    nlink: int
    atime_ns: int = 0  # last access, for `list` (where the file system records it)

    @property
    def inode(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    @classmethod
    def from_stat(cls, st: os.stat_result) -> FileFacts:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_nlink, st.st_atime_ns)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One regular file on disk (never a symlink).

    `repo_key` names the `Repo` it belongs to; `relpath` is its path inside that repo (for a
    blob, `blobs/<name>`; for a snapshot or local copy, the file's path in the repo).
    """

    path: str
    store: StoreKind
    role: Role
    repo_key: str
    relpath: str
    facts: FileFacts
    claimed: Digest | None = None
    revision: str | None = None  # the commit a local_dir file was downloaded at (from its metadata)


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


@dataclass(frozen=True)
class Inventory:
    """Everything the readers found under the scanned roots."""

    roots: tuple[str, ...]
    records: tuple[FileRecord, ...]
    repos: tuple[Repo, ...]
    warnings: tuple[Warning_, ...] = ()
    links: tuple[SnapshotLink, ...] = ()
    layouts: tuple[RepoLayout, ...] = ()
    leftovers: tuple[str, ...] = ()  # temporary files an interrupted modelcache run left

    def store_bytes(self) -> dict[StoreKind, int]:
        """Bytes per store, each inode counted once, in the first store (by StoreKind order) that holds it."""
        totals = {kind: 0 for kind in StoreKind}
        for kind, size in _first_owner_sizes(self.records).values():
            totals[kind] += size
        return totals

    def role_bytes(self, role: Role) -> int:
        return distinct_inode_bytes(r for r in self.records if r.role is role)

    def total_bytes(self) -> int:
        return distinct_inode_bytes(self.records)


def distinct_inode_bytes(records: Iterable[FileRecord]) -> int:
    """Sum of `st_size` over the distinct inodes among `records`."""
    seen: dict[tuple[int, int], int] = {}
    for r in records:
        seen[r.facts.inode] = r.facts.size
    return sum(seen.values())


_STORE_ORDER = {kind: i for i, kind in enumerate(StoreKind)}


def _first_owner_sizes(records: Iterable[FileRecord]) -> dict[tuple[int, int], tuple[StoreKind, int]]:
    owners: dict[tuple[int, int], tuple[StoreKind, int]] = {}
    for r in records:
        current = owners.get(r.facts.inode)
        if current is None or _STORE_ORDER[r.store] < _STORE_ORDER[current[0]]:
            owners[r.facts.inode] = (r.store, r.facts.size)
    return owners

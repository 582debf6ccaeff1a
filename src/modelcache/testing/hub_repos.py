"""The repos LocalHub serves, as plain data: files, commits, branches and tags, the Hub's LFS rule and
the digests that name each file (its ETag). Standard library only."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

RepoType = Literal["model", "dataset", "space"]

#: Suffixes the Hub's default ``.gitattributes`` sends to LFS (the subset that matters for model files).
DEFAULT_LFS_SUFFIXES: tuple[str, ...] = (
    ".safetensors",
    ".bin",
    ".gguf",
    ".pt",
    ".pth",
    ".ckpt",
    ".onnx",
    ".h5",
    ".msgpack",
    ".model",
)
#: Files at least this large are LFS whatever their name (the Hub rejects bigger non-LFS files).
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

#: Per-commit LFS decision: ``None`` (use the repo rule), ``True``/``False`` (every file), a collection of
#: paths (exactly those are LFS), or a predicate ``(path, content) -> bool``.
LfsOverride = bool | Iterable[str] | Callable[[str, bytes], bool] | None

REPO_TYPES_BY_URL: dict[str, RepoType] = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX: dict[RepoType, str] = {"model": "", "dataset": "datasets/", "space": "spaces/"}
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")
# Commit dates are synthetic but deterministic, so two runs of a test see the same repo metadata.
EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)
CHUNK = 64 * 1024


def sha256_hex(content: bytes) -> str:
    """SHA-256 of ``content``: the Hub's ETag (and the cache's blob name) for an LFS file."""
    return hashlib.sha256(content).hexdigest()


def git_blob_sha1(content: bytes) -> str:
    """Git blob id of ``content``: the Hub's ETag (and the cache's blob name) for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(content: bytes) -> bytes:
    """The git-lfs pointer file the Hub stores in git in place of an LFS file's content."""
    return (
        b"version https://git-lfs.github.com/spec/v1\n"
        + f"oid sha256:{sha256_hex(content)}\nsize {len(content)}\n".encode()
    )


def default_is_lfs(path: str, content: bytes) -> bool:
    """Whether the Hub would store ``path`` in LFS by default: weight-like suffix, or at least 10 MiB."""
    return path.lower().endswith(DEFAULT_LFS_SUFFIXES) or len(content) >= LFS_SIZE_THRESHOLD


@dataclass(frozen=True)
class HubFile:
    """One file of a commit, with the identifiers the Hub reports for it.

    Attributes:
        path: Path in the repo, ``/``-separated.
        content: The file's bytes (what a download produces).
        lfs: Whether the file is stored in LFS (this decides its ETag and blob id).
    """

    path: str
    content: bytes = field(repr=False)
    lfs: bool

    @property
    def size(self) -> int:
        """Size of the real content in bytes (for LFS files too, not the pointer's size)."""
        return len(self.content)

    @property
    def sha256(self) -> str:
        """SHA-256 of the content."""
        return sha256_hex(self.content)

    @property
    def blob_id(self) -> str:
        """Git object id as listed by the API: the pointer's blob id if LFS, the content's otherwise."""
        return git_blob_sha1(lfs_pointer(self.content) if self.lfs else self.content)

    @property
    def etag(self) -> str:
        """Unquoted ETag the client sees, i.e. the name of the blob in the cache."""
        return self.sha256 if self.lfs else git_blob_sha1(self.content)

    @property
    def pointer_size(self) -> int:
        """Size of the LFS pointer file (reported as ``pointerSize`` in listings)."""
        return len(lfs_pointer(self.content))


@dataclass(frozen=True)
class HubCommit:
    """A commit: a full tree of files plus history metadata."""

    sha: str
    files: Mapping[str, HubFile]
    parent: str | None
    message: str
    date: datetime


@dataclass
class RecordedRequest:
    """One request received by the hub (or its CDN), as recorded in `LocalHub.request_log`.

    The record is appended when the request arrives and updated while it is answered, so a test that has
    just received a response already sees its status; ``bytes_sent`` counts body bytes handed to the socket.
    """

    method: str
    path: str  # raw (still percent-encoded) URL path, without the query string
    query: str
    range: str | None
    status: int = 0
    bytes_sent: int = 0


@dataclass
class Repo:
    repo_id: str
    repo_type: RepoType
    lfs_rule: Callable[[str, bytes], bool] | None
    commits: dict[str, HubCommit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class FailRule:
    path: str
    n_bytes: int
    remaining: int | None
    repo_id: str | None


def iso_date(date: datetime) -> str:
    return date.strftime("%Y-%m-%dT%H:%M:%S.000Z")

"""Download into the HF cache only, reusing bytes already on this machine; find snapshots offline.

Downloading is find, then act:

1. resolve the revision to a commit and get its file list with sha256s (the Hub's
   `repo_info` and tree listing, or the commit's `trees/<commit>.json` when cached);
2. find, read-only, the files whose bytes the cache lacks in every store modelcache reads
   (other repos' blobs, local_dir copies, plain folders): same size, and a claim (blob name,
   local_dir etag, digest index) or a hash that says the same bytes;
3. place each under `blobs/<etag>` through `fsops`: a reflink, else a hard link, else a
   copy, under a temporary name in `blobs/`, verified (sha256 == the Hub's LFS sha256, or the
   git blob sha1 == the blob id) before it takes its name, holding huggingface_hub's lock
   `.locks/<repo folder>/<etag>.lock`; never over an existing blob;
4. `huggingface_hub.snapshot_download` then finds those blobs, makes the snapshot links,
   and downloads only the rest.

Finding a snapshot offline (`find_cached_snapshot`, `get_cached_model_path`, `modelcache path`)
is `hub.lookup`; the input checks are `hub.names`.

>>> get_cached_model_path("Qwen/Qwen-Image")                          # doctest: +SKIP
'/home/me/.cache/huggingface/hub/models--Qwen--Qwen-Image/snapshots/75e0b4be04f60ec59a75f475837eced720f823b6'
>>> DownloadManager().download("org/model", include=["*.json"])      # doctest: +SKIP
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from filelock import FileLock, Timeout

from .act import fsops
from .common import display
from .digests import DigestIndex, hash_file
from .errors import InputError, ModelcacheError
from .hub.errors import DownloadError, download_failed, hub_error, unreachable, writing
from .hub.lookup import CachedSnapshot, NotCachedError, find_cached_snapshot, get_cached_model_path
from .hub.names import (
    COMMIT_RE,
    REPO_TYPES,
    InvalidRepoId,
    cache_root,
    check_repo_id,
    check_repo_type,
    check_revision,
    filtered,
    repo_folder,
    safe_relpath,
)
from .inventory import Digest, FileFacts, FileRecord, Inventory, Role, StoreKind, Warning_, distinct_inode_bytes
from .locations import Location, digest_index_path, model_locations, store_locations
from .scan import scan_locations
from .stores.hf_cache import read_tree_file

__all__ = [
    "CachedModel",
    "CachedSnapshot",
    "DownloadError",
    "DownloadManager",
    "DownloadResult",
    "FixedModelDownloadManager",
    "InvalidRepoId",
    "NotCachedError",
    "Reused",
    "download_snapshot",
    "find_cached_snapshot",
    "get_cached_model_path",
    "list_cached_models",
]

# Held for the whole download, in the repo's lock folder: `clean` and `consolidate` leave a
# repo alone while any of its locks is held, so a reused blob is never taken for an orphan
# in the moment before huggingface_hub links it into the snapshot.
DOWNLOAD_LOCK = "modelcache.download.lock"
QWEN_IMAGE = "Qwen/Qwen-Image"
QWEN2_VL = "Qwen/Qwen2-VL-7B-Instruct"


# -- the file list of a commit ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of a commit as the Hub lists it."""

    path: str
    size: int
    etag: str  # its blob's name in the cache: the LFS sha256, else the git blob sha1
    lfs: bool

    @property
    def digest(self) -> Digest:
        return Digest("sha256" if self.lfs else "gitsha1", self.etag)


def _files_from_tree_file(path: str) -> list[RemoteFile] | None:
    tree = read_tree_file(path) if os.path.isfile(path) else None
    if not isinstance(tree, dict):
        return None
    files = []
    for relpath, entry in tree.items():
        if entry.claimed is None or not safe_relpath(relpath):
            return None  # not a list to plan with; ask the Hub instead
        files.append(RemoteFile(relpath, entry.size, entry.claimed.hexdigest, entry.claimed.algorithm == "sha256"))
    return files


def _files_from_hub(api: Any, repo_id: str, repo_type: str, commit: str) -> list[RemoteFile]:
    from huggingface_hub.hf_api import RepoFile

    files = []
    for f in api.list_repo_tree(repo_id, recursive=True, revision=commit, repo_type=repo_type):
        if not isinstance(f, RepoFile) or not safe_relpath(f.path):
            continue
        if f.lfs is not None:
            files.append(RemoteFile(f.path, int(f.size), str(f.lfs.sha256), True))
        elif f.xet_hash is None:
            files.append(RemoteFile(f.path, int(f.size), str(f.blob_id), False))
        # A Xet file without LFS metadata names its blob by a hash the listing does not give: downloaded as is.
    return files


# -- reuse: find (read-only), then place (through fsops) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reused:
    """A file of the download whose bytes came from this machine instead of the network."""

    path: str  # in the repo
    size: int
    source: str  # the file the bytes came from
    method: str  # reflink | hardlink | copy
    blob: str  # where it now lies in the cache


@dataclass(frozen=True, slots=True)
class _Candidate:
    record: FileRecord
    likely: bool  # a claim (blob name, etag, digest index) says these are the bytes


def find_reuse_candidates(
    wanted: Sequence[RemoteFile],
    inventory: Inventory,
    index: DigestIndex | None,
    device: int | None,
) -> dict[str, list[_Candidate]]:
    """Per etag, the files on this machine that may hold its bytes, most promising first. Read-only.

    Same size, regular model files, one per inode; those whose claims or known digest
    contradict the wanted digest are left out. Claimed matches come first, then files on the
    cache's device (they can be linked), then files in the HF cache.
    """
    sizes = {f.size for f in wanted if f.size > 0}
    by_size: dict[int, dict[tuple[int, int], FileRecord]] = {}
    for r in inventory.records:
        if r.role is Role.MODEL and r.facts.size in sizes:
            inodes = by_size.setdefault(r.facts.size, {})
            if r.facts.inode not in inodes or (inodes[r.facts.inode].claimed is None and r.claimed is not None):
                inodes[r.facts.inode] = r
    if index is not None:
        index.load(r for inodes in by_size.values() for r in inodes.values())
    found: dict[str, list[_Candidate]] = {}
    for f in wanted:
        candidates = []
        for record in by_size.get(f.size, {}).values():
            claims = [record.claimed] if record.claimed is not None else []
            known = index.lookup(record.facts) if index is not None else None
            if known is not None:
                claims.append(known)
            if any(c.algorithm == f.digest.algorithm and c != f.digest for c in claims):
                continue
            candidates.append(_Candidate(record, f.digest in claims))
        candidates.sort(
            key=lambda c: (
                not c.likely,
                c.record.facts.dev != device,
                c.record.store is not StoreKind.HF_CACHE,
                c.record.path,
            )
        )
        if candidates:
            found[f.etag] = candidates
    return found


class _Verifier:
    """sha256 and, for small git files, the git blob sha1 of bytes as they stream by."""

    def __init__(self, size: int, git: bool) -> None:
        self.sha = hashlib.sha256()
        self.git = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False) if git else None
        self.seen = 0

    def update(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        if self.git is not None:
            self.git.update(chunk)
        self.seen += len(chunk)

    def matches(self, f: RemoteFile) -> bool:
        actual = self.sha.hexdigest() if f.lfs else self.git.hexdigest() if self.git is not None else None
        return self.seen == f.size and actual == f.etag


def _hash_matches(path: str, f: RemoteFile) -> tuple[bool, str | None]:
    """(bytes at `path` are `f`'s, their sha256); reads the file once."""
    result = hash_file(path, f.size, gitsha1=not f.lfs)
    actual = result.sha256 if f.lfs else result.gitsha1
    return actual == f.etag, result.sha256


def _blob_mode() -> int:
    """The mode huggingface_hub gives a new blob: 0o666 less the process umask."""
    umask = 0o022
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o666 & ~umask


def _device_of(path: str) -> int | None:
    """Device of `path`, or of its nearest existing parent."""
    return _of_nearest_existing(path, lambda p: os.stat(p).st_dev)


def free_bytes(path: str) -> int | None:
    """Free bytes on the file system that holds `path` (or would: its nearest existing parent)."""
    return _of_nearest_existing(path, lambda p: shutil.disk_usage(p).free)


def _of_nearest_existing(path: str, probe: Callable[[str], int]) -> int | None:
    """`probe(path)`; where that raises `OSError`, `probe` of the nearest parent it works on (None: none)."""
    p = path
    while True:
        try:
            return probe(p)
        except OSError:
            parent = os.path.dirname(p)
            if parent == p:
                return None
            p = parent


def partial_name(blob: str) -> str:
    """huggingface_hub's name for a blob being written: `<etag>.<8 hex>.incomplete`, beside it."""
    return f"{blob}.{secrets.token_hex(4)}.incomplete"


def _place(
    candidate: _Candidate,
    f: RemoteFile,
    blob: str,
    same_device: bool,
    index: DigestIndex | None,
) -> tuple[str, str | None]:
    """Put a verified copy of `candidate` at `blob`: (method, None), or ("", why not).

    The new entry is made under a temporary name in `blobs/` and verified there (for a hard
    link: the same inode as the candidate; for a reflink or copy: the bytes written), then
    linked to its name, which must not exist. The temporary name is the one huggingface_hub
    gives its own partial blobs, and the caller holds that blob's lock: it never outlives the
    call short of SIGKILL, and then it is a partial download like any other, which
    huggingface_hub never reads and `clean` removes.
    """
    source = candidate.record.path
    tmp = partial_name(blob)
    mode = _blob_mode()
    methods = ("reflink", "hardlink", "copy") if same_device else ("copy",)
    try:
        for method in methods:
            check = _Verifier(f.size, git=not f.lfs)
            try:
                if method == "reflink":
                    fsops.clone_new(source, tmp, mode)
                elif method == "hardlink":
                    fsops.hardlink(source, tmp)
                else:
                    now = time.time_ns()
                    fsops.copy_to(source, tmp, mode, now, now, None, on_chunk=check.update)
            except OSError as e:
                fsops.discard(tmp)
                if method != "copy" and e.errno in fsops.UNSUPPORTED:
                    continue
                if e.errno == errno.ENOSPC:
                    raise
                return "", f"cannot {method} {display(source)}: {e.strerror}"
            st = os.lstat(tmp)
            if method == "hardlink" and st.st_ino != candidate.record.facts.ino:
                return "", f"{display(source)} changed while being linked"
            if st.st_size != f.size:
                return "", f"{display(source)} changed size"
            # a copy was hashed as it was written; a link or clone is read back
            ok, sha = (check.matches(f), check.sha.hexdigest()) if method == "copy" else _hash_matches(tmp, f)
            if not ok:
                return "", f"{display(source)} does not hold the bytes its name or size promised"
            if os.path.lexists(blob):
                return "", "the cache holds this blob now"
            fsops.place_new(tmp, blob)
            if index is not None and sha is not None:
                index.record(FileFacts.from_stat(os.lstat(blob)), sha)
            return method, None
        return "", "no way to link or copy it"
    finally:
        fsops.discard(tmp)


def _reuse(
    wanted: Sequence[RemoteFile],
    cache: str,
    storage: str,
    models: Sequence[Location],
    index: DigestIndex | None,
    on_reused: Callable[[Reused], None] | None,
) -> tuple[list[Reused], list[Warning_]]:
    """Place every wanted blob whose bytes are on this machine; returns what was placed and what went wrong.

    Looked in: the cache, the model folders, and every other tool's store found where it keeps it
    (an Ollama blob or an LM Studio GGUF is the same bytes as the Hub's file).
    """
    inventory = scan_locations(Location(cache, "cache"), models, store_locations(None, discover=True))
    blobs_dir = os.path.join(storage, "blobs")
    device = _device_of(blobs_dir)
    candidates = find_reuse_candidates(wanted, inventory, index, device)
    placed: list[Reused] = []
    problems: list[Warning_] = []
    lock_dir = os.path.join(cache, ".locks", os.path.basename(storage))
    for f in wanted:
        options = candidates.get(f.etag, [])
        if not options:
            continue
        blob = os.path.join(blobs_dir, f.etag)
        fsops.make_dirs(blobs_dir)
        fsops.make_dirs(lock_dir)
        lock = FileLock(os.path.join(lock_dir, f.etag + ".lock"), timeout=0, mode=0o664)
        try:
            lock.acquire()
        except Timeout:
            continue  # another process is downloading this blob: huggingface_hub will wait for it
        try:
            for candidate in options:
                if os.path.lexists(blob):
                    break
                if not candidate.likely:
                    try:
                        ok, sha = _hash_matches(candidate.record.path, f)
                    except OSError:
                        continue
                    if index is not None and sha is not None:
                        index.record(candidate.record.facts, sha)
                    if not ok:
                        continue
                try:
                    method, why = _place(candidate, f, blob, candidate.record.facts.dev == device, index)
                except OSError as e:
                    if e.errno == errno.ENOSPC:
                        raise _no_space(cache, f, candidate.record.path) from None
                    method, why = "", f"{display(candidate.record.path)}: {e.strerror}"
                if method:
                    reused = Reused(f.path, f.size, candidate.record.path, method, blob)
                    placed.append(reused)
                    if on_reused is not None:
                        on_reused(reused)
                    break
                if why and candidate.likely:
                    problems.append(Warning_(display(candidate.record.path), f"not reused for {f.path}: {why}"))
        finally:
            lock.release()
    return placed, problems


def _no_space(cache: str, f: RemoteFile, source: str) -> DownloadError:
    free = free_bytes(cache)
    have = f"{free:,} bytes free" if free is not None else "free space unknown"
    return DownloadError(
        f"no space left on the disk of {display(cache)} while copying {display(f.path)} ({f.size:,} bytes) "
        f"into the cache from {display(source)} ({have}); nothing was downloaded"
    )


# -- download --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadResult:
    """What `download_snapshot` did. Byte counts are per distinct blob of the selected files."""

    repo_id: str
    repo_type: str
    revision: str
    commit: str
    path: str  # the snapshot folder
    files: int
    bytes_total: int
    bytes_present: int  # already in the cache before
    bytes_reused: int  # placed from this machine (reflink, hard link or copy)
    bytes_downloaded: int  # fetched from the Hub
    reused: tuple[Reused, ...] = ()
    warnings: tuple[Warning_, ...] = ()
    offline: str | None = None  # why the Hub was not asked (HF_HUB_OFFLINE, unreachable), when it was not


def offline_mode() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


@contextmanager
def _progress_bars(enabled: bool | None) -> Iterator[None]:
    """huggingface_hub's bars on a terminal (or when asked); none when stderr is a file or a pipe."""
    from huggingface_hub.utils.tqdm import are_progress_bars_disabled, disable_progress_bars

    show = sys.stderr.isatty() if enabled is None else enabled
    if show or are_progress_bars_disabled():
        yield
        return
    with disable_progress_bars():
        yield


def download_snapshot(
    repo_id: str,
    *,
    revision: str | None = None,
    repo_type: str = "model",
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
    token: bool | str | None = None,
    models: Sequence[str] | None = None,
    reuse: bool = True,
    progress: bool | None = None,
    on_reused: Callable[[Reused], None] | None = None,
) -> DownloadResult:
    """Download a revision of a repo into the HF cache (never elsewhere), reusing bytes already on disk.

    `models` are folders to look in for reusable bytes besides the cache (default: the config
    file's folders, else `./models`). Offline (HF_HUB_OFFLINE=1), or when the Hub cannot be
    reached, a complete cached snapshot is returned as is; anything else is a `DownloadError`.
    Raises `InvalidRepoId` for malformed input.
    """
    repo_id = check_repo_id(repo_id)
    repo_type = check_repo_type(repo_type)
    rev = check_revision(revision)
    include = list(include) if include else None
    exclude = list(exclude) if exclude else None
    cache = cache_root(cache_dir)
    storage = os.path.join(cache, repo_folder(repo_id, repo_type))
    what = f"{repo_type} {repo_id}"
    hub = _endpoint(endpoint)
    model_dirs = model_locations(list(models) if models else None) if reuse else []

    if offline_mode():
        return _from_cache(repo_id, rev, cache, repo_type, include, exclude, "HF_HUB_OFFLINE is set", offline=True)

    from huggingface_hub import HfApi, snapshot_download

    api = HfApi(endpoint=endpoint, token=token)
    try:
        # A commit's file list never changes: with it on disk, a commit hash needs no network at all.
        files = None
        if COMMIT_RE.fullmatch(rev):
            files = _files_from_tree_file(os.path.join(storage, "trees", rev + ".json"))
        if files is not None:
            commit = rev
        else:
            # One quick request first: it resolves the revision and fails fast when the Hub is down
            # (the tree listing retries for half a minute).
            info = api.repo_info(repo_id, repo_type=repo_type, revision=rev, token=token)
            if not info.sha:
                raise DownloadError(f"the Hub at {hub} gave no commit for {what} at {display(rev)}")
            commit = str(info.sha)
            files = _files_from_tree_file(os.path.join(storage, "trees", commit + ".json"))
            if files is None:
                files = _files_from_hub(api, repo_id, repo_type, commit)
    except ModelcacheError:
        raise
    except Exception as e:
        if unreachable(e):
            reason = f"the Hub at {hub} cannot be reached ({e.__class__.__name__})"
            return _from_cache(repo_id, rev, cache, repo_type, include, exclude, reason, offline=False)
        raise hub_error(e, what, rev, hub) from None

    by_path = {f.path: f for f in files}
    selected = [by_path[p] for p in filtered(list(by_path), include, exclude)]
    if not selected and (include or exclude):
        raise InputError(f"no file of {what} at {commit[:12]} matches --include/--exclude")
    wanted: dict[str, RemoteFile] = {}
    for f in selected:
        wanted.setdefault(f.etag, f)
    blobs_dir = os.path.join(storage, "blobs")
    present = {etag for etag in wanted if os.path.exists(os.path.join(blobs_dir, etag))}
    run_id = "dl" + secrets.token_hex(3)

    lock_dir = os.path.join(cache, ".locks", os.path.basename(storage))
    reused: list[Reused] = []
    problems: list[Warning_] = []
    placed: set[str] = set()
    with writing(what, cache):
        fsops.make_dirs(lock_dir)
        repo_lock = FileLock(os.path.join(lock_dir, DOWNLOAD_LOCK), mode=0o664)
        repo_lock.acquire()
    try:
        missing = [f for etag, f in wanted.items() if etag not in present]
        if reuse and missing:
            index = DigestIndex(digest_index_path())
            try:
                with writing(what, cache):
                    reused, problems = _reuse(missing, cache, storage, model_dirs, index, on_reused)
            finally:
                index.close()
            if index.error:
                problems.append(Warning_(display(str(index.path)), index.error))
        placed = {os.path.basename(r.blob) for r in reused}
        need = sum(f.size for etag, f in wanted.items() if etag not in present and etag not in placed)
        free = free_bytes(storage)
        if free is not None and need > free:
            raise DownloadError(
                f"not enough space on the disk of {display(cache)} for {what}: {need:,} bytes to download, "
                f"{free:,} free; nothing was downloaded"
            )
        if rev != commit:
            with writing(what, cache):
                fsops.write_ref(os.path.join(storage, "refs", *rev.split("/")), commit, run_id)
        try:
            with _progress_bars(progress), warnings.catch_warnings():
                # huggingface_hub warns when free space looks short; the check above says it in one line.
                warnings.filterwarnings("ignore", message="Not enough free disk space")
                path = snapshot_download(
                    repo_id,
                    repo_type=repo_type,
                    revision=commit,
                    cache_dir=cache,
                    endpoint=endpoint,
                    token=token,
                    allow_patterns=include,
                    ignore_patterns=exclude,
                )
        except ModelcacheError:
            raise
        except Exception as e:
            have = sum(1 for etag in wanted if os.path.exists(os.path.join(blobs_dir, etag)))
            raise download_failed(e, what, rev, hub, cache, have, len(wanted)) from None
    finally:
        repo_lock.release()

    downloaded = 0
    shared = 0
    for etag, f in wanted.items():
        if etag in present or etag in placed:
            continue
        if os.path.islink(os.path.join(blobs_dir, etag)):
            shared += f.size  # linked from huggingface_hub's own shared (Xet) store: not fetched
        else:
            downloaded += f.size
    check = find_cached_snapshot(repo_id, commit, cache, repo_type=repo_type, include=include, exclude=exclude)
    if not check.ok:
        raise DownloadError(f"download of {what} ended, but {check.message}")
    return DownloadResult(
        repo_id=repo_id,
        repo_type=repo_type,
        revision=rev,
        commit=commit,
        path=str(path),
        files=len(selected),
        bytes_total=sum(f.size for f in wanted.values()),
        bytes_present=sum(wanted[e].size for e in present) + shared,
        bytes_reused=sum(r.size for r in reused),
        bytes_downloaded=downloaded,
        reused=tuple(reused),
        warnings=tuple(problems),
    )


def _from_cache(
    repo_id: str,
    revision: str,
    cache: str,
    repo_type: str,
    include: Sequence[str] | None,
    exclude: Sequence[str] | None,
    reason: str,
    *,
    offline: bool,
) -> DownloadResult:
    found = find_cached_snapshot(repo_id, revision, cache, repo_type=repo_type, include=include, exclude=exclude)
    what = f"{repo_type} {repo_id}"
    if not found.ok or found.snapshot is None or found.commit is None:
        hint = "unset HF_HUB_OFFLINE to download it" if offline else "check the connection and run it again"
        detail = found.message[0].lower() + found.message[1:] if found.message else "it is not cached"
        raise DownloadError(f"{reason}, and {detail} ({hint})")
    return DownloadResult(
        repo_id=repo_id,
        repo_type=repo_type,
        revision=revision,
        commit=found.commit,
        path=found.snapshot,
        files=found.expected or 0,
        bytes_total=0,
        bytes_present=0,
        bytes_reused=0,
        bytes_downloaded=0,
        offline=reason + f"; using the cached snapshot of {what} at {found.commit[:12]}",
    )


# -- what is cached --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedModel:
    """One repo in the HF cache, as `DownloadManager.list_models` reports it."""

    repo_id: str
    repo_type: str
    size_bytes: int  # distinct inodes, as `analyze` counts
    status: str  # complete | incomplete | broken | unknown (see `RepoStatus`)
    revisions: tuple[str, ...]
    path: str  # the repo folder
    snapshot: str | None  # the usable snapshot of `main`, when there is one
    problems: tuple[str, ...] = field(default=())


def list_cached_models(cache_dir: str | os.PathLike[str] | None = None) -> list[CachedModel]:
    """Every repo in the HF cache with its size, revisions and status; reads only, no network."""
    cache = cache_root(cache_dir)
    inventory = scan_locations(Location(cache, "cache"), [])
    by_repo: dict[str, list[FileRecord]] = {}
    for record in inventory.records:
        by_repo.setdefault(record.repo_key, []).append(record)
    found = []
    for repo in inventory.repos:
        if repo.store is not StoreKind.HF_CACHE or repo.repo_type not in REPO_TYPES:
            continue
        try:
            snapshot = get_cached_model_path(repo.repo_id, None, cache, repo_type=repo.repo_type)
        except InvalidRepoId:
            snapshot = None
        found.append(
            CachedModel(
                repo_id=repo.repo_id,
                repo_type=repo.repo_type,
                size_bytes=distinct_inode_bytes(by_repo.get(repo.key, [])),
                status=repo.status.value,
                revisions=repo.revisions,
                path=repo.path,
                snapshot=snapshot,
                problems=repo.problems,
            )
        )
    return sorted(found, key=lambda m: (m.repo_type, m.repo_id.lower()))


# -- the manager of the original solution document ------------------------------------------------------


class DownloadManager:
    """Downloads models into the HF cache only (never a separate folder) and finds them offline.

    >>> manager = DownloadManager()                      # doctest: +SKIP
    >>> manager.download_qwen_image()                    # doctest: +SKIP
    '/home/me/.cache/huggingface/hub/models--Qwen--Qwen-Image/snapshots/...'
    >>> manager.get_model_path("Qwen/Qwen-Image")        # no network  # doctest: +SKIP
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        endpoint: str | None = None,
        token: bool | str | None = None,
        *,
        models: Sequence[str] | None = None,
        reuse: bool = True,
        progress: bool | None = None,
    ) -> None:
        self.cache_dir = cache_root(cache_dir)
        self.endpoint = endpoint
        self.token = token
        self.models = list(models) if models else None
        self.reuse = reuse
        self.progress = progress
        self.last_result: DownloadResult | None = None

    def download(
        self,
        repo_id: str,
        revision: str | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        repo_type: str = "model",
    ) -> str:
        """Download (or complete) `repo_id` into the cache; returns the snapshot folder.

        The details (bytes downloaded and reused) are in `last_result`.
        """
        result = download_snapshot(
            repo_id,
            revision=revision,
            repo_type=repo_type,
            include=include,
            exclude=exclude,
            cache_dir=self.cache_dir,
            endpoint=self.endpoint,
            token=self.token,
            models=self.models,
            reuse=self.reuse,
            progress=self.progress,
        )
        self.last_result = result
        return result.path

    def get_model_path(self, repo_id: str, revision: str | None = None) -> str | None:
        """The cached snapshot folder of `repo_id`, or None when it is not (completely) cached. No network."""
        return get_cached_model_path(repo_id, revision, self.cache_dir)

    def list_models(self) -> list[CachedModel]:
        """The repos in the cache, with revisions, size and status."""
        return list_cached_models(self.cache_dir)

    def download_qwen_image(self, revision: str | None = None) -> str:
        """Download Qwen/Qwen-Image into the cache; returns its snapshot folder."""
        return self.download(QWEN_IMAGE, revision=revision)

    def download_qwen2_vl(self, revision: str | None = None) -> str:
        """Download Qwen/Qwen2-VL-7B-Instruct into the cache; returns its snapshot folder."""
        return self.download(QWEN2_VL, revision=revision)


#: The name the original solution document uses.
FixedModelDownloadManager = DownloadManager

"""Downloading into the HF cache only, reusing bytes already on this machine: THE download entry point.

Downloading is find, then act:

1. resolve the revision to a commit and get its file list with sha256s (`hub.remote`: the Hub's
   `repo_info` and tree listing, or the commit's `trees/<commit>.json` when cached);
2. find, read-only, the files whose bytes the cache lacks in every store modelcache reads
   (other repos' blobs, local_dir copies, plain folders): same size, and a claim (blob name,
   local_dir etag, digest index) or a hash that says the same bytes (`hub.reuse`);
3. place each under `blobs/<etag>` (`act.place`, through `fsops`): a reflink, else a hard link,
   else a copy, under a temporary name in `blobs/`, verified before it takes its name, holding
   huggingface_hub's lock of that blob; never over an existing blob;
4. `huggingface_hub.snapshot_download` then finds those blobs, makes the snapshot links,
   and downloads only the rest.

The repo's download lock is held from step 2 to the end. Offline (HF_HUB_OFFLINE=1), or when the
Hub cannot be reached, a complete cached snapshot (`hub.lookup`) is the answer.

The one module of `hub` that imports `act` (`act.place`, and `act.fsops` to write a ref); the
rest of `hub` only finds. huggingface_hub is imported when a download runs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from ..act import fsops, place
from ..common import display
from ..digests import DigestIndex
from ..errors import InputError, ModelcacheError
from ..inventory import Warning_
from ..locations import Location, digest_index_path, model_locations
from ..uses import record_use
from .errors import DownloadError, download_failed, hub_error, unreachable, writing
from .lookup import find_cached_snapshot
from .names import cache_root, check_repo_id, check_repo_type, check_revision, filtered, repo_folder
from .remote import RemoteFile, commit_files
from .reuse import Reused, find_reuse_candidates, scan_for_reuse


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
    folder = repo_folder(repo_id, repo_type)
    storage = os.path.join(cache, folder)
    what = f"{repo_type} {repo_id}"
    hub = _endpoint(endpoint)
    model_dirs = model_locations(list(models) if models else None) if reuse else []

    if offline_mode():
        return _from_cache(repo_id, rev, cache, repo_type, include, exclude, "HF_HUB_OFFLINE is set", offline=True)

    from huggingface_hub import HfApi, snapshot_download

    api = HfApi(endpoint=endpoint, token=token)
    try:
        commit, files = commit_files(api, storage, repo_id, repo_type, rev, token, hub)
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

    reused: list[Reused] = []
    problems: list[Warning_] = []
    placed: set[str] = set()
    with ExitStack() as held:
        with writing(what, cache):
            held.enter_context(place.download_lock(cache, folder))
        missing = [f for etag, f in wanted.items() if etag not in present]
        if reuse and missing:
            index = DigestIndex(digest_index_path())
            try:
                with writing(what, cache):
                    reused, problems = _reuse(missing, cache, folder, model_dirs, index, on_reused)
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
    record_use(cache, folder, commit)  # for `prune`: downloaded now is used now
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


def _reuse(
    wanted: Sequence[RemoteFile],
    cache: str,
    folder: str,
    models: Sequence[Location],
    index: DigestIndex | None,
    on_reused: Callable[[Reused], None] | None,
) -> tuple[list[Reused], list[Warning_]]:
    """Place every wanted blob whose bytes are on this machine; returns what was placed and what went wrong."""
    inventory = scan_for_reuse(cache, models)
    device = _device_of(os.path.join(cache, folder, "blobs"))
    candidates = find_reuse_candidates(wanted, inventory, index, device)
    try:
        return place.place_reused(wanted, candidates, cache, folder, device, index, on_reused)
    except place.NoSpace as e:
        raise _no_space(cache, e.file, e.source) from None


def _no_space(cache: str, f: RemoteFile, source: str) -> DownloadError:
    free = free_bytes(cache)
    have = f"{free:,} bytes free" if free is not None else "free space unknown"
    return DownloadError(
        f"no space left on the disk of {display(cache)} while copying {display(f.path)} ({f.size:,} bytes) "
        f"into the cache from {display(source)} ({have}); nothing was downloaded"
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
    record_use(cache, repo_folder(repo_id, repo_type), found.commit)
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


def free_bytes(path: str) -> int | None:
    """Free bytes on the file system that holds `path` (or would: its nearest existing parent)."""
    return _of_nearest_existing(path, lambda p: shutil.disk_usage(p).free)


def _device_of(path: str) -> int | None:
    """Device of `path`, or of its nearest existing parent."""
    return _of_nearest_existing(path, lambda p: os.stat(p).st_dev)


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

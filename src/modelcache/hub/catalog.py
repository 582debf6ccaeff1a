"""What the HF cache holds, repo by repo: `DownloadManager.list_models` (the API of the original solution).

The rows are those of `modelcache list` (`analysis.list_rows` over a scan of the cache alone):
the same size per repo (distinct inodes) and status; each gets the usable snapshot of `main`
from the offline lookup. Reads only, no network.

Imports the finding side (`scan`, `analysis`, `inventory`, `locations`) and `hub.lookup` /
`hub.names`; never `act`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..analysis import list_rows
from ..locations import Location
from ..scan import scan_locations
from ..store_kind import StoreKind
from .lookup import get_cached_model_path
from .names import REPO_TYPES, InvalidRepoId, cache_root


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
    found = []
    for row in list_rows(scan_locations(Location(cache, "cache"), []), corrupt=set()):
        repo = row.repo
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
                size_bytes=row.size_bytes,
                status=row.status,
                revisions=repo.revisions,
                path=repo.path,
                snapshot=snapshot,
                problems=repo.problems,
            )
        )
    return sorted(found, key=lambda m: (m.repo_type, m.repo_id.lower()))

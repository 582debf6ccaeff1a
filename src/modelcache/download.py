"""The public import path of the download API: `DownloadManager`, and the names of `hub` it uses.

`from modelcache.download import ...` is what users, the shims and the original solution's code
import; the work is in `hub/` (`hub.fetch` downloads, `hub.lookup` finds offline, `hub.catalog`
lists the cache). This is the one module that re-exports; code inside modelcache imports from
`hub` directly. It reaches `act` only through `hub.fetch`.

>>> get_cached_model_path("Qwen/Qwen-Image")                          # doctest: +SKIP
'/home/me/.cache/huggingface/hub/models--Qwen--Qwen-Image/snapshots/75e0b4be04f60ec59a75f475837eced720f823b6'
>>> DownloadManager().download("org/model", include=["*.json"])      # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .hub.catalog import CachedModel, list_cached_models
from .hub.errors import DownloadError
from .hub.fetch import DownloadResult, download_snapshot
from .hub.lookup import CachedSnapshot, NotCachedError, find_cached_snapshot, get_cached_model_path
from .hub.names import InvalidRepoId, cache_root
from .hub.reuse import Reused

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

QWEN_IMAGE = "Qwen/Qwen-Image"
QWEN2_VL = "Qwen/Qwen2-VL-7B-Instruct"


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

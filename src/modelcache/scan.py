"""Run every store reader over the machine's roots and build one `Inventory`.

>>> inv = scan(cache_dir="~/.cache/huggingface/hub", models=["./models"])  # doctest: +SKIP
>>> inv.store_bytes()                                                      # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .errors import InputError
from .inventory import FileRecord, Inventory, Repo, Warning_
from .locations import Location, hf_cache_location, model_locations
from .stores.base import Collector, display
from .stores.folders import read_models_folder
from .stores.hf_cache import HFCacheReader


def scan(
    cache_dir: str | os.PathLike[str] | None = None,
    models: Sequence[str] | None = None,
) -> Inventory:
    """Read the HF cache and the model folders; read-only.

    `cache_dir` defaults to where huggingface_hub resolves its cache; `models` to the config
    file's folders, else `./models` when it exists (see `locations.model_locations`).
    """
    return scan_locations(hf_cache_location(cache_dir), model_locations(list(models or [])))


def scan_locations(cache: Location, models: Sequence[Location]) -> Inventory:
    """Read the given cache and model folders. A cache that does not exist yet is empty, not an error."""
    if os.path.lexists(cache.path) and not os.path.isdir(cache.path):
        raise InputError(f"HF cache path is not a folder ({cache.source}): {display(cache.path)}")
    hf = HFCacheReader(cache.path)
    parts: list[Collector] = [hf.read()]
    skip = frozenset({hf.cache_dir})
    for loc in models:
        out = Collector()
        read_models_folder(loc.path, out, hf.commits, skip)
        parts.append(out)
    return merge((cache.path, *(m.path for m in models)), parts)


def merge(roots: tuple[str, ...], parts: Sequence[Collector]) -> Inventory:
    """One inventory from several readers; a path reached from two roots is kept once."""
    records: dict[str, FileRecord] = {}
    repos: dict[str, Repo] = {}
    warnings: dict[Warning_, None] = {}
    links = []
    layouts = []
    for part in parts:
        links.extend(part.links)
        layouts.extend(part.layouts)
        for record in part.records:
            records.setdefault(record.path, record)
        for repo in part.repos:
            repos.setdefault(repo.key, repo)
        warnings.update(dict.fromkeys(part.warnings))
    return Inventory(
        roots, tuple(records.values()), tuple(repos.values()), tuple(warnings), tuple(links), tuple(layouts)
    )

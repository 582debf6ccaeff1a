"""Run every store reader over the machine's roots and build one `Inventory`.

>>> inv = scan(cache_dir="~/.cache/huggingface/hub", models=["./models"])  # doctest: +SKIP
>>> inv.store_bytes()                                                      # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .common import display
from .errors import InputError
from .inventory import FileRecord, Inventory, Repo, Warning_
from .locations import Location, StoreLocation, hf_cache_location, model_locations
from .prefetch import Prefetch, folders_of
from .stores.base import Collector
from .stores.folders import read_models_folder
from .stores.hf_cache import HFCacheReader
from .stores.registry import spec_of


def scan(
    cache_dir: str | os.PathLike[str] | None = None,
    models: Sequence[str] | None = None,
) -> Inventory:
    """Read the HF cache and the model folders; read-only.

    `cache_dir` defaults to where huggingface_hub resolves its cache; `models` to the config
    file's folders, else `./models` when it exists (see `locations.model_locations`).
    """
    return scan_locations(hf_cache_location(cache_dir), model_locations(list(models or [])))


def scan_locations(cache: Location, models: Sequence[Location], stores: Sequence[StoreLocation] = ()) -> Inventory:
    """Read the given cache, model folders and other tools' stores. A cache that does not exist
    yet is empty, not an error; a store that cannot be read is reported and skipped."""
    if os.path.lexists(cache.path) and not os.path.isdir(cache.path):
        raise InputError(f"HF cache path is not a folder ({cache.source}): {display(cache.path)}")
    prefetch = Prefetch(folders_of([cache.path, *(m.path for m in models), *(s.path for s in stores)]))
    try:
        return _scan_locations(cache, models, stores)
    finally:
        prefetch.stop()


def _scan_locations(cache: Location, models: Sequence[Location], stores: Sequence[StoreLocation]) -> Inventory:
    hf = HFCacheReader(cache.path)
    parts: list[Collector] = [hf.read()]
    skip = frozenset({hf.cache_dir})
    for loc in models:
        out = Collector()
        read_models_folder(loc.path, out, hf.commits, skip)
        parts.append(out)
    for store in stores:
        if store.path == hf.cache_dir or store.path.startswith(hf.cache_dir + os.sep):
            continue  # llama.cpp's default: it downloads into the HF cache itself
        parts.append(read_store(store))
    roots = (cache.path, *(m.path for m in models), *(s.path for s in stores))
    return merge(roots, parts)


def read_store(store: StoreLocation) -> Collector:
    """One tool's store, with the reader its module declares."""
    reader = spec_of(store.kind).reader
    if reader is None:
        raise InputError(f"{store.kind.value} is not read from a --store folder")
    out = Collector()
    reader(store.path, out)
    return out


def merge(roots: tuple[str, ...], parts: Sequence[Collector]) -> Inventory:
    """One inventory from several readers; a path reached from two roots is kept once."""
    records: list[FileRecord] = []
    repos: dict[str, Repo] = {}
    warnings: dict[Warning_, None] = {}
    hf_repos = []
    leftovers = []
    for part in parts:
        roots += tuple(part.roots)
        hf_repos.extend(part.hf_repos)
        leftovers.extend(part.leftovers)
        records.extend(part.records)
        for repo in part.repos:
            repos.setdefault(repo.key, repo)
        warnings.update(dict.fromkeys(part.warnings))
    return Inventory(
        roots,
        tuple(_first_per_path(records)),
        tuple(repos.values()),
        tuple(warnings),
        tuple(hf_repos),
        tuple(leftovers),
    )


def _first_per_path(records: list[FileRecord]) -> list[FileRecord]:
    """`records` without those whose path an earlier one has.

    A walk lists each folder once and shares one folder string among its records, so two
    records of one path have equal folder strings that are different objects: only the
    folders read twice (two roots that overlap) are compared name by name.
    """
    first: dict[str, str] = {}  # folder -> the folder object seen first
    again: set[str] = set()  # folders seen as two or more objects
    for r in records:
        folder = r.folder
        seen = first.setdefault(folder, folder)
        if seen is not folder or len(folder) < 2:  # "" and "/" are shared objects: always compared
            again.add(folder)
    if not again:
        return records
    kept = []
    paths: set[str] = set()
    for r in records:
        if r.folder in again:
            path = r.path
            if path in paths:
                continue
            paths.add(path)
        kept.append(r)
    return kept

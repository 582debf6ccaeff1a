"""Run every store reader over the machine's roots and build one `Inventory`.

>>> inv = scan(cache_dir="~/.cache/huggingface/hub", models=["./models"])  # doctest: +SKIP
>>> inv.store_bytes()                                                      # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from .errors import InputError
from .inventory import FileRecord, Inventory, Repo, StoreKind, Warning_
from .locations import Location, StoreLocation, hf_cache_location, model_locations
from .stores import apps
from .stores.base import Collector, display
from .stores.folders import read_models_folder
from .stores.hf_cache import HFCacheReader
from .stores.lmstudio import read_lmstudio
from .stores.modelscope import read_modelscope
from .stores.ollama import read_ollama


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


READERS: dict[StoreKind, Callable[[str, Collector], None]] = {
    StoreKind.OLLAMA: read_ollama,
    StoreKind.LMSTUDIO: read_lmstudio,
    StoreKind.MODELSCOPE: read_modelscope,
    StoreKind.GPT4ALL: apps.read_gpt4all,
    StoreKind.JAN: apps.read_jan,
    StoreKind.COMFYUI: apps.read_comfyui,
    StoreKind.TORCH_HUB: apps.read_torch_hub,
    StoreKind.TEXTGEN_WEBUI: apps.read_textgen_webui,
}


def read_store(store: StoreLocation) -> Collector:
    """One tool's store, with the reader for its layout."""
    if store.kind is StoreKind.LLAMACPP:
        try:
            hf_layout = any(n.startswith("models--") for n in os.listdir(store.path))
        except OSError:
            hf_layout = False
        if hf_layout:  # llama.cpp since 2026-03: an HF cache layout at LLAMA_CACHE
            return HFCacheReader(store.path, StoreKind.LLAMACPP).read()
        out = Collector()
        apps.read_llamacpp_flat(store.path, out)
        return out
    out = Collector()
    READERS[store.kind](store.path, out)
    return out


def merge(roots: tuple[str, ...], parts: Sequence[Collector]) -> Inventory:
    """One inventory from several readers; a path reached from two roots is kept once."""
    records: dict[str, FileRecord] = {}
    repos: dict[str, Repo] = {}
    warnings: dict[Warning_, None] = {}
    links = []
    layouts = []
    leftovers = []
    for part in parts:
        roots += tuple(part.roots)
        links.extend(part.links)
        layouts.extend(part.layouts)
        leftovers.extend(part.leftovers)
        for record in part.records:
            records.setdefault(record.path, record)
        for repo in part.repos:
            repos.setdefault(repo.key, repo)
        warnings.update(dict.fromkeys(part.warnings))
    return Inventory(
        roots,
        tuple(records.values()),
        tuple(repos.values()),
        tuple(warnings),
        tuple(links),
        tuple(layouts),
        tuple(leftovers),
    )

"""huggingface_hub's Xet cache (`HF_XET_CACHE`, else `<HF_HOME>/xet`): hf_xet's own working caches.

```
xet/<endpoint tag>/chunk-cache/<2 chars>/<key>/<range>   chunks of downloaded files, to fetch them once
xet/<endpoint tag>/shard-cache/<hash>.mdb                shards, used when uploading
xet/<endpoint tag>/staging/...                           the state of resumable uploads
xet/logs/...                                             hf_xet's logs
```
The endpoint tag is the start of the storage endpoint's URL and a hash of it
(`https___cas_serv-tGqkUaZf_CBPHQ6h`); older hf_xet releases spelled the folders `chunk_cache`
and `shard_cache`. The chunk cache is off by default since hf_xet 1.2.0; where it is on, it is
capped (10 GB) and evicts at random: tens of GB are found there.

None of it is a model file: its files have the role CACHE, so they count in the totals and are
never a duplicate, never linked, never a reuse candidate. `clean --xet-chunk-cache` empties the
chunk cache (hf_xet downloads again what it misses), never by default, and not while a process
has a file of it open. Each `<endpoint tag>/<folder>` (and `logs`) is listed as one entry.

Sources: huggingface_hub `constants.py` (`HF_XET_CACHE`) and `docs/source/en/guides/manage-cache.md`;
xet-core `xet_runtime/src/core/cache_dir.rs` (`xet_cache_root`), `xet_data/src/processing/
configurations.rs` (the endpoint tag), `xet_runtime/src/config/groups/{chunk_cache,shard}.rs`.
"""

from __future__ import annotations

import os

from ..inventory import FileRecord, Repo, RepoStatus, Role
from ..store_kind import StoreKind
from .base import Collector, walk
from .registry import NO_LINK, CleanKind, OnRequest, StoreSpec, from_env, xdg

STORE = StoreKind.declare("xet_cache", rank=130)
CHUNK_CACHE = ("chunk-cache", "chunk_cache")


def locate() -> tuple[str, str]:
    """Where hf_xet keeps it, as it and huggingface_hub resolve it (read when asked, not at import)."""
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        default = (os.path.join(os.path.expanduser(hf_home), "xet"), "HF_HOME")
    else:
        default = (xdg("XDG_CACHE_HOME", ".cache", "huggingface", "xet"), "default (~/.cache/huggingface/xet)")
    path, source = from_env("HF_XET_CACHE", default)
    return os.path.expanduser(path), source


def read_xet_cache(root: str, out: Collector) -> None:
    root = os.path.abspath(root)
    parts: dict[str, str] = {}  # entry (an endpoint's folder, logs) -> its name
    for entry in walk(root, out.warn):
        if not entry.is_file:
            continue  # hf_xet makes no links
        names = entry.relpath.split("/")[:-1][:2]  # `<tag>/<folder>`, `logs`, or none (a loose file)
        key = os.path.join(root, *names)
        parts.setdefault(key, "/".join(names) or "(loose files)")
        out.add(entry, STORE, Role.CACHE, key)
    for key, name in sorted(parts.items()):
        out.repos.append(Repo(key, name, "cache", STORE, key, (), RepoStatus.UNKNOWN))


def in_chunk_cache(record: FileRecord) -> bool:
    return record.store is STORE and os.path.basename(record.repo_key) in CHUNK_CACHE


SPEC = StoreSpec(
    STORE,
    "HF Xet cache",
    reader=read_xet_cache,
    locate=locate,
    on_request=OnRequest(
        CleanKind("xet-chunk-cache", "hf_xet chunk cache files (downloaded again when needed)"),
        in_chunk_cache,
        "hf_xet's chunk cache: it downloads again what it misses",
    ),
    links=NO_LINK,  # not model files: never replaced, never linked to
)

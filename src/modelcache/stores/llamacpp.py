"""llama.cpp's model cache (`LLAMA_CACHE`, else `~/.cache/llama.cpp`).

Two layouts. Since 2026-03 llama.cpp downloads into an HF cache layout (read by the HF cache
reader, as this store); its default is then the HF cache itself, which scan reads once. Before,
a flat folder:

```
<owner>_<repo>_<file>.gguf                    the model file
<owner>_<repo>_<file>.gguf.etag / .json       sidecars: the HF etag (an LFS file's sha256: a claim)
<owner>_<repo>_<file>.gguf.downloadInProgress a partial download
manifest=<owner>=<repo>=<tag>.json            its own metadata
```
Source: llama.cpp `common/download.cpp` (shared/STORES.md).
"""

from __future__ import annotations

import json
import os

from ..common import SMALL_FILE_CAP, read_capped
from ..inventory import Digest
from ..store_kind import StoreKind
from .base import Collector, Entry, read_files
from .hf_cache import HFCacheReader
from .registry import StoreSpec, from_env, tool_partials, xdg

STORE = StoreKind.declare("llamacpp", rank=20)
TITLE = "llama.cpp"
SIDECARS = (".etag", ".json", ".lastModified")


def locate() -> tuple[str, str]:
    return from_env("LLAMA_CACHE", (xdg("XDG_CACHE_HOME", ".cache", "llama.cpp"), "default (~/.cache/llama.cpp)"))


def read_llamacpp(root: str, out: Collector) -> None:
    try:
        hf_layout = any(n.startswith("models--") for n in os.listdir(root))
    except OSError:
        hf_layout = False
    if hf_layout:  # llama.cpp since 2026-03: an HF cache layout at LLAMA_CACHE
        HFCacheReader(root, STORE, out).read()
    else:
        read_flat(root, out)


def read_flat(root: str, out: Collector) -> None:
    def repo_of(entry: Entry) -> str | None:
        name = entry.relpath
        if "/" in name or name.startswith("manifest="):
            return None
        stem = name.removesuffix(".downloadInProgress")
        for suffix in SIDECARS:
            stem = stem.removesuffix(suffix)
        parts = stem.split("_", 2)
        return f"{parts[0]}/{parts[1]}" if len(parts) == 3 else None

    read_files(
        root,
        STORE,
        out,
        repo_of,
        partial=lambda name: name.endswith(".downloadInProgress"),
        metadata=lambda e: e.relpath.endswith(SIDECARS) or e.relpath.startswith("manifest="),
        claim=_etag_claim,
    )


def _etag_claim(entry: Entry) -> Digest | None:
    """llama.cpp's sidecar etag of an HF LFS file is its sha256: a claim."""
    for suffix in (".etag", ".json"):
        try:
            text = read_capped(entry.path + suffix, SMALL_FILE_CAP).decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        etag = text
        if suffix == ".json":
            try:
                etag = str(json.loads(text).get("etag", ""))
            except (ValueError, AttributeError, RecursionError):
                continue
        digest = Digest.from_name(etag.strip().strip('"'))
        if digest is not None and digest.algorithm == "sha256":
            return digest
    return None


# common/download.cpp: a changed file is removed, then `<path>.downloadInProgress` renamed in.
SPEC = StoreSpec(
    STORE,
    TITLE,
    reader=read_llamacpp,
    locate=locate,
    partials=tool_partials(STORE, TITLE),
    written_in_place_by=None,
)

"""torch hub's checkpoints (`TORCH_HOME`, else `~/.cache/torch`): `hub/checkpoints/<name>-<hash>.pth`.

A download in progress is `<file>.<32 hex>.partial`. The 8+ hex in a name is a prefix of the
file's sha256: too short to be a claim. Source: torch `hub.py` (shared/STORES.md).
"""

from __future__ import annotations

import os
import re

from ..store_kind import StoreKind
from .base import Collector, read_files
from .registry import StoreSpec, from_env, tool_partials, xdg

STORE = StoreKind.declare("torch_hub", rank=90)
TITLE = "torch hub"
PARTIAL = re.compile(r".+\.[0-9a-f]{32}\.partial")


def locate() -> tuple[str, str]:
    return from_env("TORCH_HOME", (xdg("XDG_CACHE_HOME", ".cache", "torch"), "default (~/.cache/torch)"))


def read_torch_hub(root: str, out: Collector) -> None:
    checkpoints = os.path.join(root, "hub", "checkpoints") if os.path.isdir(os.path.join(root, "hub")) else root
    read_files(
        checkpoints,
        STORE,
        out,
        lambda e: e.relpath.split("/")[0],
        partial=lambda name: bool(PARTIAL.fullmatch(name)),
    )


# torch/hub.py `download_url_to_file`: a temporary file in the folder, moved over the target.
SPEC = StoreSpec(
    STORE,
    TITLE,
    reader=read_torch_hub,
    locate=locate,
    partials=tool_partials(STORE, TITLE),
    written_in_place_by=None,
)

"""modelcache: every model file on the machine, in one place.

>>> from modelcache import scan, find_duplicates
>>> inventory = scan(cache_dir="~/.cache/huggingface/hub", models=["./models"])  # doctest: +SKIP
>>> find_duplicates(inventory.records).duplicate_bytes                          # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Names are imported on first use: `modelcache analyze` should not pay for huggingface_hub's
# import (about 80 ms) when it never downloads (a warm re-analyze is a fraction of a second).
_EXPORTS = {
    "DuplicateGroup": "duplicates",
    "DuplicateResult": "duplicates",
    "find_duplicates": "duplicates",
    "scan": "scan",
    "DownloadManager": "download",
    "FixedModelDownloadManager": "download",
    "download_snapshot": "download",
    # the offline lookup from its own module: finding a model path imports nothing that writes
    "find_cached_snapshot": "hub.lookup",
    "get_cached_model_path": "hub.lookup",
}

__all__ = [
    "DownloadManager",
    "DuplicateGroup",
    "DuplicateResult",
    "FixedModelDownloadManager",
    "__version__",
    "download_snapshot",
    "find_cached_snapshot",
    "find_duplicates",
    "get_cached_model_path",
    "scan",
]

if TYPE_CHECKING:
    from .download import DownloadManager, FixedModelDownloadManager, download_snapshot
    from .duplicates import DuplicateGroup, DuplicateResult, find_duplicates
    from .hub.lookup import find_cached_snapshot, get_cached_model_path
    from .scan import scan


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'modelcache' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

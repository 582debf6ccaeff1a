"""modelcache: every model file on the machine, in one place.

>>> from modelcache import scan, find_duplicates
>>> inventory = scan(cache_dir="~/.cache/huggingface/hub", models=["./models"])  # doctest: +SKIP
>>> find_duplicates(inventory.records).duplicate_bytes                          # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from .download import (
    DownloadManager,
    FixedModelDownloadManager,
    download_snapshot,
    find_cached_snapshot,
    get_cached_model_path,
)
from .duplicates import DuplicateGroup, DuplicateResult, find_duplicates
from .scan import scan

__all__ = ["DuplicateGroup", "DuplicateResult", "__version__", "find_duplicates", "scan"]
__all__ += [
    "DownloadManager",
    "FixedModelDownloadManager",
    "download_snapshot",
    "find_cached_snapshot",
    "get_cached_model_path",
]

"""Jan's models (>= 0.6): `<data>/llamacpp/models/<org>/<repo>/model.gguf` beside a `model.yml`.

Found at `~/.local/share/Jan/data`. No partial files, no hash metadata.
"""

from __future__ import annotations

import os

from ..store_kind import StoreKind
from .base import Collector, Entry, read_files
from .registry import StoreSpec, xdg

STORE = StoreKind.declare("jan", rank=60)


def locate() -> tuple[str, str]:
    return xdg("XDG_DATA_HOME", ".local/share", "Jan", "data"), "default"


def read_jan(data: str, out: Collector) -> None:
    models = os.path.join(data, "llamacpp", "models") if os.path.isdir(os.path.join(data, "llamacpp")) else data

    def repo_of(entry: Entry) -> str | None:
        parts = entry.relpath.split("/")
        return "/".join(parts[:2]) if len(parts) >= 3 else None

    read_files(models, STORE, out, repo_of, metadata=lambda e: e.relpath.endswith("model.yml"))


SPEC = StoreSpec(STORE, "Jan", reader=read_jan, locate=locate)

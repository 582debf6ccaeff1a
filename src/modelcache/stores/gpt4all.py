"""GPT4All's models folder: flat `*.gguf` files; a download in progress is `incomplete-<file>`.

Found where the app keeps it (`~/.local/share/nomic.ai/GPT4All`), else where its Python
bindings do (`~/.cache/gpt4all`). No hash metadata: copies are found by content.
Source: gpt4all `gpt4all-chat/src/modellist.cpp`, `gpt4all-bindings/python` (shared/STORES.md).
"""

from __future__ import annotations

from ..store_kind import StoreKind
from .base import Collector, read_files
from .registry import StoreSpec, first_dir, home, tool_partials, xdg

STORE = StoreKind.declare("gpt4all", rank=70)
TITLE = "GPT4All"


def locate() -> tuple[str, str]:
    return first_dir(
        (xdg("XDG_DATA_HOME", ".local/share", "nomic.ai", "GPT4All"), "default"),
        (home(".cache", "gpt4all"), "default (Python bindings)"),
    )


def read_gpt4all(root: str, out: Collector) -> None:
    read_files(root, STORE, out, lambda e: None, partial=lambda name: name.startswith("incomplete-"))


SPEC = StoreSpec(STORE, TITLE, reader=read_gpt4all, locate=locate, partials=tool_partials(STORE, TITLE))

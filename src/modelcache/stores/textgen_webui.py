"""text-generation-webui's models (`--store textgen_webui=<models>`): `<owner>_<repo>/...`, each
folder with a `huggingface-metadata.txt` whose `sha256sum:` lines claim its files' digests.
No partial files.
"""

from __future__ import annotations

import os
import re

from ..common import SMALL_FILE_CAP, read_capped
from ..inventory import Digest
from ..store_kind import StoreKind
from .base import Collector, Entry, read_files
from .registry import StoreSpec

STORE = StoreKind.declare("textgen_webui", rank=100)


def read_textgen_webui(models: str, out: Collector) -> None:
    sums: dict[str, Digest] = {}
    for dirpath, _dirs, files in os.walk(models):
        if "huggingface-metadata.txt" in files:
            try:
                text = read_capped(os.path.join(dirpath, "huggingface-metadata.txt"), SMALL_FILE_CAP).decode("utf-8")
                for line in text.splitlines():
                    # "sha256sum:" lines as the webui writes them: "<hex> <file>"
                    match = re.match(r"\s*([0-9a-f]{64})\s+(\S.*)$", line.split("sha256sum:")[-1])
                    if match:
                        sums[os.path.join(dirpath, match.group(2).strip())] = Digest("sha256", match.group(1))
            except (OSError, UnicodeDecodeError):
                out.warn(dirpath, "unreadable huggingface-metadata.txt")

    def repo_of(entry: Entry) -> str | None:
        parts = entry.relpath.split("/")
        return parts[0] if len(parts) >= 2 else None

    read_files(
        models,
        STORE,
        out,
        repo_of,
        metadata=lambda e: e.relpath.endswith("huggingface-metadata.txt"),
        claim=lambda e: sums.get(e.path),
    )


SPEC = StoreSpec(STORE, "text-gen-webui", reader=read_textgen_webui)

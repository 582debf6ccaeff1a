"""Reader for LM Studio's models folder: `<models>/<publisher>/<repo>/<file>`.

LM Studio finds its home as `lms` does (`findLMStudioHome.ts`): the path in
`~/.lmstudio-home-pointer`, else `~/.cache/lm-studio` if it exists, else `~/.lmstudio`; models
are in `<home>/models` unless `downloadsFolder` in its `settings.json` says otherwise. It shows
exactly `<publisher>/<repo>` folders (an MLX model is a folder of safetensors at that depth) and
ignores files at other depths; so does this reader's naming, though it still counts their bytes.
No hash metadata is kept: copies are found by content.
"""

from __future__ import annotations

import json
import os

from ..common import SMALL_FILE_CAP, read_capped
from ..inventory import Repo, RepoStatus, Role
from ..store_kind import StoreKind
from .base import Collector, walk
from .registry import StoreSpec, home, xdg

STORE = StoreKind.declare("lmstudio", rank=50)


def locate() -> tuple[str, str]:
    """Where LM Studio keeps models, found as `lms` finds it (findLMStudioHome.ts, importCmd.ts)."""
    pointer = home(".lmstudio-home-pointer")
    try:
        found = (read_capped(pointer, 4096, follow_symlinks=True).decode("utf-8").strip(), "~/.lmstudio-home-pointer")
    except (OSError, UnicodeDecodeError):
        older = home(".cache", "lm-studio")
        if os.path.isdir(older):
            found = (older, "default (~/.cache/lm-studio)")
        else:
            found = (home(".lmstudio"), "default (~/.lmstudio)")
    settings = xdg("XDG_CONFIG_HOME", ".config", "LM Studio", "settings.json")
    try:
        folder = json.loads(read_capped(settings, SMALL_FILE_CAP, follow_symlinks=True)).get("downloadsFolder")
        if isinstance(folder, str) and folder:
            return os.path.expanduser(folder), "LM Studio settings.json downloadsFolder"
    except (OSError, ValueError, AttributeError, RecursionError):
        pass
    return os.path.join(found[0], "models"), found[1]


def read_lmstudio(models: str, out: Collector) -> None:
    models = os.path.abspath(models)
    seen: set[str] = set()
    for entry in walk(models, out.warn, prune=lambda path, rel: rel.startswith(".")):
        parts = entry.relpath.split("/")
        if not entry.is_file:
            continue
        if len(parts) < 3:
            out.warn(entry.path, "LM Studio ignores files outside <publisher>/<repo>/; counted, not listed")
            key = models
        else:
            key = os.path.join(models, parts[0], parts[1])
        out.add(entry, STORE, Role.MODEL, key, "/".join(parts[2:]) or entry.relpath)
        seen.add(key)
    for key in sorted(seen):
        name = os.path.relpath(key, models) if key != models else "(loose files)"
        out.repos.append(Repo(key, name, "model", STORE, key, (), RepoStatus.UNKNOWN))


SPEC = StoreSpec(STORE, "LM Studio", reader=read_lmstudio, locate=locate)

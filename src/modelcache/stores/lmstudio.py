"""Reader for LM Studio's models folder: `<models>/<publisher>/<repo>/<file>`.

LM Studio finds its home as `lms` does (`findLMStudioHome.ts`): the path in
`~/.lmstudio-home-pointer`, else `~/.cache/lm-studio` if it exists, else `~/.lmstudio`; models
are in `<home>/models` unless `downloadsFolder` in its `settings.json` says otherwise. It shows
exactly `<publisher>/<repo>` folders (an MLX model is a folder of safetensors at that depth) and
ignores files at other depths; so does this reader's naming, though it still counts their bytes.
No hash metadata is kept: copies are found by content.
"""

from __future__ import annotations

import os

from ..inventory import Repo, RepoStatus, Role, StoreKind
from .base import Collector, walk

STORE = StoreKind.LMSTUDIO


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

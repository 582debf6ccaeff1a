"""ComfyUI's models (`--store comfyui=<install>`): `models/<type>/<file>`, named `<type>/<file>`
as its loaders list them, and the folders its `extra_model_paths.yaml` adds (`base_path` +
`<type>: <subfolder(s)>` per section). No partial files, no hash metadata.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..common import SMALL_FILE_CAP, read_capped
from ..store_kind import StoreKind
from .base import Collector, Entry, read_files
from .registry import StoreSpec

STORE = StoreKind.declare("comfyui", rank=80)


def read_comfyui(install: str, out: Collector) -> None:
    models = os.path.join(install, "models") if os.path.isdir(os.path.join(install, "models")) else install

    def repo_of(entry: Entry) -> str | None:
        parts = entry.relpath.split("/")
        return "/".join(parts[:2]) if len(parts) >= 2 else None

    read_files(models, STORE, out, repo_of)
    config = os.path.join(install, "extra_model_paths.yaml")
    if not os.path.isfile(config):
        return
    import yaml

    try:
        sections = yaml.safe_load(read_capped(config, SMALL_FILE_CAP, follow_symlinks=True).decode("utf-8")) or {}
        if not isinstance(sections, dict):
            raise ValueError("not a mapping")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError) as e:
        out.warn(config, f"corrupt extra_model_paths.yaml ({e.__class__.__name__}); its folders skipped")
        return
    for section in sections.values():
        if not isinstance(section, dict):
            continue
        base = os.path.expanduser(str(section.get("base_path", "")))
        for model_type, value in section.items():
            if model_type in ("base_path", "is_default") or not isinstance(value, str):
                continue
            for sub in filter(None, (line.strip() for line in value.splitlines())):
                folder = os.path.join(base, sub) if base else sub
                if os.path.isdir(folder) and not os.path.abspath(folder).startswith(os.path.abspath(models)):
                    out.roots.append(os.path.abspath(folder))
                    read_files(folder, STORE, out, _named_under(str(model_type)))


def _named_under(model_type: str) -> Callable[[Entry], str | None]:
    return lambda entry: f"{model_type}/{entry.relpath}"


SPEC = StoreSpec(STORE, "ComfyUI", reader=read_comfyui)

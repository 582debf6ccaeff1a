"""Readers for the stores of llama.cpp (old flat cache), GPT4All, Jan, ComfyUI, torch hub and
text-generation-webui: folders of model files, each named as its tool shows it.

| store | layout | partial downloads | claims |
|---|---|---|---|
| llama.cpp (old) | `<owner>_<repo>_<file>.gguf`, `.etag`/`.json` sidecars | `*.downloadInProgress` | a 64-hex etag |
| GPT4All | flat `*.gguf` | `incomplete-<file>` | - |
| Jan (>= 0.6) | `llamacpp/models/<org>/<repo>/model.gguf` + `model.yml` | - | - |
| ComfyUI | `models/<type>/<file>` | - | - |
| torch hub | `hub/checkpoints/<name>-<hash>.pth` | `<dst>.<32 hex>.partial` | - |
| text-generation-webui | `models/<owner>_<repo>/...` with `huggingface-metadata.txt` | - | its `sha256sum:` lines |

llama.cpp's new cache is an HF cache layout and is read by the HF cache reader.
Sources: shared/STORES.md (llama.cpp `common/download.cpp`, gpt4all `modellist.cpp`, `torch/hub.py`, ...).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable

from ..common import SMALL_FILE_CAP, read_capped
from ..inventory import Digest, Repo, RepoStatus, Role, StoreKind
from .base import Collector, Entry, walk

TORCH_PARTIAL = re.compile(r".+\.[0-9a-f]{32}\.partial")
SIDECARS = (".etag", ".json", ".lastModified")


def _read(
    root: str,
    kind: StoreKind,
    out: Collector,
    repo_of: Callable[[Entry], str | None],
    partial: Callable[[str], bool] = lambda name: False,
    metadata: Callable[[Entry], bool] = lambda entry: False,
    claim: Callable[[Entry], Digest | None] = lambda entry: None,
) -> None:
    """Every file under `root`; `repo_of` names the model a file belongs to (None: the store itself)."""
    root = os.path.abspath(root)
    repos: dict[str, str] = {}
    for entry in walk(root, out.warn, prune=lambda path, rel: os.path.basename(rel).startswith(".")):
        if not entry.is_file:
            continue
        name = repo_of(entry)
        key = os.path.join(root, name) if name else root
        repos.setdefault(key, name or "(loose files)")
        if partial(os.path.basename(entry.path)):
            out.add(entry, kind, Role.INCOMPLETE, key)
        elif metadata(entry):
            out.add(entry, kind, Role.METADATA, key)
        else:
            out.add(entry, kind, Role.MODEL, key, claimed=claim(entry))
    for key, name in sorted(repos.items()):
        out.repos.append(Repo(key, name, "model", kind, key, (), RepoStatus.UNKNOWN))


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


def read_llamacpp_flat(root: str, out: Collector) -> None:
    def repo_of(entry: Entry) -> str | None:
        name = entry.relpath
        if "/" in name or name.startswith("manifest="):
            return None
        stem = name.removesuffix(".downloadInProgress")
        for suffix in SIDECARS:
            stem = stem.removesuffix(suffix)
        parts = stem.split("_", 2)
        return f"{parts[0]}/{parts[1]}" if len(parts) == 3 else None

    _read(
        root,
        StoreKind.LLAMACPP,
        out,
        repo_of,
        partial=lambda name: name.endswith(".downloadInProgress"),
        metadata=lambda e: e.relpath.endswith(SIDECARS) or e.relpath.startswith("manifest="),
        claim=_etag_claim,
    )


def read_gpt4all(root: str, out: Collector) -> None:
    _read(root, StoreKind.GPT4ALL, out, lambda e: None, partial=lambda name: name.startswith("incomplete-"))


def read_jan(data: str, out: Collector) -> None:
    models = os.path.join(data, "llamacpp", "models") if os.path.isdir(os.path.join(data, "llamacpp")) else data

    def repo_of(entry: Entry) -> str | None:
        parts = entry.relpath.split("/")
        return "/".join(parts[:2]) if len(parts) >= 3 else None

    _read(models, StoreKind.JAN, out, repo_of, metadata=lambda e: e.relpath.endswith("model.yml"))


def read_comfyui(install: str, out: Collector) -> None:
    """ComfyUI's `models/<type>/<file>` (named `<type>/<file>`, as its loaders list them), and the
    folders its `extra_model_paths.yaml` adds (`base_path` + `<type>: <subfolder(s)>` per section)."""
    models = os.path.join(install, "models") if os.path.isdir(os.path.join(install, "models")) else install

    def repo_of(entry: Entry) -> str | None:
        parts = entry.relpath.split("/")
        return "/".join(parts[:2]) if len(parts) >= 2 else None

    _read(models, StoreKind.COMFYUI, out, repo_of)
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
                    _read(folder, StoreKind.COMFYUI, out, _named_under(str(model_type)))


def _named_under(model_type: str) -> Callable[[Entry], str | None]:
    return lambda entry: f"{model_type}/{entry.relpath}"


def read_torch_hub(root: str, out: Collector) -> None:
    checkpoints = os.path.join(root, "hub", "checkpoints") if os.path.isdir(os.path.join(root, "hub")) else root
    _read(
        checkpoints,
        StoreKind.TORCH_HUB,
        out,
        lambda e: e.relpath.split("/")[0],
        partial=lambda name: bool(TORCH_PARTIAL.fullmatch(name)),
    )


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

    _read(
        models,
        StoreKind.TEXTGEN_WEBUI,
        out,
        repo_of,
        metadata=lambda e: e.relpath.endswith("huggingface-metadata.txt"),
        claim=lambda e: sums.get(e.path),
    )

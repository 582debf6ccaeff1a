"""Where things are: the HF cache, model folders, the config file and the digest index.

The HF cache is wherever huggingface_hub itself resolves it (HF_HUB_CACHE, HF_HOME,
XDG_CACHE_HOME, ~/.cache/huggingface/hub), so that modelcache and the library agree.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import SMALL_FILE_CAP, read_capped
from .errors import InputError
from .inventory import StoreKind


@dataclass(frozen=True, slots=True)
class Location:
    """A folder to scan and how it was found (shown to the user, so they can tell why)."""

    path: str
    source: str  # "--cache-dir", "HF_HUB_CACHE", "config", "default", ...


def hf_cache_location(cache_dir: str | os.PathLike[str] | None = None) -> Location:
    """The HF hub cache folder: `cache_dir` if given, else where huggingface_hub resolves it.

    >>> hf_cache_location("/data/hf").path
    '/data/hf'
    """
    if cache_dir is not None:
        return Location(os.path.abspath(os.fspath(cache_dir)), "--cache-dir")
    from huggingface_hub import constants

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        if os.environ.get(var):
            source = var
            break
    else:
        source = "default"
    return Location(os.path.abspath(os.path.expanduser(constants.HF_HUB_CACHE)), source)


def _user_file(override: str, xdg_var: str, xdg_default: str, name: str) -> Path:
    """`$override`, else `$xdg_var/modelcache/name` (the XDG base directory rule)."""
    explicit = os.environ.get(override)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get(xdg_var) or os.path.join(os.path.expanduser("~"), xdg_default)
    return Path(base) / "modelcache" / name


def config_path() -> Path:
    """`$MODELCACHE_CONFIG`, else `$XDG_CONFIG_HOME/modelcache/config.toml`."""
    return _user_file("MODELCACHE_CONFIG", "XDG_CONFIG_HOME", ".config", "config.toml")


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The config file as a dict; `{}` when there is none. A malformed file is an `InputError`."""
    path = path or config_path()
    # Imported here: most runs have no config file, and the parser is 2 ms of every start.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InputError(f"cannot read config file {path}: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"cannot read config file {path}: not a table")
    return dict(data)


def model_locations(models: list[str] | None, config: dict[str, Any] | None = None) -> list[Location]:
    """Model folders: `--models` if given, else the config file's `models`, else `./models` if present.

    Explicitly given folders must exist; the fallback `./models` is used only when it does.
    """
    if models:
        found = [Location(os.path.abspath(m), "--models") for m in models]
    else:
        config = load_config() if config is None else config
        configured = config.get("models", [])
        if not isinstance(configured, list) or not all(isinstance(m, str) for m in configured):
            raise InputError(f"config file {config_path()}: 'models' must be a list of folder paths")
        found = [Location(os.path.abspath(os.path.expanduser(m)), "config") for m in configured]
        if not found:
            return [Location(os.path.abspath("models"), "./models")] if os.path.isdir("models") else []
    for loc in found:
        if not os.path.isdir(loc.path):
            raise InputError(f"models folder not found ({loc.source}): {loc.path}")
    return found


def digest_index_path() -> Path:
    """`$MODELCACHE_INDEX`, else `$XDG_CACHE_HOME/modelcache/digests.sqlite`."""
    return _user_file("MODELCACHE_INDEX", "XDG_CACHE_HOME", ".cache", "digests.sqlite")


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """Another tool's model store, and how it was found (shown by `modelcache stores`)."""

    kind: StoreKind
    path: str
    source: str  # "OLLAMA_MODELS", "default", "--store", "~/.lmstudio-home-pointer", ...


def _home(*parts: str) -> str:
    return os.path.join(os.path.expanduser("~"), *parts)


def _xdg(var: str, default: str, *parts: str) -> str:
    return os.path.join(os.environ.get(var) or _home(default), *parts)


def _first_dir(*candidates: tuple[str, str]) -> tuple[str, str]:
    """The first candidate that exists, else the first (shown as not found)."""
    return next(((p, src) for p, src in candidates if p and os.path.isdir(p)), candidates[0])


def _lmstudio_models() -> tuple[str, str] | None:
    """Where LM Studio keeps models, found as `lms` finds it (findLMStudioHome.ts, importCmd.ts)."""
    pointer = _home(".lmstudio-home-pointer")
    home: tuple[str, str] | None = None
    try:
        home = (read_capped(pointer, 4096, follow_symlinks=True).decode("utf-8").strip(), "~/.lmstudio-home-pointer")
    except (OSError, UnicodeDecodeError):
        older = _home(".cache", "lm-studio")
        if os.path.isdir(older):
            home = (older, "default (~/.cache/lm-studio)")
        else:
            home = (_home(".lmstudio"), "default (~/.lmstudio)")
    settings = _xdg("XDG_CONFIG_HOME", ".config", "LM Studio", "settings.json")
    try:
        folder = json.loads(read_capped(settings, SMALL_FILE_CAP, follow_symlinks=True)).get("downloadsFolder")
        if isinstance(folder, str) and folder:
            return os.path.expanduser(folder), "LM Studio settings.json downloadsFolder"
    except (OSError, ValueError, AttributeError, RecursionError):
        pass
    return (os.path.join(home[0], "models"), home[1]) if home else None


def default_store_candidates() -> list[tuple[StoreKind, str, str]]:
    """(kind, path, source) where each tool keeps its models by its own rules; existing or not."""
    env = os.environ.get
    found: list[tuple[StoreKind, str, str]] = []

    def add(kind: StoreKind, hit: tuple[str, str] | None) -> None:
        if hit is not None:
            found.append((kind, os.path.abspath(hit[0]), hit[1]))

    add(
        StoreKind.OLLAMA,
        (env("OLLAMA_MODELS", ""), "OLLAMA_MODELS")
        if env("OLLAMA_MODELS")
        else _first_dir(
            (_home(".ollama", "models"), "default (~/.ollama/models)"),
            ("/usr/share/ollama/.ollama/models", "default (Linux service)"),
        ),
    )
    add(StoreKind.LMSTUDIO, _lmstudio_models())
    add(
        StoreKind.MODELSCOPE,
        (env("MODELSCOPE_CACHE", ""), "MODELSCOPE_CACHE")
        if env("MODELSCOPE_CACHE")
        else (_home(".cache", "modelscope"), "default (~/.cache/modelscope)"),
    )
    add(
        StoreKind.LLAMACPP,
        (env("LLAMA_CACHE", ""), "LLAMA_CACHE")
        if env("LLAMA_CACHE")
        else (_xdg("XDG_CACHE_HOME", ".cache", "llama.cpp"), "default (~/.cache/llama.cpp)"),
    )
    add(
        StoreKind.GPT4ALL,
        _first_dir(
            (_xdg("XDG_DATA_HOME", ".local/share", "nomic.ai", "GPT4All"), "default"),
            (_home(".cache", "gpt4all"), "default (Python bindings)"),
        ),
    )
    add(StoreKind.JAN, (_xdg("XDG_DATA_HOME", ".local/share", "Jan", "data"), "default"))
    add(
        StoreKind.TORCH_HUB,
        (env("TORCH_HOME", ""), "TORCH_HOME")
        if env("TORCH_HOME")
        else (_xdg("XDG_CACHE_HOME", ".cache", "torch"), "default (~/.cache/torch)"),
    )
    return found


STORE_NAMES = {
    kind.value: kind for kind in StoreKind if kind not in (StoreKind.HF_CACHE, StoreKind.LOCAL_DIR, StoreKind.PLAIN)
}


def store_locations(explicit: list[str] | None, discover: bool = True) -> list[StoreLocation]:
    """`--store KIND=PATH` (repeatable; the path must exist), then, unless told not to, every
    store found where its tool keeps it. A store given explicitly replaces the discovered one."""
    chosen: list[StoreLocation] = []
    for spec in explicit or []:
        kind_name, sep, path = spec.partition("=")
        if not sep or kind_name not in STORE_NAMES or not path:
            raise InputError(f"--store takes KIND=PATH, KIND one of {', '.join(sorted(STORE_NAMES))}: {spec!r}")
        if not os.path.isdir(path):
            raise InputError(f"store folder not found (--store {kind_name}): {path}")
        chosen.append(StoreLocation(STORE_NAMES[kind_name], os.path.abspath(path), "--store"))
    if discover:
        given = {loc.kind for loc in chosen}
        chosen += [
            StoreLocation(kind, path, source)
            for kind, path, source in default_store_candidates()
            if kind not in given and os.path.isdir(path)
        ]
    return chosen

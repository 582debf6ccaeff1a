"""Where things are: the HF cache, model folders, other tools' stores, the config file and the
digest index.

The HF cache is wherever huggingface_hub itself resolves it (HF_HUB_CACHE, HF_HOME,
XDG_CACHE_HOME, ~/.cache/huggingface/hub), so that modelcache and the library agree. Every
other store says where its tool keeps it (`locate` in its module's `StoreSpec`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .store_kind import StoreKind
from .stores.registry import specs


@dataclass(frozen=True, slots=True)
class Location:
    """A folder to scan and how it was found (shown to the user, so they can tell why)."""

    path: str
    source: str  # "--cache-dir", "HF_HUB_CACHE", "config", "default", ...


def hf_cache_location(cache_dir: str | os.PathLike[str] | None = None, *, given_must_exist: bool = False) -> Location:
    """The HF hub cache folder: `cache_dir` if given, else where huggingface_hub resolves it.

    With `given_must_exist`, a `cache_dir` that is not a folder is an `InputError` (a typo must
    not read as an empty cache); where huggingface_hub would put it, nothing yet is an empty cache.

    >>> hf_cache_location("/data/hf").path
    '/data/hf'
    """
    if cache_dir is not None:
        path = os.path.abspath(os.fspath(cache_dir))
        if given_must_exist and not os.path.isdir(path):
            problem = "path is not a folder" if os.path.lexists(path) else "folder not found"
            raise InputError(f"HF cache {problem} (--cache-dir): {path}")
        return Location(path, "--cache-dir")
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
    explicit = path is not None or bool(os.environ.get("MODELCACHE_CONFIG"))
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
    except PermissionError:
        # Another user's home (`sudo -u` keeps HOME): its folders cannot be searched, so whether a config
        # file is there cannot be told; as if there were none. A file named, or one of ours, is an error.
        if not explicit and not os.access(path.parent, os.X_OK):
            return {}
        raise InputError(f"cannot read config file {path}: permission denied") from None
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


def state_dir() -> Path:
    """modelcache's own state (journals, recorded uses): `$MODELCACHE_STATE`, else
    `$XDG_STATE_HOME/modelcache` (`~/.local/state/modelcache`)."""
    explicit = os.environ.get("MODELCACHE_STATE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "modelcache"


def digest_index_path() -> Path:
    """`$MODELCACHE_INDEX`, else `$XDG_CACHE_HOME/modelcache/digests.sqlite`."""
    return _user_file("MODELCACHE_INDEX", "XDG_CACHE_HOME", ".cache", "digests.sqlite")


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """Another tool's model store, and how it was found (shown by `modelcache stores`)."""

    kind: StoreKind
    path: str
    source: str  # "OLLAMA_MODELS", "default", "--store", "~/.lmstudio-home-pointer", ...


def default_store_candidates() -> list[tuple[StoreKind, str, str]]:
    """(kind, path, source) where each tool keeps its models by its own rules (each store's
    `locate`), existing or not; in rank order."""
    found: list[tuple[StoreKind, str, str]] = []
    for spec in specs():
        hit = spec.locate() if spec.locate is not None else None
        if hit is not None:
            found.append((spec.kind, os.path.abspath(hit[0]), hit[1]))
    return found


def store_names() -> dict[str, StoreKind]:
    """The kinds `--store KIND=PATH` takes: every store read from a folder of its own."""
    return {spec.kind.value: spec.kind for spec in specs() if spec.option == "--store"}


def store_locations(explicit: list[str] | None, discover: bool | None = True) -> list[StoreLocation]:
    """`--store KIND=PATH` (repeatable; the path must exist), then, unless told not to, every
    store found where its tool keeps it. A store given explicitly replaces the discovered one.
    `discover` None: as the config file's `discover = true|false` says, else yes."""
    if discover is None:
        discover = load_config().get("discover", True)
        if not isinstance(discover, bool):
            raise InputError(f"config file {config_path()}: 'discover' must be true or false")
    chosen: list[StoreLocation] = []
    names = store_names() if explicit else {}
    for spec in explicit or []:
        kind_name, sep, path = spec.partition("=")
        if not sep or kind_name not in names or not path:
            raise InputError(f"--store takes KIND=PATH, KIND one of {', '.join(sorted(names))}: {spec!r}")
        if not os.path.isdir(path):
            raise InputError(f"store folder not found (--store {kind_name}): {path}")
        chosen.append(StoreLocation(names[kind_name], os.path.abspath(path), "--store"))
    if discover:
        given = {loc.kind for loc in chosen}
        chosen += [
            StoreLocation(kind, path, source)
            for kind, path, source in default_store_candidates()
            if kind not in given and os.path.isdir(path)
        ]
    return chosen


@dataclass(frozen=True)
class Where:
    """The folders a command reads. A folder given explicitly that does not exist is an error, raised
    before anything is read or done: a typo must not read as an empty cache."""

    cache: Location
    models: list[Location]
    stores: list[StoreLocation]


def where_given(
    cache_dir: str | os.PathLike[str] | None,
    models: list[str] | None,
    stores: list[str] | None,
    discover: bool | None,
) -> Where:
    """`--cache-dir`, `--models`, `--store` and `--discover`, as folders (see each function above)."""
    return Where(
        hf_cache_location(cache_dir, given_must_exist=True), model_locations(models), store_locations(stores, discover)
    )

"""Names of things on the Hub and in the cache: the input checks, a repo's cache folder, the cache root.

Every repo id, revision and file name given to the download API or to `path` passes a check
here before it is joined to a path, so that none leads out of the cache folder; paths read
from a commit's file list pass `safe_relpath`. `filtered` applies `--include` / `--exclude`
with huggingface_hub's own rule.

Imports only neutral modules, `locations` and the HF cache reader's folder-name parser;
huggingface_hub only inside the functions that need it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from ..common import display
from ..errors import InputError
from ..locations import hf_cache_location
from ..stores.hf_cache import parse_repo_folder

REPO_TYPES = ("model", "dataset", "space")
DEFAULT_REVISION = "main"
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
SHORT_COMMIT_RE = re.compile(r"[0-9a-f]{7,39}")


class InvalidRepoId(InputError, ValueError):
    """A repo id, revision or file name that cannot name anything on the Hub or in the cache."""


def check_repo_id(repo_id: object) -> str:
    """`repo_id` if it can name a Hub repo ("org/name" or "name"), else `InvalidRepoId`.

    huggingface_hub's own rule (letters, digits, `-`, `_`, `.`; no `--` or `..`; at most one `/`),
    so that no repo id can lead out of the cache folder.

    >>> check_repo_id("Qwen/Qwen-Image")
    'Qwen/Qwen-Image'
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils._validators import validate_repo_id

    if not isinstance(repo_id, str) or not repo_id.strip():
        raise InvalidRepoId("empty repo id: give it as org/name, e.g. Qwen/Qwen-Image")
    shown = display(repo_id)
    if repo_id.count("/") > 1:
        raise InvalidRepoId(f"not a repo id: {shown!r} has more than one '/' (use org/name, e.g. Qwen/Qwen-Image)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise InvalidRepoId(
            f"not a repo id: {shown!r} (use org/name with letters, digits, '-', '_' and '.'; no '..' or '--')"
        ) from None
    if any(part in ("", ".", "..") for part in repo_id.split("/")):  # validate_repo_id rejects these too
        raise InvalidRepoId(f"not a repo id: {shown!r}")
    return repo_id


def check_repo_type(repo_type: str) -> str:
    if repo_type not in REPO_TYPES:
        raise InputError(f"unknown repo type {repo_type!r}: use one of {', '.join(REPO_TYPES)}")
    return repo_type


def check_revision(revision: str | None) -> str:
    """A branch, tag, `refs/pr/N` or commit hash; never a path out of `refs/`."""
    if revision is None:
        return DEFAULT_REVISION
    if not revision.strip() or "\0" in revision or not safe_relpath(revision):
        raise InvalidRepoId(f"not a revision: {display(revision)!r} (give a branch, a tag or a commit hash)")
    return revision


def check_filename(filename: str) -> str:
    """A path inside a repo, '/'-separated; never absolute, never with `..`."""
    if "\0" in filename or not safe_relpath(filename):
        raise InvalidRepoId(f"not a file path inside a repo: {display(filename)!r}")
    return filename


def safe_relpath(path: str) -> bool:
    """A '/'-separated path that stays inside the folder it is joined to: not empty, not absolute,
    no empty, `.` or `..` part."""
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def repo_folder(repo_id: str, repo_type: str) -> str:
    """`models--org--name`: the repo's folder in the cache (huggingface_hub's `repo_folder_name`)."""
    name = f"{repo_type}s--" + "--".join(repo_id.split("/"))
    if parse_repo_folder(name) != (repo_type, repo_id):
        raise InvalidRepoId(f"not a repo id: {display(repo_id)!r}")
    return name


def cache_root(cache_dir: str | os.PathLike[str] | None) -> str:
    """The cache folder as huggingface_hub's `snapshot_download` spells it (symlinks resolved)."""
    return os.path.realpath(hf_cache_location(cache_dir).path)


def filtered(paths: Sequence[str], include: Sequence[str] | None, exclude: Sequence[str] | None) -> list[str]:
    """`paths` that `--include` / `--exclude` select: huggingface_hub's own pattern rule
    (`allow_patterns` / `ignore_patterns`)."""
    if not include and not exclude:
        return list(paths)
    from huggingface_hub.utils._paths import filter_repo_objects

    return list(
        filter_repo_objects(
            paths, allow_patterns=list(include) if include else None, ignore_patterns=list(exclude) if exclude else None
        )
    )

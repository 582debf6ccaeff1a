"""Finding a snapshot in the HF cache offline: what `modelcache path` and `get_cached_model_path` answer.

No network call and no write: the revision is resolved through `refs/` (or a commit hash,
or a unique prefix of one among `snapshots/`), and the snapshot is complete when every file of
`trees/<commit>.json` is there (without that file: when it holds files and no broken link).

This module must stay cheap and harmless to import, since `path` runs it in scripts
(`$(modelcache path REPO)`): it imports the input checks (`hub.names`), the HF cache reader's
parsers of a ref and a file list, and neutral modules; nothing of `act`, no scan, no filelock,
and huggingface_hub only inside the functions that need it (the repo id check, the cache's
location, `include` / `exclude`).

>>> get_cached_model_path("Qwen/Qwen-Image")                          # doctest: +SKIP
'/home/me/.cache/huggingface/hub/models--Qwen--Qwen-Image/snapshots/75e0b4be04f60ec59a75f475837eced720f823b6'
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..common import display
from ..errors import EXIT_WARNINGS, ModelcacheError
from ..stores.hf_cache import read_ref, read_tree_file
from .names import (
    COMMIT_RE,
    SHORT_COMMIT_RE,
    cache_root,
    check_filename,
    check_repo_id,
    check_repo_type,
    check_revision,
    filtered,
    repo_folder,
    safe_relpath,
)


class NotCachedError(ModelcacheError):
    """The repo (or revision, or file) is not in the cache, or its snapshot is incomplete."""

    exit_code = EXIT_WARNINGS


@dataclass(frozen=True)
class CachedSnapshot:
    """What the cache holds of one revision of one repo. Found without any network call.

    `status`: `complete` (every file of the commit's file list is there), `unverified` (no
    file list on disk, but the snapshot holds files and no broken link), `incomplete`,
    `broken` (a link whose blob is gone), or `not_cached`.
    """

    repo_id: str
    repo_type: str
    revision: str
    cache_dir: str
    status: str
    message: str
    commit: str | None = None
    snapshot: str | None = None  # the snapshot folder, when it exists
    file: str | None = None  # the asked-for file in it, when it is there
    missing: tuple[str, ...] = ()
    expected: int | None = None  # files the file list names (after include/exclude)

    @property
    def ok(self) -> bool:
        return self.status in ("complete", "unverified")

    @property
    def path(self) -> str | None:
        """The folder (or the asked-for file) to load from, when usable."""
        if not self.ok:
            return None
        return self.file or self.snapshot


def find_cached_snapshot(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    repo_type: str = "model",
    filename: str | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> CachedSnapshot:
    """Look up a revision of a repo in the cache; no network, no writes. Malformed input raises `InvalidRepoId`.

    With `filename`, the answer is about that one file: it is usable when it is there, even
    if other files of the revision are not. `include` / `exclude` restrict the file list the
    snapshot is checked against, as they restrict a download.
    """
    repo_id = check_repo_id(repo_id)
    repo_type = check_repo_type(repo_type)
    rev = check_revision(revision)
    if filename is not None:
        filename = check_filename(filename)
    cache = cache_root(cache_dir)
    storage = os.path.join(cache, repo_folder(repo_id, repo_type))
    what = f"{repo_type} {repo_id}" if repo_type != "model" else repo_id

    def answer(status: str, message: str, **facts: Any) -> CachedSnapshot:
        return CachedSnapshot(repo_id, repo_type, rev, cache, status, message, **facts)

    if not os.path.isdir(storage):
        return answer("not_cached", f"{what} is not in the cache {display(cache)}")
    commit = _commit_of(storage, rev)
    if commit is None:
        known = ", ".join(sorted(_refs(storage))) or "none"
        return answer(
            "not_cached",
            f"{what} has no revision {display(rev)!r} in the cache {display(cache)} (cached refs: {known})",
        )
    snapshot = os.path.join(storage, "snapshots", commit)
    if not os.path.isdir(snapshot):
        return answer(
            "not_cached",
            f"{what} revision {display(rev)} (commit {commit[:12]}) is not downloaded: no snapshot folder",
            commit=commit,
        )
    tree_file = os.path.join(storage, "trees", commit + ".json")
    tree = read_tree_file(tree_file) if os.path.isfile(tree_file) else None
    listed: list[str] | None = None
    if isinstance(tree, dict):
        listed = filtered([p for p in tree if safe_relpath(p)], include, exclude)
    facts: dict[str, Any] = {"commit": commit, "snapshot": snapshot}
    fetch = f"run `modelcache download {repo_id}` to fetch {{}}"

    def broken_links(broken: Sequence[str], **more: Any) -> CachedSnapshot:
        return answer(
            "broken",
            f"the snapshot of {what} (commit {commit[:12]}) is broken: {len(broken)} link(s) lead nowhere "
            f"({_sample(broken)}); " + fetch.format("them again"),
            **more,
            **facts,
        )

    if filename is not None:
        path = os.path.join(snapshot, *filename.split("/"))
        if os.path.isfile(path):
            return answer("complete", "", file=path, **facts)
        if isinstance(tree, dict) and filename not in tree:
            return answer("not_cached", f"{what} has no file {display(filename)} at commit {commit[:12]}", **facts)
        return answer(
            "incomplete",
            f"{display(filename)} of {what} (commit {commit[:12]}) is not downloaded: " + fetch.format("it"),
            missing=(filename,),
            **facts,
        )

    if listed is not None:
        missing = tuple(p for p in listed if not os.path.isfile(os.path.join(snapshot, *p.split("/"))))
        broken = [p for p in missing if os.path.lexists(os.path.join(snapshot, *p.split("/")))]
        if broken:
            return broken_links(broken, missing=missing, expected=len(listed))
        if missing:
            return answer(
                "incomplete",
                f"the snapshot of {what} (commit {commit[:12]}) is incomplete: {len(missing)} of {len(listed)} "
                f"file(s) not downloaded ({_sample(missing)}); " + fetch.format("them"),
                missing=missing,
                expected=len(listed),
                **facts,
            )
        return answer("complete", "", expected=len(listed), **facts)

    files, broken = _snapshot_contents(snapshot)
    if broken:
        return broken_links(broken, missing=tuple(broken))
    if not files:
        return answer(
            "incomplete", f"the snapshot of {what} (commit {commit[:12]}) is empty; " + fetch.format("it"), **facts
        )
    return answer("unverified", "", **facts)


def get_cached_model_path(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    repo_type: str = "model",
) -> str | None:
    """The cached snapshot folder of `repo_id` at `revision` (default `main`), or None; never uses the network.

    None when the repo or revision is not in the cache, or when its snapshot is incomplete.
    A malformed repo id raises `InvalidRepoId` (a `ValueError`).

    >>> get_cached_model_path("Qwen/Qwen2-VL-7B-Instruct")    # doctest: +SKIP
    '/home/me/.cache/huggingface/hub/models--Qwen--Qwen2-VL-7B-Instruct/snapshots/...'
    """
    return find_cached_snapshot(repo_id, revision, cache_dir, repo_type=repo_type).path


def _sample(paths: Sequence[str]) -> str:
    """The first three of `paths`, for a message."""
    return ", ".join(display(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")


def _commit_of(storage: str, revision: str) -> str | None:
    if COMMIT_RE.fullmatch(revision):
        return revision
    ref = os.path.join(storage, "refs", *revision.split("/"))
    if os.path.isfile(ref):
        return read_ref(ref)
    if SHORT_COMMIT_RE.fullmatch(revision):
        try:
            matches = [c for c in os.listdir(os.path.join(storage, "snapshots")) if c.startswith(revision)]
        except OSError:
            matches = []
        if len(matches) == 1 and COMMIT_RE.fullmatch(matches[0]):
            return matches[0]
    return None


def _refs(storage: str) -> list[str]:
    root = os.path.join(storage, "refs")
    found = []
    for dirpath, _dirs, files in os.walk(root):
        found += [os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/") for f in files]
    return found


def _snapshot_contents(snapshot: str) -> tuple[list[str], list[str]]:
    """(readable files, links that lead nowhere) of a snapshot folder, as repo paths."""
    files: list[str] = []
    broken: list[str] = []
    for dirpath, dirs, names in os.walk(snapshot):
        for name in [*names, *(d for d in dirs if os.path.islink(os.path.join(dirpath, d)))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, snapshot).replace(os.sep, "/")
            (files if os.path.isfile(path) else broken).append(rel)
    return files, broken

"""`modelcache download` and `modelcache path`: the command functions, registered in `cli.py`.

Only parsing and rendering here; the work is in `hub/`: `hub.fetch` downloads, `hub.lookup` finds a
snapshot offline (and imports nothing that writes, so `path` stays cheap). Results (the snapshot path,
or JSON) go to stdout, everything else to stderr, so that `$(modelcache path REPO)` is a path.
"""

from __future__ import annotations

import gc
import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from .hub.reuse import Reused
from .errors import EXIT_OK, EXIT_WARNINGS
from .report import envelope, format_size, print_json, say_why, shown, warnings_counted


class RepoType(str, Enum):
    MODEL = "model"
    DATASET = "dataset"
    SPACE = "space"


RepoArgument = Annotated[str, typer.Argument(metavar="REPO", help="The repo id, org/name (e.g. Qwen/Qwen-Image).")]
RevisionOption = Annotated[
    str | None, typer.Option("--revision", help="Branch, tag or commit hash (default: main).", show_default=False)
]
RepoTypeOption = Annotated[RepoType, typer.Option("--repo-type", case_sensitive=False, help="What kind of repo.")]
CacheDirOption = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="HF hub cache folder (default: where huggingface_hub puts it)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (docs/json.md) instead of text.")]


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, no_color=bool(os.environ.get("NO_COLOR")) or None, highlight=False)


def _quiet_huggingface_hub() -> None:
    """huggingface_hub logs retries over several lines; the command ends with one line of its own.

    An explicit HF_HUB_VERBOSITY wins. (Importing huggingface_hub sets its level, so import first.)
    """
    import logging

    import huggingface_hub.utils.logging  # noqa: F401

    if not os.environ.get("HF_HUB_VERBOSITY"):
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def download(
    repo_id: RepoArgument,
    revision: RevisionOption = None,
    include: Annotated[
        list[str] | None, typer.Option("--include", help="Only files matching this glob (repeatable).")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Leave out files matching this glob.")] = None,
    repo_type: RepoTypeOption = RepoType.MODEL,
    cache_dir: CacheDirOption = None,
    models: Annotated[
        list[str] | None,
        typer.Option("--models", help="Also look here for bytes to reuse, repeatable (default: config, ./models)."),
    ] = None,
    no_reuse: Annotated[
        bool, typer.Option("--no-reuse", help="Download every missing file; do not look for copies on this machine.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Download a repo into the HF cache (never a separate folder) and print its snapshot path.

    Files whose bytes already lie on this machine (another repo's blob, a local copy) are
    linked or copied into the cache after their sha256 is checked; only the rest is downloaded.
    Run again after an interruption, it fetches only what is missing. Progress bars on a
    terminal only.
    """
    from .hub.fetch import download_snapshot  # huggingface_hub: imported by the commands that use it
    from .locations import model_locations

    if models:  # a folder named that is not there is a typo, with or without --no-reuse
        model_locations(models)
    gc.enable()  # cli.main turns it off for one-pass commands; a download runs long
    _quiet_huggingface_hub()
    err = _stderr()

    def reused_one(r: Reused) -> None:
        if not as_json:
            err.print(
                f"reused {format_size(r.size):>8}  {shown(r.path)}  ({r.method} of {shown(r.source)})", markup=False
            )

    result = download_snapshot(
        repo_id,
        revision=revision,
        repo_type=repo_type.value,
        include=include,
        exclude=exclude,
        cache_dir=cache_dir,
        models=models,
        reuse=not no_reuse,
        on_reused=reused_one,
    )
    code = EXIT_WARNINGS if result.warnings else EXIT_OK
    if as_json:
        body = {
            "repo": result.repo_id,
            "repo_type": result.repo_type,
            "revision": result.revision,
            "commit": result.commit,
            "path": shown(result.path),
            "files": result.files,
            "bytes_total": result.bytes_total,
            "bytes_present": result.bytes_present,
            "bytes_reused": result.bytes_reused,
            "bytes_downloaded": result.bytes_downloaded,
            "reused": [
                {"path": r.path, "size": r.size, "source": shown(r.source), "method": r.method, "blob": shown(r.blob)}
                for r in result.reused
            ],
            "offline": result.offline,
            "warnings": [{"path": w.path, "message": w.message} for w in result.warnings],
        }
        print_json(envelope("download", "partial" if result.warnings else "success", body))
        if code != EXIT_OK:
            say_why(warnings_counted(len(result.warnings)))
        raise typer.Exit(code)
    sys.stdout.write(shown(result.path) + "\n")
    sys.stdout.flush()
    if result.offline:
        err.print(f"note: {result.offline}", markup=False)
    else:
        err.print(
            f"{shown(result.repo_id)} at {result.commit[:12]}: {result.files} file(s), "
            f"{format_size(result.bytes_total)}: downloaded {format_size(result.bytes_downloaded)} "
            f"({result.bytes_downloaded:,} bytes), reused {format_size(result.bytes_reused)} "
            f"({result.bytes_reused:,} bytes), already in the cache {format_size(result.bytes_present)}",
            markup=False,
        )
    for w in result.warnings:
        err.print(f"warning: {w.path}: {w.message}", markup=False)
    raise typer.Exit(code)


def path(
    repo_id: RepoArgument,
    revision: RevisionOption = None,
    file: Annotated[
        str | None, typer.Option("--file", help="Print this file of the snapshot instead of its folder.")
    ] = None,
    repo_type: RepoTypeOption = RepoType.MODEL,
    cache_dir: CacheDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the cached snapshot folder of a repo (or one file in it); never uses the network.

    Exit code 1 when the repo, revision or file is not in the cache, or the snapshot is
    incomplete (files of the commit's file list are missing, or links lead nowhere).
    """
    from .hub.lookup import NotCachedError, find_cached_snapshot
    from .locations import hf_cache_location

    found = find_cached_snapshot(repo_id, revision, cache_dir, repo_type=repo_type.value, filename=file)
    if not found.ok or found.path is None:
        if cache_dir is not None:  # a typo is an error (exit 2), not "not cached" (exit 1: download it)
            hf_cache_location(cache_dir, given_must_exist=True)
        raise NotCachedError(found.message)
    if found.commit is not None:  # located through modelcache: a use, which no access time shows (uses.py)
        from .hub.names import repo_folder
        from .uses import record_use

        record_use(found.cache_dir, repo_folder(found.repo_id, found.repo_type), found.commit)
    if as_json:
        body: dict[str, Any] = {
            "repo": found.repo_id,
            "repo_type": found.repo_type,
            "revision": found.revision,
            "commit": found.commit,
            "path": shown(found.path),
            "snapshot": shown(found.snapshot) if found.snapshot else None,
            "snapshot_status": found.status,
        }
        print_json(envelope("path", "success", body))
    else:
        sys.stdout.write(shown(found.path) + "\n")
    raise typer.Exit(EXIT_OK)

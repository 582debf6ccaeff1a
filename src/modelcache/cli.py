"""The `modelcache` command: parse, call the library, render. No logic of its own.

Exit codes: 0 done; 1 done with warnings (input skipped); 2 error, nothing done; 3 internal
error; 130 interrupted. Every failure is one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from . import __version__
from .analysis import analyze as build_analysis
from .digests import DigestIndex
from .duplicates import find_duplicates
from .errors import EXIT_ERROR, EXIT_INTERNAL, EXIT_OK, EXIT_WARNINGS, ModelcacheError
from .inventory import Warning_
from .locations import digest_index_path, hf_cache_location, model_locations
from .report import analysis_json, render_analysis, render_warnings
from .scan import scan_locations
from .stores.base import display

app = typer.Typer(
    name="modelcache",
    help="Find every copy of every model file on this machine and give the space back.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

CacheDirOption = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="HF hub cache folder [default: where huggingface_hub puts it]."),
]
ModelsOption = Annotated[
    list[str] | None,
    typer.Option("--models", help="A model folder to scan (repeatable) [default: config file, else ./models]."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (docs/json.md) instead of text.")]


def _console(stderr: bool) -> Console:
    # Lines are never hard-wrapped (paths must stay whole for copy and paste); tables get a
    # wide page when the output is a file or a pipe rather than a terminal.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, soft_wrap=True, width=width, no_color=bool(os.environ.get("NO_COLOR")) or None)


def stdout() -> Console:
    return _console(stderr=False)


def stderr() -> Console:
    return _console(stderr=True)


@contextmanager
def hashing_progress(enabled: bool) -> Iterator[tuple[Any, Any]]:
    """Hooks for `find_duplicates`: a transfer bar on a terminal, nothing elsewhere."""
    if not enabled or not sys.stderr.isatty():
        yield None, None
        return
    progress = Progress(
        TextColumn("hashing"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr(),
        transient=True,
    )
    task = progress.add_task("hashing", total=0)
    with progress:
        yield (lambda total: progress.update(task, total=total)), (lambda n: progress.advance(task, n))


@app.command()
def analyze(
    cache_dir: CacheDirOption = None,
    models: ModelsOption = None,
    as_json: JsonOption = False,
    fast: Annotated[
        bool, typer.Option("--fast", help="Read no file contents: duplicates are probable, from names and sizes.")
    ] = False,
) -> None:
    """Show where model storage goes and how much of it is a second copy.

    Reads only; the one thing it writes is its digest index (so each file is hashed once).
    """
    cache = hf_cache_location(cache_dir)
    model_dirs = model_locations(models)
    inventory = scan_locations(cache, model_dirs)
    index = DigestIndex(digest_index_path())
    try:
        with hashing_progress(not as_json) as (on_plan, on_bytes):
            result = find_duplicates(inventory.records, index, fast=fast, on_plan=on_plan, on_bytes=on_bytes)
    finally:
        index.close()
    notes = (Warning_(display(str(index.path)), index.error),) if index.error else ()
    analysis = build_analysis(inventory, result, fast=fast, notes=notes)
    if as_json:
        sys.stdout.write(json.dumps(analysis_json(analysis, cache, model_dirs), indent=2) + "\n")
    else:
        render_analysis(analysis, cache, model_dirs, stdout())
        render_warnings(analysis.warnings, stderr())
    raise typer.Exit(EXIT_WARNINGS if analysis.warnings else EXIT_OK)


@app.command()
def demo(
    folder: Annotated[
        Path | None,
        typer.Option("--dir", help="Build the sample machine in this (new or empty) folder [default: a temp folder]."),
    ] = None,
) -> None:
    """Build a sample machine (HF cache, local_dir copies, a partial download) and analyze it."""
    from .demo import run_demo

    raise typer.Exit(run_demo(folder, stdout(), stderr()))


def _version(value: bool) -> None:
    if value:
        print(f"modelcache {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """modelcache: every model file on this machine, in one place."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app and turns every failure into one line and an exit code."""
    for stream in (sys.stdout, sys.stderr):
        # Emoji and odd file names must never crash output on a non-UTF-8 terminal.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        app(args=argv, prog_name="modelcache", standalone_mode=True)
    except ModelcacheError as e:
        print(f"modelcache: error: {e.message}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("modelcache: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)
    except Exception as e:  # a bug: still one line, with what is needed to report it
        print(f"modelcache: internal error: {e.__class__.__name__}: {e}", file=sys.stderr)
        sys.exit(EXIT_INTERNAL)

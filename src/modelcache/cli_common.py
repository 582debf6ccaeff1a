"""What every command of the CLI shares: the folder options, the scan and the analysis, the consoles,
the byte progress bar, and the exit that says why under --json.

Kept apart from `cli.py` (the app, the read-only commands, `main`) so that the command modules
(`cli_changes.py`, `cli_list.py`, `cli_report.py`, ...) import these without importing the app.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from .analysis import Analysis
from .analysis import analyze as build_analysis
from .common import display
from .digests import DigestIndex
from .duplicates import find_duplicates
from .errors import EXIT_ERROR, EXIT_OK, InputError
from .inventory import Inventory, Warning_
from .locations import Where, digest_index_path
from .report_format import Counted, say_why

if TYPE_CHECKING:
    from rich.console import Console

CacheDirOption = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="HF hub cache folder (default: where huggingface_hub puts it)."),
]
ModelsOption = Annotated[
    list[str] | None,
    typer.Option("--models", help="A model folder to scan, repeatable (default: config file, else ./models)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (docs/json.md) instead of text.")]
StoresOption = Annotated[
    list[str] | None,
    typer.Option("--store", help="Another tool's store, KIND=PATH (repeatable), e.g. ollama=~/.ollama/models."),
]
DiscoverOption = Annotated[
    bool | None,
    typer.Option(
        "--discover/--no-discover",
        help="Also read every store found where its tool keeps it (default: the config file's `discover`, else yes).",
        show_default=False,
    ),
]
TopOption = Annotated[
    int | None,
    typer.Option(
        "--top", min=1, metavar="N", help="Only the N largest rows of each table and group list (--json has all)."
    ),
]


@dataclass(frozen=True)
class Scanned(Where):
    inventory: Inventory


def _scan(where: Where) -> Scanned:
    from .scan import scan_locations  # not at the top: `modelcache path` reads no store

    return Scanned(where.cache, where.models, where.stores, scan_locations(where.cache, where.models, where.stores))


def _console(stderr: bool) -> Console:
    # Lines are never hard-wrapped (paths must stay whole for copy and paste); tables get a
    # wide page when the output is a file or a pipe rather than a terminal.
    from rich.console import Console  # not at the top: JSON output never needs rich

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, soft_wrap=True, width=width, no_color=bool(os.environ.get("NO_COLOR")) or None)


def stdout() -> Console:
    return _console(stderr=False)


def stderr() -> Console:
    return _console(stderr=True)


def ask_first(as_json: bool, what: str, dry_run_shows: str, show: Callable[[], None], question: str) -> None:
    """Without --yes: on a terminal, show what would change and ask (no is exit 1); elsewhere (a pipe,
    --json) refuse, so that nothing changes that nobody was asked about."""
    if as_json or not sys.stdin.isatty():
        raise InputError(f"{what}: add --yes to confirm (or --dry-run to see {dry_run_shows})")
    show()
    if not typer.confirm(question, default=False):
        raise typer.Exit(EXIT_ERROR)


def _exit(code: int, as_json: bool, *why: Counted) -> NoReturn:
    """End the command with `code`; under --json a code that is not 0 says why on stderr, in one line."""
    if as_json and code != EXIT_OK:
        say_why(*why)
    raise typer.Exit(code)


@contextmanager
def byte_progress(enabled: bool, label: str) -> Iterator[tuple[Any, Any]]:
    """(on_plan(total), on_bytes(n)) hooks: a transfer bar on a terminal, nothing elsewhere."""
    if not enabled or not sys.stderr.isatty():
        yield None, None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr(),
        transient=True,
    )
    task = progress.add_task(label, total=None)
    with progress:
        yield (lambda total: progress.update(task, total=total)), (lambda n: progress.advance(task, n))


def _analyze(scanned: Scanned, fast: bool, progress: bool) -> Analysis:
    inventory = scanned.inventory
    index = DigestIndex(digest_index_path())
    try:
        with byte_progress(progress, "hashing") as (on_plan, on_bytes):
            result = find_duplicates(inventory.records, index, fast=fast, on_plan=on_plan, on_bytes=on_bytes)
    finally:
        index.close()
    notes = (Warning_(display(str(index.path)), index.error),) if index.error else ()
    return build_analysis(inventory, result, fast=fast, notes=notes)

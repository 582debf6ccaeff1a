"""`modelcache list`: the options it shares with `hf cache ls` (`--filter`, `--sort`, `--limit`, `-q`) and
its output. The command itself is declared in `cli.py`, which hands over here.

The selection is `selection.py`'s (shared with `prune`); here only the command line and the output.
Every option is parsed before anything is read, so a bad one is one line and exit 2.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Annotated

import typer

from .analysis import list_rows
from .cli_common import _exit, stderr, stdout
from .digests import DigestIndex
from .errors import EXIT_OK, EXIT_WARNINGS, InputError
from .inventory import Inventory
from .locations import digest_index_path
from .report import envelope, list_json, print_json, render_list, render_warnings, warnings_counted
from .selection import FILTER_KEYS, SORT_DEFAULT_ORDER, Selection

# Strings, not typer's int or choice types: a bad value is then our one line, not a usage box.
FilterOption = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        "-f",
        metavar="KEY OP VALUE",
        help=f"Keep the rows that match (repeatable; all must): keys {', '.join(FILTER_KEYS)}; e.g. 'accessed>30d' "
        "(last used over 30 days ago), 'size>1GB', 'store=ollama', 'status!=complete'. As `hf cache ls`: "
        "operators = != > < >= <=; AGE units s m h d w mo y, SIZE units k m g t p (decimal: 1GB = 10^9 bytes).",
    ),
]
SortOption = Annotated[
    str | None,
    typer.Option(
        "--sort",
        metavar="KEY[:asc|:desc]",
        help=f"Order by {', '.join(SORT_DEFAULT_ORDER)}; as `hf cache ls`, accessed, modified and size put the "
        "newest or largest first, name A to Z.",
        show_default=False,
    ),
]
LimitOption = Annotated[
    str | None, typer.Option("--limit", metavar="N", help="Only the first N rows (after the sort).", show_default=False)
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="One id per line: type/repo for the HF cache (as `hf cache ls -q`), the folder for local and "
        "plain folders, the tool's own name for other stores (llama3.2:latest).",
    ),
]


def show_list(
    scan: Callable[[], Inventory],
    filters: list[str] | None,
    sort: str | None,
    limit: str | None,
    as_json: bool,
    quiet: bool,
    top: int | None = None,
) -> None:
    """Parse the selection, `scan`, select, print; ends the command with its exit code."""
    if quiet and as_json:
        raise InputError("--quiet and --json print different things: give one of them")
    selection = Selection.parse(filters or (), sort, limit)
    inventory = scan()
    index = DigestIndex(digest_index_path())
    try:
        corrupt = index.corrupt()
    finally:
        index.close()
    rows = list_rows(inventory, corrupt)
    shown = selection.apply(rows, time.time())
    if as_json:
        status = "partial" if inventory.warnings else "success"
        print_json(envelope("list", status, list_json(shown, inventory)))
    elif quiet:
        sys.stdout.write("".join(row.id + "\n" for row in shown))
        render_warnings(inventory.warnings, stderr())
    else:
        if rows and not shown:
            stdout().print(f"No models match ({len(rows)} listed before the filters).", highlight=False)
        else:
            render_list(shown, stdout(), top)
        render_warnings(inventory.warnings, stderr())
    _exit(EXIT_WARNINGS if inventory.warnings else EXIT_OK, as_json, warnings_counted(len(inventory.warnings)))

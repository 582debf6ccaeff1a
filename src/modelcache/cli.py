"""The `modelcache` command: parse, call the library, render. No logic of its own.

Exit codes: 0 done; 1 done with warnings (input skipped); 2 error, nothing done; 3 internal
error; 130 interrupted. Every failure is one line on stderr, never a traceback.

Here: the app, the commands that only read (analyze, verify, list, stores, demo) and `main`.
What the commands share is in `cli_common.py`; the commands that change files in `cli_changes.py`,
`cli_prune.py`; download and path in `cli_download.py`; list's selection in `cli_list.py`;
report --html in `cli_report.py`.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.main import get_command_name
from typer.models import CommandInfo

from . import __version__

# The names other modules imported from here before cli_common.py and cli_changes.py held them
# (`cli_prune.py` still does), re-exported as they were.
from .cli_changes import _finish as _finish
from .cli_changes import apply, clean, consolidate, undo
from .cli_changes import recover_first as recover_first
from .cli_common import CacheDirOption as CacheDirOption
from .cli_common import DiscoverOption as DiscoverOption
from .cli_common import JsonOption as JsonOption
from .cli_common import ModelsOption as ModelsOption
from .cli_common import Scanned as Scanned
from .cli_common import StoresOption as StoresOption
from .cli_common import TopOption as TopOption
from .cli_common import _analyze as _analyze
from .cli_common import _exit as _exit
from .cli_common import _scan as _scan
from .cli_common import byte_progress as byte_progress
from .cli_common import stderr as stderr
from .cli_common import stdout as stdout
from .cli_list import FilterOption, LimitOption, QuietOption, SortOption, show_list
from .common import display
from .digests import DigestIndex
from .errors import EXIT_ERROR, EXIT_INTERNAL, EXIT_OK, EXIT_WARNINGS, ModelcacheError
from .inventory import Warning_
from .locations import (
    default_store_candidates,
    digest_index_path,
    hf_cache_location,
    model_locations,
    store_locations,
    where_given,
)
from .report import (
    analysis_json,
    envelope,
    print_json,
    render_analysis,
    render_verify,
    render_warnings,
    shown,
    verify_json,
    warnings_counted,
)
from .store_kind import StoreKind

# The commands that change files, verify or download import their modules when they run: every
# command pays for the imports it needs only (a warm re-analyze takes a fraction of a second).
app = typer.Typer(
    name="modelcache",
    help="Find every copy of every model file on this machine and give the space back.",
    no_args_is_help=True,
    # markdown: a docstring's paragraphs are reflowed to the terminal (rich mode kept its line breaks, and cut
    # sentences in two on a narrow terminal)
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
def analyze(
    cache_dir: CacheDirOption = None,
    models: ModelsOption = None,
    stores: StoresOption = None,
    discover: DiscoverOption = None,
    as_json: JsonOption = False,
    fast: Annotated[
        bool, typer.Option("--fast", help="Read no file contents: duplicates are probable, from names and sizes.")
    ] = False,
    top: TopOption = None,
) -> None:
    """Show where model storage goes and how much of it is a second copy.

    Reads only; the one thing it writes is its digest index (so each file is hashed once).
    """
    scanned = _scan(where_given(cache_dir, models, stores, discover))
    analysis = _analyze(scanned, fast, progress=not as_json)
    if as_json:
        print_json(analysis_json(analysis, scanned.cache, scanned.models, scanned.stores))
    else:
        render_analysis(analysis, scanned.cache, scanned.models, stdout(), scanned.stores, top)
        render_warnings(analysis.warnings, stderr())
    _exit(EXIT_WARNINGS if analysis.warnings else EXIT_OK, as_json, warnings_counted(len(analysis.warnings)))


# The commands that change files (cli_changes.py), registered here: `--help` lists commands in this order.
app.command()(consolidate)
app.command()(apply)
app.command()(undo)
app.command()(clean)


@app.command()
def verify(
    repos: Annotated[list[str] | None, typer.Argument(help="Repo ids to verify, as `list` shows them.")] = None,
    cache_dir: CacheDirOption = None,
    models: ModelsOption = None,
    stores: StoresOption = None,
    discover: DiscoverOption = None,
    everything: Annotated[bool, typer.Option("--all", help="Verify every repo and folder.")] = False,
    repair: Annotated[bool, typer.Option("--repair", help="Download corrupted files again.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Hash cached blobs and local copies against their names and etags; report corruption."""
    from .act.repair import redownload
    from .verify import record_verdicts, repairable
    from .verify import select as select_records
    from .verify import verify as verify_records

    scanned = _scan(where_given(cache_dir, models, stores, discover))
    cache, inventory = scanned.cache, scanned.inventory
    records = select_records(inventory, repos or [], everything)
    index = DigestIndex(digest_index_path())
    try:
        with byte_progress(not as_json, "verifying") as (on_plan, on_bytes):
            result = verify_records(inventory, records, index, on_plan=on_plan, on_bytes=on_bytes)
        targets = [spec for v in result.corrupt if (spec := repairable(v, inventory))] if repair else []
        try:
            repaired = redownload(targets, cache.path) if repair and result.corrupt else None
        finally:
            # After the repair (even one cut short): an inode a repaired file no longer names is
            # judged by the names left on it.
            record_verdicts(index, result, [t.path for t in targets])
    finally:
        index.close()
    warnings = result.warnings + ((Warning_(display(str(index.path)), index.error),) if index.error else ())
    failed = repaired.count("failed") if repaired is not None else 0
    # Corrupt files that no repair downloaded again (it failed, or no source is known) stay corrupt.
    unrepaired = len(result.corrupt) - (repaired.count("done") if repaired is not None else 0)
    if as_json:
        status = "partial" if unrepaired or warnings else "success"
        print_json(
            envelope(
                "verify",
                status,
                verify_json(result, repaired)
                | {"warnings": [{"path": w.path, "message": w.message} for w in warnings]},
            )
        )
    else:
        render_verify(result, repaired, stdout())
        render_warnings(warnings, stderr())
    code = EXIT_ERROR if failed else EXIT_WARNINGS if unrepaired or warnings else EXIT_OK
    repairs = (failed, "repair failed", "repairs failed", "repair.outcomes")
    corrupt = (unrepaired - failed, "corrupt file", "corrupt files", "corrupt")  # those no repair was tried for
    _exit(code, as_json, repairs, corrupt, warnings_counted(len(warnings)))


@app.command(name="list")
def list_models(
    cache_dir: CacheDirOption = None,
    models: ModelsOption = None,
    stores: StoresOption = None,
    discover: DiscoverOption = None,
    as_json: JsonOption = False,
    filters: FilterOption = None,
    sort: SortOption = None,
    limit: LimitOption = None,
    quiet: QuietOption = False,
    top: TopOption = None,
) -> None:
    """The models and datasets on this machine: revision, size, status, last access, where. No network."""
    show_list(
        lambda: _scan(where_given(cache_dir, models, stores, discover)).inventory,  # after the options are parsed
        filters,
        sort,
        limit,
        as_json,
        quiet,
        top,
    )


@app.command(name="stores")
def list_stores(
    cache_dir: CacheDirOption = None,
    models: ModelsOption = None,
    stores: StoresOption = None,
    as_json: JsonOption = False,
) -> None:
    """The stores modelcache reads, where, and how each was found (or why it was not)."""
    cache = hf_cache_location(cache_dir, given_must_exist=True)
    rows = [(StoreKind.HF_CACHE.value, cache.path, cache.source, os.path.isdir(cache.path))]
    rows += [("models", m.path, m.source, True) for m in model_locations(models)]
    chosen = store_locations(stores, discover=True)
    rows += [(s.kind.value, s.path, s.source, True) for s in chosen]
    found = {s.kind for s in chosen}
    rows += [(k.value, p, src, False) for k, p, src in default_store_candidates() if k not in found]
    if as_json:
        print_json(
            envelope(
                "stores",
                "success",
                {
                    "stores": [
                        {"store": kind, "path": display(path), "source": source, "present": present}
                        for kind, path, source, present in rows
                    ]
                },
            )
        )
    else:
        out = stdout()
        for kind, path, source, present in rows:
            state = "" if present else "  (not found: not read)"
            out.print(f"{kind:<14} {shown(path)}  [{source}]{state}", highlight=False, markup=False)
    raise typer.Exit(EXIT_OK)


@app.command()
def demo(
    folder: Annotated[
        Path | None,
        typer.Option("--dir", help="Build the sample machine in this (new or empty) folder (default: a temp folder)."),
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
    # A scan makes an object or more per file and no reference cycles; the cyclic collector would
    # walk them all, again and again, as they pile up (measured: a quarter to a third of the
    # time of `analyze` on 240,000 files). A command is one pass, so it runs without it; the
    # long-lived `download` turns it back on.
    gc.disable()
    commands = app.registered_commands
    try:
        app.registered_commands = _asked_for(commands, sys.argv[1:] if argv is None else argv)
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
    finally:
        app.registered_commands = commands


def _asked_for(commands: list[CommandInfo], args: list[str]) -> list[CommandInfo]:
    """The command the first argument names, alone; else all of them.

    typer makes the options of every registered command on each run: 15 ms for eleven, a tenth
    of a warm `analyze`, and most of the start of `modelcache path`.
    """
    if args and not args[0].startswith("-"):
        named = [
            c for c in commands if (c.name or get_command_name(c.callback.__name__ if c.callback else "")) == args[0]
        ]
        if named:
            return named
    return commands


# -- download and path (cli_download.py) --
from .cli_download import download as _download_cmd, path as _path_cmd  # noqa: E402, I001

app.command(name="download")(_download_cmd)
app.command(name="path")(_path_cmd)

# -- report --html (cli_report.py) --
from .cli_report import report as _report_cmd  # noqa: E402

app.command(name="report")(_report_cmd)

# -- prune (cli_prune.py) --
from .cli_prune import prune as _prune_cmd  # noqa: E402

app.command(name="prune")(_prune_cmd)

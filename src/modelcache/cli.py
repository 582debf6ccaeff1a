"""The `modelcache` command: parse, call the library, render. No logic of its own.

Exit codes: 0 done; 1 done with warnings (input skipped); 2 error, nothing done; 3 internal
error; 130 interrupted. Every failure is one line on stderr, never a traceback.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.main import get_command_name
from typer.models import CommandInfo

from . import __version__
from .analysis import Analysis
from .analysis import analyze as build_analysis
from .cli_list import FilterOption, LimitOption, QuietOption, SortOption, show_list
from .common import display
from .digests import DigestIndex
from .duplicates import find_duplicates
from .errors import EXIT_ERROR, EXIT_INTERNAL, EXIT_OK, EXIT_WARNINGS, InputError, ModelcacheError
from .inventory import Inventory, Warning_
from .locations import (
    Where,
    default_store_candidates,
    digest_index_path,
    hf_cache_location,
    model_locations,
    store_locations,
    where_given,
)
from .modes import Mode
from .report import (
    Counted,
    analysis_json,
    clean_plan_json,
    envelope,
    outcomes_counted,
    plan_json,
    print_json,
    render_analysis,
    render_clean_plan,
    render_plan,
    render_result,
    render_verify,
    render_warnings,
    result_json,
    risk_lines,
    say_why,
    shown,
    verify_json,
    warnings_counted,
)
from .store_kind import StoreKind

# The commands that change files, verify or download import their modules when they run: every
# command pays for the imports it needs only (a warm re-analyze takes a fraction of a second).
if TYPE_CHECKING:
    from rich.console import Console

    from .act.journal import RunInfo
    from .act.results import RunResult
    from .plan import Plan

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


@app.command()
def consolidate(
    cache_dir: CacheDirOption = None,
    models: ModelsOption = None,
    stores: StoresOption = None,
    discover: DiscoverOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    mode: Annotated[
        Mode,
        typer.Option(
            "--mode",
            case_sensitive=False,
            help="auto: reflink, else hard link where no next step of your tools writes through it (else the copy "
            "is left alone, and the plan says why). symlink and delete only apply to copies of cache files.",
        ),
    ] = Mode.AUTO,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
    plan_out: Annotated[
        Path | None, typer.Option("--plan-out", help="Write the plan as JSON to this file (for `apply`).")
    ] = None,
    remove_empty_dirs: Annotated[
        bool, typer.Option("--remove-empty-dirs", help="Remove folders that deleting copies left empty.")
    ] = False,
    adopt: Annotated[
        bool,
        typer.Option("--adopt", help="Move local_dir files the cache lacks into it (verified, no download)."),
    ] = False,
) -> None:
    """Give the duplicate space back: every copy but one becomes a link to it, or is removed.

    The kept copy is the HF cache blob where there is one. Every change is verified byte for
    byte first, journaled, and can be reversed with `modelcache undo`.
    """
    from .plan import fs_types_of, plan_consolidate

    where = where_given(cache_dir, models, stores, discover)
    recovered = [] if dry_run else recover_first()  # a dry run changes nothing, not even that
    scanned = _scan(where)
    inventory = scanned.inventory
    analysis = _analyze(scanned, fast=False, progress=not as_json)
    plan = plan_consolidate(
        inventory,
        analysis.duplicates,
        mode,
        fs_types_of(r.facts.dev for r in inventory.records),
        argv=["modelcache", *sys.argv[1:]],
        adopt=adopt,
    )
    if plan_out is not None:
        _write_plan(plan, plan_out)
    if dry_run:
        if as_json:
            print_json(envelope("consolidate", "success", {"dry_run": True, **plan_json(plan)}))
        else:
            render_plan(plan, stdout())
            if plan_out is not None:
                stdout().print(f"Plan written to {plan_out}; run it with: modelcache apply {plan_out}", highlight=False)
        raise typer.Exit(EXIT_OK)
    _run_plan(plan, "consolidate", yes, as_json, remove_empty_dirs, recovered)


@app.command()
def apply(
    plan_file: Annotated[Path, typer.Argument(help="A plan written by `consolidate --plan-out`.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
    remove_empty_dirs: Annotated[
        bool, typer.Option("--remove-empty-dirs", help="Remove folders that deleting copies left empty.")
    ] = False,
) -> None:
    """Run a saved plan. Every fact it relies on is checked again; what changed is skipped."""
    from .aliases import Writer
    from .plan import read_plan

    plan = read_plan(plan_file)
    refused = plan.refused_to(Writer.current())
    if refused is not None:
        raise InputError(refused)
    recovered = recover_first()
    _run_plan(plan, "apply", yes, as_json, remove_empty_dirs, recovered)


def recover_first() -> list[str]:
    """Finish or roll back what an interrupted run left, before anything is read or planned."""
    from .act.runs import exclusive

    with exclusive() as recovered:
        return recovered


def _write_plan(plan: Plan, path: Path) -> None:
    """`--plan-out`: the plan as JSON, written durably (modelcache's own file, through fsops like every write)."""
    from .act.fsops import write_durably

    try:
        write_durably(path, plan.to_json().encode())
    except OSError as e:
        raise InputError(f"cannot write plan {path}: {e.strerror}") from None


def _run_plan(
    plan: Plan, command: str, yes: bool, as_json: bool, remove_empty_dirs: bool, recovered: list[str]
) -> None:
    from .act.consolidate import execute, nothing_to_do

    if not any(a.changes for a in plan.actions):
        _finish(command, replace(nothing_to_do(plan), recovered=tuple(recovered)), as_json)
    if not yes:
        if as_json or not sys.stdin.isatty():
            raise InputError("this changes files: add --yes to confirm (or --dry-run to see the plan)")
        render_plan(plan, stdout())
        if not typer.confirm(f"Free {plan.bytes_to_free:,} bytes as above?", default=False):
            raise typer.Exit(EXIT_ERROR)
    else:  # the plan was not shown: its risks are, before anything changes (stderr: --json keeps stdout)
        for risk in risk_lines(plan):
            print(f"modelcache: warning: {risk}", file=sys.stderr)
    with byte_progress(not as_json, "verifying") as (on_plan, on_bytes):
        if on_plan is not None:
            on_plan(2 * sum(a.target.size for a in plan.actions if a.changes))
        result = execute(plan, command=command, remove_empty_dirs=remove_empty_dirs, on_bytes=on_bytes)
    _finish(command, replace(result, recovered=(*recovered, *result.recovered)), as_json)


def _finish(command: str, result: RunResult, as_json: bool) -> None:
    from .act.results import UNDOABLE

    code = EXIT_ERROR if result.count("failed") else EXIT_WARNINGS if result.count("skipped") else EXIT_OK
    if as_json:
        status = "success" if code == EXIT_OK else "partial"
        print_json(envelope(command, status, result_json(result)))
    else:
        render_result(result, stdout(), undoing=command == "undo", undoable=command in UNDOABLE)
    _exit(code, as_json, *outcomes_counted(result.count("failed"), result.count("skipped")))


@app.command()
def undo(
    run: Annotated[str | None, typer.Argument(help="Run id or a prefix (default: the newest not undone).")] = None,
    as_json: JsonOption = False,
    list_runs: Annotated[bool, typer.Option("--list", help="List the journaled runs.")] = False,
) -> None:
    """Turn the links a run made back into independent copies, and restore the files it removed."""
    from .act.journal import runs
    from .act.undo import undo as undo_run

    if list_runs:
        found = runs()
        if as_json:
            print_json(envelope("undo", "success", {"runs": [_run_info(r) for r in found]}))
        else:
            for r in found:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started))
                stdout().print(f"{r.run_id}  {when}  {r.command:<11} {r.status:<11} {r.changes} change(s)")
        raise typer.Exit(EXIT_OK)
    with byte_progress(not as_json, "restoring") as (_, on_bytes):
        result = undo_run(run, on_bytes=on_bytes)
    _finish("undo", result, as_json)


@app.command()
def clean(
    cache_dir: CacheDirOption = None,
    models: ModelsOption = None,
    stores: StoresOption = None,
    discover: DiscoverOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed; change nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
    older_than: Annotated[
        str, typer.Option("--older-than", help="Minimum age of partial downloads and locks to remove (30m, 1h, 2d).")
    ] = "1h",
    revisions: Annotated[
        bool, typer.Option("--revisions", help="Also remove revisions no ref points to (as `hf cache prune`).")
    ] = False,
    repair: Annotated[
        bool, typer.Option("--repair", help="Download again the files broken snapshot links miss.")
    ] = False,
    xet_chunk_cache: Annotated[
        bool,
        typer.Option("--xet-chunk-cache", help="Also empty hf_xet's chunk cache (it downloads again what it misses)."),
    ] = False,
) -> None:
    """Remove broken downloads and garbage: partial files, stale locks, orphan blobs, dangling refs."""
    from .act.clean import execute_clean
    from .clean import parse_duration, plan_clean

    min_age = parse_duration(older_than)
    where = where_given(cache_dir, models, stores, discover)
    recovered = [] if dry_run else recover_first()
    scanned = _scan(where)
    cache, inventory = scanned.cache, scanned.inventory
    asked = ("xet-chunk-cache",) if xet_chunk_cache else ()
    plan = plan_clean(inventory, cache.path, min_age=min_age, revisions=revisions, repair=repair, on_request=asked)
    acting = [i for i in plan.items if i.fix != "keep"]
    if dry_run or not acting:
        if as_json:
            print_json(envelope("clean", "success", {"dry_run": dry_run, **clean_plan_json(plan)}))
        else:
            render_clean_plan(plan, stdout())
        raise typer.Exit(EXIT_OK)
    if not yes:
        if as_json or not sys.stdin.isatty():
            raise InputError("this removes files: add --yes to confirm (or --dry-run to see the list)")
        render_clean_plan(plan, stdout())
        if not typer.confirm(f"Remove {len(acting)} item(s), freeing {plan.bytes_to_free:,} bytes?", default=False):
            raise typer.Exit(EXIT_ERROR)
    result = execute_clean(plan, cache.path)
    if not as_json:
        render_clean_plan(plan, stdout())
    _finish("clean", replace(result, recovered=(*recovered, *result.recovered)), as_json)


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


def _run_info(r: RunInfo) -> dict[str, Any]:
    return {"run": r.run_id, "command": r.command, "started": r.started, "status": r.status, "changes": r.changes}


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

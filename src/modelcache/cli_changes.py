"""The commands that change files: `consolidate`, `apply`, `undo` and `clean`.

Each recovers what an interrupted run left first, confirms (or takes --yes), runs its journaled
executor from `act/`, and ends through `_finish` (the outcome as text or JSON, the exit code);
`cli_prune.py` ends the same way. `cli.py` registers them, in the order `--help` lists them.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .cli_common import (
    CacheDirOption,
    DiscoverOption,
    JsonOption,
    ModelsOption,
    StoresOption,
    _analyze,
    _exit,
    _scan,
    ask_first,
    byte_progress,
    stdout,
)
from .errors import EXIT_ERROR, EXIT_OK, EXIT_WARNINGS, InputError
from .locations import where_given
from .modes import Mode
from .report_changes import (
    clean_plan_json,
    plan_json,
    render_clean_plan,
    render_plan,
    render_result,
    result_json,
    risk_lines,
)
from .report_format import envelope, outcomes_counted, print_json

# The acting side is imported when a command runs: `modelcache path` and `analyze` import this
# module too (cli.py registers its commands), and never need it.
if TYPE_CHECKING:
    from .act.journal import RunInfo
    from .act.results import RunResult
    from .plan import Plan


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
        question = f"Free {plan.bytes_to_free:,} bytes as above?"
        ask_first(as_json, "this changes files", "the plan", lambda: render_plan(plan, stdout()), question)
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


def _run_info(r: RunInfo) -> dict[str, Any]:
    return {"run": r.run_id, "command": r.command, "started": r.started, "status": r.status, "changes": r.changes}


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
        question = f"Remove {len(acting)} item(s), freeing {plan.bytes_to_free:,} bytes?"
        ask_first(as_json, "this removes files", "the list", lambda: render_clean_plan(plan, stdout()), question)
    result = execute_clean(plan, cache.path)
    if not as_json:
        render_clean_plan(plan, stdout())
    _finish("clean", replace(result, recovered=(*recovered, *result.recovered)), as_json)

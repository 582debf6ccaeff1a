"""`modelcache prune`: the command function, registered in `cli.py`, with its table and JSON.

Only parsing and rendering here: the units and the order are `prune.py`'s (finding), the removal is
`act/prune.py`'s. SIZE and AGE are parsed by `selection.py`, which `list` shares.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import display
from .errors import EXIT_OK, InputError, ModelcacheError
from .report import envelope, format_size, one_line, print_json, shown

if TYPE_CHECKING:
    from rich.console import Console

    from .locations import StoreLocation
    from .prune import Budget, PrunePlan

UNITS_HELP = "decimal units, as `hf cache ls`: 1G = 1,000,000,000 bytes; plain bytes too"
UNDO_NOTE = "Undo needs the network: `modelcache undo` downloads the removed revisions again from the Hub."


def size_option(flag: str, goal: str, more: str = "") -> Any:
    """A budget given as a SIZE: what it asks for (`goal`), how SIZE reads, then `more`."""
    return typer.Option(flag, metavar="SIZE", help=f"{goal} (200G, 1.5T, 500MB: {UNITS_HELP}).{more}")


MaxSizeOption = Annotated[
    str | None,
    size_option("--max-size", "The caches' own bytes end at or below SIZE",
                " Bytes also linked from outside the caches are not counted."),
]  # fmt: skip
MinFreeOption = Annotated[
    str | None, size_option("--min-free", "The file system of the HF cache ends with at least SIZE free")
]
OlderThanOption = Annotated[
    str | None,
    typer.Option(
        "--older-than", metavar="AGE", help="Remove every model not used for AGE (30d, 12h, 2w; plain seconds too)."
    ),
]


def prune(
    max_size: MaxSizeOption = None,
    min_free: MinFreeOption = None,
    older_than: OlderThanOption = None,
    keep: Annotated[
        list[str] | None,
        typer.Option(
            "--keep",
            metavar="PATTERN",
            help="Never remove a model whose repo id or name matches this glob "
            "(repeatable; also `keep = [...]` in the config file).",
        ),
    ] = None,
    stores: Annotated[
        list[str] | None,
        typer.Option(
            "--store",
            metavar="KIND",
            help="Also prune another tool's cache: ollama, modelscope or "
            "llamacpp, where its tool keeps it, or KIND=PATH (repeatable).",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="HF hub cache folder (default: where huggingface_hub puts it)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the table; change nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (docs/json.md) instead of text.")] = False,
) -> None:
    """Remove the models used least recently until the caches fit a budget.

    Give at least one of --max-size, --min-free, --older-than.

    A unit is a whole HF cache repo, or an old revision no ref names (with --store, a model of that store).

    Last used: the newest access time of its files (as `hf cache ls`), or its last `modelcache path`/`download`.

    Pinned (--keep), downloading, open or memory-mapped models, and models that would free nothing, are kept.

    Journaled: `modelcache undo` downloads the removed revisions again (it needs the network).
    """
    from .cli import _finish, recover_first
    from .cli_common import ask_first
    from .locations import hf_cache_location
    from .prune import plan_prune
    from .scan import scan_locations

    budget = budget_of(max_size, min_free, older_than)
    if budget is None:
        raise InputError("prune needs a budget: give --max-size SIZE, --min-free SIZE or --older-than AGE")
    cache = hf_cache_location(cache_dir, given_must_exist=True)
    patterns = keep_patterns(keep)
    chosen = _stores(stores or [])
    recovered = [] if dry_run else recover_first()  # a dry run changes nothing, not even that
    inventory = scan_locations(cache, [], chosen)
    plan = plan_prune(inventory, cache.path, budget, keep=patterns, stores=chosen)
    if plan.unreachable is not None:
        raise ModelcacheError(plan.unreachable)
    if dry_run or not plan.removals:
        if as_json:
            print_json(envelope("prune", "success", {"dry_run": dry_run, **plan_json(plan, patterns, chosen)}))
        else:
            render_prune(plan, _out())
        raise typer.Exit(EXIT_OK)
    if not yes:
        question = f"Remove {len(plan.removals)} model(s), freeing {plan.bytes_to_free:,} bytes?"
        ask_first(as_json, "this removes files", "the table", lambda: render_prune(plan, _out()), question)
    elif not as_json:
        render_prune(plan, _out())
    from .act.prune import execute_prune

    result = execute_prune(plan)
    _finish("prune", replace(result, recovered=(*recovered, *result.recovered)), as_json)


def budget_of(max_size: str | None, min_free: str | None, older_than: str | None) -> Budget | None:
    """The budget the options give (None: none given); a size or age that does not parse is an `InputError`."""
    from .prune import Budget
    from .selection import parse_age, parse_size

    budget = Budget(
        parse_size(max_size) if max_size is not None else None,
        parse_size(min_free) if min_free is not None else None,
        parse_age(older_than) if older_than is not None else None,
    )
    return None if budget == Budget() else budget


def keep_patterns(keep: list[str] | None) -> list[tuple[str, str]]:
    """`--keep` patterns and the config file's `keep = [...]`, each with where it came from."""
    from .locations import load_config

    configured = load_config().get("keep", [])
    if not isinstance(configured, list) or not all(isinstance(p, str) for p in configured):
        raise InputError("config file: 'keep' must be a list of glob patterns")
    return [(p, "--keep") for p in keep or []] + [(p, "config keep") for p in configured]


def _out() -> Console:
    from .cli import stdout

    return stdout()


def _stores(given: list[str]) -> list[StoreLocation]:
    """`--store KIND` (where its tool keeps it) or `--store KIND=PATH`: the other caches to prune."""
    from .locations import StoreLocation, default_store_candidates
    from .prune import PRUNABLE_STORES
    from .store_kind import StoreKind

    chosen: list[StoreLocation] = []
    for spec in given:
        kind, sep, path = spec.partition("=")
        if kind == "hf_cache" and not sep:
            continue  # always pruned
        if kind not in PRUNABLE_STORES or (sep and not path):
            raise InputError(f"--store takes {', '.join(PRUNABLE_STORES)} (KIND or KIND=PATH): {spec!r}")
        if sep:
            if not os.path.isdir(path):
                raise InputError(f"store folder not found (--store {kind}): {path}")
            chosen.append(StoreLocation(StoreKind(kind), os.path.abspath(path), "--store"))
            continue
        found = [(p, src) for k, p, src in default_store_candidates() if k.value == kind]
        if not found or not os.path.isdir(found[0][0]):
            where = f" (looked at {found[0][0]})" if found else ""
            raise InputError(f"no {kind} store found where its tool keeps it{where}: give --store {kind}=PATH")
        chosen.append(StoreLocation(StoreKind(kind), found[0][0], found[0][1]))
    return chosen


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds)) if seconds else "-"


def plan_json(plan: PrunePlan, keep: list[tuple[str, str]], stores: list[StoreLocation]) -> dict[str, Any]:
    b = plan.budget
    return {
        "max_size": b.max_size,
        "min_free": b.min_free,
        "older_than_seconds": b.older_than,
        "keep": [pattern for pattern, _ in keep],
        "stores": ["hf_cache", *(s.kind.value for s in stores)],
        "exclusive_bytes_before": plan.exclusive_before,
        "exclusive_bytes_after": plan.exclusive_after,
        "free_bytes_before": plan.free_before,
        "free_bytes_after": plan.free_after,
        "bytes_to_free": plan.bytes_to_free,
        "undo_needs_network": any(d.unit.revisions for d in plan.removals),
        "units": [
            {
                "unit": d.unit.kind,
                "store": d.unit.store.value,
                "id": d.unit.name,
                "type": d.unit.repo_type,
                "revision": d.unit.revisions[0].commit if d.unit.kind == "revision" else None,
                "path": display(d.unit.path),
                "last_used": d.last_used or None,
                "clock": d.clock,
                "frees": d.frees,
                "action": "remove" if d.remove else "keep",
                "reason": one_line(d.reason),
            }
            for d in plan.decisions
        ],
    }


def render_prune(plan: PrunePlan, out: Console) -> None:
    """The table (least recently used first) and the totals before and after."""
    from rich.markup import escape
    from rich.table import Table

    if plan.decisions:
        table = Table(title=None)
        for name, justify in [("Unit", "left"), ("Store", "left"), ("Last used", "left"), ("Frees", "right"),
                              ("", "left"), ("Why", "left")]:  # fmt: skip
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for d in plan.decisions:
            clock = "" if d.clock == "atime" else f" ({d.clock})"
            action = "[bold red]remove[/]" if d.remove else "keep"
            table.add_row(
                escape(shown(d.unit.label)), d.unit.store.value, _when(d.last_used) + clock, format_size(d.frees),
                action, escape(one_line(d.reason) or ""),
            )  # fmt: skip
        out.print(table)
    else:
        out.print("No models in the caches.", highlight=False)
    b = plan.budget
    size = f" (--max-size {format_size(b.max_size)})" if b.max_size is not None else ""
    lines = [f"Exclusive bytes: {_bytes(plan.exclusive_before)} -> {_bytes(plan.exclusive_after)}{size}"]
    if plan.free_before is not None and plan.free_after is not None:
        free = f" (--min-free {format_size(b.min_free)})" if b.min_free is not None else ""
        after = _bytes(plan.free_after)
        lines.append(f"Free on the HF cache's file system: {_bytes(plan.free_before)} -> {after}{free}")
    n = len(plan.removals)
    lines.append(f"Removes {n} of {len(plan.decisions)} unit(s), freeing {_bytes(plan.bytes_to_free)}." if n else
                 "Nothing to do: the budget holds.")  # fmt: skip
    if any(d.unit.revisions for d in plan.removals):
        lines.append(UNDO_NOTE)
    if any(d.remove and not d.unit.revisions for d in plan.removals):
        lines.append("Models of other tools' stores are not put back by undo: pull them again with their tool.")
    for line in lines:
        out.print(line, highlight=False, markup=False)


def _bytes(n: int) -> str:
    return f"{format_size(n)} ({n:,} bytes)"

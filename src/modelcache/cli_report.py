"""`modelcache report --html FILE`: the command function, registered in `cli.py`.

One scan and one analysis, as `analyze` makes them; from them the dry runs of `consolidate` (auto)
and `clean` (as run without options), the tree of `space.py`, and the page of `html_report.py`. It
writes the one file it is asked for (and the digest index, as `analyze` does).
"""

from __future__ import annotations

import sys
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .cli_common import CacheDirOption, DiscoverOption, ModelsOption, StoresOption
from .cli_prune import MaxSizeOption, MinFreeOption, OlderThanOption
from .errors import EXIT_OK, EXIT_WARNINGS, InputError

if TYPE_CHECKING:
    from .cli_common import Scanned
    from .prune import Budget
    from .space import Removals

# The files drawn one by one; the smaller ones are drawn together, per folder and status. About
# 250 bytes of the page each (path, digest, rectangle): a machine of 2,000 repos or a million files
# makes a page of about 5 MB.
MAX_FILE_TILES = 15_000


def report(
    html_file: Annotated[
        Path, typer.Option("--html", metavar="FILE", help="Write the report to this HTML file (one page, offline).")
    ],
    cache_dir: CacheDirOption = None,
    models: ModelsOption = None,
    stores: StoresOption = None,
    discover: DiscoverOption = None,
    open_page: Annotated[bool, typer.Option("--open", help="Open the page in the web browser.")] = False,
    max_size: MaxSizeOption = None,
    min_free: MinFreeOption = None,
    older_than: OlderThanOption = None,
) -> None:
    """Draw where the space goes: a page with the figures of analyze, a treemap and a sorted table.

    Second copies, garbage and bytes shared by hard links have colours of their own; what consolidate
    and clean would free is shown as figures and in the picture, and what prune would free with the
    budget given (--max-size, --min-free, --older-than: prune's options). Reads only, like analyze.
    """
    from huggingface_hub import constants

    from .act.fsops import write_durably
    from .clean import plan_clean
    from .cli_common import _analyze, _scan, stderr, stdout
    from .cli_prune import budget_of, keep_patterns
    from .html_report import render_page
    from .locations import where_given
    from .modes import Mode
    from .plan import fs_types_of, plan_consolidate
    from .report import format_size, render_warnings
    from .space import build_space, merge_small

    budget = budget_of(max_size, min_free, older_than)
    keep = keep_patterns(None) if budget is not None else []

    try:  # before the scan: a page that cannot be written is an error before anything is read
        if html_file.is_dir():
            raise InputError(f"--html names a folder, not a file: {html_file}")
        if not html_file.parent.is_dir():
            raise InputError(f"folder not found for --html: {html_file.parent}")
    except OSError as e:
        raise InputError(f"cannot write {html_file}: {e.strerror}") from None
    scanned = _scan(where_given(cache_dir, models, stores, discover))
    inventory = scanned.inventory
    analysis = _analyze(scanned, fast=False, progress=True)
    devices = fs_types_of(r.facts.dev for r in inventory.records)
    plan = plan_consolidate(inventory, analysis.duplicates, Mode.AUTO, devices)
    garbage = plan_clean(inventory, scanned.cache.path)
    space = build_space(inventory, analysis, plan, garbage, prune_preview(scanned, budget, keep))
    merged = merge_small(space.root, MAX_FILE_TILES)
    endpoint = constants.ENDPOINT
    page = render_page(space, analysis, scanned.cache, scanned.models, scanned.stores, endpoint, merged)
    data = page.encode("utf-8", "surrogateescape")
    try:
        write_durably(html_file, data)
    except OSError as e:
        raise InputError(f"cannot write {html_file}: {e.strerror}") from None
    out = stdout()
    out.print(f"Report written to {html_file} ({format_size(len(data))}).", highlight=False, markup=False)
    out.print(
        f"Duplicate Storage {format_size(analysis.duplicate_bytes)} of {format_size(analysis.total_bytes)}; "
        f"consolidate (auto) frees {format_size(space.consolidate_frees)}, clean {format_size(space.clean_frees)}.",
        highlight=False,
    )
    render_warnings(analysis.warnings, stderr())
    if open_page and not webbrowser.open(html_file.resolve().as_uri()):
        print(f"modelcache: no web browser to open; the page is {html_file}", file=sys.stderr)
    raise typer.Exit(EXIT_WARNINGS if analysis.warnings else EXIT_OK)


def prune_preview(scanned: Scanned, budget: Budget | None, keep: list[tuple[str, str]]) -> Removals | None:
    """What `modelcache prune` with `budget` would remove from the HF cache (its default units), from the
    same scan; None without a budget (the page then says how to ask for one). A budget that cannot be
    reached removes nothing, as prune would, and says why on stderr."""
    if budget is None:
        return None
    from .prune import plan_prune
    from .space import Removals

    plan = plan_prune(scanned.inventory, scanned.cache.path, budget, keep=keep)
    if plan.unreachable is not None:
        print(f"modelcache: prune would remove nothing: {plan.unreachable}", file=sys.stderr)
        return Removals(frozenset(), (), 0)
    removed = plan.removals
    paths = frozenset(r.path for d in removed for r in d.unit.files)
    return Removals(paths, tuple(d.unit.path for d in removed), plan.bytes_to_free)

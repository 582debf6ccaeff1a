"""Render results: text for people (rich) and a versioned JSON envelope for programs.

Here: analyze, list and verify. The pieces every output is made of are in `report_format.py`, what the
commands that change files print in `report_changes.py`; both are re-exported from here, the import
path of every report name. Results go to stdout; warnings and progress go to stderr (the consoles are
`cli_common.py`'s).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .analysis import Analysis, ListRow
from .common import display
from .inventory import Inventory, Warning_
from .locations import Location, StoreLocation
from .report_changes import (
    MAX_ITEMS_PER_KIND,
    clean_plan_json,
    plan_json,
    render_clean_plan,
    render_plan,
    render_result,
    result_json,
    risk_lines,
)
from .report_format import (
    SCHEMA_VERSION,
    Counted,
    envelope,
    format_size,
    one_line,
    outcomes_counted,
    print_json,
    say_why,
    shown,
    warning_json,
    warnings_counted,
)
from .report_text import store_bars, top_rows
from .store_kind import StoreKind
from .stores.registry import spec_of

if TYPE_CHECKING:  # types only: `analyze --json` needs neither rich nor the other commands' modules
    from rich.console import Console

    from .act.results import RunResult
    from .verify import Verdict, VerifyResult


# Every report name is imported from here, as it was before report_format.py and report_changes.py
# held some of them (cli_download, cli_prune, html_report, demo and the tests do).
__all__ = [
    "MAX_GROUPS_SHOWN",
    "MAX_ITEMS_PER_KIND",
    "MAX_WARNINGS_SHOWN",
    "SCHEMA_VERSION",
    "Counted",
    "analysis_json",
    "clean_plan_json",
    "envelope",
    "format_size",
    "list_json",
    "one_line",
    "outcomes_counted",
    "plan_json",
    "print_json",
    "render_analysis",
    "render_clean_plan",
    "render_list",
    "render_plan",
    "render_result",
    "render_verify",
    "render_warnings",
    "result_json",
    "risk_lines",
    "say_why",
    "shown",
    "verify_json",
    "warning_json",
    "warnings_counted",
]

MAX_GROUPS_SHOWN = 20
MAX_WARNINGS_SHOWN = 20


def analysis_json(
    a: Analysis, cache: Location, models: list[Location], stores: Sequence[StoreLocation] = ()
) -> dict[str, Any]:
    return envelope(
        "analyze",
        "partial" if a.warnings else "success",
        {
            "hf_cache_dir": display(cache.path),
            "model_dirs": [display(m.path) for m in models],
            "stores": [
                {
                    "store": kind.value,
                    "paths": [display(s.path) for s in stores if s.kind is kind]
                    or ([display(cache.path)] if kind is StoreKind.HF_CACHE else [display(m.path) for m in models]),
                    "bytes": a.store_bytes[kind],
                    "cross_store_duplicate_bytes": a.cross_store_bytes[kind],
                }
                for kind in StoreKind
                if a.store_bytes[kind] or any(s.kind is kind for s in stores)
            ],
            "fast": a.fast,
            "hf_cache_bytes": a.hf_cache_bytes,
            "local_bytes": a.local_bytes,
            "local_dir_bytes": a.local_dir_bytes,
            "plain_bytes": a.plain_bytes,
            "duplicate_bytes": a.duplicate_bytes,
            "total_bytes": a.total_bytes,
            "metadata_bytes": a.metadata_bytes,
            "incomplete_bytes": a.incomplete_bytes,
            "bytes_hashed": a.bytes_hashed,
            "files_hashed": a.files_hashed,
            "repos": [
                {
                    "id": row.repo.repo_id,
                    "type": row.repo.repo_type,
                    "store": row.repo.store.value,
                    "path": display(row.repo.path),
                    "size_bytes": row.size_bytes,
                    "revisions": list(row.repo.revisions),
                    "status": row.repo.status.value,
                    "duplicated_bytes": row.duplicated_bytes,
                    "problems": list(row.repo.problems),
                }
                for row in a.repos
            ],
            "duplicates": [
                {
                    "digest": str(g.digest),
                    "size": g.size,
                    "copies": g.inodes,
                    "paths": [display(p) for p in g.paths],
                    "reclaimable_bytes": g.reclaimable_bytes,
                    "proven": g.proven,
                }
                for g in a.duplicates
            ],
            "warnings": [warning_json(w) for w in a.warnings],
        },
    )


def _bytes(n: int) -> str:
    return f"{format_size(n):>8}  ({n:,} bytes)"


def render_analysis(
    a: Analysis,
    cache: Location,
    models: list[Location],
    out: Console,
    stores: Sequence[StoreLocation] = (),
    top: int | None = None,
) -> None:
    """The summary, the repos and folders, the duplicate groups; `top`: only the largest rows of each."""
    where = [f"HF cache: {shown(cache.path)} (from {cache.source})"]
    where += [f"Models:   {shown(m.path)} (from {m.source})" for m in models] or ["Models:   none given"]
    where += [f"{s.kind.value + ':':<9} {shown(s.path)} (from {s.source})" for s in stores]
    for line in where:
        out.print(line, highlight=False, markup=False)
    out.print()
    wasted = "probable, from names alone (--fast)" if a.fast else "WASTED SPACE"
    out.print("📈 Current Storage:", highlight=False)
    out.print(f"  HuggingFace Cache: {_bytes(a.hf_cache_bytes)}", highlight=False)
    out.print(f"  Local Models:      {_bytes(a.local_bytes)}", highlight=False)
    for kind in StoreKind:  # the HF cache and the model folders have the lines above
        spec = spec_of(kind)
        if spec.summary and a.store_bytes[kind]:
            cross = a.cross_store_bytes[kind]
            also = f"  (of which {format_size(cross)} also in another store)" if cross else ""
            out.print(f"  {spec.title + ':':<19}{_bytes(a.store_bytes[kind])}{also}", highlight=False)
    out.print(f"  Duplicate Storage: {_bytes(a.duplicate_bytes)}  ← {wasted}", highlight=False)
    out.print(f"  Total Storage:     {_bytes(a.total_bytes)}", highlight=False)
    out.print(
        f"  (of which huggingface_hub metadata {format_size(a.metadata_bytes)}, "
        f"partial downloads {format_size(a.incomplete_bytes)})",
        highlight=False,
    )
    for line in store_bars({spec_of(kind).title: n for kind, n in a.store_bytes.items() if n}, a.total_bytes):
        out.print(line, highlight=False, markup=False)

    shown_repos = top_rows(a.repos, top, lambda row: row.size_bytes)
    if a.repos:
        from rich.table import Table

        table = Table(title="Repos and folders", title_justify="left")
        for name, justify in [
            ("Repo", "left"),
            ("Where", "left"),
            ("Size", "right"),
            ("Revisions", "left"),
            ("Status", "left"),
            ("Duplicated", "right"),
        ]:
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for row in shown_repos.rows:
            status = row.repo.status.value
            if row.repo.problems:
                status += "\n" + "\n".join(row.repo.problems[:3])
            table.add_row(
                shown(row.repo.repo_id),
                f"{row.repo.store.value}\n{shown(row.repo.path)}",
                format_size(row.size_bytes),
                "\n".join(row.repo.revisions) or "-",
                status,
                format_size(row.duplicated_bytes) if row.duplicated_bytes else "-",
            )
        out.print()
        out.print(table)
        left_out = shown_repos.note("repos and folders", top)
        if left_out:
            out.print(left_out, highlight=False, markup=False)

    if a.duplicates:
        limit = MAX_GROUPS_SHOWN if top is None else top
        out.print()
        out.print(f"Duplicate groups ({len(a.duplicates)}), largest first:", highlight=False)
        for g in a.duplicates[:limit]:
            tag = "" if g.proven else " (probable)"
            out.print(
                f"  {format_size(g.size)} x {g.inodes} copies, reclaimable {format_size(g.reclaimable_bytes)}"
                f" ({g.reclaimable_bytes:,} bytes){tag}  {g.digest}",
                highlight=False,
                markup=False,
            )
            for p in g.paths:
                out.print(f"      {shown(p)}", highlight=False, markup=False)
        if len(a.duplicates) > limit:
            rest = a.duplicates[limit:]
            freed = format_size(sum(g.reclaimable_bytes for g in rest))
            why = f"left out by --top {top}" if top is not None else "see --json"
            out.print(f"  ... {len(rest):,} more groups ({freed} reclaimable) {why}", highlight=False)
    else:
        out.print()
        out.print("No duplicates found.", highlight=False)


def render_warnings(warnings: tuple[Warning_, ...], err: Console) -> None:
    if not warnings:
        return
    err.print(f"{len(warnings)} warning(s):", highlight=False)
    for w in warnings[:MAX_WARNINGS_SHOWN]:
        err.print(f"  {shown(w.path)}: {w.message}", highlight=False, markup=False)
    if len(warnings) > MAX_WARNINGS_SHOWN:
        err.print(f"  ... {len(warnings) - MAX_WARNINGS_SHOWN} more (see --json)", highlight=False)


# -- list and verify ---------------------------------------------------------------------------------


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ns / 1e9)) if ns else "-"


def list_json(rows: list[ListRow], inventory: Inventory) -> dict[str, Any]:
    return {
        "repos": [
            {
                "id": row.repo.repo_id,
                "type": row.repo.repo_type,
                "store": row.repo.store.value,
                "path": display(row.repo.path),
                "revisions": list(row.repo.revisions),
                "size_bytes": row.size_bytes,
                "status": row.status,
                "last_access": row.accessed,
                "last_modified": row.modified,
                "problems": list(row.repo.problems),
            }
            for row in rows
        ],
        "warnings": [warning_json(w) for w in inventory.warnings],
    }


def render_list(rows: list[ListRow], out: Console, top: int | None = None) -> None:
    if not rows:
        out.print("No models found.", highlight=False)
        return
    from rich.table import Table

    table = Table(title=None)
    for name, justify in [
        ("Repo", "left"),
        ("Type", "left"),
        ("Revision", "left"),
        ("Size", "right"),
        ("Status", "left"),
        ("Last access", "left"),
        ("Where", "left"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    chosen = top_rows(rows, top, lambda row: row.size_bytes)
    for row in chosen.rows:
        table.add_row(
            shown(row.repo.repo_id),
            row.repo.repo_type,
            "\n".join(row.repo.revisions) or "-",
            format_size(row.size_bytes),
            row.status,
            _when(row.last_access_ns),
            f"{row.repo.store.value}: {shown(row.repo.path)}",
        )
    out.print(table)
    left_out = chosen.note("models and folders", top)
    if left_out:
        out.print(left_out, highlight=False, markup=False)


def verify_json(result: VerifyResult, repaired: RunResult | None) -> dict[str, Any]:
    return {
        "files_verified": len(result.verdicts),
        "bytes_read": result.bytes_read,
        "unverifiable_files": result.unverifiable,
        "corrupt": [
            {
                "path": display(v.record.path),
                "store": v.record.store.value,
                "claim": v.claim,
                "actual_sha256": v.actual_sha256,
                "changed_without_mtime": v.bit_rot,
                "linked_from": [display(p) for p in v.linked_from],
                "hard_links": [display(p) for p in v.hard_links],
                "symlinks": [display(p) for p in v.symlinks],
                "folder": display(v.record.repo_key),
            }
            for v in result.corrupt
        ],
        "repair": result_json(repaired) if repaired is not None else None,
    }


def render_verify(result: VerifyResult, repaired: RunResult | None, out: Console) -> None:
    out.print(
        f"Verified {len(result.verdicts)} file(s), {format_size(result.bytes_read)} read; "
        f"{len(result.corrupt)} corrupt; {result.unverifiable} without a digest to check (plain folders).",
        highlight=False,
    )
    outcomes = {o.target: o for o in repaired.outcomes} if repaired is not None else {}
    for v in result.corrupt:
        rot = " (changed without its mtime changing)" if v.bit_rot else ""
        out.print(f"  CORRUPT {shown(v.record.path)}{rot}", highlight=False, markup=False)
        out.print(f"          expected {v.claim}, sha256 is {v.actual_sha256}", highlight=False, markup=False)
        for line in _link_lines(v):
            out.print(f"          {line}", highlight=False, markup=False)
        for link in v.linked_from:
            out.print(f"          used by {shown(link)}", highlight=False, markup=False)
        if v.record.store.value != "hf_cache":
            out.print(f"          in {shown(v.record.repo_key)}", highlight=False, markup=False)
        if repaired is not None:
            o = outcomes.get(v.record.path)
            if o is None:
                what = "not repaired: no known source to download it from"
            elif o.status == "done":
                kept = ", ".join(shown(p) for p in (*v.hard_links, *(v.symlinks if v.symlinks_keep_bytes else ())))
                what = (
                    f"downloaded again, into an inode of its own ({kept} keeps its bytes)"
                    if kept
                    else "downloaded again"
                )
            else:
                what = o.reason or o.status
            out.print(f"  repair: {shown(v.record.path)}: {what}", highlight=False, markup=False)
    if repaired is None and result.corrupt:
        out.print("Nothing changed. Download the corrupted files again with --repair.", highlight=False)


def _link_lines(v: Verdict) -> list[str]:
    """What the other ways to a corrupt file's bytes (hard links, symlinks from elsewhere) tell about how
    it changed.

    huggingface_hub never writes a cache file in place (it renames a finished download over it), so
    new bytes in a cache file that a path elsewhere shares came through that path, unless its mtime
    did not move (bit rot, or a write that put the mtime back).
    """
    links = [(f"hard link {shown(p)}", "same inode") for p in v.hard_links]
    links += [(f"symlink {shown(p)}", "it leads here") for p in v.symlinks]
    if v.record.store is not StoreKind.HF_CACHE or v.bit_rot:
        return [f"shares its bytes with the {link} ({how})" for link, how in links]
    if len(links) == 1:
        return [f"bytes changed through the {links[0][0]} ({links[0][1]})"]
    return ["bytes changed through one of its links:", *(f"  {link} ({how})" for link, how in links)]

"""Render results: text for people (rich) and a versioned JSON envelope for programs.

Results go to stdout; warnings and progress go to stderr (`output.py` holds the consoles).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .analysis import Analysis, ListRow
from .common import display
from .inventory import Inventory, Warning_
from .locations import Location, StoreLocation
from .report_text import store_bars, top_rows, what_happens
from .store_kind import StoreKind
from .stores.registry import spec_of

if TYPE_CHECKING:  # types only: `analyze --json` needs neither rich nor the other commands' modules
    from rich.console import Console

    from .act.results import RunResult
    from .clean import CleanPlan, Garbage
    from .plan import Action, Plan
    from .verify import Verdict, VerifyResult

SCHEMA_VERSION = 1
MAX_GROUPS_SHOWN = 20
MAX_WARNINGS_SHOWN = 20
MAX_ITEMS_PER_KIND = 10


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}
_CONTROL.update({ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"})


def shown(path: str) -> str:
    """A path for a terminal: undecodable bytes as `\\xNN`, control characters (a newline) escaped."""
    return display(path).translate(_CONTROL)


def one_line(reason: str | None) -> str | None:
    """A reason, in one line: it can hold a path, and a file name can hold a newline. Found by the
    property tests: a failure in a read-only folder named `line\\nbreak.bin` in two lines."""
    return None if reason is None else reason.translate(_CONTROL)


def format_size(n: int) -> str:
    """Bytes in decimal units, as the original solution document and `hf cache` print them.

    >>> format_size(166_300_000_000)
    '166.3GB'
    >>> format_size(512)
    '512B'
    """
    if n < 1000:
        return f"{n}B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 999.95 or unit == "PB":
            return f"{value:.1f}{unit}"
    raise AssertionError("unreachable")


def envelope(command: str, status: str, body: dict[str, Any]) -> dict[str, Any]:
    """The JSON wrapper every command shares (docs/json.md); `warnings` is an empty list where `body` has none."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "modelcache",
        "tool_version": __version__,
        "command": command,
        "status": status,
        "warnings": [],
        **body,
    }


def warning_json(w: Warning_) -> dict[str, str]:
    return {"path": w.path, "message": w.message}


# What made an exit code non-zero: (how many, what one is, what more are, the JSON field that lists them)
Counted = tuple[int, str, str, str]


def warnings_counted(n: int) -> Counted:
    return (n, "warning", "warnings", "warnings")


def outcomes_counted(failed: int, skipped: int) -> tuple[Counted, Counted]:
    return (failed, "change failed", "changes failed", "outcomes"), (
        skipped, "change skipped", "changes skipped", "outcomes")  # fmt: skip


def say_why(*counts: Counted) -> None:
    """Under --json, the one line on stderr that says why the exit code is not 0 (stdout holds the JSON
    alone): what made it so and where the JSON lists it, e.g. "2 warnings; see `warnings` in the JSON"."""
    shown = [(n, one if n == 1 else many, field) for n, one, many, field in counts if n]
    what = ", ".join(f"{n} {noun}" for n, noun, _ in shown)
    fields = ", ".join(dict.fromkeys(f"`{field}`" for _, _, field in shown))
    print(f"modelcache: {what}; see {fields} in the JSON" if shown else "modelcache: see the JSON", file=sys.stderr)


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


# -- consolidate -----------------------------------------------------------------------------------------


def plan_json(plan: Plan) -> dict[str, Any]:
    body = json.loads(plan.to_json())
    for action in body["actions"]:
        for side in ("target", "keep"):
            action[side]["path"] = display(action[side]["path"])
    for folder, summary in zip(body["folders"], plan.folders, strict=True):
        folder["path"] = display(folder["path"])
        folder["fully_consolidated"] = summary.fully_consolidated
    return {"plan": body, "bytes_to_free": plan.bytes_to_free, "left_alone_bytes": _left_alone_bytes(plan)}


def _left_alone_bytes(plan: Plan) -> int:
    """The bytes of the copies the plan leaves alone, each inode once."""
    return sum({(a.target.dev, a.target.ino): a.target.size for a in plan.actions if a.kind == "leave"}.values())


def _footnotes(texts: list[str]) -> dict[str, int]:
    """A number for each distinct text, in order of first use (long reasons are printed once, below)."""
    numbers: dict[str, int] = {}
    for text in texts:
        numbers.setdefault(text, len(numbers) + 1)
    return numbers


def render_plan(plan: Plan, out: Console) -> None:
    """The dry run: per folder, the copies affected, what happens to each, and the bytes freed."""
    if not plan.actions:
        out.print("Nothing to consolidate: no duplicates found.", highlight=False)
        return
    left = _footnotes([a.reason for a in plan.actions if a.kind == "leave" and a.reason])
    risky = _footnotes([r for a in plan.actions for r in a.risks])
    by_folder: dict[str, list[Action]] = {}
    for action in plan.actions:
        by_folder.setdefault(action.target.repo, []).append(action)

    def line(text: str) -> None:
        out.print(text, highlight=False, markup=False)

    for folder, actions in by_folder.items():
        frees = sum(a.frees for a in actions)
        line(f"{shown(folder)} ({actions[0].target.store}): {len(actions)} file(s), frees {format_size(frees)}")
        for a in actions:
            rel = shown(os.path.relpath(a.target.path, folder))
            would = f" (would work: {', '.join(a.alternatives)})" if a.alternatives else ""
            if a.kind == "skip":
                line(f"  skip      {format_size(a.target.size):>8}  {rel}: {one_line(a.reason)}{would}")
            elif a.kind == "leave":
                line(f"  leave     {format_size(a.target.size):>8}  {rel}: left alone [{left[a.reason or '']}]{would}")
            else:
                what = "delete" if a.kind == "delete" else " or ".join(a.methods)
                marks = "".join(f" [risk {risky[r]}]" for r in a.risks)
                line(f"  {what:<9} {format_size(a.target.size):>8}  {rel}{marks}")
                line(f"            = {shown(a.keep.path)}  [{a.keep_reason}]")
    for f in plan.folders:
        if f.fully_consolidated:
            where = f" (the cache holds its complete snapshot {shown(f.cache_snapshot)})" if f.cache_snapshot else ""
            line(f"{shown(f.path)}: fully consolidated{where}")
        elif f.only_here:
            listed = ", ".join(shown(p) for p in f.only_here[:5]) + (" ..." if len(f.only_here) > 5 else "")
            line(f"{shown(f.path)}: {len(f.only_here)} file(s) exist only here and stay: {listed}")
    for reason, n in left.items():
        line(f"[{n}] left alone: {one_line(reason)}")
    for w in sorted({w for a in plan.actions for w in a.warnings}):
        line(f"warning: {w}")
    for risk_line in risk_lines(plan, risky):
        line(risk_line)
    skipped = sum(1 for a in plan.actions if a.kind == "skip")
    left_alone = sum(1 for a in plan.actions if a.kind == "leave")
    left_bytes = format_size(_left_alone_bytes(plan))
    alone = f"{left_alone} left alone ({left_bytes}: the modes that would reclaim them are named above)"
    line(
        f"Total: {what_happens(plan.actions)}, freeing {format_size(plan.bytes_to_free)} "
        f"({plan.bytes_to_free:,} bytes); {alone if left_alone else '0 left alone'}; {skipped} skipped."
    )


def risk_lines(plan: Plan, numbers: dict[str, int] | None = None) -> list[str]:
    """Each risk the plan's links carry (what a next step would write through), with how many copies and
    the folders they are in: printed in the dry run, and before the run acts."""
    numbers = numbers or _footnotes([r for a in plan.actions for r in a.risks])
    lines = []
    for risk, n in numbers.items():
        copies = [a for a in plan.actions if risk in a.risks]
        folders = sorted({shown(a.target.repo) for a in copies})
        where = ", ".join(folders[:3]) + (f" and {len(folders) - 3} more" if len(folders) > 3 else "")
        lines.append(f"[risk {n}] {len(copies)} of the copies made by {plan.header.mode}, in {where}: {one_line(risk)}")
    return lines


def result_json(result: RunResult) -> dict[str, Any]:
    return {
        "run": result.run_id,
        "bytes_freed": result.bytes_freed,
        "bytes_verified": result.bytes_verified,
        "done": result.count("done"),
        "skipped": result.count("skipped"),
        "left_alone": result.count("left_alone"),
        "failed": result.count("failed"),
        "outcomes": [
            {
                "action": o.action_id,
                "path": display(o.target),
                "status": o.status,
                "method": o.method,
                "reason": one_line(o.reason),
                "freed": o.freed,
            }
            for o in result.outcomes
        ],
        "empty_dirs": [display(p) for p in result.empty_dirs],
        "removed_dirs": [display(p) for p in result.removed_dirs],
        "recovered_runs": list(result.recovered),
    }


def render_result(result: RunResult, out: Console, undoing: bool = False, undoable: bool = True) -> None:
    for run in result.recovered:
        out.print(f"Recovered interrupted run {run} first.", highlight=False)
    methods: dict[str, int] = {}
    for o in result.outcomes:
        if o.status == "done" and o.method:
            methods[o.method] = methods.get(o.method, 0) + 1
    how = ", ".join(f"{n} {m}" for m, n in sorted(methods.items())) or "nothing changed"
    compared = f"{format_size(result.bytes_verified)} {'copied and checked' if undoing else 'compared'}"
    headline = "Undone" if undoing else f"Freed {format_size(result.bytes_freed)} ({result.bytes_freed:,} bytes)"
    run = f" Run {result.run_id}." if result.run_id else ""
    out.print(f"{headline}: {how}; {compared}.{run}", highlight=False)
    left_alone = result.count("left_alone")
    for o in result.outcomes:
        if o.status not in ("done", "left_alone"):
            out.print(f"  {o.status}: {shown(o.target)}: {one_line(o.reason)}", highlight=False, markup=False)
    if left_alone:  # each reason once: a local_dir download left alone is many copies with one reason
        reasons = _footnotes([o.reason or "" for o in result.outcomes if o.status == "left_alone"])
        for reason in reasons:
            n = sum(1 for o in result.outcomes if o.status == "left_alone" and (o.reason or "") == reason)
            copies = "1 copy" if n == 1 else f"{n} copies"
            out.print(f"  left alone: {copies}: {one_line(reason)}", highlight=False, markup=False)
    if result.empty_dirs:
        verb_dirs = "removed" if result.removed_dirs else "left empty (remove with --remove-empty-dirs)"
        out.print(f"Folders {verb_dirs}:", highlight=False)
        for p in result.empty_dirs:
            out.print(f"  {shown(p)}", highlight=False, markup=False)
    if result.count("done") and undoable and not undoing:
        out.print(f"Undo with: modelcache undo {result.run_id}", highlight=False)


# -- clean ---------------------------------------------------------------------------------------------


def clean_plan_json(plan: CleanPlan) -> dict[str, Any]:
    return {
        "min_age_seconds": plan.min_age,
        "bytes_to_free": plan.bytes_to_free,
        "totals": {kind: {"count": n, "bytes": b} for kind, (n, b) in plan.totals().items()},
        "items": [
            {
                "kind": i.kind,
                "path": display(i.path),
                "size": i.size,
                "frees": i.frees,
                "reason": one_line(i.reason),
                "action": i.fix,
            }
            for i in plan.items
        ],
    }


def render_clean_plan(plan: CleanPlan, out: Console) -> None:
    from .clean import clean_kinds  # clean's own kinds and each store's: only `clean` renders them

    titles = {kind.name: kind.title for kind in clean_kinds()}
    if not plan.items:
        out.print("Nothing to clean.", highlight=False)
        return
    by_kind: dict[str, list[Garbage]] = {}
    for item in plan.items:
        by_kind.setdefault(item.kind, []).append(item)
    for kind, items in by_kind.items():
        acting = [i for i in items if i.fix != "keep"]
        freed = sum(i.frees for i in acting)
        out.print(f"{titles.get(kind, kind)}: {len(items)}, frees {format_size(freed)}", highlight=False)
        for i in items[:MAX_ITEMS_PER_KIND]:
            what = {"remove": "remove", "sweep": "remove", "repair": "repair", "keep": "keep"}[i.fix]
            out.print(
                f"  {what:<7} {format_size(i.size):>8}  {shown(i.path)}: {one_line(i.reason)}",
                highlight=False,
                markup=False,
            )
        if len(items) > MAX_ITEMS_PER_KIND:
            out.print(f"  ... {len(items) - MAX_ITEMS_PER_KIND} more (see --json)", highlight=False)
    total = plan.bytes_to_free
    out.print(f"Total: frees {format_size(total)} ({total:,} bytes).", highlight=False)


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


def print_json(data: dict[str, Any]) -> None:
    """One top-level key a line, and each item of a list on a line of its own.

    Written as it is encoded (the report of a million files is tens of MB, not held twice), and
    encoded by json's C encoder: with `indent=` json falls back to its pure-Python encoder, which
    took 0.9 s of a 4.4 s analyze of 2,000 repos.
    """
    encode = json.JSONEncoder().encode
    write = sys.stdout.write
    separator = "{\n"
    for key, value in data.items():
        write(f"{separator}  {encode(key)}: ")
        if isinstance(value, list) and value:
            item_separator = "[\n    "
            for item in value:
                write(item_separator)
                write(encode(item))
                item_separator = ",\n    "
            write("\n  ]")
        else:
            write(encode(value))
        separator = ",\n"
    write("{}\n" if separator == "{\n" else "\n}\n")

"""What the commands that change files print: consolidate's plan (its dry run, the risks of its
links), clean's list, and the outcome of every run (consolidate, apply, undo, clean, repair).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from .common import display
from .report_format import format_size, one_line, shown
from .report_text import what_happens

if TYPE_CHECKING:  # types only: rendering a result needs neither rich nor the acting side loaded
    from rich.console import Console

    from .act.results import RunResult
    from .clean import CleanPlan, Garbage
    from .plan import Action, Plan

MAX_ITEMS_PER_KIND = 10


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

"""Carry out a prune plan: each unit it removes goes whole (`aside.py`), journaled, after its facts are
checked again right before (`guards.still_prunable`), with the locks of its downloads held; and undo
of such a run, which downloads the removed revisions again from the Hub.

The `begin` record of a unit holds what recovery needs (its entries in order, the folder they go to)
and what undo needs (the repo, and each revision's commit, files and refs). Imports `aside`, `runs`,
`guards`, `recover`, `fsops`, and the finding side's plan; `hub.fetch` when undo downloads.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from ..common import display, reason
from ..errors import ModelcacheError
from ..prune import Decision, PrunePlan
from ..prune_units import unit_locks
from ..store_kind import StoreKind
from . import aside, fsops
from .guards import holding, still_prunable
from .journal import Journal
from .results import Outcome, RunResult, Skip
from .runs import exclusive, journaled

BUSY = "being downloaded: a lock of its download is held"


def execute_prune(plan: PrunePlan, on_unit: Callable[[Outcome], None] | None = None) -> RunResult:
    """Remove the units `plan` removes, least recently used first, each re-checked right before."""
    budget = plan.budget
    with (
        exclusive() as recovered,
        journaled("prune", max_size=budget.max_size, min_free=budget.min_free, older_than=budget.older_than) as journal,
    ):
        outcomes = []
        for i, decision in enumerate(plan.removals, start=1):
            outcome = _prune_one(i, decision, journal, plan.cache_dir)
            outcomes.append(outcome)
            if on_unit is not None:
                on_unit(outcome)
    return RunResult(journal.run_id, tuple(outcomes), 0, (), (), tuple(recovered))


def _begin(i: int, decision: Decision, journal: Journal, cache_dir: str) -> dict[str, Any]:
    unit = decision.unit
    by = aside.MANIFESTS if unit.store is StoreKind.OLLAMA else aside.SNAPSHOTS
    hub = unit.store is StoreKind.HF_CACHE
    return {
        "type": "begin",
        "action": i,
        "op": "prune",
        "target": unit.path,
        "unit": unit.kind,
        "store": unit.store.value,
        "name": unit.name,
        "repo_type": unit.repo_type,
        "cache_dir": cache_dir,
        "aside": fsops.temp_name(os.path.join(unit.root, "unit"), journal.run_id),
        "steps": [
            {"path": s.path, "dev": s.dev, "ino": s.ino, "dir": s.is_dir, "unused_in": s.unused_in, "named_by": by}
            for s in unit.steps
        ],
        # What undo downloads again: every revision the unit held (HF cache units only: other tools pull their own)
        "redownload": [{"commit": r.commit, "files": list(r.files), "refs": list(r.refs)} for r in unit.revisions]
        if hub
        else [],
        "last_used": decision.last_used,
    }


def _prune_one(i: int, decision: Decision, journal: Journal, cache_dir: str) -> Outcome:
    unit = decision.unit
    begin: dict[str, Any] | None = None
    try:
        with ExitStack() as held:
            for lock in unit_locks(unit):  # no download of it starts while it goes
                held.enter_context(holding(lock, BUSY))
            still_prunable(decision, cache_dir)
            begin = _begin(i, decision, journal, cache_dir)
            journal.append(begin)
            freed = aside.remove_unit(begin)
            journal.append({"type": "done", "action": i, "op": "prune"})
        return Outcome(i, unit.path, "done", "prune", freed=freed)
    except Skip as e:
        return Outcome(i, unit.path, "skipped", reason=str(e))
    except OSError as e:
        why = f"{reason(e)}: {display(e.filename or unit.path)}"
        if begin is None:
            journal.append({"type": "failed", "action": i, "target": unit.path, "reason": e.strerror})
            return Outcome(i, unit.path, "failed", reason=why)
        try:
            gone = aside.settle(begin)  # whole or nothing: finish what the first move began, or drop the folder
        except OSError:
            # Left open: the next command's recovery finishes it (the unit may be out of its tool's sight already).
            journal.append({"type": "failed", "action": i, "target": unit.path, "reason": e.strerror})
            return Outcome(i, unit.path, "failed", reason=f"{why}; the next modelcache run finishes it")
        journal.append({"type": "done" if gone else "abandoned", "action": i, "op": "prune"})
        if gone:
            return Outcome(i, unit.path, "done", "prune", f"done, then: {why}", decision.frees)
        return Outcome(i, unit.path, "failed", reason=why)


# -- undo ---------------------------------------------------------------------------------------------------


def undo_prune(i: int, change: dict[str, Any], journal: Journal) -> Outcome:
    """Download again every revision a pruned unit held, through huggingface_hub (into the cache it was in,
    reusing bytes still on this machine), and put back its refs where no ref of that name is there now."""
    from ..hub.fetch import download_snapshot
    from ..hub.names import repo_folder

    target, revisions = change["target"], change.get("redownload") or []
    if not revisions:
        raise Skip(f"{change.get('name')} was a {change.get('store')} model: undo downloads only from the Hub")
    failed = []
    for k, rev in enumerate(revisions, start=1):
        action = f"{i}:{k}"
        snapshot = os.path.join(change["cache_dir"], repo_folder(change["name"], change["repo_type"]))
        journal.append({"type": "begin", "action": action, "op": "redownload", "target": snapshot, "target_ino": None})
        try:
            download_snapshot(
                change["name"],
                revision=rev["commit"],
                repo_type=change["repo_type"],
                include=[glob.escape(f) for f in rev["files"]] or None,
                cache_dir=change["cache_dir"],
                progress=False,
            )
            for ref in rev["refs"]:
                path = os.path.join(snapshot, "refs", *ref.split("/"))
                if not os.path.lexists(path):
                    fsops.write_ref(path, rev["commit"], journal.run_id)
        except (ModelcacheError, OSError) as e:
            text = e.message if isinstance(e, ModelcacheError) else reason(e)
            journal.append({"type": "abandoned", "action": action, "reason": text})
            failed.append(f"{rev['commit'][:12]}: {text}")
            continue
        journal.append({"type": "done", "action": action, "op": "redownload"})
    if failed:
        journal.append({"type": "failed", "action": i, "target": target, "reason": failed[0]})
        return Outcome(i, target, "failed", reason=f"not downloaded again: {'; '.join(failed)}")
    return Outcome(i, target, "done", "redownload")

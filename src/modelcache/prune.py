"""`prune`: keep the caches within a budget by removing the models used least recently. Plans only.

The budget (at least one of):

- `max_size`: the caches' exclusive bytes end at or below it. Exclusive bytes are counted per inode,
  once, and leave out every inode that also has a name outside the caches (`st_nlink` above the names
  the scan saw): removing the cache's names of such a file frees nothing;
- `min_free`: the file system holding the HF cache ends with at least this much free (estimated from
  the apparent sizes of what goes, which a removal frees at least: blocks round up);
- `older_than`: every unit not used for this long goes.

The units (`prune_units.py`) are ordered least recently used first: the newest access time among the
model files of a unit (what `hf cache ls` shows as last accessed), its modification time where the
mount keeps no access times (`noatime`, FUSE), or its newest use recorded by `modelcache path` and
`download` (`uses.py`), whichever is later; ties broken by a detached revision before its repo, then
name and path. A unit goes when it is older than `older_than`, or while a size budget does not hold
and it frees bytes that budget counts. Kept, with the reason: pinned (`--keep`, config `keep`),
being downloaded, in use (open or memory-mapped), and, for a size budget, a unit that frees nothing
of its model files (all linked from elsewhere: its refs and file list alone are no reason to go).
A size budget that removing every unit that may go cannot reach makes the plan `unreachable`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from .inventory import FileRecord, Inventory, Role, inode_key
from .locations import StoreLocation
from .locks import held_lock_inodes
from .prune_units import (
    REPO,
    REVISION,
    Unit,
    atime_kept,
    busy,
    exclusive_inodes,
    hf_units,
    in_use,
    llamacpp_units,
    modelscope_units,
    ollama_units,
    pinned,
)
from .store_kind import StoreKind
from .uses import recorded_uses

BUILDERS = {"ollama": ollama_units, "modelscope": modelscope_units, "llamacpp": llamacpp_units}
PRUNABLE_STORES = tuple(BUILDERS)


@dataclass(frozen=True, slots=True)
class Budget:
    max_size: int | None = None  # bytes
    min_free: int | None = None  # bytes
    older_than: float | None = None  # seconds

    @property
    def sized(self) -> bool:
        return self.max_size is not None or self.min_free is not None


@dataclass(frozen=True)
class Decision:
    """What the plan does with one unit, and why."""

    unit: Unit
    last_used: float  # seconds since the epoch (0: no file to tell)
    clock: str  # what `last_used` was read from: "atime", "mtime (noatime mount /x)", "recorded use"
    files_used_ns: int  # the newest time of its files alone, as read for `last_used` (re-checked before it goes)
    by_atime: bool  # that time is an access time (else a modification time: the mount keeps no access times)
    remove: bool
    reason: str
    frees: int  # exclusive bytes its removal gives back, at its place in the order
    frees_here: int  # of which on the HF cache's file system (what `min_free` counts)


@dataclass(frozen=True)
class PrunePlan:
    budget: Budget
    cache_dir: str
    decisions: tuple[Decision, ...]  # least recently used first
    exclusive_before: int
    free_before: int | None  # None: the cache's file system could not be asked
    unreachable: str | None = None  # why the budget cannot be reached (then nothing is removed)
    created_at: float = field(default_factory=time.time)

    @property
    def removals(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.remove)

    @property
    def bytes_to_free(self) -> int:
        return sum(d.frees for d in self.removals)

    @property
    def exclusive_after(self) -> int:
        return self.exclusive_before - self.bytes_to_free

    @property
    def free_after(self) -> int | None:
        return None if self.free_before is None else self.free_before + sum(d.frees_here for d in self.removals)


def units_of(inventory: Inventory, cache_dir: str, stores: Sequence[StoreLocation] = ()) -> list[Unit]:
    """Every unit prune may remove: the HF cache's, and those of the other stores scanned (`stores`)."""
    by_repo: dict[str, list[FileRecord]] = defaultdict(list)
    for record in inventory.records:
        by_repo[record.repo_key].append(record)
    units = hf_units(inventory, by_repo, cache_dir, StoreKind.HF_CACHE)
    for store in stores:
        units += BUILDERS[store.kind.value](inventory, by_repo, store.path)
    return [u for u in units if u.steps]  # (a unit whose folder went since the scan has nothing left to remove)


def plan_prune(
    inventory: Inventory,
    cache_dir: str,
    budget: Budget,
    *,
    keep: Sequence[tuple[str, str]] = (),
    stores: Sequence[StoreLocation] = (),
    now: float | None = None,
    open_now: set[tuple[int, int]] | None = None,
) -> PrunePlan:
    """Decide which units go. Reads only: the scan, /proc (open and mapped files), the mount table, locks
    (probed, never taken), recorded uses and the free space of the cache's file system.

    `keep`: (glob, where it came from) pairs a unit's name must not match.
    """
    from .clean import open_files

    cache_dir = os.path.abspath(cache_dir)
    now = time.time() if now is None else now
    units = units_of(inventory, cache_dir, stores)
    open_now = open_files() if open_now is None else open_now
    held = held_lock_inodes()
    uses = recorded_uses(cache_dir)
    clocks = {root: atime_kept(root) for root in {u.root for u in units}}
    dated = [_dated(u, clocks[u.root], uses) for u in units]
    # Least recently used first; a detached revision before its repo, then by name and path.
    dated.sort(key=lambda d: (d.last_used, d.unit.kind != REVISION, d.unit.name, d.unit.path))
    names = exclusive_inodes(inventory.records)
    exclusive_before = _exclusive_bytes(inventory.records, names)
    try:
        cache_dev: int | None = os.stat(cache_dir).st_dev
        free_before: int | None = shutil.disk_usage(cache_dir).free
    except OSError:
        cache_dev = free_before = None
    ledger = _Ledger(names, cache_dev)
    exclusive, free = exclusive_before, free_before
    decisions = []
    for d in dated:
        unit = d.unit
        frees, here, models = ledger.gain(unit)
        kept = pinned(unit, keep) or busy(unit, open_now, held) or in_use(unit, open_now)
        need_size = budget.max_size is not None and exclusive > budget.max_size
        need_free = budget.min_free is not None and (free is None or free < budget.min_free)
        old = budget.older_than is not None and d.last_used < now - budget.older_than
        # Its metadata (refs, a file list) alone is no reason to remove a model whose weights stay on disk.
        helps = models > 0 and ((need_size and frees > 0) or (need_free and here > 0))
        if kept:
            d = replace(d, reason=kept)
        elif old:
            since = f"not used for {_age(now - d.last_used)}" if d.last_used else "no file tells when it was used"
            d = replace(d, remove=True, reason=f"{since} (--older-than)")
        elif helps:
            why = " and ".join(o for o, n in (("--max-size", need_size), ("--min-free", need_free)) if n)
            d = replace(d, remove=True, reason=f"least recently used, removed to meet {why}")
        elif need_size or need_free:
            d = replace(d, reason="frees nothing: its model files are also linked from elsewhere")
        else:
            d = replace(d, reason="the budget holds without removing it")
        if d.remove:
            ledger.take(unit)
            exclusive -= frees
            free = None if free is None else free + here
        decisions.append(replace(d, frees=frees, frees_here=here))
    decisions = _with_their_repos(decisions)
    plan = PrunePlan(budget, cache_dir, tuple(decisions), exclusive_before, free_before)
    return replace(plan, unreachable=_unreachable(plan))


def _dated(unit: Unit, atime_not_kept: str | None, uses: dict[tuple[str, str], float]) -> Decision:
    """`unit`, with when it was last used and what that was read from."""
    if atime_not_kept is None:
        newest, clock = max((r.atime_ns for r in unit.used_by), default=0), "atime"
    else:  # reads move no access time there: a download or update (the mtime) is what is known
        newest, clock = max((r.mtime_ns for r in unit.used_by), default=0), f"mtime ({atime_not_kept})"
    last_used = newest / 1e9
    folder = unit.repo_folder
    recorded = max((uses.get((folder, r.commit), 0.0) for r in unit.revisions), default=0.0) if folder else 0.0
    if recorded > last_used:
        last_used, clock = recorded, "recorded use"
    return Decision(unit, last_used, clock, newest, atime_not_kept is None, False, "", 0, 0)


def _exclusive_bytes(records: Sequence[FileRecord], names: dict[bytes, int]) -> int:
    """Sum of sizes over the inodes whose every name the scan saw (each once)."""
    total = 0
    seen: dict[bytes, int] = {}
    for r in records:
        if r.nlink == 1:
            total += r.size
        elif names.get(key := inode_key(r), 0) >= r.nlink:
            seen[key] = r.size
    return total + sum(seen.values())


class _Ledger:
    """Which names the plan has taken so far, per inode: a unit frees an inode when its removal takes the
    last of its names, and only an inode with no name outside the caches counts."""

    def __init__(self, names: dict[bytes, int], cache_dev: int | None) -> None:
        self.names = names
        self.cache_dev = cache_dev
        self.gone: set[int] = set()  # records the plan removes (ids: a revision's, then its repo's, each once)
        self.taken: dict[bytes, int] = defaultdict(int)  # inode -> names of it the plan removes
        self._last: tuple[Unit, tuple[list[FileRecord], dict[bytes, list[FileRecord]]]] | None = None

    def _new(self, unit: Unit) -> tuple[list[FileRecord], dict[bytes, list[FileRecord]]]:
        """The unit's records not taken yet: those of single-name files, and the others by inode (made once
        for `gain`, and used again by `take` of the same unit)."""
        if self._last is not None and self._last[0] is unit:
            return self._last[1]
        gone = self.gone
        single: list[FileRecord] = []
        shared: dict[bytes, list[FileRecord]] = defaultdict(list)
        for r in unit.files:
            if gone and id(r) in gone:
                continue
            if r.nlink == 1:
                single.append(r)
            else:
                shared[inode_key(r)].append(r)
        self._last = (unit, (single, shared))
        return single, shared

    def gain(self, unit: Unit) -> tuple[int, int, int]:
        """(exclusive bytes its removal frees, of which on the cache's file system, of which model files),
        given what goes before it."""
        single, shared = self._new(unit)
        freed: list[FileRecord] = list(single)
        for key, records in shared.items():
            r = records[0]
            if self.names.get(key, 0) >= r.nlink and self.taken[key] + len(records) >= r.nlink:
                freed.append(r)
        dev = self.cache_dev
        return (
            sum(r.size for r in freed),
            sum(r.size for r in freed if r.dev == dev),
            sum(r.size for r in freed if r.role is Role.MODEL),
        )

    def take(self, unit: Unit) -> None:
        single, shared = self._new(unit)
        self._last = None
        self.gone.update(id(r) for r in single)
        for key, records in shared.items():
            self.taken[key] += len(records)
            self.gone.update(id(r) for r in records)


def _with_their_repos(decisions: list[Decision]) -> list[Decision]:
    """A detached revision kept while its repo goes goes with it: said so, and not acted on by itself."""
    leaving = {d.unit.path for d in decisions if d.remove and d.unit.kind == REPO}
    return [
        replace(d, reason=f"goes with its repo ({d.reason})", frees=0, frees_here=0)
        if not d.remove and d.unit.parent in leaving
        else d
        for d in decisions
    ]


def _unreachable(plan: PrunePlan) -> str | None:
    """Why a size budget does not hold even after every removal the plan makes (each unit that may go
    and frees what the budget counts), or None."""
    budget = plan.budget
    kept = [d for d in plan.decisions if not d.remove and d.reason.startswith(("pinned", "being", "in use"))]
    why = f" ({len(kept)} kept: pinned, being downloaded or in use)" if kept else ""
    if budget.max_size is not None and plan.exclusive_after > budget.max_size:
        return (
            f"--max-size {budget.max_size:,} bytes cannot be reached: the caches hold {plan.exclusive_before:,} "
            f"bytes of their own, and removing every model that may go leaves {plan.exclusive_after:,}{why}; "
            "nothing removed"
        )
    free = plan.free_after
    if budget.min_free is not None and free is None:
        return f"--min-free cannot be checked: the free space of {plan.cache_dir} cannot be read; nothing removed"
    if budget.min_free is not None and free is not None and free < budget.min_free:
        return (
            f"--min-free {budget.min_free:,} bytes cannot be reached: the file system of {plan.cache_dir} would have "
            f"{free:,} bytes free after removing every model that may go{why}; nothing removed"
        )
    return None


def _age(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.0f} days" if days >= 2 else f"{seconds / 3600:.0f} hours"

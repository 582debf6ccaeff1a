"""The commands that change files, as scenarios for tests/faults.py: a machine made by the real
huggingface_hub client through LocalHub, the command, and what must hold after it with a fault at
any one writer call of fsops.

- `Consolidate`: consolidate then undo on a property-test machine (tests/strategies.py): nothing
  lost, no temporary file, and undo gives back the exact tree.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcache.act.consolidate import execute
from modelcache.act.fsops import leftover_temp_files
from modelcache.act.journal import iter_open_changes, read_records, runs
from modelcache.act.recover import recover
from modelcache.act.results import RunResult
from modelcache.act.undo import undo
from modelcache.digests import DigestIndex
from modelcache.duplicates import find_duplicates
from modelcache.errors import ModelcacheError
from modelcache.inventory import StoreKind
from modelcache.locations import Location, StoreLocation
from modelcache.plan import Mode, fs_types_of, plan_consolidate
from modelcache.scan import scan_locations

from .faults import Faults
from .machine import assert_same_tree, snapshot_tree
from .strategies import Machine as PropMachine
from .strategies import Spec, build, contents

Contents = dict[str, tuple[str, bytes | None]]
TWO_DAYS = 2 * 86400


@contextmanager
def use_state(state: Path) -> Iterator[Path]:
    """modelcache's state folder and digest index at `state` for the block, then as they were."""
    saved = {k: os.environ.get(k) for k in ("MODELCACHE_STATE", "MODELCACHE_INDEX")}
    os.environ["MODELCACHE_STATE"] = str(state)
    os.environ["MODELCACHE_INDEX"] = str(state / "digests.sqlite")
    try:
        yield state
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def relative_contents(**roots: Path) -> Contents:
    """`contents` of each root, keyed `<name>/<path under it>` (machines at other places compare)."""
    found: Contents = {}
    for name, root in roots.items():
        found |= {name + path[len(str(root)) :]: value for path, value in contents(root).items()}
    return found


def assert_journal_closed() -> None:
    """Every journaled run has ended and left no change open."""
    for run in runs():
        open_changes = list(iter_open_changes(read_records(run.path)))
        assert run.finished and not open_changes, (run.run_id, run.status, open_changes)


# -- consolidate, then undo ---------------------------------------------------------------------------------


def scan_and_plan(m: PropMachine, mode: Mode) -> Any:
    stores = [StoreLocation(StoreKind(kind), str(path), "--store") for kind, path in m.stores.items()]
    inventory = scan_locations(Location(str(m.cache), "test"), [Location(str(m.models), "test")], stores)
    index = DigestIndex(m.state / "digests.sqlite")
    try:
        result = find_duplicates(inventory.records, index)
    finally:
        index.close()
    devices = {r.facts.dev for r in inventory.records}
    return inventory, result, plan_consolidate(inventory, result.groups, mode, fs_types_of(devices))


# Copies of cache files in the model folders; the first is older than its cache blob, so that a hard link
# lowers the blob's mtime (`set_mtime`), and every hard link protects the blob's mode (`set_mode`).
EXTRAS = [("copy", "A", "a.bin", "plain"), ("copy", "B", "b.bin", "deep/er"), ("copy", "SMALL", "c.json", "one")]


def consolidate_machine(template: Path, where: Path | None = None) -> PropMachine:
    """A property-test machine with `EXTRAS` (under `where`, else a new temp folder)."""
    m = build(template, Spec(extras=EXTRAS), where)
    then = time.time() - TWO_DAYS
    os.utime(m.models / "plain" / "0-a.bin", (then, then))
    return m


@dataclass
class Consolidate:
    """consolidate in `mode`, then undo, on one machine (put back by undo after every run)."""

    m: PropMachine
    mode: Mode
    before: Contents = field(init=False)
    before_tree: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.before = contents(self.m.cache, self.m.models)
        self.before_tree = snapshot_tree(self.m.cache, self.m.models)

    def fresh(self, label: str) -> PropMachine:
        return self.m

    def act(self, m: PropMachine) -> RunResult:
        with use_state(m.state):
            *_, plan = scan_and_plan(m, self.mode)
            return execute(plan)

    def check(self, m: PropMachine, outcome: RunResult | ModelcacheError, fault: Faults | None) -> None:
        # A run-wide fault (the journal's folder flush) is a one-line error before any change.
        with use_state(m.state):
            recover()
            assert_journal_closed()
            after = contents(m.cache, m.models)
            for path, (_kind, data) in self.before.items():
                if os.path.lexists(path) and data is not None:
                    assert after[path][1] == data, (fault, path)
            assert not leftover_temp_files([m.cache, m.models]), fault
            if isinstance(outcome, RunResult) and any(o.status == "done" for o in outcome.outcomes):
                undo(outcome.run_id)
        assert contents(m.cache, m.models) == self.before, fault
        assert_same_tree(self.before_tree, snapshot_tree(m.cache, m.models))

    def done(self, m: PropMachine) -> None:
        pass

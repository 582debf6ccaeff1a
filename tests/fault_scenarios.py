"""The commands that change files, as scenarios for tests/faults.py: a machine made by the real
huggingface_hub client through LocalHub, the command, and what must hold after it with a fault at
any one writer call of fsops.

- `Consolidate`: consolidate then undo on a property-test machine (tests/strategies.py): nothing
  lost, no temporary file, and undo gives back the exact tree.
- `Download`: `download_snapshot` of a branch (so the ref is written) that reuses bytes already on
  the machine (hard links, copies from another file system, clones on XFS).
- `Clean`: `execute_clean` of a `plan_clean(revisions=True, min_age=0)` plan, on a cache holding every
  kind of garbage.
- `PlanOut`: `consolidate --dry-run --plan-out`, in-process through the CLI's `main`.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import io
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from modelcache.act.clean import execute_clean
from modelcache.act.consolidate import execute
from modelcache.act.fsops import leftover_temp_files
from modelcache.act.journal import iter_open_changes, read_records, runs
from modelcache.act.recover import recover
from modelcache.act.results import RunResult
from modelcache.act.undo import undo
from modelcache.clean import CleanPlan, plan_clean
from modelcache.digests import DigestIndex
from modelcache.download import DownloadResult, download_snapshot
from modelcache.duplicates import find_duplicates
from modelcache.errors import ModelcacheError
from modelcache.locations import Location, StoreLocation
from modelcache.plan import Mode, fs_types_of, plan_consolidate, read_plan
from modelcache.scan import scan, scan_locations
from modelcache.store_kind import StoreKind
from modelcache.testing import LocalHub
from modelcache.testing.builders import (
    client_env,
    download_to_cache,
    download_to_local_dir,
    random_bytes,
    write_tree,
)

from .faults import Faults
from .machine import Machine, Result, assert_same_tree, snapshot_tree
from .strategies import Machine as PropMachine
from .strategies import Spec, build, contents

Contents = dict[str, tuple[str, bytes | None]]
TWO_DAYS = 2 * 86400


@contextmanager
def use_state(state: Path) -> Iterator[Path]:
    """modelcache's state folder and digest index at `state` for the block, then as they were."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELCACHE_STATE", str(state))
        mp.setenv("MODELCACHE_INDEX", str(state / "digests.sqlite"))
        yield state


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
        with use_state(m.state):
            recover()
            assert_journal_closed()
            after = contents(m.cache, m.models)
            for path, (_kind, data) in self.before.items():
                if os.path.lexists(path) and data is not None:
                    assert after[path][1] == data, (fault, path)
            assert not leftover_temp_files([m.cache, m.models]), fault
            # (a ModelcacheError: a run-wide fault, as the journal's folder flush, before any change)
            if isinstance(outcome, RunResult) and any(o.status == "done" for o in outcome.outcomes):
                undo(outcome.run_id)
        assert contents(m.cache, m.models) == self.before, fault
        assert_same_tree(self.before_tree, snapshot_tree(m.cache, m.models))

    def done(self, m: PropMachine) -> None:
        pass


# -- download, reusing bytes on this machine -----------------------------------------------------------------

W = random_bytes(300_000, "faults-weights")  # LFS: in the cache, as another repo's blob
ADAPTER = random_bytes(120_000, "faults-adapter")  # LFS: in a plain folder
TOKENIZER = random_bytes(15_000, "faults-tokenizer").hex().encode()  # not LFS (git blob sha1): in a local_dir copy
FT = {"model.safetensors": W, "adapter.safetensors": ADAPTER, "tokenizer.json": TOKENIZER, "config.json": b"{}"}


def build_download_template(hub: LocalHub, root: Path, tag: str) -> Path:
    """Fill `hub` with `<tag>/base` (weights W), `<tag>/tok` (TOKENIZER) and `<tag>/ft` (all of `FT`), and
    download: `<tag>/base` into `root/cache`, `<tag>/tok` as a local_dir copy into `root/models/tok`; and
    ADAPTER in the plain folder `root/models/finetune`. `<tag>/ft` is only on the Hub."""
    hub.add_commit(f"{tag}/base", {"model.safetensors": W, "config.json": b'{"base": 1}'})
    hub.add_commit(f"{tag}/tok", {"tokenizer.json": TOKENIZER})
    hub.add_commit(f"{tag}/ft", FT)
    with client_env():
        download_to_cache(hub, f"{tag}/base", root / "cache")
        download_to_local_dir(hub, f"{tag}/tok", root / "models" / "tok", root / "scratch")
    shutil.rmtree(root / "scratch")
    write_tree(root / "models" / "finetune", {"adapter.safetensors": ADAPTER})
    (root / "state").mkdir()
    return root


@dataclass(frozen=True)
class DownloadMachine(Machine):
    """A machine whose model folders may be elsewhere (`models_at`: on another file system)."""

    models_at: Path | None = None

    @property
    def models(self) -> Path:
        return self.models_at or super().models


def assert_blobs_hold_their_names(cache: Path) -> None:
    """Every file in a `blobs/` folder of the cache holds the bytes its name says (sha256, or the git
    blob sha1 of a small file): nothing half-written, nothing partial left."""
    for blobs in cache.glob("*/blobs"):
        for blob in blobs.iterdir():
            data = blob.read_bytes()
            digest = (
                hashlib.sha256(data).hexdigest()
                if len(blob.name) == 64
                else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            )
            assert digest == blob.name, blob


@dataclass
class Download:
    """`download_snapshot(<tag>/ft, revision="main", models=[...])` into a copy of `template`, the model
    folders at `models_at` (another file system) or beside the cache. `methods`: how the unfaulted run
    must place the reused blobs (by file)."""

    hub: LocalHub
    template: Path
    tag: str
    where: Path
    methods: dict[str, str]
    models_at: Path | None = None

    @cached_property
    def before(self) -> Contents:
        return relative_contents(cache=self.template / "cache", models=self.template / "models")

    def fresh(self, label: str) -> DownloadMachine:
        m = DownloadMachine(self.template).copy(self.where / label)
        if self.models_at is None:
            return m
        shutil.move(m.models, self.models_at / label)
        return dataclasses.replace(m, models_at=self.models_at / label)

    def act(self, m: DownloadMachine) -> DownloadResult:
        self.hub.clear_log()
        with use_state(m.state):
            return download_snapshot(
                f"{self.tag}/ft",
                revision="main",
                cache_dir=m.cache,
                endpoint=self.hub.url,
                token=False,
                models=[str(m.models)],
                progress=False,
            )

    def check(self, m: DownloadMachine, outcome: DownloadResult | ModelcacheError, fault: Faults | None) -> None:
        if fault is None:
            assert isinstance(outcome, DownloadResult), outcome
            assert {r.path: r.method for r in outcome.reused} == self.methods
        if isinstance(outcome, DownloadResult):  # the report says what crossed the network, and what did not
            served = sum(r.bytes_sent for r in self.hub.request_log if r.method == "GET" and "/resolve/" in r.path)
            assert outcome.bytes_downloaded == served, (fault, outcome)
            assert outcome.bytes_reused + served + outcome.bytes_present == outcome.bytes_total, (fault, outcome)
        after = relative_contents(cache=m.cache, models=m.models)
        for path, value in self.before.items():
            assert after.get(path) == value, (fault, path)  # every source keeps its bytes
        assert_blobs_hold_their_names(m.cache)
        assert not leftover_temp_files([m.cache, m.models]), fault
        again = self.act(m)  # without a fault, it completes
        snapshot = Path(again.path)
        for rel, content in FT.items():
            assert (snapshot / rel).read_bytes() == content, (fault, rel)
        folder = m.cache / f"models--{self.tag}--ft"
        assert (folder / "refs" / "main").read_text() == again.commit
        assert_blobs_hold_their_names(m.cache)

    def done(self, m: DownloadMachine) -> None:
        shutil.rmtree(m.root)
        if self.models_at is not None:
            shutil.rmtree(m.models)


# -- clean ---------------------------------------------------------------------------------------------------

SHARED = random_bytes(60_000, "faults-shared")
OLD_ONLY = random_bytes(40_000, "faults-old")  # its blob only the detached revision uses
KEEP = random_bytes(50_000, "faults-keep")


def build_clean_template(hub: LocalHub, root: Path, tag: str) -> Path:
    """A cache with every kind of garbage `clean --revisions` removes: a detached revision (`<tag>/d` at its
    first commit: its snapshot folder, file list, markers and a blob only it uses), an interrupted download, stale
    locks (as huggingface_hub leaves them), an orphan blob, a dangling ref, empty folders, and a local_dir
    download with a partial file and a stale lock."""
    cache, models = root / "cache", root / "models"
    first = hub.add_commit(f"{tag}/d", {"shared.safetensors": SHARED, "old.safetensors": OLD_ONLY, "config.json": b""})
    hub.add_commit(f"{tag}/keep", {"model.safetensors": KEEP, "config.json": b'{"keep": 1}'})
    hub.add_commit(f"{tag}/ld", {"model.safetensors": random_bytes(30_000, "faults-ld"), "config.json": b"{}"})
    with client_env():
        download_to_cache(hub, f"{tag}/d", cache)
        hub.add_commit(f"{tag}/d", {"shared.safetensors": SHARED, "config.json": b'{"v": 2}'})
        download_to_cache(hub, f"{tag}/d", cache)  # refs/main moves on: the first commit is detached
        download_to_cache(hub, f"{tag}/keep", cache)
        download_to_local_dir(hub, f"{tag}/ld", models / "ld", root / "scratch")
    shutil.rmtree(root / "scratch")
    keep = cache / f"models--{tag}--keep"
    orphan = random_bytes(20_000, "faults-orphan")
    partial = hashlib.sha256(b"faults-partial").hexdigest()
    write_tree(root, {
        f"cache/{keep.name}/blobs/{partial}.1a2b3c4d.incomplete": KEEP[:30_000],  # as a killed download leaves it
        f"cache/{keep.name}/blobs/{hashlib.sha256(orphan).hexdigest()}": orphan,
        f"cache/{keep.name}/refs/pr/1": b"f" * 40,
        f"cache/models--{tag}--d/.no_exist/{first}/generation_config.json": b"",  # a file asked for, not in it
        f"models/ld/.cache/huggingface/download/AAAAAAAAAAAAAAAAAAAAAAAAAAA=.{partial}.incomplete": KEEP[:20_000],
        "models/ld/.cache/huggingface/download/model.safetensors.lock": b"",
    })  # fmt: skip
    (cache / f"models--{tag}--gone" / "snapshots").mkdir(parents=True)  # as `hf cache rm` can leave a repo
    (cache / ".locks" / f"models--{tag}--gone").mkdir(parents=True)
    (root / "state").mkdir()
    return root


@dataclass(frozen=True)
class CleanMachine(Machine):
    plan: CleanPlan | None = None  # what clean found there


def plan_for(root: Path) -> CleanPlan:
    with use_state(root / "state"):
        inventory = scan(cache_dir=root / "cache", models=[str(root / "models")])
        return plan_clean(inventory, str(root / "cache"), min_age=0, revisions=True)


def clean_now(m: CleanMachine, plan: CleanPlan | None = None) -> RunResult:
    with use_state(m.state):
        return execute_clean(plan or plan_for(m.root), str(m.cache))


@dataclass
class Clean:
    """`execute_clean` of the plan `plan_clean(revisions=True, min_age=0)` makes for a copy of `template`."""

    template: Path
    where: Path

    @cached_property
    def garbage(self) -> set[str]:
        """What the plan removes, as `relative_contents` keys (folders with everything in them)."""
        removed = [item for item in plan_for(self.template).items if item.fix != "keep"]
        assert {item.kind for item in removed} >= KINDS
        found = set()
        for item in removed:
            rel = os.path.relpath(item.path, self.template)
            found.add(rel)
            if item.is_dir:
                found |= {k for k in self.before if k.startswith(rel + os.sep)}
        return found

    @cached_property
    def before(self) -> Contents:
        return relative_contents(cache=self.template / "cache", models=self.template / "models")

    @cached_property
    def cleaned(self) -> Contents:
        """The end state of a clean without faults on an identical machine."""
        m = self.fresh("reference")
        clean_now(m, m.plan)
        return relative_contents(cache=m.cache, models=m.models)

    def fresh(self, label: str) -> CleanMachine:
        m = CleanMachine(self.template).copy(self.where / label)
        return dataclasses.replace(m, plan=plan_for(m.root))

    def act(self, m: CleanMachine) -> RunResult:
        return clean_now(m, m.plan)

    def check(self, m: CleanMachine, outcome: RunResult | ModelcacheError, fault: Faults | None) -> None:
        if fault is None:
            assert isinstance(outcome, RunResult) and {o.status for o in outcome.outcomes} == {"done"}, outcome
        for o in outcome.outcomes if isinstance(outcome, RunResult) else ():
            assert os.path.lexists(o.target) == (o.status != "done"), (fault, o)  # the report says what the disk does
        self.settles(m, fault)

    def settles(self, m: CleanMachine, why: object) -> None:
        """After a run stopped by `why` (a fault, a kill): what is not garbage keeps its bytes, every kept
        revision loads, recovery closes the journal, and a clean without faults ends where one never
        stopped does."""
        fault = why
        after = relative_contents(cache=m.cache, models=m.models)
        for path, value in self.before.items():
            if path not in self.garbage and value[0] != "dir":
                assert after.get(path) == value, (fault, path)  # not garbage: kept, bytes and all
        for snapshot in m.cache.glob("*/snapshots/*"):
            if os.path.relpath(snapshot, m.root) not in self.garbage:
                for link in snapshot.rglob("*"):
                    assert link.exists(), (fault, link)  # a kept revision still loads
        with use_state(m.state):
            recover()
            assert_journal_closed()
        clean_now(m)  # again, without a fault: the same end as a clean that never failed
        assert relative_contents(cache=m.cache, models=m.models) == self.cleaned, fault

    def done(self, m: CleanMachine) -> None:
        shutil.rmtree(m.root)


KINDS = {"detached-revision", "orphan-blob", "incomplete", "stale-lock", "dangling-ref", "empty-dir",
         "local-incomplete", "local-stale-lock"}  # fmt: skip


# -- consolidate --plan-out ----------------------------------------------------------------------------------

OLD_PLAN = b'{"an": "older plan"}'


def main(*args: str) -> Result:
    """The CLI's `main`, in this process (so that faults reach it), its output captured."""
    from modelcache.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            cli_main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        gc.enable()  # main turns the collector off for its one pass
    return Result(code, out.getvalue(), err.getvalue())


@dataclass
class PlanOut:
    """`consolidate --dry-run --plan-out PLAN` where PLAN holds an older plan."""

    template: Path

    def fresh(self, label: str) -> PropMachine:
        m = consolidate_machine(self.template)
        (m.root / "plans").mkdir()
        (m.root / "plans" / "plan.json").write_bytes(OLD_PLAN)
        return m

    def act(self, m: PropMachine) -> Result:
        with use_state(m.state):
            return main("consolidate", "--dry-run", "--plan-out", str(m.root / "plans" / "plan.json"), *m.where())

    def check(self, m: PropMachine, outcome: Result | ModelcacheError, fault: Faults | None) -> None:
        assert isinstance(outcome, Result), outcome
        assert "Traceback" not in outcome.err + outcome.out, outcome.err
        plan = m.root / "plans" / "plan.json"
        if fault is None:
            assert outcome.code == 0, outcome.err
            assert read_plan(plan).actions
        else:
            assert outcome.code == 2, outcome
            assert outcome.err.startswith("modelcache: error: cannot write plan ") and outcome.err.count("\n") == 1
            # the older plan, or (a failed flush after the rename) the whole new one: never a part
            assert plan.read_bytes() == OLD_PLAN or read_plan(plan).actions, fault
        assert os.listdir(plan.parent) == ["plan.json"] and not leftover_temp_files([plan.parent]), fault

    def done(self, m: PropMachine) -> None:
        m.cleanup()

"""A fault at every writer call of each command that changes files: nothing is lost, nothing is left
half-done, and the error is one line (tests/faults.py injects; tests/fault_scenarios.py holds the
scenarios and what must hold after them).

- download reusing bytes on this machine: hard links (one file system), copies (sources on a tmpfs),
  clones (XFS), and the ref it writes;
- clean, on a cache holding every kind of garbage;
- consolidate --plan-out;
- consolidate on XFS (reflinks; the other modes are swept in test_properties.py).

Then the harness on its own, and the coverage: the set of writers at which a fault fires here is the
set of fsops writers (found by introspection), each reached by one scenario and faulted at a call
that works unfaulted. The tmpfs and XFS machines need root (mount); without it those tests skip,
saying why.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from modelcache.act import fsops
from modelcache.act.prune import execute_prune
from modelcache.plan import Mode
from modelcache.testing import LocalHub

from .fault_scenarios import (
    Clean,
    CleanMachine,
    Consolidate,
    Download,
    PlanOut,
    build_clean_template,
    build_download_template,
    consolidate_machine,
    relative_contents,
    use_state,
)
from .faults import WRITERS, baseline, inject, run_once, sweep
from .filesystems import xfs_image
from .machine import Machine, Result, as_unprivileged, small_tmpfs
from .prune_machine import SWEEP_ARGS, Prune, PruneMachine
from .prune_machine import build_template as build_prune_template

DL = "fd"  # the download scenarios' repos: fd/base, fd/tok, fd/ft
# A blob of another repo is hard-linked; a plain folder's and a local_dir's copies are copied (their next steps
# write them in place), on the same file system too.
SAME_FS = {"model.safetensors": "hardlink", "adapter.safetensors": "copy", "tokenizer.json": "copy"}


# -- machines, built once per module -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def download_template(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_download_template(hub, tmp_path_factory.mktemp("download-template"), DL)


@pytest.fixture(scope="module")
def download(hub: LocalHub, download_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Download:
    """Every reused file on the cache's file system: hard linked (ext4 and the like cannot clone)."""
    return Download(hub, download_template, DL, tmp_path_factory.mktemp("download"), SAME_FS)


@pytest.fixture(scope="module")
def other_fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with small_tmpfs(tmp_path_factory.mktemp("tmpfs") / "mount", "64m", "cannot mount a tmpfs for the sources") as fs:
        yield fs


@pytest.fixture(scope="module")
def download_other_fs(
    hub: LocalHub, download_template: Path, other_fs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Download:
    """The model folders on another file system: their files are copied in (`copy_to`) across it; the other repo's
    blob in the cache is still hard linked."""
    methods = SAME_FS  # the same as beside the cache: the other repo's blob linked, the copies copied
    return Download(hub, download_template, DL, tmp_path_factory.mktemp("download-other-fs"), methods, other_fs)


@pytest.fixture(scope="module")
def xfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with xfs_image(tmp_path_factory.mktemp("xfs")) as mount:
        yield mount


@pytest.fixture(scope="module")
def download_xfs(hub: LocalHub, download_template: Path, xfs: Path) -> Download:
    """Cache and model folders on XFS: every reused file is cloned (`clone_new`)."""
    (xfs / "download").mkdir()
    return Download(hub, download_template, DL, xfs / "download", dict.fromkeys(SAME_FS, "reflink"))


@pytest.fixture(scope="module")
def clean(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Clean:
    template = build_clean_template(hub, tmp_path_factory.mktemp("clean-template"), "fc")
    return Clean(template, tmp_path_factory.mktemp("clean"))


@pytest.fixture(scope="module")
def prune(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Prune:
    template = build_prune_template(hub, tmp_path_factory.mktemp("prune-template"))
    return Prune(template, tmp_path_factory.mktemp("prune"))


@pytest.fixture(scope="module")
def plan_out(template: Path) -> PlanOut:
    return PlanOut(template)


def consolidating(template: Path, mode: Mode, where: Path | None = None) -> Iterator[Consolidate]:
    m = consolidate_machine(template, where)
    yield Consolidate(m, mode)
    m.cleanup()


@pytest.fixture(scope="module")
def consolidate_hardlink(template: Path) -> Iterator[Consolidate]:
    """Hard links: the kept blob's mtime lowered and its mode protected (auto, as root on a file system that
    cannot clone, leaves the local copies alone: `hardlink` is what it did before)."""
    yield from consolidating(template, Mode.HARDLINK)


@pytest.fixture(scope="module")
def consolidate_symlink(template: Path) -> Iterator[Consolidate]:
    yield from consolidating(template, Mode.SYMLINK)


@pytest.fixture(scope="module")
def consolidate_xfs(template: Path, xfs: Path) -> Iterator[Consolidate]:
    """On XFS, `auto` clones (`reflink`)."""
    yield from consolidating(template, Mode.AUTO, xfs)


# -- the sweeps ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["download", "download_other_fs"])
def test_a_fault_at_every_write_of_a_download_loses_nothing(variant: str, request: pytest.FixtureRequest) -> None:
    swept = sweep(request.getfixturevalue(variant))
    assert {"make_dirs", "hardlink", "place_new", "write_ref", "write_new", "replace"} <= swept.fired_ops
    assert "copy_to" in swept.fired_ops or variant == "download"


def test_a_fault_at_every_removal_of_clean_loses_nothing(clean: Clean) -> None:
    swept = sweep(clean)
    assert {"remove", "remove_entry", "remove_dir", "fsync_dir"} <= swept.fired_ops


CLEAN_ALL = ("clean", "--yes", "--revisions", "--older-than", "0", "--no-discover")
KILL_AFTER = "MODELCACHE_TEST_KILL_AFTER_RECORDS"  # act/journal.py: the process SIGKILLs itself after N records
M = TypeVar("M", bound=Machine)


class Copies(Protocol[M]):
    """A scenario that makes fresh machines from its template under `where` (Clean, Prune)."""

    where: Path

    def fresh(self, label: str) -> M: ...

    def done(self, m: M) -> None: ...


def killed_after_every_record(
    scenario: Copies[M],
    unprivileged: bool,
    shared_tmp: Path,
    run: Callable[[M, str | None, dict[str, str]], Result],
    whole: Callable[[M], None],
    settles: Callable[[M, str, str | None], None],
) -> int:
    """The CLI (`run(m, user, env)`) on fresh machines of `scenario`, as root, or (`unprivileged`) as nobody on
    machines of nobody's where nobody can reach them (`shared_tmp`): once whole (`whole` checks where it ends),
    then SIGKILLed after each record of its journal, each on a machine of its own that `settles(m, why, user)`
    then checks. Returns how many records the whole run wrote."""
    if unprivileged:
        scenario = dataclasses.replace(scenario, where=shared_tmp)  # type: ignore[type-var]  # Clean, Prune: dataclasses

    def fresh(label: str) -> tuple[M, str | None]:
        m = scenario.fresh(f"{unprivileged}-{label}")
        return m, as_unprivileged(m) if unprivileged else None

    m, user = fresh("whole")
    done = run(m, user, {})
    assert done.code == 0, done.err + done.out
    whole(m)
    (journal,) = (m.state / "journal").glob("*.jsonl")
    records = len(journal.read_text().splitlines())
    scenario.done(m)
    for n in range(1, records):
        m, user = fresh(f"kill-{n}")
        killed = run(m, user, {KILL_AFTER: str(n)})
        assert killed.code == -signal.SIGKILL, (n, killed.err)
        settles(m, f"killed after record {n} of {records}", user)
        scenario.done(m)
    return records


@pytest.mark.parametrize("unprivileged", [False, True], ids=["root", "nobody"])
def test_clean_killed_after_every_journal_record_loses_nothing(
    clean: Clean, unprivileged: bool, shared_tmp: Path
) -> None:
    """SIGKILL after each journal record of `clean --revisions`, run by the CLI as root or as nobody on a
    machine of nobody's: then nothing that is not garbage has lost a byte, every kept revision loads,
    and the next clean recovers and ends where an unkilled one does."""

    def run(m: CleanMachine, user: str | None, env: dict[str, str]) -> Result:
        return m.cli(*CLEAN_ALL, *m.roots(), user=user, env=env)

    def whole(m: CleanMachine) -> None:
        assert relative_contents(cache=m.cache, models=m.models) == clean.cleaned  # the CLI's clean is the same

    killed_after_every_record(clean, unprivileged, shared_tmp, run, whole, lambda m, why, _: clean.settles(m, why))


def test_a_fault_at_every_removal_of_prune_loses_nothing(prune: Prune) -> None:
    """A repo folder, a detached revision (snapshot, file list, its own blobs) and an Ollama model (manifest,
    its own blob), each moved aside whole then removed: a fault at any call leaves each whole or gone."""
    swept = sweep(prune)
    assert {"make_dirs", "move_aside", "remove_entry", "remove_dir", "fsync_dir"} <= swept.fired_ops


@pytest.mark.parametrize("unprivileged", [False, True], ids=["root", "nobody"])
def test_prune_killed_after_every_journal_record_loses_nothing(
    prune: Prune, unprivileged: bool, shared_tmp: Path
) -> None:
    """SIGKILL after each journal record of `prune --yes` (three units: a repo, a detached revision, an Ollama
    model), run by the CLI as root or as nobody on a machine of nobody's: each unit is whole or gone, no
    snapshot names a missing blob, and recovery and the next prune end where an unkilled one does."""

    def run(m: PruneMachine, user: str | None, env: dict[str, str]) -> Result:
        return m.prune(*SWEEP_ARGS, "--store", f"ollama={m.ollama}", "--yes", user=user, env=env)

    def settles(m: PruneMachine, why: str, user: str | None) -> None:
        def again(m: PruneMachine) -> None:
            done = run(m, user, {})
            assert done.code == 0, done.err + done.out

        prune.settles(m, why, again)

    def whole(m: PruneMachine) -> None:
        assert prune.pruned == m.contents()  # the CLI's prune is the same

    records = killed_after_every_record(prune, unprivileged, shared_tmp, run, whole, settles)
    assert records == 8  # run, three times begin and done, end


class Crash(BaseException):
    """The process stops here, as a SIGKILL would stop it: no error handling runs (a BaseException)."""


def test_prune_stopped_at_every_writer_call_leaves_each_unit_whole_or_gone(prune: Prune) -> None:
    """Finer than the journal's records: the run stops at each call of fsops it makes (the calls between a
    unit's `begin` and `done`: its folder made, each entry moved aside, the folder removed entry by entry),
    with no error handling run; then each unit is whole or gone as its tool sees it, and recovery finishes
    or rolls back each to all of it or none."""

    def stopped(m: PruneMachine, at: int) -> int:
        """Run the plan for `m`, stopping it at its `at`-th call of fsops (0: never); the calls it made."""
        plan = prune.plan(m)
        seen = 0

        def stop_at(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                nonlocal seen
                seen += 1
                if seen == at:
                    raise Crash(f"{name} at call {at}")
                return fn(*args, **kwargs)

            return call

        with pytest.MonkeyPatch.context() as mp, use_state(m.state):
            for name in WRITERS:
                mp.setattr(fsops, name, stop_at(name, getattr(fsops, name)))
            try:
                execute_prune(plan)
            except Crash:
                assert at
            else:
                assert not at
        return seen

    m = prune.fresh("count")
    calls = stopped(m, 0)
    prune.done(m)
    assert calls > 20
    for n in range(1, calls + 1):
        m = prune.fresh(f"stop-{n}")
        stopped(m, n)
        prune.settles(m, f"stopped at call {n} of {calls}", prune.act)
        prune.done(m)


def test_a_fault_at_every_write_of_a_plan_leaves_no_part_of_it(plan_out: PlanOut) -> None:
    swept = sweep(plan_out)
    assert swept.clean.ops == ["write_durably", "write_new", "replace", "fsync_dir"]


@pytest.mark.parametrize(("variant", "clone"), [("download_xfs", "clone_new"), ("consolidate_xfs", "reflink")])
def test_a_fault_at_every_write_on_xfs_loses_nothing(variant: str, clone: str, request: pytest.FixtureRequest) -> None:
    swept = sweep(request.getfixturevalue(variant))
    assert clone in swept.fired_ops and clone in [c.op for c in swept.clean.calls if c.outcome == "ok"]


# -- the harness itself -----------------------------------------------------------------------------------------


def test_a_fault_fails_the_call_it_names_and_says_where(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    with inject(op="remove", nth=2, code=errno.EROFS) as fault:
        fsops.make_dirs(str(tmp_path / "d"))
        fsops.remove(str(tmp_path / "a"))  # the first remove runs (and flushes its folder)
        (tmp_path / "b").write_bytes(b"b")
        with pytest.raises(OSError) as raised:
            fsops.remove(str(tmp_path / "b"))
    assert raised.value.errno == errno.EROFS and raised.value.filename == str(tmp_path / "b")
    assert fault.ops == ["make_dirs", "remove", "fsync_dir", "remove"] and fault.fired_at == 4
    assert [c.outcome for c in fault.calls] == ["ok", "ok", "ok", "injected"]
    assert (tmp_path / "b").exists() and not (tmp_path / "a").exists()  # the failing call did not run


def test_a_fault_that_never_fires_fails_the_test(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="never fired"), inject(op="reflink"):
        fsops.make_dirs(str(tmp_path / "d"))
    with pytest.raises(ValueError, match="not a writer"), inject(op="temp_name"):
        pass


def test_a_writer_bound_by_name_elsewhere_is_faulted_there_too(tmp_path: Path) -> None:
    """journal.py imports `fsync_dir` by name: a fault reaches it there, and it is put back after."""
    from modelcache.act import journal

    original = journal.fsync_dir
    with inject(op="fsync_dir") as fault, pytest.raises(OSError):
        journal.fsync_dir(str(tmp_path))
    assert fault.fired and journal.fsync_dir is original is fsops.fsync_dir


# -- every writer is faulted somewhere -------------------------------------------------------------------------

# The scenario (a fixture above) that reaches each writer with a call that works unfaulted.
SCENARIO_OF = {
    "clone_new": "download_xfs",
    "copy_to": "download_other_fs",
    "discard": "download",
    "fsync_dir": "clean",
    "hardlink": "download",
    "make_dirs": "download",
    "move_aside": "prune",
    "place_new": "download",
    "reflink": "consolidate_xfs",
    "remove": "clean",
    "remove_dir": "clean",
    "remove_entry": "clean",
    "replace": "download",
    "set_mode": "consolidate_hardlink",
    "set_mtime": "consolidate_hardlink",
    "symlink": "consolidate_symlink",
    "write_durably": "plan_out",
    "write_new": "download",
    "write_ref": "download",
}


def test_every_writer_has_a_scenario() -> None:
    assert set(SCENARIO_OF) == set(WRITERS), "a writer of fsops no scenario faults, or a scenario for no writer"


@pytest.mark.parametrize("writer", WRITERS)
def test_a_fault_at_each_writer_fires_and_loses_nothing(writer: str, request: pytest.FixtureRequest) -> None:
    """At the first call of `writer` that works without a fault, in the scenario that reaches it."""
    if writer not in SCENARIO_OF:
        pytest.fail(f"no scenario reaches fsops.{writer}: add one to SCENARIO_OF")
    scenario = request.getfixturevalue(SCENARIO_OF[writer])
    at = baseline(scenario).first_ok(writer)
    seen = run_once(scenario, f"cover-{writer}", functools.partial(inject, at, code=errno.EIO))
    assert seen.fault is not None and seen.fault.op == writer, seen

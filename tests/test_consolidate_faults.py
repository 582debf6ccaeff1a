"""`consolidate`, `apply` and `undo` under crashes, races and faults: nothing is ever lost.

What is proven, each on machines made by the real huggingface_hub client through LocalHub
(an HF cache with two repos, `local_dir` copies of both, and a plain folder with a renamed
copy older than the cache: ten duplicate files, one of them a duplicate inside the cache):

1. Crash safety at every journal record. `MODELCACHE_TEST_KILL_AFTER_RECORDS=N` SIGKILLs the
   process right after its Nth record reaches the disk; for every N of a full run (and one
   past its end), in modes hardlink (what auto did on ext4 before issue 14), delete (also with
   `--remove-empty-dirs`) and symlink: every path still reads its old bytes (a removed one
   is journaled, its bytes in the cache); then `undo` (which recovers first) gives back the
   exact earlier tree (paths, types, bytes, modes, file mtimes, link texts, no hard links,
   no temporary files); or, instead of undo, the next `consolidate` recovers and reaches the
   end state of an uninterrupted run. The same for `undo` killed at every record (with the
   partial temporary copy a kill mid-copy leaves): a second `undo` finishes the job. And, as
   the hook only fires between records, the disk a crash just before each rename leaves
   (lowered mtime, temporary link) is made by hand and rolled back.
2. Crash safety at random moments: consolidate and undo SIGKILLed after a seeded random
   delay, on a machine with files of a few MB, followed by the same checks.
3. A file changed between plan and act (size, mtime, or same size and mtime with other
   bytes) is skipped with a reason by `apply`; everything else is consolidated.
4. A corrupted kept copy is never linked to; a corrupted copy is left as is.
5. A symlink in a model folder that leads out of the roots is never followed: the file it
   points at keeps its bytes, inode and mtime in every mode.
6. Faults: a read-only folder fails that file cleanly and nothing else; a full disk makes
   `undo` fail per file, cleanly, losing nothing, and a later `undo RUN` completes.
7. A download in progress: the repo it writes to is skipped, and consolidated afterwards.
8. Reflinks on XFS: separate inodes, the space comes back, undo restores.

Bugs these tests found were fixed; the tests that showed them stay, as regression tests.

Every subprocess gets its own `MODELCACHE_STATE` and `MODELCACHE_INDEX`; runs on separate
copies go in parallel threads to keep the file fast. No test asserts a timing.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from modelcache.testing import LocalHub
from modelcache.testing.builders import CLIENT_ENV, download_to_cache, download_to_local_dir, random_bytes, write_tree

from .machine import Machine as BaseMachine
from .machine import (
    Result,
    as_unprivileged,
    client_env,
    download_repos,
    expected_figures,
    keep_client_home,
    mounted,
    small_tmpfs,
)

KILL_ENV = "MODELCACHE_TEST_KILL_AFTER_RECORDS"
TMP_PREFIX, TMP_SUFFIX = ".modelcache-", ".tmp"
EXIT_OK, EXIT_WARNINGS, EXIT_ERROR = 0, 1, 2
SIGKILLED = -signal.SIGKILL
# hardlink: what auto did on ext4 before it learnt what comes next (as root, auto now leaves local copies alone)
MODES = ("hardlink", "delete", "symlink")
NOBODY = "65534"
# Subprocesses are the cost: run copies side by side (each run is mostly one process on one core).
WORKERS = min(4, (os.cpu_count() or 1) + 1)
OLD_MTIME_NS = 1_600_000_000 * 10**9  # a copy older than the cache: its hard link lowers the blob's mtime

T = TypeVar("T")
R = TypeVar("R")


# -- the machine --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One path as a user sees it: what it is, and the bytes read through it."""

    kind: str  # "dir" | "file" | "symlink"
    digest: str | None  # sha256 of the bytes read through the path (None for folders, dangling links)
    link: str | None  # a symlink's text
    mode: int
    mtime_ns: int | None  # regular files only (folders change as entries come and go)

    @property
    def shape(self) -> tuple[str, str | None, str | None]:
        """What an end state must agree on: type, bytes, link text (not inodes, modes or times)."""
        return (self.kind, self.digest, self.link)


Tree = dict[str, Entry]


@dataclass(frozen=True)
class Machine(BaseMachine):
    """A built machine under `root`: `cache/`, `models/`; its modelcache state under `home` (default: `root`)."""

    home: Path | None = None
    TORN_JOURNAL_LINES = True  # the kills tear them

    @property
    def state(self) -> Path:
        return (self.home or self.root) / "state"

    @property
    def index(self) -> Path:
        return (self.home or self.root) / "index" / "digests.sqlite"

    def consolidate(self, mode: str, *extra: str, env: dict[str, str] | None = None, user: str | None = None) -> Result:
        """`consolidate --yes --mode MODE`; the mode `delete+rmdir` adds `--remove-empty-dirs`."""
        mode, _, rmdir = mode.partition("+")
        args = ["--mode", mode, *(["--remove-empty-dirs"] if rmdir else [])]
        return self.cli("consolidate", "--yes", *args, *self.roots(), *extra, env=env, user=user)

    def analyze(self) -> dict[str, Any]:
        result = self.cli("analyze", "--json", *self.roots())
        assert result.code == EXIT_OK, result.err
        data: dict[str, Any] = result.json()
        return data

    def rel(self, path: str | os.PathLike[str]) -> str:
        return os.path.relpath(path, self.root)

    def run_records(self, command: str) -> list[list[dict[str, Any]]]:
        return [r for r in self.journals() if r and r[0].get("command") == command]


def read_tree(m: Machine) -> Tree:
    """Every entry under the machine's roots, by path relative to its root."""
    digests: dict[tuple[int, ...], str] = {}
    found: Tree = {}
    for top in (m.cache, m.models):
        for dirpath, dirs, files in os.walk(top):
            for name in [*dirs, *files]:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if stat.S_ISDIR(st.st_mode):
                    found[m.rel(path)] = Entry("dir", None, None, st.st_mode, None)
                    continue
                link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
                digest = None
                try:
                    target = os.stat(path)
                except OSError:
                    target = None
                if target is not None and stat.S_ISREG(target.st_mode):
                    key = (target.st_dev, target.st_ino, target.st_size, target.st_mtime_ns, target.st_ctime_ns)
                    if key not in digests:
                        digests[key] = sha256_of(path)
                    digest = digests[key]
                kind = "symlink" if link is not None else "file"
                found[m.rel(path)] = Entry(kind, digest, link, st.st_mode, None if link else st.st_mtime_ns)
    return found


def sha256_of(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def temp_files(m: Machine) -> list[str]:
    """Temporary files of modelcache under the roots."""
    return [
        os.path.join(d, f)
        for top in (m.cache, m.models)
        for d, _dirs, files in os.walk(top)
        for f in files
        if f.startswith(TMP_PREFIX) and f.endswith(TMP_SUFFIX)
    ]


def hard_linked(m: Machine) -> list[str]:
    return [
        os.path.join(d, f)
        for top in (m.cache, m.models)
        for d, _dirs, files in os.walk(top)
        for f in files
        if os.lstat(os.path.join(d, f)).st_nlink > 1
    ]


def build_machine(hub: LocalHub, root: Path, size: int, tag: str) -> Machine:
    """Two repos in the cache, local_dir copies of both, a plain folder with a renamed copy: 10 duplicates."""
    m = Machine(root)
    shared = random_bytes(size // 4, f"{tag}-shared")
    alpha = {
        "config.json": f'{{"alpha": "{tag}"}}'.encode(),
        "model.safetensors": random_bytes(size, f"{tag}-alpha"),
        "sub/adapter.safetensors": random_bytes(size // 2, f"{tag}-adapter"),
        "shared.safetensors": shared,
    }
    beta = {
        "config.json": f'{{"beta": "{tag}"}}'.encode(),
        "model.safetensors": random_bytes(size, f"{tag}-beta"),
        "shared.safetensors": shared,  # a duplicate inside the cache
    }
    repos = {f"org/alpha-{tag}": alpha, f"org/beta-{tag}": beta}
    download_repos(hub, m, repos, {f"org/alpha-{tag}": "alpha", f"org/beta-{tag}": "beta"})
    write_tree(
        m.models / "mine",
        {"base.bin": alpha["model.safetensors"], "alpha-config.json": alpha["config.json"], "notes.txt": b"mine"},
    )
    os.utime(m.models / "mine" / "base.bin", ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    return m


def blob_of(m: Machine, repo: str, content: bytes) -> Path:
    return m.cache / f"models--org--{repo}" / "blobs" / hashlib.sha256(content).hexdigest()


# -- checks ------------------------------------------------------------------------------------------------


def assert_nothing_lost(m: Machine, before: Tree, where: str, others: tuple[str, ...] = ()) -> Tree:
    """Every path reads its old bytes; a path that is gone was journaled as removed, its bytes kept in the cache.

    Extra paths may only be modelcache's temporary files (a kill can leave one; recovery removes it), or
    lie under `others`: folders that another program (a download) adds to meanwhile.
    """
    now = read_tree(m)
    begins = [r for run in m.journals() for r in run if r.get("type") == "begin"]
    removed = {m.rel(r["target"]): r for r in begins if r["op"] == "delete"}
    removed_dirs = {m.rel(r["target"]) for r in begins if r["op"] == "rmdir"}
    for rel, old in before.items():
        new = now.get(rel)
        if old.kind == "dir" and new is None:
            assert rel in removed_dirs, f"{where}: folder {rel} is gone and no journal records its removal"
        elif old.kind == "dir":
            assert new is not None and new.kind == "dir", f"{where}: folder {rel} is gone"
        elif new is None:
            begin = removed.get(rel)
            assert begin is not None, f"{where}: {rel} is gone and no journal records its removal"
            assert Path(begin["keep"]).is_relative_to(m.cache), f"{where}: {rel} removed for a copy outside the cache"
            assert sha256_of(begin["keep"]) == old.digest, f"{where}: {rel} removed, its bytes are not in the cache"
        else:
            assert new.digest == old.digest, f"{where}: {rel} reads other bytes ({old.kind} -> {new.kind})"
    extra = [
        p
        for p in now
        if p not in before and not os.path.basename(p).startswith(TMP_PREFIX) and not (others and p.startswith(others))
    ]
    assert not extra, f"{where}: new paths {extra}"
    return now


def assert_restored(m: Machine, before: Tree, where: str) -> None:
    """The exact earlier tree: paths, types, bytes, modes, file mtimes, link texts; no links, no temp files."""
    assert not temp_files(m), f"{where}: temporary files left: {temp_files(m)}"
    now = read_tree(m)
    diff = sorted(p for p in before.keys() | now.keys() if before.get(p) != now.get(p))
    shown = [(p, before.get(p), now.get(p)) for p in diff[:4]]
    assert not diff, f"{where}: {len(diff)} path(s) differ from the original, e.g. {shown}"
    assert not hard_linked(m), f"{where}: still hard-linked: {hard_linked(m)}"


def in_parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(fn, items))


def outcomes_by_path(result: Result, m: Machine) -> dict[str, dict[str, Any]]:
    return {m.rel(o["path"]): o for o in result.json()["outcomes"]}


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def modelcache_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing a test runs may touch the real state or index (each machine also gets its own)."""
    monkeypatch.setenv("MODELCACHE_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("MODELCACHE_INDEX", str(tmp_path / "index" / "digests.sqlite"))
    monkeypatch.delenv(KILL_ENV, raising=False)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """One LocalHub for the module, with huggingface_hub kept off ~/.cache and the network (as `hf_home`)."""
    home = tmp_path_factory.mktemp("hf_home")
    with client_env() as mp:
        keep_client_home(home, mp)
        mp.delenv("HF_ENDPOINT", raising=False)
        with LocalHub() as local_hub:
            yield local_hub


@dataclass(frozen=True)
class Built:
    machine: Machine
    tree: Tree  # every path of the pristine machine


@pytest.fixture(scope="module")
def small(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The crash-point machine: small files, so that one run costs little more than starting Python."""
    m = build_machine(hub, tmp_path_factory.mktemp("small") / "m", 60_000, "small")
    return Built(m, read_tree(m))


@pytest.fixture(scope="module")
def big(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The random-kill machine: 4 MB weights, so that a kill lands while files are compared and linked."""
    m = build_machine(hub, tmp_path_factory.mktemp("big") / "m", 4 << 20, "big")
    return Built(m, read_tree(m))


@dataclass(frozen=True)
class Reference:
    """An uninterrupted run of one mode on a fresh copy."""

    records: int  # journal records it writes
    code: int
    end: Tree
    duplicate_bytes: int  # what analyze reports afterwards (the duplicate inside the cache stays in delete/symlink)
    outcomes: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def reference(small: Built, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Reference]:
    made: dict[str, Reference] = {}

    def get(mode: str) -> Reference:
        if mode not in made:
            m = small.machine.copy(tmp_path_factory.mktemp(f"reference-{mode}") / "m")
            result = m.consolidate(mode, "--json")
            assert result.code in (EXIT_OK, EXIT_WARNINGS), result.err
            (run,) = m.run_records("consolidate")
            outcomes = outcomes_by_path(result, m)
            assert sum(o["status"] == "done" for o in outcomes.values()) >= 8, outcomes
            made[mode] = Reference(len(run), result.code, read_tree(m), m.analyze()["duplicate_bytes"], outcomes)
        return made[mode]

    return get


# -- 1. a kill after every journal record -------------------------------------------------------------------


def kill_at(pristine: Machine, mode: str, n: int, dest: Path, ref: Reference) -> Machine:
    """A fresh copy, consolidated with a SIGKILL right after journal record `n`."""
    m = pristine.copy(dest)
    result = m.consolidate(mode, env={KILL_ENV: str(n)})
    expected = SIGKILLED if n <= ref.records else ref.code
    assert result.code == expected, f"kill after record {n}: exit {result.code}: {result.err}"
    return m


def changes_done(records: list[dict[str, Any]]) -> int:
    return sum(1 for r in records if r.get("type") == "done")


@pytest.mark.parametrize("mode", [*MODES, "delete+rmdir"])
def test_kill_after_every_journal_record_then_undo(
    small: Built, reference: Callable[[str], Reference], mode: str, tmp_path: Path
) -> None:
    ref = reference(mode)

    def one(n: int) -> tuple[int, int]:
        where = f"{mode}, killed after record {n} of {ref.records}"
        m = kill_at(small.machine, mode, n, tmp_path / f"n{n}", ref)
        after_kill = assert_nothing_lost(m, small.tree, where)
        gone = sum(1 for p in small.tree if p not in after_kill)
        undo = m.cli("undo")
        (run,) = m.run_records("consolidate")  # after the recovery that undo ran first
        assert run[-1]["type"] == "end", f"{where}: the run was not recovered"
        if changes_done(run):
            assert undo.code == EXIT_OK, f"{where}: {undo.out} {undo.err}"
        else:
            assert undo.code == EXIT_ERROR and "nothing to undo" in undo.err, f"{where}: {undo.out} {undo.err}"
        assert_restored(m, small.tree, where)
        shutil.rmtree(m.root)
        return changes_done(run), gone

    seen = in_parallel(one, range(1, ref.records + 2))
    # the kills landed at every stage: from nothing done to everything done (and, for delete, files gone)
    done_counts = [d for d, _ in seen]
    assert done_counts[0] == 0 and done_counts[-1] == max(done_counts) >= 8
    assert len(set(done_counts)) == max(done_counts) + 1
    if mode.startswith("delete"):
        assert max(g for _, g in seen) >= 8 + (mode == "delete+rmdir")  # and models/alpha/sub, emptied


@pytest.mark.parametrize("mode", MODES)
def test_kill_after_every_journal_record_then_consolidate_again(
    small: Built, reference: Callable[[str], Reference], mode: str, tmp_path: Path
) -> None:
    ref = reference(mode)
    end_shape = {p: e.shape for p, e in ref.end.items()}

    def one(n: int) -> None:
        where = f"{mode}, killed after record {n} of {ref.records}, then consolidated again"
        m = kill_at(small.machine, mode, n, tmp_path / f"n{n}", ref)
        (killed,) = m.run_records("consolidate")
        again = m.consolidate(mode, "--json")
        assert again.code == ref.code, f"{where}: {again.err}"
        unfinished = killed[-1]["type"] != "end"
        assert again.json()["recovered_runs"] == ([killed[0]["run"]] if unfinished else []), where
        assert all(r[-1]["type"] == "end" for r in m.journals()), where
        assert not temp_files(m), where
        assert_nothing_lost(m, small.tree, where)
        assert {p: e.shape for p, e in read_tree(m).items()} == end_shape, f"{where}: not the uninterrupted end state"
        assert m.analyze()["duplicate_bytes"] == ref.duplicate_bytes, where
        assert expected_figures(m.cache, [m.models])["duplicate_bytes"] == ref.duplicate_bytes, where
        shutil.rmtree(m.root)

    in_parallel(one, range(1, ref.records + 2))
    assert ref.duplicate_bytes == (0 if mode == "hardlink" else 60_000 // 4)  # delete/symlink leave the cache alone


LOWERING = "models/mine/base.bin"  # the one copy older than its blob: its hard link lowers the blob's mtime


def small_blob(m: Machine) -> Path:
    """The blob that `LOWERING` (and the local_dir copy of alpha) are linked to."""
    return blob_of(m, "alpha-small", random_bytes(60_000, "small-alpha"))


def consolidated(pristine: Machine, dest: Path) -> Machine:
    m = pristine.copy(dest)  # consolidated in place: a copy of a consolidated tree would lose its hard links
    assert m.consolidate("hardlink").code == EXIT_OK
    return m


def index_of(records: list[dict[str, Any]], kind: str, target: str) -> int:
    """1-based number of the `kind` record for `target` (a `done` record names its action, not its path)."""
    action = next(r["action"] for r in records if r.get("type") == "begin" and r["target"].endswith(target))
    return next(i for i, r in enumerate(records, 1) if r.get("type") == kind and r.get("action") == action)


def test_kill_undo_after_every_journal_record_then_undo_again(small: Built, tmp_path: Path) -> None:
    probe = consolidated(small.machine, tmp_path / "probe")
    assert probe.cli("undo").code == EXIT_OK
    (undo_run,) = probe.run_records("undo")
    records = len(undo_run)

    def one(n: int) -> None:
        where = f"undo killed after record {n} of {records}"
        m = consolidated(small.machine, tmp_path / f"n{n}")
        first = m.cli("undo", env={KILL_ENV: str(n)})
        assert first.code == (SIGKILLED if n <= records else EXIT_OK), f"{where}: {first.err}"
        last = m.run_records("undo")[0][-1]
        if last["type"] == "begin":  # and what a kill while copying leaves: a partial temporary copy
            Path(last["tmp"]).write_bytes(Path(last["target"]).read_bytes()[:1000])
        assert_nothing_lost(m, small.tree, where)
        second = m.cli("undo")
        if last["type"] == "end":  # killed after it finished (or not killed at all)
            assert second.code == EXIT_ERROR and "nothing to undo" in second.err, f"{where}: {second.err}"
        else:  # files the killed undo restored already are reported as skipped ("no longer linked")
            assert second.code in (EXIT_OK, EXIT_WARNINGS), f"{where}: {second.out} {second.err}"
            assert "failed" not in second.out, where
        assert_restored(m, small.tree, where)
        shutil.rmtree(m.root)

    in_parallel(one, range(1, records + 2))


@pytest.mark.parametrize("restored", [LOWERING, "models/alpha/model.safetensors"], ids=["mtime", "mode"])
def test_undo_killed_right_after_a_restore_still_restores_the_blob(small: Built, tmp_path: Path, restored: str) -> None:
    probe = consolidated(small.machine, tmp_path / "probe")
    assert probe.cli("undo").code == EXIT_OK
    n = index_of(probe.run_records("undo")[0], "done", restored)
    m = consolidated(small.machine, tmp_path / "m")
    assert m.cli("undo", env={KILL_ENV: str(n)}).code == SIGKILLED
    m.cli("undo")
    blob = m.rel(small_blob(m))
    assert read_tree(m)[blob] == small.tree[blob]


def simulate_until_rename(begin: dict[str, Any]) -> None:
    """What `_link` does between its `begin` record and the rename: lower the kept mtime, make the temp entry."""
    if begin.get("lowered_mtime_ns") is not None:
        os.utime(begin["keep"], ns=(begin["keep_atime_ns"], begin["lowered_mtime_ns"]))
    if begin.get("protected_mode") is not None:  # hard-linked files are made read-only
        os.chmod(begin["keep"], begin["protected_mode"])
    if begin["op"] == "hardlink":
        os.link(begin["keep"], begin["tmp"])
    elif begin["op"] == "symlink":
        os.symlink(begin["symlink_to"], begin["tmp"])
    else:
        raise AssertionError(begin["op"])


@pytest.mark.parametrize("mode", ["hardlink", "symlink"])
def test_crash_just_before_each_rename_is_rolled_back(
    small: Built, reference: Callable[[str], Reference], mode: str, tmp_path: Path
) -> None:
    """The kill hook fires after records; this puts the disk where a crash just before the rename leaves it."""
    ref = reference(mode)
    end_shape = {p: e.shape for p, e in ref.end.items()}
    probe = small.machine.copy(tmp_path / "probe")
    probe.consolidate(mode)
    begins = [i for i, r in enumerate(probe.run_records("consolidate")[0], 1) if r["type"] == "begin"]
    assert len(begins) >= 8

    def one(job: tuple[int, str]) -> bool:
        n, then = job
        where = f"{mode}, crashed just before the rename of the change begun in record {n}, then {then}"
        m = kill_at(small.machine, mode, n, tmp_path / f"n{n}-{then}", ref)
        begin = m.run_records("consolidate")[0][-1]
        assert begin["type"] == "begin", where
        simulate_until_rename(begin)
        assert temp_files(m) == [begin["tmp"]], where
        assert_nothing_lost(m, small.tree, where)
        lowered = begin.get("lowered_mtime_ns") is not None
        if then == "undo":
            assert m.cli("undo").code in (EXIT_OK, EXIT_ERROR), where  # (nothing to undo when n is the first begin)
            assert_restored(m, small.tree, where)
        else:
            again = m.consolidate(mode, "--json")
            assert again.code == ref.code and again.json()["recovered_runs"], f"{where}: {again.out} {again.err}"
            assert not temp_files(m), where
            assert {p: e.shape for p, e in read_tree(m).items()} == end_shape, where
        shutil.rmtree(m.root)
        return lowered

    thens = ("undo", "consolidate") if mode == "hardlink" else ("undo",)  # a symlink's temp entry is not a copy
    lowered = in_parallel(one, [(n, then) for n in begins for then in thens])
    assert any(lowered) == (mode == "hardlink")  # the mtime put back by recovery was exercised


def journal_path(m: Machine, command: str) -> Path:
    (path,) = [p for p in (m.state / "journal").glob("*.jsonl") if f'"command": "{command}"' in p.read_text()]
    return path


def test_crash_while_writing_done_is_still_undone(
    small: Built, reference: Callable[[str], Reference], tmp_path: Path
) -> None:
    ref = reference("hardlink")
    probe = small.machine.copy(tmp_path / "probe")
    probe.consolidate("hardlink")
    n = index_of(probe.run_records("consolidate")[0], "begin", "models/beta/model.safetensors")
    m = kill_at(small.machine, "hardlink", n, tmp_path / "m", ref)
    begin = m.run_records("consolidate")[0][-1]
    simulate_until_rename(begin)
    os.replace(begin["tmp"], begin["target"])  # the change happened; the crash tore its `done` record
    with open(journal_path(m, "consolidate"), "a") as journal:
        journal.write('{"type": "done", "act')
    assert_nothing_lost(m, small.tree, "crash while writing done")
    assert m.cli("undo").code == EXIT_OK
    assert_restored(m, small.tree, "crash while writing done, undone")


def test_consolidate_after_a_crash_between_lowering_the_mtime_and_the_link_finishes(
    small: Built, reference: Callable[[str], Reference], tmp_path: Path
) -> None:
    ref = reference("hardlink")
    probe = small.machine.copy(tmp_path / "probe")
    probe.consolidate("hardlink")
    n = index_of(probe.run_records("consolidate")[0], "begin", LOWERING)
    m = kill_at(small.machine, "hardlink", n, tmp_path / "m", ref)
    begin = m.run_records("consolidate")[0][-1]
    assert begin["lowered_mtime_ns"] is not None
    os.utime(begin["keep"], ns=(begin["keep_atime_ns"], begin["lowered_mtime_ns"]))  # the crash came right after
    again = m.consolidate("hardlink", "--json")
    assert [o["reason"] for o in again.json()["outcomes"] if o["status"] != "done"] == []
    assert again.code == EXIT_OK and again.json()["recovered_runs"]
    assert m.analyze()["duplicate_bytes"] == 0


def test_consolidate_with_nothing_left_to_do_still_recovers_the_interrupted_run(
    small: Built, reference: Callable[[str], Reference], tmp_path: Path
) -> None:
    ref = reference("hardlink")
    m = kill_at(small.machine, "hardlink", ref.records - 1, tmp_path / "m", ref)  # after the last `done`, before `end`
    again = m.consolidate("hardlink", "--json")
    assert again.code == EXIT_OK
    assert all(run[-1]["type"] == "end" for run in m.journals())


def test_two_older_copies_of_one_blob_are_both_linked(small: Built, tmp_path: Path) -> None:
    m = small.machine.copy(tmp_path / "m")
    # a local_dir copy made before the cache held the repo is older than the blob, as is the plain copy
    older = m.models / "alpha" / "model.safetensors"
    os.utime(older, ns=(OLD_MTIME_NS + 10**9, OLD_MTIME_NS + 10**9))
    result = m.consolidate("hardlink", "--json")
    assert [o["reason"] for o in result.json()["outcomes"] if o["status"] != "done"] == []
    assert result.code == EXIT_OK and result.json()["done"] == 10


# -- 2. kills at random moments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomKill:
    stage: str  # "before the journal", "mid-run", "after the run"
    open_change: bool  # killed between a change's begin and its done
    temp_file: bool  # a temporary file was left for recovery


def timed_run(m: Machine, *args: str) -> tuple[float, float]:
    """(seconds to the run's journal, seconds to the end) of one uninterrupted run: the range of the delays."""
    journals = len(list((m.state / "journal").glob("*.jsonl")))
    started = time.monotonic()
    proc = m.start(*args, output=subprocess.DEVNULL)
    journal_at = None
    while proc.poll() is None:
        if journal_at is None and len(list((m.state / "journal").glob("*.jsonl"))) > journals:
            journal_at = time.monotonic() - started
        time.sleep(0.001)
    assert proc.returncode == EXIT_OK
    total = time.monotonic() - started
    return (journal_at or total), total


def kill_randomly(m: Machine, args: list[str], delay: float, after_journal: bool) -> int:
    """Run the CLI and SIGKILL it `delay` seconds after its start, or after its journal appeared."""
    journals = len(list((m.state / "journal").glob("*.jsonl")))
    proc = m.start(*args, output=subprocess.DEVNULL)
    if after_journal:
        while proc.poll() is None and len(list((m.state / "journal").glob("*.jsonl"))) == journals:
            time.sleep(0.0005)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def classify(records: list[list[dict[str, Any]]], temp: bool) -> RandomKill:
    if not records:
        return RandomKill("before the journal", False, temp)
    run = records[-1]
    if run[-1]["type"] == "end":
        return RandomKill("after the run", False, temp)
    closed = {r["action"] for r in run if r["type"] in ("done", "abandoned", "failed", "skip")}
    return RandomKill("mid-run", any(r["type"] == "begin" and r["action"] not in closed for r in run), temp)


def summary(what: str, kills: list[RandomKill]) -> str:
    stages = {s: sum(k.stage == s for k in kills) for s in ("before the journal", "mid-run", "after the run")}
    return (
        f"{what}: {len(kills)} runs SIGKILLed at random: {stages}; {sum(k.open_change for k in kills)} "
        f"between a change's begin and done; {sum(k.temp_file for k in kills)} left a temporary file"
    )


def test_sigkill_consolidate_at_random_moments(big: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A third of the delays count from the start (most land in start-up or hashing), the rest from the journal."""
    probe = big.machine.copy(tmp_path / "probe")
    journal_at, total = timed_run(probe, "consolidate", "--yes", *probe.roots())
    shutil.rmtree(probe.root)
    rng = random.Random(20240611)
    jobs = []
    for i in range(51):
        after_journal = rng.random() > 1 / 3
        delay = rng.uniform(0.0, 1.2 * ((total - journal_at) if after_journal else total))
        jobs.append((i, rng.choice(MODES), delay, after_journal))

    def one(job: tuple[int, str, float, bool]) -> RandomKill:
        i, mode, delay, after_journal = job
        where = f"run {i} ({mode}), SIGKILL {delay:.3f}s after {'its journal' if after_journal else 'its start'}"
        m = big.machine.copy(tmp_path / f"r{i}")
        code = kill_randomly(m, ["consolidate", "--yes", "--mode", mode, *m.roots()], delay, after_journal)
        assert code in (SIGKILLED, EXIT_OK, EXIT_WARNINGS), f"{where}: exit {code}"
        kill = classify(m.run_records("consolidate"), bool(temp_files(m)))
        assert_nothing_lost(m, big.tree, where)
        undo = m.cli("undo")
        if undo.code != EXIT_OK:
            assert undo.code == EXIT_ERROR and "nothing to undo" in undo.err, f"{where}: {undo.err}"
        assert_restored(m, big.tree, where)
        shutil.rmtree(m.root)
        return kill

    kills = in_parallel(one, jobs)
    with capsys.disabled():
        print(f"\n{summary('consolidate', kills)} (full run {total:.2f}s, journal after {journal_at:.2f}s)")
    assert len(kills) == len(jobs)


def test_sigkill_undo_at_random_moments(big: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Undo writes whole copies under temporary names: a kill there leaves a partial one for recovery."""
    probe = consolidated(big.machine, tmp_path / "probe")
    journal_at, total = timed_run(probe, "undo")
    shutil.rmtree(probe.root)
    rng = random.Random(20240612)
    jobs = [(i, rng.uniform(0.0, 1.2 * (total - journal_at))) for i in range(15)]

    def one(job: tuple[int, float]) -> RandomKill:
        i, delay = job
        where = f"undo run {i}, SIGKILL {delay:.3f}s after its journal"
        m = consolidated(big.machine, tmp_path / f"r{i}")
        code = kill_randomly(m, ["undo"], delay, after_journal=True)
        assert code in (SIGKILLED, EXIT_OK), f"{where}: exit {code}"
        kill = classify(m.run_records("undo"), bool(temp_files(m)))
        assert_nothing_lost(m, big.tree, where)
        second = m.cli("undo")
        assert second.code in (EXIT_OK, EXIT_WARNINGS, EXIT_ERROR) and "failed" not in second.out, where
        if second.code == EXIT_ERROR:
            assert "nothing to undo" in second.err, f"{where}: {second.err}"
        assert_restored(m, big.tree, where)
        shutil.rmtree(m.root)
        return kill

    kills = in_parallel(one, jobs)
    with capsys.disabled():
        print(f"\n{summary('undo', kills)} (full undo {total:.2f}s)")
    assert len(kills) == len(jobs)


# -- 3. a file changed between plan and act ------------------------------------------------------------------


def save_plan(m: Machine, plan: Path, mode: str = "hardlink", user: str | None = None) -> dict[str, Any]:
    result = m.cli("consolidate", "--dry-run", "--mode", mode, "--plan-out", str(plan), *m.roots(), user=user)
    assert result.code == EXIT_OK, result.err
    data: dict[str, Any] = json.loads(plan.read_text())
    return data


def rewrite_in_place(path: Path, offset: int = 1000) -> bytes:
    """Other bytes, same size, same mtime (what a bit flip or a careless tool leaves behind)."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    return path.read_bytes()


def grow(path: Path) -> bytes:
    with open(path, "ab") as f:
        f.write(b"appended")
    return path.read_bytes()


def touch(path: Path) -> bytes:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    return path.read_bytes()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (grow, "changed since the plan was made"),
        (touch, "changed since the plan was made"),
        (rewrite_in_place, "differs from sha256"),
    ],
    ids=["size", "mtime", "bytes-same-size-and-mtime"],
)
@pytest.mark.parametrize("unprivileged", [False, True], ids=["root", "nobody"])
def test_file_changed_between_plan_and_apply_is_skipped(
    small: Built, shared_tmp: Path, change: Callable[[Path], bytes], reason: str, unprivileged: bool
) -> None:
    """A copy changed after the plan (its size, its mtime, or its bytes alone: then only reading both
    copies in step finds it) is left as it is now; the others are linked. As root, and as nobody on
    a machine of nobody's."""
    m = small.machine.copy(shared_tmp / "m")
    user = as_unprivileged(m) if unprivileged else None
    plan = save_plan(m, m.root / "plan.json", user=user)  # where the user may write
    changed = m.models / "alpha" / "model.safetensors"
    ino = changed.stat().st_ino
    new_bytes = change(changed)
    result = m.cli("apply", "--yes", "--json", str(m.root / "plan.json"), user=user)
    assert result.code == EXIT_WARNINGS, result.err
    outcomes = outcomes_by_path(result, m)
    skipped = {p: o["reason"] for p, o in outcomes.items() if o["status"] == "skipped"}
    assert list(skipped) == [m.rel(changed)]
    assert reason in skipped[m.rel(changed)]
    assert changed.read_bytes() == new_bytes and changed.stat().st_ino == ino and changed.stat().st_nlink == 1
    others = [a for a in plan["actions"] if a["target"]["path"] != str(changed)]
    assert len(others) >= 8 and all(outcomes[m.rel(a["target"]["path"])]["status"] == "done" for a in others)
    for a in others:
        assert os.stat(a["target"]["path"]).st_ino == os.stat(a["keep"]["path"]).st_ino
    assert not temp_files(m)


def test_undo_takes_the_newer_of_two_runs_begun_in_the_same_second(
    small: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelcache.act import journal
    from modelcache.act.consolidate import execute
    from modelcache.plan import read_plan

    m = small.machine.copy(tmp_path / "m")
    plan = save_plan(m, tmp_path / "plan.json")
    older, newer = plan["actions"][:2]
    for name, action in (("older", older), ("newer", newer)):
        (tmp_path / f"{name}.json").write_text(json.dumps({**plan, "actions": [action]}))
    # Run ids as journal.new_run_id makes them, both in one second; only the random part is chosen.
    ids = iter(["20260101T000000Z-ffffff", "20260101T000000Z-000000"])
    monkeypatch.setattr(journal, "new_run_id", lambda: next(ids))
    for name, value in m.env().items():
        monkeypatch.setenv(name, value)
    for name in ("older", "newer"):
        assert execute(read_plan(tmp_path / f"{name}.json"), command="apply").count("done") == 1
    undone = m.cli("undo", "--json")
    assert [o["path"] for o in undone.json()["outcomes"]] == [newer["target"]["path"]]


# -- 4. corruption -------------------------------------------------------------------------------------------


def test_corrupted_kept_copy_is_never_linked_to(small: Built, tmp_path: Path) -> None:
    m = small.machine.copy(tmp_path / "m")
    plan = save_plan(m, tmp_path / "plan.json")
    kept = str(blob_of(m, "alpha-small", random_bytes(60_000, "small-alpha")))
    dependents = {a["target"]["path"] for a in plan["actions"] if a["keep"]["path"] == kept}
    assert len(dependents) == 2  # the local_dir copy and the renamed plain copy
    locals_before = {p: (sha256_of(p), os.stat(p).st_ino) for p in dependents}
    rewrite_in_place(Path(kept))
    result = m.cli("apply", "--yes", "--json", str(tmp_path / "plan.json"))
    assert result.code == EXIT_WARNINGS, result.err
    outcomes = {o["path"]: o for o in result.json()["outcomes"]}
    for path in dependents:
        assert outcomes[path]["status"] == "skipped"
        assert "kept copy" in outcomes[path]["reason"] and kept in outcomes[path]["reason"]
        assert (sha256_of(path), os.stat(path).st_ino) == locals_before[path]
        assert os.stat(path).st_nlink == 1
    assert all(o["status"] == "done" for p, o in outcomes.items() if p not in dependents)
    assert os.stat(kept).st_nlink == 1


def test_corrupted_copy_is_left_as_is(small: Built, tmp_path: Path) -> None:
    """A local_dir copy whose bytes no longer match the blob its etag names (corrupted after the plan)."""
    m = small.machine.copy(tmp_path / "m")
    save_plan(m, tmp_path / "plan.json")
    copy = m.models / "beta" / "model.safetensors"
    corrupted = rewrite_in_place(copy, offset=59_999)
    result = m.cli("apply", "--yes", "--json", str(tmp_path / "plan.json"))
    assert result.code == EXIT_WARNINGS, result.err
    outcome = outcomes_by_path(result, m)[m.rel(copy)]
    assert outcome["status"] == "skipped" and "left as is" in outcome["reason"]
    assert copy.read_bytes() == corrupted and copy.stat().st_nlink == 1
    blob = blob_of(m, "beta-small", random_bytes(60_000, "small-beta"))
    assert sha256_of(blob) == blob.name  # the cache blob is untouched too


# -- 5. symlinks out of the roots --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "hardlink", "symlink", "delete"])
def test_symlink_out_of_the_roots_is_never_followed(small: Built, tmp_path: Path, mode: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    sentinel = outside / "sentinel.bin"
    sentinel.write_bytes(random_bytes(60_000, "small-alpha"))  # the bytes of a cache blob
    os.utime(sentinel, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    m = small.machine.copy(tmp_path / "m")
    file_link = m.models / "mine" / "linked.bin"
    os.symlink(sentinel, file_link)
    os.symlink(os.path.relpath(sentinel, file_link.parent), m.models / "mine" / "relative.bin")
    os.symlink(outside, m.models / "elsewhere")  # a folder link: never entered
    links = {p: os.readlink(p) for p in (file_link, m.models / "mine" / "relative.bin", m.models / "elsewhere")}
    st = sentinel.stat()
    facts = (st.st_ino, st.st_mtime_ns, st.st_nlink, sha256_of(sentinel))

    def unchanged(when: str) -> None:
        for link, text in links.items():
            assert link.is_symlink() and os.readlink(link) == text, f"{when}: {link}"
        st = sentinel.stat()
        assert (st.st_ino, st.st_mtime_ns, st.st_nlink, sha256_of(sentinel)) == facts, when
        assert sorted(os.listdir(outside)) == ["sentinel.bin"], when

    result = m.consolidate(mode, "--json")
    assert result.code in (EXIT_OK, EXIT_WARNINGS), result.err
    assert result.json()["done"] + result.json()["left_alone"] >= 8  # auto, as root: local copies left alone
    touched = {o["path"] for o in result.json()["outcomes"]}
    assert not touched & set(map(str, links)) and not any(str(outside) in p for p in touched)
    unchanged(f"after consolidate --mode {mode}")
    undo = m.cli("undo")
    assert undo.code == EXIT_OK, undo.err
    unchanged("after undo")


# -- 6. faults: permissions, a full disk --------------------------------------------------------------------


@dataclass(frozen=True)
class ReadOnlyRun:
    m: Machine
    user: str | None
    copy: Path  # the copy in the read-only folder
    result: Result


def consolidate_with_a_read_only_folder(small: Built, shared_tmp: Path, mode: str, *extra: str) -> ReadOnlyRun:
    m = small.machine.copy(shared_tmp / "m")
    user = as_unprivileged(m)
    locked = m.models / "alpha" / "sub"
    copy = locked / "adapter.safetensors"
    ino = copy.stat().st_ino
    locked.chmod(0o555)
    try:
        result = m.consolidate(mode, *extra, user=user)
    finally:
        locked.chmod(0o755)
    assert copy.stat().st_ino == ino and copy.stat().st_nlink == 1
    assert not temp_files(m)
    assert_nothing_lost(m, small.tree, f"{mode}, read-only folder")
    return ReadOnlyRun(m, user, copy, result)


@pytest.mark.parametrize("mode", MODES)
def test_read_only_folder_fails_that_file_only(small: Built, shared_tmp: Path, mode: str) -> None:
    run = consolidate_with_a_read_only_folder(small, shared_tmp, mode, "--json")
    m, m_rel = run.m, run.m.rel(run.copy)
    outcomes = outcomes_by_path(run.result, m)
    bad = {p: o for p, o in outcomes.items() if o["status"] in ("failed", "skipped")}
    assert m_rel in bad and "Permission denied" in bad[m_rel]["reason"], bad
    assert run.result.code == (EXIT_ERROR if bad[m_rel]["status"] == "failed" else EXIT_WARNINGS)
    assert set(bad) == {m_rel}  # everything else was carried out, or left alone by the mode's rule
    left = [o for o in outcomes.values() if o["status"] == "left_alone"]
    assert all("HF cache" in o["reason"] for o in left) and bool(left) == (mode in ("delete", "symlink"))
    assert m.cli("undo", user=run.user).code == EXIT_OK
    assert_restored(m, small.tree, f"{mode}, read-only folder, undone")


def test_read_only_folder_is_one_line_in_the_text_output(small: Built, shared_tmp: Path) -> None:
    run = consolidate_with_a_read_only_folder(small, shared_tmp, "hardlink")
    assert run.result.code == EXIT_ERROR
    lines = [line for line in run.result.out.splitlines() if str(run.copy) in line]
    assert len(lines) == 1 and lines[0].strip().startswith("failed:") and "Permission denied" in lines[0]
    assert run.result.err == ""


@pytest.mark.parametrize("mode", ["auto", "symlink"])
def test_read_only_folder_failure_names_that_folder(small: Built, shared_tmp: Path, mode: str) -> None:
    run = consolidate_with_a_read_only_folder(small, shared_tmp, mode, "--json")
    reason = outcomes_by_path(run.result, run.m)[run.m.rel(run.copy)]["reason"]
    # the folder that refused the write, never the kept blob in the cache (the root's name has "cache" in it)
    assert str(run.copy.parent) in reason and "/blobs/" not in reason and "/snapshots/" not in reason, reason


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 6 MB tmpfs (root only); skipped, with the reason, where mounting is not allowed."""
    with small_tmpfs(tmp_path / "tmpfs", "6m", "cannot mount a small tmpfs") as mount:
        yield mount


def fill(folder: Path) -> Path:
    """Write a file until the file system has not one byte left."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 1 << 16, 4096, 1):
            block = b"\0" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def test_undo_on_a_full_disk_fails_per_file_and_loses_nothing(small: Built, small_fs: Path, tmp_path: Path) -> None:
    m = small.machine.copy(small_fs / "m", home=tmp_path)  # the journal lives on another disk
    linked = m.consolidate("hardlink", "--json")
    assert linked.code == EXIT_OK, linked.err
    run_id = linked.json()["run"]
    restored = [m.rel(o["path"]) for o in linked.json()["outcomes"]]
    filler = fill(small_fs)

    full = m.cli("undo")
    assert full.code == EXIT_ERROR, full.out + full.err
    lines = [line for line in full.out.splitlines() if line.strip().startswith("failed:")]
    assert len(lines) == len(restored) >= 8
    for rel in restored:
        (line,) = [line for line in lines if str(m.root / rel) + ":" in line]
        assert "No space left on device" in line
    assert not temp_files(m)
    assert_nothing_lost(m, small.tree, "undo on a full disk")
    assert len(hard_linked(m)) >= 8  # still the consolidated tree

    filler.unlink()
    again = m.cli("undo", run_id)
    assert again.code == EXIT_OK, again.out + again.err
    assert_restored(m, small.tree, "undo once space was freed")


def test_plain_undo_retries_after_an_undo_that_failed_on_a_full_disk(
    small: Built, small_fs: Path, tmp_path: Path
) -> None:
    m = small.machine.copy(small_fs / "m", home=tmp_path)
    assert m.consolidate("hardlink").code == EXIT_OK
    filler = fill(small_fs)
    assert m.cli("undo").code == EXIT_ERROR
    filler.unlink()
    again = m.cli("undo")
    assert again.code == EXIT_OK, again.out + again.err
    assert_restored(m, small.tree, "plain undo once space was freed")


def journal_on_a_full_disk(small: Built, small_fs: Path) -> tuple[Machine, Result]:
    """The journal on the disk that is full: undo cannot write its first record."""
    m = small.machine.copy(small_fs / "m")  # state and index inside, on the small file system
    assert m.consolidate("hardlink").code == EXIT_OK
    fill(small_fs)
    return m, m.cli("undo")


def test_journal_on_a_full_disk_stops_undo_before_it_changes_anything(small: Built, small_fs: Path) -> None:
    m, result = journal_on_a_full_disk(small, small_fs)
    assert result.code not in (EXIT_OK, EXIT_WARNINGS)
    assert len(result.err.strip().splitlines()) == 1 and "No space left on device" in result.err
    assert not temp_files(m)
    assert_nothing_lost(m, small.tree, "journal on a full disk")
    assert len(hard_linked(m)) >= 8  # nothing was undone without a journal


def test_journal_on_a_full_disk_is_a_clear_error(small: Built, small_fs: Path) -> None:
    _, result = journal_on_a_full_disk(small, small_fs)
    assert result.code == EXIT_ERROR and "journal" in result.err, result.err


# -- 7. a download in progress -----------------------------------------------------------------------------


def test_repo_being_downloaded_is_skipped_then_consolidated(hub: LocalHub, tmp_path: Path) -> None:
    m = Machine(tmp_path / "m")
    files = {"config.json": b'{"gamma": 1}', "model.safetensors": random_bytes(200_000, "gamma")}
    other = {"model.safetensors": random_bytes(150_000, "delta")}
    hub.add_commit("org/gamma", files)
    hub.add_commit("org/delta", other)
    for repo in ("gamma", "delta"):
        download_to_cache(hub, f"org/{repo}", m.cache)
        download_to_local_dir(hub, f"org/{repo}", m.models / repo, m.cache)
    big = random_bytes(3 << 20, "gamma-big")
    hub.add_commit("org/gamma", {**files, "big.safetensors": big})
    before = read_tree(m)

    hub.throttle(128 * 1024)  # 24 s for the big file, until un-throttled below
    code = (
        "import sys; from huggingface_hub import snapshot_download; "
        "snapshot_download(sys.argv[1], cache_dir=sys.argv[2], endpoint=sys.argv[3], token=False)"
    )
    download = subprocess.Popen(
        [sys.executable, "-c", code, "org/gamma", str(m.cache), hub.url],
        env={**os.environ, **CLIENT_ENV},
        stderr=subprocess.PIPE,
    )
    try:
        blobs = m.cache / "models--org--gamma" / "blobs"
        deadline = time.monotonic() + 60
        while not list(blobs.glob("*.incomplete")):
            assert download.poll() is None, "the download ended before consolidate could run"
            assert time.monotonic() < deadline, "no partial download appeared"
            time.sleep(0.01)
        during = m.consolidate("hardlink", "--json")
        assert download.poll() is None, "the download ended while consolidate ran: the race was not tested"
    finally:
        hub.throttle(None)
        _, err = download.communicate(timeout=120)
    assert download.returncode == 0, err.decode(errors="replace")

    assert during.code == EXIT_WARNINGS, during.err
    outcomes = outcomes_by_path(during, m)
    gamma = {p: o for p, o in outcomes.items() if p.startswith("models/gamma/")}
    assert len(gamma) == 2
    assert all(o["status"] == "skipped" and "being downloaded" in o["reason"] for o in gamma.values())
    assert outcomes["models/delta/model.safetensors"]["status"] == "done"
    # the download adds a snapshot, a blob, a file list and a lock, and moves refs/main: all else is as it was
    downloading = ("cache/.locks/models--org--gamma/", "cache/models--org--gamma/")
    del before["cache/models--org--gamma/refs/main"]
    assert_nothing_lost(m, before, "consolidate during a download", others=downloading)
    snapshot = m.cache / "models--org--gamma" / "snapshots" / hub.commit_sha("org/gamma") / "big.safetensors"
    assert snapshot.read_bytes() == big

    after = m.consolidate("hardlink", "--json")
    assert after.code == EXIT_OK, after.err
    assert {p for p, o in outcomes_by_path(after, m).items() if o["status"] == "done"} == set(gamma)
    assert m.analyze()["duplicate_bytes"] == 0
    assert_nothing_lost(m, before, "consolidate after the download", others=downloading)


# -- 8. reflinks on XFS ------------------------------------------------------------------------------------


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[Path]:
    """A 300 MB XFS loop image with reflinks; skipped, with the reason, where it cannot be made or mounted."""
    if shutil.which("mkfs.xfs") is None:
        pytest.skip("mkfs.xfs is not installed (xfsprogs)")
    image = tmp_path / "xfs.img"
    with open(image, "wb") as f:
        f.truncate(300 << 20)
    made = subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"mkfs.xfs failed: {made.stderr.decode(errors='replace').strip()}")
    with mounted(tmp_path / "xfs", "-o", "loop", source=str(image), why="cannot mount an XFS loop image") as mount:
        yield mount


def free_bytes(folder: Path) -> int:
    os.sync()
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


@pytest.mark.parametrize("mode", ["reflink", "auto"])
def test_reflinks_on_xfs_share_blocks_and_undo_restores(big: Built, xfs: Path, mode: str) -> None:
    m = big.machine.copy(xfs / "m")
    before_free = free_bytes(xfs)
    duplicate = m.analyze()["duplicate_bytes"]
    assert duplicate > 16 << 20

    result = m.consolidate(mode, "--json")
    assert result.code == EXIT_OK, result.err
    outcomes = result.json()["outcomes"]
    assert len(outcomes) == 10 and all(o["status"] == "done" and o["method"] == "reflink" for o in outcomes)
    keeps = {r["target"]: r["keep"] for run in m.journals() for r in run if r.get("type") == "begin"}
    for o in outcomes:
        target, kept = os.stat(o["path"]), os.stat(keeps[o["path"]])
        assert target.st_ino != kept.st_ino and target.st_nlink == 1 and kept.st_nlink == 1
        assert sha256_of(o["path"]) == sha256_of(keeps[o["path"]])
    assert_nothing_lost(m, big.tree, f"reflink ({mode})")
    gained = free_bytes(xfs) - before_free
    assert 0.9 * duplicate <= gained <= duplicate + (2 << 20), (gained, duplicate)

    assert m.cli("undo").code == EXIT_OK
    assert_restored(m, big.tree, f"reflink ({mode}) undone")
    assert abs(free_bytes(xfs) - before_free) <= 2 << 20

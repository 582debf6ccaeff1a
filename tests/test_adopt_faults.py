"""`consolidate --adopt` SIGKILLed after every journal record: nothing lost, and undo or the next run settles it.

The machine, made by the real client through LocalHub: a local_dir download of org/adopt whose files the
HF cache lacks (it holds only the ref huggingface_hub wrote). Adoption makes each file the cache's blob,
by a hard link made read-only (ext4; `--mode hardlink`, run as root and as nobody on a machine of
nobody's) or by a reflink (XFS, auto). For every N, a fresh copy is adopted with a SIGKILL right after
journal record N (a change journals begin, learned (the blob's inode, once it is placed), done):

- every local file still reads its bytes; every blob in the cache matches its name; every snapshot
  entry reads its file (none points at a missing blob);
- then `undo` (after recovery) gives back the machine as it was: the local files with their bytes, modes
  and mtimes, and no blob, snapshot entry or file list of the adopted files in the cache;
- or, on another copy, the next `consolidate --adopt` recovers and ends as an uninterrupted run does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modelcache.act.consolidate import execute
from modelcache.act.recover import recover
from modelcache.act.results import RunResult
from modelcache.act.undo import undo
from modelcache.errors import ModelcacheError
from modelcache.locations import Location
from modelcache.plan import Mode, fs_types_of, plan_consolidate
from modelcache.scan import scan_locations
from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_local_dir, random_bytes

from .fault_scenarios import assert_journal_closed, use_state
from .faults import Faults, sweep
from .filesystems import xfs_image
from .machine import Machine, as_unprivileged, client_env

KILL_ENV = "MODELCACHE_TEST_KILL_AFTER_RECORDS"
FILES = {
    "config.json": b'{"adopt": "faults"}',
    "model.safetensors": random_bytes(90_000, "adopt-faults-model"),
    "sub/adapter.safetensors": random_bytes(40_000, "adopt-faults-adapter"),
}
VARIANTS = {  # name: (file system, extra arguments, user)
    "hardlink-root": ("ext4", ("--mode", "hardlink"), "root"),
    "hardlink-nobody": ("ext4", ("--mode", "hardlink"), "nobody"),
    "reflink-xfs": ("xfs", (), "root"),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with client_env() as mp, LocalHub() as hub:
        root = tmp_path_factory.mktemp("adopt-faults")
        mp.setenv("HF_HOME", str(root / "hf_home"))
        m = Machine(root / "m")
        hub.add_commit("org/adopt", FILES)
        download_to_local_dir(hub, "org/adopt", m.models / "adopt", m.cache)  # the cache holds only refs/main
        yield m.root


@pytest.fixture
def where(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A folder nobody can enter; an XFS image mounted in it for the reflink variant."""
    path = Path(tempfile.mkdtemp(prefix="modelcache-adopt-"))
    path.chmod(0o755)
    try:
        if VARIANTS[request.node.callspec.params["variant"]][0] == "xfs":
            if os.geteuid() != 0:
                pytest.skip("mounting an XFS image needs root")
            with xfs_image(path) as mount:
                mount.chmod(0o755)
                yield mount
        else:
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fresh(template: Path, dest: Path, user: str) -> tuple[Machine, str | None]:
    shutil.copytree(template, dest, symlinks=True)
    m = Machine(dest)
    return m, as_unprivileged(m) if user == "nobody" else None


def local_files(m: Machine) -> dict[str, tuple[bytes, int, int]]:
    """The local_dir's model files: bytes, mode, mtime."""
    found = {}
    for name in FILES:
        path = m.models / "adopt" / name
        st = path.stat()
        found[name] = (path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return found


def cache_files(m: Machine) -> dict[str, bytes | None]:
    """Every file and symlink in the cache: the bytes read through it (None: a symlink to nothing)."""
    found: dict[str, bytes | None] = {}
    for dirpath, _dirs, files in os.walk(m.cache):
        for name in files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, m.cache)
            if rel.startswith(".locks"):
                continue
            try:
                found[rel] = Path(path).read_bytes()
            except FileNotFoundError:
                found[rel] = None
    return found


def assert_sound(m: Machine, where: str) -> None:
    """Each local file reads its bytes; each blob matches its name; each snapshot entry reads its file."""
    assert {name: data for name, (data, _, _) in local_files(m).items()} == FILES, where
    for rel, data in cache_files(m).items():
        parts = rel.split(os.sep)
        assert data is not None, f"{where}: {rel} leads nowhere"
        if parts[1] == "blobs" and not parts[-1].endswith(".incomplete"):
            name = parts[-1]
            digest = hashlib.sha256(data).hexdigest() if len(name) == 64 else git_blob_sha1(data)
            assert digest == name, f"{where}: blob {rel} does not match its name"
        elif parts[1] == "snapshots":
            assert data == FILES["/".join(parts[3:])], f"{where}: {rel} reads other bytes"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def adopt(m: Machine, variant: str, user: str | None, kill: int | None = None) -> int:
    _fs, extra, _user = VARIANTS[variant]
    env = {KILL_ENV: str(kill)} if kill is not None else None
    return m.cli("consolidate", "--adopt", "--yes", *extra, *m.roots(), "--no-discover", env=env, user=user).code


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_adopt_killed_after_every_journal_record_loses_nothing(template: Path, where: Path, variant: str) -> None:
    _fs, _extra, user_name = VARIANTS[variant]
    m, user = fresh(template, where / "whole", user_name)
    before_local, before_cache = local_files(m), cache_files(m)
    assert adopt(m, variant, user) == 0
    (journal,) = (m.state / "journal").glob("*.jsonl")
    records = len(journal.read_text().splitlines())
    end = cache_files(m)
    blobs = [rel for rel in end if rel.split(os.sep)[1] == "blobs"]
    assert len(blobs) == len(FILES), end  # every file adopted
    local_inodes = {(m.models / "adopt" / name).stat().st_ino for name in FILES}
    blob_inodes = {(m.cache / blob).stat().st_ino for blob in blobs}
    hardlinked = variant.startswith("hardlink")
    # a hard link: the same inodes; a reflink: inodes of their own
    assert (local_inodes == blob_inodes) if hardlinked else not local_inodes & blob_inodes
    assert all(not mode & 0o222 for _, mode, _ in local_files(m).values()) == hardlinked  # read-only if linked
    done_counts = set()
    for n in range(1, records):
        where_n = f"{variant}, killed after record {n} of {records}"
        for then in ("undo", "again"):
            m, user = fresh(template, where / f"kill-{n}-{then}", user_name)
            assert adopt(m, variant, user, kill=n) == -signal.SIGKILL, where_n
            assert_sound(m, where_n)
            if then == "undo":
                undone = m.cli("undo", "--json", user=user)
                done = undone.code == 0
                assert done or "nothing to undo" in undone.err, f"{where_n}: {undone.err}"
                done_counts.add(len(undone.json()["outcomes"]) if done else 0)
                assert local_files(m) == before_local, f"{where_n}, then undone: the local files are not as they were"
                assert cache_files(m) == before_cache, f"{where_n}, then undone: the cache is not as it was"
            else:
                assert adopt(m, variant, user) == 0, where_n
                assert cache_files(m) == end, f"{where_n}, then adopted again: not where an unkilled run ends"
                assert_sound(m, where_n)
            shutil.rmtree(m.root)
    assert done_counts == set(range(len(FILES) + 1)), done_counts  # kills landed before, between and after


# -- a fault at every write ------------------------------------------------------------------------------------


@dataclass
class Adopt:
    """`consolidate --adopt` in-process on a copy of the template, then recovery and undo; the sweep's scenario."""

    template: Path
    where: Path
    mode: Mode
    before_local: dict[str, tuple[bytes, int, int]] = field(init=False)
    before_cache: dict[str, bytes | None] = field(init=False)

    def __post_init__(self) -> None:
        m = Machine(self.template)
        self.before_local, self.before_cache = local_files(m), cache_files(m)

    def fresh(self, label: str) -> Machine:
        return fresh(self.template, self.where / label, "root")[0]

    def act(self, m: Machine) -> RunResult:
        with use_state(m.state):
            inventory = scan_locations(Location(str(m.cache), "test"), [Location(str(m.models), "test")])
            devices = {r.facts.dev for r in inventory.records}
            return execute(plan_consolidate(inventory, [], self.mode, fs_types_of(devices), adopt=True))

    def check(self, m: Machine, outcome: RunResult | ModelcacheError, fault: Faults | None) -> None:
        with use_state(m.state):
            recover()
            assert_journal_closed()
            assert_sound(m, str(fault))
            if fault is None:
                assert isinstance(outcome, RunResult) and [o.status for o in outcome.outcomes] == ["done"] * 3
            if isinstance(outcome, RunResult) and any(o.status == "done" for o in outcome.outcomes):
                undo(outcome.run_id)
        assert local_files(m) == self.before_local, fault
        assert cache_files(m) == self.before_cache, fault

    def done(self, m: Machine) -> None:
        shutil.rmtree(m.root)


@pytest.mark.parametrize("variant", ["hardlink-root", "reflink-xfs"])
def test_a_fault_at_every_write_of_an_adoption_loses_nothing(template: Path, where: Path, variant: str) -> None:
    """Each file-changing call of an adoption fails in turn (by hard link: link, chmod, snapshot, ref, file
    list; by reflink: the clone, its link to the blob name, the removal of its second name...): recovery,
    then undo, give back the machine as it was, and the cache never holds a blob that does not match its
    name. (A fault right after the blob got its name is where a first version lost track of its clone.)"""
    mode = Mode.HARDLINK if variant.startswith("hardlink") else Mode.AUTO
    swept = sweep(Adopt(template, where, mode))
    wanted = {"hardlink", "set_mode"} if mode is Mode.HARDLINK else {"clone_new", "hardlink", "discard"}
    assert wanted | {"symlink", "replace"} <= swept.fired_ops, swept.fired_ops

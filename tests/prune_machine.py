"""`prune`'s machines and the figures it must meet, computed independently.

The template: an HF cache made by the real huggingface_hub client through LocalHub (repos with their
last use set by `os.utime` on their blobs, one repo at two revisions with the older one detached, a
local_dir copy whose files are hard links to one repo's blobs), and an Ollama store. The independent
side walks the cache with `os.walk` and `os.lstat` and shares no code with modelcache: exclusive bytes
(per inode: every name of it seen in the cache, counted once), the paths of each unit (a repo folder;
a detached revision's snapshot folder, file list, markers, and the blobs only its snapshot links to),
and what is left once some units are gone.

Also the processes that act on a machine from outside: one that maps a blob and closes its file (run by
machine.py's `helper`, as its `HOLD_LOCKS` that holds a download's lock), the real client downloading
into it (`client_download`), and a prune that waits for its answer on a terminal (`prune_answered`).
"""

from __future__ import annotations

import hashlib
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from modelcache.act.prune import execute_prune
from modelcache.act.recover import recover
from modelcache.act.results import RunResult
from modelcache.errors import ModelcacheError
from modelcache.locations import Location, StoreLocation
from modelcache.prune import Budget, PrunePlan, plan_prune
from modelcache.scan import scan_locations
from modelcache.store_kind import StoreKind
from modelcache.testing import LocalHub
from modelcache.testing.builders import (
    client_env,
    download_to_cache,
    download_to_local_dir,
    ollama_manifest,
    random_bytes,
    write_tree,
)

from .fault_scenarios import assert_journal_closed, use_state
from .faults import Faults
from .machine import Machine, Result, as_user

DAY = 86400
# repo -> (days since its last use, size of its weights): sizes differ, so that every prefix frees its own total
REPOS = {
    "org/a": (90, 300_000),
    "org/pinned": (80, 120_000),
    "org/busy": (70, 110_000),
    "org/mapped": (65, 130_000),
    "org/linked": (50, 140_000),  # its files are hard-linked from a local_dir copy: frees nothing
    "org/f": (40, 160_000),
    "org/g": (20, 170_000),
    "org/located": (100, 115_000),  # old by its atimes, but `modelcache path` located it just now
}
REV = "org/rev"  # two revisions: the old one (detached) last used 60 days ago, main 2 days ago
OLD_DAYS, NEW_DAYS = 60, 2
OLD_ONLY = random_bytes(150_000, "prune-old-only")
SHARED = random_bytes(60_000, "prune-shared")
NEW_ONLY = random_bytes(90_000, "prune-new-only")
OLLAMA_A = random_bytes(80_000, "prune-ollama-a")  # llama-a:latest only
OLLAMA_SHARED = random_bytes(70_000, "prune-ollama-shared")  # both Ollama models


def weights(repo: str) -> bytes:
    return random_bytes(REPOS[repo][1], f"prune-{repo}")


def folder(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


@dataclass(frozen=True)
class PruneMachine(Machine):
    """A copy of the template: the HF cache, model folders (the hard-linked local_dir copy) and Ollama."""

    @property
    def ollama(self) -> Path:
        return self.root / "ollama"

    def repo(self, repo: str) -> Path:
        return self.cache / folder(repo)

    def old_commit(self) -> str:
        return (self.root / "old-commit").read_text()

    def env(self) -> dict[str, str]:
        # no other tool's store is found by chance: HOME is the machine's own, and so are huggingface_hub's files
        home = self.root / "home"
        return {**super().env(), "HOME": str(home), "HF_HOME": str(home / ".cache" / "huggingface"),
                "MODELCACHE_CONFIG": str(self.root / "config.toml")}  # fmt: skip

    def contents(self) -> dict[str, tuple[str, bytes | None]]:
        """Every path of its HF cache, Ollama store and model folders, read without moving an atime."""
        return quiet_contents(self.cache, self.ollama, self.models)

    def prune(self, *args: str, user: str | None = None, env: dict[str, str] | None = None) -> Result:
        return self.cli("prune", "--cache-dir", str(self.cache), *args, user=user, env=env)


def build_template(hub: LocalHub, root: Path) -> Path:
    cache = root / "cache"
    with client_env():
        for repo in REPOS:
            hub.add_commit(repo, {"config.json": repo.encode(), "model.safetensors": weights(repo)})
            download_to_cache(hub, repo, cache)
        old = hub.add_commit(REV, {"config.json": b'{"v": 1}', "old.safetensors": OLD_ONLY, "s.safetensors": SHARED})
        download_to_cache(hub, REV, cache)
        hub.add_commit(REV, {"config.json": b'{"v": 2}', "new.safetensors": NEW_ONLY, "s.safetensors": SHARED})
        download_to_cache(hub, REV, cache)  # refs/main moves on: the first commit is detached
        download_to_local_dir(hub, "org/linked", root / "models" / "linked", root / "scratch")
    shutil.rmtree(root / "scratch")
    (root / "old-commit").write_text(old)
    sha = hashlib.sha256
    write_tree(root / "ollama", {
        f"blobs/sha256-{sha(OLLAMA_A).hexdigest()}": OLLAMA_A,
        f"blobs/sha256-{sha(OLLAMA_SHARED).hexdigest()}": OLLAMA_SHARED,
        f"blobs/sha256-{sha(b'{}').hexdigest()}": b"{}",
        "manifests/registry.ollama.ai/library/llama-a/latest": ollama_manifest(
            [(OLLAMA_A, "application/vnd.ollama.image.model"), (OLLAMA_SHARED, "application/vnd.ollama.image.adapter")]
        ),
        "manifests/registry.ollama.ai/library/llama-b/latest": ollama_manifest(
            [(OLLAMA_SHARED, "application/vnd.ollama.image.model")]),
    })  # fmt: skip
    for sub in ("state", "home"):
        (root / sub).mkdir()
    return root


def fresh(template: Path, dest: Path, now: float | None = None) -> PruneMachine:
    """A copy of the template at `dest`, its last uses set (atimes of the blobs, days back from `now`)."""
    m = PruneMachine(template).copy(dest)
    link_local_copy(m)
    set_last_uses(m, now or time.time())
    return m


def link_local_copy(m: PruneMachine) -> None:
    """The local_dir copy of org/linked becomes hard links to the cache's blobs (as `consolidate --mode
    hardlink` leaves it); made on each copy, since copying a tree makes every name a file of its own."""
    snapshot = next((m.repo("org/linked") / "snapshots").iterdir())
    for name in ("config.json", "model.safetensors"):
        local = m.models / "linked" / name
        tmp = local.with_suffix(".tmp")
        os.link(os.path.realpath(snapshot / name), tmp)
        os.replace(tmp, local)


def set_last_uses(m: PruneMachine, now: float) -> None:
    for repo, (days, _size) in REPOS.items():
        _age(m.repo(repo) / "blobs", now - days * DAY)
    _age(m.repo(REV) / "blobs", now - NEW_DAYS * DAY)
    old_only = {os.path.basename(os.readlink(p)) for p in _links(m.repo(REV) / "snapshots" / m.old_commit())}
    new = {os.path.basename(os.readlink(p)) for c in (m.repo(REV) / "snapshots").iterdir() if c.name != m.old_commit()
           for p in _links(c)}  # fmt: skip
    for name in old_only - new:
        blob = m.repo(REV) / "blobs" / name
        os.utime(blob, (now - OLD_DAYS * DAY, blob.stat().st_mtime))
    _age(m.ollama / "blobs", now - 30 * DAY)
    blob = m.ollama / "blobs" / f"sha256-{hashlib.sha256(OLLAMA_A).hexdigest()}"
    if blob.exists():
        os.utime(blob, (now - 45 * DAY, blob.stat().st_mtime))


def _age(blobs: Path, atime: float) -> None:
    for blob in blobs.iterdir() if blobs.is_dir() else ():
        os.utime(blob, (atime, blob.stat().st_mtime))


def _links(snapshot: Path) -> list[str]:
    return [os.path.join(d, f) for d, dirs, files in os.walk(snapshot) for f in [*files, *dirs]
            if os.path.islink(os.path.join(d, f))]  # fmt: skip


# -- the independent side ----------------------------------------------------------------------------------


def inodes(root: Path) -> dict[tuple[int, int], tuple[int, int, list[str]]]:
    """(dev, ino) -> (size, st_nlink, the names of it under `root`), for every regular file."""
    found: dict[tuple[int, int], tuple[int, int, list[str]]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.isfile(path) and not os.path.islink(path):
                found.setdefault((st.st_dev, st.st_ino), (st.st_size, st.st_nlink, []))[2].append(path)
    return found


def exclusive_bytes(*roots: Path, without: Iterable[str] = ()) -> int:
    """Bytes of the inodes whose every name lies under `roots` (each once), left when the paths `without`
    (files and whole folders) are gone: an inode counts while one of its names is not among them."""
    gone = list(without)
    names: dict[tuple[int, int], tuple[int, int, list[str]]] = {}
    for root in roots:
        for key, (size, nlink, paths) in inodes(root).items():
            names.setdefault(key, (size, nlink, []))[2].extend(paths)
    total = 0
    for size, nlink, paths in names.values():
        left = [p for p in paths if not any(p == g or p.startswith(g + os.sep) for g in gone)]
        if len(paths) >= nlink and left:
            total += size
    return total


def revision_paths(repo_dir: Path, commit: str) -> list[str]:
    """A detached revision as prune removes it: its snapshot, file list, markers, and the blobs only it links to."""
    snapshots = repo_dir / "snapshots"
    mine = {os.path.basename(os.readlink(p)) for p in _links(snapshots / commit)}
    others = {os.path.basename(os.readlink(p)) for c in snapshots.iterdir() if c.name != commit for p in _links(c)}
    paths = [str(snapshots / commit), str(repo_dir / "trees" / f"{commit}.json"), str(repo_dir / ".no_exist" / commit)]
    return paths + [str(repo_dir / "blobs" / name) for name in sorted(mine - others)]


def broken_links(cache: Path) -> list[str]:
    """Snapshot links that lead nowhere (a snapshot pointing at a missing blob)."""
    return [p for snap in cache.glob("*/snapshots") for p in _links(snap) if not os.path.exists(p)]


def hf_cache_ls(cache: Path) -> tuple[set[str], list[str]]:
    """What huggingface_hub's own scan (`hf cache ls`) sees: (repo ids, warnings)."""
    from huggingface_hub import scan_cache_dir

    report = scan_cache_dir(cache)
    return {r.repo_id for r in report.repos}, [str(w) for w in report.warnings]


# -- helper processes ----------------------------------------------------------------------------------------

# safetensors' way: map the file, close it; only /proc/<pid>/maps shows the mapping then. Through libc: Python's
# own mmap keeps a duplicate of the descriptor open (it would show in /proc/<pid>/fd too).
MAP_AND_CLOSE = (
    "import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); libc.mmap.restype = ctypes.c_void_p; "
    "libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]; "
    "fd = os.open(sys.argv[1], os.O_RDONLY); size = os.fstat(fd).st_size; "
    "addr = libc.mmap(None, size, 1, 2, fd, 0); os.close(fd); "  # PROT_READ, MAP_PRIVATE
    "assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno(); "
    "assert not [n for n in os.listdir('/proc/self/fd') if os.path.realpath('/proc/self/fd/' + n) == sys.argv[1]]; "
    "print('ready', flush=True); sys.stdin.read()"
)


# The real client in a process of its own (so that it runs as the machine's user): `snapshot_download` of a repo
# at a revision (a branch, a tag or a commit hash) into a cache, from the Hub the environment names; the files
# that match the patterns after those, if any.
CLIENT_DOWNLOAD = (
    "import sys; from huggingface_hub import snapshot_download; print(snapshot_download(sys.argv[1], "
    "revision=sys.argv[2], cache_dir=sys.argv[3], allow_patterns=sys.argv[4:] or None, token=False))"
)


def client_download(m: PruneMachine, repo: str, revision: str = "main", user: str | None = None, *only: str) -> Path:
    """`snapshot_download` by huggingface_hub itself (no modelcache code: it records no use) into the machine's
    cache, as `user` (`only`: the files matching these patterns); returns the snapshot folder."""
    done = subprocess.run(
        [*as_user(user), sys.executable, "-c", CLIENT_DOWNLOAD, repo, revision, str(m.cache), *only],
        capture_output=True, env={**os.environ, **m.env()}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return Path(done.stdout.decode().strip())


# typer.confirm's question, asked once the table is printed; and what a terminal's output holds besides text
PROMPT = b"[y/N]: "
TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def prune_answered(m: PruneMachine, *args: str, meanwhile: Callable[[], object], user: str | None = None) -> Result:
    """`modelcache prune ARGS` without --yes on a terminal (a pty), as a user runs it: it plans, prints its table
    and asks; `meanwhile` runs while the question waits (the plan made, nothing removed yet), then the answer is
    yes. Its terminal's transcript (stdout and stderr) is `out`."""
    main, side = pty.openpty()
    proc = subprocess.Popen(
        [*as_user(user), sys.executable, "-m", "modelcache", "prune", "--cache-dir", str(m.cache), *args],
        stdin=side, stdout=side, stderr=side, env={**os.environ, **m.env(), "COLUMNS": "200", "NO_COLOR": "1"},
    )  # fmt: skip
    os.close(side)
    try:
        seen = _read(main, PROMPT)
        assert seen.endswith(PROMPT), seen.decode(errors="replace")  # it asks, and waits
        meanwhile()
        os.write(main, b"y\n")
        seen += _read(main, None)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    text = TERMINAL_CODES.sub("", seen.decode("utf-8", "backslashreplace"))
    assert "Traceback" not in text, text
    return Result(code, text, "")


def _read(fd: int, until: bytes | None, timeout: float = 120) -> bytes:
    """What the terminal `fd` shows until `until` (None: until the process ends and closes it)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while until is None or not seen.endswith(until):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no more output after {timeout} s: {seen.decode(errors='replace')}"
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed
            chunk = b""
        if not chunk:
            break
        seen += chunk
    return seen


def blob_of(m: PruneMachine, repo: str, name: str = "model.safetensors") -> Path:
    snapshot = next((m.repo(repo) / "snapshots").iterdir())
    return Path(os.path.realpath(snapshot / name))


# -- the kill and fault sweeps' scenario (tests/test_faults.py) ------------------------------------------------

KEEP = "org/[!ar]*"  # every HF repo but org/a and org/rev
OLDER_THAN_DAYS = 42  # org/a (90 days), org/rev's old revision (60) and Ollama's llama-a (45) go
SWEEP_ARGS = ("--older-than", f"{OLDER_THAN_DAYS}d", "--keep", KEEP)


def quiet_contents(*roots: Path) -> dict[str, tuple[str, bytes | None]]:
    """Every path under `roots` (relative to its root's parent): its kind and the sha256 of what it reads,
    read with O_NOATIME (as their owner, root or the CLI's user): a plain read would make them look used."""
    found: dict[str, tuple[str, bytes | None]] = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(dirpath, name)
                key = os.path.relpath(path, root.parent)
                if os.path.isdir(path) and not os.path.islink(path):
                    found[key] = ("dir", None)
                    continue
                kind = "link" if os.path.islink(path) else "file"
                try:
                    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOATIME", 0))
                except OSError:
                    found[key] = (kind, None)
                    continue
                with os.fdopen(fd, "rb") as f:
                    found[key] = (kind, hashlib.sha256(f.read()).digest())
    return found


@dataclass(frozen=True)
class SweepUnits:
    """The units the sweep's prune removes, as paths relative to the machine's root: each whole, or gone."""

    repo: str  # org/a's folder
    revision: list[str]  # the old revision of org/rev: snapshot folder first, then its file list and own blobs
    manifest: str  # Ollama's llama-a
    own_blob: str  # the blob only llama-a names

    @classmethod
    def of(cls, m: PruneMachine) -> SweepUnits:
        rel = lambda p: os.path.relpath(p, m.root)  # noqa: E731
        blob = f"blobs/sha256-{hashlib.sha256(OLLAMA_A).hexdigest()}"
        return cls(
            rel(m.repo("org/a")),
            [rel(p) for p in revision_paths(m.repo(REV), m.old_commit()) if os.path.lexists(p)],
            "ollama/manifests/registry.ollama.ai/library/llama-a/latest",
            "ollama/" + blob,
        )

    def all_paths(self) -> list[str]:
        return [self.repo, *self.revision, self.manifest, self.own_blob]


def whole_or_gone(m: PruneMachine, before: dict[str, tuple[str, bytes | None]], units: SweepUnits, why: object) -> None:
    """After a run stopped anywhere: each unit is whole or gone as its tool sees it (a repo folder, a
    revision's snapshot with every link it had, a manifest with every blob it names), no snapshot links to
    a missing blob, and everything else keeps its bytes."""
    after = m.contents()
    repo = [k for k in before if k == units.repo or k.startswith(units.repo + os.sep)]
    assert all(after.get(k) == before[k] for k in repo) or not any(k in after for k in repo), why
    snapshot = units.revision[0]
    if os.path.lexists(m.root / snapshot):
        assert all(after.get(k) == before[k] for k in before if k.startswith(snapshot + os.sep)), why
    if os.path.lexists(m.root / units.manifest):
        assert after.get(units.own_blob) == before[units.own_blob], why
    assert broken_links(m.cache) == [], why
    removed = units.all_paths()
    for key, value in before.items():
        if not any(key == r or key.startswith(r + os.sep) for r in removed) and value[0] != "dir":
            assert after.get(key) == value, (why, key)  # not pruned: kept, bytes and all


def no_aside_left(m: PruneMachine) -> None:
    for root in (m.cache, m.ollama):
        assert not [n for n in os.listdir(root) if n.startswith(".modelcache-")], os.listdir(root)


@dataclass
class Prune:
    """`execute_prune` of the plan `plan_prune` makes (SWEEP_ARGS, the HF cache and Ollama) for a copy of the
    template, in this process (so that tests/faults.py reaches its writers)."""

    template: Path
    where: Path

    def fresh(self, label: str) -> PruneMachine:
        return fresh(self.template, self.where / label)

    def plan(self, m: PruneMachine) -> PrunePlan:
        with use_state(m.state):
            store = StoreLocation(StoreKind.OLLAMA, str(m.ollama), "--store")
            inventory = scan_locations(Location(str(m.cache), "--cache-dir"), [], [store])
            budget = Budget(older_than=OLDER_THAN_DAYS * DAY)
            return plan_prune(inventory, str(m.cache), budget, keep=[(KEEP, "--keep")], stores=[store])

    def act(self, m: PruneMachine) -> RunResult:
        plan = self.plan(m)
        with use_state(m.state):
            return execute_prune(plan)

    @cached_property
    def before(self) -> dict[str, tuple[str, bytes | None]]:
        m = self.fresh("before")
        try:
            return m.contents()
        finally:
            shutil.rmtree(m.root)

    @cached_property
    def units(self) -> SweepUnits:
        m = self.fresh("units")
        try:
            return SweepUnits.of(m)
        finally:
            shutil.rmtree(m.root)

    @cached_property
    def pruned(self) -> dict[str, tuple[str, bytes | None]]:
        """The end state of a run without faults on an identical machine."""
        m = self.fresh("reference")
        try:
            result = self.act(m)
            assert [o.status for o in result.outcomes] == ["done"] * 3, result
            return m.contents()
        finally:
            shutil.rmtree(m.root)

    def check(self, m: PruneMachine, outcome: RunResult | ModelcacheError, fault: Faults | None) -> None:
        if fault is None:
            assert isinstance(outcome, RunResult) and [o.status for o in outcome.outcomes] == ["done"] * 3, outcome
        for o in outcome.outcomes if isinstance(outcome, RunResult) else ():
            assert os.path.lexists(o.target) == (o.status != "done"), (fault, o)  # the report says what the disk does
        self.settles(m, fault, self.act)

    def settles(self, m: PruneMachine, why: object, again: Callable[[PruneMachine], object]) -> None:
        """After a run stopped by `why` (a fault, a kill): each unit whole or gone and all else as it was;
        recovery closes the journal and leaves no folder aside; and a run without a fault (`again`) ends
        where one never stopped does."""
        whole_or_gone(m, self.before, self.units, why)
        with use_state(m.state):
            recover()
            assert_journal_closed()
        no_aside_left(m)
        whole_or_gone(m, self.before, self.units, why)
        for unit in ([self.units.repo], self.units.revision, [self.units.manifest, self.units.own_blob]):
            there = [os.path.lexists(m.root / p) for p in unit]
            assert all(there) or not any(there), (why, unit, there)  # recovered: every part of it, or none
        again(m)
        assert m.contents() == self.pruned, why

    def done(self, m: PruneMachine) -> None:
        shutil.rmtree(m.root)

"""Reads leave no trace (issue 14, item 2): modelcache's reads keep every file's access time.

On relatime mounts (the default) a read moves a file's atime to now when it is over a day old, and
`hf cache ls --sort accessed`, `--filter accessed>30d` and least-recently-used cleanups rank models
by it. Every test here first sets the atimes of the files it watches two days back, so that a read
made without `O_NOATIME` moves them, and checks (`atime_can_move`) that this mount really moves
them: on a `noatime` mount nothing could fail, and the tests are skipped with that reason.

1. On random machines (tests/strategies.py), `analyze`, `consolidate --dry-run`, `verify --all`
   and `list` leave every file's atime and mtime as they were, run by the files' owner (user
   nobody when the tests run as root: O_NOATIME by ownership) and by root (by privilege).
2. `consolidate --yes` then `undo`, in every mode, and `download` reusing local copies keep them
   too (the two copies compared, the copies restored from, the candidates hashed).
3. As user nobody on files root owns, where the kernel refuses O_NOATIME (EPERM), every command
   still reads them all; their atimes then move as with any reader (the README says so), and the
   files nobody owns keep theirs.
4. The issue's "Done when": `hf cache ls --sort accessed` (the real CLI) prints the same before
   and after `modelcache analyze`.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcache.duplicates import FINGERPRINT_MIN_SIZE
from modelcache.plan import Mode
from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_cache, random_bytes

from .machine import DOCUMENTED_EXITS, Result, assert_tidy, expected_figures, mounted, run_cli
from .strategies import (
    AS_ROOT,
    CLI_USER,
    NOBODY,
    PERMS_BITE,
    SHA,
    TWO_DAYS,
    Machine,
    Spec,
    build,
    examples,
    hand_over,
    specs,
)

FEW = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}
DAY_NS = 86400 * 10**9
READ_ONLY = (["list"], ["verify", "--all"], ["analyze"], ["consolidate", "--dry-run"])
# copies in every store, a lookalike, bit rot (verify reads a corrupt file whole)
EVERY_STORE = [("ollama", "A"), ("lmstudio", "A-hardlink"), ("modelscope", "B"), ("llamacpp", "SMALL")]
BUSY = Spec(
    extras=[("copy", "A", "c.bin", "plain"), ("copy", "B", "d.bin", "deep/er"), ("lookalike", "B", "l.bin", "plain")],
    stores=EVERY_STORE,
    corrupt=[("bitrot", "empty"), ("local-bitrot", "empty")],
)


# -- does a read move an atime here? -----------------------------------------------------------------------


def mount_options(path: Path) -> tuple[str, str]:
    """(mount point, per-mount options) of the mount holding `path`, from /proc/self/mountinfo."""
    real = os.path.realpath(path)
    best = ("", "")
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda o: chr(int(o[1], 8)), fields[4])  # `\040` is a space
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):  # the deepest; of stacked mounts, the last
                best = (point, fields[5])
    return best


def atime_can_move(folder: Path) -> str | None:
    """Why a read cannot move an atime in `folder` (then no test of it can fail), or None.

    The mount options say noatime; else a file with an atime two days old is read plainly (as
    modelcache read before O_NOATIME), and its atime must move.
    """
    point, options = mount_options(folder)
    if "noatime" in options.split(","):
        return f"{folder} is on {point}, mounted noatime ({options}): reads never move an atime there"
    fd, name = tempfile.mkstemp(dir=folder)
    os.close(fd)
    probe = Path(name)
    try:
        probe.write_bytes(b"probe")
        old = probe.stat().st_mtime_ns - 2 * DAY_NS
        os.utime(probe, ns=(old, probe.stat().st_mtime_ns))
        probe.read_bytes()
        if probe.stat().st_atime_ns == old:
            return f"{folder} is on {point} ({options}), where a read did not move an atime two days old"
    finally:
        probe.unlink()
    return None


def test_the_mount_check_tells_noatime_from_relatime(tmp_path: Path) -> None:
    """The skip is right: a noatime mount is named, and on a relatime one the probe read moves the atime."""
    for options, moves in (("noatime", False), ("relatime", True), ("strictatime", True)):
        with mounted(tmp_path / options, "-t", "tmpfs", "-o", f"{options},size=1m", source="tmpfs",
                     why="needs root to mount a tmpfs") as where:  # fmt: skip
            why = atime_can_move(where)
            assert (why is None) == moves, (options, why)
            assert moves or f"mounted noatime ({mount_options(where)[1]})" in str(why)


@pytest.fixture(scope="module")
def atimes_move() -> None:
    why = atime_can_move(Path(tempfile.gettempdir()))
    if why is not None:
        pytest.skip(why)


# -- the times of every file -------------------------------------------------------------------------------

Times = dict[str, tuple[int, int, int, int]]  # path: (dev, ino, atime_ns, mtime_ns)


def regular_files(roots: Iterable[Path]) -> list[str]:
    found = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            found += [p for f in files if stat.S_ISREG(os.lstat(p := os.path.join(dirpath, f)).st_mode)]
    return found


def age(roots: Iterable[Path]) -> Times:
    """Set the atime of every regular file under `roots` two days back (mtime kept); their times then."""
    then = time.time_ns() - TWO_DAYS * 10**9
    for path in regular_files(roots):
        os.utime(path, ns=(then, os.lstat(path).st_mtime_ns), follow_symlinks=False)
    return times(roots)


def times(roots: Iterable[Path]) -> Times:
    """Only stats: reading a file here would move what is measured."""
    found = {}
    for path in regular_files(roots):
        st_ = os.lstat(path)
        found[path] = (st_.st_dev, st_.st_ino, st_.st_atime_ns, st_.st_mtime_ns)
    return found


def moved(before: Times, after: Times) -> dict[str, str]:
    """The files (of `before`, still there) whose atime or mtime changed, and how."""
    return {
        path: f"atime {then[2]} -> {now[2]}, mtime {then[3]} -> {now[3]}"
        for path, then in before.items()
        if (now := after.get(path)) is not None and now[2:] != then[2:]
    }


def by_inode(t: Times) -> dict[tuple[int, int], tuple[int, int]]:
    return {(dev, ino): (atime, mtime) for dev, ino, atime, mtime in t.values()}


def watched(m: Machine) -> list[Path]:
    """Every folder with files modelcache may read: the roots, and the sentinel's outside them."""
    return [*m.roots, m.sentinel.parent]


def run(m: Machine, *args: str, user: str | None, env: dict[str, str] | None = None) -> Result:
    result = run_cli(*args, "--json", env={**m.env, **(env or {})}, user=user)
    assert_tidy(result, DOCUMENTED_EXITS, " ".join(args))
    return result


# -- 1. the read-only commands, on random machines ---------------------------------------------------------


@settings(max_examples=examples(8), **FEW)
@given(spec=specs(perms=PERMS_BITE), as_owner=st.booleans())
def test_read_only_commands_keep_every_files_atime_and_mtime(
    atimes_move: None, template: Path, spec: Spec, as_owner: bool
) -> None:
    """Run by the files' owner (nobody, owning the machine, when we are root) or by root (a user whom
    the kernel grants O_NOATIME on every file)."""
    m = build(template, spec)
    user = CLI_USER if as_owner else None
    if as_owner:
        hand_over(m)
    try:
        before = age(watched(m))
        for args in READ_ONLY:
            run(m, *args, *m.where(), user=user)
            changed = moved(before, times(watched(m)))
            assert not changed, (args[0], changed)
    finally:
        m.cleanup()


# -- 2. the commands that compare, copy back and reuse -----------------------------------------------------


@pytest.mark.parametrize("mode", [m.value for m in Mode])
def test_consolidate_then_undo_keep_every_atime(atimes_move: None, template: Path, mode: str) -> None:
    """consolidate reads both copies of each change (guards.read_both); undo copies the kept bytes back
    (fsops.copy_to) with the times it journaled. Every inode keeps its times through the run, and after
    undo every path has its own again."""
    m = build(template, BUSY)
    hand_over(m)
    try:
        before = age(watched(m))
        done = run(m, "consolidate", "--yes", "--mode", mode, *m.where(), user=CLI_USER).json()
        assert done["done"] or mode == "reflink", done  # (no clones on this file system: nothing to do)
        after = by_inode(times(watched(m)))
        assert {i: t for i, t in by_inode(before).items() if i in after and after[i] != t} == {}
        if done["done"]:
            run(m, "undo", user=CLI_USER)
        assert moved(before, times(watched(m))) == {}
    finally:
        m.cleanup()


def test_download_reuse_keeps_the_atime_of_what_it_hashes(
    atimes_move: None, template: Path, prop_hub: LocalHub
) -> None:
    """org/four's a.safetensors and config.json are on disk already: download hashes those copies
    (act/place.py) before it links or copies them into the cache."""
    m = build(template, BUSY)
    hand_over(m)
    try:
        before = age(watched(m))
        got = run(m, "download", "org/four", "--cache-dir", str(m.cache), "--models", str(m.models),
                  user=CLI_USER, env={"HF_ENDPOINT": prop_hub.url}).json()  # fmt: skip
        assert got["reused"], got  # the reuse path ran (else nothing was hashed)
        after = by_inode(times(watched(m)))
        assert {i: t for i, t in by_inode(before).items() if i in after and after[i] != t} == {}
    finally:
        m.cleanup()


def test_analyze_keeps_the_atime_of_large_files_it_fingerprints(atimes_move: None, tmp_path: Path) -> None:
    """Same-size large files that claim nothing are told apart by their first and last 64 KiB
    (digests.edge_fingerprint) before any is hashed whole: x and z are equal, y differs at its start."""
    big = random_bytes(FINGERPRINT_MIN_SIZE, "atime-big")
    folder = tmp_path / "models" / "plain"
    folder.mkdir(parents=True)
    for name, content in {"x.bin": big, "y.bin": bytes([big[0] ^ 1]) + big[1:], "z.bin": big}.items():
        (folder / name).write_bytes(content)
    (tmp_path / "cache").mkdir()
    before = age([tmp_path / "models"])
    env = {"MODELCACHE_STATE": str(tmp_path / "state"), "MODELCACHE_INDEX": str(tmp_path / "state" / "d.sqlite")}
    analyzed = run_cli("analyze", "--json", "--cache-dir", tmp_path / "cache", "--models", tmp_path / "models",
                       "--no-discover", env=env)  # fmt: skip
    assert analyzed.code == 0 and analyzed.json()["duplicate_bytes"] == len(big), analyzed.err
    assert moved(before, times([tmp_path / "models"])) == {}


# -- 3. files of another owner: O_NOATIME refused -----------------------------------------------------------


@pytest.mark.skipif(not AS_ROOT, reason="needs files of another owner (root's) and a user to run as (nobody)")
def test_files_of_another_owner_are_read_and_their_atime_moves(atimes_move: None, template: Path) -> None:
    """nobody reads root's cache and stores (O_NOATIME refused: EPERM, opened plainly) and its own
    model folder (O_NOATIME granted). Every command reads every file it did before; root's files read
    get a new atime, as from any reader (README: it cannot be kept, nor put back: utime needs the
    same ownership); nobody's keep theirs; no mtime moves."""
    if CLI_USER is None:
        pytest.skip("user nobody cannot run this Python")
    m = build(template, BUSY)
    uid = int(NOBODY)
    (m.root / "home").mkdir()
    for path in [m.state, m.root / "home", *regular_files([m.models])]:
        os.chown(path, uid, uid)
    try:
        figures = expected_figures(m.cache, [m.models], m.stores)  # reads every file: before the aging
        before = age(watched(m))
        start = time.time_ns()
        analyzed = run(m, "analyze", *m.where(), user=NOBODY).json()
        assert {k: analyzed[k] for k in figures} == figures
        verified = run(m, "verify", "--all", *m.where(), user=NOBODY).json()
        assert {c["path"] for c in verified["corrupt"]} == {str(p) for p in m.corrupt}
        for args in (["list"], ["consolidate", "--dry-run"]):
            run(m, *args, *m.where(), user=NOBODY)
        for result in (analyzed, verified):
            assert not [w for w in result["warnings"] if "not permitted" in json.dumps(w)], result["warnings"]
        after = times(watched(m))
        theirs = {p: t for p, t in moved(before, after).items() if os.lstat(p).st_uid != uid}
        assert moved(before, after).keys() == theirs.keys()  # nobody's own files keep their atimes
        assert all(after[p][3] == before[p][3] and after[p][2] >= start for p in theirs)  # mtime kept, atime now
        blob_a = str(m.cache / "models--org--one" / "blobs" / SHA["A"])
        assert blob_a in theirs  # root's blob of A, hashed in a group of copies: read through the fallback
    finally:
        m.cleanup()


# -- 4. the "Done when": hf cache ls --sort accessed -------------------------------------------------

SHARED = random_bytes(40_000, "atime-shared")
# Days since each repo was last used. beta and delta share a file, so analyze hashes their blobs; they
# are the two oldest, so that a read moving their atimes to now reorders the list.
REPOS = {
    "org/alpha": (3, {"model.safetensors": random_bytes(30_000, "atime-alpha")}),
    "org/beta": (40, {"model.safetensors": SHARED, "config.json": b'{"beta": 1}'}),
    "org/gamma": (10, {"model.safetensors": random_bytes(31_000, "atime-gamma")}),
    "org/delta": (35, {"weights/model.safetensors": SHARED, "config.json": b'{"delta": 1}'}),
}


def hf_cache_ls(cache: Path, *args: str) -> str:
    """The real `hf cache ls` of huggingface_hub, on `cache`."""
    hf = Path(sys.executable).parent / "hf"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "NO_COLOR": "1"}
    done = subprocess.run([str(hf), "cache", "ls", *args], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_hf_cache_ls_sort_accessed_is_the_same_after_analyze(
    atimes_move: None, local_hub: LocalHub, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    now = time.time_ns()
    for repo, (days, files) in REPOS.items():
        local_hub.add_commit(repo, files)
        folder = download_to_cache(local_hub, repo, cache).parents[1]
        for blob in (folder / "blobs").iterdir():
            os.utime(blob, ns=(now - days * DAY_NS, blob.stat().st_mtime_ns))
    listed = hf_cache_ls(cache, "--sort", "accessed")
    order = hf_cache_ls(cache, "--sort", "accessed", "--quiet").split()
    old = hf_cache_ls(cache, "--filter", "accessed>30d", "--quiet").split()
    assert order == ["model/org/alpha", "model/org/gamma", "model/org/delta", "model/org/beta"], order
    assert sorted(old) == ["model/org/beta", "model/org/delta"], old

    state = tmp_path / "state"
    env = {"HF_HUB_CACHE": str(cache), "MODELCACHE_STATE": str(state), "MODELCACHE_INDEX": str(state / "d.sqlite"),
           "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "home" / "cache")}  # fmt: skip
    analyzed = run_cli("analyze", "--no-discover", "--json", env=env)
    assert analyzed.code == 0, analyzed.err
    assert analyzed.json()["duplicate_bytes"] == len(SHARED)  # beta's and delta's blobs were hashed

    assert hf_cache_ls(cache, "--sort", "accessed") == listed
    assert hf_cache_ls(cache, "--sort", "accessed", "--quiet").split() == order
    assert hf_cache_ls(cache, "--filter", "accessed>30d", "--quiet").split() == old

"""Processes that change files at the same time: the writer lock, and a download that clean must leave alone.

1. Two `consolidate --yes` started together on one machine, and two `apply --yes` of one saved
   plan (both hold the plan before either acts): the writer lock (journal.WriterLock) lets one
   change files at a time (the other waits, or gives up with a one-line error). After both:
   every path reads its old bytes, each duplicate was consolidated once (no path is done by both
   runs), the journals are consistent (every `begin` has its `done` or `abandoned`, every run
   ended, and no two runs changed files at the same time), and `undo` of the run that made the
   changes gives back the exact earlier tree.
2. `clean --yes` and `consolidate --yes` started together: the garbage goes (or is skipped with
   a reason), the duplicates are consolidated, every other path keeps its bytes, and undo restores
   what consolidate changed. Then the other order on purpose, for every mode: consolidate keeps a
   blob no snapshot uses and clean removes it afterwards; no byte may go with it, `undo` (which
   never picks clean's run) restores the tree.
3. A `snapshot_download` into the same cache (slowed down by LocalHub) while `clean --yes
   --older-than 0` runs over and over: the download completes, its files are intact, and the whole
   cache is consistent afterwards (every link resolves to a blob whose bytes match its name, every
   ref names a snapshot, `verify` finds nothing corrupt, `path` finds the new snapshot complete).

Runs are started at the same moment, not at chosen times; no test asserts a timing. The tests print
how often the runs really overlapped.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelcache.testing import LocalHub
from modelcache.testing.builders import CLIENT_ENV, random_bytes, write_tree

from .machine import Machine as BaseMachine
from .machine import Result, download_repos, finish

EXIT_OK, EXIT_WARNINGS, EXIT_ERROR = 0, 1, 2
# What auto made on ext4 before it weighed the next steps (as root it now leaves local copies alone).
HARDLINK = ("--mode", "hardlink")
LOCKED_OUT = "another modelcache process is changing files"
OLD = time.time() - 3 * 86400
SIZE = 1_500_000  # per weights file: hashing and comparing take a moment, so that the runs overlap


@dataclass(frozen=True)
class Machine(BaseMachine):
    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "HOME": str(self.root / "home"),  # no other tool's store is found
            **CLIENT_ENV,
        }

    def roots(self) -> list[str]:
        return [*super().roots(), "--no-discover"]


def together(m: Machine, *commands: list[str]) -> list[Result]:
    """Start every command at once, then wait for all of them."""
    procs = [m.start(*args) for args in commands]
    return [finish(p) for p in procs]


def view(*roots: Path) -> dict[str, tuple[Any, ...]]:
    """Every path: type, bytes read through it, link text, mode, mtime (files), link count (files)."""
    found: dict[str, tuple[Any, ...]] = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            for name in [*dirs, *files]:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if stat.S_ISDIR(st.st_mode):
                    found[path] = ("dir",)
                elif stat.S_ISLNK(st.st_mode):
                    data = Path(path).read_bytes() if os.path.isfile(path) else None
                    found[path] = ("link", os.readlink(path), data and hashlib.sha256(data).hexdigest())
                else:
                    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                    found[path] = ("file", digest, st.st_mode, st.st_mtime_ns, st.st_nlink)
    return found


def same_bytes(
    before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]], where: str, m: Machine | None = None
) -> None:
    """Every file and link that was there reads the same bytes (consolidate turns copies into links); one
    that is gone was removed by `--mode delete`, journaled with a kept copy that holds its bytes."""
    removed: dict[str, str] = {}
    for records in m.journals() if m is not None else []:
        removed |= {r["target"]: r["keep"] for r in records if r["type"] == "begin" and r.get("op") == "delete"}
    for path, entry in before.items():
        if entry[0] == "dir":
            continue
        old = entry[1] if entry[0] == "file" else entry[2]
        now = after.get(path)
        if now is None and path in removed:
            assert hashlib.sha256(Path(removed[path]).read_bytes()).hexdigest() == old, f"{where}: {path} lost"
            continue
        assert now is not None, f"{where}: {path} is gone"
        assert (now[1] if now[0] == "file" else now[2]) == old, f"{where}: {path} reads other bytes"


def check_journals(m: Machine) -> list[list[dict[str, Any]]]:
    """Every begin closed by a done or abandoned, every run ended, and no two runs changing files at once."""
    runs = m.journals()
    spans = []
    for records in runs:
        assert records[0]["type"] == "run" and records[-1]["type"] == "end", records[-1]
        assert records[-1]["status"] == "complete", records[-1]
        closed = {r["action"] for r in records if r["type"] in ("done", "abandoned")}
        open_ = [r for r in records if r["type"] == "begin" and r["action"] not in closed]
        assert not open_, f"{records[0]['run']}: changes begun and never closed: {open_}"
        spans.append((records[0]["started"], records[-1]["ended"], records[0]["run"]))
    spans.sort()
    for (_, end, run), (start, _, other) in itertools.pairwise(spans):
        assert end <= start, f"runs {run} and {other} changed files at the same time"
    return runs


def done_paths(runs: list[list[dict[str, Any]]]) -> list[str]:
    """The target of every change a run finished (consolidate's links; clean's removals)."""
    paths = []
    for records in runs:
        begins = {r["action"]: r for r in records if r["type"] == "begin"}
        paths += [begins[r["action"]]["target"] for r in records if r["type"] == "done" and r["action"] in begins]
    return paths


ALPHA = {
    "config.json": b'{"alpha": 1}',
    "model.safetensors": random_bytes(SIZE, "conc-alpha"),
    "head.safetensors": random_bytes(SIZE // 3, "conc-head"),
}
BETA = {"config.json": b'{"beta": 1}', "model.safetensors": random_bytes(SIZE, "conc-beta")}
ORPHAN = random_bytes(200_000, "conc-orphan")  # a blob no snapshot points to, whose bytes a plain copy also holds


@pytest.fixture(scope="module")
def template(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Machine:
    """An HF cache of two repos, local_dir copies of both, a plain folder of renamed copies: 7 duplicates."""
    m = Machine(tmp_path_factory.mktemp("concurrency") / "m")
    download_repos(hub, m, {"org/alpha": ALPHA, "org/beta": BETA}, {"org/alpha": "alpha", "org/beta": "beta"})
    write_tree(m.models / "mine", {"base.bin": ALPHA["model.safetensors"], "beta.bin": BETA["model.safetensors"]})
    return m


@pytest.fixture
def m(template: Machine, tmp_path: Path) -> Machine:
    return template.copy(tmp_path / "m")


def test_two_consolidate_runs_at_once(m: Machine, capsys: pytest.CaptureFixture[str]) -> None:
    before = view(m.cache, m.models)
    plan = json.loads(m.cli("consolidate", "--dry-run", *HARDLINK, "--json", *m.roots()).out)["plan"]
    targets = sorted(a["target"]["path"] for a in plan["actions"] if a["kind"] != "skip")
    assert len(targets) == 7

    results = together(
        m,
        ["consolidate", "--yes", *HARDLINK, "--json", *m.roots()],
        ["consolidate", "--yes", *HARDLINK, "--json", *m.roots()],
    )
    for r in results:
        assert r.code in (EXIT_OK, EXIT_WARNINGS, EXIT_ERROR), r.err
        if r.code == EXIT_ERROR:  # gave up waiting for the lock: one line, nothing done
            (line,) = r.err.strip().splitlines()
            assert line.startswith("modelcache: error: ") and LOCKED_OUT in line, r.err
    outputs = [json.loads(r.out) for r in results if r.code != EXIT_ERROR]
    assert outputs
    after = view(m.cache, m.models)
    same_bytes(before, after, "after both runs")
    runs = check_journals(m)
    linked = done_paths(runs)
    assert sorted(linked) == targets, "each duplicate consolidated exactly once"
    for out in outputs:  # whatever a run did not do, it skipped with a reason (the other run had done it)
        assert all(
            o["status"] in ("done", "skipped") and (o["status"] == "done" or o["reason"]) for o in out["outcomes"]
        )
    assert json.loads(m.cli("analyze", "--json", *m.roots()).out)["duplicate_bytes"] == 0
    changed = [out["run"] for out in outputs if out["done"]]
    assert len(changed) == 1
    undone = m.cli("undo", changed[0], "--json")
    assert undone.code == EXIT_OK, undone.err
    assert_restored(before, view(m.cache, m.models))
    with capsys.disabled():
        acted = sum(bool(out["outcomes"]) for out in outputs)
        print(
            f"\ntwo consolidate runs at once: exit codes {[r.code for r in results]}, {acted} of them acted on a plan"
        )


def assert_restored(before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]) -> None:
    """The earlier tree: the same paths, types, bytes, link texts, modes, file mtimes and link counts."""
    assert set(after) == set(before), sorted(set(after) ^ set(before))
    for path, entry in before.items():
        assert after[path] == entry, (path, entry, after[path])


def test_two_applies_of_one_plan_at_once(m: Machine, tmp_path: Path) -> None:
    """Both processes hold the same plan before either acts: the second to get the lock finds every copy
    changed (now a link to the kept one) and skips it."""
    before = view(m.cache, m.models)
    plan_file = tmp_path / "plan.json"
    m.cli("consolidate", "--dry-run", *HARDLINK, "--plan-out", str(plan_file), *m.roots())
    results = together(m, ["apply", "--yes", "--json", str(plan_file)], ["apply", "--yes", "--json", str(plan_file)])
    outputs = []
    for r in results:
        assert r.code in (EXIT_OK, EXIT_WARNINGS, EXIT_ERROR), r.err
        if r.code == EXIT_ERROR:
            assert LOCKED_OUT in r.err and len(r.err.strip().splitlines()) == 1, r.err
        else:
            outputs.append(json.loads(r.out))
    assert sorted(o["done"] for o in outputs)[-1] == 7
    for out in outputs:
        if not out["done"]:
            assert out["skipped"] == 7 and all("changed since the plan" in o["reason"] for o in out["outcomes"])
    same_bytes(before, view(m.cache, m.models), "after both applies")
    runs = check_journals(m)
    assert len(done_paths(runs)) == len(set(done_paths(runs))) == 7
    (changed,) = [out["run"] for out in outputs if out["done"]]
    assert m.cli("undo", changed).code == EXIT_OK
    assert_restored(before, view(m.cache, m.models))


def add_garbage(m: Machine) -> list[Path]:
    """What clean removes: an orphan blob (its bytes also in a plain copy), a stale lock, an abandoned partial
    download, a ref to a missing snapshot; all old."""
    alpha = m.cache / "models--org--alpha"
    orphan = alpha / "blobs" / hashlib.sha256(ORPHAN).hexdigest()
    orphan.write_bytes(ORPHAN)
    write_tree(m.models / "mine", {"orphan-copy.bin": ORPHAN})
    lock = m.cache / ".locks" / "models--org--beta" / ("0" * 64 + ".lock")
    lock.touch()
    partial = m.cache / "models--org--beta" / "blobs" / ("1" * 64 + ".0123abcd.incomplete")
    partial.write_bytes(b"\0" * 1000)
    dangling = alpha / "refs" / "gone"
    dangling.write_text("2" * 40)
    garbage = [orphan, lock, partial, dangling]
    for path in garbage:
        os.utime(path, (OLD, OLD))
    os.utime(m.models / "mine" / "orphan-copy.bin", (OLD - 10, OLD - 10))  # older: its link lowers the blob's mtime
    return garbage


def not_garbage(entries: dict[str, tuple[Any, ...]], garbage: list[Path]) -> dict[str, tuple[Any, ...]]:
    """What clean --older-than 0 leaves: all but the garbage made, and the lock files nobody holds."""
    return {p: v for p, v in entries.items() if Path(p) not in garbage and not p.endswith(".lock")}


def test_clean_and_consolidate_at_once(m: Machine, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = add_garbage(m)
    kept = not_garbage(view(m.cache, m.models), garbage)
    results = together(
        m,
        ["clean", "--yes", "--older-than", "0", "--json", *m.roots()],
        ["consolidate", "--yes", *HARDLINK, "--json", *m.roots()],
    )
    for r in results:
        assert r.code in (EXIT_OK, EXIT_WARNINGS, EXIT_ERROR), r.err
        if r.code == EXIT_ERROR:
            assert LOCKED_OUT in r.err and len(r.err.strip().splitlines()) == 1, r.err
    after = view(m.cache, m.models)
    same_bytes(kept, after, "after clean and consolidate")
    runs = check_journals(m)
    by_command = {records[0]["command"]: records for records in runs}
    paths = done_paths(runs)
    assert len(paths) == len(set(paths)), "no path was changed twice"
    if results[0].code != EXIT_ERROR:  # each piece of garbage is gone, or was skipped with the reason, or
        # was kept by the plan (a lock consolidate held made its repo look busy: kept items are not in
        # the outcomes) and is what the next clean finds to remove
        skipped = {o["path"]: o["reason"] for o in json.loads(results[0].out)["outcomes"] if o["status"] == "skipped"}
        left = [str(p) for p in garbage if os.path.lexists(p) and not skipped.get(str(p))]
        if left:
            again = json.loads(m.cli("clean", "--dry-run", "--older-than", "0", "--json", *m.roots()).out)
            to_remove = {i["path"] for i in again["items"] if i["action"] == "remove"}
            assert set(left) <= to_remove, f"neither cleaned, skipped, nor found again: {sorted(set(left) - to_remove)}"
    if results[1].code != EXIT_ERROR:
        assert json.loads(m.cli("analyze", "--json", *m.roots()).out)["duplicate_bytes"] == 0
        undone = m.cli("undo", by_command["consolidate"][0]["run"], "--json")
        assert undone.code == EXIT_OK, undone.err + undone.out
        now = view(m.cache, m.models)
        same_bytes(kept, now, "after undo")
        for where, entry in kept.items():
            if entry[0] == "file":
                assert now[where][1:] == entry[1:], f"after undo: {where}: {entry} -> {now[where]}"
    with capsys.disabled():
        order = [records[0]["command"] for records in sorted(runs, key=lambda r: r[0]["started"])]
        print(
            f"\nclean and consolidate at once: exit codes {[r.code for r in results]}, changed files in order {order}"
        )


# -- a download while clean runs ----------------------------------------------------------------------------

INCOMING = {
    "config.json": b'{"incoming": true}',
    **{f"model-{i:05d}-of-00004.safetensors": random_bytes(400_000, f"incoming-{i}") for i in range(4)},
}
DOWNLOAD = (
    "import sys; from huggingface_hub import snapshot_download; "
    "print(snapshot_download('org/incoming', cache_dir=sys.argv[1], endpoint=sys.argv[2], token=False, max_workers=1))"
)


def blob_matches_its_name(path: Path) -> bool:
    data = path.read_bytes()
    name = path.name
    if len(name) == 64:
        return hashlib.sha256(data).hexdigest() == name
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == name


def test_download_while_clean_runs_keeps_the_cache_consistent(
    hub: LocalHub, m: Machine, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = add_garbage(m)
    before = not_garbage(view(m.cache, m.models), garbage)
    commit = hub.add_commit("org/incoming", INCOMING)
    repo = m.cache / "models--org--incoming"
    hub.throttle(800_000)  # about 2.5 s in all; one file at a time, so the repo's locks come and go
    download = subprocess.Popen(
        [sys.executable, "-c", DOWNLOAD, str(m.cache), hub.url],
        env={**os.environ, **m.env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    cleans: list[Result] = []
    overlapped = 0
    try:
        deadline = time.monotonic() + 60
        while not (repo / "refs" / "main").exists() and download.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        while download.poll() is None or not cleans:
            running = download.poll() is None
            cleans.append(m.cli("clean", "--yes", "--older-than", "0", "--json", *m.roots()))
            overlapped += running and download.poll() is None
        out, err = download.communicate(timeout=120)
    finally:
        hub.throttle(None)
        if download.poll() is None:
            download.kill()
    assert download.returncode == 0, err.decode()[-2000:]
    for result in cleans:
        assert result.code in (EXIT_OK, EXIT_WARNINGS), result.err
    snapshot = Path(out.decode().strip())
    assert snapshot == repo / "snapshots" / commit
    for name, content in INCOMING.items():
        assert (snapshot / name).read_bytes() == content, name

    # the whole cache: links lead to blobs whose bytes match their names; refs name snapshots; nothing partial
    for repo_dir in m.cache.glob("models--*"):
        for blob in (repo_dir / "blobs").iterdir():
            assert not blob.name.endswith(".incomplete"), blob
            assert blob_matches_its_name(blob), blob
        for link in (repo_dir / "snapshots").rglob("*"):
            if link.is_symlink():
                target = Path(os.path.normpath(link.parent / os.readlink(link)))
                assert target.parent == repo_dir / "blobs" and target.is_file(), link
        for ref in (repo_dir / "refs").rglob("*"):
            if ref.is_file():
                assert (repo_dir / "snapshots" / ref.read_text().strip()).is_dir(), ref
    assert (repo / "refs" / "main").read_text().strip() == commit
    for path in garbage:
        assert not os.path.lexists(path), f"{path} was not cleaned"
    same_bytes(before, view(m.cache, m.models), "the rest of the cache")
    verified = m.cli("verify", "--all", "--json", *m.roots())
    assert verified.code == EXIT_OK, verified.out[-2000:]
    found = m.cli("path", "org/incoming", "--cache-dir", str(m.cache))
    assert found.code == EXIT_OK and found.out.strip() == str(snapshot), found.err
    listed = json.loads(m.cli("list", "--json", *m.roots()).out)["repos"]
    assert {r["id"]: r["status"] for r in listed if r["store"] == "hf_cache"} == {
        "org/alpha": "complete",
        "org/beta": "complete",
        "org/incoming": "complete",
    }
    check_journals(m)
    with capsys.disabled():
        print(
            f"\ndownload while clean runs: {len(cleans)} clean runs, {overlapped} of them entirely during the download"
        )


@pytest.mark.parametrize("mode", ["hardlink", "delete", "symlink"])
def test_clean_after_consolidate_never_takes_the_bytes_it_kept(m: Machine, tmp_path: Path, mode: str) -> None:
    """The other order of the race above, made on purpose: consolidate keeps a blob no snapshot uses (the
    oldest cache copy of a plain file), then clean removes that blob. A link keeps the bytes (it is the
    same inode) and undo restores from it; delete and symlink must not rely on such a blob at all."""
    garbage = add_garbage(m)
    orphan, copy = garbage[0], m.models / "mine" / "orphan-copy.bin"
    kept = not_garbage(view(m.cache, m.models), garbage)
    plan_file = tmp_path / "plan.json"
    m.cli("consolidate", "--dry-run", "--mode", mode, "--plan-out", str(plan_file), *m.roots())
    applied = m.cli("apply", "--yes", "--json", str(plan_file))
    assert applied.code in (EXIT_OK, EXIT_WARNINGS), applied.err
    outcome = {o["path"]: o for o in json.loads(applied.out)["outcomes"]}[str(copy)]
    cleaned = m.cli("clean", "--yes", "--older-than", "0", "--json", *m.roots())
    assert cleaned.code == EXIT_OK, cleaned.err
    assert not os.path.lexists(orphan)
    assert copy.read_bytes() == ORPHAN, f"{mode}: the only copy left of these bytes is gone ({outcome})"
    same_bytes(kept, view(m.cache, m.models), f"{mode}: after apply and clean", m)
    clean_run = json.loads(cleaned.out)["run"]
    refused = m.cli("undo", clean_run)
    assert refused.code == EXIT_ERROR and len(refused.err.strip().splitlines()) == 1, refused.err
    assert "Undo with" not in m.cli("clean", "--yes", "--older-than", "0", *m.roots()).out
    undone = m.cli("undo", "--json")  # the newest run that can be undone: apply's, not clean's
    assert undone.code == EXIT_OK, undone.err + undone.out
    assert json.loads(undone.out)["outcomes"], "undo picked a run with nothing to undo"
    now = view(m.cache, m.models)
    for path, entry in kept.items():
        if entry[0] == "file":
            assert now.get(path, (None,))[1:] == entry[1:], f"{mode}: after undo: {path}: {entry} -> {now.get(path)}"

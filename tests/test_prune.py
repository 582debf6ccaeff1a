"""`modelcache prune` on caches made by the real client through LocalHub (tests/prune_machine.py), checked
against figures computed independently from the files: the removed set is the least recently used prefix
of the units that may go which meets the budget; pinned, busy, memory-mapped and zero-gain units stay; the
exclusive bytes after are within the budget; a hard-linked local_dir copy keeps its bytes; `hf cache ls`
still reads what is left; the dry run changes nothing; `undo` downloads a pruned revision again.

The kill and fault sweeps are in tests/test_faults.py, the property test in tests/test_prune_properties.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from modelcache.testing import LocalHub
from modelcache.testing.builders import random_bytes, write_tree

from .machine import HOLD_LOCKS, helper, small_tmpfs, snapshot_tree
from .prune_machine import (
    DAY,
    MAP_AND_CLOSE,
    REPOS,
    REV,
    PruneMachine,
    blob_of,
    broken_links,
    build_template,
    exclusive_bytes,
    fresh,
    hf_cache_ls,
    revision_paths,
)


@pytest.fixture(scope="module")
def template(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_template(hub, tmp_path_factory.mktemp("prune-template"))


def atimes(root: Path) -> dict[str, int]:
    return {os.path.join(d, f): os.lstat(os.path.join(d, f)).st_atime_ns for d, _, fs in os.walk(root) for f in fs}


def units_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {u["path"]: u for u in data["units"]}


def test_the_least_recently_used_prefix_goes_and_what_is_held_or_shared_stays(template: Path, tmp_path: Path) -> None:
    m = fresh(template, tmp_path / "m")
    assert m.cli("path", "org/located", "--cache-dir", m.cache).code == 0  # a recorded use: now
    revision = revision_paths(m.repo(REV), m.old_commit())
    # The units that may go and free model bytes, least recently used first (by construction of the machine):
    # org/pinned, org/busy, org/mapped are held, and org/linked frees nothing but its refs and file list.
    paths = {"org/a": [str(m.repo("org/a"))], "rev": revision, "org/f": [str(m.repo("org/f"))],
             "org/g": [str(m.repo("org/g"))], REV: [str(m.repo(REV))]}  # fmt: skip
    order = list(paths)

    def left(k: int) -> int:
        return exclusive_bytes(m.cache, without=[p for unit in order[:k] for p in paths[unit]])

    budget = (left(2) + left(3)) // 2  # the first three must go, and no more
    assert left(2) > budget >= left(3)
    locks = sorted((m.cache / ".locks" / "models--org--busy").glob("*.lock"))
    assert locks
    args = ("--max-size", str(budget), "--keep", "org/pin*")
    with helper(HOLD_LOCKS, *locks), helper(MAP_AND_CLOSE, blob_of(m, "org/mapped")):
        tree, read = snapshot_tree(m.cache, m.models), atimes(m.cache)
        dry = m.prune(*args, "--dry-run", "--json")
        assert dry.code == 0, dry.err
        assert snapshot_tree(m.cache, m.models) == tree and atimes(m.cache) == read  # the dry run changed nothing
        plan = dry.json()
        removed = {p for p, u in units_of(plan).items() if u["action"] == "remove"}
        assert removed == {str(m.repo("org/a")), revision[0], str(m.repo("org/f"))}
        assert plan["exclusive_bytes_before"] == exclusive_bytes(m.cache)
        assert plan["exclusive_bytes_after"] == left(3) <= budget
        kept = {u["id"]: u["reason"] for u in plan["units"] if u["action"] == "keep"}
        assert kept["org/pinned"].startswith("pinned: matches --keep 'org/pin*'")
        assert kept["org/busy"].startswith("being downloaded")
        assert kept["org/mapped"].startswith("in use")
        assert kept["org/linked"].startswith("frees nothing")
        assert kept["org/located"] == "the budget holds without removing it"
        assert units_of(plan)[str(m.repo("org/located"))]["clock"] == "recorded use"
        assert plan["undo_needs_network"] is True
        run = m.prune(*args, "--yes", "--json")
    assert run.code == 0, run.err
    outcomes = run.json()["outcomes"]
    assert {o["path"] for o in outcomes if o["status"] == "done"} == removed
    assert exclusive_bytes(m.cache) == left(3) <= budget  # computed again from the files
    for name in ("config.json", "model.safetensors"):  # the hard-linked local_dir copy keeps its bytes
        assert (m.models / "linked" / name).read_bytes() == (template / "models" / "linked" / name).read_bytes()
    ids, warnings = hf_cache_ls(m.cache)
    assert warnings == [] and ids == {*REPOS, REV} - {"org/a", "org/f"}
    assert broken_links(m.cache) == []
    assert not (m.repo(REV) / "snapshots" / m.old_commit()).exists() and (m.repo(REV) / "refs" / "main").exists()
    assert not [p for p in os.listdir(m.cache) if p.startswith(".modelcache-")]


def test_dry_run_text_says_what_goes_why_and_that_undo_needs_the_network(template: Path, tmp_path: Path) -> None:
    m = fresh(template, tmp_path / "m")
    tree = snapshot_tree(m.cache)
    out = m.prune("--older-than", "30d", "--dry-run")
    assert out.code == 0, out.err
    assert snapshot_tree(m.cache) == tree
    text = out.out
    for line in ("org/a", "org/rev@", "not used for 90 days", "Exclusive bytes:", "Undo needs the network"):
        assert line in text, text
    assert text.index("org/located") < text.index("org/a")  # least recently used first: 100 days ago
    assert "remove" in text.splitlines()[3]


def test_older_than_removes_every_old_unit_that_may_go(template: Path, tmp_path: Path) -> None:
    m = fresh(template, tmp_path / "m")
    data = m.prune("--older-than", "45d", "--dry-run", "--json").json()
    removed = {(u["id"], u["revision"]) for u in data["units"] if u["action"] == "remove"}
    # every unit not used for 45 days (none is held here), the one that frees nothing but metadata too
    old = {"org/a", "org/pinned", "org/busy", "org/mapped", "org/located", "org/linked"}
    assert removed == {*((repo, None) for repo in old), (REV, m.old_commit())}


def test_budget_met_is_nothing_to_do_and_unreachable_is_one_line_and_nothing_removed(
    template: Path, tmp_path: Path
) -> None:
    m = fresh(template, tmp_path / "m")
    tree = snapshot_tree(m.cache)
    met = m.prune("--max-size", "1T", "--yes")
    assert met.code == 0 and "Nothing to do" in met.out, met.err
    unreachable = m.prune("--max-size", "1000", "--keep", "org/*", "--yes")
    assert unreachable.code == 2 and unreachable.err.count("\n") == 1, unreachable.err
    assert unreachable.err.startswith("modelcache: error: --max-size 1,000 bytes cannot be reached")
    assert snapshot_tree(m.cache) == tree
    assert not (m.state / "journal").exists() or not list((m.state / "journal").glob("*.jsonl"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "prune needs a budget"),
        (("--max-size", "12XB"), "unknown unit"),
        (("--max-size", "-5G"), "negative"),
        (("--min-free", "lots"), "does not parse"),
        (("--older-than", "30 days"), "does not parse"),
        (("--older-than", "1e9"), "does not parse"),
        (("--max-size", "1G", "--store", "lmstudio"), "--store takes ollama, modelscope, llamacpp"),
        (("--max-size", "1G", "--store", "ollama=/nonexistent/ollama"), "store folder not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    m = PruneMachine(tmp_path / "m")
    (m.cache).mkdir(parents=True)
    result = m.prune(*args)
    assert result.code == 2 and result.err.startswith("modelcache: error: ") and result.err.count("\n") == 1, result
    assert message in result.err, result.err


def test_undo_downloads_a_pruned_revision_and_repo_again(template: Path, tmp_path: Path, hub: LocalHub) -> None:
    m = fresh(template, tmp_path / "m")
    old = m.old_commit()
    source = template / "cache" / m.repo("org/a").name  # read there: a read here would move the atimes prune goes by
    before = {p.relative_to(source): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    run = m.prune("--older-than", "85d", "--keep", "org/located", "--yes", "--json")  # org/a (90 days) and ...
    assert run.code == 0, run.err
    assert not m.repo("org/a").exists()
    run = m.prune("--older-than", "55d", "--keep", "org/[!r]*", "--yes", "--json")  # ... then the old revision
    assert run.code == 0, run.err
    assert not (m.repo(REV) / "snapshots" / old).exists()
    hub.clear_log()
    back = m.cli("undo", "--json")  # the newest prune run: the revision
    assert back.code == 0, back.err
    assert (m.repo(REV) / "snapshots" / old / "old.safetensors").read_bytes() == random_bytes(150_000, "prune-old-only")
    assert any("/resolve/" in r.path for r in hub.request_log)  # from the Hub: undo needs the network
    back = m.cli("undo", "--json")  # then org/a, with its ref
    assert back.code == 0, back.err
    for rel, data in before.items():
        assert (m.repo("org/a") / rel).read_bytes() == data, rel
    assert m.cli("path", "org/a", "--cache-dir", m.cache).code == 0
    assert broken_links(m.cache) == [] and hf_cache_ls(m.cache)[1] == []


def test_ollama_models_go_with_the_blobs_no_other_manifest_names(template: Path, tmp_path: Path) -> None:
    m = fresh(template, tmp_path / "m")
    shared = [p for p in (m.ollama / "blobs").iterdir()]
    data = m.prune("--store", f"ollama={m.ollama}", "--older-than", "40d", "--keep", "org/*", "--yes", "--json")
    assert data.code == 0, data.err
    manifests = m.ollama / "manifests" / "registry.ollama.ai" / "library"
    assert not (manifests / "llama-a" / "latest").exists() and (manifests / "llama-b" / "latest").exists()
    left = {p.name for p in (m.ollama / "blobs").iterdir()}
    assert len(left) == len(shared) - 1  # llama-a's own weights went; the blob llama-b names too stays
    assert [o["status"] for o in data.json()["outcomes"]] == ["done"]
    undo = m.cli("undo")
    assert undo.code == 1 and "undo downloads only from the Hub" in undo.out, undo.out + undo.err


def test_the_mtime_stands_in_for_the_atime_on_a_noatime_mount(template: Path, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt", "64m", "cannot mount a tmpfs") as mnt:
        subprocess.run(["mount", "-o", "remount,noatime", str(mnt)], check=True)
        m = PruneMachine(template).copy(mnt / "m")
        now = time.time()
        for blob in m.repo("org/a").glob("blobs/*"):  # old by its mtime, new by its atime: mtime counts
            os.utime(blob, (now, now - 200 * DAY))
        data = m.prune("--older-than", "150d", "--dry-run", "--json").json()
        unit = units_of(data)[str(m.repo("org/a"))]
        assert unit["clock"].startswith("mtime (noatime mount") and unit["action"] == "remove", unit


def test_min_free_is_met_on_the_caches_file_system(template: Path, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt", "16m", "cannot mount a tmpfs") as mnt:
        m = fresh(template, mnt / "m")
        write_tree(mnt, {"filler": random_bytes(1_000_000, "filler")})
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        want = free + 350_000  # org/located is kept: org/a (300 kB), then org/pinned (120 kB)
        run = m.prune("--min-free", str(want), "--keep", "org/located", "--yes", "--json")
        assert run.code == 0, run.err
        done = {o["path"] for o in run.json()["outcomes"] if o["status"] == "done"}
        assert done == {str(m.repo("org/a")), str(m.repo("org/pinned"))}  # 90 and 80 days: 300 + 120 kB
        assert os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize >= want


def test_modelscope_models_and_llamacpp_file_sets_go_whole(template: Path, tmp_path: Path) -> None:
    """ModelScope (both layouts, with the 1.37 real-name symlink) and llama.cpp's flat cache, hand-made as those
    tools lay them out (tests/test_stores.py): the old units go whole; one held by a download lock stays."""
    m = fresh(template, tmp_path / "m")
    ms, llama = m.root / "modelscope", m.root / "llama.cpp"
    weights = random_bytes(90_000, "prune-ms")
    write_tree(ms, {
        "models/Qwen/Qwen2___5-0___5B/model.safetensors": weights,
        "models/Qwen/Qwen2___5-0___5B/.mv": b"Revision:master,CreatedAt:1700000000",
        "models/Qwen--Qwen2.5-Coder/snapshots/master/model.safetensors": random_bytes(80_000, "prune-coder"),
        "models/Qwen--Qwen2.5-Math/snapshots/master/model.safetensors": random_bytes(70_000, "prune-math"),
        ".lock/model_Qwen___Qwen2.5-Math_model_safetensors.lock": b"",
    })  # fmt: skip
    os.symlink(ms / "models/Qwen/Qwen2___5-0___5B", ms / "models/Qwen/Qwen2.5-0.5B")
    write_tree(llama, {
        "bartowski_tiny-GGUF_tiny-Q4_K_M.gguf": random_bytes(60_000, "prune-gguf"),
        "bartowski_tiny-GGUF_tiny-Q4_K_M.gguf.etag": b'"abc"',
        "manifest=bartowski=tiny-GGUF=Q4_K_M.json": b"{}",
        "org_fresh-GGUF_fresh.gguf": random_bytes(50_000, "prune-fresh-gguf"),
    })  # fmt: skip
    now = time.time()
    for path in [*ms.rglob("*"), *llama.rglob("*")]:
        if path.is_file() and not path.is_symlink() and "Coder" not in str(path) and "fresh" not in path.name:
            os.utime(path, (now - 60 * DAY, now - 60 * DAY))
    lock = ms / ".lock" / "model_Qwen___Qwen2.5-Math_model_safetensors.lock"
    args = ("--store", f"modelscope={ms}", "--store", f"llamacpp={llama}", "--older-than", "40d", "--keep", "org/*")
    with helper(HOLD_LOCKS, lock):
        held = {u["id"]: u for u in m.prune(*args, "--dry-run", "--json").json()["units"]}
        assert held["Qwen/Qwen2.5-Math"]["reason"].startswith("being downloaded"), held["Qwen/Qwen2.5-Math"]
        run = m.prune(*args, "--yes", "--json")
        assert run.code == 0, run.err
    done = {o["path"] for o in run.json()["outcomes"] if o["status"] == "done"}
    assert done == {str(ms / "models/Qwen/Qwen2___5-0___5B"), str(llama / "bartowski/tiny-GGUF")}
    assert not os.path.lexists(ms / "models/Qwen/Qwen2.5-0.5B")  # the real-name symlink went with its folder
    assert (ms / "models/Qwen--Qwen2.5-Math").is_dir() and (ms / "models/Qwen--Qwen2.5-Coder").is_dir()
    assert sorted(p.name for p in llama.iterdir()) == ["org_fresh-GGUF_fresh.gguf"]
    assert not [p for p in (*ms.iterdir(), *llama.iterdir()) if p.name.startswith(".modelcache-")]
    units = {u["id"]: u for u in m.prune(*args, "--dry-run", "--json").json()["units"]}
    assert units["Qwen/Qwen2.5-Math"]["action"] == "remove"  # the lock was what kept it
    assert units["Qwen/Qwen2.5-Coder"]["action"] == "keep"  # used now


def test_a_download_through_modelcache_counts_as_a_use(template: Path, tmp_path: Path) -> None:
    m = fresh(template, tmp_path / "m")
    assert m.prune("--older-than", "30d", "--dry-run", "--json").json()["units"][1]["id"] == "org/a"
    got = m.cli("download", "org/a", "--cache-dir", m.cache)  # already cached: nothing to fetch, but a use
    assert got.code == 0, got.err
    units = {u["id"]: u for u in m.prune("--older-than", "30d", "--dry-run", "--json").json()["units"]}
    assert units["org/a"]["clock"] == "recorded use" and units["org/a"]["action"] == "keep"
    assert units["org/f"]["clock"] == "atime" and units["org/f"]["action"] == "remove"

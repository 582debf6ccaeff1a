"""`clean`: each kind of garbage, made the real way, is found, sized to the byte and removed; nothing else changes."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub.utils._shared_blobs import publish_blob_to_shared_store

from modelcache.testing import LocalHub
from modelcache.testing.builders import (
    CLIENT_ENV,
    download_to_cache,
    download_to_local_dir,
    interrupted_download,
    random_bytes,
    write_tree,
)

from .machine import HOLD_LOCKS, helper, run_cli, snapshot_tree

BIG = 11 * 1024 * 1024  # past huggingface_hub's 10 MiB write chunk, so that a killed download leaves bytes


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCACHE_INDEX", str(tmp_path / "state" / "digests.sqlite"))
    monkeypatch.setenv("MODELCACHE_STATE", str(tmp_path / "state"))


def clean(cache: Path, *extra: str, models: Path | None = None, code: int = 0) -> dict[str, Any]:
    args = ["clean", "--json", "--cache-dir", str(cache), *extra]
    if models is not None:
        args += ["--models", str(models)]
    result = run_cli(*args)
    assert result.code == code, result.err + result.out
    assert "Traceback" not in result.err
    data: dict[str, Any] = result.json()
    return data


def items_of(plan: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [i for i in plan["items"] if i["kind"] == kind]


def assert_only_removed(before: dict[str, Any], after: dict[str, Any], removed: set[str]) -> None:
    """Every entry that was there is unchanged, except the removed ones, what they held, and folders they emptied."""
    gone = set(before) - set(after)
    assert removed <= gone

    def under_removed(path: str) -> bool:
        return any(path == r or path.startswith(r + os.sep) for r in removed)

    for path in gone:
        assert under_removed(path) or before[path][0] == stat.S_IFDIR, f"{path} vanished"
    for path in set(before) & set(after):
        if before[path][0] != stat.S_IFDIR:
            assert before[path] == after[path], path


def old(path: Path, days: float = 2) -> None:
    t = time.time() - days * 86400
    os.utime(path, (t, t), follow_symlinks=False)


def test_killed_download_leaves_incomplete_that_clean_removes(local_hub: LocalHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    local_hub.add_commit("org/keep", {"model.safetensors": random_bytes(200_000, "keep")})
    local_hub.add_commit("org/big", {"model.gguf": random_bytes(BIG, "big")})
    download_to_cache(local_hub, "org/keep", cache)
    partial = interrupted_download(local_hub, "org/big", "model.gguf", cache)
    size = partial.stat().st_size
    assert size >= 10 * 1024 * 1024
    # young: kept by default (it may belong to a download that is still starting)
    young = clean(cache, "--dry-run")
    assert [i["action"] for i in items_of(young, "incomplete")] == ["keep"]
    before = snapshot_tree(cache)
    dry = clean(cache, "--dry-run", "--older-than", "0")
    assert snapshot_tree(cache) == before  # a dry run changes nothing
    (item,) = items_of(dry, "incomplete")
    assert (item["path"], item["size"], item["frees"], item["action"]) == (str(partial), size, size, "remove")
    assert dry["totals"]["incomplete"] == {"count": 1, "bytes": size}
    result = clean(cache, "--yes", "--older-than", "0")
    assert result["bytes_freed"] == dry["bytes_to_free"] >= size
    assert not partial.exists()
    after = snapshot_tree(cache)
    removed = {i["path"] for i in dry["items"] if i["action"] == "remove"}
    assert_only_removed(before, after, removed)
    # the repo that was complete still loads
    snapshot = next((cache / "models--org--keep" / "snapshots").iterdir())
    assert (snapshot / "model.safetensors").read_bytes() == random_bytes(200_000, "keep")


def test_incomplete_held_by_a_live_download_is_never_removed(local_hub: LocalHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    content = random_bytes(BIG, "live")
    local_hub.add_commit("org/live", {"model.gguf": content})
    local_hub.throttle(1_000_000)  # about 11 s: long enough to clean while it runs
    code = (
        "import sys; from huggingface_hub import hf_hub_download; "
        "hf_hub_download('org/live', 'model.gguf', cache_dir=sys.argv[1], endpoint=sys.argv[2], token=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(cache), local_hub.url], env={**os.environ, **CLIENT_ENV})
    try:
        deadline = time.monotonic() + 30
        partials: list[Path] = []
        while not partials and time.monotonic() < deadline:
            partials = list(cache.glob("models--org--live/blobs/*.incomplete"))
            time.sleep(0.05)
        assert partials, "the download did not start"
        old(partials[0], days=30)  # however old it looks
        result = clean(cache, "--yes", "--older-than", "0", code=0)
        assert partials[0].exists()
        (item,) = items_of(result_plan := clean(cache, "--dry-run", "--older-than", "0"), "incomplete")
        assert item["action"] == "keep" and "holds its lock" in item["reason"]
        del result, result_plan
    finally:
        proc.wait(timeout=60)
        local_hub.throttle(None)
    assert proc.returncode == 0
    blob = cache / "models--org--live" / "blobs" / hashlib.sha256(content).hexdigest()
    assert blob.read_bytes() == content  # the download finished, unharmed


def test_broken_snapshot_link_is_reported_and_repaired(local_hub: LocalHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    weights = random_bytes(150_000, "repair")
    local_hub.add_commit("org/r", {"model.safetensors": weights, "config.json": b"{}"})
    snapshot = download_to_cache(local_hub, "org/r", cache)
    blob = Path(os.path.realpath(snapshot / "model.safetensors"))
    blob.unlink()
    before = snapshot_tree(cache)
    plan = clean(cache, "--dry-run")
    (item,) = items_of(plan, "broken-link")
    assert item["action"] == "keep" and "snapshot is broken" in item["reason"]
    clean(cache, "--yes")  # without --repair: reported, not touched
    assert os.path.islink(snapshot / "model.safetensors") and snapshot_tree(cache).keys() >= before.keys()
    repaired = clean(cache, "--yes", "--repair")
    assert [o["method"] for o in repaired["outcomes"] if o["status"] == "done"] == ["repair"]
    assert (snapshot / "model.safetensors").read_bytes() == weights
    # the Hub out of reach (offline mode: fails at once, where a stopped server costs retries): a clear reason
    blob.unlink()
    local_hub.stop()
    down = run_cli("clean", "--json", "--yes", "--repair", "--cache-dir", str(cache), env={"HF_HUB_OFFLINE": "1"})
    assert down.code == 1 and "Traceback" not in down.err
    (outcome,) = [o for o in down.json()["outcomes"] if o["status"] != "done"]
    assert "could not download it again" in outcome["reason"]
    assert not list(cache.glob("**/*.incomplete"))


def test_detached_revision_after_main_moves_on(local_hub: LocalHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shared = random_bytes(120_000, "shared")
    first_only = random_bytes(90_000, "first")
    first = local_hub.add_commit("org/d", {"shared.safetensors": shared, "old.safetensors": first_only})
    download_to_cache(local_hub, "org/d", cache)
    second = local_hub.add_commit("org/d", {"shared.safetensors": shared, "new.safetensors": b"new" * 1000})
    download_to_cache(local_hub, "org/d", cache)  # refs/main now names the second commit
    repo = cache / "models--org--d"
    assert (repo / "refs" / "main").read_text() == second
    assert not items_of(clean(cache, "--dry-run"), "detached-revision")  # only with --revisions
    before = snapshot_tree(cache)
    plan = clean(cache, "--dry-run", "--revisions")
    detached = {i["path"] for i in items_of(plan, "detached-revision")}
    assert str(repo / "snapshots" / first) in detached
    (orphan,) = items_of(plan, "orphan-blob")
    assert orphan["path"] == str(repo / "blobs" / hashlib.sha256(first_only).hexdigest())
    assert orphan["frees"] == len(first_only) and "only detached revisions" in orphan["reason"]
    clean(cache, "--yes", "--revisions")
    assert not (repo / "snapshots" / first).exists() and not (repo / "trees" / f"{first}.json").exists()
    snapshot = repo / "snapshots" / second
    assert (snapshot / "shared.safetensors").read_bytes() == shared  # a blob both revisions use stays
    assert_only_removed(before, snapshot_tree(cache), {i["path"] for i in plan["items"] if i["action"] == "remove"})


def test_a_ref_holding_no_commit_hash_keeps_every_revision(local_hub: LocalHub, tmp_path: Path) -> None:
    """Regression (test_properties_cli.py::test_clean_removes_only_garbage): a truncated refs/main made
    `clean --revisions` prune the repo's only revision, blobs and all."""
    cache = tmp_path / "cache"
    weights = random_bytes(60_000, "truncated-ref")
    commit = local_hub.add_commit("org/t", {"model.safetensors": weights})
    snapshot = download_to_cache(local_hub, "org/t", cache)
    ref = cache / "models--org--t" / "refs" / "main"
    ref.write_text(commit[:20])  # as a crash mid-write leaves it
    before = snapshot_tree(cache)
    for _ in range(2):  # and again: removing the ref the first time would let the second run prune
        plan = clean(cache, "--dry-run", "--revisions", "--older-than", "0")
        kept = {i["path"]: i["reason"] for i in plan["items"] if i["action"] == "keep"}
        assert "holds no commit hash" in kept[str(cache / "models--org--t" / "snapshots" / commit)]
        assert "may name any revision" in kept[str(ref)]
        clean(cache, "--yes", "--revisions", "--older-than", "0")
    assert (snapshot / "model.safetensors").read_bytes() == weights
    assert {p for p in before if p.startswith(str(cache / "models--org--t"))} <= set(snapshot_tree(cache))


def test_orphan_blob_dangling_ref_and_refs_only_folder(local_hub: LocalHub, tmp_path: Path) -> None:
    cache, models = tmp_path / "cache", tmp_path / "models"
    weights = random_bytes(80_000, "o")
    local_hub.add_commit("org/o", {"model.safetensors": weights, "config.json": b"{}"})
    snapshot = download_to_cache(local_hub, "org/o", cache)
    (snapshot / "model.safetensors").unlink()  # as a hand-edited snapshot leaves it: the blob is orphaned
    (cache / "models--org--o" / "refs" / "pr").mkdir()
    (cache / "models--org--o" / "refs" / "pr" / "1").write_text("f" * 40)
    local_hub.add_commit("org/l", {"model.safetensors": random_bytes(50_000, "l")})
    download_to_local_dir(local_hub, "org/l", models / "l", cache)  # leaves models--org--l/refs/main only
    models.joinpath("unrelated").mkdir()
    # while the local_dir download is scanned, its ref names it: kept
    plan = clean(cache, "--dry-run", models=models)
    assert not items_of(plan, "refs-only-repo")
    (orphan,) = items_of(plan, "orphan-blob")
    assert orphan["frees"] == len(weights)
    (ref,) = items_of(plan, "dangling-ref")
    assert ref["path"].endswith("refs/pr/1")
    # without it, the folder holding only that ref goes, folders and all
    plan = clean(cache, "--dry-run", models=models / "unrelated")
    assert [i["path"] for i in items_of(plan, "refs-only-repo")] == [str(cache / "models--org--l" / "refs" / "main")]
    clean(cache, "--yes", models=models / "unrelated")
    assert not (cache / "models--org--l").exists()
    assert not (cache / "models--org--o" / "refs" / "pr").exists()
    assert (cache / "models--org--o" / "refs" / "main").exists()
    assert (snapshot / "config.json").read_bytes() == b"{}"


def test_unused_shared_store_file_is_collected_by_huggingface_hubs_rule(local_hub: LocalHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    weights = random_bytes(100_000, "xet")
    local_hub.add_commit("org/x", {"model.safetensors": weights})
    download_to_cache(local_hub, "org/x", cache)
    xet_hash = hashlib.sha256(b"xet" + weights).hexdigest()
    blob = cache / "models--org--x" / "blobs" / hashlib.sha256(weights).hexdigest()
    assert publish_blob_to_shared_store(
        blob_path=str(blob), xet_hash=xet_hash, cache_dir=cache, expected_size=len(weights)
    )
    store_file = cache / "blobs" / xet_hash[:2] / xet_hash
    assert not items_of(clean(cache, "--dry-run"), "unused-shared-blob")  # referenced: kept
    # `hf cache rm` of the repo leaves the store file behind, unreferenced
    import shutil

    shutil.rmtree(cache / "models--org--x")
    plan = clean(cache, "--dry-run")
    (item,) = items_of(plan, "unused-shared-blob")
    assert item["path"] == str(store_file) and item["frees"] == len(weights)
    clean(cache, "--yes")
    assert not store_file.exists()
    # a store file whose manifest is unreadable is leaked, never deleted (huggingface_hub's rule)
    local_hub.add_commit("org/y", {"model.safetensors": weights})
    download_to_cache(local_hub, "org/y", cache)
    blob = cache / "models--org--y" / "blobs" / hashlib.sha256(weights).hexdigest()
    assert publish_blob_to_shared_store(
        blob_path=str(blob), xet_hash=xet_hash, cache_dir=cache, expected_size=len(weights)
    )
    shutil.rmtree(cache / "models--org--y")
    store_file.with_name(xet_hash + ".refs").unlink()
    assert not items_of(clean(cache, "--dry-run"), "unused-shared-blob")
    clean(cache, "--yes")
    assert store_file.exists()


def test_local_dir_partial_download_and_stale_locks(local_hub: LocalHub, tmp_path: Path) -> None:
    cache, models = tmp_path / "cache", tmp_path / "models"
    local_hub.add_commit("org/ld", {"model.gguf": random_bytes(BIG, "ld"), "config.json": b"{}"})
    download_to_local_dir(local_hub, "org/ld", models / "ld", cache)
    (models / "ld" / "model.gguf").unlink()
    partial = interrupted_download(local_hub, "org/ld", "model.gguf", cache, local_dir=models / "ld")
    for lock in (models / "ld").rglob("*.lock"):
        old(lock)
    old(partial)
    plan = clean(cache, "--dry-run", models=models)
    (item,) = items_of(plan, "local-incomplete")
    assert item["path"] == str(partial) and item["frees"] == partial.stat().st_size and item["action"] == "remove"
    assert {i["action"] for i in items_of(plan, "local-stale-lock")} == {"remove"}
    clean(cache, "--yes", models=models)
    assert not partial.exists() and not list((models / "ld").rglob("*.lock"))
    assert (models / "ld" / "config.json").read_bytes() == b"{}"


def test_bad_duration_and_no_yes(tmp_path: Path) -> None:
    result = run_cli("clean", "--older-than", "soon", "--cache-dir", str(tmp_path))
    assert result.code == 2 and result.err.strip() == "modelcache: error: not a duration: 'soon' (use e.g. 30m, 1h, 2d)"
    (tmp_path / "empty" / "folder").mkdir(parents=True)
    refused = run_cli("clean", "--cache-dir", str(tmp_path))
    assert refused.code == 2 and "add --yes" in refused.err
    assert (tmp_path / "empty" / "folder").is_dir()


def test_temporary_files_no_journal_names_are_removed_when_old(local_hub: LocalHub, tmp_path: Path) -> None:
    cache, models = tmp_path / "cache", tmp_path / "models"
    local_hub.add_commit("org/t", {"model.safetensors": random_bytes(10_000, "t")})
    download_to_cache(local_hub, "org/t", cache)
    leftover = models / "plain" / ".modelcache-20260101T000000.000000Z-abcdef-12345678.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a link")
    young = clean(cache, "--dry-run", models=models)
    assert [i["action"] for i in items_of(young, "modelcache-tmp")] == ["keep"]
    old(leftover)
    clean(cache, "--yes", models=models)
    assert not leftover.exists() and (models / "plain").is_dir()


@pytest.mark.parametrize("race", ["download-finishes", "folder-refilled"])
def test_a_download_finishing_while_clean_acts_is_no_failure(
    local_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, race: str
) -> None:
    """Races a concurrent download can win (found by the download-during-clean test, under load): the
    partial file is renamed to its blob between the plan and the lock (skipped, "already gone"); or a
    folder the removal emptied gets a new file before it is removed (the removal is done, the folder stays)."""
    from modelcache import locks
    from modelcache.act import fsops
    from modelcache.act.clean import execute_clean
    from modelcache.clean import plan_clean
    from modelcache.scan import scan

    cache = tmp_path / "cache"
    local_hub.add_commit("org/big", {"model.gguf": random_bytes(BIG, "big")})
    partial = interrupted_download(local_hub, "org/big", "model.gguf", cache)
    plan = plan_clean(scan(cache_dir=cache, models=[]), str(cache), min_age=0)
    (item,) = [i for i in plan.items if i.kind == "incomplete"]
    assert item.fix == "remove"
    blob = partial.with_suffix("")  # what huggingface_hub renames a finished partial file to
    if race == "download-finishes":
        hold = locks.hold

        @contextmanager
        def finished_first(lock_path: str | None, **kwargs: Any) -> Iterator[None]:
            if partial.exists():
                os.rename(partial, blob)
            with hold(lock_path, **kwargs):
                yield

        monkeypatch.setattr(locks, "hold", finished_first)
    else:
        remove_dir = fsops.remove_dir

        def refill_then_remove_dir(path: str) -> None:
            if path == str(partial.parent):  # emptied and checked empty; a download writes in it now
                blob.write_bytes(b"arrived")
            remove_dir(path)

        monkeypatch.setattr(fsops, "remove_dir", refill_then_remove_dir)
    result = execute_clean(plan, str(cache))
    outcomes = {o.target: o for o in result.outcomes}
    assert not result.count("failed"), result.outcomes
    if race == "download-finishes":
        assert outcomes[str(partial)].status == "skipped" and outcomes[str(partial)].reason == "already gone"
    else:
        assert outcomes[str(partial)].status == "done" and not partial.exists()
    assert blob.exists() and blob.parent.is_dir()


def test_a_detached_revision_whose_file_list_is_not_removed_is_found_again(local_hub: LocalHub, tmp_path: Path) -> None:
    """Regression (tests/test_faults.py, a fault at each removal of clean): the snapshot folder of a detached
    revision went first and its `trees/<commit>.json` after it; when that removal failed (or the run was cut
    short in between), no later clean found the file list again. Now the folder goes last, and stays
    while the file list is there."""
    from modelcache.act.clean import execute_clean
    from modelcache.clean import plan_clean
    from modelcache.scan import scan

    from .faults import inject

    cache = tmp_path / "cache"
    first = local_hub.add_commit("org/d", {"model.safetensors": random_bytes(30_000, "d1")})
    download_to_cache(local_hub, "org/d", cache)
    local_hub.add_commit("org/d", {"model.safetensors": random_bytes(30_000, "d2")})
    download_to_cache(local_hub, "org/d", cache)
    repo = cache / "models--org--d"
    trees, snapshot = repo / "trees" / f"{first}.json", repo / "snapshots" / first
    assert trees.exists() and snapshot.is_dir()

    def clean_revisions() -> dict[str, Any]:
        plan = plan_clean(scan(cache_dir=cache, models=[]), str(cache), min_age=0, revisions=True)
        return {o.target: o for o in execute_clean(plan, str(cache)).outcomes}

    with inject(op="remove", path=str(trees), code=errno.EIO) as fault:
        outcomes = clean_revisions()
    assert fault.fired
    assert outcomes[str(trees)].status == "failed"
    assert outcomes[str(snapshot)].status == "skipped" and "removing it failed" in str(outcomes[str(snapshot)].reason)
    assert trees.exists() and snapshot.is_dir()
    outcomes = clean_revisions()
    assert outcomes[str(trees)].status == outcomes[str(snapshot)].status == "done"
    assert not trees.exists() and not snapshot.exists()


def test_a_removal_whose_folder_flush_failed_is_reported_done(local_hub: LocalHub, tmp_path: Path) -> None:
    """Regression (tests/test_faults.py, a fault at each removal of clean): when flushing the folder failed
    after the unlink, clean reported the file "failed" (and freed nothing) though it was gone; it is "done,
    then" the error, as consolidate reports it, and the journal closes the change at once."""
    from modelcache.act.clean import execute_clean
    from modelcache.act.journal import iter_open_changes, read_records, runs
    from modelcache.clean import plan_clean
    from modelcache.scan import scan

    from .faults import inject

    cache = tmp_path / "cache"
    local_hub.add_commit("org/o", {"model.safetensors": random_bytes(20_000, "o")})
    download_to_cache(local_hub, "org/o", cache)
    orphan = random_bytes(10_000, "orphan")
    blob = cache / "models--org--o" / "blobs" / hashlib.sha256(orphan).hexdigest()
    blob.write_bytes(orphan)
    plan = plan_clean(scan(cache_dir=cache, models=[]), str(cache), min_age=0)
    with inject(op="fsync_dir", path=str(blob.parent), code=errno.EIO) as fault:
        result = execute_clean(plan, str(cache))
    assert fault.fired and fault.calls[fault.fired_at - 2].op == "remove"
    (outcome,) = [o for o in result.outcomes if o.target == str(blob)]
    assert (outcome.status, outcome.freed) == ("done", len(orphan)) and not blob.exists()
    assert outcome.reason is not None and outcome.reason.startswith("done, then: Input/output error")
    assert not [c for run in runs() for c in iter_open_changes(read_records(run.path))]


def nobody_or_skip() -> str:
    if os.geteuid() != 0:
        pytest.skip("runs as another user only as root")
    if run_cli("--version", user="65534").code != 0:
        pytest.skip("user nobody cannot run this Python")
    return "65534"


# modelscope_hub (ModelScope >= 1.38) holds a `filelock` lock per file while it downloads it:
# `<root>/.lock/<repo type>_<owner>___<name>_<path, '/' -> '___', '.' -> '_'>.lock`
# (`DownloadManager._lock_path` in modelscope_hub/_download.py). `HOLD_LOCKS` holds such locks as it does.
def modelscope_downloads(root: Path) -> tuple[Path, dict[str, Path], dict[str, Path]]:
    """A ModelScope >= 1.38 cache with downloads cut short, as modelscope_hub leaves them: its
    snapshot folder, the partial files and the lock files (named by hand, as modelscope_hub names them)."""
    snap = root / "models" / "Qwen--Qwen2.5-7B" / "snapshots" / "master"
    data = root / "datasets" / "org--data" / "snapshots" / "master"
    partials = {
        "single": snap / "sub" / "model.safetensors.incomplete",  # a single stream, resumable
        "part": snap / "big.bin_0_99",  # a part of a parallel download
        "merged": snap / "big.bin.parallel_tmp",  # the parts being joined
        "dataset": data / "train.jsonl.incomplete",
        "unlocked": snap / "other.bin.incomplete",  # no lock file at all
    }
    lock_dir = root / ".lock"
    locks = {
        "single": lock_dir / "model_Qwen___Qwen2.5-7B_sub___model_safetensors.lock",
        "big": lock_dir / "model_Qwen___Qwen2.5-7B_big_bin.lock",
        "dataset": lock_dir / "dataset_org___data_train_jsonl.lock",
        "stale": lock_dir / "model_Qwen___Qwen2.5-7B_config_json.lock",  # its download finished long ago
    }
    write_tree(snap, {"config.json": b"{}"})
    for path in partials.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(random_bytes(5_000, path.name))
    lock_dir.mkdir()
    for lock in (locks["dataset"], locks["stale"]):
        lock.touch()
    return snap, partials, locks


@pytest.mark.parametrize("as_nobody", [False, True], ids=["owner", "nobody"])
def test_a_held_modelscope_lock_keeps_its_partial_files(shared_tmp: Path, as_nobody: bool) -> None:
    user = nobody_or_skip() if as_nobody else None
    root, cache, state = shared_tmp / "modelscope", shared_tmp / "hf", shared_tmp / "state"
    snap, partials, locks = modelscope_downloads(root)
    lock_dir = root / ".lock"
    cache.mkdir()
    state.mkdir()
    if user is not None:
        for dirpath, dirs, files in os.walk(shared_tmp):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in [*dirs, *files])]:
                os.chown(name, 65534, 65534)
    env = {"MODELCACHE_STATE": str(state), "MODELCACHE_INDEX": str(state / "digests.sqlite"), "HOME": str(state)}
    env["MODELCACHE_CONFIG"] = str(state / "no-config.toml")

    def ms_clean(*extra: str) -> dict[str, Any]:
        args = ["--cache-dir", cache, "--store", f"modelscope={root}", "--no-discover", "--older-than", "0"]
        result = run_cli("clean", "--json", *args, *extra, env=env, user=user)
        assert result.code == 0 and "Traceback" not in result.err, result.err + result.out
        data: dict[str, Any] = result.json()
        return {i["path"]: i for i in data.get("items", data.get("outcomes"))}  # the plan, or the run's outcomes

    with helper(HOLD_LOCKS, locks["single"], locks["big"], user=user):
        for path in [*partials.values(), *locks.values()]:
            old(path, days=30)  # however old they look
        before = snapshot_tree(root)
        plan = ms_clean("--dry-run")
        assert snapshot_tree(root) == before  # a dry run changes nothing
        for name in ("single", "part", "merged"):
            item = plan[str(partials[name])]
            assert (item["kind"], item["action"]) == ("modelscope-partial", "keep"), item
            assert "holds its lock" in item["reason"]
        for name in ("dataset", "unlocked"):
            assert plan[str(partials[name])]["action"] == "remove"
        assert plan[str(locks["stale"])]["kind"] == "modelscope-stale-lock"
        assert plan[str(locks["stale"])]["action"] == "remove"
        assert plan[str(locks["single"])]["action"] == "keep"
        assert plan[str(locks["dataset"])]["action"] == "keep"  # while the file it guards is there
        ms_clean("--yes")
        left = snapshot_tree(root)
        for name in ("single", "part", "merged"):
            assert before[str(partials[name])] == left[str(partials[name])]  # untouched
        assert not partials["dataset"].exists() and not partials["unlocked"].exists()
        assert not locks["stale"].exists() and locks["dataset"].exists()
        assert (snap / "config.json").read_bytes() == b"{}"
    freed = ms_clean("--yes")  # the download is gone: its files are garbage now
    assert all(freed[str(partials[name])]["status"] == "done" for name in ("single", "part", "merged"))
    assert not any(path.exists() for path in partials.values())
    ms_clean("--yes")  # and, once they are gone, the locks that guarded them
    assert not [p.name for p in lock_dir.iterdir()]
    assert (snap / "config.json").read_bytes() == b"{}"


def test_a_modelscope_download_that_takes_its_lock_after_the_plan_keeps_its_file(tmp_path: Path) -> None:
    """clean holds each partial file's lock while it removes it: a download that took the lock since
    the plan was made keeps its file (the change is skipped)."""
    from modelcache.act.clean import execute_clean
    from modelcache.clean import plan_clean
    from modelcache.locations import Location, StoreLocation
    from modelcache.scan import scan_locations
    from modelcache.store_kind import StoreKind

    root, cache = tmp_path / "modelscope", tmp_path / "hf"
    _snap, partials, locks = modelscope_downloads(root)
    cache.mkdir()
    for path in partials.values():
        old(path)
    store = StoreLocation(StoreKind("modelscope"), str(root), "--store")
    plan = plan_clean(scan_locations(Location(str(cache), "--cache-dir"), [], [store]), str(cache), min_age=0)
    planned = {i.path: i.fix for i in plan.items}
    assert planned[str(partials["single"])] == planned[str(partials["part"])] == "remove"
    before = partials["single"].read_bytes(), partials["part"].read_bytes()
    with helper(HOLD_LOCKS, locks["single"], locks["big"]):
        result = execute_clean(plan, str(cache))
    outcomes = {o.target: o for o in result.outcomes}
    for name in ("single", "part", "merged"):
        outcome = outcomes[str(partials[name])]
        assert (outcome.status, outcome.reason) == ("skipped", "a live download holds its lock")
    assert (partials["single"].read_bytes(), partials["part"].read_bytes()) == before
    assert outcomes[str(partials["dataset"])].status == "done" and not partials["dataset"].exists()

"""`modelcache analyze` on caches made by the real huggingface_hub client through LocalHub.

Each test builds a machine, runs the CLI in a new process, and compares its figures with
`expected_figures`, which computes them from the files alone.
"""

from __future__ import annotations

import hashlib
import os
import pty
import shutil
import sys
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils._shared_blobs import publish_blob_to_shared_store

from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_cache, download_to_local_dir, random_bytes, write_tree

from .machine import analyze_json, expected_figures, run_cli, snapshot_tree

FIGURES = ("hf_cache_bytes", "local_bytes", "total_bytes", "duplicate_bytes")


@pytest.fixture(autouse=True)
def digest_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "index" / "digests.sqlite"
    monkeypatch.setenv("MODELCACHE_INDEX", str(path))
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def models(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


def weights(name: str, size: int = 300_000) -> bytes:
    return random_bytes(size, name)


def model_files(name: str) -> dict[str, bytes]:
    return {
        "config.json": f'{{"name": "{name}"}}'.encode(),
        "model.safetensors": weights(name),
        "sub/adapter.safetensors": weights(name + "-adapter", 70_000),
    }


def check(cache: Path, models: list[Path], **expect: int) -> dict[str, object]:
    """Run analyze; its figures must equal the independent ones (and `expect`, where given)."""
    report = analyze_json(cache, *models)
    assert report["warnings"] == []
    independent = expected_figures(cache, models)
    assert {k: report[k] for k in FIGURES} == independent
    for key, value in expect.items():
        assert report[key] == value, key
    assert report["duplicate_bytes"] == sum(g["reclaimable_bytes"] for g in report["duplicates"])
    return report


def file_sizes(files: dict[str, bytes]) -> int:
    return sum(len(c) for c in files.values())


def test_one_repo_in_cache_only(local_hub: LocalHub, cache: Path, models: Path) -> None:
    files = model_files("a")
    local_hub.add_commit("org/a", files)
    download_to_cache(local_hub, "org/a", cache)
    report = check(cache, [models], duplicate_bytes=0, local_bytes=0)
    (repo,) = report["repos"]
    assert (repo["id"], repo["type"], repo["store"], repo["status"]) == ("org/a", "model", "hf_cache", "complete")
    # blobs hold the content; snapshot symlinks, refs, trees and CACHEDIR.TAG add only metadata
    assert repo["size_bytes"] >= file_sizes(files)
    assert report["hf_cache_bytes"] - report["metadata_bytes"] == file_sizes(files)


def test_local_dir_copy_of_cached_repo(local_hub: LocalHub, cache: Path, models: Path) -> None:
    files = model_files("b")
    local_hub.add_commit("org/b", files)
    download_to_cache(local_hub, "org/b", cache)
    download_to_local_dir(local_hub, "org/b", models / "b", cache)
    report = check(cache, [models], duplicate_bytes=file_sizes(files))
    local = [r for r in report["repos"] if r["store"] == "local_dir"]
    assert [(r["id"], r["status"], r["duplicated_bytes"]) for r in local] == [("org/b", "complete", file_sizes(files))]
    assert len(report["duplicates"]) == len(files)
    assert all(g["proven"] and g["copies"] == 2 for g in report["duplicates"])


def test_local_dir_copy_made_before_the_cache_held_the_repo(local_hub: LocalHub, cache: Path, models: Path) -> None:
    files = model_files("c")
    local_hub.add_commit("org/c", files)
    download_to_local_dir(local_hub, "org/c", models / "c", cache)
    download_to_cache(local_hub, "org/c", cache)
    check(cache, [models], duplicate_bytes=file_sizes(files))


def test_same_file_in_two_repos(local_hub: LocalHub, cache: Path, models: Path) -> None:
    shared = weights("shared", 500_000)
    local_hub.add_commit("org/d1", {"model.safetensors": shared, "config.json": b'{"d": 1}'})
    local_hub.add_commit("org/d2", {"weights/model.safetensors": shared, "config.json": b'{"d": 2}'})
    download_to_cache(local_hub, "org/d1", cache)
    download_to_cache(local_hub, "org/d2", cache)
    report = check(cache, [models], duplicate_bytes=len(shared))
    (group,) = report["duplicates"]
    assert group["digest"] == "sha256:" + hashlib.sha256(shared).hexdigest()


def test_two_revisions_share_blobs(local_hub: LocalHub, cache: Path, models: Path) -> None:
    base = model_files("e")
    first = local_hub.add_commit("org/e", base)
    local_hub.add_commit("org/e", {**base, "config.json": b'{"name": "e", "v": 2}'})
    download_to_cache(local_hub, "org/e", cache, revision=first)
    download_to_cache(local_hub, "org/e", cache)
    report = check(cache, [models], duplicate_bytes=0)
    (repo,) = report["repos"]
    assert len(repo["revisions"]) == 2


def test_plain_folder_with_renamed_copy_found_by_content(local_hub: LocalHub, cache: Path, models: Path) -> None:
    files = model_files("f")
    local_hub.add_commit("org/f", files)
    download_to_cache(local_hub, "org/f", cache)
    write_tree(models / "finetune", {"base.bin": files["model.safetensors"], "notes.txt": b"mine"})
    report = check(cache, [models], duplicate_bytes=len(files["model.safetensors"]))
    (group,) = report["duplicates"]
    assert any(p.endswith("finetune/base.bin") for p in group["paths"])


def test_no_symlink_cache(local_hub: LocalHub, cache: Path, models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As on Windows without developer mode: huggingface_hub copies blobs into each snapshot.
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_SYMLINKS", True)
    base = model_files("g")
    first = local_hub.add_commit("org/g", base)
    local_hub.add_commit("org/g", {**base, "config.json": b'{"name": "g", "v": 2}'})
    download_to_cache(local_hub, "org/g", cache, revision=first)
    download_to_cache(local_hub, "org/g", cache)
    snapshots = list((cache / "models--org--g" / "snapshots").rglob("model.safetensors"))
    assert len(snapshots) == 2 and not any(p.is_symlink() for p in snapshots)
    unchanged = len(base["model.safetensors"]) + len(base["sub/adapter.safetensors"])
    report = check(cache, [models])
    # every file both revisions share has two copies (at least: blobs/ may hold a third)
    assert report["duplicate_bytes"] >= unchanged


def test_hard_linked_copies_are_shared_not_duplicates(local_hub: LocalHub, cache: Path, models: Path) -> None:
    files = model_files("h")
    local_hub.add_commit("org/h", files)
    snapshot = download_to_cache(local_hub, "org/h", cache)
    target = models / "linked"
    target.mkdir()
    os.link(os.path.realpath(snapshot / "model.safetensors"), target / "model.safetensors")
    report = check(cache, [models], duplicate_bytes=0, local_bytes=0)
    assert report["total_bytes"] == report["hf_cache_bytes"]


def test_same_size_other_bytes_is_not_a_duplicate(local_hub: LocalHub, cache: Path, models: Path) -> None:
    files = model_files("i")
    local_hub.add_commit("org/i", files)
    download_to_cache(local_hub, "org/i", cache)
    other = bytearray(files["model.safetensors"])
    other[len(other) // 2] ^= 0xFF  # same size, same first and last bytes, one byte apart
    write_tree(models / "lookalike", {"model.safetensors": bytes(other)})
    check(cache, [models], duplicate_bytes=0)


def test_large_same_size_files_split_by_fingerprint(local_hub: LocalHub, cache: Path, models: Path) -> None:
    big = weights("big", 5_000_000)
    other = weights("big-other", 5_000_000)
    local_hub.add_commit("org/j", {"model.safetensors": big})
    download_to_cache(local_hub, "org/j", cache)
    write_tree(models / "copies", {"same.safetensors": big, "other.safetensors": other})
    check(cache, [models], duplicate_bytes=len(big))


def test_shared_xet_blob_store_counts_once(local_hub: LocalHub, cache: Path, models: Path) -> None:
    shared = weights("xet", 400_000)
    local_hub.add_commit("org/x1", {"model.safetensors": shared})
    local_hub.add_commit("org/x2", {"model.safetensors": shared})
    xet_hash = hashlib.sha256(b"xet" + shared).hexdigest()
    for repo in ("x1", "x2"):
        download_to_cache(local_hub, f"org/{repo}", cache)
        blob = cache / f"models--org--{repo}" / "blobs" / hashlib.sha256(shared).hexdigest()
        # what huggingface_hub 2.4 does after a Xet download: move the blob into the shared store
        assert publish_blob_to_shared_store(
            blob_path=str(blob), xet_hash=xet_hash, cache_dir=cache, expected_size=len(shared)
        )
    assert (cache / "blobs" / xet_hash[:2] / xet_hash).is_file()
    report = check(cache, [models], duplicate_bytes=0)
    assert report["hf_cache_bytes"] - report["metadata_bytes"] == len(shared)
    assert {r["status"] for r in report["repos"]} == {"complete"}
    # A local copy of a shared-store file is a duplicate of the store file.
    write_tree(models / "copy", {"model.safetensors": shared})
    report = check(cache, [models], duplicate_bytes=len(shared))
    assert any("/blobs/" + xet_hash[:2] + "/" in p for p in report["duplicates"][0]["paths"])


def test_dataset_repo(local_hub: LocalHub, cache: Path, models: Path) -> None:
    local_hub.add_commit("org/data", {"train.parquet": weights("train"), "README.md": b"# data"}, repo_type="dataset")
    download_to_cache(local_hub, "org/data", cache, repo_type="dataset")
    report = check(cache, [models])
    assert [(r["id"], r["type"]) for r in report["repos"]] == [("org/data", "dataset")]


def test_metadata_files_are_never_duplicates(local_hub: LocalHub, cache: Path, models: Path) -> None:
    # Two repos at commits with identical trees/*.json would be byte-identical metadata; refs too.
    files = {"model.safetensors": weights("k")}
    local_hub.add_commit("org/k1", files)
    local_hub.add_commit("org/k2", files)
    download_to_cache(local_hub, "org/k1", cache)
    download_to_cache(local_hub, "org/k2", cache)
    report = check(cache, [models], duplicate_bytes=len(files["model.safetensors"]))
    for group in report["duplicates"]:
        assert all("/blobs/" in p for p in group["paths"])


def test_analyze_writes_nothing_but_its_index(
    local_hub: LocalHub, cache: Path, models: Path, digest_index: Path
) -> None:
    files = model_files("l")
    local_hub.add_commit("org/l", files)
    download_to_cache(local_hub, "org/l", cache)
    download_to_local_dir(local_hub, "org/l", models / "l", cache)
    write_tree(models / "plain", {"w.bin": files["model.safetensors"]})
    before = snapshot_tree(cache, models)
    analyze_json(cache, models)
    analyze_json(cache, models, extra=("--fast",))
    assert snapshot_tree(cache, models) == before
    assert digest_index.is_file()


def test_digest_index_makes_the_second_run_read_nothing(local_hub: LocalHub, cache: Path, models: Path) -> None:
    files = model_files("m")
    local_hub.add_commit("org/m", files)
    download_to_cache(local_hub, "org/m", cache)
    download_to_local_dir(local_hub, "org/m", models / "m", cache)
    first = analyze_json(cache, models)
    second = analyze_json(cache, models)
    assert first["files_hashed"] == 2 * len(files) and second["files_hashed"] == 0
    assert first["duplicates"] == second["duplicates"]
    # A changed file is hashed again: the index is keyed by inode, size and mtime.
    path = models / "m" / "model.safetensors"
    path.write_bytes(weights("changed"))
    third = analyze_json(cache, models)
    assert third["files_hashed"] == 1  # only the changed file: its same-size partner is still indexed
    assert third["duplicate_bytes"] == first["duplicate_bytes"] - len(files["model.safetensors"])


def test_fast_reports_probable_duplicates_without_reading(local_hub: LocalHub, cache: Path, models: Path) -> None:
    files = model_files("n")
    local_hub.add_commit("org/n", files)
    download_to_cache(local_hub, "org/n", cache)
    download_to_local_dir(local_hub, "org/n", models / "n", cache)
    fast = analyze_json(cache, models, extra=("--fast",))
    assert fast["files_hashed"] == 0 and fast["fast"] is True
    assert fast["duplicate_bytes"] == file_sizes(files)
    assert not any(g["proven"] for g in fast["duplicates"])
    analyze_json(cache, models)  # now the index knows both sides
    again = analyze_json(cache, models, extra=("--fast",))
    assert all(g["proven"] for g in again["duplicates"])


def test_copy_with_stale_claim_still_found(local_hub: LocalHub, cache: Path, models: Path) -> None:
    # A local_dir file touched after download loses its claim (huggingface_hub's own rule); content still matches.
    files = model_files("o")
    local_hub.add_commit("org/o", files)
    download_to_cache(local_hub, "org/o", cache)
    download_to_local_dir(local_hub, "org/o", models / "o", cache)
    future = os.stat(models / "o" / "model.safetensors").st_mtime + 3600
    os.utime(models / "o" / "model.safetensors", (future, future))
    check(cache, [models], duplicate_bytes=file_sizes(files))


def test_backup_of_the_cache_in_a_model_folder(cache: Path, models: Path, local_hub: LocalHub) -> None:
    # A copied cache inside a model folder is plain files: its blobs are copies, its symlinks count zero.
    local_hub.add_commit("org/p", model_files("p"))
    download_to_cache(local_hub, "org/p", cache)
    shutil.copytree(cache, models / "backup-of-cache", symlinks=True)
    report = check(cache, [models])
    assert report["duplicate_bytes"] > 0


def test_local_dir_alone_is_named_from_the_ref_it_wrote_into_the_cache(
    local_hub: LocalHub, cache: Path, models: Path
) -> None:
    # huggingface_hub writes <cache>/models--org--q/refs/main for a local_dir download, and nothing else.
    local_hub.add_commit("org/q", model_files("q"))
    download_to_local_dir(local_hub, "org/q", models / "renamed-folder", cache)
    assert [p.name for p in (cache / "models--org--q").iterdir()] == ["refs"]
    report = check(cache, [models])
    assert [(r["id"], r["store"], r["status"]) for r in report["repos"]] == [("org/q", "local_dir", "complete")]
    assert report["hf_cache_bytes"] == 40  # refs/main: a commit hash, metadata only


def test_partial_snapshot_is_incomplete_and_single_file_unknown(local_hub: LocalHub, cache: Path, models: Path) -> None:
    from huggingface_hub import hf_hub_download

    local_hub.add_commit("org/r", model_files("r"))
    local_hub.add_commit("org/s", model_files("s"))
    download_to_cache(local_hub, "org/r", cache, allow_patterns=["*.json"])
    hf_hub_download("org/s", "config.json", cache_dir=cache, endpoint=local_hub.url, token=False)
    report = check(cache, [models])
    status = {r["id"]: r for r in report["repos"]}
    assert status["org/r"]["status"] == "incomplete"
    assert status["org/r"]["problems"] == [f"{status['org/r']['revisions'][0][:8]}: 2 of 3 files not downloaded"]
    assert status["org/s"]["status"] == "unknown"  # no trees/<commit>.json to compare with


def test_cache_found_where_huggingface_hub_puts_it(
    local_hub: LocalHub, tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "elsewhere"
    local_hub.add_commit("org/t", model_files("t"))
    download_to_cache(local_hub, "org/t", home / "hub")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    result = run_cli("analyze", "--json", "--models", models)
    assert result.json()["hf_cache_dir"] == str(home / "hub")
    assert [r["id"] for r in result.json()["repos"]] == ["org/t"]
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "other"))
    text = run_cli("analyze", "--models", models)
    assert f"HF cache: {tmp_path / 'other'} (from HF_HUB_CACHE)" in text.out


def test_progress_bar_on_a_terminal_only(local_hub: LocalHub, cache: Path, models: Path) -> None:
    local_hub.add_commit("org/u", {"model.safetensors": weights("u", 3_000_000)})
    download_to_cache(local_hub, "org/u", cache)
    download_to_local_dir(local_hub, "org/u", models / "u", cache)
    args = ["analyze", "--cache-dir", str(cache), "--models", str(models)]
    piped = run_cli(*args)
    assert "hashing" not in piped.err
    # under a pseudo-terminal the bar is drawn on stderr
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execvpe(
            sys.executable,
            [sys.executable, "-m", "modelcache", *args],
            {**os.environ, "MODELCACHE_INDEX": str(cache.parent / "pty.sqlite")},
        )
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    output = b"".join(chunks).decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0
    assert "hashing" in output and "Duplicate Storage" in output

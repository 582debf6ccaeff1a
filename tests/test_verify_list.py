"""`verify` finds flipped bytes against blob names and etags; `list` shows every model, offline."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_cache, download_to_local_dir, random_bytes

from .machine import run_cli, snapshot_tree

FILES = {"config.json": b'{"v": 1}', "model.safetensors": random_bytes(300_000, "verify")}


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCACHE_INDEX", str(tmp_path / "state" / "digests.sqlite"))
    monkeypatch.setenv("MODELCACHE_STATE", str(tmp_path / "state"))


@pytest.fixture
def machine(local_hub: LocalHub, tmp_path: Path) -> tuple[Path, Path]:
    cache, models = tmp_path / "cache", tmp_path / "models"
    local_hub.add_commit("org/v", FILES)
    download_to_cache(local_hub, "org/v", cache)
    download_to_local_dir(local_hub, "org/v", models / "v", cache)
    return cache, models


def flip(path: Path, at: int = 1000) -> None:
    """Flip one byte in place and put the mtime back: only the bytes tell."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def cli_json(*args: str, code: int | None = None) -> dict[str, Any]:
    result = run_cli(*args, "--json")
    assert "Traceback" not in result.err
    if code is not None:
        assert result.code == code, result.err + result.out
    data: dict[str, Any] = result.json()
    return data


def test_verify_finds_one_flipped_byte_in_a_blob_and_in_a_local_copy(machine: tuple[Path, Path]) -> None:
    cache, models = machine
    where = ["--cache-dir", str(cache), "--models", str(models)]
    clean = cli_json("verify", "--all", *where, code=0)
    assert clean["corrupt"] == [] and clean["files_verified"] == 4
    blob = cache / "models--org--v" / "blobs" / hashlib.sha256(FILES["model.safetensors"]).hexdigest()
    local = models / "v" / "model.safetensors"
    flip(blob)
    flip(local, at=5)
    before = snapshot_tree(cache, models)
    found = cli_json("verify", "--all", *where, code=1)
    assert snapshot_tree(cache, models) == before  # nothing changes without --repair
    corrupt = {c["path"]: c for c in found["corrupt"]}
    assert set(corrupt) == {str(blob), str(local)}
    assert corrupt[str(blob)]["linked_from"] and "/snapshots/" in corrupt[str(blob)]["linked_from"][0]
    assert corrupt[str(blob)]["changed_without_mtime"]  # the index held the good digest for this inode and mtime
    text = run_cli("verify", "org/v", *where)
    assert "CORRUPT" in text.out and "--repair" in text.out
    listed = {(r["store"], r["id"]): r["status"] for r in cli_json("list", *where)["repos"]}
    assert listed == {("hf_cache", "org/v"): "corrupt", ("local_dir", "org/v"): "corrupt"}

    repaired = cli_json("verify", "--all", "--repair", *where, code=0)  # found and repaired: done
    assert {o["status"] for o in repaired["repair"]["outcomes"]} == {"done"}
    assert blob.read_bytes() == FILES["model.safetensors"] and local.read_bytes() == FILES["model.safetensors"]
    assert cli_json("verify", "--all", *where, code=0)["corrupt"] == []
    assert {r["status"] for r in cli_json("list", *where)["repos"]} == {"complete"}


def test_verify_needs_repos_or_all(machine: tuple[Path, Path]) -> None:
    cache, models = machine
    for args, message in [((), "or use --all"), (("org/nope",), "not found in the scanned stores: org/nope")]:
        result = run_cli("verify", *args, "--cache-dir", str(cache), "--models", str(models))
        assert result.code == 2 and message in result.err and "Traceback" not in result.err


def test_list_offline_shows_every_model(local_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, models = tmp_path / "cache", tmp_path / "models"
    local_hub.add_commit("org/m", FILES)
    local_hub.add_commit("org/partial", FILES)
    local_hub.add_commit("org/data", {"train.csv": b"a,b\n1,2\n"}, repo_type="dataset")
    download_to_cache(local_hub, "org/m", cache)
    download_to_cache(local_hub, "org/partial", cache, allow_patterns=["*.json"])
    download_to_cache(local_hub, "org/data", cache, repo_type="dataset")
    download_to_local_dir(local_hub, "org/m", models / "m", cache)
    broken = next((cache / "models--org--m" / "snapshots").iterdir()) / "config.json"
    local_hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    where = ["--cache-dir", str(cache), "--models", str(models)]
    rows = {(r["store"], r["id"]): r for r in cli_json("list", *where, code=0)["repos"]}
    assert {k: r["status"] for k, r in rows.items()} == {
        ("hf_cache", "org/m"): "complete",
        ("hf_cache", "org/partial"): "incomplete",
        ("hf_cache", "org/data"): "complete",
        ("local_dir", "org/m"): "complete",
    }
    assert rows[("hf_cache", "org/data")]["type"] == "dataset"
    assert rows[("hf_cache", "org/m")]["size_bytes"] >= sum(len(c) for c in FILES.values())
    assert all(r["last_access"] for r in rows.values())
    os.unlink(os.path.realpath(broken))
    after = {(r["store"], r["id"]): r["status"] for r in cli_json("list", *where, code=1)["repos"]}
    assert after[("hf_cache", "org/m")] == "broken"
    text = run_cli("list", *where)
    assert "org/partial" in text.out and "incomplete" in text.out


def test_a_redownload_cut_short_ends_its_journal_as_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify --repair goes through the one journaled run: a Ctrl-C during a download ends its run
    `interrupted` (written, not merely missing), and the next command closes the open change."""
    import huggingface_hub

    from modelcache.act.journal import read_records, runs
    from modelcache.act.recover import recover
    from modelcache.act.repair import redownload
    from modelcache.inventory import Digest
    from modelcache.verify import Redownload

    def interrupted(*args: Any, **kwargs: Any) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", interrupted)
    corrupt = str(tmp_path / "models" / "v" / "model.safetensors")
    with pytest.raises(KeyboardInterrupt):
        claim = Digest("sha256", hashlib.sha256(FILES["model.safetensors"]).hexdigest())
        target = Redownload(corrupt, "model", "org/v", "main", "model.safetensors", None, claim, ())
        redownload([target], str(tmp_path / "cache"))
    (run,) = runs()
    assert (run.command, run.finished, run.status) == ("verify-repair", True, "interrupted")
    assert recover() == [run.run_id]
    assert read_records(run.path)[-1] == {"type": "abandoned", "action": 1, "recovered": True}

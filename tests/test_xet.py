"""huggingface_hub's Xet cache (`<HF_HOME>/xet`), the store added through the registry alone.

The cache is laid out by hand as hf_xet writes it (its client cannot be pointed at LocalHub:
it talks to a Xet storage service): an endpoint folder with a chunk cache, a shard cache and
staging, and hf_xet's logs. A chunk file holding the same bytes as a model file shows that
nothing in it is ever taken for a duplicate.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_cache, random_bytes, write_tree

from .machine import run_cli, snapshot_tree

WEIGHTS = random_bytes(300_000, "xet-weights")
ENDPOINT = "https___cas_serv-tGqkUaZf_CBPHQ6h"
KEY = "A1GerURLUcISVivdseeoY1PnYifYkOaCCJ7V5Q9fjgxkZWZhdWx0"
CHUNKS = {  # what a chunk cache holds: <2 chars>/<key>/<range>; one file has the model's bytes
    f"{ENDPOINT}/chunk-cache/A1/{KEY}/AAAAAAEAAAA5DQAAAAAAAIhRLjDI": WEIGHTS,
    f"{ENDPOINT}/chunk-cache/A1/{KEY}/AQAAAAIAAABzngAAAAAAAPNqPjd5": random_bytes(200_000, "chunk-2"),
    f"{ENDPOINT}/chunk-cache/Qm/QmZxNDU0YjEzYTYwYjRl/AAAAAAEAAAAHAAAA": random_bytes(150_000, "chunk-3"),
}
OTHERS = {  # the rest of it, which `clean --xet-chunk-cache` leaves alone
    f"{ENDPOINT}/shard-cache/1fe4ffd5cf0c3375f1ef9aec5016cf773ccc5ca294293d3f92d92771dacfc15d.mdb": (
        random_bytes(40_000, "shard")
    ),
    f"{ENDPOINT}/staging/shard-session/906ee184dc1cd0615164a89ed64e8147b3fdccd1163d80d794c66814b3b09992.mdb": (
        random_bytes(3_000, "session")
    ),
    "logs/xet_20260101T000000.log": b'{"level":"INFO","msg":"download"}\n' * 20,
}
XET_BYTES = sum(map(len, CHUNKS.values())) + sum(map(len, OTHERS.values()))


class Machine:
    """An HF cache made by the real client, and the Xet cache beside it, at `<HF_HOME>/xet`."""

    def __init__(self, hf_home: Path, tmp_path: Path) -> None:
        self.cache = hf_home / "hub"
        self.xet = hf_home / "xet"
        self.tmp = tmp_path

    def run(self, *args: str, code: int = 0) -> dict[str, Any]:
        result = run_cli(*args, "--json", env={"HOME": str(self.tmp / "home")})
        assert "Traceback" not in result.err
        assert result.code == code, result.err + result.out
        data: dict[str, Any] = result.json()
        return data

    def text(self, *args: str) -> str:
        result = run_cli(*args, env={"HOME": str(self.tmp / "home")})
        assert result.code == 0, result.err + result.out
        return result.out

    def chunk_paths(self) -> set[str]:
        return {str(self.xet / rel) for rel in CHUNKS}


@pytest.fixture
def machine(local_hub: LocalHub, hf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    monkeypatch.setenv("MODELCACHE_INDEX", str(tmp_path / "state" / "digests.sqlite"))
    monkeypatch.setenv("MODELCACHE_STATE", str(tmp_path / "state"))
    monkeypatch.delenv("HF_XET_CACHE", raising=False)
    m = Machine(hf_home, tmp_path)
    local_hub.add_commit("org/model", {"model.safetensors": WEIGHTS, "config.json": b"{}"})
    download_to_cache(local_hub, "org/model", m.cache)
    write_tree(m.xet, {**CHUNKS, **OTHERS})
    return m


def test_stores_finds_it_where_hf_xet_keeps_it(machine: Machine, tmp_path: Path) -> None:
    rows = {s["store"]: s for s in machine.run("stores")["stores"]}
    assert rows["xet_cache"] == {"store": "xet_cache", "path": str(machine.xet), "source": "HF_HOME", "present": True}
    moved = tmp_path / "elsewhere"
    write_tree(moved, {"logs/a.log": b"x"})
    result = run_cli("stores", "--json", env={"HOME": str(tmp_path / "home"), "HF_XET_CACHE": str(moved)})
    row = next(s for s in result.json()["stores"] if s["store"] == "xet_cache")
    assert (row["path"], row["source"], row["present"]) == (str(moved), "HF_XET_CACHE", True)
    assert "xet_cache" in machine.text("stores")


def test_analyze_counts_it_and_never_calls_it_a_duplicate(machine: Machine) -> None:
    for fast in ((), ("--fast",)):
        report = machine.run("analyze", *fast)
        assert report["duplicates"] == [] and report["duplicate_bytes"] == 0
        store = next(s for s in report["stores"] if s["store"] == "xet_cache")
        assert store == {
            "store": "xet_cache",
            "paths": [str(machine.xet)],
            "bytes": XET_BYTES,
            "cross_store_duplicate_bytes": 0,
        }
        assert report["total_bytes"] == report["hf_cache_bytes"] + XET_BYTES  # counted in Total Storage
        entries = {r["id"]: r for r in report["repos"] if r["store"] == "xet_cache"}
        assert set(entries) == {f"{ENDPOINT}/chunk-cache", f"{ENDPOINT}/shard-cache", f"{ENDPOINT}/staging", "logs"}
        assert entries[f"{ENDPOINT}/chunk-cache"]["size_bytes"] == sum(map(len, CHUNKS.values()))
        assert {r["type"] for r in entries.values()} == {"cache"}
    text = machine.text("analyze")
    assert "HF Xet cache:" in text and f"({XET_BYTES:,} bytes)" in text
    # and no copy of the model is planned away, nor is anything in the Xet cache touched
    plan = machine.run("consolidate", "--dry-run")
    assert plan["plan"]["actions"] == []


def test_list_shows_it_with_its_size(machine: Machine) -> None:
    rows = {r["id"]: r for r in machine.run("list")["repos"] if r["store"] == "xet_cache"}
    assert rows[f"{ENDPOINT}/shard-cache"]["size_bytes"] == len(next(iter(OTHERS.values())))
    assert sum(r["size_bytes"] for r in rows.values()) == XET_BYTES
    shown = machine.text("list")  # a table: its long names are cut, its sizes are whole
    assert "xet_cache" in shown and "650.0KB" in shown  # the chunk cache


def test_clean_leaves_it_alone_unless_asked(machine: Machine) -> None:
    before = snapshot_tree(machine.xet, machine.cache)
    plan = machine.run("clean", "--dry-run")
    assert not [i for i in plan["items"] if i["path"].startswith(str(machine.xet))]
    machine.run("clean", "--yes")
    assert snapshot_tree(machine.xet, machine.cache) == before

    asked = machine.run("clean", "--dry-run", "--xet-chunk-cache")
    items = [i for i in asked["items"] if i["kind"] == "xet-chunk-cache"]
    assert {i["path"] for i in items} == machine.chunk_paths()
    assert {i["action"] for i in items} == {"remove"}
    assert asked["totals"]["xet-chunk-cache"] == {"count": len(CHUNKS), "bytes": sum(map(len, CHUNKS.values()))}
    assert "hf_xet chunk cache files" in machine.text("clean", "--dry-run", "--xet-chunk-cache")
    assert snapshot_tree(machine.xet, machine.cache) == before  # a dry run changes nothing

    done = machine.run("clean", "--yes", "--xet-chunk-cache")
    assert done["bytes_freed"] == sum(map(len, CHUNKS.values()))
    after = snapshot_tree(machine.xet, machine.cache)
    files = {p for p, entry in after.items() if os.path.isfile(p)}
    assert not files & machine.chunk_paths()
    kept = {p: v for p, v in before.items() if p in after and not os.path.isdir(p)}
    assert {p: after[p] for p in kept} == kept  # the shard cache, staging, logs and the HF cache as they were
    assert {str(machine.xet / rel) for rel in OTHERS} <= files
    chunk_cache = machine.xet / ENDPOINT / "chunk-cache"
    assert chunk_cache.is_dir() and os.listdir(chunk_cache) == []  # emptied: the folders it held go, it stays
    assert next(s for s in machine.run("analyze")["stores"] if s["store"] == "xet_cache")["bytes"] == sum(
        map(len, OTHERS.values())
    )


def test_clean_keeps_the_chunk_cache_while_a_process_has_a_file_of_it_open(machine: Machine) -> None:
    held = sorted(machine.chunk_paths())[0]
    holder = subprocess.Popen([sys.executable, "-c", "import sys,time; f=open(sys.argv[1],'rb'); time.sleep(60)", held])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            plan = machine.run("clean", "--dry-run", "--xet-chunk-cache")
            items = [i for i in plan["items"] if i["kind"] == "xet-chunk-cache"]
            if {i["action"] for i in items} == {"keep"}:
                break
            time.sleep(0.1)
        assert {i["action"] for i in items} == {"keep"} and len(items) == len(CHUNKS)
        assert all("open" in i["reason"] for i in items)
        before = snapshot_tree(machine.xet)
        machine.run("clean", "--yes", "--xet-chunk-cache")
        assert snapshot_tree(machine.xet) == before
    finally:
        holder.kill()
        holder.wait()


def test_its_json_is_documented() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "json.md").read_text()
    for word in ("`xet_cache`", "`cache`", "`xet-chunk-cache`", "`stores`", "`cross_store_duplicate_bytes`"):
        assert word in doc, word

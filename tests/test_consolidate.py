"""`consolidate`, `apply` and `undo` on machines made by the real client through LocalHub.

For every mode: every path that existed reads the same bytes afterwards (or, for `delete`,
is journaled with its bytes still in the cache), the bytes freed equal what analyze called
duplicated, and `undo` gives back the exact earlier tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub.utils._shared_blobs import publish_blob_to_shared_store

from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_cache, download_to_local_dir, random_bytes, write_tree

from .machine import analyze_json, run_cli, snapshot_tree


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELCACHE_INDEX", str(tmp_path / "state" / "digests.sqlite"))
    monkeypatch.setenv("MODELCACHE_STATE", str(tmp_path / "state"))
    return tmp_path / "state"


REPOS = {
    "org/alpha": {
        "config.json": b'{"alpha": 1}',
        "model.safetensors": random_bytes(400_000, "alpha"),
        "sub/extra.safetensors": random_bytes(90_000, "alpha-extra"),
    },
    "org/beta": {
        "config.json": b'{"beta": 2}',
        "model.safetensors": random_bytes(300_000, "beta"),
        # the same weights as alpha: a duplicate inside the cache
        "shared.safetensors": random_bytes(90_000, "alpha-extra"),
    },
}


class Machine:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache = root / "cache"
        self.models = root / "models"

    def args(self, *extra: str) -> list[str]:
        return ["--cache-dir", str(self.cache), "--models", str(self.models), *extra]

    def contents(self) -> dict[str, tuple[str, bytes | None]]:
        """Every path under the roots: its type and, for files (through symlinks), its bytes."""
        found: dict[str, tuple[str, bytes | None]] = {}
        for root in (self.cache, self.models):
            for dirpath, dirs, files in os.walk(root):
                for name in dirs + files:
                    path = os.path.join(dirpath, name)
                    st = os.lstat(path)
                    kind = "dir" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode) else "file"
                    data = None
                    if kind != "dir" and os.path.isfile(path):
                        data = hashlib.sha256(Path(path).read_bytes()).digest()
                    found[path] = (kind, data)
        return found


@pytest.fixture
def machine(local_hub: LocalHub, tmp_path: Path) -> Machine:
    m = Machine(tmp_path / "machine")
    for repo_id, files in REPOS.items():
        local_hub.add_commit(repo_id, files)
        download_to_cache(local_hub, repo_id, m.cache)
    download_to_local_dir(local_hub, "org/alpha", m.models / "alpha", m.cache)
    write_tree(m.models / "finetune", {"base.bin": REPOS["org/beta"]["model.safetensors"], "mine.txt": b"only here"})
    return m


def consolidate(m: Machine, *extra: str) -> dict[str, Any]:
    result = run_cli("consolidate", "--yes", "--json", *m.args(*extra))
    assert "Traceback" not in result.err
    assert result.code in (0, 1), result.err
    data: dict[str, Any] = result.json()
    return data


def undo(run: str | None = None) -> dict[str, Any]:
    result = run_cli("undo", "--json", *([run] if run else []))
    assert result.code == 0, result.err + result.out
    data: dict[str, Any] = result.json()
    return data


def assert_same_bytes(before: dict[str, tuple[str, bytes | None]], after: dict[str, tuple[str, bytes | None]]) -> None:
    for path, (_kind, data) in before.items():
        if data is not None:
            assert after[path][1] == data, path


@pytest.mark.parametrize("mode", ["auto", "hardlink"])
def test_link_modes_free_every_duplicate_and_undo_restores(machine: Machine, mode: str) -> None:
    before_tree = snapshot_tree(machine.cache, machine.models)
    before = machine.contents()
    duplicate = analyze_json(machine.cache, machine.models)["duplicate_bytes"]
    total = analyze_json(machine.cache, machine.models)["total_bytes"]
    assert duplicate > 0

    result = consolidate(machine, "--mode", mode)
    left = {o["path"]: os.path.getsize(o["path"]) for o in result["outcomes"] if o["status"] == "left_alone"}
    if mode == "auto" and os.geteuid() == 0:
        # As root on a file system without reflinks, auto links no copy that huggingface_hub or `cp` would
        # write through: every local copy is left alone, the duplicate inside the cache linked
        # (test_next_steps.py). Exit 0: left alone is no warning.
        local = {p for p, (kind, _) in before.items() if p.startswith(str(machine.models)) and kind == "file"}
        assert set(left) == {p for p in local if "/.cache/" not in p and "mine.txt" not in p}
    else:
        assert not left
    assert result["bytes_freed"] == duplicate - sum(left.values())
    assert result["failed"] == 0 and result["skipped"] == 0
    assert_same_bytes(before, machine.contents())
    after = analyze_json(machine.cache, machine.models)
    assert after["duplicate_bytes"] == sum(left.values())
    assert after["total_bytes"] == total - result["bytes_freed"]
    # the copies linked are now the cache's own inodes
    local = machine.models / "alpha" / "model.safetensors"
    blob = (
        machine.cache
        / "models--org--alpha"
        / "blobs"
        / hashlib.sha256(REPOS["org/alpha"]["model.safetensors"]).hexdigest()
    )
    assert (os.stat(local).st_ino == os.stat(blob).st_ino) == (str(local) not in left)

    undone = undo()
    assert undone["done"] == result["done"]
    assert snapshot_tree(machine.cache, machine.models) == before_tree or _same_but_inodes(
        before_tree, snapshot_tree(machine.cache, machine.models)
    )
    assert_same_bytes(before, machine.contents())
    assert analyze_json(machine.cache, machine.models)["duplicate_bytes"] == duplicate


def _same_but_inodes(a: dict[str, tuple[Any, ...]], b: dict[str, tuple[Any, ...]]) -> bool:
    """Restored copies are new inodes; everything else (paths, types, sizes, mtimes, modes, link targets) is equal."""
    strip = lambda t: {p: (v[0], v[1], v[2] if v[0] != stat.S_IFDIR else None, v[4], v[5]) for p, v in t.items()}  # noqa: E731
    return strip(a) == strip(b)


def test_undo_gives_back_the_exact_tree(machine: Machine) -> None:
    before = snapshot_tree(machine.cache, machine.models)
    consolidate(machine)
    undo()
    assert _same_but_inodes(before, snapshot_tree(machine.cache, machine.models))
    for dirpath, _dirs, files in os.walk(machine.models):
        for name in files:
            assert os.lstat(os.path.join(dirpath, name)).st_nlink == 1  # links gone


def test_symlink_mode_links_local_copies_to_snapshot_files(machine: Machine) -> None:
    before = machine.contents()
    result = consolidate(machine, "--mode", "symlink")
    local = machine.models / "alpha" / "model.safetensors"
    assert local.is_symlink()
    target = os.readlink(local)
    assert not os.path.isabs(target) and "/snapshots/" in os.path.normpath(os.path.join(local.parent, target))
    assert_same_bytes(before, machine.contents())
    # the duplicate inside the cache (beta/shared = alpha/extra) is never symlinked: left alone, no warning
    left = [o for o in result["outcomes"] if o["status"] != "done"]
    assert left and all(o["status"] == "left_alone" and "inside the HF cache" in o["reason"] for o in left)
    assert result["skipped"] == 0
    undo()
    assert not local.is_symlink()
    assert_same_bytes(before, machine.contents())


def test_delete_mode_removes_local_copies_the_cache_keeps(machine: Machine, state: Path) -> None:
    before = machine.contents()
    dry = run_cli("consolidate", "--dry-run", "--json", "--mode", "delete", *machine.args()).json()
    folders = {Path(f["path"]).name: f for f in dry["plan"]["folders"]}
    assert folders["alpha"]["fully_consolidated"] and folders["alpha"]["cache_snapshot"]
    assert folders["finetune"]["only_here"] == ["mine.txt"] and not folders["finetune"]["fully_consolidated"]
    result = consolidate(machine, "--mode", "delete")
    removed = [o["path"] for o in result["outcomes"] if o["status"] == "done"]
    assert str(machine.models / "alpha" / "model.safetensors") in removed
    assert str(machine.models / "finetune" / "base.bin") in removed
    assert (machine.models / "finetune" / "mine.txt").read_bytes() == b"only here"  # only here: stays
    journal = "".join(p.read_text() for p in (state / "journal").glob("*.jsonl"))
    for path in removed:
        assert not os.path.lexists(path)
        assert json.dumps(path) in journal
        assert before[path][1] in {v[1] for p, v in machine.contents().items() if p.startswith(str(machine.cache))}
    undo()
    assert_same_bytes(before, machine.contents())


def test_delete_mode_lists_and_removes_emptied_folders(local_hub: LocalHub, tmp_path: Path) -> None:
    m = Machine(tmp_path / "m")
    weights = random_bytes(100_000, "w")
    local_hub.add_commit("org/w", {"model.safetensors": weights})
    download_to_cache(local_hub, "org/w", m.cache)
    write_tree(m.models / "copy", {"deep/er/model.safetensors": weights})
    listed = consolidate(m, "--mode", "delete")
    copy = m.models / "copy"
    assert listed["empty_dirs"] == [str(copy / "deep" / "er"), str(copy / "deep"), str(copy)]
    assert (m.models / "copy" / "deep").is_dir() and not listed["removed_dirs"]
    undo()
    removed = consolidate(m, "--mode", "delete", "--remove-empty-dirs")
    assert removed["removed_dirs"] == removed["empty_dirs"] and not copy.exists()
    undo()
    assert (m.models / "copy" / "deep" / "er" / "model.safetensors").read_bytes() == weights


def test_reflink_mode_on_ext4_skips_with_the_modes_that_would_work(machine: Machine) -> None:
    if _fs_type(machine.root) in ("xfs", "btrfs"):
        pytest.skip("this folder supports reflinks; see test_consolidate_faults for the XFS test")
    before = machine.contents()
    result = consolidate(machine, "--mode", "reflink")
    assert result["done"] == 0 and result["skipped"] > 0
    assert all("does not support reflinks" in o["reason"] for o in result["outcomes"])
    plan = run_cli("consolidate", "--dry-run", "--mode", "reflink", *machine.args()).out
    assert "would work: hardlink" in plan
    assert_same_bytes(before, machine.contents())


def _fs_type(path: Path) -> str:
    from modelcache.plan import fs_types_of

    dev = os.stat(path).st_dev
    return fs_types_of([dev]).get(dev, "unknown")


def test_dry_run_changes_nothing_and_saved_plan_applies(machine: Machine, tmp_path: Path) -> None:
    before = snapshot_tree(machine.cache, machine.models)
    plan_file = tmp_path / "plan.json"
    dry = run_cli("consolidate", "--dry-run", "--plan-out", str(plan_file), *machine.args())
    assert dry.code == 0 and "Total: " in dry.out
    dry_json = run_cli("consolidate", "--dry-run", "--json", *machine.args()).json()
    assert snapshot_tree(machine.cache, machine.models) == before
    plan = json.loads(plan_file.read_text())
    assert plan["header"]["mode"] == "auto" and plan["header"]["schema_version"] == 1
    keep_reasons = {a["keep_reason"] for a in plan["actions"]}
    assert keep_reasons == {"HF cache blob (what huggingface_hub and transformers read)"}
    applied = run_cli("apply", "--yes", "--json", str(plan_file))
    assert applied.code == 0, applied.err
    assert applied.json()["bytes_freed"] == dry_json["bytes_to_free"]
    assert analyze_json(machine.cache, machine.models)["duplicate_bytes"] == dry_json["left_alone_bytes"]


def test_changes_need_yes_when_not_on_a_terminal(machine: Machine) -> None:
    before = snapshot_tree(machine.cache, machine.models)
    result = run_cli("consolidate", *machine.args())
    assert result.code == 2 and "add --yes" in result.err
    assert snapshot_tree(machine.cache, machine.models) == before


def test_bad_plan_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{nope")
    (tmp_path / "evil.json").write_text(
        json.dumps(
            {
                "header": {
                    "schema_version": 1,
                    "tool_version": "x",
                    "created_at": 0,
                    "argv": [],
                    "roots": [],
                    "mode": "delete",
                    "complete": True,
                },
                "actions": [
                    {
                        "id": 1,
                        "kind": "delete",
                        "methods": [],
                        "digest": "0" * 64,
                        "keep_reason": "",
                        "symlink_to": None,
                        "reason": None,
                        "alternatives": [],
                        "warnings": [],
                        "target": {
                            "path": "relative/../../etc/passwd",
                            "dev": 1,
                            "ino": 1,
                            "size": 1,
                            "mtime_ns": 1,
                            "store": "plain",
                            "repo": "x",
                        },
                        "keep": {
                            "path": "/a",
                            "dev": 1,
                            "ino": 2,
                            "size": 1,
                            "mtime_ns": 1,
                            "store": "hf_cache",
                            "repo": "y",
                        },
                    }
                ],
            }
        )
    )
    for name, message in [
        ("missing.json", "cannot read plan"),
        ("bad.json", "not a modelcache plan"),
        ("evil.json", "not absolute and clean"),
    ]:
        result = run_cli("apply", "--yes", str(tmp_path / name))
        assert result.code == 2 and message in result.err and "Traceback" not in result.err


def test_hard_link_keeps_the_older_mtime_so_local_dir_stays_trusted(local_hub: LocalHub, tmp_path: Path) -> None:
    m = Machine(tmp_path / "m")
    files = {"config.json": b'{"c": 1}', "model.safetensors": random_bytes(200_000, "c")}
    local_hub.add_commit("org/c", files)
    download_to_cache(local_hub, "org/c", m.cache)
    download_to_local_dir(local_hub, "org/c", m.models / "c", m.cache)
    meta = m.models / "c" / ".cache" / "huggingface" / "download"
    meta_before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in meta.glob("*.metadata")}
    # the local copies are newer than the blobs: the shared inode must keep the blobs' older mtime
    local_mtimes = {n: (m.models / "c" / n).stat().st_mtime_ns for n in files}
    consolidate(m, "--mode", "hardlink")
    for name in files:
        st = (m.models / "c" / name).stat()
        assert st.st_nlink == 2 and st.st_mtime_ns <= local_mtimes[name]
        assert stat.S_IMODE(st.st_mode) & 0o222 == 0  # read-only: an in-place rewrite fails, not spreads
    local_hub.clear_log()
    download_to_local_dir(local_hub, "org/c", m.models / "c", m.cache)  # must neither download nor rehash
    assert not [r for r in local_hub.request_log if "/resolve/" in r.path]
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in meta.glob("*.metadata")} == meta_before
    assert all((m.models / "c" / n).read_bytes() == c for n, c in files.items())


def test_local_copy_of_a_shared_store_file_is_linked_to_the_store_file(local_hub: LocalHub, tmp_path: Path) -> None:
    m = Machine(tmp_path / "m")
    weights = random_bytes(300_000, "xet")
    local_hub.add_commit("org/x", {"model.safetensors": weights})
    download_to_cache(local_hub, "org/x", m.cache)
    blob = m.cache / "models--org--x" / "blobs" / hashlib.sha256(weights).hexdigest()
    xet_hash = hashlib.sha256(b"xet" + weights).hexdigest()
    assert publish_blob_to_shared_store(
        blob_path=str(blob), xet_hash=xet_hash, cache_dir=m.cache, expected_size=len(weights)
    )
    write_tree(m.models / "copy", {"model.safetensors": weights})
    store_links = {str(p): os.readlink(p) for p in m.cache.rglob("*") if p.is_symlink()}
    manifests = {str(p): p.read_bytes() for p in (m.cache / "blobs").rglob("*.refs")}
    consolidate(m, "--mode", "hardlink")  # auto, as root, would leave a plain folder's copy alone
    store_file = m.cache / "blobs" / xet_hash[:2] / xet_hash
    assert os.stat(m.models / "copy" / "model.safetensors").st_ino == os.stat(store_file).st_ino
    assert {str(p): os.readlink(p) for p in m.cache.rglob("*") if p.is_symlink()} == store_links
    assert {str(p): p.read_bytes() for p in (m.cache / "blobs").rglob("*.refs")} == manifests


def test_adopt_moves_a_local_dir_copy_into_the_cache_without_downloading(
    local_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import snapshot_download

    m = Machine(tmp_path / "m")
    files = {"config.json": b'{"adopt": 1}', "model.safetensors": random_bytes(250_000, "adopt")}
    commit = local_hub.add_commit("org/adopt", files)
    download_to_local_dir(local_hub, "org/adopt", m.models / "adopt", m.cache)  # the cache holds only refs/main
    before = {p: Path(p).read_bytes() for p in map(str, (m.models / "adopt").rglob("*")) if os.path.isfile(p)}
    modes = {p: os.stat(p).st_mode for p in before}
    # A hard link: adopted by any user with --mode hardlink (as root, auto leaves these alone: test_adopt.py)
    plan = run_cli("consolidate", "--dry-run", "--adopt", "--mode", "hardlink", *m.args()).out
    assert plan.count("adopt") >= 2
    result = consolidate(m, "--adopt", "--mode", "hardlink")
    assert result["done"] == 2 and result["bytes_freed"] == 0
    repo = m.cache / "models--org--adopt"
    for name, content in files.items():
        local = m.models / "adopt" / name
        snapshot = repo / "snapshots" / commit / name
        assert snapshot.is_symlink() and snapshot.read_bytes() == content
        assert os.stat(snapshot).st_ino == os.stat(local).st_ino  # one copy, in the cache
        assert not os.stat(local).st_mode & 0o222  # made read-only: an in-place write fails (but for root)
    assert (repo / "trees" / f"{commit}.json").is_file()
    report = analyze_json(m.cache, m.models)
    assert report["duplicate_bytes"] == 0 and report["local_bytes"] < 5_000  # only download metadata is local now
    cache_repo = next(r for r in report["repos"] if r["store"] == "hf_cache")
    assert cache_repo["status"] == "complete"
    # huggingface_hub reads the adopted snapshot, offline, and a later online call downloads nothing
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = snapshot_download("org/adopt", cache_dir=m.cache, local_files_only=True)
    assert Path(offline, "model.safetensors").read_bytes() == files["model.safetensors"]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    local_hub.clear_log()
    download_to_cache(local_hub, "org/adopt", m.cache)
    download_to_local_dir(local_hub, "org/adopt", m.models / "adopt", m.cache)
    assert not [r for r in local_hub.request_log if "/resolve/" in r.path]
    # undo takes the adopted files out of the cache again; the local copies keep every byte
    undo()
    assert not (repo / "blobs").exists() or not any((repo / "blobs").iterdir())
    assert not (repo / "snapshots" / commit / "model.safetensors").exists()
    assert {p: Path(p).read_bytes() for p in before} == before
    assert {p: os.stat(p).st_mode for p in before} == modes  # writable again


def test_adopt_refuses_a_file_whose_bytes_do_not_match_its_etag(local_hub: LocalHub, tmp_path: Path) -> None:
    m = Machine(tmp_path / "m")
    files = {"model.safetensors": random_bytes(100_000, "bad")}
    local_hub.add_commit("org/bad", files)
    download_to_local_dir(local_hub, "org/bad", m.models / "bad", m.cache)
    plan_file = tmp_path / "plan.json"
    run_cli("consolidate", "--dry-run", "--adopt", "--mode", "hardlink", "--plan-out", str(plan_file), *m.args())
    local = m.models / "bad" / "model.safetensors"
    st = local.stat()
    corrupt = bytearray(local.read_bytes())
    corrupt[5] ^= 1
    local.write_bytes(bytes(corrupt))
    os.utime(local, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only the bytes tell
    result = run_cli("apply", "--yes", "--json", str(plan_file))
    assert result.code == 1
    (outcome,) = result.json()["outcomes"]
    assert outcome["status"] == "skipped" and "do not match the etag" in outcome["reason"]
    assert not (m.cache / "models--org--bad" / "blobs").exists()
    assert local.read_bytes() == bytes(corrupt)


def test_a_temporary_file_left_by_a_crash_is_not_counted(machine: Machine) -> None:
    before = analyze_json(machine.cache, machine.models)
    leftover = machine.models / "alpha" / ".modelcache-20260101T000000Z-abcdef-12345678.tmp"
    leftover.write_bytes(REPOS["org/alpha"]["model.safetensors"])
    result = run_cli("analyze", "--json", *machine.args())
    report = result.json()
    assert result.code == 1 and any("interrupted modelcache run" in w["message"] for w in report["warnings"])
    assert report["duplicate_bytes"] == before["duplicate_bytes"] and report["local_bytes"] == before["local_bytes"]

"""The compact inventory (issue 7, target 5) holds what the plain one held.

- a record gives back the path, relpath and lstat numbers it was made from, pickles, and keeps
  numbers past the packed range;
- snapshot links and repo layouts made on demand match the links on disk;
- huggingface_hub's link text is read off as the general path resolution would read it;
- two roots that overlap give each path once;
- byte totals skip empty files only where that cannot change a figure.
"""

from __future__ import annotations

import os
import pickle
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.inventory import Digest, FileFacts, FileRecord, Inventory, Role, distinct_inode_bytes
from modelcache.scan import scan
from modelcache.store_kind import StoreKind
from modelcache.stores import hf_cache
from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_cache, download_to_local_dir, random_bytes, write_tree


def facts(dev: int = 1, ino: int = 2, size: int = 3, mtime_ns: int = 4, nlink: int = 1, atime_ns: int = 5) -> FileFacts:
    return FileFacts(dev, ino, size, mtime_ns, nlink, atime_ns)


@pytest.mark.parametrize(
    ("path", "relpath"),
    [
        ("/c/models--a--b/blobs/" + "a" * 64, "blobs/" + "a" * 64),
        ("/c/models--a--b/snapshots/abc/sub/x.bin", "sub/x.bin"),
        ("/m/local/x.bin", "x.bin"),
        ("/m/local/.cache/huggingface/download/x.bin.metadata", ".cache/huggingface/download/x.bin.metadata"),
        ("/m/ollama/models/blobs/sha256-1", "library/llama/blobs/1"),  # not a suffix: held as given
        ("/x", ""),
        ("/", ""),
        ("rel", "rel"),
        ("/a/b/c", "b/c"),
        ("/a/bb/c", "b/c"),  # a suffix across no folder boundary: still exact
    ],
)
def test_a_record_gives_back_what_it_was_made_from(path: str, relpath: str) -> None:
    claim = Digest("sha256", "a" * 64)
    r = FileRecord(path, StoreKind.HF_CACHE, Role.MODEL, "/key", relpath, facts(), claim, "c" * 40)
    assert (r.path, r.relpath, r.repo_key, r.store, r.role, r.claimed, r.revision) == (
        path,
        relpath,
        "/key",
        StoreKind.HF_CACHE,
        Role.MODEL,
        claim,
        "c" * 40,
    )
    assert r.facts.inode == (1, 2) and (r.size, r.mtime_ns, r.nlink, r.atime_ns) == (3, 4, 1, 5)
    assert pickle.loads(pickle.dumps(r)) == r
    assert r.with_claim(None).claimed is None and r.with_claim(None).path == path


@given(
    dev=st.integers(0, 2**64 - 1),
    ino=st.integers(0, 2**64 - 1),
    size=st.integers(0, 2**63 - 1),
    mtime_ns=st.integers(-(2**70), 2**70),
    nlink=st.integers(0, 2**32),
    atime_ns=st.integers(-(2**70), 2**70),
)
def test_lstat_numbers_survive_packing(dev: int, ino: int, size: int, mtime_ns: int, nlink: int, atime_ns: int) -> None:
    f = FileFacts(dev, ino, size, mtime_ns, nlink, atime_ns)
    assert (f.dev, f.ino, f.size, f.mtime_ns, f.nlink, f.atime_ns) == (dev, ino, size, mtime_ns, nlink, atime_ns)
    assert f.inode == (dev, ino)
    r = FileRecord("/a/b", StoreKind.PLAIN, Role.MODEL, "/a", "b", f)
    assert (r.dev, r.ino, r.size, r.mtime_ns, r.nlink, r.atime_ns) == (dev, ino, size, mtime_ns, nlink, atime_ns)


def test_facts_come_from_lstat(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    st_ = os.lstat(path)
    f = FileFacts.from_stat(st_)
    assert (f.dev, f.ino, f.size, f.mtime_ns, f.nlink, f.atime_ns) == (
        st_.st_dev,
        st_.st_ino,
        5,
        st_.st_mtime_ns,
        st_.st_nlink,
        st_.st_atime_ns,
    )


# -- huggingface_hub's link text ----------------------------------------------------------------------------


def general_blob_name(link: str, target: str, blob_dir: str) -> str | None:
    resolved = os.path.normpath(os.path.join(os.path.dirname(link), target))
    return os.path.basename(resolved) if os.path.dirname(resolved) == blob_dir else None


part = st.sampled_from(["..", ".", "", "blobs", "x", "a" * 64, "snapshots", "models--o--r", "..."])


@given(depth=st.integers(0, 9), ups=st.integers(0, 12), tail=st.lists(part, max_size=4), lead=st.booleans())
def test_link_text_reads_as_the_general_resolution(depth: int, ups: int, tail: list[str], lead: bool) -> None:
    repo = "/cache/models--o--r"
    relpath = "/".join([f"d{i}" for i in range(depth)] + ["file.bin"])
    link = f"{repo}/snapshots/{'c' * 40}/{relpath}"
    target = ("/" if lead else "") + "../" * ups + "/".join(tail)
    for text in (target, "../" * (depth + 2) + "blobs/" + "/".join(tail), "../" * (depth + 2) + "blobs/" + "a" * 64):
        assert hf_cache._blob_name(text, link, relpath, f"{repo}/blobs") == general_blob_name(
            link, text, f"{repo}/blobs"
        )


# -- whole machines -----------------------------------------------------------------------------------------


def build(local_hub: LocalHub, root: Path) -> tuple[Path, Path]:
    cache, models = root / "hub", root / "models"
    files = {
        "config.json": b'{"a": 1}',
        "sub/dir/model.safetensors": random_bytes(50_000, "w"),
        "tokenizer.json": random_bytes(2_000, "t"),
    }
    local_hub.add_commit("org/a", files)
    local_hub.add_commit("org/b", {"config.json": b'{"a": 1}', "empty.txt": b""})
    for repo in ("org/a", "org/b"):
        download_to_cache(local_hub, repo, cache)
    download_to_local_dir(local_hub, "org/a", models / "a", cache)
    write_tree(models / "plain", {"copy.bin": files["sub/dir/model.safetensors"], "empty": b""})
    # damage: a broken link, a link out of the cache, an unreadable... and a leftover temporary file
    snap = next((cache / "models--org--a" / "snapshots").iterdir())
    os.symlink("../../blobs/" + "f" * 64, snap / "gone.bin")
    os.symlink("/etc/hostname", snap / "outside.txt")
    (models / "plain" / ".modelcache-x.tmp").write_bytes(b"x")
    os.symlink("nowhere", models / "plain" / "dangling")
    return cache, models


def public(inv: Inventory) -> dict[str, Any]:
    """Everything an inventory tells, as plain values."""
    return {
        "records": [
            (r.path, r.relpath, r.store, r.role, r.repo_key, r.claimed, r.revision, r.facts.inode, r.size, r.mtime_ns)
            for r in inv.records
        ],
        "repos": inv.repos,
        "warnings": inv.warnings,
        "links": inv.links,
        "layouts": inv.layouts,
        "leftovers": inv.leftovers,
        "roots": inv.roots,
    }


def test_links_and_layouts_match_the_disk(local_hub: LocalHub, tmp_path: Path) -> None:
    cache, models = build(local_hub, tmp_path)
    inv = scan(cache_dir=cache, models=[str(models)])
    records = {r.path for r in inv.records}
    on_disk = {}
    for dirpath, _dirs, names in os.walk(cache):
        for name in names:
            path = os.path.join(dirpath, name)
            if "/snapshots/" in path and os.path.islink(path):
                on_disk[path] = os.path.realpath(path)
    links = {link.path: link.target for link in inv.links}
    assert set(links) <= set(on_disk)
    for path, target in links.items():
        assert target in records and os.path.realpath(target) == on_disk[path]
    unlinked = set(on_disk) - set(links)
    assert {os.path.basename(p) for p in unlinked} == {"gone.bin", "outside.txt"}
    entries = {e.path: e for layout in inv.layouts for e in layout.snapshot_links}
    assert set(entries) == set(on_disk)
    assert {p for p, e in entries.items() if not e.ok} == unlinked
    for layout in inv.layouts:
        for name, path in layout.blobs.items():
            assert path == os.path.join(layout.repo_dir, "blobs", name) and os.path.lexists(path)
        assert set(layout.commits) == set(os.listdir(os.path.join(layout.repo_dir, "snapshots")))
    assert inv.links is inv.links and inv.layouts is inv.layouts  # made once


def test_overlapping_roots_give_each_path_once(local_hub: LocalHub, tmp_path: Path) -> None:
    cache, models = build(local_hub, tmp_path)
    once = scan(cache_dir=cache, models=[str(models)])
    twice = scan(cache_dir=cache, models=[str(models), str(models), str(models / "plain")])
    assert public(twice)["records"] == public(once)["records"]
    paths = [r.path for r in twice.records]
    assert len(paths) == len(set(paths))
    # the cache inside a models folder is read once, by the cache reader
    inside = scan(cache_dir=cache, models=[str(tmp_path)])
    paths = [r.path for r in inside.records]
    assert len(paths) == len(set(paths)) and set(paths) >= {r.path for r in once.records if "/hub/" in r.path}


def test_symlinks_are_not_records_and_files_have_their_lstat(local_hub: LocalHub, tmp_path: Path) -> None:
    cache, models = build(local_hub, tmp_path)
    for r in scan(cache_dir=cache, models=[str(models)]).records:
        st_ = os.lstat(r.path)
        assert stat.S_ISREG(st_.st_mode)
        assert (r.dev, r.ino, r.size, r.mtime_ns, r.nlink) == (
            st_.st_dev,
            st_.st_ino,
            st_.st_size,
            st_.st_mtime_ns,
            st_.st_nlink,
        )


# -- byte totals --------------------------------------------------------------------------------------------

record_spec = st.tuples(
    st.integers(0, 1), st.integers(0, 5), st.sampled_from([0, 0, 7, 100]), st.sampled_from(list(StoreKind))
)


def make(specs: list[tuple[int, int, int, StoreKind]], extra_links: int = 0) -> list[FileRecord]:
    """Records of distinct paths; an inode named by k of them has k links or more, as on disk."""
    names = Counter((dev, ino) for dev, ino, _, _ in specs)
    return [
        FileRecord(
            f"/r/f{i}", store, Role.MODEL, "/r", f"f{i}", facts(dev, ino, size, nlink=names[dev, ino] + extra_links)
        )
        for i, (dev, ino, size, store) in enumerate(specs)
    ]


@settings(max_examples=300)
@given(st.lists(record_spec, max_size=12), st.integers(0, 2))
def test_totals_are_those_of_every_record(specs: list[tuple[int, int, int, StoreKind]], extra_links: int) -> None:
    """Even where one inode shows two sizes (it changed between two lstats): the last record's
    size counts, in the first store by StoreKind order that holds it, as before. (A file with one
    link is counted without being compared by inode: records are unique by path.)"""
    records = make(specs, extra_links)
    seen: dict[tuple[int, int], int] = {}
    owners: dict[tuple[int, int], tuple[StoreKind, int]] = {}
    order = list(StoreKind)
    for r in records:
        seen[r.facts.inode] = r.size
        current = owners.get(r.facts.inode)
        if current is None or order.index(r.store) < order.index(current[0]):
            owners[r.facts.inode] = (r.store, r.size)
    expected = {kind: 0 for kind in StoreKind}
    for kind, size in owners.values():
        expected[kind] += size
    inv = Inventory(("/r",), tuple(records), ())
    assert distinct_inode_bytes(records) == inv.total_bytes() == sum(seen.values())
    assert inv.store_bytes() == expected

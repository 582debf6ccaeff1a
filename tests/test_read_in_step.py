"""Copies read in step: one hashed, the others compared with it byte for byte (`digests.read_in_step`).

- the primitive, on real files: a copy is alike exactly when its bytes are the reference's (a byte
  changed anywhere, a byte more or less, an empty file), a copy that cannot be read says why, and the
  reference's digest is that of its bytes whenever any copy is alike;
- `find_duplicates` on a machine built by the real client: each group of copies whose claims agree
  is hashed once (the bytes fed to sha256 are one copy's), and a corrupted copy, wherever it stands
  in its group, gives the same groups and warnings as hashing every copy would;
- on a rotational disk small files are still hashed one by one (in the order of their blocks), large
  ones in step.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache import digests, reading
from modelcache.digests import CHUNK, Hasher, read_in_step
from modelcache.disks import Scheduler
from modelcache.duplicates import find_duplicates
from modelcache.scan import scan
from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_cache, download_to_local_dir, random_bytes

from .test_reading import fake_sys

# -- the primitive ----------------------------------------------------------------------------------------

SIZES = st.sampled_from([0, 1, 100, digests.SMALL, digests.SMALL + 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7])


@st.composite
def copies(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A reference's bytes and up to three other files: equal, a byte changed anywhere, cut short, a byte more."""
    size = draw(SIZES)
    ref = random_bytes(size, draw(st.integers(0, 3)))
    others = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["same", "changed", "shorter", "longer"] if size else ["same", "longer"]))
        if kind == "same":
            others.append(ref)
        elif kind == "changed":
            at = draw(st.integers(0, size - 1))
            others.append(ref[:at] + bytes([ref[at] ^ 0x5A]) + ref[at + 1 :])
        elif kind == "shorter":
            others.append(ref[: draw(st.integers(0, size - 1))])
        else:
            others.append(ref + b"\0")
    return ref, others


@settings(max_examples=60, deadline=None)
@given(copies())
def test_a_copy_is_alike_exactly_when_its_bytes_are_the_references(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[bytes, list[bytes]]
) -> None:
    ref, others = case
    folder = tmp_path_factory.mktemp("copies")
    paths = [folder / f"{i}" for i in range(1 + len(others))]
    for path, content in zip(paths, [ref, *others], strict=True):
        path.write_bytes(content)
    fds = [os.open(p, os.O_RDONLY) for p in paths]
    try:
        hasher = Hasher(len(ref))
        seen: list[int] = []
        alike = read_in_step(fds[0], fds[1:], hasher, on_bytes=seen.append)
    finally:
        for fd in fds:
            os.close(fd)
    assert alike == [other == ref for other in others]
    if not others or any(alike):
        assert hasher.result().sha256 == hashlib.sha256(ref).hexdigest()
        # The alike ones read whole; the others up to where they were found different (at most whole).
        assert len(ref) * (1 + sum(alike)) <= sum(seen) <= len(ref) + sum(len(o) for o in others)
    elif hasher.seen == len(ref):  # nothing alike, but the reference was read to its end before that was known
        assert hasher.result().sha256 == hashlib.sha256(ref).hexdigest()
    else:
        with pytest.raises(OSError):
            hasher.result()  # a digest of part of the file is never given


def test_a_copy_that_cannot_be_read_says_why(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    ref.write_bytes(random_bytes(300_000, "ref"))
    same = tmp_path / "same"
    same.write_bytes(ref.read_bytes())
    fds = [os.open(ref, os.O_RDONLY), os.open(tmp_path, os.O_RDONLY), os.open(same, os.O_RDONLY)]
    try:
        hasher = Hasher(300_000)
        alike = read_in_step(fds[0], fds[1:], hasher)
    finally:
        for fd in fds:
            os.close(fd)
    assert isinstance(alike[0], IsADirectoryError) and alike[1] is True
    assert hasher.result().sha256 == hashlib.sha256(ref.read_bytes()).hexdigest()


# -- find_duplicates ----------------------------------------------------------------------------------------


class CountingHasher(Hasher):
    """A `Hasher` that adds up the bytes it is fed: the bytes sha256 ran over."""

    fed = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        CountingHasher.fed += len(chunk)
        super().update(chunk)


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[CountingHasher]]:
    monkeypatch.setattr(reading, "Hasher", CountingHasher)
    CountingHasher.fed = 0
    yield CountingHasher


LARGE = 2 * CHUNK + 12_345  # "large": over reading.BATCH_BYTES (made 256 KiB below), and read in three steps


@pytest.fixture
def three_copies(local_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A repo in the cache and two local_dir copies of it: a large and a small file, three copies each,
    their claims (blob names, etags) all agreeing."""
    monkeypatch.setattr(reading, "BATCH_BYTES", 256 * 1024)
    cache, models = tmp_path / "hub", tmp_path / "models"
    files = {"model.safetensors": random_bytes(LARGE, "weights"), "vocab.txt": random_bytes(5_000, "vocab")}
    local_hub.add_commit("org/m", files)
    download_to_cache(local_hub, "org/m", cache)
    for name in ("a", "b"):
        download_to_local_dir(local_hub, "org/m", models / name, cache)
    return cache, models


def copies_of(cache: Path, models: Path, size: int) -> list[Path]:
    blobs = [p for p in (cache / "models--org--m" / "blobs").iterdir() if p.stat().st_size == size]
    return blobs + sorted(p for p in models.rglob("*") if p.is_file() and p.stat().st_size == size)


@pytest.mark.parametrize("rotational", [False, True], ids=["no heads", "rotational"])
def test_each_group_of_copies_is_hashed_once(
    three_copies: tuple[Path, Path], tmp_path: Path, hashed: type[CountingHasher], rotational: bool
) -> None:
    """Without heads, one copy of each is hashed; on a rotational disk the small file's copies are
    hashed one by one (read in the order of their blocks, not in step), the large file's once."""
    cache, models = three_copies
    inventory = scan(cache_dir=cache, models=[str(models)])
    scheduler = Scheduler(fake_sys(tmp_path, {os.stat(cache).st_dev: rotational}))
    result = find_duplicates(inventory.records, None, workers=2, scheduler=scheduler)
    assert [(len(g.records), g.size) for g in result.groups] == [(3, LARGE), (3, 5_000)]
    assert result.bytes_hashed == 3 * (LARGE + 5_000)  # every copy read: each is proven by its own bytes
    assert hashed.fed == LARGE + (3 if rotational else 1) * 5_000


@pytest.mark.parametrize("corrupted", [0, 1, 2], ids=["the cache's blob", "the first local copy", "the second"])
@pytest.mark.parametrize("size", [LARGE, 5_000], ids=["large", "small"])
def test_a_corrupted_copy_anywhere_in_its_group_finds_what_hashing_each_would(
    three_copies: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corrupted: int, size: int
) -> None:
    """The corrupted copy still claims the digest of the others; read in step with them, it is found
    different and hashed alone: the other two are a group, and it is warned of, whether it was the
    copy hashed or one compared with it."""
    cache, models = three_copies
    paths = copies_of(cache, models, size)
    bad = paths[corrupted]
    st_before = bad.stat()
    with open(bad, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xff" if f.read(1) != b"\xff" else b"\x00")
    os.utime(bad, ns=(st_before.st_atime_ns, st_before.st_mtime_ns))
    inventory = scan(cache_dir=cache, models=[str(models)])
    dev = os.stat(cache).st_dev
    in_step = find_duplicates(inventory.records, None, workers=2, scheduler=Scheduler(fake_sys(tmp_path, {dev: False})))
    # What hashing every copy alone finds: a rotational disk on which every file is small.
    monkeypatch.setattr(reading, "BATCH_BYTES", 1 << 40)
    rotational = Scheduler(fake_sys(tmp_path, {dev: True}))
    each_alone = find_duplicates(inventory.records, None, workers=2, scheduler=rotational)
    groups = [tuple(r.path for r in g.records) for g in in_step.groups]
    assert groups == [tuple(r.path for r in g.records) for g in each_alone.groups]
    intact = sorted(str(p) for p in paths if p != bad)
    assert any(sorted(g) == intact for g in groups)
    assert [(w.path, w.message) for w in in_step.warnings] == [(w.path, w.message) for w in each_alone.warnings]
    assert any("does not match" in w.message for w in in_step.warnings)
    assert in_step.bytes_hashed == each_alone.bytes_hashed

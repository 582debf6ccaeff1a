"""Reads scheduled for the disk (issue 17, `reading.py`).

- the disk behind a file is found through a folder standing in for /sys (`fake_sys`), not a mock:
  a partition's queue is its disk's; a device /sys does not know is no disk;
- on a rotational disk files are read in the order of their blocks (FIEMAP), or of their inode
  numbers where the file system has no FIEMAP (tmpfs); elsewhere largest first. The place of each
  file is checked against `filefrag`, e2fsprogs' own reading of FIEMAP;
- the scheduler reads each needed byte once: the bytes the process read (`rchar` of /proc/self/io)
  are exactly those of the files that must be hashed;
- the same `--json`, field for field, whatever the number of hashing threads and the order;
- a run killed (SIGKILL) mid-hash leaves an index that the next run opens, trusts and completes.

No test here asserts a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelcache import cli, digests, disks, prefetch, reading
from modelcache.digests import DigestIndex
from modelcache.disks import Scheduler, disk_of, first_page_in_memory, physical_offset
from modelcache.duplicates import find_duplicates
from modelcache.inventory import FileFacts
from modelcache.reading import Readers
from modelcache.scan import scan
from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_cache, download_to_local_dir, random_bytes, write_tree

# -- a folder standing in for /sys ----------------------------------------------------------------------------


def fake_sys(
    root: Path,
    disks: dict[int, bool],
    *,
    partition: bool = True,
    read_ahead_kb: int = 128,
    driver: str = "sd",
) -> str:
    """/sys as the kernel shows the disks of devices `disks` (device number -> rotational):
    `dev/block/MAJ:MIN` a link into `devices/`, to the partition's folder (a `partition` file, no
    `queue/`) inside its disk's, or to the disk's own folder; the disk's `device/driver` a link to
    its driver's folder under `bus/` (`sd`, SCSI and SATA disks; `virtio_blk`)."""
    sys_root = root / f"sys-{len(list(root.glob('sys-*')))}"
    links = sys_root / "dev" / "block"
    links.mkdir(parents=True)
    bus = {"sd": "scsi", "virtio_blk": "virtio"}[driver]
    (sys_root / "bus" / bus / "drivers" / driver).mkdir(parents=True)
    for n, (dev, rotational) in enumerate(disks.items()):
        name = f"{'vd' if driver == 'virtio_blk' else 'sd'}{'abcdef'[n]}"
        device = sys_root / "devices" / "pci0000:00" / (f"virtio{n}" if bus == "virtio" else f"host{n}/{n}:0:0:0")
        disk = device / "block" / name
        (disk / "queue").mkdir(parents=True)
        (device / "driver").symlink_to(os.path.relpath(sys_root / "bus" / bus / "drivers" / driver, device))
        (disk / "device").symlink_to(os.path.relpath(device, disk))
        for key, value in {"rotational": int(rotational), "nr_requests": 64, "read_ahead_kb": read_ahead_kb}.items():
            (disk / "queue" / key).write_text(f"{value}\n")
        target = disk
        if partition:
            target = disk / f"{disk.name}2"
            target.mkdir()
            (target / "partition").write_text("2\n")
        (links / f"{os.major(dev)}:{os.minor(dev)}").symlink_to(os.path.relpath(target, links))
    return str(sys_root)


def test_the_disk_of_a_partition_is_its_parent(tmp_path: Path) -> None:
    dev = os.stat(tmp_path).st_dev
    disk = disk_of(dev, fake_sys(tmp_path, {dev: True}))
    assert (disk.name, disk.rotational, disk.nr_requests, disk.read_ahead_kb) == ("sda", True, 64, 128)
    whole = disk_of(dev, fake_sys(tmp_path, {dev: False}, partition=False))
    assert (whole.name, whole.rotational) == ("sda", False)
    assert disk_of(os.makedev(4095, 4095), str(tmp_path / "no-such-sys")) == disks.Disk(None, False)


@pytest.mark.parametrize("partition", [True, False])
def test_a_virtio_disk_is_not_taken_at_its_word_that_it_is_rotational(tmp_path: Path, partition: bool) -> None:
    """virtio-blk cannot say whether it has heads and Linux says it has: its files are read as a disk
    without heads reads them (largest first, copies in step), a SCSI disk that says so with heads."""
    dev = os.stat(tmp_path).st_dev
    virtio = disk_of(dev, fake_sys(tmp_path, {dev: True}, driver="virtio_blk", partition=partition))
    assert (virtio.name, virtio.rotational, virtio.read_ahead_kb) == ("vda", False, 128)
    assert disk_of(dev, fake_sys(tmp_path, {dev: True}, partition=partition)).rotational
    files = scattered_files(tmp_path / "files")
    order = Scheduler(fake_sys(tmp_path, {dev: True}, driver="virtio_blk", partition=partition)).order(files)
    assert order == sorted(files, key=lambda t: -t.facts.size)


# -- the order ----------------------------------------------------------------------------------------------


class Target:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.facts = FileFacts.from_stat(os.lstat(path))

    def __repr__(self) -> str:
        return Path(self.path).name


def filefrag_first_block(path: str) -> int:
    """The first physical block of the file as `filefrag -v` (e2fsprogs) reports it."""
    out = subprocess.run(["filefrag", "-v", path], capture_output=True, text=True, check=True).stdout
    match = re.search(r"^\s*0:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.", out, re.MULTILINE)
    assert match, out
    return int(match.group(1))


def evict(*roots: Path) -> None:
    """Drop the files' pages from the page cache (POSIX_FADV_DONTNEED: written back, so clean), as if
    the machine had just started: the scheduler then finds where they lie rather than read them in
    any order from memory."""
    for root in roots:
        for path in [root] if root.is_file() else (p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def scattered_files(folder: Path, n: int = 6) -> list[Target]:
    """`n` files created in name order (so inode order), the larger the later, whose bytes are written
    in another order with an fsync after each, so that their blocks lie in that other order; their
    pages then dropped from memory."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"f{i}" for i in range(n)]
    for p in paths:
        p.touch()
    for i in [j for j in (3, 0, 5, 1, 4, 2) if j < n]:
        with open(paths[i], "wb") as f:
            f.write(random_bytes(20_000 + 1000 * i, f"scatter-{i}"))
            f.flush()
            os.fsync(f.fileno())
    evict(folder)
    return [Target(p) for p in paths]


def test_a_rotational_disk_is_read_in_block_order(tmp_path: Path) -> None:
    if shutil_which("filefrag") is None:
        pytest.skip("filefrag (e2fsprogs) is not installed")
    files = scattered_files(tmp_path / "files")
    if physical_offset(files[0].path) is None:
        pytest.skip("this file system has no FIEMAP")
    by_block = sorted(files, key=lambda t: filefrag_first_block(t.path))
    by_inode = sorted(files, key=lambda t: t.facts.ino)
    largest_first = sorted(files, key=lambda t: -t.facts.size)
    assert by_block not in (by_inode, largest_first)  # three different orders, so each one shows
    dev = files[0].facts.dev
    assert Scheduler(fake_sys(tmp_path, {dev: True})).order(files) == by_block
    assert Scheduler(fake_sys(tmp_path, {dev: False})).order(files) == largest_first
    for t in files:  # FIEMAP's byte offset is filefrag's block times the block size
        assert physical_offset(t.path) == filefrag_first_block(t.path) * os.statvfs(t.path).f_frsize


@pytest.mark.parametrize(
    ("rotational", "one_a_task"),
    [(True, False), (True, True), (False, False)],
    ids=["rotational", "rotational, a task a file", "ssd"],
)
def test_the_hashing_thread_reads_in_that_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rotational: bool, one_a_task: bool
) -> None:
    """End to end: one hashing thread reads the files in the scheduler's order, each file seen by its
    size as it is read, in batches or each file a task of its own."""
    if one_a_task:
        monkeypatch.setattr(reading, "BATCH_BYTES", 1)
    files = scattered_files(tmp_path / "files")
    sys_root = fake_sys(tmp_path, {files[0].facts.dev: rotational})
    if rotational and shutil_which("filefrag") is None:
        pytest.skip("filefrag (e2fsprogs) is not installed")
    by_block = sorted(files, key=lambda t: filefrag_first_block(t.path))
    expected = by_block if rotational else sorted(files, key=lambda t: -t.facts.size)
    assert [t.path for t in expected] != [t.path for t in files]
    evict(tmp_path / "files")
    seen: list[int] = []
    readers: Readers[Target] = Readers(1, Scheduler(sys_root))
    results = dict(readers.hash(files, lambda t: False, seen.append))
    assert seen == [t.facts.size for t in expected]
    assert all(results[t].sha256 == hashlib.sha256(Path(t.path).read_bytes()).hexdigest() for t in files)  # type: ignore[union-attr]


def test_files_already_in_memory_are_read_in_inode_order(tmp_path: Path) -> None:
    """Read from memory, their order does not matter: no FIEMAP (10 us a file) for them."""
    files = scattered_files(tmp_path / "files")
    assert not any(first_page_in_memory(t.path) for t in files)
    for t in files:
        Path(t.path).read_bytes()
    assert all(first_page_in_memory(t.path) for t in files)
    by_inode = sorted(files, key=lambda t: t.facts.ino)
    assert by_inode != sorted(files, key=lambda t: (physical_offset(t.path), t.facts.ino))
    assert Scheduler(fake_sys(tmp_path, {files[0].facts.dev: True})).order(files) == by_inode


def test_without_fiemap_a_rotational_disk_is_read_in_inode_order(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no tmpfs at /dev/shm")
    folder = shm / f"modelcache-test-{os.getpid()}"
    try:
        files = scattered_files(folder)
        assert physical_offset(files[0].path) is None  # tmpfs has no FIEMAP
        by_inode = sorted(files, key=lambda t: t.facts.ino)
        assert by_inode != sorted(files, key=lambda t: -t.facts.size)
        dev = files[0].facts.dev
        assert Scheduler(fake_sys(tmp_path, {dev: True})).order(files) == by_inode
    finally:
        for p in folder.glob("*"):
            p.unlink()
        folder.rmdir()


def test_files_of_several_disks_take_turns(tmp_path: Path) -> None:
    """Each rotational disk in its own order, the others largest first, one file of each in turn."""
    a = scattered_files(tmp_path / "a", 4)
    shm = Path("/dev/shm") / f"modelcache-test-{os.getpid()}"
    try:
        b = scattered_files(shm, 4)
        sys_root = fake_sys(tmp_path, {a[0].facts.dev: True, b[0].facts.dev: False})
        spinning = Scheduler(sys_root).order(a)
        assert spinning == sorted(a, key=lambda t: (physical_offset(t.path), t.facts.ino))
        ssd = sorted(b, key=lambda t: -t.facts.size)
        assert Scheduler(sys_root).order(a + b) == [x for pair in zip(spinning, ssd, strict=True) for x in pair]
    finally:
        for p in shm.glob("*"):
            p.unlink()
        shm.rmdir()


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


# -- a machine built with the real client -------------------------------------------------------------------


@pytest.fixture
def machine(local_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A cache, local_dir copies and a plain copy: small, medium and "large" files (large is made 64 KiB
    here, with the windows asked ahead, so that every path of the reader runs on a small machine)."""
    monkeypatch.setattr(reading, "BATCH_BYTES", 256 * 1024)
    monkeypatch.setattr(reading, "AHEAD", 96 * 1024)
    monkeypatch.setattr(reading, "BATCH_FILES", 3)
    cache, models = tmp_path / "hub", tmp_path / "models"
    shared_tok = random_bytes(70_000, "tok")
    for i in range(5):
        files = {
            "config.json": f'{{"model": {i}}}'.encode(),
            "tokenizer.json": shared_tok,
            "model.safetensors": random_bytes(300_000 + 17 * i, f"weights-{i}"),
            "small.bin": random_bytes(900 + i, f"small-{i}"),
        }
        local_hub.add_commit(f"org/m{i}", files)
        download_to_cache(local_hub, f"org/m{i}", cache)
        if i % 2 == 0:
            download_to_local_dir(local_hub, f"org/m{i}", models / f"m{i}", cache)
    write_tree(models / "plain", {"renamed.safetensors": local_hub.file("org/m3", "model.safetensors").content})
    return cache, models


def must_read_bytes(*roots: Path) -> int:
    """Ground truth: the bytes of every model file whose content another inode holds too (both sides of
    every duplicate are read), counted by reading every file here."""
    by_digest: dict[bytes, dict[tuple[int, int], int]] = {}
    for root in roots:
        for dirpath, dirnames, names in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in (".cache", ".locks", "refs", "trees", "snapshots")]
            for name in names:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if st.st_size and name != "CACHEDIR.TAG":
                    digest = hashlib.sha256(Path(path).read_bytes()).digest()
                    by_digest.setdefault(digest, {})[(st.st_dev, st.st_ino)] = st.st_size
    return sum(sum(inodes.values()) for inodes in by_digest.values() if len(inodes) > 1)


def rchar() -> tuple[int, int]:
    """Bytes this process has read (every thread's `read()`s), and the length of this reading of it
    (which the next reading counts)."""
    with open("/proc/self/io", "rb") as f:
        text = f.read()
    return int(text.split(b"rchar:")[1].split()[0]), len(text)


@pytest.mark.parametrize("threads", [1, 2, 5])
@pytest.mark.parametrize("rotational", [False, True])
@pytest.mark.parametrize("read_ahead_kb", [16, 4096], ids=["asked ahead by hand", "the kernel's readahead"])
def test_each_needed_byte_is_read_once(
    machine: tuple[Path, Path], tmp_path: Path, threads: int, rotational: bool, read_ahead_kb: int
) -> None:
    cache, models = machine
    inventory = scan(cache_dir=cache, models=[str(models)])
    dev = os.stat(cache).st_dev
    scheduler = Scheduler(fake_sys(tmp_path, {dev: rotational}, read_ahead_kb=read_ahead_kb))
    # A run before the count: glibc reads /proc/sys/vm/overcommit_memory (a byte) the first time a
    # thread's heap shrinks, as a hashing thread's buffers are freed; once a process.
    find_duplicates(inventory.records, None, workers=threads, scheduler=scheduler)
    if rotational:
        evict(cache, models)  # so that the files are ordered by where they lie (FIEMAP)
    # (and /sys read before the count)
    assert reading.ahead_for(scheduler.disk(dev)) == (reading.AHEAD if read_ahead_kb == 16 else 0)
    first_page_in_memory(__file__)  # and ctypes imported before (its import reads files)
    seen: list[int] = []
    before, itself = rchar()
    result = find_duplicates(inventory.records, None, workers=threads, scheduler=scheduler, on_bytes=seen.append)
    read = rchar()[0] - before - itself
    expected = must_read_bytes(cache, models)
    assert (result.bytes_hashed, sum(seen), read) == (expected,) * 3


def analyze_json(cache: Path, models: Path, index: Path) -> dict[str, object]:
    """`modelcache analyze --json`, in this process (so that the reader's settings patched here apply)."""
    result = CliRunner().invoke(
        cli.app,
        ["analyze", "--json", "--cache-dir", str(cache), "--models", str(models)],
        env={"MODELCACHE_INDEX": str(index)},
    )
    assert result.exit_code in (0, 1), result.output  # 1: warnings
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_the_json_is_the_same_whatever_the_threads_and_the_order(
    machine: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, models = machine
    for repo in ("m0", "m2"):  # two blobs whose bytes no longer match their names: two warnings, in order
        (blob,) = (
            b for b in (cache / f"models--org--{repo}" / "blobs").iterdir() if 800 < b.stat().st_size < 1000
        )  # small.bin
        st = blob.stat()
        with open(blob, "r+b") as f:
            f.write(b"\xff")
        os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    dev = os.stat(cache).st_dev
    runs = {}
    for threads in (1, 2, 7):
        for disk in ("rotational", "ssd", "unknown"):
            sys_root = {
                "rotational": fake_sys(tmp_path, {dev: True}),
                "ssd": fake_sys(tmp_path, {dev: False}),
                "unknown": str(tmp_path / "no-sys"),
            }[disk]
            monkeypatch.setattr(reading, "HASHERS", threads)
            monkeypatch.setattr(disks, "SYS", sys_root)
            runs[(threads, disk)] = analyze_json(cache, models, tmp_path / f"index-{threads}-{disk}.sqlite")
    first = runs[(1, "rotational")]
    assert first["duplicate_bytes"] and first["files_hashed"] and len(first["warnings"]) == 2  # type: ignore[arg-type]
    for key, data in runs.items():
        assert data == first, key


# -- killed mid-hash ----------------------------------------------------------------------------------------

KILLED_RUN = """
import os, signal, sys, time
from pathlib import Path
from modelcache import digests, reading
from modelcache.digests import DigestIndex
from modelcache.duplicates import find_duplicates
from modelcache.scan import scan

digests.WRITE_ROWS = 2  # write the index every two digests, so that a kill finds some written,
reading.BATCH_FILES = 1  # and hand each digest over as soon as it is made
cache, models, index, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
read = files = recorded = 0

def on_bytes(n):  # in the hashing thread, between a read and the next (files here are one read each)
    global read, files
    read += n
    files += 1
    # A slow disk: the index keeps up with the reading (for a while: a unit of copies read in step is
    # recorded whole once read, and up to 16 threads read large files, so a count could wait forever).
    deadline = time.monotonic() + 0.2
    while files - recorded > 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    if recorded >= kill_after:  # mid-file, the next files opened and asked for by the opener
        print(read, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

record = DigestIndex.record

def counted(self, facts, sha256):
    global recorded
    record(self, facts, sha256)
    recorded += 1

DigestIndex.record = counted
inventory = scan(cache_dir=cache, models=[models])
find_duplicates(inventory.records, DigestIndex(Path(index)), workers=1, on_bytes=on_bytes)
"""


def test_a_run_killed_mid_hash_leaves_a_usable_index(machine: tuple[Path, Path], tmp_path: Path) -> None:
    """SIGKILL in the middle of hashing a file, once N digests were handed to the index (written two at a
    time): the index is whole, holds what was written, and the next run trusts it and reads the rest."""
    cache, models = machine
    inventory = scan(cache_dir=cache, models=[str(models)])
    fresh = find_duplicates(inventory.records)
    for kill_after in (1, 6, 19):
        index = tmp_path / f"index-{kill_after}.sqlite"
        args = [sys.executable, "-c", KILLED_RUN, str(cache), str(models), str(index), str(kill_after)]
        proc = subprocess.run(args, capture_output=True, text=True)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert int(proc.stdout) < fresh.bytes_hashed  # killed mid-hash
        with sqlite3.connect(index) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            rows = db.execute("SELECT count(*) FROM digests").fetchone()[0]
        assert rows % 2 == 0 and kill_after - 1 <= rows < fresh.files_hashed
        reopened = DigestIndex(index)
        again = find_duplicates(inventory.records, reopened)
        reopened.close()
        assert reopened.error is None
        assert again.groups == fresh.groups and again.warnings == fresh.warnings == ()
        with sqlite3.connect(index) as db:  # each file hashed again made a new row: none was in the index
            assert db.execute("SELECT count(*) FROM digests").fetchone()[0] == rows + again.files_hashed
        assert again.files_hashed < fresh.files_hashed or rows == 0
        complete = DigestIndex(index)  # and the index is now whole: a third run reads nothing
        assert find_duplicates(inventory.records, complete).files_hashed == 0
        complete.close()
    assert digests.WRITE_ROWS == 4096


# -- folders walked ahead of the scan -----------------------------------------------------------------------


def test_the_scan_finds_the_same_with_or_without_folders_walked_ahead(
    machine: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, models = machine
    with_prefetch = scan(cache_dir=cache, models=[str(models)])
    monkeypatch.setattr(prefetch, "THREADS", 0)
    without = scan(cache_dir=cache, models=[str(models)])
    assert with_prefetch == without


def test_walking_ahead_stops_when_the_page_cache_holds_the_folders(tmp_path: Path) -> None:
    """Folders just written are in memory: after `WARM_FOLDERS` of them read nothing from the disk,
    the walk ahead stops (a walk that saves no disk read only costs time)."""
    for i in range(40):
        write_tree(tmp_path / f"repo{i:02d}", {"refs/main": b"x" * 40, "a/b.json": b"{}", "c.bin": b"y"})
    walk = prefetch.Prefetch(prefetch.folders_of([str(tmp_path)]), threads=1)
    for thread in walk.threads:
        thread.join(timeout=30)
    assert walk.stopped and walk.next == prefetch.WARM_FOLDERS < 40


def test_digests_reach_the_index_after_a_few_seconds_whatever_their_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run over a few large files writes each digest once `WRITE_SECONDS` passed since the last
    write, not only every `WRITE_ROWS` digests: stopped, it keeps them."""
    path = tmp_path / "index.sqlite"
    index = DigestIndex(path)
    monkeypatch.setattr(digests, "WRITE_SECONDS", 0.0)
    index.record(FileFacts(1, 1, 10, 20, 1), "a" * 64)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM digests").fetchone()[0] == 1  # as if killed here
    index.close()

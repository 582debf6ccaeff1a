"""What the disk under the benchmark trees wants (issue 17): queue depths and read sizes, and how
reading strategies fare on it with a cold page cache.

    python benchmarks/disk.py queue [--data-dir DIR]          # /sys of the disk, then a fio grid
    python benchmarks/disk.py readers SOURCE [--rounds N]     # strategies over the must-read files

`queue` prints the disk's /sys/block/<disk>/queue settings (found as modelcache finds them,
`disks.disk_of`) and, when fio is installed (Debian package `fio`), runs it read-only with
direct I/O (the page cache out of the way) on the largest files of the data-heavy tree: random
4 KiB reads at queue depths 1 to 64, and sequential reads of 64 KiB to 4 MiB at depths 1 to 16.

`readers` hashes the files that must be read in a built scenario (SOURCE: its folder, e.g.
/work/bench-data/mixed: every copy of every content held more than once, per its manifest), or
those listed in a file (one path a line), with the page cache dropped before each run, strategy
after strategy, round after round:
- `pool16`, `pool4`: a thread pool, one file a task, largest first (issue 7's large files, and
  `limits.py sha256 LIST 16`);
- `issue7`: what modelcache did before issue 17: files of 4 MiB or more on 16 threads, smaller
  ones in batches of 64 files or 4 MiB on 2 x cores threads, read as they come;
- `batchN`: what `reading.py` does: N threads, each opens a batch (64 files or 16 MiB) and asks
  for all of it (`POSIX_FADV_WILLNEED`) before hashing its first file; larger files are left to
  the kernel's readahead (`batchN-ahead`: asked for 16 MiB ahead by hand, as `reading.py` does
  where the disk's own readahead is smaller).
Needs root (to drop the page cache). The figures are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from measure import drop_caches

from modelcache.disks import disk_of

CHUNK = 1 << 20
_local = threading.local()


def queue(data_dir: Path) -> None:
    disk = disk_of(os.stat(data_dir).st_dev)
    print(f"disk of {data_dir}: {disk}")
    if disk.name is not None:
        folder = Path("/sys/block", disk.name, "queue")
        for f in sorted(folder.iterdir()):
            if f.is_file():
                with contextlib.suppress(OSError):
                    print(f"  queue/{f.name} = {f.read_text().strip()}")
    files = sorted((data_dir / "data" / "hub").glob("models--*/blobs/*"), key=lambda p: -p.stat().st_size)[:8]
    if not files or subprocess.run(["which", "fio"], capture_output=True).returncode:
        print("fio or the data-heavy tree missing: no fio grid")
        return
    grid = [("randread", "4k", qd) for qd in (1, 4, 16, 64)]
    grid += [("read", bs, qd) for bs in ("64k", "256k", "1m", "4m") for qd in (1, 4, 16)]
    for rw, bs, qd in grid:
        argv = ["fio", "--name=t", "--readonly", "--filename=" + ":".join(map(str, files)), "--direct=1"]
        argv += ["--ioengine=libaio", f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}", "--runtime=4", "--time_based"]
        argv += ["--group_reporting", "--output-format=json"]
        out = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)["jobs"][0]["read"]
        print(
            f"  fio {rw:8} bs={bs:5} depth={qd:3}: {out['bw_bytes'] / 1e6:7.0f} MB/s {out['iops']:8.0f} IOPS "
            f"latency {out['clat_ns']['mean'] / 1e3:7.0f} us"
        )


def _buffer() -> bytearray:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(CHUNK)
    return buf


def _hash_fd(fd: int, size: int, ahead: int = 0) -> str:
    h = hashlib.sha256()
    if size <= 65536:
        h.update(os.read(fd, size + 1))
        return h.hexdigest()
    buf = _buffer()
    view = memoryview(buf)
    asked, done = min(size, ahead), 0
    while True:
        if ahead and asked < size and asked - done < ahead // 2:
            os.posix_fadvise(fd, asked, ahead // 2, os.POSIX_FADV_WILLNEED)
            asked += ahead // 2
        n = os.readv(fd, [buf])
        if not n:
            break
        h.update(view[:n])
        done += n
    return h.hexdigest()


def _one(path: str, size: int) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
    try:
        if size > 65536:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        return _hash_fd(fd, size)
    finally:
        os.close(fd)


def _batches(files: list[tuple[str, int]], max_bytes: int) -> list[list[tuple[str, int]]]:
    out: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []
    current_bytes = 0
    for f in files:
        if f[1] >= max_bytes:
            out.append([f])
            continue
        current.append(f)
        current_bytes += f[1]
        if len(current) >= 64 or current_bytes >= max_bytes:
            out.append(current)
            current, current_bytes = [], 0
    if current:
        out.append(current)
    return out


def _batch_task(batch: list[tuple[str, int]], ahead: int) -> list[str]:
    """`ahead` 0: files over 16 MiB are left to the kernel's readahead (what modelcache does where the
    disk's own readahead is as large, as here)."""
    fds = [os.open(p, os.O_RDONLY | os.O_NOATIME) for p, _ in batch]
    try:
        for (_, size), fd in zip(batch, fds, strict=True):
            if size > 65536:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            asked = size if size <= 16 << 20 else min(size, ahead)
            if asked:
                os.posix_fadvise(fd, 0, asked, os.POSIX_FADV_WILLNEED)
        return [_hash_fd(fd, size, ahead) for (_, size), fd in zip(batch, fds, strict=True)]
    finally:
        for fd in fds:
            os.close(fd)


def strategies(files: list[tuple[str, int]]) -> dict[str, Callable[[], object]]:
    cores = os.cpu_count() or 1

    def pool(n: int) -> Callable[[], object]:
        def run() -> object:
            with ThreadPoolExecutor(n) as ex:
                return list(ex.map(lambda f: _one(*f), files))

        return run

    def issue7() -> object:
        def task(b: list[tuple[str, int]]) -> list[str]:
            return [_one(*f) for f in b]

        with ThreadPoolExecutor(16) as large, ThreadPoolExecutor(2 * cores) as small:
            futures = [(large if b[0][1] >= 4 << 20 else small).submit(task, b) for b in _batches(files, 4 << 20)]
            return [f.result() for f in futures]

    def batch(n: int, ahead: int) -> Callable[[], object]:
        def run() -> object:
            with ThreadPoolExecutor(n) as ex:
                return list(ex.map(lambda b: _batch_task(b, ahead), _batches(files, 16 << 20)))

        return run

    out = {"pool16": pool(16), "pool4": pool(4), "issue7": issue7}
    out |= {f"batch{n}": batch(n, 0) for n in (2, 4, 6)}
    out |= {f"batch{n}-ahead": batch(n, 16 << 20) for n in (4, 6)}
    return out


def must_read(source: Path) -> list[str]:
    if source.is_dir():
        manifest = json.loads((source / "manifest.json").read_text())["files"]
        count: dict[str, int] = {}
        for _, _, sha in manifest:
            count[sha] = count.get(sha, 0) + 1
        return [path for path, _, sha in manifest if count[sha] > 1]
    return [line for line in source.read_text().splitlines() if line.strip()]


def readers(source: Path, rounds: int, names: list[str] | None) -> None:
    paths = must_read(source)
    files = sorted(((p, os.stat(p).st_size) for p in paths), key=lambda f: -f[1])
    total = sum(size for _, size in files)
    print(f"{len(files)} files, {total / 1e6:.0f} MB; load {os.getloadavg()[0]:.2f}")
    chosen = {k: v for k, v in strategies(files).items() if not names or k in names}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in chosen}
    for _ in range(rounds):
        for name, run in chosen.items():
            if not drop_caches():
                raise SystemExit("needs root, to drop the page cache")
            cpu0, t0 = time.process_time(), time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t0, time.process_time() - cpu0))
    for name, runs in times.items():
        walls = [w for w, _ in runs]
        print(
            f"  {name:8} median {statistics.median(walls):.3f} s (min {min(walls):.3f}, max {max(walls):.3f}) "
            f"{total / statistics.median(walls) / 1e9:.2f} GB/s, CPU {statistics.median(c for _, c in runs):.2f} s"
        )
    print(f"load at the end {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("queue")
    q.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MODELCACHE_BENCH_DATA", "/work/bench-data")))
    r = sub.add_parser("readers")
    r.add_argument("source", type=Path, help="a scenario's folder (its manifest.json), or a list of paths")
    r.add_argument("--rounds", type=int, default=5)
    r.add_argument("--only", action="append", help="strategies to run (default: all)")
    args = parser.parse_args()
    if args.command == "queue":
        queue(args.data_dir)
    else:
        readers(args.source, args.rounds, args.only)


if __name__ == "__main__":
    sys.exit(main())

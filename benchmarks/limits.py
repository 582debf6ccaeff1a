"""The floors every tool is compared with, each run as its own process (like the tools).

    python benchmarks/limits.py walk ROOT...            # os.scandir, names and d_type only
    python benchmarks/limits.py walk-stat ROOT...       # os.scandir + lstat of every entry
    python benchmarks/limits.py sha256 LIST [THREADS]   # sha256 of the files in LIST (one path a line)

`sha256` is the best this machine can hash: a thread pool (hashlib frees the GIL) of THREADS
workers (default: the core count), 4 MiB reads into one reused buffer per thread, largest files first.
Reading the bytes once is measured with `cat` itself (see run.py).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

BLOCK = 4 << 20


def walk(roots: list[str], with_stat: bool) -> int:
    entries = 0
    size = 0
    stack = list(roots)
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                entries += 1
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif with_stat:
                    size += e.stat(follow_symlinks=False).st_size
    print(f"{entries} entries, {size} bytes")
    return entries


_local = threading.local()


def _hash(path: str) -> int:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(BLOCK)
    view = memoryview(buf)
    h = hashlib.sha256()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while got := f.readinto(buf):
            h.update(view[:got])
            n += got
    return n


def sha256(list_file: str, threads: int) -> int:
    with open(list_file, encoding="utf-8", errors="surrogateescape") as f:
        paths = [line.rstrip("\n") for line in f if line.strip()]
    paths.sort(key=lambda p: -os.stat(p).st_size)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        total = sum(pool.map(_hash, paths))
    print(f"{len(paths)} files, {total} bytes hashed with {threads} threads")
    return total


def main(argv: list[str]) -> None:
    command, *rest = argv
    if command in ("walk", "walk-stat"):
        walk(rest, with_stat=command == "walk-stat")
    elif command == "sha256":
        sha256(rest[0], int(rest[1]) if len(rest) > 1 else os.cpu_count() or 1)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

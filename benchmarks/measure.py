"""Run one command and measure it: wall time, CPU, peak RSS and bytes read, for its whole process tree.

- wall: `time.perf_counter` around spawn and `os.wait4`.
- peak RSS: GNU time's `%M` (`/usr/bin/time`, Debian package `time`): `ru_maxrss` of the command and
  the children it waited for. Taken from a small wrapper rather than from this process's own wait4:
  a child forked (or vforked) from a large parent starts with the parent's resident pages and
  `ru_maxrss` would report those.
- bytes read: the change of this process's `/proc/self/io` across the wait. Linux adds a reaped
  child's I/O counters (and those of the children it reaped) to its parent's, and this process does
  nothing else meanwhile, so the change is the child tree's. `rchar` counts every byte returned by
  read() (page cache or not); `read_bytes` counts bytes fetched from the block device (cold cache).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Run:
    wall: float
    cpu: float
    peak_rss: int  # bytes
    rchar: int
    read_bytes: int
    exit_code: int
    cold_cache: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _io() -> dict[str, int]:
    out = {}
    with open("/proc/self/io") as f:
        for line in f:
            key, value = line.split(":")
            out[key] = int(value)
    return out


def drop_caches() -> bool:
    """Write back and drop the page cache, dentries and inodes (root only). False if not permitted."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    stdout: str | Path | None = None,
    cold: bool = False,
    ok_codes: tuple[int, ...] = (0,),
) -> Run:
    dropped = drop_caches() if cold else False
    if cold and not dropped:
        raise RuntimeError("cannot drop the page cache here (needs root); run without cold runs")
    rss_file = Path(str(stdout if stdout is not None else "/tmp/measure") + ".rss")
    argv = ["/usr/bin/time", "-q", "-f", "%M", "-o", str(rss_file), *argv]
    out = open(stdout, "wb") if stdout is not None else subprocess.DEVNULL  # noqa: SIM115
    err = open(str(stdout) + ".err", "wb") if stdout is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        before = _io()
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), env=dict(env) if env is not None else None, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # usage includes /usr/bin/time's children
        wall = time.perf_counter() - start
        after = _io()
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if stdout is not None:
            out.close()  # type: ignore[union-attr]
            err.close()  # type: ignore[union-attr]
    if proc.returncode not in ok_codes:
        detail = Path(str(stdout) + ".err").read_text(errors="replace")[-2000:] if stdout is not None else ""
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}\n{detail}")
    peak_kib = int(rss_file.read_text().split()[-1])
    rss_file.unlink()
    return Run(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss=peak_kib * 1024,
        rchar=after["rchar"] - before["rchar"],
        read_bytes=after["read_bytes"] - before["read_bytes"],
        exit_code=proc.returncode,
        cold_cache=cold,
    )

"""The disk behind a file, and the order to read files in for it.

- **The disk**: found from a file's `st_dev` through `/sys/dev/block/MAJOR:MINOR` (a partition's
  queue is its disk's): whether it has heads (`queue/rotational`; not a virtio disk, which says
  rotational whatever it is), its queue depth and readahead.
- **The order: the disk's.** On a rotational disk files are read in the order of their first block
  on it (the `FIEMAP` ioctl), or of their inode numbers where the file system cannot say (no
  FIEMAP): one sweep of the heads instead of a seek per file, as rmlint does. Files of several
  disks are interleaved, so that each disk has work. Elsewhere, largest files first (so that no
  large file is left alone at the end). Files already in memory are read in any order.

`reading.py` reads in this order. The figures behind it are in docs/performance.md (issue 17).
"""

from __future__ import annotations

import fcntl
import functools
import os
import struct
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest
from typing import TYPE_CHECKING, Protocol, TypeVar

from .common import open_quietly

if TYPE_CHECKING:
    import ctypes

    from .inventory import FileFacts

SYS = "/sys"


class Target(Protocol):
    """What the scheduler reads: a path and the facts its scan found (size, device, inode)."""

    @property
    def path(self) -> str: ...

    @property
    def facts(self) -> FileFacts: ...


T = TypeVar("T", bound=Target)


# -- the disk behind a file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Disk:
    """What /sys says of the disk that holds a device (`st_dev`); `name` None when it has no disk there
    (tmpfs, NFS, overlay, btrfs's anonymous devices...): then nothing is known and nothing is reordered."""

    name: str | None
    rotational: bool  # false also for a virtio disk, which says rotational whatever it is (`_virtio_blk`)
    nr_requests: int | None = None  # the block layer's queue depth
    read_ahead_kb: int | None = None
    max_sectors_kb: int | None = None  # the largest single request


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def disk_of(dev: int, sys_root: str | None = None) -> Disk:
    """The disk of device number `dev`: `<sys_root>/dev/block/MAJ:MIN` is a link to the device's folder
    under `devices/`; a partition's folder has a `partition` file and no `queue/`, which is its parent's
    (the disk's). `sys_root` is a folder standing in for /sys in the tests."""
    link = os.path.join(sys_root or SYS, "dev", "block", f"{os.major(dev)}:{os.minor(dev)}")
    try:
        folder = os.path.realpath(link, strict=True)
    except (OSError, RuntimeError):
        return Disk(None, False)
    if not os.path.isdir(os.path.join(folder, "queue")) and os.path.exists(os.path.join(folder, "partition")):
        folder = os.path.dirname(folder)
    queue = os.path.join(folder, "queue")
    rotational = _read_int(os.path.join(queue, "rotational"))
    if rotational is None:
        return Disk(None, False)
    return Disk(
        os.path.basename(folder),
        rotational == 1 and not _virtio_blk(folder),
        _read_int(os.path.join(queue, "nr_requests")),
        _read_int(os.path.join(queue, "read_ahead_kb")),
        _read_int(os.path.join(queue, "max_sectors_kb")),
    )


def _virtio_blk(folder: str) -> bool:
    """Whether the disk is a virtio block device (`device/driver` is `virtio_blk`): the virtio spec gives
    such a disk no way to say whether it has heads, so Linux calls every one rotational (kubevirtci
    #666, Red Hat bug 1498042), and its `rotational` says nothing. Most are backed by SSDs or network
    storage; this project's benchmark VM's reads like an SSD (docs/performance.md, issue 17)."""
    driver = os.path.join(folder, "device", "driver")
    return os.path.basename(os.path.realpath(driver)) == "virtio_blk"


# -- where a file lies on its disk --------------------------------------------------------------------------

FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap)
_FIEMAP = struct.Struct("=QQIIII")  # fm_start, fm_length, fm_flags, fm_mapped_extents, fm_extent_count, reserved
_EXTENT = struct.Struct("=QQQQQIIII")  # fe_logical, fe_physical, fe_length, 2 reserved, fe_flags, 3 reserved
_EXTENT_UNKNOWN = 0x2  # FIEMAP_EXTENT_UNKNOWN: no location yet (delayed allocation)


def physical_offset(path: str) -> int | None:
    """Where the first extent of the file lies on its device (bytes), per FIEMAP; None when the file
    system does not say (no FIEMAP, no extent yet, an inline file) or the file cannot be opened."""
    try:
        fd = open_quietly(path)
    except OSError:
        return None
    try:
        buf = bytearray(_FIEMAP.size + _EXTENT.size)
        # No FIEMAP_FLAG_SYNC (it would write dirty data first: a reader writes nothing); one extent.
        _FIEMAP.pack_into(buf, 0, 0, 0xFFFF_FFFF_FFFF_FFFF, 0, 0, 1, 0)
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
    except OSError:
        return None
    finally:
        os.close(fd)
    if _FIEMAP.unpack_from(buf)[3] == 0:
        return None
    extent = _EXTENT.unpack_from(buf, _FIEMAP.size)
    return None if extent[5] & _EXTENT_UNKNOWN else int(extent[1])


# -- the order ------------------------------------------------------------------------------------------


class Scheduler:
    """Orders reads for the disks they hit; knows each device's disk once (`sys_root` stands in for /sys)."""

    def __init__(self, sys_root: str | None = None) -> None:
        self.sys_root = sys_root or SYS
        self._disks: dict[int, Disk] = {}

    def disk(self, dev: int) -> Disk:
        disk = self._disks.get(dev)
        if disk is None:
            disk = self._disks[dev] = disk_of(dev, self.sys_root)
        return disk

    def order(self, targets: Sequence[T]) -> list[T]:
        """`targets` in the order to read them: per rotational disk by place on it, else largest first."""
        spinning: dict[int, list[T]] = defaultdict(list)
        others: list[T] = []
        for t in targets:
            (spinning[t.facts.dev] if self.disk(t.facts.dev).rotational else others).append(t)
        others.sort(key=_largest_first)
        if not spinning:
            return others
        queues = [
            _by_place(files) if not _in_memory(files) else sorted(files, key=_inode) for files in spinning.values()
        ]
        if others:
            queues.append(others)
        # One file of each disk in turn: every disk has reads queued, each in its own order.
        return [t for turn in zip_longest(*queues) for t in turn if t is not None]


def _largest_first(t: Target) -> int:
    return -t.facts.size


def _by_place(files: list[T]) -> list[T]:
    """Files of one device by their first block; by inode number when any of them has no known place
    (offsets and inode numbers do not mix). Ties (empty files, shared blocks) by inode."""
    places = []
    for t in files:
        offset = physical_offset(t.path)
        if offset is None:
            return sorted(files, key=_inode)
        places.append((offset, t.facts.ino))
    return [t for _, t in sorted(zip(places, files, strict=True), key=_first)]


def _inode(t: Target) -> int:
    return t.facts.ino


def _first(pair: tuple[tuple[int, int], Target]) -> tuple[int, int]:
    return pair[0]


SAMPLE = 16  # files looked at to tell whether a disk's files to read are in memory already


def _in_memory(files: Sequence[Target]) -> bool:
    """Whether the page cache holds the first page of each of up to `SAMPLE` files spread over `files`:
    then they are read from memory, in any order, and finding where they lie on the disk (a FIEMAP a
    file, 10 us each: a third of a second on 33,000 small files) would only cost time."""
    if not files:
        return True
    step = max(1, len(files) // SAMPLE)
    return all(first_page_in_memory(t.path) for t in files[::step][:SAMPLE])


def first_page_in_memory(path: str) -> bool:
    """Whether the file's first page is in the page cache: mincore(2) of a mapping of it, which reads
    no byte. False when it cannot be told."""
    import ctypes  # here: only a run that reads from a rotational disk needs it

    try:
        libc = _libc()
    except (OSError, AttributeError):
        return False
    try:
        fd = open_quietly(path)
    except OSError:
        return False
    try:
        addr = libc.mmap(None, _PAGE, _PROT_READ, _MAP_SHARED, fd, 0)
    finally:
        os.close(fd)
    if addr is None or addr == ctypes.c_void_p(-1).value:  # MAP_FAILED
        return False
    try:
        vec = ctypes.create_string_buffer(1)
        return libc.mincore(addr, _PAGE, vec) == 0 and bool(vec.raw[0] & 1)
    finally:
        libc.munmap(addr, _PAGE)


_PAGE = os.sysconf("SC_PAGESIZE")
_PROT_READ, _MAP_SHARED = 0x1, 0x01


@functools.cache
def _libc() -> ctypes.CDLL:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc

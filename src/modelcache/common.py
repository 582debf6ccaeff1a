"""What the finding and the acting side both use: printable paths, path containment, short OS
error reasons, opening a file to read without moving its access time, and reads of small files
capped in size.

Imports nothing from modelcache: every module may import it, and it pulls nothing else in.
"""

from __future__ import annotations

import errno
import os
import stat

TMP_PREFIX = ".modelcache-"  # the prefix of act.fsops' temporary names; readers skip (and report) such files
# The most a reader takes of a small metadata file (a ref, a manifest, a pickle, a sidecar) and of
# a commit's file list (trees/<commit>.json: a few hundred bytes per file of the repo).
SMALL_FILE_CAP = 1 << 20
FILE_LIST_CAP = 32 << 20


# Linux only; elsewhere 0, and reads move the access time as any other program's do.
O_NOATIME: int = getattr(os, "O_NOATIME", 0)


def open_quietly(path: str, flags: int = 0) -> int:
    """`os.open(path)` for reading (with `flags` added, e.g. `O_NOFOLLOW`), without moving the file's
    access time: every read of a file's bytes opens it here.

    A read sets the atime on relatime mounts when it is over a day old, and `hf cache ls --sort
    accessed`, `--filter accessed>30d` and least-recently-used cleanups rank models by it: one
    `analyze` would make every hashed model look just used. `O_NOATIME` keeps it, but the kernel
    grants it only to the file's owner (or a process with CAP_FOWNER, such as root); anyone else
    gets EPERM and the file is opened plainly, its atime then moving as with any reader. It cannot
    be put back afterwards: setting an atime needs that same ownership.
    """
    flags |= os.O_RDONLY | os.O_CLOEXEC
    if O_NOATIME:
        try:
            return os.open(path, flags | O_NOATIME)
        except PermissionError as e:
            # For a read-only open, EPERM (not EACCES, the permission bits) means O_NOATIME was refused.
            if e.errno != errno.EPERM:
                raise
    return os.open(path, flags)


class TooLarge(OSError):
    """A file past the size its reader accepts; `strerror` says so in a few words."""


def read_capped(path: str, cap: int, *, follow_symlinks: bool = False) -> bytes:
    """The bytes of a regular file of at most `cap` bytes.

    Anything else raises `OSError`: a larger file (`TooLarge`, before a byte is read), a
    symlink (unless `follow_symlinks`), a FIFO or a device (opened without blocking, never
    read), so that no file on disk can exhaust memory or stall a command.
    """
    fd = open_quietly(path, os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks: list[bytes] = []
        total = st.st_size
        if total <= cap:
            total = 0
            while total <= cap and (chunk := os.read(fd, cap + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
        if total > cap:  # grew while being read, or was too large from the start
            size = f"{cap >> 20} MiB" if cap >= 1 << 20 else f"{cap} bytes"
            raise TooLarge(errno.EFBIG, f"larger than {size}, not read", path)
        return b"".join(chunks)
    finally:
        os.close(fd)


def display(path: str) -> str:
    """A path as text that can always be printed: undecodable bytes become `\\xNN`."""
    if path.isascii():
        return path  # the same string: no copy of every path of a long report
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def reason(e: OSError) -> str:
    """A short reason for an OS error, without the path (the caller prints the path)."""
    if e.errno == errno.ELOOP:
        return "symlink loop"
    return e.strerror or str(e)


def within(path: str, root: str) -> bool:
    """True when `path` lies inside `root` (both absolute, normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)

"""What the finding and the acting side both use: printable paths, path containment, short OS
error reasons, and reads of small files capped in size.

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


class TooLarge(OSError):
    """A file past the size its reader accepts; `strerror` says so in a few words."""


def read_capped(path: str, cap: int, *, follow_symlinks: bool = False) -> bytes:
    """The bytes of a regular file of at most `cap` bytes.

    Anything else raises `OSError`: a larger file (`TooLarge`, before a byte is read), a
    symlink (unless `follow_symlinks`), a FIFO or a device (opened without blocking, never
    read), so that no file on disk can exhaust memory or stall a command.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    fd = os.open(path, flags)
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

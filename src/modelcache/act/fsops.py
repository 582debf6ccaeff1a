"""The only code that links, unlinks, renames or writes files that belong to the user.

Everything here is small and synchronous; the executors of this package call it, in an
order that keeps every path readable at every moment (see `consolidate`). Replacing a file
is always: make the new entry under a temporary name in the same folder, flush it, then
`os.replace` it over the old path and flush the folder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..common import TMP_PREFIX, open_quietly, read_capped

FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
# Errors that mean "this kind of link cannot be made here" (dvc-objects' list), not "something broke".
UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.ENOTTY, errno.ENOSYS, errno.EINVAL, errno.EPERM}


def temp_name(target: str, run_id: str) -> str:
    """A fresh temporary path beside `target` (same folder, so a rename is atomic)."""
    return os.path.join(os.path.dirname(target), f"{TMP_PREFIX}{run_id}-{secrets.token_hex(4)}.tmp")


def partial_name(blob: str) -> str:
    """huggingface_hub's name for a blob being written: `<etag>.<8 hex>.incomplete`, beside it. A file left
    under it by a kill is a partial download like any other: huggingface_hub never reads it, `clean` removes it."""
    return f"{blob}.{secrets.token_hex(4)}.incomplete"


def leftover_temp_files(folders: Sequence[str | Path]) -> list[str]:
    """Temporary files of ours under `folders` (only reads: what an interrupted run could leave)."""
    found = []
    for folder in folders:
        for dirpath, _dirs, files in os.walk(folder):
            found += [os.path.join(dirpath, f) for f in files if f.startswith(TMP_PREFIX)]
    return found


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(tmp: str, target: str) -> None:
    """Rename `tmp` over `target` and make the rename durable."""
    os.replace(tmp, target)
    fsync_dir(os.path.dirname(target))


def hardlink(keep: str, tmp: str) -> None:
    os.link(keep, tmp, follow_symlinks=False)


def reflink(keep: str, tmp: str, like: os.stat_result) -> None:
    """A copy-on-write clone of `keep` at `tmp`, with the mode and times of `like` (the copy it replaces)."""

    def finish(dst: int) -> None:
        _copy_owner(dst, like)
        os.utime(dst, ns=(like.st_atime_ns, like.st_mtime_ns))

    _clone(keep, tmp, stat.S_IMODE(like.st_mode), finish)


def symlink(link_text: str, tmp: str) -> None:
    os.symlink(link_text, tmp)


def write_new(tmp: str, data: bytes) -> None:
    """A new small file (a ref), flushed to disk; never overwrites."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(target: str) -> None:
    os.unlink(target)
    fsync_dir(os.path.dirname(target))


def remove_dir(path: str) -> None:
    os.rmdir(path)
    fsync_dir(os.path.dirname(path))


def remove_entry(path: str) -> os.stat_result:
    """Remove one entry of a folder being removed whole (a folder with `rmdir`, anything else with
    `unlink`, never followed), and return what it was. No flush per entry: the caller removes the
    entries deepest first and the folder itself last, with `remove_dir`."""
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        os.rmdir(path)
    else:
        os.unlink(path)
    return st


def discard(tmp: str) -> bool:
    """Remove a temporary file of ours if it is there; True when one was removed."""
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        return False
    return True


def set_mtime(path: str, atime_ns: int, mtime_ns: int) -> None:
    os.utime(path, ns=(atime_ns, mtime_ns), follow_symlinks=False)


def set_mode(path: str, mode: int) -> None:
    os.chmod(path, mode)


def copy_to(
    source: str,
    tmp: str,
    mode: int,
    atime_ns: int,
    mtime_ns: int,
    owner: tuple[int, int] | None,
    on_chunk: Callable[[bytes], None] | None = None,
) -> None:
    """An independent copy of `source` at `tmp` (a new inode, no shared extents), flushed to disk.

    `on_chunk` sees every chunk copied, so that the caller can hash what it wrote. The source's
    access time stays as it was where the kernel allows (`open_quietly`).
    """
    with open(open_quietly(source), "rb") as src, _new_file(tmp, stat.S_IMODE(mode)) as fd:
        with os.fdopen(fd, "wb", closefd=False) as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
                if on_chunk is not None:
                    on_chunk(chunk)
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        os.utime(fd, ns=(atime_ns, mtime_ns))
        os.fsync(fd)


def make_dirs(path: str) -> list[str]:
    """`os.makedirs`, returning the folders it created (outermost first)."""
    created: list[str] = []
    p = Path(path)
    while not p.exists():
        created.append(str(p))
        p = p.parent
    created.reverse()
    for folder in created:
        os.mkdir(folder)
    return created


def _copy_owner(fd: int, like: os.stat_result) -> None:
    if os.geteuid() == 0:
        os.fchown(fd, like.st_uid, like.st_gid)


# -- placing new files (download's reuse step: a verified blob appears under its name at once) --------


def clone_new(source: str, tmp: str, mode: int) -> None:
    """A copy-on-write clone of `source` at the new path `tmp`, with `mode`, flushed to disk.

    Raises `OSError` (errno in `UNSUPPORTED`) where the file system cannot clone; `tmp` is then gone.
    """
    _clone(source, tmp, mode, lambda dst: os.fchmod(dst, mode))


def _clone(source: str, tmp: str, mode: int, finish: Callable[[int], None]) -> None:
    """A copy-on-write clone of `source` at the new path `tmp` (created with `mode`), then `finish(fd)` and a
    flush; on any error `tmp` is removed again and the error raised."""
    src = open_quietly(source)  # as every read of a model file is opened
    try:
        with _new_file(tmp, mode) as dst:
            fcntl.ioctl(dst, FICLONE, src)
            finish(dst)
            os.fsync(dst)
    finally:
        os.close(src)


@contextmanager
def _new_file(tmp: str, mode: int) -> Iterator[int]:
    """A new file at `tmp` (never an existing one), open for writing, closed after the block; removed again
    if the block fails."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        yield fd
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)


def place_new(tmp: str, target: str) -> None:
    """Give the file at `tmp` the name `target`, which must not exist; never replaces anything.

    A hard link is atomic and fails with `FileExistsError` if `target` appeared; where hard
    links are impossible, a rename after an existence check (the caller holds the blob's lock).
    """
    try:
        os.link(tmp, target, follow_symlinks=False)
    except OSError as e:
        if e.errno not in UNSUPPORTED:
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "already exists", target) from None
        os.rename(tmp, target)
    else:
        os.unlink(tmp)
    fsync_dir(os.path.dirname(target))


def write_ref(path: str, commit: str, run_id: str) -> bool:
    """Point the ref file at `path` to `commit` (huggingface_hub's format: the bare hash), atomically.

    Returns False when it already held that commit (nothing written).
    """
    try:
        if read_capped(path, 4096).decode("utf-8").strip() == commit:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    make_dirs(os.path.dirname(path))
    tmp = temp_name(path, run_id)
    try:
        write_new(tmp, commit.encode())
        replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise
    return True


def write_durably(path: Path, data: bytes) -> None:
    """Write a small file of modelcache's own (a saved plan) atomically: temp file, fsync, rename, fsync the folder.

    The temporary file has our prefix and is removed again when anything fails, the rename included.
    """
    tmp = temp_name(str(path), "plan")
    try:
        write_new(tmp, data)
        replace(tmp, str(path))
    except BaseException:
        discard(tmp)
        raise


def move_aside(path: str, new: str) -> None:
    """Rename `path` (a file, link or folder) to the new name `new` on the same file system, never over
    anything, and make both folders' change durable: how prune takes a unit out of its tool's sight."""
    if os.path.lexists(new):
        raise FileExistsError(errno.EEXIST, "already exists", new)
    os.rename(path, new)
    fsync_dir(os.path.dirname(path))
    fsync_dir(os.path.dirname(new))

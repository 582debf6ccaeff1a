"""What every store reader shares: a read-only walk and a collector for what it finds.

Readers never write, never follow a directory symlink (a loop or a path out of the
scanned roots), and report damage as `Warning_` values instead of raising.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..inventory import Digest, FileFacts, FileRecord, Repo, RepoLayout, Role, SnapshotLink, StoreKind, Warning_

TMP_PREFIX = ".modelcache-"  # fsops' temporary names (kept here: finding never imports the writer)
LEFTOVER = "left by an interrupted modelcache run; the next consolidate, clean or undo recovers it"
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
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True)
class Entry:
    """One non-directory entry of a walk."""

    path: str
    relpath: str  # '/'-separated, relative to the walk's root
    st: os.stat_result  # lstat: the entry itself, not what a symlink points at

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.st.st_mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)


@dataclass
class Collector:
    """Accumulates one reader's findings; `Inventory` is built from several of these."""

    records: list[FileRecord] = field(default_factory=list)
    repos: list[Repo] = field(default_factory=list)
    warnings: list[Warning_] = field(default_factory=list)
    links: list[SnapshotLink] = field(default_factory=list)
    layouts: list[RepoLayout] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # our own temporary files, for `clean`
    roots: list[str] = field(default_factory=list)  # folders read besides the store's own (ComfyUI's extra paths)

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(Warning_(display(path), message))
        if message is LEFTOVER:
            self.leftovers.append(path)

    def add(
        self,
        entry: Entry,
        store: StoreKind,
        role: Role,
        repo_key: str,
        relpath: str | None = None,
        claimed: Digest | None = None,
        revision: str | None = None,
    ) -> FileRecord:
        record = FileRecord(
            path=entry.path,
            store=store,
            role=role,
            repo_key=repo_key,
            relpath=entry.relpath if relpath is None else relpath,
            facts=FileFacts.from_stat(entry.st),
            claimed=claimed,
            revision=revision,
        )
        self.records.append(record)
        return record


def walk(
    root: str,
    warn: Callable[[str, str], None],
    prune: Callable[[str, str], bool] = lambda path, relpath: False,
    _prefix: str = "",
) -> Iterator[Entry]:
    """Every non-directory entry below `root`, depth first, sorted by name.

    `prune(path, relpath)` is asked for every directory; True skips it. Unreadable folders are
    reported through `warn` and skipped. Directory symlinks are yielded as entries, never
    entered.
    """
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        if not _prefix:
            return  # an optional folder (trees/, .no_exist/, ...) that is not there
        warn(root, "folder vanished while being read")
        return
    except OSError as e:
        warn(root, f"cannot read folder: {reason(e)}")
        return
    for entry in entries:
        relpath = f"{_prefix}{entry.name}"
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as e:
            warn(entry.path, f"cannot stat: {reason(e)}")
            continue
        if stat.S_ISDIR(st.st_mode):
            if not prune(entry.path, relpath):
                yield from walk(entry.path, warn, prune, relpath + "/")
        elif entry.name.startswith(TMP_PREFIX) and entry.name.endswith(".tmp"):
            warn(entry.path, LEFTOVER)
        else:
            yield Entry(entry.path, relpath, st)


def reason(e: OSError) -> str:
    """A short reason for an OS error, without the path (the caller prints the path)."""
    if e.errno == errno.ELOOP:
        return "symlink loop"
    return e.strerror or str(e)


def resolve_link(path: str) -> tuple[str, os.stat_result] | str:
    """Where a symlink leads and the stat of what is there, or a reason it leads nowhere."""
    try:
        target = os.path.realpath(path, strict=True)
        return target, os.stat(target)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return "broken symlink (target missing)"
        return reason(e)


def within(path: str, root: str) -> bool:
    """True when `path` lies inside `root` (both absolute, normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def stat_regular(path: str) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None

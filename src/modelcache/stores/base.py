"""What every store reader shares: a read-only walk, a collector for what it finds, and the
reader of a folder of model files (`read_files`) most tools' stores are.

Readers never write, never follow a directory symlink (a loop or a path out of the
scanned roots), and report damage as `Warning_` values instead of raising. What each store
declares about itself (kind, title, where it is found, ...) is in `registry.py`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import cast

from ..common import TMP_PREFIX, display, reason
from ..inventory import (
    Context,
    Digest,
    FileRecord,
    Repo,
    RepoScan,
    RepoStatus,
    Role,
    Warning_,
    make_record,
    pack_stat,
    rel_of,
    shared_int,
)
from ..store_kind import StoreKind

# No record made yet: a context whose store (None) is no store's, so the first record makes its own.
_NO_CONTEXT = cast(Context, (None, Role.MODEL, "", None, ""))
LEFTOVER = "left by an interrupted modelcache run; the next consolidate, clean or undo recovers it"


class Entry:
    """One non-directory entry of a walk: its folder (ending in '/'), name, and `lstat`.

    `path` and `relpath` are made on access. A symlink's `lstat` is taken only when asked for:
    the walk knows it is a symlink from the folder listing (d_type), and readers never need
    its size; its link text comes with the listing (`readlink`).
    """

    __slots__ = ("_link", "_st", "folder", "name", "relfolder")

    def __init__(
        self,
        folder: str,
        name: str,
        relfolder: str,
        st: os.stat_result | None,
        link: str | OSError | None = None,
    ) -> None:
        self.folder = folder  # the path's folder, with its trailing '/'
        self.name = name
        self.relfolder = relfolder  # the folder relative to the walk's root, '' or ending in '/'
        self._st = st  # None: a symlink not stat-ed yet
        self._link = link  # a symlink's text or why it could not be read; None: not read yet

    @classmethod
    def of(cls, path: str, relpath: str, st: os.stat_result) -> Entry:
        cut = path.rfind("/") + 1
        rcut = relpath.rfind("/") + 1
        return cls(path[:cut], path[cut:], relpath[:rcut], st)

    @property
    def path(self) -> str:
        return self.folder + self.name

    @property
    def relpath(self) -> str:
        """'/'-separated, relative to the walk's root."""
        return self.relfolder + self.name

    @property
    def st(self) -> os.stat_result:
        """lstat: the entry itself, not what a symlink points at (may raise OSError for a symlink)."""
        if self._st is None:
            self._st = os.lstat(self.path)
        return self._st

    @property
    def stat_taken(self) -> bool:
        """False for a symlink whose lstat nobody took (the listing went by d_type)."""
        return self._st is not None

    def readlink(self) -> str:
        """A symlink's text, as listed (raises the OSError the listing met)."""
        link = self._link
        if link is None:
            return os.readlink(self.path)
        if isinstance(link, OSError):
            raise link
        return link

    @property
    def is_file(self) -> bool:
        return self._st is not None and stat.S_ISREG(self._st.st_mode)

    @property
    def is_symlink(self) -> bool:
        return self._st is None or stat.S_ISLNK(self._st.st_mode)


@dataclass
class Collector:
    """Accumulates one reader's findings; `Inventory` is built from several of these."""

    records: list[FileRecord] = field(default_factory=list)
    repos: list[Repo] = field(default_factory=list)
    warnings: list[Warning_] = field(default_factory=list)
    hf_repos: list[RepoScan] = field(default_factory=list)  # HF cache repo folders, for layouts and links
    leftovers: list[str] = field(default_factory=list)  # our own temporary files, for `clean`
    roots: list[str] = field(default_factory=list)  # folders read besides the store's own (ComfyUI's extra paths)
    _context: Context = _NO_CONTEXT  # the last record's, to share
    _rel: tuple[str | None, str, int | str] = (None, "", 0)  # (folder, relpath head, offset): last explicit relpath

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
        folder, name = entry.folder, entry.name
        if relpath is None and folder.endswith(entry.relfolder):
            rel: int | str = shared_int(len(folder) - len(entry.relfolder))
        else:
            if relpath is None:
                relpath = entry.relfolder + name
            last_folder, head, rel = self._rel
            if not (
                last_folder is folder
                and len(relpath) == len(head) + len(name)
                and relpath.endswith(name)
                and relpath.startswith(head)
            ):  # not `head + name` in the folder of the last record
                rel = rel_of(folder, name, relpath)
                if rel.__class__ is int and len(relpath) >= len(name) and relpath.endswith(name):
                    self._rel = (folder, relpath[: len(relpath) - len(name)], rel)
        context = self._context
        if not (
            context[4] is rel
            and context[2] is repo_key
            and context[1] is role
            and context[0] is store
            and context[3] is revision
        ):
            context = self._context = (store, role, repo_key, revision, rel)
        record = make_record(pack_stat(entry.st), folder, name, context, claimed)
        self.records.append(record)
        return record


# One folder as a walk needs it, sorted by name: (name, is a symlink (d_type), lstat or its error
# (None for a symlink), link text or its error (symlinks only)); or why the folder cannot be listed.
Listing = list[tuple[str, bool, "os.stat_result | OSError | None", "str | OSError | None"]]


def list_folder(path: str, unread: str | None = None) -> Listing | OSError:
    """`os.scandir`, then an lstat of every entry but symlinks (d_type says which) and a readlink of those.

    Entries whose name ends with `unread` (e.g. ".lock") are left out, unstatted.
    """
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=_name)
    except OSError as e:
        return e
    out: Listing = []
    for entry in entries:
        if unread is not None and entry.name.endswith(unread):
            continue
        try:
            link = entry.is_symlink()  # from d_type (or an lstat where the file system gives none)
        except OSError:
            link = False  # the lstat below says why
        st: os.stat_result | OSError | None = None
        text: str | OSError | None = None
        if link:
            try:
                text = os.readlink(entry.path)
            except OSError as e:
                text = e
        else:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                st = e
        out.append((entry.name, link, st, text))
    return out


def walk(
    root: str,
    warn: Callable[[str, str], None],
    prune: Callable[[str, str], bool] = lambda path, relpath: False,
    _prefix: str = "",
    unread: str | None = None,
) -> Iterator[Entry]:
    """Every non-directory entry below `root`, depth first, sorted by name.

    `prune(path, relpath)` is asked for every directory; True skips it. Unreadable folders are
    reported through `warn` and skipped. Directory symlinks are yielded as entries, never
    entered. Each folder is listed (with the lstat of its entries) before its first entry is
    yielded. Entries whose name ends with `unread` are neither statted nor yielded.
    """
    listing = list_folder(root, unread)
    if isinstance(listing, FileNotFoundError):
        if _prefix:
            warn(root, "folder vanished while being read")
        return  # at the top: an optional folder (trees/, .no_exist/, ...) that is not there
    if isinstance(listing, OSError):
        warn(root, f"cannot read folder: {reason(listing)}")
        return
    folder = root if root.endswith("/") else root + "/"  # one string for every entry of the folder
    for name, link, st, text in listing:
        if link:
            if name.startswith(TMP_PREFIX) and name.endswith(".tmp"):
                warn(folder + name, LEFTOVER)
            else:
                yield Entry(folder, name, _prefix, None, text)
            continue
        if isinstance(st, OSError):
            warn(folder + name, f"cannot stat: {reason(st)}")
            continue
        assert st is not None
        if S_ISDIR(st.st_mode):
            relpath = f"{_prefix}{name}"
            path = folder + name
            if not prune(path, relpath):
                yield from walk(path, warn, prune, relpath + "/", unread)
        elif name.startswith(TMP_PREFIX) and name.endswith(".tmp"):
            warn(folder + name, LEFTOVER)
        else:  # (a symlink by now, where d_type said otherwise: its lstat and readlink are left for later)
            yield Entry(folder, name, _prefix, None if S_ISLNK(st.st_mode) else st, None)


_name = attrgetter("name")
S_ISDIR = stat.S_ISDIR
S_ISLNK = stat.S_ISLNK


def resolve_link(path: str) -> tuple[str, os.stat_result] | str:
    """Where a symlink leads and the stat of what is there, or a reason it leads nowhere."""
    try:
        target = os.path.realpath(path, strict=True)
        return target, os.stat(target)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return "broken symlink (target missing)"
        return reason(e)


def stat_regular(path: str) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def read_files(
    root: str,
    kind: StoreKind,
    out: Collector,
    repo_of: Callable[[Entry], str | None],
    partial: Callable[[str], bool] = lambda name: False,
    metadata: Callable[[Entry], bool] = lambda entry: False,
    claim: Callable[[Entry], Digest | None] = lambda entry: None,
) -> None:
    """A folder of model files, each named as its tool shows it: every file under `root` (dot
    folders skipped); `repo_of` names the model a file belongs to (None: the store itself),
    `partial` tells partial downloads by name, `metadata` the tool's own files, `claim` a digest
    a file's name or sidecar claims."""
    root = os.path.abspath(root)
    repos: dict[str, str] = {}
    for entry in walk(root, out.warn, prune=lambda path, rel: os.path.basename(rel).startswith(".")):
        if not entry.is_file:
            continue
        name = repo_of(entry)
        key = os.path.join(root, name) if name else root
        repos.setdefault(key, name or "(loose files)")
        if partial(os.path.basename(entry.path)):
            out.add(entry, kind, Role.INCOMPLETE, key)
        elif metadata(entry):
            out.add(entry, kind, Role.METADATA, key)
        else:
            out.add(entry, kind, Role.MODEL, key, claimed=claim(entry))
    for key, name in sorted(repos.items()):
        out.repos.append(Repo(key, name, "model", kind, key, (), RepoStatus.UNKNOWN))

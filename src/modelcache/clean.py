"""`clean`: find broken downloads and garbage, and plan their removal. Never acts itself.

What counts as garbage, in the HF cache (huggingface_hub 2.4 layout):

- `blobs/*.incomplete` that no live download holds the lock of, older than the minimum age;
- lock files nobody holds, older than the minimum age;
- blobs that no snapshot points to;
- Xet shared-store files that no repo blob links to, by huggingface_hub's own rule (a missing or
  unreadable `.refs` manifest leaks the file rather than risk deleting it);
- refs that point at a missing snapshot, and repo folders holding only such refs (unless a
  scanned local_dir download was made at that commit: the ref is what names it);
- with `revisions`, snapshots that no ref points to (detached), as `hf cache prune` does;
- empty folders;

in local_dir downloads, `.cache/huggingface/download/*.incomplete` and stale locks; and in
every other store, the partial downloads its module declares (`Partials` in `stores/registry.py`:
a file whose lock the tool holds, ModelScope's, or that some process has open is live) and the
tool's lock files nobody holds. Files a store declares removable on request only
(`OnRequest`: hf_xet's chunk cache) are listed when asked for by their kind.
Snapshot links whose blob is gone are reported (the snapshot is broken); `--repair` downloads
the missing files again through huggingface_hub.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import InputError
from .inventory import FileRecord, Inventory, RepoLayout, Role
from .locks import blob_lock, is_locked, repo_busy, repo_locks
from .store_kind import StoreKind
from .stores.registry import CleanKind, Guard, OnRequest, spec_of, specs

DEFAULT_MIN_AGE = 3600.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
BUSY_FOLDER = "a live process has files here open"
LOCK_HELD = "a live download holds its lock"


def parse_duration(text: str) -> float:
    """Seconds in `"90s"`, `"30m"`, `"1h"`, `"2d"`, `"1w"` or a plain number of seconds.

    >>> parse_duration("1.5h")
    5400.0
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise InputError(f"not a duration: {text!r} (use e.g. 30m, 1h, 2d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class Garbage:
    """One thing `clean` found. `fix` says what happens to it: remove, sweep, repair, or keep (reported)."""

    kind: str
    path: str
    size: int
    frees: int  # bytes given back: 0 when another hard link keeps the inode
    reason: str
    fix: str  # "remove" | "sweep" (shared store, by huggingface_hub) | "repair" | "keep"
    repo: str
    ino: int | None = None  # facts re-checked before removal (None for folders)
    mtime_ns: int | None = None
    lock: str | None = None  # a lock no one may hold at removal
    is_dir: bool = False
    repair: tuple[str, str, str, str] | None = None  # (repo_type, repo_id, commit, filename)
    # Folders its removal leaves empty go too, up to this one (kept): the HF cache folder for what is
    # in it, a tool's own cache folder for what clean removes there on request; None: none go.
    empty_up_to: str | None = None


@dataclass(frozen=True)
class CleanPlan:
    items: tuple[Garbage, ...]
    min_age: float
    created_at: float = field(default_factory=time.time)

    def totals(self) -> dict[str, tuple[int, int]]:
        """(count, bytes freed) per kind, for the items that will be removed."""
        out: dict[str, tuple[int, int]] = {}
        for item in self.items:
            if item.fix in ("remove", "sweep"):
                n, b = out.get(item.kind, (0, 0))
                out[item.kind] = (n + 1, b + item.frees)
        return out

    @property
    def bytes_to_free(self) -> int:
        return sum(b for _, b in self.totals().values())


def open_files() -> set[tuple[int, int]]:
    """(device, inode) of every file some process has open or memory-mapped (from /proc; what this
    user may see). Both: a program that maps a model (safetensors, llama.cpp) closes the file after
    `mmap`, and only /proc/<pid>/maps still shows that it holds it."""
    found: set[tuple[int, int]] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            fds = []
        for fd in fds:
            try:
                st = os.stat(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.add((st.st_dev, st.st_ino))
        found |= _mapped(f"/proc/{pid}/maps")
    return found


def _mapped(maps: str) -> set[tuple[int, int]]:
    """(device, inode) of the files one process has mapped: `addr perms offset MAJ:MIN inode path` lines
    (the device in hex), anonymous mappings (inode 0) left out."""
    found: set[tuple[int, int]] = set()
    try:
        with open(maps, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split(None, 5)
                if len(fields) < 5 or fields[4] == "0":
                    continue
                major, _, minor = fields[3].partition(":")
                try:
                    found.add((os.makedev(int(major, 16), int(minor, 16)), int(fields[4])))
                except ValueError:
                    continue
    except OSError:
        pass
    return found


def local_incomplete_name_hash(metadata_name: str) -> str:
    """huggingface_hub's `_short_hash` of a `.metadata` file name: the prefix of its `.incomplete` files."""
    return base64.urlsafe_b64encode(hashlib.sha1(metadata_name.encode(), usedforsecurity=False).digest()).decode()


class _Finder:
    def __init__(
        self,
        inventory: Inventory,
        cache_dir: str,
        min_age: float,
        revisions: bool,
        now: float,
        on_request: Sequence[OnRequest] = (),
    ) -> None:
        self.inventory = inventory
        self.cache_dir = cache_dir
        self.min_age = min_age
        self.revisions = revisions
        self.now = now
        self.on_request = on_request
        self.open_now: set[tuple[int, int]] | None = None  # read from /proc when first needed
        self.items: list[Garbage] = []
        self.busy: dict[str, bool] = {}  # repo folder name -> a lock of it is held
        self.local_commits = {
            r.origin: set(r.revisions) for r in inventory.repos if r.store is StoreKind.LOCAL_DIR and r.origin
        }

    def add_file(self, kind: str, path: str, reason: str, repo: str, lock: str | None = None) -> None:
        """A file (or symlink) to remove, unless it is young or its lock is held (then kept, with why)."""
        try:
            st = os.lstat(path)
        except OSError:
            return
        frees = st.st_size if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 else 0
        size = st.st_size if stat.S_ISREG(st.st_mode) else 0
        fix = "remove"
        age = self.now - st.st_mtime
        if lock is not None and is_locked(lock):
            fix, reason = "keep", LOCK_HELD
        elif kind.endswith(("incomplete", "stale-lock", "-partial", "-tmp")) and age < self.min_age:
            fix, reason = "keep", f"younger than {self.min_age:g}s (may be in use)"
        self.items.append(Garbage(kind, path, size, frees, reason, fix, repo, st.st_ino, st.st_mtime_ns, lock))

    def find(self) -> list[Garbage]:
        for layout in self.inventory.layouts:
            self._repo(layout)
        self._incomplete_and_locks()
        self._shared_store()
        self._local_dirs()
        self._store_partials()
        self._on_request()
        for path in self.inventory.leftovers:
            # Recovery (which `clean` runs first) removes those a journal names; these none does.
            self.add_file("modelcache-tmp", path, "a temporary file of an interrupted modelcache run", "")
        self._empty_dirs()
        return [self._unless_busy(item) for item in self.items]

    def _is_open(self, record: FileRecord) -> bool:
        if self.open_now is None:
            self.open_now = open_files()
        return record.facts.inode in self.open_now

    def _store_partials(self) -> None:
        """Other stores' partial files. A file is live while the tool's lock of it is held (TOOL_LOCK),
        or while a process has it open (tools that take no lock, and files a tool's lock does not
        cover). The stores' lock files nobody holds are listed too, but kept while a partial file
        they guard is there: its next download must find the lock file the last one left."""
        guarded: set[str] = set()
        lock_files: list[tuple[FileRecord, str]] = []
        for record in self.inventory.records:
            partials = spec_of(record.store).partials
            if partials is None or partials.guard not in (Guard.OPEN_FILE, Guard.TOOL_LOCK):
                continue
            if record.role is not Role.INCOMPLETE:
                if partials.locks is not None and partials.is_lock is not None and partials.is_lock(record):
                    lock_files.append((record, partials.locks.name))
                continue
            lock = partials.lock_of(record) if partials.lock_of is not None else None
            why = f"an interrupted {record.store.value} download"
            if partials.note is not None:
                why += partials.note(os.path.basename(record.path))
            self.add_file(partials.files.name, record.path, why, record.repo_key, lock=lock)
            if not self.items or self.items[-1].path != record.path:
                continue  # gone meanwhile
            if lock is not None:
                guarded.add(lock)
            last = self.items[-1]
            if last.reason != LOCK_HELD and self._is_open(record):
                self.items[-1] = replace(last, fix="keep", reason="a live process has it open")
        for record, kind in lock_files:
            self.add_file(kind, record.path, "no process holds it", record.repo_key, lock=record.path)
            found = self.items[-1] if self.items else None
            if found is not None and found.path in guarded and found.fix != "keep":
                self.items[-1] = replace(found, fix="keep", reason="a partial download it guards is still there")

    def _on_request(self) -> None:
        """The files a store lets `clean` remove when asked; all of one folder are kept while a
        process has any of them open (the tool is at work in it)."""
        for wanted in self.on_request:
            by_folder: dict[str, list[FileRecord]] = {}
            for record in self.inventory.records:
                if wanted.select(record):
                    by_folder.setdefault(record.repo_key, []).append(record)
            for folder, records in sorted(by_folder.items()):
                busy = any(self._is_open(r) for r in records)
                for record in sorted(records, key=lambda r: r.path):
                    self.add_file(wanted.files.name, record.path, wanted.reason, folder)
                    if self.items and self.items[-1].path == record.path:
                        last = replace(self.items[-1], empty_up_to=folder)  # the folder is the tool's: it stays
                        self.items[-1] = replace(last, fix="keep", reason=BUSY_FOLDER) if busy else last

    def _unless_busy(self, item: Garbage) -> Garbage:
        """Leave alone every part of a repo that is being downloaded (any of its locks is held)."""
        if item.fix == "keep" or not item.path.startswith(self.cache_dir + os.sep):
            return item
        parts = os.path.relpath(item.path, self.cache_dir).split(os.sep)
        repo_folder = parts[1] if parts[0] == ".locks" and len(parts) > 1 else parts[0]
        if repo_folder not in self.busy:
            self.busy[repo_folder] = repo_busy(repo_locks(self.cache_dir, repo_folder))
        if self.busy[repo_folder]:
            return replace(item, fix="keep", reason="its repo is being downloaded")
        return item

    def _lock_of(self, layout: RepoLayout, etag: str) -> str:
        return blob_lock(self.cache_dir, os.path.basename(layout.repo_dir), etag)

    def _repo(self, layout: RepoLayout) -> None:
        live_refs = dict(layout.refs)
        named_by_local = self.local_commits.get(layout.repo_dir, set())
        # A ref that holds no commit hash (truncated by a crash, overwritten) may name any revision:
        # pruning "the revisions no ref names" would then take the one it meant, blobs and all. So
        # while such a ref is there, this repo's revisions are not pruned, and the ref is kept too
        # (removing it would let the next `clean --revisions` prune them). Found by the property tests.
        unreadable = [name for name in layout.ref_paths if name not in layout.refs] if layout.commits else []
        detached = [c for c in layout.commits if c not in live_refs.values()] if self.revisions else []
        prune = not unreadable
        kept_commits = [c for c in layout.commits if c not in detached or not prune]
        used = {e.blob for e in layout.snapshot_links if e.blob and e.commit in kept_commits}
        for commit in detached:
            # Its file list and markers come before its snapshot folder, which is what shows the next
            # run that the revision is detached: a clean cut short in between leaves nothing it cannot find.
            trees, no_exist = revision_leftovers(layout.repo_dir, commit)
            if prune and os.path.lexists(trees):
                why = f"file list of detached revision {commit[:8]}"
                self.add_file("detached-revision", trees, why, layout.repo_dir)
            if prune and os.path.isdir(no_exist):
                self.items.append(
                    Garbage(
                        "detached-revision",
                        no_exist,
                        0,
                        0,
                        "markers of a detached revision",
                        "remove",
                        layout.repo_dir,
                        is_dir=True,
                    )
                )
            self.items.append(
                Garbage(
                    "detached-revision",
                    os.path.join(layout.repo_dir, "snapshots", commit),
                    0,
                    0,
                    "no ref points to this revision"
                    if prune
                    else f"not pruned: ref {unreadable[0]} holds no commit hash (fix or remove it by hand)",
                    "remove" if prune else "keep",
                    layout.repo_dir,
                    is_dir=True,
                )
            )
        for name, path in sorted(layout.blobs.items()):
            if name not in used:
                why = "no snapshot points to it"
                if any(e.blob == name for e in layout.snapshot_links):
                    why = "only detached revisions point to it"
                self.add_file("orphan-blob", path, why, layout.repo_dir, lock=self._lock_of(layout, name))
        for entry in layout.snapshot_links:
            if not entry.ok and entry.commit in kept_commits:
                self.items.append(
                    Garbage(
                        "broken-link",
                        entry.path,
                        0,
                        0,
                        "its blob is gone: the snapshot is broken",
                        "keep",
                        layout.repo_dir,
                        repair=(layout.repo_type, layout.repo_id, entry.commit, entry.relpath),
                    )
                )
        dangling = {name: c for name, c in layout.refs.items() if c not in layout.commits}
        invalid = [name for name in layout.ref_paths if name not in layout.refs]
        refs_only = not layout.commits and not layout.blobs
        for ref_name in sorted([*dangling, *invalid]):
            points_at = dangling.get(ref_name)
            if points_at is not None and any(rev.startswith(points_at[:12]) for rev in named_by_local):
                continue  # names a local_dir download of this commit (and lets --adopt find its repo)
            kind = "refs-only-repo" if refs_only else "dangling-ref"
            why = f"points at {points_at[:8]}, which has no snapshot" if points_at else "does not hold a commit hash"
            self.add_file(kind, layout.ref_paths[ref_name], why, layout.repo_dir)
            last = self.items[-1] if self.items else None
            if ref_name in unreadable and last is not None and last.path == layout.ref_paths[ref_name]:
                # see above: while it is there, this repo's revisions are not pruned
                self.items[-1] = replace(last, fix="keep", reason=why + "; kept: it may name any revision")

    def _incomplete_and_locks(self) -> None:
        """The HF cache's partial blobs (each guarded by huggingface_hub's blob lock) and its stale locks."""
        layouts = {layout.repo_dir: layout for layout in self.inventory.layouts}
        for record in self.inventory.records:
            if record.role is Role.INCOMPLETE:
                partials = spec_of(record.store).partials
                if partials is not None and partials.guard is Guard.BLOB_LOCK:
                    etag = os.path.basename(record.path).split(".")[0]
                    layout = layouts.get(record.repo_key)
                    lock = self._lock_of(layout, etag) if layout else None
                    why = "an interrupted download"
                    self.add_file(partials.files.name, record.path, why, record.repo_key, lock=lock)
        hf = spec_of(StoreKind.HF_CACHE).partials
        if hf is None or hf.locks is None:
            return
        locks = os.path.join(self.cache_dir, ".locks")
        for dirpath, _dirs, files in os.walk(locks):
            for name in sorted(files):
                if name.endswith(".lock"):
                    path = os.path.join(dirpath, name)
                    self.add_file(hf.locks.name, path, "no process holds it", locks, lock=path)

    def _shared_store(self) -> None:
        from huggingface_hub.utils import _shared_blobs as shared

        if not shared.is_shared_blobs_dir(shared.shared_blobs_dir(self.cache_dir)):
            return
        orphan_links = {Path(i.path) for i in self.items if i.kind == "orphan-blob" and os.path.islink(i.path)}
        unreferenced = shared.unreferenced_shared_blobs(self.cache_dir)
        for store_path in shared.shared_store_blob_paths(self.cache_dir):
            if store_path in unreferenced:
                why = "no repo blob links to it"
            elif orphan_links and shared.expected_shared_blob_freed_size(
                store_path, blob_paths_to_delete=orphan_links, cache_dir=self.cache_dir
            ):
                why = "only orphan repo blobs link to it"
            else:
                continue
            st = os.lstat(store_path)
            self.items.append(
                Garbage(
                    "unused-shared-blob",
                    str(store_path),
                    st.st_size,
                    st.st_size if st.st_nlink == 1 else 0,
                    why,
                    "sweep",
                    str(store_path.parent.parent),
                    st.st_ino,
                    st.st_mtime_ns,
                )
            )

    def _local_dirs(self) -> None:
        """Partial files and stale locks in local_dir downloads' `.cache/huggingface/download/`."""
        for repo in self.inventory.repos:
            partials = spec_of(repo.store).partials
            if partials is None or partials.guard is not Guard.LOCAL_DIR_LOCK or partials.locks is None:
                continue
            download = os.path.join(repo.path, ".cache", "huggingface", "download")
            for dirpath, _dirs, files in os.walk(download):
                prefixes = {
                    local_incomplete_name_hash(n[: -len(".lock")] + ".metadata"): os.path.join(dirpath, n)
                    for n in files
                    if n.endswith(".lock")
                }
                for name in sorted(files):
                    path = os.path.join(dirpath, name)
                    if name.endswith(".incomplete"):
                        lock = prefixes.get(name.split(".")[0])
                        self.add_file(partials.files.name, path, "an interrupted download", repo.path, lock=lock)
                    elif name.endswith(".lock"):
                        self.add_file(partials.locks.name, path, "no process holds it", repo.path, lock=path)

    def _empty_dirs(self) -> None:
        for dirpath, dirs, files in os.walk(self.cache_dir):
            if not dirs and not files and dirpath != self.cache_dir:
                self.items.append(
                    Garbage("empty-dir", dirpath, 0, 0, "empty folder", "remove", self.cache_dir, is_dir=True)
                )


def plan_clean(
    inventory: Inventory,
    cache_dir: str,
    *,
    min_age: float = DEFAULT_MIN_AGE,
    revisions: bool = False,
    repair: bool = False,
    now: float | None = None,
    on_request: Sequence[str] = (),
) -> CleanPlan:
    """Find garbage under the scanned roots; reads only (locks are probed without being taken).

    `on_request` names the kinds of files stores let `clean` remove only when asked
    (`"xet-chunk-cache"`: hf_xet's chunk cache).
    """
    asked = [_on_request_kind(name) for name in on_request]
    items = _Finder(inventory, os.path.abspath(cache_dir), min_age, revisions, now or time.time(), asked).find()
    if repair:
        items = [
            replace(i, fix="repair", reason=i.reason + "; downloading it again") if i.kind == "broken-link" else i
            for i in items
        ]
    # huggingface_hub's deletion order: snapshots, refs, then blobs, so no link points at a missing blob.
    order = {name: i for i, name in enumerate(kind_order())}
    items.sort(key=lambda i: order[i.kind])
    return CleanPlan(tuple(items), min_age)


def revision_leftovers(repo_dir: str, commit: str) -> tuple[str, str]:
    """What a revision has besides its snapshot folder: its file list (`trees/<commit>.json`) and its
    markers of missing files (`.no_exist/<commit>`)."""
    return os.path.join(repo_dir, "trees", commit + ".json"), os.path.join(repo_dir, ".no_exist", commit)


def _on_request_kind(name: str) -> OnRequest:
    for spec in specs():
        if spec.on_request is not None and spec.on_request.files.name == name:
            return spec.on_request
    raise InputError(f"no store lets clean remove {name!r} on request")


# What `clean` finds in the HF cache's layout itself (huggingface_hub's deletion order: snapshots,
# refs, then blobs), before the stores' partial files, and what comes after them.
LAYOUT_KINDS = (
    CleanKind("detached-revision", "detached revisions (no ref points to them)"),
    CleanKind("broken-link", "broken snapshot links (blob gone)"),
    CleanKind("dangling-ref", "refs to missing snapshots"),
    CleanKind("refs-only-repo", "repo folders holding only dangling refs"),
    CleanKind("orphan-blob", "blobs no snapshot points to"),
    CleanKind("unused-shared-blob", "Xet shared-store files no repo links to"),
)
LAST_KINDS = (
    CleanKind("modelcache-tmp", "temporary files of interrupted modelcache runs"),
    CleanKind("empty-dir", "empty folders"),
)


def clean_kinds() -> list[CleanKind]:
    """Every kind of item `clean` lists, in the order it lists them: the HF cache's layout, then the
    stores' partial files (those a lock guards first), the files removed on request, and the rest."""
    stores = specs()
    locked = [s.partials for s in stores if s.partials is not None and s.partials.guard is not Guard.OPEN_FILE]
    unlocked = [s.partials for s in stores if s.partials is not None and s.partials.guard is Guard.OPEN_FILE]
    partial_kinds = [k for p in locked for k in (p.files, p.locks) if k is not None] + [p.files for p in unlocked]
    asked = [s.on_request.files for s in stores if s.on_request is not None]
    return [*LAYOUT_KINDS, *partial_kinds, *asked, *LAST_KINDS]


def kind_order() -> list[str]:
    return [kind.name for kind in clean_kinds()]

"""Reader for the Hugging Face hub cache, as huggingface_hub 2.4 writes it.

```
<cache>/CACHEDIR.TAG
<cache>/.locks/<repo folder>/<etag>.lock
<cache>/blobs/.huggingface-shared-blobs        # Xet shared blob store (2.4+)
<cache>/blobs/<2 hex>/<xet hash>               #   one regular file per content
<cache>/blobs/<2 hex>/<xet hash>.refs          #   which repo blobs link to it
<cache>/models--org--name/blobs/<sha256 | git sha1>     # file, or symlink into the shared store
<cache>/models--org--name/blobs/<etag>.<8 hex>.incomplete
<cache>/models--org--name/snapshots/<commit>/<path>     # symlink to ../../blobs/<etag>, or a copy
<cache>/models--org--name/refs/<name>                   # a commit hash
<cache>/models--org--name/trees/<commit>.json           # the commit's file list with sha256s
<cache>/models--org--name/.no_exist/<commit>/<path>     # empty markers
```

Every regular file becomes one `FileRecord`; symlinks are followed only to learn which
record they stand for (and whether they are broken), never counted.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import NamedTuple

from ..common import FILE_LIST_CAP, SMALL_FILE_CAP, TooLarge, display, read_capped, reason, within
from ..inventory import Digest, FileRecord, Repo, RepoScan, RepoStatus, Role, SnapshotScan
from ..store_kind import StoreKind
from .base import Collector, Entry, resolve_link, stat_regular, walk
from .registry import TOOL_LINKS, CleanKind, Guard, Partials, StoreSpec

STORE = StoreKind.declare("hf_cache", rank=10)

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
IGNORED_ROOT_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}
SHARED_MARKER = ".huggingface-shared-blobs"
ROOT_KEY = "<cache root>"


class TreeEntry(NamedTuple):
    size: int
    name: str | None  # what the file list names its content by (lfs_sha256, else blob_id)

    @property
    def claimed(self) -> Digest | None:
        return None if self.name is None else Digest.from_name(self.name)


def parse_repo_folder(name: str) -> tuple[str, str] | None:
    """`models--org--name` -> ("model", "org/name"); None for anything else.

    >>> parse_repo_folder("datasets--HuggingFaceFW--fineweb")
    ('dataset', 'HuggingFaceFW/fineweb')
    """
    prefix, sep, rest = name.partition("--")
    if not sep or prefix not in REPO_TYPES:
        return None
    parts = rest.split("--")
    if not all(parts) or any(p in (".", "..") for p in parts):
        return None
    return REPO_TYPES[prefix], "/".join(parts)


def read_tree_file(path: str) -> dict[str, TreeEntry] | str:
    """A `trees/<commit>.json` file list, or a reason it cannot be read (one short line)."""
    try:
        data = json.loads(read_capped(path, FILE_LIST_CAP))
        if data.get("format_version") != 1:
            return f"unknown format_version {str(data.get('format_version'))[:40]!r}"
        entries: dict[str, TreeEntry] = {}
        for relpath, info in data["files"].items():
            name = None  # made a Digest only where asked (a copy in a no-symlink snapshot)
            if isinstance(info.get("lfs_sha256"), str):
                name = info["lfs_sha256"]
            elif isinstance(info.get("blob_id"), str):
                name = info["blob_id"]
            entries[str(relpath)] = TreeEntry(int(info["size"]), name)
        return entries
    except TooLarge as e:
        return f"file list {e.strerror}"
    except OSError as e:
        return f"unreadable file list: {reason(e)}"
    except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError, RecursionError) as e:
        return f"corrupt file list: {e.__class__.__name__}: {str(e)[:200]}"


def read_ref(path: str) -> str | None:
    """The commit hash a ref file holds, or None (not a hash, unreadable, a link, larger than a ref can be)."""
    try:
        value = read_capped(path, SMALL_FILE_CAP).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value if Digest.from_name(value) is not None and len(value) == 40 else None


class HFCacheReader:
    """Reads one cache folder into a `Collector`. Construct, then call `read()` once."""

    def __init__(self, cache_dir: str, store: StoreKind = STORE, out: Collector | None = None) -> None:
        self.cache_dir = os.path.abspath(cache_dir)
        self.store = store  # llama.cpp's new cache has the same layout
        self.out = Collector() if out is None else out
        # Shared-store payloads, held apart until the repo blob links that point at them lend
        # them their names as claims: shared-store path -> record.
        self.shared: dict[str, FileRecord] = {}
        # commit -> repo folder, so that local_dir folders (which record only a commit) can be named
        self.commits: dict[str, str] = {}
        self.shared_store_seen = False

    def read(self) -> Collector:
        root = self.cache_dir
        if not os.path.lexists(root):
            return self.out  # no cache yet: an empty report, not an error
        try:
            names = sorted(os.listdir(root))
        except OSError as e:
            self.out.warn(root, f"cannot read HF cache folder: {e.strerror}")
            return self.out
        shared_dir = os.path.join(root, "blobs")
        if os.path.isfile(os.path.join(shared_dir, SHARED_MARKER)):
            self._read_shared_store(shared_dir)
        for name in names:
            path = os.path.join(root, name)
            parsed = parse_repo_folder(name)
            if parsed is not None and os.path.isdir(path) and not os.path.islink(path):
                self._read_repo(path, *parsed)
            elif name == "CACHEDIR.TAG" and stat_regular(path):
                self._add_metadata(path, ROOT_KEY)
            elif name == ".locks" and os.path.isdir(path):
                # Not read: filelock truncates a lock file to 0 bytes, so it adds nothing to any
                # total, and `clean` lists the stale ones itself. Skipping them spares an lstat and
                # a record per blob (a third of the entries of a cache of small files).
                continue
            elif (name == "blobs" and path == shared_dir and self.shared_store_seen) or name in IGNORED_ROOT_FILES:
                continue
            else:
                self.out.warn(path, "not part of the HF cache layout; skipped")
        if self.shared_store_seen:
            self.out.records.extend(self.shared.values())
            self.out.repos.append(
                Repo(shared_dir, "(shared blob store)", "store", self.store, shared_dir, (), RepoStatus.COMPLETE)
            )
        return self.out

    def _add_metadata(self, path: str, repo_key: str) -> None:
        st = os.lstat(path)
        self.out.add(Entry.of(path, os.path.relpath(path, self.cache_dir), st), self.store, Role.METADATA, repo_key)

    def _read_shared_store(self, shared_dir: str) -> None:
        self.shared_store_seen = True
        for entry in walk(shared_dir, self.out.warn):
            if not entry.is_file:
                self.out.warn(entry.path, "unexpected entry in the shared blob store; skipped")
                continue
            name = os.path.basename(entry.path)
            is_payload = "/" in entry.relpath and Digest.from_name(name) is not None and len(name) == 64
            if is_payload:
                payloads = Collector()
                self.shared[entry.path] = payloads.add(
                    entry, self.store, Role.MODEL, shared_dir, "blobs/" + entry.relpath
                )
            else:
                self.out.add(entry, self.store, Role.METADATA, shared_dir, "blobs/" + entry.relpath)

    def _read_repo(self, repo_dir: str, repo_type: str, repo_id: str) -> None:
        key = repo_dir
        problems: list[str] = []
        broken: list[str] = []  # damage that stops the repo from loading
        blobs: dict[str, FileRecord] = {}  # blob name -> record (own file or shared-store target)
        blob_entries: list[str] = []  # names of the entries in blobs/ (files and shared-store links)
        incomplete = 0

        for entry in walk(os.path.join(repo_dir, "blobs"), self.out.warn):
            name = entry.relpath
            # huggingface_hub's <etag>.<8 hex>.incomplete; llama.cpp's <oid>.downloadInProgress
            if entry.is_file and name.endswith((".incomplete", ".downloadInProgress")):
                self.out.add(entry, self.store, Role.INCOMPLETE, key, "blobs/" + name)
                incomplete += 1
            elif entry.is_file:
                blobs[name] = self.out.add(entry, self.store, Role.MODEL, key, "blobs/" + name, Digest.from_name(name))
                blob_entries.append(name)
            elif entry.is_symlink:
                blob_entries.append(name)
                target = self._shared_target(entry)
                if isinstance(target, str):
                    broken.append(f"blob {name}: {target}")
                    self.out.warn(entry.path, target)
                else:
                    blobs[name] = target
            else:
                self.out.warn(entry.path, "not a file; skipped")

        refs: dict[str, str] = {}
        ref_paths: dict[str, str] = {}
        for entry in walk(os.path.join(repo_dir, "refs"), self.out.warn):
            if entry.is_file:
                self.out.add(entry, self.store, Role.METADATA, key, "refs/" + entry.relpath)
                ref_paths[entry.relpath] = entry.path
                commit = read_ref(entry.path)
                if commit is None:
                    problems.append(f"ref {entry.relpath}: not a commit hash")
                    if entry.st.st_size > SMALL_FILE_CAP:
                        self.out.warn(entry.path, f"ref larger than {SMALL_FILE_CAP >> 20} MiB, not read")
                else:
                    refs[entry.relpath] = commit

        trees: dict[str, dict[str, TreeEntry]] = {}
        for entry in walk(os.path.join(repo_dir, "trees"), self.out.warn):
            if entry.is_file:
                self.out.add(entry, self.store, Role.METADATA, key, "trees/" + entry.relpath)
                if entry.relpath.endswith(".json"):
                    parsed = read_tree_file(entry.path)
                    if isinstance(parsed, str):
                        self.out.warn(entry.path, parsed)
                    else:
                        trees[entry.relpath[: -len(".json")]] = parsed

        for entry in walk(os.path.join(repo_dir, ".no_exist"), self.out.warn):
            if entry.is_file:
                self.out.add(entry, self.store, Role.METADATA, key, ".no_exist/" + entry.relpath)

        snapshots_dir = os.path.join(repo_dir, "snapshots")
        try:
            commits = sorted(n for n in os.listdir(snapshots_dir) if os.path.isdir(os.path.join(snapshots_dir, n)))
        except FileNotFoundError:
            commits = []
        except OSError as e:
            self.out.warn(snapshots_dir, f"cannot read folder: {e.strerror}")
            commits = []

        status = RepoStatus.COMPLETE if commits else RepoStatus.UNKNOWN
        snapshots: list[SnapshotScan] = []
        canonical = {name: name for name in blob_entries}  # links name blobs with strings of their own
        for commit in commits:
            self.commits.setdefault(commit, repo_dir)
            tree = trees.get(commit)
            found, snapshot = self._read_snapshot(
                key, os.path.join(snapshots_dir, commit), tree, blobs, canonical, broken
            )
            snapshots.append(snapshot)
            if tree is None:
                status = worst(status, RepoStatus.UNKNOWN)
            else:
                missing = [p for p in tree if p not in found]
                if missing:
                    status = worst(status, RepoStatus.INCOMPLETE)
                    problems.append(f"{commit[:8]}: {len(missing)} of {len(tree)} files not downloaded")
        for name, commit in sorted(refs.items()):
            self.commits.setdefault(commit, repo_dir)
            if commit not in commits:
                problems.append(f"ref {name} -> {commit[:8]}, which has no snapshot")
        if incomplete:
            status = worst(status, RepoStatus.INCOMPLETE)
            problems.append(f"{incomplete} partial download(s) in blobs/")
        if broken:
            status = RepoStatus.BROKEN
            problems[:0] = broken
        self.out.hf_repos.append(
            RepoScan(
                repo_dir, repo_type, repo_id, tuple(blob_entries), refs, ref_paths, tuple(commits), tuple(snapshots)
            )
        )
        if not commits and not blobs and not incomplete:
            # A folder holding only refs/: huggingface_hub writes one for every local_dir download.
            return
        by_commit = {c: [n for n, v in refs.items() if v == c] for c in commits}
        revisions = tuple(f"{c[:12]} ({', '.join(sorted(by_commit[c]))})" if by_commit[c] else c[:12] for c in commits)
        self.out.repos.append(Repo(key, repo_id, repo_type, self.store, repo_dir, revisions, status, tuple(problems)))

    def _shared_target(self, entry: Entry) -> FileRecord | str:
        """The shared-store record a repo blob symlink stands for, with the blob's name as its claim."""
        resolved = resolve_link(entry.path)
        if isinstance(resolved, str):
            return resolved
        target, _ = resolved
        record = self.shared.get(target)
        if record is None:
            return "blob symlink points outside the shared blob store"
        claimed = Digest.from_name(os.path.basename(entry.path))
        if claimed is not None and record.claimed is None:
            record = record.with_claim(claimed)
            self.shared[target] = record
        return record

    def _read_snapshot(
        self,
        key: str,
        snapshot_dir: str,
        tree: Mapping[str, TreeEntry] | None,
        blobs: Mapping[str, FileRecord],
        canonical: Mapping[str, str],
        broken: list[str],
    ) -> tuple[set[str], SnapshotScan]:
        """Read one snapshot: (repo paths it holds in readable form, what it holds). Damage goes to `broken`."""
        found: set[str] = set()
        real_files: list[FileRecord] = []
        relpaths: list[str] = []
        names: list[str | None] = []
        targets: list[FileRecord | None] = []
        oks: list[bool] = []
        commit = os.path.basename(snapshot_dir)
        blob_dir = os.path.join(key, "blobs")
        for entry in walk(snapshot_dir, self.out.warn):
            relpath = entry.relpath
            if entry.is_file:
                # No-symlink mode (Windows, HF_HUB_DISABLE_SYMLINKS): the snapshot holds a real copy.
                claimed = tree[relpath].claimed if tree and relpath in tree else None
                real_files.append(self.out.add(entry, self.store, Role.MODEL, key, relpath, claimed))
                found.add(relpath)
            elif entry.is_symlink:
                path = entry.path
                try:
                    text: str | None = entry.readlink()
                except FileNotFoundError as e:
                    if not entry.stat_taken:  # gone since the listing: what an lstat would have said
                        self.out.warn(path, f"cannot stat: {reason(e)}")
                        continue
                    text = None
                except OSError:
                    text = None
                name = None if text is None else _blob_name(text, path, relpath, blob_dir)
                blob = blobs.get(name) if name is not None else None
                if blob is not None and name is not None:
                    name = canonical.get(name, name)  # held once, by blobs/'s entry
                relpath = intern(relpath)  # the same few names in every repo
                relpaths.append(relpath)
                names.append(name)
                targets.append(blob)
                if blob is not None:
                    oks.append(True)
                    found.add(relpath)
                    continue
                resolved = resolve_link(path)
                if isinstance(resolved, str):
                    broken.append(f"{commit[:8]}/{display(relpath)}: {resolved}")
                    self.out.warn(path, resolved)
                elif not within(resolved[0], self.cache_dir):
                    broken.append(f"{commit[:8]}/{display(relpath)}: points outside the cache")
                    self.out.warn(path, f"points outside the cache, to {display(resolved[0])}")
                else:
                    found.add(relpath)
                oks.append(not isinstance(resolved, str) and within(resolved[0], self.cache_dir))
            else:
                self.out.warn(entry.path, "not a file or symlink; skipped")
        return found, SnapshotScan(commit, tuple(relpaths), tuple(names), tuple(targets), tuple(oks), tuple(real_files))


intern = sys.intern
_UP = ["../" * (depth + 2) + "blobs/" for depth in range(8)]


def _blob_name(target: str, link: str, relpath: str, blob_dir: str) -> str | None:
    """The blobs/ name a snapshot link's text `target` points at (no syscall on the target).

    huggingface_hub writes `../` x (depth + 2) + `blobs/<name>`: that shape is read off the text;
    any other is resolved against the link's folder.
    """
    depth = relpath.count("/")
    if depth < len(_UP) and target.startswith(up := _UP[depth]):
        name = target[len(up) :]
        if name and "/" not in name and name != "." and name != "..":
            return name
    resolved = os.path.normpath(os.path.join(os.path.dirname(link), target))
    return os.path.basename(resolved) if os.path.dirname(resolved) == blob_dir else None


_SEVERITY = [RepoStatus.COMPLETE, RepoStatus.UNKNOWN, RepoStatus.INCOMPLETE, RepoStatus.BROKEN]


def worst(a: RepoStatus, b: RepoStatus) -> RepoStatus:
    return max(a, b, key=_SEVERITY.index)


# Read by scan itself, first (`--cache-dir`, else where huggingface_hub resolves it: locations.py):
# the commits it finds name the local_dir downloads of the model folders.
SPEC = StoreSpec(
    STORE,
    "HF cache",
    option="--cache-dir",
    partials=Partials(
        CleanKind("incomplete", "interrupted downloads (.incomplete)"),
        Guard.BLOB_LOCK,
        locks=CleanKind("stale-lock", "lock files nobody holds"),
    ),
    links=TOOL_LINKS,  # a symlinked blob or snapshot file breaks when `hf cache rm` deletes its target
    summary=False,
    # huggingface_hub 2.4 never writes into a blob: a download (force_download too) lands in a temporary
    # file renamed over the blob (`_download_to_tmp_and_move`, `_chmod_and_move`); a snapshot entry is
    # removed before it is made again (`_create_symlink`); `hf cache rm` and `prune` unlink.
    written_in_place_by=None,
)

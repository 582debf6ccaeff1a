"""Readers for model folders: `snapshot_download(local_dir=...)` downloads and plain folders.

A folder is a local_dir download when it holds `.cache/huggingface/download/`
(huggingface_hub >= 0.24). Each file's `<path>.metadata` there holds three lines: commit,
etag, `time.time()`. The etag is the file's claimed digest, trusted on huggingface_hub's own
rule: only while the file's mtime is at most one second past the timestamp. Unlike
huggingface_hub's `read_download_metadata`, reading here never deletes a corrupt file.

Any other folder given as a model folder is plain: each first-level entry is one "repo".
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from ..common import open_quietly
from ..inventory import Digest, Repo, RepoStatus, Role
from ..store_kind import StoreKind
from .base import Collector, walk
from .hf_cache import TreeEntry, parse_repo_folder, read_tree_file, worst
from .registry import ANY_LINK, CleanKind, Guard, Partials, StoreSpec

# Both are found under `--models` and told apart by one walk (a plain folder may hold local_dir
# downloads): one module declares the two.
LOCAL_DIR = StoreKind.declare("local_dir", rank=110)
PLAIN = StoreKind.declare("plain", rank=120)

HF_META = os.path.join(".cache", "huggingface")
METADATA_SUFFIX = ".metadata"


@dataclass(frozen=True, slots=True)
class DownloadMetadata:
    commit: str
    etag: str
    timestamp: float


def parse_metadata(path: str) -> DownloadMetadata | str:
    """A local_dir `.metadata` file, or the reason it is unusable."""
    try:
        with open(open_quietly(path), encoding="utf-8") as f:  # its atime kept, as every read's
            lines = f.read(4096).splitlines()
        commit, etag, timestamp = lines[0].strip(), lines[1].strip(), float(lines[2].strip())
    except (OSError, UnicodeDecodeError, IndexError, ValueError) as e:
        return f"corrupt download metadata ({e.__class__.__name__})"
    if len(commit) != 40 or Digest.from_name(commit) is None:
        return "corrupt download metadata (commit is not a hash)"
    return DownloadMetadata(sys.intern(commit), etag, timestamp)  # the commit: one string for the folder


def is_local_dir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, HF_META, "download")) and not os.path.islink(path)


def read_local_dir(root: str, out: Collector, commits: Mapping[str, str]) -> None:
    """Read one local_dir download. `commits` maps commit hashes to HF cache repo folders."""
    root = os.path.abspath(root)
    store = LOCAL_DIR
    problems: list[str] = []
    status = RepoStatus.COMPLETE

    # Metadata first, so that each model file gets its claim as it is recorded.
    metadata: dict[str, DownloadMetadata] = {}
    trees: dict[str, dict[str, TreeEntry]] = {}
    incomplete = 0
    # Lock files are not read: filelock keeps them at 0 bytes and `clean` lists stale ones itself.
    for entry in walk(os.path.join(root, HF_META), out.warn, unread=".lock"):
        if not entry.is_file:
            continue
        rel = entry.relpath
        if rel.endswith(".incomplete"):
            out.add(entry, store, Role.INCOMPLETE, root, ".cache/huggingface/" + rel)
            incomplete += 1
            continue
        out.add(entry, store, Role.METADATA, root, ".cache/huggingface/" + rel)
        if rel.startswith("download/") and rel.endswith(METADATA_SUFFIX):
            parsed = parse_metadata(entry.path)
            if isinstance(parsed, str):
                out.warn(entry.path, parsed)
            else:
                metadata[rel[len("download/") : -len(METADATA_SUFFIX)]] = parsed
        elif rel.startswith("trees/") and rel.endswith(".json"):
            tree = read_tree_file(entry.path)
            if isinstance(tree, str):
                out.warn(entry.path, tree)
            else:
                trees[rel[len("trees/") : -len(".json")]] = tree

    def prune(path: str, relpath: str) -> bool:
        return relpath == ".cache/huggingface" or is_local_dir(path)

    found: set[str] = set()
    for entry in walk(root, out.warn, prune):
        rel = entry.relpath
        if entry.is_file:
            meta = metadata.get(rel)
            claimed = revision = None
            # huggingface_hub's own freshness rule (_local_folder.read_download_metadata).
            if meta is not None and entry.st.st_mtime - 1 <= meta.timestamp:
                claimed, revision = Digest.from_name(meta.etag), meta.commit
            out.add(entry, store, Role.MODEL, root, rel, claimed, revision)
            found.add(rel)
        elif entry.is_symlink and not os.path.exists(entry.path):
            problems.append(f"{rel}: broken symlink or symlink loop")
            out.warn(entry.path, "broken symlink or symlink loop")
            status = RepoStatus.BROKEN
        elif entry.is_symlink:
            found.add(rel)  # a link into the cache (huggingface_hub < 0.23): no bytes of its own

    commits_here = sorted({m.commit for m in metadata.values()})
    for commit in commits_here:
        if commit not in trees:
            status = worst(status, RepoStatus.UNKNOWN)
        missing = [p for p, m in metadata.items() if m.commit == commit and p not in found]
        if missing:
            status = worst(status, RepoStatus.INCOMPLETE)
            problems.append(f"{commit[:8]}: {len(missing)} downloaded file(s) missing")
    if not commits_here:
        status = worst(status, RepoStatus.UNKNOWN)
    if incomplete:
        status = worst(status, RepoStatus.INCOMPLETE)
        problems.append(f"{incomplete} partial download(s) in .cache/huggingface/download")
    origin = next((commits[c] for c in commits_here if c in commits), None)
    named = parse_repo_folder(os.path.basename(origin)) if origin else None
    repo_type, repo_id = named or ("model", os.path.basename(root))
    revisions = tuple(c[:12] for c in commits_here)
    out.repos.append(Repo(root, repo_id, repo_type, store, root, revisions, status, tuple(problems), origin))


def read_models_folder(folder: str, out: Collector, commits: Mapping[str, str], skip: frozenset[str]) -> None:
    """Read a model folder: local_dir downloads in it, and every other first-level entry as a plain folder.

    `skip` holds folders that another reader covers (the HF cache, when it lies inside).
    """
    folder = os.path.abspath(folder)
    if is_local_dir(folder):
        read_local_dir(folder, out, commits)
        return
    try:
        with os.scandir(folder) as it:
            children = sorted(it, key=lambda e: e.name)
    except OSError as e:
        out.warn(folder, f"cannot read folder: {e.strerror}")
        return
    for child in children:
        if child.path in skip or not child.is_dir(follow_symlinks=False):
            continue
        if is_local_dir(child.path):
            read_local_dir(child.path, out, commits)
        else:
            read_plain(child.path, out, commits, skip)
    # Loose files at the top level form one plain "folder" of their own.
    read_plain(folder, out, commits, skip, top_level_only=True)


def read_plain(
    root: str,
    out: Collector,
    commits: Mapping[str, str],
    skip: frozenset[str],
    top_level_only: bool = False,
) -> None:
    """One plain model folder; local_dir downloads nested inside it are read as such."""
    nested: list[str] = []

    def prune(path: str, relpath: str) -> bool:
        if top_level_only or path in skip:
            return True
        if is_local_dir(path):
            nested.append(path)
            return True
        return False

    broken: list[str] = []
    count = 0
    for entry in walk(root, out.warn, prune):
        if entry.is_file:
            # A git checkout's objects are compressed: never byte-identical to a model file.
            role = Role.METADATA if entry.relpath.startswith(".git/") else Role.MODEL
            out.add(entry, PLAIN, role, root)
            count += 1
        elif entry.is_symlink and not os.path.exists(entry.path):
            broken.append(f"{entry.relpath}: broken symlink or symlink loop")
            out.warn(entry.path, "broken symlink or symlink loop")
    for path in nested:
        read_local_dir(path, out, commits)
    if top_level_only and not count and not broken:
        return
    # A plain folder has no file list to check against: complete or not cannot be told.
    status = RepoStatus.BROKEN if broken else RepoStatus.UNKNOWN
    out.repos.append(Repo(root, os.path.basename(root), "folder", PLAIN, root, (), status, tuple(broken)))


# Read by scan itself (`--models`, the config file, `./models`), after the HF cache.
LOCAL_DIR_SPEC = StoreSpec(
    LOCAL_DIR,
    "local_dir downloads",
    option="--models",
    partials=Partials(
        CleanKind("local-incomplete", "interrupted local_dir downloads"),
        Guard.LOCAL_DIR_LOCK,
        locks=CleanKind("local-stale-lock", "local_dir lock files nobody holds"),
    ),
    links=ANY_LINK,
    summary=False,
    # `_hf_hub_download_to_local_dir` (huggingface_hub 2.4): a file whose new revision is already cached
    # is copied onto the existing path, `shutil.copyfile`, in place (one not cached is unlinked first).
    written_in_place_by="huggingface_hub, updating a local_dir download to a revision whose new file it has "
    "cached, copies that file onto the old one in place (shutil.copyfile), and so does `cp`",
)
PLAIN_SPEC = StoreSpec(
    PLAIN,
    "plain folders",
    option="--models",
    links=ANY_LINK,
    summary=False,
    written_in_place_by="`cp` or shutil.copyfile of a new file over a plain folder's copy writes into it in place",
)

"""Where the space goes, as a tree for `report --html`: stores, repos and folders, revisions, files.

Pure: made from what `analyze` found (the inventory and its analysis) and from the dry runs of
`consolidate` (auto) and `clean`, with no second scan. Each file is sized by the bytes it really
holds on disk, as `analyze` counts them: an inode once, in the first store (by rank) and the first
record that names it, so the stores' sizes are `analyze`'s and the leaves sum to Total Storage.
Other names of an inode (hard links) hold nothing more and are not leaves; the inode's leaf says
how many names it has.

Each leaf has a status, the first that applies, in `Status` order: what `clean` would remove, what
`prune` would with the budget given (`Removals`), a second copy of duplicated content that `consolidate`
would free or leaves alone, a partial download `clean` keeps, bytes shared by hard links, the copy
kept of duplicated content, metadata, a tool's own cache, a model file with no other copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from .inventory import FileRecord, Inventory, Repo, RepoScan, Role
from .store_kind import StoreKind
from .stores.registry import spec_of

if TYPE_CHECKING:
    from .analysis import Analysis
    from .clean import CleanPlan
    from .plan import Plan


class Status(str, Enum):
    """What a file's bytes are; a file takes the first that applies (this order)."""

    GARBAGE = "garbage"  # `clean` (as run without options) would remove it
    PRUNE = "prune"  # `prune` would remove it, with the budget given to `report` (see `Removals`)
    FREED = "freed"  # a second copy that `consolidate` (auto) replaces by a link or removes
    LEFT = "left"  # a second copy that auto leaves alone (another mode would reclaim it)
    PARTIAL = "partial"  # a partial download that `clean` keeps (young, or its download is live)
    SHARED = "shared"  # an inode with more than one name (hard links): its bytes are held once
    KEPT = "kept"  # the copy `consolidate` keeps of content that has second copies
    METADATA = "metadata"  # huggingface_hub's own files, and the tools' metadata
    CACHE = "cache"  # a tool's own working cache (hf_xet's chunks and shards)
    UNIQUE = "unique"  # a model file with no other copy


TITLES = {
    Status.GARBAGE: "garbage: clean removes it",
    Status.PRUNE: "prune removes it",
    Status.FREED: "second copy: consolidate frees it",
    Status.LEFT: "second copy: left alone by auto",
    Status.PARTIAL: "partial download (clean keeps it)",
    Status.SHARED: "shared by hard links",
    Status.KEPT: "the copy kept (its duplicates are elsewhere)",
    Status.METADATA: "metadata",
    Status.CACHE: "a tool's own cache",
    Status.UNIQUE: "model file, one copy",
}
SHORT_TITLES = {  # in lists of a folder's parts
    Status.GARBAGE: "garbage",
    Status.PRUNE: "prune",
    Status.FREED: "second copies freed",
    Status.LEFT: "second copies left alone",
    Status.PARTIAL: "partial",
    Status.SHARED: "hard-linked",
    Status.KEPT: "kept copies",
    Status.METADATA: "metadata",
    Status.CACHE: "tool cache",
    Status.UNIQUE: "one copy",
}
SECOND_COPIES = (Status.FREED, Status.LEFT)


@dataclass(frozen=True)
class Removals:
    """What a command's dry run would remove: paths, and folders whose every file goes; with the bytes it frees."""

    paths: frozenset[str]
    folders: tuple[str, ...]
    frees: int

    def covers(self, path: str) -> bool:
        return path in self.paths or any(path.startswith(folder + os.sep) for folder in self.folders)


@dataclass
class Node:
    """A rectangle of the picture: a store, a repo or folder, a revision (or a part of a repo such as
    its metadata), a file, or the smaller files of one status in a folder (`count` > 1)."""

    name: str
    level: int  # 0 all, 1 store, 2 repo or folder, 3 revision or part, 4 file (leaves may sit higher)
    size: int = 0  # bytes held: a leaf's own, an inner node's the sum of its children's
    status: Status = Status.UNIQUE  # a leaf's; an inner node's: the status holding most of its bytes
    children: list[Node] = field(default_factory=list)
    path: str = ""
    digest: str = ""  # a leaf's: "sha256:..." proven by hashing, or the digest its name claims
    proven: bool = False
    names: int = 1  # a leaf's: the names its inode has on disk (hard links)
    count: int = 1  # files it stands for
    repo: Repo | None = None
    by_status: dict[Status, int] = field(default_factory=dict)  # bytes per status under it


@dataclass(frozen=True)
class Space:
    root: Node
    consolidate_frees: int  # what `consolidate` (auto) frees
    left_alone_bytes: int  # second copies auto leaves alone, each inode once
    clean_frees: int
    prune_frees: int | None  # None: no budget was given, so no prune figure


def build_space(
    inventory: Inventory,
    analysis: Analysis,
    consolidate: Plan,
    clean: CleanPlan,
    prune: Removals | None = None,
) -> Space:
    """The tree of the picture: every byte `analyze` counted, once, in the place that holds it."""
    garbage = Removals(
        frozenset(i.path for i in clean.items if i.fix in ("remove", "sweep") and not i.is_dir),
        tuple(i.path for i in clean.items if i.fix in ("remove", "sweep") and i.is_dir),
        clean.bytes_to_free,
    )
    fate: dict[tuple[int, int], Status] = {}
    for a in consolidate.actions:
        fate[(a.keep.dev, a.keep.ino)] = Status.KEPT
    for a in consolidate.actions:  # a target is never also kept: its own status wins
        fate[(a.target.dev, a.target.ino)] = Status.FREED if a.kind in ("link", "delete") else Status.LEFT
    digests = {r.facts.inode: group for group in analysis.duplicates for r in group.records}
    owners = _owners(inventory.records)
    names: dict[tuple[int, int], int] = {}
    for r in inventory.records:
        names[r.facts.inode] = names.get(r.facts.inode, 0) + 1

    def status(r: FileRecord) -> Status:
        inode = r.facts.inode
        if garbage.covers(r.path):
            return Status.GARBAGE
        if prune is not None and prune.covers(r.path):
            return Status.PRUNE
        if fate.get(inode) in SECOND_COPIES:
            return fate[inode]
        if r.role is Role.INCOMPLETE:
            return Status.PARTIAL
        if r.facts.nlink > 1:
            return Status.SHARED
        if fate.get(inode) is Status.KEPT:
            return Status.KEPT
        return {Role.METADATA: Status.METADATA, Role.CACHE: Status.CACHE}.get(r.role, Status.UNIQUE)

    repos = {repo.key: repo for repo in inventory.repos}
    revisions = _revisions(inventory.hf_repos)
    root = Node("everything", 0)
    stores: dict[StoreKind, Node] = {}
    folders: dict[str, Node] = {}
    parts: dict[tuple[str, str], Node] = {}
    for r in inventory.records:
        if owners.get(r.facts.inode) is not r or not r.size:
            continue  # another name of an inode held elsewhere, or an empty file: no bytes of its own
        store = stores.get(r.store)
        if store is None:
            store = stores[r.store] = Node(spec_of(r.store).title, 1, path=r.store.value)
            root.children.append(store)
        folder = folders.get(r.repo_key)
        if folder is None:
            repo = repos.get(r.repo_key)
            label = repo.repo_id if repo is not None else _other_files(r.repo_key)
            folder = folders[r.repo_key] = Node(label, 2, path=r.repo_key, repo=repo)
            store.children.append(folder)
        name, part = _place(r, revisions)
        parent = folder
        if part is not None:
            parent = parts.get((r.repo_key, part))  # type: ignore[assignment]
            if parent is None:
                parent = parts[(r.repo_key, part)] = Node(part, 3, path=r.repo_key)
                folder.children.append(parent)
        group = digests.get(r.facts.inode)
        claimed = r.claimed
        parent.children.append(
            Node(
                name,
                parent.level + 1,
                r.size,
                status(r),
                path=r.path,
                digest=str(group.digest) if group is not None else str(claimed) if claimed is not None else "",
                proven=group is not None and group.proven,
                names=names[r.facts.inode],
            )
        )
    _total(root)
    return Space(
        root,
        consolidate.bytes_to_free,
        sum({(a.target.dev, a.target.ino): a.target.size for a in consolidate.actions if not a.changes}.values()),
        garbage.frees,
        prune.frees if prune is not None else None,
    )


def _owners(records: Sequence[FileRecord]) -> dict[tuple[int, int], FileRecord]:
    """The record each inode is counted in: the first, in the first store by rank (as `Inventory.store_bytes`)."""
    owners: dict[tuple[int, int], FileRecord] = {}
    for r in records:
        inode = r.facts.inode
        current = owners.get(inode)
        if current is None or r.store.rank < current.store.rank:
            owners[inode] = r
    return owners


def _revisions(hf_repos: Iterable[RepoScan]) -> dict[str, str]:
    """Per HF cache file (blob or snapshot file): "<name in the repo>\\0<the revision part it goes in>".

    A blob that snapshots of two or more revisions use is shown once, in a part of its own.
    """
    found: dict[str, tuple[str, set[str]]] = {}
    for repo in hf_repos:
        refs: dict[str, list[str]] = {}
        for ref, commit in sorted(repo.refs.items()):
            refs.setdefault(commit, []).append(ref)
        for snap in repo.snapshots:
            label = snap.commit[:12] + (f" ({', '.join(refs[snap.commit])})" if snap.commit in refs else "")
            for relpath, target in zip(snap.relpaths, snap.targets, strict=True):
                if target is not None:
                    name, labels = found.setdefault(target.path, (relpath, set()))
                    labels.add(label)
            for f in snap.files:
                found.setdefault(f.path, (f.relpath, set()))[1].add(label)
    out = {}
    for path, (name, labels) in found.items():
        part = next(iter(labels)) if len(labels) == 1 else f"shared by {len(labels)} revisions"
        out[path] = f"{name}\0{part}"
    return out


def _place(r: FileRecord, revisions: Mapping[str, str]) -> tuple[str, str | None]:
    """(the file's name, the part of its repo or folder it goes in: a revision, metadata, ...; None: none)."""
    if r.role is Role.METADATA:
        return r.relpath, "metadata"
    if r.role is Role.INCOMPLETE:
        return r.relpath, "partial downloads"
    if r.store is StoreKind.HF_CACHE:
        found = revisions.get(r.path)
        if found is None:
            return r.relpath, "in no snapshot"
        name, part = found.split("\0")
        return name, part
    return r.relpath, (r.revision[:12] if r.revision else None)


def _other_files(key: str) -> str:
    return "(files of the store itself)" if key.startswith("<") else os.path.basename(key) or key


def _total(node: Node) -> None:
    """Sizes and bytes per status, bottom up; an inner node's status is the one holding most of its bytes;
    children largest first (the order the table and the picture list them in)."""
    stack = [(node, False)]
    while stack:
        n, done = stack.pop()
        if not n.children:
            n.by_status = {n.status: n.size}
            continue
        if not done:
            stack.append((n, True))
            stack.extend((c, False) for c in n.children)
            continue
        n.children.sort(key=lambda c: (-c.size, c.name))
        n.size = sum(c.size for c in n.children)
        n.count = sum(c.count for c in n.children)
        totals: dict[Status, int] = {}
        for c in n.children:
            for s, b in c.by_status.items():
                totals[s] = totals.get(s, 0) + b
        n.by_status = totals
        n.status = max(totals, key=lambda s: (totals[s], -list(Status).index(s)))


def merge_small(root: Node, keep: int) -> int:
    """Keep the `keep` largest files as leaves of their own; merge the others, per folder and status, into
    one leaf each ("412 smaller files"), so that the page of a million files stays small. Returns how many
    files were merged. The sizes and statuses of every inner node stay as they were."""
    files = [n.size for n in _walk(root) if not n.children and n.level >= 3]
    if len(files) <= keep:
        return 0
    cut = sorted(files, reverse=True)[keep - 1]
    merged = 0
    for parent in list(_walk(root)):
        small = [c for c in parent.children if not c.children and c.level >= 3 and c.size < cut]
        if len(small) < 2:
            continue
        children = [c for c in parent.children if c.children or c.level < 3 or c.size >= cut]
        by_status: dict[Status, list[Node]] = {}
        for c in small:
            by_status.setdefault(c.status, []).append(c)
        for status, nodes in by_status.items():
            if len(nodes) == 1:
                children.extend(nodes)
                continue
            size = sum(n.size for n in nodes)
            name = f"{len(nodes):,} smaller files"
            children.append(Node(name, nodes[0].level, size, status, path=parent.path, count=len(nodes)))
            children[-1].by_status = {status: size}
            merged += len(nodes)
        children.sort(key=lambda c: (-c.size, c.name))
        parent.children = children
    return merged


def _walk(root: Node) -> Iterable[Node]:
    stack = [root]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(n.children)

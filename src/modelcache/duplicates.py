"""Groups of identical content, proven by hashing (or, with `fast`, probable from claims).

Stages, cheapest first, dropping singletons after each (as fclones does):

1. model files only, one unit per inode (hard links are one file, not duplicates);
2. same size;
3. digests already known: the digest index entry for the same inode, size and mtime;
4. for files not yet hashed, a fingerprint of the first and last 64 KiB splits same-size
   groups that cannot be equal (large files only);
5. full sha256 of what is left, in a thread pool (hashlib frees the GIL), results written to
   the index.

Blob names and local_dir etags are claims: `fast` groups on them without reading; the full
run only uses them to report content that does not match its name.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .digests import DigestIndex, HashResult, edge_fingerprint, hash_file
from .inventory import Digest, FileFacts, FileRecord, Role, Warning_
from .stores.base import display, reason

FINGERPRINT_MIN_SIZE = 4 << 20  # below this a full read costs about as much as the fingerprint


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """Distinct inodes holding the same bytes. `proven` is False only for `--fast` guesses."""

    digest: Digest
    size: int
    paths: tuple[str, ...]
    inodes: int
    proven: bool

    @property
    def reclaimable_bytes(self) -> int:
        return (self.inodes - 1) * self.size


@dataclass(frozen=True)
class DuplicateResult:
    groups: tuple[DuplicateGroup, ...]
    warnings: tuple[Warning_, ...]
    bytes_hashed: int
    files_hashed: int

    @property
    def duplicate_bytes(self) -> int:
        return sum(g.reclaimable_bytes for g in self.groups)


@dataclass
class _Inode:
    facts: FileFacts
    paths: list[str] = field(default_factory=list)
    claims: set[Digest] = field(default_factory=set)
    digest: Digest | None = None  # sha256, proven by hashing now or earlier

    @property
    def path(self) -> str:
        return self.paths[0]


def group_inodes(records: Iterable[FileRecord]) -> list[_Inode]:
    """Model files of non-zero size, one entry per inode."""
    inodes: dict[tuple[int, int], _Inode] = {}
    for r in records:
        if r.role is not Role.MODEL or r.facts.size == 0:
            continue
        node = inodes.get(r.facts.inode)
        if node is None:
            node = inodes[r.facts.inode] = _Inode(r.facts)
        node.paths.append(r.path)
        if r.claimed is not None:
            node.claims.add(r.claimed)
    return list(inodes.values())


def _same_size_groups(inodes: Iterable[_Inode]) -> list[list[_Inode]]:
    by_size: dict[int, list[_Inode]] = defaultdict(list)
    for node in inodes:
        by_size[node.facts.size].append(node)
    return [g for g in by_size.values() if len(g) > 1]


def find_duplicates(
    records: Sequence[FileRecord],
    index: DigestIndex | None = None,
    *,
    fast: bool = False,
    workers: int | None = None,
    on_plan: Callable[[int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> DuplicateResult:
    """Find groups of identical content among `records`.

    `on_plan(total_bytes)` is called once with the bytes about to be hashed, and
    `on_bytes(n)` as they are read: hooks for a progress bar. The library never prints.
    """
    warnings: list[Warning_] = []
    candidates = _same_size_groups(group_inodes(records))
    if index is not None:
        index.load(n.facts.inode for g in candidates for n in g)
        for g in candidates:
            for node in g:
                node.digest = index.lookup(node.facts)
    if fast:
        return DuplicateResult(tuple(_sorted(_claim_groups(candidates))), (), 0, 0)

    to_hash: list[_Inode] = []
    for g in candidates:
        unknown = [n for n in g if n.digest is None]
        if not unknown:
            continue
        if g[0].facts.size >= FINGERPRINT_MIN_SIZE:
            # Known members take part too: an unknown file may match one of them.
            for sub in _split_by_fingerprint(g, warnings):
                to_hash.extend(n for n in sub if n.digest is None)
        else:
            to_hash.extend(unknown)

    if on_plan is not None:
        on_plan(sum(n.facts.size for n in to_hash))
    hashed = _hash_all(to_hash, index, warnings, workers, on_bytes)
    if index is not None:
        index.flush()

    groups: list[DuplicateGroup] = []
    for g in candidates:
        by_digest: dict[Digest, list[_Inode]] = defaultdict(list)
        for node in g:
            if node.digest is not None:
                by_digest[node.digest].append(node)
        groups.extend(_make_group(d, members, proven=True) for d, members in by_digest.items() if len(members) > 1)
    return DuplicateResult(tuple(_sorted(groups)), tuple(warnings), sum(n.facts.size for n in hashed), len(hashed))


def _split_by_fingerprint(group: list[_Inode], warnings: list[Warning_]) -> list[list[_Inode]]:
    by_print: dict[bytes, list[_Inode]] = defaultdict(list)
    for node in group:
        try:
            by_print[edge_fingerprint(node.path, node.facts.size)].append(node)
        except OSError as e:
            warnings.append(Warning_(display(node.path), f"cannot read: {reason(e)}"))
    return [sub for sub in by_print.values() if len(sub) > 1]


def _hash_all(
    nodes: list[_Inode],
    index: DigestIndex | None,
    warnings: list[Warning_],
    workers: int | None,
    on_bytes: Callable[[int], None] | None,
) -> list[_Inode]:
    def work(node: _Inode) -> HashResult | OSError:
        wants_git = any(c.algorithm == "gitsha1" for c in node.claims)
        try:
            return hash_file(node.path, node.facts.size, gitsha1=wants_git, on_bytes=on_bytes)
        except OSError as e:
            return e

    done: list[_Inode] = []
    # Largest first, so that the pool does not end waiting on one big file.
    nodes = sorted(nodes, key=lambda n: -n.facts.size)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for node, result in zip(nodes, pool.map(work, nodes), strict=True):
            if isinstance(result, OSError):
                warnings.append(Warning_(display(node.path), f"cannot read: {reason(result)}"))
                continue
            node.digest = Digest("sha256", result.sha256)
            done.append(node)
            if index is not None:
                index.record(node.facts, result.sha256)
            for claim in node.claims:
                actual = result.sha256 if claim.algorithm == "sha256" else result.gitsha1
                if actual != claim.hexdigest:
                    warnings.append(Warning_(display(node.path), f"content does not match its claimed digest {claim}"))
    return done


def _claim_groups(candidates: list[list[_Inode]]) -> list[DuplicateGroup]:
    """`fast`: group on proven digests where known, else on claimed ones, without reading."""
    groups: list[DuplicateGroup] = []
    for g in candidates:
        by_key: dict[Digest, list[_Inode]] = defaultdict(list)
        for node in g:
            keys = {node.digest} if node.digest is not None else node.claims
            for key in keys:
                by_key[key].append(node)
        seen: set[int] = set()
        for key, members in sorted(by_key.items(), key=lambda kv: kv[0].algorithm != "sha256"):
            members = [m for m in members if id(m) not in seen]
            if len(members) > 1:
                seen.update(id(m) for m in members)
                groups.append(_make_group(key, members, proven=all(m.digest is not None for m in members)))
    return groups


def _make_group(digest: Digest, members: list[_Inode], proven: bool) -> DuplicateGroup:
    paths = tuple(p for m in sorted(members, key=lambda m: m.path) for p in sorted(m.paths))
    return DuplicateGroup(digest, members[0].facts.size, paths, len(members), proven)


def _sorted(groups: list[DuplicateGroup]) -> list[DuplicateGroup]:
    return sorted(groups, key=lambda g: (-g.reclaimable_bytes, -g.size, g.paths))

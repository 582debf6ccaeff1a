"""Groups of identical content, proven by hashing (or, with `fast`, probable from claims).

Stages, cheapest first, dropping singletons after each (as fclones does):

1. model files only, one unit per inode (hard links are one file, not duplicates);
2. same size;
3. digests already known: the digest index entry for the same inode, size and mtime;
4. claims split what is left without reading: blob names and local_dir etags say which
   sha256 (or git blob sha1) a file should have, so two files that claim different digests of
   one algorithm are not read to be told apart. A file with nothing comparable to claim (a
   plain file, a git-named file among sha256-named ones) is read first, and its digest then
   takes the place of a claim: only the files that claim it are read next. Per group, the
   side read this way is the one with fewer files ("read only the side not seen");
5. for large files that claims cannot split, a fingerprint of the first and last 64 KiB splits
   same-size groups that cannot be equal (read in parallel);
6. every file left in a group of two or more is read whole, as `reading.py` schedules it (in the
   disk's order, many reads asked for ahead, three hashing threads a core): the files of a group
   whose claims agree are read in step, one hashed with sha256 and the others compared with it
   byte for byte (equal bytes have equal digests: a memcmp instead of a hash each); a file found
   different is hashed alone. The results are written to the index as they come.

Claims only ever keep files apart; files are grouped only by the sha256 of bytes that were
read (now, or earlier per the digest index). So a group is always proven; what a wrong claim
can cost is a duplicate not found: a file whose bytes no longer match its own name (which
`verify` reports) is not compared with files that claim other digests. Every file that is
hashed is also checked against its claims, and a mismatch is a warning.
"""

from __future__ import annotations

import gc
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from .common import display, reason
from .digests import DigestIndex, HashResult
from .disks import Scheduler
from .inventory import Digest, FileFacts, FileRecord, Role, Warning_, inode_key
from .reading import Readers

FINGERPRINT_MIN_SIZE = 4 << 20  # below this a full read costs about as much as the fingerprint
# consolidate's comparisons read this many pairs of copies at once (act/guards.py: its pool reads two
# files a task and compares them byte for byte, so its threads wait on the disk more than they hash).
READERS = min(32, max(16, 2 * (os.cpu_count() or 1)))


@dataclass(frozen=True, slots=True, eq=False)
class DuplicateGroup:
    """Distinct inodes holding the same bytes. `proven` is False only for `--fast` guesses.

    Two groups are equal when they name the same paths (records also hold times that reading
    changes, such as atime).
    """

    digest: Digest
    size: int
    records: tuple[FileRecord, ...]  # every path of every inode, in order of path
    inodes: int
    proven: bool

    @property
    def paths(self) -> tuple[str, ...]:
        """Made when asked: a group holds its records, not a second string per path."""
        return tuple(r.path for r in self.records)

    @property
    def reclaimable_bytes(self) -> int:
        return (self.inodes - 1) * self.size

    def _key(self) -> tuple[object, ...]:
        return (self.digest, self.size, self.paths, self.inodes, self.proven)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DuplicateGroup) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


@dataclass(frozen=True)
class DuplicateResult:
    groups: tuple[DuplicateGroup, ...]
    warnings: tuple[Warning_, ...]
    bytes_hashed: int
    files_hashed: int

    @property
    def duplicate_bytes(self) -> int:
        return sum(g.reclaimable_bytes for g in self.groups)


@dataclass(slots=True)
class _Inode:
    """One inode that shares its size with another: its records (the paths that name it), what they
    claim of its bytes and what hashing proved."""

    record: FileRecord  # the first path that names it: where it is read, and its facts
    others: list[FileRecord] | None = None  # further paths of the same inode (hard links)
    digest: Digest | None = None  # sha256, proven by hashing now or earlier
    gitsha1: str | None = None  # git blob sha1, when hashed with it (to compare with git-named files)

    @property
    def facts(self) -> FileFacts:
        return self.record

    @property
    def claims(self) -> tuple[Digest, ...]:
        """What its paths claim of its bytes, each claim once (made when asked: a tuple per inode
        held from grouping to the end was 14 MB at a million files)."""
        claimed = self.record.claimed
        if self.others is None:
            return () if claimed is None else (claimed,)
        claims = [] if claimed is None else [claimed]
        for r in self.others:
            if r.claimed is not None and r.claimed not in claims:
                claims.append(r.claimed)
        return tuple(claims)

    @property
    def path(self) -> str:
        return self.record.path

    @property
    def records(self) -> list[FileRecord]:
        return [self.record, *(self.others or ())]


def _same_size_groups(records: Iterable[FileRecord]) -> list[list[_Inode]]:
    """Model files of non-zero size, one `_Inode` per inode, in groups of two or more inodes of one
    size. A size held by one inode needs no read, and gets no `_Inode` either: at a million files,
    only the records are kept per file until sizes are compared (a list slot each)."""
    by_size: dict[int, FileRecord | list[FileRecord]] = {}
    model = Role.MODEL
    for r in records:
        if r.role is not model:
            continue
        size = r.size
        if not size:
            continue
        seen = by_size.get(size)
        if seen is None:
            by_size[size] = r
        elif isinstance(seen, list):
            seen.append(r)
        else:
            by_size[size] = [seen, r]
    groups: list[list[_Inode]] = []
    for same in by_size.values():
        if not isinstance(same, list):
            continue
        inodes: dict[bytes, _Inode] = {}
        for r in same:
            key = inode_key(r)
            node = inodes.get(key)
            if node is None:
                node = inodes[key] = _Inode(r)
            elif node.others is None:
                node.others = [r]
            else:
                node.others.append(r)
        if len(inodes) > 1:
            groups.append(list(inodes.values()))
    return groups


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: what is built here holds no cycles, and each of its
    passes would walk every object the scan made (half of find_duplicates' time at 240,000 files)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def find_duplicates(
    records: Sequence[FileRecord],
    index: DigestIndex | None = None,
    *,
    fast: bool = False,
    workers: int | None = None,
    on_plan: Callable[[int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    scheduler: Scheduler | None = None,
) -> DuplicateResult:
    """Find groups of identical content among `records`.

    `on_plan(total_bytes)` is called with the bytes about to be hashed (again, with a larger
    total, when what a first pass of reads found adds files to read), and `on_bytes(n)` as they
    are read: hooks for a progress bar. The library never prints. `workers` is the number of
    hashing threads (default: one per core, `reading.HASHERS`); `scheduler` orders the reads
    (default: for the disks /sys describes).
    """
    with _gc_paused():
        return _find_duplicates(records, index, fast, Readers(workers, scheduler), on_plan, on_bytes)


def _find_duplicates(
    records: Sequence[FileRecord],
    index: DigestIndex | None,
    fast: bool,
    readers: Readers[_Inode],
    on_plan: Callable[[int], None] | None,
    on_bytes: Callable[[int], None] | None,
) -> DuplicateResult:
    warnings: list[Warning_] = []
    candidates = _same_size_groups(records)
    if index is not None:
        for node, digest in index.known((n for g in candidates for n in g), _record):
            node.digest = digest
    if fast:
        return DuplicateResult(tuple(_sorted(_claim_groups(candidates))), (), 0, 0)

    open_groups = [g for g in candidates if any(n.digest is None for n in g)]
    hashed: list[_Inode] = []
    if open_groups:
        hashed = _read_what_must_be_read(open_groups, readers, index, warnings, on_plan, on_bytes)
    elif on_plan is not None:
        on_plan(0)
    if index is not None:
        index.flush()

    groups: list[DuplicateGroup] = []
    for g in candidates:
        by_digest: dict[Digest, list[_Inode]] = defaultdict(list)
        for node in g:
            if node.digest is not None:
                by_digest[node.digest].append(node)
        groups.extend(_make_group(d, members, proven=True) for d, members in by_digest.items() if len(members) > 1)
    # Warnings in order of path: the order files were read in depends on the disk and the threads.
    warnings.sort(key=_path_then_message)
    return DuplicateResult(tuple(_sorted(groups)), tuple(warnings), sum(n.facts.size for n in hashed), len(hashed))


def _keys(node: _Inode, algorithm: str) -> str | None:
    """What `node`'s bytes hash to with `algorithm`: proven if it was hashed, else claimed; None if unknown.

    A file whose claims of one algorithm disagree with each other has no usable claim.
    """
    if algorithm == "sha256":
        if node.digest is not None:
            return node.digest.hexdigest
    elif node.gitsha1 is not None:
        return node.gitsha1
    if node.others is None:  # the usual case: one path, claiming by a blob name or an etag
        return node.record.claimed_hex(algorithm)
    claims = node.claims
    if len(claims) == 1:  # the usual case: a blob name or an etag
        return claims[0].hexdigest if claims[0].algorithm == algorithm else None
    claimed = {c.hexdigest for c in claims if c.algorithm == algorithm}
    return claimed.pop() if len(claimed) == 1 else None


def _split_by_keys(group: list[_Inode]) -> list[list[_Inode]] | None:
    """Subgroups that can hold equal bytes, by digests and claims of one algorithm that every member has.

    None when no algorithm is known for every member: then some must be read first.
    """
    for algorithm in ("sha256", "gitsha1"):
        keys = [_keys(n, algorithm) for n in group]
        if None not in keys:
            by_key: dict[str | None, list[_Inode]] = defaultdict(list)
            for node, key in zip(group, keys, strict=True):
                by_key[key].append(node)
            return [sub for sub in by_key.values() if len(sub) > 1]
    return None


def _unknown_side(group: list[_Inode]) -> list[_Inode]:
    """The fewest members to read so that every member has a key of one algorithm."""
    sides = [[n for n in group if _keys(n, a) is None] for a in ("sha256", "gitsha1")]
    return min(sides, key=len)


def _read_what_must_be_read(
    groups: list[list[_Inode]],
    readers: Readers[_Inode],
    index: DigestIndex | None,
    warnings: list[Warning_],
    on_plan: Callable[[int], None] | None,
    on_bytes: Callable[[int], None] | None,
) -> list[_Inode]:
    """Hash what proves or rules out identity in `groups` (same size, some member not hashed yet)."""
    # Claims first: they split groups without reading anything.
    settled: list[list[_Inode]] = []
    unsplit: list[list[_Inode]] = []
    for g in groups:
        subs = _split_by_keys(g)
        if subs is None:
            unsplit.append(g)
        else:
            settled.extend(subs)
    # Large files claims cannot tell apart: their first and last blocks, in parallel.
    large = [g for g in unsplit if g[0].facts.size >= FINGERPRINT_MIN_SIZE]
    small = [g for g in unsplit if g[0].facts.size < FINGERPRINT_MIN_SIZE]
    for sub in _split_by_fingerprint(large, readers, warnings):
        subs = _split_by_keys(sub)
        if subs is None:
            small.append(sub)  # alike at both ends: settled like small files below
        else:
            settled.extend(subs)
    # Groups that claims cannot split: read the side with nothing comparable, then split by what it hashed to.
    first = [n for g in small for n in _unknown_side(g)]
    planned = sum(n.facts.size for n in first)
    if on_plan is not None and first:
        on_plan(planned)
    hashed = _hash_all(first, readers, index, warnings, on_bytes, both=True)
    unreadable = {id(n) for n in first} - {id(n) for n in hashed}
    for g in small:
        readable = [n for n in g if id(n) not in unreadable] if unreadable else g
        if len(readable) > 1:
            # Every member now has a key of one algorithm (claimed, or hashed just now).
            settled.extend(_split_by_keys(readable) or [])
    # Every file left in a group of two or more is read: identity is only ever proven by bytes. Those
    # not hashed yet are read together, one hashed and the others compared with it byte for byte.
    rest = [unknown for sub in settled if (unknown := [n for n in sub if n.digest is None])]
    if on_plan is not None:
        on_plan(planned + sum(n.facts.size for unknown in rest for n in unknown))
    return hashed + _hash_alike(rest, readers, index, warnings, on_bytes)


def _split_by_fingerprint(
    groups: list[list[_Inode]], readers: Readers[_Inode], warnings: list[Warning_]
) -> list[list[_Inode]]:
    """Split same-size groups by the first and last block of each member, read in parallel."""
    nodes = [n for g in groups for n in g]
    prints = {id(node): fp for node, fp in readers.fingerprints(nodes)} if nodes else {}
    out: list[list[_Inode]] = []
    for g in groups:
        by_print: dict[bytes, list[_Inode]] = defaultdict(list)
        for node in g:
            fp = prints[id(node)]
            if isinstance(fp, OSError):
                warnings.append(Warning_(display(node.path), f"cannot read: {reason(fp)}"))
            else:
                by_print[fp].append(node)
        out.extend(sub for sub in by_print.values() if len(sub) > 1 and any(n.digest is None for n in sub))
    return out


def _hash_all(
    nodes: list[_Inode],
    readers: Readers[_Inode],
    index: DigestIndex | None,
    warnings: list[Warning_],
    on_bytes: Callable[[int], None] | None,
    *,
    both: bool,
) -> list[_Inode]:
    """Hash `nodes` (sha256, and the git blob sha1 when `both` or a claim needs it to be checked)."""
    if not nodes:
        return []
    wants_git = _wants_both if both else _wants_git
    return [node for node, result in readers.hash(nodes, wants_git, on_bytes) if _take(node, result, index, warnings)]


def _hash_alike(
    groups: list[list[_Inode]],
    readers: Readers[_Inode],
    index: DigestIndex | None,
    warnings: list[Warning_],
    on_bytes: Callable[[int], None] | None,
) -> list[_Inode]:
    """Hash each group of files whose claims agree: one file, the others compared with it as it is read.
    A file found different (or whose partner could not be read) is hashed alone after."""
    done: list[_Inode] = []
    alone: list[_Inode] = []
    for nodes, outcomes in readers.hash_alike(groups, _wants_git, on_bytes):
        for node, result in zip(nodes, outcomes, strict=True):
            if result is None:
                alone.append(node)
            elif _take(node, result, index, warnings):
                done.append(node)
    return done + _hash_all(alone, readers, index, warnings, on_bytes, both=False)


def _take(node: _Inode, result: HashResult | OSError, index: DigestIndex | None, warnings: list[Warning_]) -> bool:
    """Keep what reading `node` found (its digests, in the index too), or warn why it could not be read;
    a claim its bytes do not match is a warning."""
    if isinstance(result, OSError):
        warnings.append(Warning_(display(node.path), f"cannot read: {reason(result)}"))
        return False
    node.digest = Digest("sha256", result.sha256)
    node.gitsha1 = result.gitsha1
    if index is not None:
        index.record(node.facts, result.sha256)
    for claim in node.claims:
        if not result.matches(claim):
            warnings.append(Warning_(display(node.path), f"content does not match its claimed digest {claim}"))
    return True


def _wants_both(node: _Inode) -> bool:
    return True


def _wants_git(node: _Inode) -> bool:
    """Whether `node` must be hashed with the git blob sha1 too: a claim of one is to be checked."""
    return node.record.claimed_hex("gitsha1") is not None or _git_claimed(node)


def _git_claimed(node: _Inode) -> bool:
    return node.others is not None and any(c.algorithm == "gitsha1" for c in node.claims)


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
    records = tuple(r for m in sorted(members, key=lambda m: m.path) for r in sorted(m.records, key=_path))
    return DuplicateGroup(digest, members[0].facts.size, records, len(members), proven)


def _path_then_message(w: Warning_) -> tuple[str, str]:
    return (w.path, w.message)


def _record(node: _Inode) -> FileRecord:
    return node.record


def _path(record: FileRecord) -> str:
    return record.path


def _sorted(groups: list[DuplicateGroup]) -> list[DuplicateGroup]:
    # No two groups share a path, so their first paths decide what their lists of paths would.
    return sorted(groups, key=lambda g: (-g.reclaimable_bytes, -g.size, g.records[0].path))

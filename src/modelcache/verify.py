"""`verify`: hash files against the digests their names and metadata claim. Reads only.

Claims checked: an HF cache blob's name (sha256 for LFS files, git blob sha1 for small
files), a no-symlink snapshot copy's entry in `trees/<commit>.json`, a local_dir file's etag
(while its metadata is fresh). Files with no claim (plain folders) cannot be verified and
are counted apart. A file whose fresh sha256 differs from the digest index entry for the
same inode, size and mtime changed on disk without its mtime changing: bit rot, or a write
that bypassed the file system's clock.

A corrupt file that shares its inode with paths outside its own repo (hard links among the
scanned roots, e.g. a local_dir copy that `consolidate --mode hardlink` linked to a blob), or
that symlinks from elsewhere lead to, is reported with those paths: a tool that wrote new bytes
in place through one of them (huggingface_hub's local_dir update and `cp` both do) changed the
blob too. `verify --repair` gives such a file an inode of its own again (`act/repair.py`), and
the other paths keep the bytes their tool wrote.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from .common import display, reason
from .digests import DigestIndex, HashResult, hash_file
from .errors import InputError
from .inventory import Digest, FileRecord, Inventory, Role, Warning_, inode_key, still_names
from .store_kind import StoreKind


@dataclass(frozen=True, slots=True)
class Verdict:
    record: FileRecord
    ok: bool
    actual_sha256: str
    bit_rot: bool  # the index knew other bytes for this very inode, size and mtime
    linked_from: tuple[str, ...]  # snapshot entries that lead to this file
    # Other paths, outside this file's own repo folder, that share its inode (hard links among the
    # scanned roots) or are symlinks that lead to it: a write in place through any of them changes
    # this file's bytes too.
    hard_links: tuple[str, ...] = ()
    symlinks: tuple[str, ...] = ()

    @property
    def claim(self) -> str:
        return str(self.record.claimed)

    @property
    def symlinks_keep_bytes(self) -> bool:
        """Whether `--repair` first makes the symlinks that lead here files of their own holding these
        bytes: when they were written (a tool wrote through a link, and these are the only copy), not
        when they rotted in place (then the links are meant to follow the repaired file)."""
        return bool(self.symlinks) and not self.bit_rot


@dataclass(frozen=True)
class VerifyResult:
    verdicts: tuple[Verdict, ...]
    unverifiable: int  # files with no claim to check against
    bytes_read: int
    warnings: tuple[Warning_, ...]

    @property
    def corrupt(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if not v.ok)


def select(inventory: Inventory, repos: Sequence[str], everything: bool) -> list[FileRecord]:
    """Model files of the named repos (by id, as `list` shows them), or of every repo with `everything`."""
    if not repos and not everything:
        raise InputError("name the repos to verify (as `modelcache list` shows them), or use --all")
    wanted = {r.key for r in inventory.repos if everything or r.repo_id in repos}
    unknown = sorted(set(repos) - {r.repo_id for r in inventory.repos})
    if unknown:
        raise InputError(f"not found in the scanned stores: {', '.join(unknown)}")
    # Shared-store files belong to the repos whose blobs link to them.
    by_target = {link.target for link in inventory.links}
    return [
        r
        for r in inventory.records
        if r.role is Role.MODEL and (r.repo_key in wanted or (everything and r.path in by_target))
    ]


def verify(
    inventory: Inventory,
    records: Sequence[FileRecord],
    index: DigestIndex | None,
    *,
    workers: int | None = None,
    on_plan: Callable[[int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> VerifyResult:
    """Hash every record that carries a claim and compare. Records the digests in the index; the
    verdicts are the caller's to record (`record_verdicts`), after a repair if there is one."""
    claimed = [r for r in records if r.claimed is not None]
    unverifiable = len(records) - len(claimed)
    linked: dict[str, list[str]] = {}
    for link in inventory.links:
        linked.setdefault(link.target, []).append(link.path)
    if index is not None:
        index.load(claimed)
    if on_plan is not None:
        on_plan(sum(r.facts.size for r in claimed))

    def work(record: FileRecord) -> HashResult | OSError:
        wants_git = record.claimed is not None and record.claimed.algorithm == "gitsha1"
        try:
            return hash_file(record.path, record.facts.size, gitsha1=wants_git, on_bytes=on_bytes)
        except OSError as e:
            return e

    verdicts: list[Verdict] = []
    warnings: list[Warning_] = []
    read = 0
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for record, result in zip(claimed, pool.map(work, claimed), strict=True):
            if isinstance(result, OSError):
                warnings.append(Warning_(display(record.path), f"cannot read: {reason(result)}"))
                continue
            read += record.facts.size
            assert record.claimed is not None
            ok = result.matches(record.claimed)
            known = index.lookup(record.facts) if index is not None else None
            bit_rot = known is not None and known.hexdigest != result.sha256
            verdicts.append(Verdict(record, ok, result.sha256, bit_rot, tuple(sorted(linked.get(record.path, [])))))
            if index is not None:
                index.record(record.facts, result.sha256)
    if index is not None:
        index.flush()
    return VerifyResult(_with_links(verdicts, inventory), unverifiable, read, tuple(warnings))


def _with_links(verdicts: list[Verdict], inventory: Inventory) -> tuple[Verdict, ...]:
    """The verdicts, each corrupt one with the paths outside its repo that share its inode or are
    symlinks that lead to it.

    Only when something is corrupt: one pass over the records (the inventory knows every record's
    (dev, ino), and a file of one link has no other name to find), and one walk of the roots for
    symlinks (the readers record none outside the HF cache's snapshots).
    """
    corrupt = [v for v in verdicts if not v.ok]
    if not corrupt:
        return tuple(verdicts)
    wanted = {inode_key(v.record) for v in corrupt if v.record.nlink > 1}
    names: dict[bytes, list[FileRecord]] = {}
    for record in inventory.records if wanted else ():
        key = inode_key(record)
        if key in wanted:
            names.setdefault(key, []).append(record)
    symlinks = _symlinks_to({os.path.realpath(v.record.path) for v in corrupt}, inventory)
    out = []
    for v in verdicts:
        if v.ok:
            out.append(v)
            continue
        own = v.record.repo_key.rstrip(os.sep) + os.sep
        hard = sorted(r.path for r in names.get(inode_key(v.record), []) if r.repo_key != v.record.repo_key)
        soft = sorted(p for p in symlinks.get(os.path.realpath(v.record.path), ()) if not p.startswith(own))
        out.append(replace(v, hard_links=tuple(hard), symlinks=tuple(soft)))
    return tuple(out)


def _symlinks_to(targets: Collection[str], inventory: Inventory) -> dict[str, set[str]]:
    """Symlinks under the scanned roots, outside the HF cache repos (whose snapshot links the inventory
    holds), that lead to one of `targets` (real paths): real path -> the symlinks. Reads only; never
    follows a folder symlink."""
    skip = {layout.repo_dir for layout in inventory.layouts}
    found: dict[str, set[str]] = {}
    folders = [root for root in inventory.roots if os.path.isdir(root)]
    seen: set[str] = set()
    while folders:
        folder = folders.pop()
        if folder in skip or folder in seen:
            continue
        seen.add(folder)
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue  # the scan warned about it already
        for entry in entries:
            if entry.is_symlink():
                real = os.path.realpath(entry.path)
                if real in targets:
                    found.setdefault(real, set()).add(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                folders.append(entry.path)
    return found


def record_verdicts(index: DigestIndex, result: VerifyResult, repaired: Collection[str] = ()) -> None:
    """Remember, per inode, whether `verify` found it corrupt (`list` shows "corrupt" for it).

    An inode is corrupt while any of its checked names fails its claim: a blob that a local copy's
    write changed shares its inode with that copy, which matches its own claim. A path in
    `repaired` (a repair tried it) that names another inode now, or nothing, no longer counts for
    its old inode: that inode's verdict is the one of the names still on it.
    """
    by_inode: dict[bytes, tuple[FileRecord, str | None]] = {}
    for v in result.verdicts:
        key = inode_key(v.record)
        if v.record.path in repaired and not still_names(v.record):
            by_inode.setdefault(key, (v.record, None))
        elif not v.ok or key not in by_inode:
            by_inode[key] = (v.record, None if v.ok else v.claim)
    for record, corrupt_claim in by_inode.values():
        index.set_verdict(record.facts, corrupt_claim)


@dataclass(frozen=True, slots=True)
class Redownload:
    """What `verify --repair` downloads again for one corrupt file, and what it must then hold."""

    path: str
    repo_type: str
    repo_id: str
    revision: str
    filename: str
    local_dir: str | None  # a local_dir download's folder; None: into the HF cache
    claim: Digest  # the digest its bytes must have once downloaded again
    hard_links: tuple[str, ...]  # the paths outside its repo that shared its inode (they keep it)
    # A snapshot copy of a no-symlink cache: the blob the download writes, whose bytes then replace
    # the copy (huggingface_hub leaves an existing snapshot file as it is, even with force_download).
    blob: str | None = None
    # Symlinks elsewhere that lead to the file. When its bytes were written (not rotted in place),
    # they are the bytes a tool wrote through such a link, and their only copy: each link first
    # becomes a file of its own holding them (`keep_sha256`, their digest), then the download
    # replaces the file. None: the links follow the repaired file.
    symlinks: tuple[str, ...] = ()
    keep_sha256: str | None = None


def repairable(verdict: Verdict, inventory: Inventory) -> Redownload | None:
    """How to download a corrupt file again, if known."""
    record = verdict.record
    assert record.claimed is not None  # a verdict is only given against a claim
    repos = {r.key: r for r in inventory.repos}
    repo = repos.get(record.repo_key)
    if record.store is StoreKind.LOCAL_DIR and repo is not None and repo.origin and record.revision:
        return _redownload(verdict, repo.repo_type, repo.repo_id, record.revision, record.relpath, local_dir=repo.path)
    if record.store is not StoreKind.HF_CACHE:
        return None
    entries = {e.path: (layout, e) for layout in inventory.layouts for e in layout.snapshot_links}
    for link_path in verdict.linked_from:
        if link_path in entries:
            owner, entry = entries[link_path]
            return _redownload(verdict, owner.repo_type, owner.repo_id, entry.commit, entry.relpath)
    in_repo = next((layout for layout in inventory.layouts if layout.repo_dir == record.repo_key), None)
    if in_repo is not None and not record.relpath.startswith("blobs/"):
        # a no-symlink snapshot copy: <repo>/snapshots/<commit>/<relpath>, replaced by the blob downloaded
        commit = os.path.relpath(record.path, os.path.join(in_repo.repo_dir, "snapshots")).split(os.sep)[0]
        blob = os.path.join(in_repo.repo_dir, "blobs", record.claimed.hexdigest)
        return _redownload(verdict, in_repo.repo_type, in_repo.repo_id, commit, record.relpath, blob=blob)
    return None


def _redownload(
    verdict: Verdict,
    repo_type: str,
    repo_id: str,
    revision: str,
    filename: str,
    *,
    local_dir: str | None = None,
    blob: str | None = None,
) -> Redownload:
    record = verdict.record
    assert record.claimed is not None
    keep = verdict.actual_sha256 if verdict.symlinks_keep_bytes else None
    return Redownload(
        record.path,
        repo_type,
        repo_id,
        revision,
        filename,
        local_dir,
        record.claimed,
        verdict.hard_links,
        blob,
        verdict.symlinks,
        keep,
    )

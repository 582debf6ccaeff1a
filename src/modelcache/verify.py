"""`verify`: hash files against the digests their names and metadata claim. Reads only.

Claims checked: an HF cache blob's name (sha256 for LFS files, git blob sha1 for small
files), a no-symlink snapshot copy's entry in `trees/<commit>.json`, a local_dir file's etag
(while its metadata is fresh). Files with no claim (plain folders) cannot be verified and
are counted apart. A file whose fresh sha256 differs from the digest index entry for the
same inode, size and mtime changed on disk without its mtime changing: bit rot, or a write
that bypassed the file system's clock.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .common import display, reason
from .digests import DigestIndex, HashResult, hash_file
from .errors import InputError
from .inventory import FileRecord, Inventory, Role, Warning_
from .store_kind import StoreKind


@dataclass(frozen=True, slots=True)
class Verdict:
    record: FileRecord
    ok: bool
    actual_sha256: str
    bit_rot: bool  # the index knew other bytes for this very inode, size and mtime
    linked_from: tuple[str, ...]  # snapshot entries that lead to this file

    @property
    def claim(self) -> str:
        return str(self.record.claimed)


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
    """Hash every record that carries a claim and compare. Updates the digest index and its verdicts."""
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
            actual = result.sha256 if record.claimed.algorithm == "sha256" else result.gitsha1
            ok = actual == record.claimed.hexdigest
            known = index.lookup(record.facts) if index is not None else None
            bit_rot = known is not None and known.hexdigest != result.sha256
            verdicts.append(Verdict(record, ok, result.sha256, bit_rot, tuple(sorted(linked.get(record.path, [])))))
            if index is not None:
                index.record(record.facts, result.sha256)
                index.set_verdict(record.facts, None if ok else str(record.claimed))
    if index is not None:
        index.flush()
    return VerifyResult(tuple(verdicts), unverifiable, read, tuple(warnings))


def repairable(verdict: Verdict, inventory: Inventory) -> tuple[str, str, str, str, str | None] | None:
    """(repo_type, repo_id, revision, filename, local_dir) to download a corrupt file again, if known."""
    record = verdict.record
    repos = {r.key: r for r in inventory.repos}
    repo = repos.get(record.repo_key)
    if record.store is StoreKind.LOCAL_DIR and repo is not None and repo.origin and record.revision:
        return (repo.repo_type, repo.repo_id, record.revision, record.relpath, repo.path)
    if record.store is StoreKind.HF_CACHE:
        entries = {e.path: (layout, e) for layout in inventory.layouts for e in layout.snapshot_links}
        for link_path in verdict.linked_from:
            if link_path in entries:
                owner, entry = entries[link_path]
                return (owner.repo_type, owner.repo_id, entry.commit, entry.relpath, None)
        in_repo = next((layout for layout in inventory.layouts if layout.repo_dir == record.repo_key), None)
        if in_repo is not None and not record.relpath.startswith("blobs/"):
            # a no-symlink snapshot copy: <repo>/snapshots/<commit>/<relpath>
            commit = os.path.relpath(record.path, os.path.join(in_repo.repo_dir, "snapshots")).split(os.sep)[0]
            return (in_repo.repo_type, in_repo.repo_id, commit, record.relpath, None)
    return None

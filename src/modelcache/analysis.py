"""`analyze`: where the model storage goes and how much of it is a second copy.

Pure: takes an `Inventory` and the duplicate groups, returns frozen values that
`report.py` renders as text or JSON (`report_format.py` the parts every output shares).

Definitions (docs/json.md repeats them):

- a byte count is the sum of `st_size` over distinct inodes (hard links once, symlinks zero);
- each inode is counted in the first store (by rank: `StoreKind`) that holds it: the HF cache first,
  then the other tools' stores, local_dir, plain, huggingface_hub's Xet cache;
- duplicate bytes: for each group of identical content, (distinct inodes - 1) x size.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from .duplicates import DuplicateGroup, DuplicateResult
from .inventory import FileRecord, Inventory, Repo, Role, Warning_, distinct_inode_bytes, inode_key
from .store_kind import StoreKind


@dataclass(frozen=True, slots=True)
class RepoRow:
    repo: Repo
    size_bytes: int
    duplicated_bytes: int  # bytes of this repo whose content also lies in another inode


@dataclass(frozen=True)
class Analysis:
    roots: tuple[str, ...]
    hf_cache_bytes: int
    local_dir_bytes: int
    plain_bytes: int
    duplicate_bytes: int
    total_bytes: int
    metadata_bytes: int
    incomplete_bytes: int
    repos: tuple[RepoRow, ...]
    duplicates: tuple[DuplicateGroup, ...]
    store_bytes: dict[StoreKind, int]  # per store, each inode once (in the first store holding it)
    cross_store_bytes: dict[StoreKind, int]  # of which content that another store holds too
    warnings: tuple[Warning_, ...]
    fast: bool
    bytes_hashed: int
    files_hashed: int

    @property
    def local_bytes(self) -> int:
        return self.local_dir_bytes + self.plain_bytes


def analyze(
    inventory: Inventory, result: DuplicateResult, fast: bool = False, notes: tuple[Warning_, ...] = ()
) -> Analysis:
    """Summarise an inventory and its duplicate groups; `notes` are extra warnings to report."""
    # The totals first: each makes (and drops) a dict of inodes, better not beside the maps below.
    per_store = inventory.store_bytes()
    total_bytes = inventory.total_bytes()
    metadata_bytes = inventory.role_bytes(Role.METADATA)
    incomplete_bytes = inventory.role_bytes(Role.INCOMPLETE)
    duplicated_inodes: dict[bytes, int] = {}
    for group in result.groups:
        for r in group.records:
            duplicated_inodes[inode_key(r)] = group.size

    by_repo = defaultdict(list)
    for record in inventory.records:
        by_repo[record.repo_key].append(record)
    rows = []
    for repo in inventory.repos:
        records = by_repo.get(repo.key, [])
        inodes = {inode_key(r) for r in records}
        rows.append(
            RepoRow(
                repo,
                distinct_inode_bytes(records),
                sum(duplicated_inodes.get(i, 0) for i in inodes),
            )
        )
    rows.sort(key=lambda row: (row.repo.store.rank, -row.size_bytes, row.repo.path))
    cross: dict[StoreKind, int] = {kind: 0 for kind in StoreKind}
    for group in result.groups:
        stores_here = {r.store for r in group.records}
        if len(stores_here) > 1:
            owners = {inode_key(r): r.store for r in group.records}
            for store in owners.values():
                cross[store] += group.size
    return Analysis(
        roots=inventory.roots,
        hf_cache_bytes=per_store[StoreKind.HF_CACHE],
        local_dir_bytes=per_store[StoreKind.LOCAL_DIR],
        plain_bytes=per_store[StoreKind.PLAIN],
        duplicate_bytes=result.duplicate_bytes,
        total_bytes=total_bytes,
        metadata_bytes=metadata_bytes,
        incomplete_bytes=incomplete_bytes,
        repos=tuple(rows),
        duplicates=result.groups,
        store_bytes=per_store,
        cross_store_bytes=cross,
        warnings=inventory.warnings + result.warnings + notes,
        fast=fast,
        bytes_hashed=result.bytes_hashed,
        files_hashed=result.files_hashed,
    )


@dataclass(frozen=True, slots=True)
class ListRow:
    """One row of `list`; also a `selection.Selectable`, for `--filter`, `--sort` and `-q`."""

    repo: Repo
    size_bytes: int
    status: str  # the repo's status, or "corrupt" when `verify` found a file of it corrupt
    last_access_ns: int  # newest atime among its model files (else its files; 0 when it has none)
    last_modified_ns: int  # newest mtime, of the same files

    @property
    def id(self) -> str:
        """What `list -q` prints: what the store's own tool takes to name it (docs: README, list)."""
        repo = self.repo
        if repo.store is StoreKind.HF_CACHE and repo.repo_type in ("model", "dataset", "space"):
            return f"{repo.repo_type}/{repo.repo_id}"  # huggingface_hub's cache id: `hf cache ls -q`, `hf cache rm`
        if repo.store in (StoreKind.LOCAL_DIR, StoreKind.PLAIN) or repo.repo_type in ("store", "cache"):
            return repo.path  # the user's own folder, or a part of a store that no tool names: its path
        return repo.repo_id  # as its tool names it: `ollama rm llama3.2:latest`

    @property
    def name(self) -> str:
        """What `--sort name` orders by: `type/name`, as huggingface_hub's cache id (`model/org/x`)."""
        return f"{self.repo.repo_type}/{self.repo.repo_id}"

    @property
    def type(self) -> str:
        return self.repo.repo_type

    @property
    def store(self) -> str:
        return self.repo.store.value

    @property
    def accessed(self) -> float | None:
        return self.last_access_ns / 1e9 if self.last_access_ns else None

    @property
    def modified(self) -> float | None:
        return self.last_modified_ns / 1e9 if self.last_modified_ns else None


def list_rows(inventory: Inventory, corrupt: set[tuple[int, int, int, int]]) -> list[ListRow]:
    """`list`: one row per repo, local_dir download and plain folder, from what is on disk alone."""
    by_repo: dict[str, list[FileRecord]] = defaultdict(list)
    for record in inventory.records:
        by_repo[record.repo_key].append(record)
    rows = []
    for repo in inventory.repos:
        records = by_repo.get(repo.key, [])
        bad = bool(corrupt) and any((r.dev, r.ino, r.size, r.mtime_ns) in corrupt for r in records)
        # Last used: the model files' times, as `hf cache ls` takes its blobs'. huggingface_hub's
        # metadata does not count: `hf cache ls` itself reads every `refs/` file (a new atime).
        timed = [r for r in records if r.role is Role.MODEL] or records
        rows.append(
            ListRow(
                repo,
                distinct_inode_bytes(records),
                "corrupt" if bad else repo.status.value,
                max((r.facts.atime_ns for r in timed), default=0),
                max((r.mtime_ns for r in timed), default=0),
            )
        )
    rows.sort(key=lambda row: (row.repo.repo_type == "folder", row.repo.repo_id, row.repo.store.value))
    return rows

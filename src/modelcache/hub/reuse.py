"""Reuse for a download, the finding half: which files on this machine may hold the bytes of a wanted blob.

Looked in: the HF cache (other repos' blobs), the model folders (local_dir copies, plain folders),
and every other tool's store found where it keeps it (an Ollama blob or an LM Studio GGUF is the
same bytes as the Hub's file). A candidate has the wanted size and no claim against the wanted
digest; whether it really holds those bytes is proven when it is placed (`act.place`), never here.

Read-only: imports the finding side (`scan`, `locations`, `inventory`, `digests`) and `hub.remote`;
never `act`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..digests import DigestIndex
from ..inventory import FileRecord, Inventory, Role
from ..locations import Location, store_locations
from ..scan import scan_locations
from ..store_kind import StoreKind
from .remote import RemoteFile


@dataclass(frozen=True, slots=True)
class Reused:
    """A file of the download whose bytes came from this machine instead of the network."""

    path: str  # in the repo
    size: int
    source: str  # the file the bytes came from
    method: str  # reflink | hardlink | copy
    blob: str  # where it now lies in the cache


@dataclass(frozen=True, slots=True)
class Candidate:
    """A file that may hold a wanted blob's bytes."""

    record: FileRecord
    likely: bool  # a claim (blob name, etag, digest index) says these are the bytes


def scan_for_reuse(cache: str, models: Sequence[Location]) -> Inventory:
    """Every file a download may take bytes from: the cache, the model folders and the other tools' stores."""
    return scan_locations(Location(cache, "cache"), models, store_locations(None, discover=True))


def find_reuse_candidates(
    wanted: Sequence[RemoteFile],
    inventory: Inventory,
    index: DigestIndex | None,
    device: int | None,
) -> dict[str, list[Candidate]]:
    """Per etag, the files on this machine that may hold its bytes, most promising first. Read-only.

    Same size, regular model files, one per inode; those whose claims or known digest
    contradict the wanted digest are left out. Claimed matches come first, then files on the
    cache's device (they can be linked), then files in the HF cache.
    """
    sizes = {f.size for f in wanted if f.size > 0}
    by_size: dict[int, dict[tuple[int, int], FileRecord]] = {}
    for r in inventory.records:
        if r.role is Role.MODEL and r.facts.size in sizes:
            inodes = by_size.setdefault(r.facts.size, {})
            if r.facts.inode not in inodes or (inodes[r.facts.inode].claimed is None and r.claimed is not None):
                inodes[r.facts.inode] = r
    if index is not None:
        index.load(r for inodes in by_size.values() for r in inodes.values())
    found: dict[str, list[Candidate]] = {}
    for f in wanted:
        candidates = []
        for record in by_size.get(f.size, {}).values():
            claims = [record.claimed] if record.claimed is not None else []
            known = index.lookup(record.facts) if index is not None else None
            if known is not None:
                claims.append(known)
            if any(c.algorithm == f.digest.algorithm and c != f.digest for c in claims):
                continue
            candidates.append(Candidate(record, f.digest in claims))
        candidates.sort(
            key=lambda c: (
                not c.likely,
                c.record.facts.dev != device,
                c.record.store is not StoreKind.HF_CACHE,
                c.record.path,
            )
        )
        if candidates:
            found[f.etag] = candidates
    return found

"""`consolidate --adopt`: which local_dir files the HF cache lacks become its blobs, and how. Pure.

A local_dir file whose metadata names an etag and a commit the cache knows, and whose bytes the cache
does not hold, is adopted: moved into the cache as the blob, with its snapshot link (`act.adopt`). How
follows the rule for a hard link between a local_dir copy and a blob (`aliases.py`): a reflink where
the file system has them; else a hard link made read-only where that stops the user's next steps, or
where `--mode hardlink` asks for it (with its risk); else the file is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace

from .aliases import Writer, hardlink_risk, read_only_note
from .duplicates import DuplicateGroup
from .inventory import Inventory, Role
from .modes import Mode
from .plan import REFLINK_FILESYSTEMS, Action, Adoption, FileState
from .store_kind import StoreKind


def adoptions(
    inventory: Inventory,
    groups: Sequence[DuplicateGroup],
    mode: Mode,
    fs_types: Mapping[int, str],
    writer: Writer,
) -> list[Action]:
    """`--adopt`: local_dir files whose bytes the HF cache lacks become its blobs (no download).

    Only files whose metadata is fresh (so their etag and commit are claims worth checking)
    and whose commit the cache knows (huggingface_hub wrote `refs/` for the download) qualify.
    How each is adopted follows the rule for a hard link between a local_dir copy and a blob
    (`_adoption_methods`).
    """
    cache_covered: set[str] = set()  # copies of content the cache has: linked, not adopted
    for g in groups:
        if any(r.store is StoreKind.HF_CACHE for r in g.records):
            cache_covered.update(g.paths)
    repos = {r.key: r for r in inventory.repos}
    existing = {r.path for r in inventory.records} | {link.path for link in inventory.links}
    ref_files = {r.path for r in inventory.records if r.role is Role.METADATA}  # refs, trees: metadata
    cache_device = {r.repo_key: r.facts.dev for r in inventory.records if r.store is StoreKind.HF_CACHE}
    actions: list[Action] = []
    seen_blobs: set[str] = set()
    for record in sorted(inventory.records, key=lambda r: r.path):
        repo = repos.get(record.repo_key)
        if (
            record.store is not StoreKind.LOCAL_DIR
            or record.role is not Role.MODEL
            or record.claimed is None
            or record.revision is None
            or repo is None
            or repo.origin is None
            or record.path in cache_covered
        ):
            continue
        origin = repo.origin
        blob = os.path.join(origin, "blobs", record.claimed.hexdigest)
        if blob in existing or blob in seen_blobs:
            continue
        seen_blobs.add(blob)
        snapshot = os.path.join(origin, "snapshots", record.revision, *record.relpath.split("/"))
        ref = os.path.join(origin, "refs", "main")
        tree = os.path.join(origin, "trees", record.revision + ".json")
        tree_source = os.path.join(repo.path, ".cache", "huggingface", "trees", record.revision + ".json")
        adoption = Adoption(
            etag=record.claimed.hexdigest,
            commit=record.revision,
            blob=blob,
            snapshot=snapshot,
            link_text=os.path.relpath(blob, os.path.dirname(snapshot)),
            ref=None if ref in ref_files else ref,
            tree=None if tree in ref_files or tree_source not in ref_files else tree,
            tree_source=tree_source if tree_source in ref_files else None,
        )
        state = FileState.of(record)
        base = Action(
            id=len(actions) + 1,
            kind="adopt",
            methods=(),
            target=state,
            keep=state,
            digest=record.claimed.hexdigest,
            keep_reason="adopted into the HF cache",
            adopt=adoption,
        )
        fs = fs_types.get(record.facts.dev, "unknown")
        actions.append(_adoption(base, mode, fs, cache_device.get(origin, record.facts.dev), writer))
    return actions


def _adoption(base: Action, mode: Mode, fs: str, cache_device: int, writer: Writer) -> Action:
    """How one local_dir file is adopted: cloned in as the blob where the file system can (its own inode),
    else hard-linked (one inode, made read-only), where no next step writes through that link for `writer`
    or `--mode hardlink` asks for it (with its risk); else not at all (left alone, or skipped)."""
    not_adopted = replace(base, adopt=None)
    if base.target.dev != cache_device:
        return replace(not_adopted, kind="skip", reason="on another file system than the HF cache: adopting links it")
    can_reflink = fs in REFLINK_FILESYSTEMS
    risk = hardlink_risk([StoreKind.LOCAL_DIR], StoreKind.HF_CACHE, writer)
    note = read_only_note([StoreKind.LOCAL_DIR]) if risk is None else None
    if mode is Mode.REFLINK:
        if not can_reflink:
            return replace(
                not_adopted, kind="skip", reason=f"{fs} does not support reflinks", alternatives=(Mode.HARDLINK.value,)
            )
        return replace(base, methods=("reflink",))
    if mode is Mode.HARDLINK:
        return replace(base, methods=("hardlink",), warnings=(note,) if note else (), risks=(risk,) if risk else ())
    if risk is None:
        methods = ("reflink", "hardlink") if can_reflink else ("hardlink",)
        return replace(base, methods=methods, warnings=(note,) if note and not can_reflink else ())
    why = f"not adopted: adopting makes no link that a next step writes through: {risk}"
    if can_reflink:  # the clone is an inode of its own: nothing writes through it
        return replace(base, methods=("reflink",), reason=f"if {fs} refuses the reflink, {why}")
    return replace(
        not_adopted,
        kind="leave",
        reason=f"{why}; --mode hardlink --adopt would adopt it with that risk",
        alternatives=(Mode.HARDLINK.value,),
    )

"""Adoption (`consolidate --adopt`): a local_dir file becomes the HF cache's blob, with its snapshot link.

The local file is hashed against the etag its metadata claims, then hard-linked in as the blob
(same inode, same mtime) under huggingface_hub's lock on that blob; the snapshot symlink, a ref and
the commit's file list follow where the cache lacks them. Any failure takes out again what was put
in (`recover.roll_back_adoption`); the local file itself is never touched.

Imports `fsops`, `runs`, `guards`, `recover`, `locks` and the finding side's types.
"""

from __future__ import annotations

import os

from .. import locks
from ..common import FILE_LIST_CAP, read_capped
from ..digests import hash_file
from ..plan import Action
from . import fsops, runs
from .guards import check, holding, same_file
from .journal import Journal
from .recover import roll_back_adoption
from .results import OnBytes, Outcome, Skip


def _verify_etag(action: Action, on_bytes: OnBytes) -> int:
    """Hash the local file and compare with the etag its metadata claims (sha256 or git blob sha1)."""
    size = action.target.size
    try:
        digests = hash_file(action.target.path, size, gitsha1=True, on_bytes=on_bytes)
    except OSError as e:
        raise Skip(f"cannot read: {e.strerror or e}") from None
    if action.digest not in (digests.sha256, digests.gitsha1):
        raise Skip(f"bytes do not match the etag {action.digest[:12]} in its metadata: corrupted? not adopted")
    return size


def adopt(action: Action, journal: Journal, on_bytes: OnBytes) -> tuple[Outcome, int]:
    """Make a local_dir file the cache's blob (a hard link: same inode, same mtime), with its snapshot link."""
    adoption = action.adopt
    assert adoption is not None
    target_st = check(action.target, "this")
    read = _verify_etag(action, on_bytes)
    target_st = check(action.target, "this")
    if os.path.lexists(adoption.blob):
        raise Skip("the HF cache holds this blob now")
    lock = locks.blob_lock_of(adoption.blob)
    fsops.make_dirs(os.path.dirname(lock))
    with holding(lock, "this blob is being downloaded", create=True):
        tmp = fsops.temp_name(adoption.snapshot, journal.run_id)
        ref_tmp = fsops.temp_name(adoption.ref, journal.run_id) if adoption.ref else None
        runs.begin_change(
            journal,
            action,
            "adopt",
            target_st,
            keep_ino=target_st.st_ino,
            blob=adoption.blob,
            snapshot=adoption.snapshot,
            link_text=adoption.link_text,
            snapshot_existed=os.path.lexists(adoption.snapshot),
            ref=adoption.ref,
            ref_existed=bool(adoption.ref and os.path.lexists(adoption.ref)),
            tree=adoption.tree,
            tree_existed=bool(adoption.tree and os.path.lexists(adoption.tree)),
            tree_tmp=fsops.temp_name(adoption.tree, journal.run_id) if adoption.tree else None,
            commit=adoption.commit,
            tmp=tmp,
            ref_tmp=ref_tmp,
        )
        try:
            fsops.make_dirs(os.path.dirname(adoption.blob))
            fsops.hardlink(action.target.path, adoption.blob)  # never overwrites: EEXIST if it appeared
            if not same_file(os.lstat(adoption.blob), target_st):  # replaced since its etag was checked
                fsops.remove(adoption.blob)
                raise Skip("this copy changed while it was being adopted")
            if not os.path.lexists(adoption.snapshot):
                fsops.make_dirs(os.path.dirname(adoption.snapshot))
                fsops.symlink(adoption.link_text, tmp)
                fsops.replace(tmp, adoption.snapshot)
            if adoption.ref and ref_tmp and not os.path.lexists(adoption.ref):
                fsops.make_dirs(os.path.dirname(adoption.ref))
                fsops.write_new(ref_tmp, adoption.commit.encode())
                fsops.replace(ref_tmp, adoption.ref)
            tree_tmp = journal.last_begin.get("tree_tmp")
            if adoption.tree and adoption.tree_source and tree_tmp and not os.path.lexists(adoption.tree):
                # The commit's file list lets huggingface_hub (and `list`) tell the snapshot is complete.
                listing = read_capped(adoption.tree_source, FILE_LIST_CAP)
                fsops.make_dirs(os.path.dirname(adoption.tree))
                fsops.write_new(tree_tmp, listing)
                fsops.replace(tree_tmp, adoption.tree)
        except BaseException as e:
            roll_back_adoption(journal.last_begin)
            journal.append({"type": "abandoned", "action": action.id, "reason": str(e)})
            raise
        journal.append({"type": "done", "action": action.id, "op": "adopt"})
    return Outcome(action.id, action.target.path, "done", "adopt"), read

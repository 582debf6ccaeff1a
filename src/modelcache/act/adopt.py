"""Adoption (`consolidate --adopt`): a local_dir file becomes the HF cache's blob, with its snapshot link.

The local file is hashed against the etag its metadata claims, then, under huggingface_hub's lock on
that blob, cloned in as the blob (a reflink: its own inode, sharing the blocks) or hard-linked in
(the same inode, then made read-only: huggingface_hub updates a local_dir file in place, and through
a hard link that write would land in the blob; the plan makes a hard link only for a user whom that
mode stops, or when asked with `--mode hardlink`). The snapshot symlink, a ref and the commit's file
list follow where the cache lacks them. Any failure takes out again what was put in
(`recover.roll_back_adoption`), mode included; the local file's bytes are never touched.

Imports `fsops`, `runs`, `guards`, `recover`, `locks` and the finding side's types.
"""

from __future__ import annotations

import os
import stat

from .. import locks
from ..common import FILE_LIST_CAP, read_capped
from ..digests import hash_file
from ..plan import Action, Adoption
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
    """Make a local_dir file the cache's blob by the first of the action's methods that works here."""
    adoption = action.adopt
    assert adoption is not None
    before = check(action.target, "this")
    read = _verify_etag(action, on_bytes)
    lock = locks.blob_lock_of(adoption.blob)
    fsops.make_dirs(os.path.dirname(lock))
    failures: list[str] = []
    with holding(lock, "this blob is being downloaded", create=True):
        for method in action.methods:
            if os.path.lexists(adoption.blob):
                raise Skip("the HF cache holds this blob now")
            try:
                _adopt_by(method, action, journal, before)
            except OSError as e:
                if method == "reflink" and e.errno in fsops.UNSUPPORTED:
                    failures.append(f"reflink: {e.strerror}")
                    continue
                raise
            return Outcome(action.id, action.target.path, "done", "adopt"), read
    if action.reason is not None:  # a reflink alone was planned: no hard link is safe here
        journal.append({"type": "left_alone", "action": action.id, "target": action.target.path})
        reason = f"{'; '.join(failures)}; {action.reason}"
        return Outcome(action.id, action.target.path, "left_alone", reason=reason), read
    raise Skip("; ".join(failures) or "no link method applies")


def _unchanged(action: Action, before: os.stat_result) -> os.stat_result:
    """The local file as hashed: same inode, size, mtime and ctime (any write since moves the ctime)."""
    now = check(action.target, "this")
    if (now.st_ino, now.st_size, now.st_mtime_ns, now.st_ctime_ns) != (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
        before.st_ctime_ns,
    ):
        raise Skip("this copy changed while it was being adopted")
    return now


def _adopt_by(method: str, action: Action, journal: Journal, before: os.stat_result) -> None:
    adoption = action.adopt
    assert adoption is not None
    target_st = _unchanged(action, before)
    mode = stat.S_IMODE(target_st.st_mode)
    protected = mode & ~0o222 if method == "hardlink" and mode & 0o222 else None
    blob_tmp = fsops.partial_name(adoption.blob) if method == "reflink" else None
    tmp = fsops.temp_name(adoption.snapshot, journal.run_id)
    ref_tmp = fsops.temp_name(adoption.ref, journal.run_id) if adoption.ref else None
    runs.begin_change(
        journal,
        action,
        "adopt",
        target_st,
        method=method,
        keep_ino=target_st.st_ino,
        keep_mode=mode,
        protected_mode=protected,
        blob=adoption.blob,
        blob_tmp=blob_tmp,
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
        if blob_tmp is not None:
            fsops.clone_new(action.target.path, blob_tmp, mode)
            _unchanged(action, before)  # so the clone holds the bytes that were hashed
            # Never overwrites: EEXIST if it appeared. Until its inode is journaled, `blob_tmp` (a second name
            # of the blob) is what tells recovery that the blob is this run's.
            fsops.hardlink(blob_tmp, adoption.blob)
            blob_ino = os.lstat(blob_tmp).st_ino
        else:
            fsops.hardlink(action.target.path, adoption.blob)  # never overwrites: EEXIST if it appeared
            if not same_file(os.lstat(adoption.blob), target_st):  # replaced since its etag was checked
                fsops.remove(adoption.blob)
                raise Skip("this copy changed while it was being adopted")
            if protected is not None:
                fsops.set_mode(adoption.blob, protected)
            blob_ino = target_st.st_ino
        journal.append({"type": "learned", "action": action.id, "facts": {"blob_ino": blob_ino}})
        if blob_tmp is not None:
            fsops.discard(blob_tmp)
        fsops.fsync_dir(os.path.dirname(adoption.blob))
        _link_snapshot(adoption, tmp, ref_tmp, journal.last_begin.get("tree_tmp"))
    except BaseException as e:
        roll_back_adoption(journal.last_begin)
        journal.append({"type": "abandoned", "action": action.id, "reason": str(e)})
        raise
    journal.append({"type": "done", "action": action.id, "op": "adopt"})


def _link_snapshot(adoption: Adoption, tmp: str, ref_tmp: str | None, tree_tmp: str | None) -> None:
    """The snapshot symlink to the blob, a ref and the commit's file list, where the cache lacks them."""
    if not os.path.lexists(adoption.snapshot):
        fsops.make_dirs(os.path.dirname(adoption.snapshot))
        fsops.symlink(adoption.link_text, tmp)
        fsops.replace(tmp, adoption.snapshot)
    if adoption.ref and ref_tmp and not os.path.lexists(adoption.ref):
        fsops.make_dirs(os.path.dirname(adoption.ref))
        fsops.write_new(ref_tmp, adoption.commit.encode())
        fsops.replace(ref_tmp, adoption.ref)
    if adoption.tree and adoption.tree_source and tree_tmp and not os.path.lexists(adoption.tree):
        # The commit's file list lets huggingface_hub (and `list`) tell the snapshot is complete.
        listing = read_capped(adoption.tree_source, FILE_LIST_CAP)
        fsops.make_dirs(os.path.dirname(adoption.tree))
        fsops.write_new(tree_tmp, listing)
        fsops.replace(tree_tmp, adoption.tree)

"""Downloading a file again through huggingface_hub: `clean --repair` (a snapshot's missing file) and
`verify --repair` (a corrupted file, replaced by huggingface_hub's own atomic rename).

huggingface_hub writes the file; this module journals each download (`begin`, then `done`, or
`abandoned` with the Hub's message) and turns a failure into one line (`hub.errors`). Imports
`runs`, `journal`, `hub.errors`, the digest hasher and the finding side's clean plan and verify
targets.

A corrupt file may share its inode with other paths (a local_dir copy that consolidate linked to
a blob, through which a tool then wrote new bytes in place). Those paths must keep the inode and
the bytes their tool put there, and the file must get an inode of its own. huggingface_hub 2.4
does exactly that, and never writes through the old inode (file_download.py): with
`force_download=True` into the cache, `_download_to_tmp_and_move` writes a new process-unique
`<blob>.<random>.incomplete` and `_chmod_and_move` renames it over the blob
(`_replace_no_matter_what`: `os.replace`, or on mounts that refuse it, a staged rename with the
old entry renamed aside and then unlinked); into a local_dir it unlinks the old file first. The
snapshot symlinks name the blob's path, so they lead to the new file. Every path stays readable
throughout (one rename), which unlinking the file ourselves first would not give.

So that a client that did otherwise could never pass for a repair, each download is checked
after it returns: `done` only when the path holds the bytes its claim names, in an inode none of
its former other names has, and those names still hold the inode and size and mtime they had.

A symlink from elsewhere that leads to the file (`--mode symlink`) has no inode to keep: the
bytes a tool wrote through it live only in the file's inode, which the download drops. Unless
they rotted in place (`Verdict.symlinks_keep_bytes`), each such link first becomes a file of its
own holding them (a copy, hashed as it is written, renamed over the link; journaled `keep`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import Any

from ..clean import Garbage
from ..common import display, reason
from ..digests import Hasher, hash_file
from ..hub.errors import download_errors, first_line
from ..inventory import Digest
from ..verify import Redownload
from . import fsops
from .journal import Journal
from .recover import settle
from .results import Outcome, RunResult, Skip
from .runs import exclusive, journaled


def _download(journal: Journal, i: int, op: str, **download: Any) -> str | None:
    """`hf_hub_download(**download)` for the open change `i`, closed `done` or `abandoned`; the reason
    it failed, or None when it was downloaded."""
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(**download)
    except download_errors() as e:
        journal.append({"type": "abandoned", "action": i, "reason": str(e)})
        return f"could not download it again: {first_line(e)}"
    journal.append({"type": "done", "action": i, "op": op})
    return None


def repair(i: int, item: Garbage, journal: Journal, cache_dir: str) -> None:
    """Download a snapshot's missing file again, through huggingface_hub (which relinks the snapshot)."""
    assert item.repair is not None
    repo_type, repo_id, commit, filename = item.repair
    journal.append({"type": "begin", "action": i, "op": "repair", "target": item.path})
    failed = _download(
        journal,
        i,
        "repair",
        repo_id=repo_id,
        filename=filename,
        revision=commit,
        repo_type=repo_type,
        cache_dir=cache_dir,
    )
    if failed is not None:
        raise Skip(failed)


def redownload(targets: Sequence[Redownload], cache_dir: str) -> RunResult:
    """Download corrupted files again through huggingface_hub, each into an inode of its own."""
    with exclusive() as recovered, journaled("verify-repair") as journal:
        outcomes = [_redownload(journal, i, target, cache_dir) for i, target in enumerate(targets, start=1)]
    return RunResult(journal.run_id, tuple(outcomes), 0, (), (), tuple(recovered))


def _identity(path: str) -> tuple[int, int, int, int] | None:
    """(dev, ino, size, mtime_ns) of the entry at `path` (not followed), or None when there is none."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _redownload(journal: Journal, i: int, target: Redownload, cache_dir: str) -> Outcome:
    path = target.path
    before = _identity(path)
    others = {link: _identity(link) for link in target.hard_links}
    new_blob = target.blob is not None and not os.path.lexists(target.blob)
    journal.append(
        {
            "type": "begin",
            "action": i,
            "op": "redownload",
            "target": path,
            # Recovery decides from the disk: a new inode at the path is a finished download.
            "target_ino": before[1] if before is not None else None,
            "hard_links": list(target.hard_links),
            "symlinks": list(target.symlinks),
        }
    )
    if target.keep_sha256 is not None:
        for k, link in enumerate(target.symlinks, start=1):
            kept = _keep_bytes(journal, f"keep:{i}:{k}", link, target)
            if kept is not None:
                journal.append({"type": "abandoned", "action": i, "reason": kept})
                return Outcome(i, path, "failed", reason=f"not downloaded again: {kept}")
    failed = _download(
        journal,
        i,
        "redownload",
        repo_id=target.repo_id,
        filename=target.filename,
        revision=target.revision,
        repo_type=target.repo_type,
        cache_dir=cache_dir,
        local_dir=target.local_dir,
        force_download=True,
    )
    if failed is not None:
        return Outcome(i, path, "failed", reason=failed)
    if new_blob and _still_wrong(target) is not None:
        failed = _move_blob_over(journal, i, target)
        if failed is not None:
            return Outcome(i, path, "failed", method="redownload", reason=failed)
    wrong = _still_wrong(target) or _still_shared(path, before, others)
    if wrong is not None:
        return Outcome(i, path, "failed", method="redownload", reason=wrong)
    return Outcome(i, path, "done", "redownload")


def _keep_bytes(journal: Journal, action: str, link: str, target: Redownload) -> str | None:
    """Make the symlink `link` a file of its own holding the bytes it reads now (the corrupt file's, which
    a tool wrote through it and which the download is about to drop), journaled as change `action`; why
    it could not be, or None. A link that no longer leads to the file is left as it is."""
    try:
        st = os.lstat(link)
        if not stat.S_ISLNK(st.st_mode) or os.path.realpath(link) != os.path.realpath(target.path):
            return None
        source = os.stat(target.path)
    except OSError:
        return None
    tmp = fsops.temp_name(link, journal.run_id)
    begin = {"type": "begin", "action": action, "op": "keep", "target": link, "target_ino": st.st_ino, "tmp": tmp}
    journal.append(begin | {"keep": target.path})
    assert target.keep_sha256 is not None  # bytes are kept only where verify hashed them
    hasher = Hasher(source.st_size)
    try:
        # Owner-writable: the tool that wrote through the link may update this file in place again.
        mode = stat.S_IMODE(source.st_mode) | stat.S_IWUSR
        owner = (st.st_uid, st.st_gid)
        fsops.copy_to(target.path, tmp, mode, source.st_atime_ns, source.st_mtime_ns, owner, hasher.update)
        if not hasher.matches(Digest("sha256", target.keep_sha256)):
            fsops.discard(tmp)
            journal.append({"type": "abandoned", "action": action, "reason": "changed since it was verified"})
            return f"{display(target.path)} changed since it was verified"
        fsops.replace(tmp, link)
    except OSError as e:
        if not settle(begin, journal):
            return f"cannot keep the bytes {display(link)} reads in a file of its own: {reason(e)}"
        return None
    journal.append({"type": "done", "action": action, "op": "keep"})
    return None


def _move_blob_over(journal: Journal, i: int, target: Redownload) -> str | None:
    """Rename the blob just downloaded over the snapshot copy it is for, as huggingface_hub places a new
    blob in a no-symlink cache (`_create_symlink`: moved into the snapshot); why not, or None."""
    assert target.blob is not None
    if _still_wrong(target, target.blob) is not None:
        return "downloaded again, but the blob it wrote does not match its name either"
    try:
        ino: int | None = os.lstat(target.path).st_ino
    except FileNotFoundError:
        ino = None
    begin = {"type": "begin", "action": f"place:{i}", "op": "place", "target": target.path, "target_ino": ino}
    journal.append(begin | {"keep": target.blob})
    try:
        fsops.replace(target.blob, target.path)
    except OSError as e:
        if not settle(begin, journal):
            return f"cannot put the downloaded blob in its place: {reason(e)}"
        return None
    journal.append({"type": "done", "action": f"place:{i}", "op": "place"})
    return None


def _still_shared(
    path: str, before: tuple[int, int, int, int] | None, others: dict[str, tuple[int, int, int, int] | None]
) -> str | None:
    """Why the download did not give `path` an inode of its own, or changed one of its former other
    names (`others`: their identity before); None when neither."""
    now = _identity(path)
    if now is not None and before is not None and others and now[:2] == before[:2]:
        return "downloaded again, but it still shares its inode with its hard links"
    changed = [link for link, was in others.items() if _identity(link) != was]
    if changed:
        return f"{display(changed[0])}, which shared its inode, changed during the download"
    return None


def _still_wrong(target: Redownload, path: str | None = None) -> str | None:
    """Why the path (or `path`) does not hold the bytes its claim names after the download, or None when
    it does."""
    claim = target.claim
    path = path or target.path
    try:
        size = os.stat(path).st_size
        found = hash_file(path, size, gitsha1=claim.algorithm == "gitsha1")
    except OSError as e:
        return f"downloaded again, but it cannot be read: {reason(e)}"
    if not found.matches(claim):
        return f"downloaded again, but it still does not match {claim}"
    return None

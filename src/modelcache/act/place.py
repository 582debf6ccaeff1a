"""Reuse for a download, the writing half: placing verified bytes from this machine as a blob of the cache.

For each wanted blob with candidates (found read-only by `hub.reuse`), holding huggingface_hub's
lock of that blob: the first candidate whose bytes prove to be the blob's is reflinked, else hard
linked, else copied under a temporary name in `blobs/`, verified there (sha256 == the Hub's LFS
sha256, or the git blob sha1 == the blob id), and only then given its name, never over an existing
blob. Also the repo's download lock, held for a whole download (`download_lock`).

A hard link makes the candidate and the new blob one file. That is safe only where no later step
of the candidate's tool writes that file in place (`StoreSpec.written_in_place_by` is None: another
blob of the HF cache, Ollama, ModelScope, llama.cpp, torch hub). A local_dir or plain-folder copy
is rewritten in place by a huggingface_hub update or a `cp`, which through a hard link would change
the blob under its name: such a candidate is reflinked or copied, never hard-linked.

Every change goes through `fsops`; every lock through `locks`. Imports `act.fsops`, the finding
side (`digests`, `inventory`, `hub.remote`, `hub.reuse`) and neutral modules.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress

from .. import locks
from ..common import display
from ..digests import DigestIndex, Hasher, hash_file
from ..hub.remote import RemoteFile
from ..hub.reuse import Candidate, Reused
from ..inventory import FileFacts, Warning_
from ..stores.registry import spec_of
from . import fsops


class NoSpace(Exception):
    """The disk filled up while `source` was copied in as `file`'s blob (the partial copy is gone)."""

    def __init__(self, file: RemoteFile, source: str) -> None:
        super().__init__(source)
        self.file = file
        self.source = source


@contextmanager
def download_lock(cache: str, folder: str) -> Iterator[None]:
    """Hold the repo's download lock (`locks.DOWNLOAD_LOCK`), waiting while another download holds it.

    `clean` and `consolidate` leave a repo alone while any of its locks is held, so a reused blob is
    never taken for an orphan in the moment before huggingface_hub links it into the snapshot.
    """
    lock_dir = locks.repo_locks(cache, folder)
    fsops.make_dirs(lock_dir)
    with locks.hold(os.path.join(lock_dir, locks.DOWNLOAD_LOCK), create=True, mode=0o664, wait=True):
        yield


def place_reused(
    wanted: Sequence[RemoteFile],
    candidates: dict[str, list[Candidate]],
    cache: str,
    folder: str,
    device: int | None,
    index: DigestIndex | None,
    on_reused: Callable[[Reused], None] | None,
) -> tuple[list[Reused], list[Warning_]]:
    """Place every wanted blob of the repo folder `folder` that a candidate proves to hold; returns what was
    placed and what went wrong. A blob another process is downloading is left to it. `NoSpace` when the
    disk fills up; another failure of one candidate is a warning (when a claim promised its bytes)."""
    blobs_dir = os.path.join(cache, folder, "blobs")
    placed: list[Reused] = []
    problems: list[Warning_] = []
    for f in wanted:
        options = candidates.get(f.etag, [])
        if not options:
            continue
        blob = os.path.join(blobs_dir, f.etag)
        fsops.make_dirs(blobs_dir)
        fsops.make_dirs(locks.repo_locks(cache, folder))
        try:
            with locks.hold(locks.blob_lock(cache, folder, f.etag), create=True, mode=0o664):
                for candidate in options:
                    if os.path.lexists(blob):
                        break
                    if not candidate.likely:
                        try:
                            ok, sha = _hash_matches(candidate.record.path, f)
                        except OSError:
                            continue
                        if index is not None and sha is not None:
                            index.record(candidate.record.facts, sha)
                        if not ok:
                            continue
                    try:
                        method, why = _place(candidate, f, blob, candidate.record.facts.dev == device, index)
                    except OSError as e:
                        if e.errno == errno.ENOSPC:
                            raise NoSpace(f, candidate.record.path) from None
                        method, why = "", f"{display(candidate.record.path)}: {e.strerror}"
                    if method:
                        reused = Reused(f.path, f.size, candidate.record.path, method, blob)
                        placed.append(reused)
                        if on_reused is not None:
                            on_reused(reused)
                        break
                    if why and candidate.likely:
                        problems.append(Warning_(display(candidate.record.path), f"not reused for {f.path}: {why}"))
        except locks.Busy:
            continue  # another process is downloading this blob: huggingface_hub will wait for it
    return placed, problems


def _place(
    candidate: Candidate,
    f: RemoteFile,
    blob: str,
    same_device: bool,
    index: DigestIndex | None,
) -> tuple[str, str | None]:
    """Put a verified copy of `candidate` at `blob`: (method, None), or ("", why not).

    The new entry is made under a temporary name in `blobs/` and verified there (for a hard
    link: the same inode as the candidate; for a reflink or copy: the bytes written), then
    linked to its name, which must not exist. The temporary name is the one huggingface_hub
    gives its own partial blobs, and the caller holds that blob's lock: it never outlives the
    call short of SIGKILL, and then it is a partial download like any other, which
    huggingface_hub never reads and `clean` removes.
    """
    source = candidate.record.path
    tmp = fsops.partial_name(blob)
    mode = _blob_mode()
    methods = _methods(candidate, same_device)
    try:
        for method in methods:
            check = Hasher(f.size, gitsha1=not f.lfs)
            try:
                if method == "reflink":
                    fsops.clone_new(source, tmp, mode)
                elif method == "hardlink":
                    fsops.hardlink(source, tmp)
                else:
                    now = time.time_ns()
                    fsops.copy_to(source, tmp, mode, now, now, None, on_chunk=check.update)
            except OSError as e:
                fsops.discard(tmp)
                if method != "copy" and e.errno in fsops.UNSUPPORTED:
                    continue
                if e.errno == errno.ENOSPC:
                    raise
                return "", f"cannot {method} {display(source)}: {e.strerror}"
            st = os.lstat(tmp)
            if method == "hardlink" and st.st_ino != candidate.record.facts.ino:
                return "", f"{display(source)} changed while being linked"
            if st.st_size != f.size:
                return "", f"{display(source)} changed size"
            # a copy was hashed as it was written; a link or clone is read back
            if method == "copy":
                ok = check.matches(f.digest)
                sha: str | None = check.result().sha256 if ok else None
            else:
                ok, sha = _hash_matches(tmp, f)
            if not ok:
                return "", f"{display(source)} does not hold the bytes its name or size promised"
            if os.path.lexists(blob):
                return "", "the cache holds this blob now"
            try:
                fsops.place_new(tmp, blob)
            except OSError:
                if not _is(blob, st):
                    raise
                # It has its name; only flushing the folder after failed: placed all the same.
            if index is not None and sha is not None:
                index.record(FileFacts.from_stat(os.lstat(blob)), sha)
            return method, None
        return "", "no way to link or copy it"
    finally:
        # Failing to remove the temporary name (a partial download `clean` removes) must not undo,
        # or hide, what happened above.
        with suppress(OSError):
            fsops.discard(tmp)


def _methods(candidate: Candidate, same_device: bool) -> tuple[str, ...]:
    """How the candidate's bytes may become a blob, best first: a hard link only where no next step of its
    tool writes the file in place (it would write into the blob)."""
    if not same_device:
        return ("copy",)
    if spec_of(candidate.record.store).written_in_place_by is None:
        return ("reflink", "hardlink", "copy")
    return ("reflink", "copy")


def _is(path: str, st: os.stat_result) -> bool:
    """`path` is the file `st` describes (its device and inode)."""
    try:
        now = os.lstat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _hash_matches(path: str, f: RemoteFile) -> tuple[bool, str | None]:
    """(bytes at `path` are `f`'s, their sha256); reads the file once."""
    result = hash_file(path, f.size, gitsha1=not f.lfs)
    return result.matches(f.digest), result.sha256


def _blob_mode() -> int:
    """The mode huggingface_hub gives a new blob: 0o666 less the process umask."""
    umask = 0o022
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o666 & ~umask

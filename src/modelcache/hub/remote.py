"""A commit's file list: every file with its size and the name of its blob in the cache.

A commit's file list never changes, so `trees/<commit>.json` in the cache answers without the
network when it is there and complete; otherwise the Hub is asked (`repo_info` to resolve the
revision, then the recursive tree listing). Paths that would lead out of a folder are dropped.

Reads only. Imports neutral modules, `inventory`'s `Digest`, the HF cache reader's file-list
parser, `hub.names` and `hub.errors`; huggingface_hub only inside the listing, and the
`HfApi` object is the caller's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..common import display
from ..inventory import Digest
from ..stores.hf_cache import read_tree_file
from .errors import DownloadError
from .names import COMMIT_RE, safe_relpath


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of a commit as the Hub lists it."""

    path: str
    size: int
    etag: str  # its blob's name in the cache: the LFS sha256, else the git blob sha1
    lfs: bool

    @property
    def digest(self) -> Digest:
        return Digest("sha256" if self.lfs else "gitsha1", self.etag)


def commit_files(
    api: Any, storage: str, repo_id: str, repo_type: str, revision: str, token: bool | str | None, hub: str
) -> tuple[str, list[RemoteFile]]:
    """(the commit `revision` names, its file list). `storage` is the repo's folder in the cache.

    A commit hash whose file list is cached needs no request at all. Otherwise one quick request
    comes first: it resolves the revision and fails fast when the Hub is down (the tree listing
    retries for half a minute). Failures of the Hub are the caller's to map to one line.
    """
    files = None
    if COMMIT_RE.fullmatch(revision):
        files = _files_from_tree_file(os.path.join(storage, "trees", revision + ".json"))
    if files is not None:
        return revision, files
    info = api.repo_info(repo_id, repo_type=repo_type, revision=revision, token=token)
    if not info.sha:
        raise DownloadError(f"the Hub at {hub} gave no commit for {repo_type} {repo_id} at {display(revision)}")
    commit = str(info.sha)
    files = _files_from_tree_file(os.path.join(storage, "trees", commit + ".json"))
    if files is None:
        files = _files_from_hub(api, repo_id, repo_type, commit)
    return commit, files


def _files_from_tree_file(path: str) -> list[RemoteFile] | None:
    """The file list in a cached `trees/<commit>.json`; None when there is none, or it cannot be planned with."""
    tree = read_tree_file(path) if os.path.isfile(path) else None
    if not isinstance(tree, dict):
        return None
    files = []
    for relpath, entry in tree.items():
        if entry.claimed is None or not safe_relpath(relpath):
            return None  # not a list to plan with; ask the Hub instead
        files.append(RemoteFile(relpath, entry.size, entry.claimed.hexdigest, entry.claimed.algorithm == "sha256"))
    return files


def _files_from_hub(api: Any, repo_id: str, repo_type: str, commit: str) -> list[RemoteFile]:
    """The Hub's listing of a commit (recursive), as `RemoteFile`s."""
    from huggingface_hub.hf_api import RepoFile

    files = []
    for f in api.list_repo_tree(repo_id, recursive=True, revision=commit, repo_type=repo_type):
        if not isinstance(f, RepoFile) or not safe_relpath(f.path):
            continue
        if f.lfs is not None:
            files.append(RemoteFile(f.path, int(f.size), str(f.lfs.sha256), True))
        elif f.xet_hash is None:
            files.append(RemoteFile(f.path, int(f.size), str(f.blob_id), False))
        # A Xet file without LFS metadata names its blob by a hash the listing does not give: downloaded as is.
    return files

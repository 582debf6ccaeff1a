"""Test helpers for modelcache, importable by the test-suite and by downstream users."""

from modelcache.testing.hub import LocalHub
from modelcache.testing.hub_repos import (
    HubCommit,
    HubFile,
    RecordedRequest,
    default_is_lfs,
    git_blob_sha1,
    lfs_pointer,
    sha256_hex,
)

__all__ = [
    "HubCommit",
    "HubFile",
    "LocalHub",
    "RecordedRequest",
    "default_is_lfs",
    "git_blob_sha1",
    "lfs_pointer",
    "sha256_hex",
]

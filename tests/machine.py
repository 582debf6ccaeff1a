"""Test helpers: run the CLI as a user would, and compute expected figures independently.

The independent computation walks the trees with `os.walk` and reads every file; it shares
no code with modelcache, so a bug in the readers cannot hide itself in the expectation.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METADATA_DIRS = {".locks", "refs", "trees", ".no_exist"}


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None, user: str | None = None) -> Result:
    """`python -m modelcache ARGS` in a new process, as a user types it."""
    cmd = [sys.executable, "-m", "modelcache", *map(os.fspath, args)]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    proc = subprocess.run(cmd, capture_output=True, env={**os.environ, **(env or {})}, timeout=300)
    return Result(
        proc.returncode,
        proc.stdout.decode("utf-8", "backslashreplace"),
        proc.stderr.decode("utf-8", "backslashreplace"),
    )


def analyze_json(cache: Path, *models: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    args: list[str | os.PathLike[str]] = ["analyze", "--json", "--cache-dir", cache]
    for m in models:
        args += ["--models", m]
    result = run_cli(*args, *extra)
    assert result.code in (0, 1), result.err
    assert "Traceback" not in result.err
    data: dict[str, Any] = result.json()
    return data


def _is_not_content(path: Path, cache: Path) -> bool:
    """Metadata or a partial download: never counted as a duplicate."""
    if path.name.endswith(".incomplete"):
        return True
    if not path.is_relative_to(cache):
        parts = path.parts
        return ".git" in parts or any(pair == (".cache", "huggingface") for pair in itertools.pairwise(parts))
    parts = path.relative_to(cache).parts
    if path.name == "CACHEDIR.TAG":
        return True
    if parts and parts[0] == "blobs":  # shared store: only <2 hex>/<64 hex> payloads are content
        return not (len(parts) == 3 and len(parts[2]) == 64 and "." not in parts[2])
    # per-repo metadata folders: <repo folder>/<refs|trees|.no_exist>/..., and .locks/ at the top
    return (len(parts) > 1 and parts[1] in METADATA_DIRS) or parts[0] == ".locks"


def _store_of(path: Path, cache: Path, models: list[Path]) -> str:
    if path.is_relative_to(cache):
        return "hf_cache"
    for m in models:
        if path.is_relative_to(m):
            p = path.parent
            while p != m.parent:
                if (p / ".cache" / "huggingface" / "download").is_dir():
                    return "local_dir"
                p = p.parent
            return "plain"
    raise AssertionError(path)


def expected_figures(cache: Path, models: list[Path]) -> dict[str, int]:
    """Byte counts by the documented definitions, computed from the files alone."""
    owner: dict[tuple[int, int], tuple[str, int]] = {}
    content: dict[bytes, set[tuple[int, int]]] = {}
    sizes: dict[bytes, int] = {}
    order = ["hf_cache", "local_dir", "plain"]
    for root in [cache, *models]:
        if not root.exists():
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath, name)
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue
                store = _store_of(path, cache, models)
                inode = (st.st_dev, st.st_ino)
                if inode not in owner or order.index(store) < order.index(owner[inode][0]):
                    owner[inode] = (store, st.st_size)
                if st.st_size and not _is_not_content(path, cache):
                    try:
                        digest = hashlib.sha256(path.read_bytes()).digest()
                    except PermissionError:
                        continue
                    content.setdefault(digest, set()).add(inode)
                    sizes[digest] = st.st_size
    per_store = {s: sum(size for st, size in owner.values() if st == s) for s in order}
    return {
        "hf_cache_bytes": per_store["hf_cache"],
        "local_bytes": per_store["local_dir"] + per_store["plain"],
        "total_bytes": sum(size for _, size in owner.values()),
        "duplicate_bytes": sum((len(inodes) - 1) * sizes[d] for d, inodes in content.items()),
    }


def snapshot_tree(*roots: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under `roots`: type, size, mtime_ns, inode and link target (to prove nothing changed)."""
    seen: dict[str, tuple[Any, ...]] = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirs, files in os.walk(root):
            for name in [*dirs, *files]:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
                size = st.st_size if not stat.S_ISDIR(st.st_mode) else None
                seen[path] = (stat.S_IFMT(st.st_mode), size, st.st_mtime_ns, st.st_ino, target, st.st_mode)
    return seen

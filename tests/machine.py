"""Test helpers: a machine to run the CLI on as a user would, and expected figures computed independently.

The independent computation walks the trees with `os.walk` and reads every file; it shares
no code with modelcache, so a bug in the readers cannot hide itself in the expectation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from huggingface_hub import constants as hf_constants

from modelcache.testing import LocalHub
from modelcache.testing.builders import CLIENT_ENV, download_to_cache, download_to_local_dir

METADATA_DIRS = {".locks", "refs", "trees", ".no_exist"}
M = TypeVar("M", bound="Machine")
MAX_LINE = 1000  # a one-line message stays readable: no file contents dumped into it
NOBODY = "65534"  # the user permission tests run the CLI as when the tests run as root
DOCUMENTED_EXITS = (0, 1, 2, 130)  # cli.py: done, done with warnings, error, interrupted (3 is a bug)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
) -> Result:
    """`python -m modelcache ARGS` in a new process, as a user types it (as `user`, from the folder `cwd`)."""
    cmd = [*as_user(user), sys.executable, "-m", "modelcache", *map(os.fspath, args)]
    proc = subprocess.run(cmd, capture_output=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=300)
    return Result(
        proc.returncode,
        proc.stdout.decode("utf-8", "backslashreplace"),
        proc.stderr.decode("utf-8", "backslashreplace"),
    )


def as_user(user: str | None) -> list[str]:
    """The prefix that runs a command as `user` (setpriv), or none: as this process's user."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user is not None else []


def start_cli(
    *args: str | os.PathLike[str], env: Mapping[str, str] | None = None, output: int = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    """`python -m modelcache ARGS` started in a new process; its stdout and stderr go to `output`."""
    return subprocess.Popen(
        [sys.executable, "-m", "modelcache", *map(os.fspath, args)],
        env={**os.environ, **(env or {})},
        stdout=output,
        stderr=output,
    )


def finish(proc: subprocess.Popen[bytes]) -> Result:
    """Wait for a process `start_cli` started with its output piped."""
    out, err = proc.communicate(timeout=120)
    return Result(proc.returncode, out.decode(), err.decode())


# A process holding `filelock` locks, as huggingface_hub (and modelscope_hub) hold one while they download a file.
HOLD_LOCKS = (
    "import sys; from filelock import FileLock; held = [FileLock(p) for p in sys.argv[1:]]; "
    "[lock.acquire() for lock in held]; print('ready', flush=True); sys.stdin.read()"
)


@contextmanager
def helper(code: str, *args: str | Path, user: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A live process running `code` (until the block ends), once it printed `ready`."""
    proc = subprocess.Popen(
        [*as_user(user), sys.executable, "-c", code, *map(str, args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


@dataclass(frozen=True)
class Machine:
    """A machine under `root`: an HF cache `cache/`, model folders `models/` and modelcache's own `state/`.

    Test files subclass it for their own environment (`env`), roots (`roots`) and checks (`cli`).
    """

    root: Path
    # A SIGKILL can tear a journal's last line: files that kill runs drop such lines instead of failing on them.
    TORN_JOURNAL_LINES: ClassVar[bool] = False

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def index(self) -> Path:
        return self.state / "digests.sqlite"

    @property
    def cwd(self) -> Path | None:
        """The folder the CLI runs from (None: this process's)."""
        return None

    def env(self) -> dict[str, str]:
        """What every process of this machine gets: its own state and index."""
        return {"MODELCACHE_STATE": str(self.state), "MODELCACHE_INDEX": str(self.index)}

    def roots(self) -> list[str]:
        return ["--cache-dir", str(self.cache), "--models", str(self.models)]

    def cli(self, *args: str | os.PathLike[str], env: dict[str, str] | None = None, user: str | None = None) -> Result:
        """The CLI run on this machine (and `env`), which must not end in a traceback."""
        result = run_cli(*args, env={**self.env(), **(env or {})}, user=user, cwd=self.cwd)
        assert "Traceback" not in result.err + result.out, result.err
        return result

    def start(
        self, *args: str | os.PathLike[str], env: dict[str, str] | None = None, output: int = subprocess.PIPE
    ) -> subprocess.Popen[bytes]:
        """The CLI started on this machine (and `env`); `finish` waits for it when its output is piped."""
        return start_cli(*args, env={**self.env(), **(env or {})}, output=output)

    def copy(self: M, dest: Path, **changes: Any) -> M:
        """A fresh copy at `dest` (the cache's relative symlinks survive), with `changes` to the other fields."""
        shutil.copytree(self.root, dest, symlinks=True)
        return dataclasses.replace(self, root=dest, **changes)

    def journals(self) -> list[list[dict[str, Any]]]:
        """Every journaled run, oldest first, as its records."""
        runs = []
        for path in sorted((self.state / "journal").glob("*.jsonl")):
            records = []
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except ValueError:
                    if not self.TORN_JOURNAL_LINES:
                        raise
            runs.append(records)
        return runs


def download_repos(
    hub: LocalHub, m: Machine, repos: Mapping[str, Mapping[str, bytes]], local_dirs: Mapping[str, str]
) -> None:
    """Commit each repo to `hub` and download it into the machine's cache; then download each into its
    local_dir under `models/` (`local_dirs`: repo id -> folder), as the download manager of the story did."""
    for repo_id, files in repos.items():
        hub.add_commit(repo_id, dict(files))
        download_to_cache(hub, repo_id, m.cache)
    for repo_id, folder in local_dirs.items():
        download_to_local_dir(hub, repo_id, m.models / folder, m.cache)


@contextmanager
def client_env() -> Iterator[pytest.MonkeyPatch]:
    """huggingface_hub's settings for LocalHub (CLIENT_ENV) in os.environ for the block, then as they were
    (module-scoped fixtures cannot use `monkeypatch`)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in CLIENT_ENV.items():
            mp.setenv(name, value)
        yield mp


def keep_client_home(home: Path, mp: pytest.MonkeyPatch) -> None:
    """huggingface_hub's home at `home`, without a token, in the environment (for processes this test starts)
    and in its module constants (read once, at import time)."""
    mp.setenv("HF_HOME", str(home))
    mp.setenv("HF_HUB_CACHE", str(home / "hub"))
    mp.delenv("HF_TOKEN", raising=False)
    mp.setattr(hf_constants, "HF_HOME", str(home))
    mp.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    mp.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    mp.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    mp.setattr(hf_constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)


@contextmanager
def mounted(where: Path, *options: str, source: str, why: str) -> Iterator[Path]:
    """`mount OPTIONS SOURCE WHERE` (a new folder) for the block, unmounted after it (lazily if busy); the
    test is skipped, with `why` and mount's message, where mounting is not allowed."""
    where.mkdir()
    done = subprocess.run(["mount", *options, source, str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"{why}: {done.stderr.decode(errors='replace').strip() or done.returncode}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


@contextmanager
def small_tmpfs(where: Path, size: str, why: str) -> Iterator[Path]:
    """A tmpfs of `size` (`mount -o size=`) at the new folder `where`, as `mounted` makes it."""
    with mounted(where, "-t", "tmpfs", "-o", f"size={size}", source="tmpfs", why=why) as mount:
        yield mount


def as_unprivileged(m: Machine) -> str | None:
    """The user to run the CLI as so that permissions bite: nobody (owning the machine) when we are root."""
    if os.geteuid() != 0:
        return None
    if run_cli("--version", user=NOBODY).code != 0:
        pytest.skip("running as root, and user nobody cannot run this Python to see permissions bite")
    m.state.mkdir(parents=True, exist_ok=True)
    m.index.parent.mkdir(parents=True, exist_ok=True)
    for dirpath, dirs, files in os.walk(m.root):
        for name in [*dirs, *files]:
            os.chown(os.path.join(dirpath, name), int(NOBODY), int(NOBODY), follow_symlinks=False)
    os.chown(m.root, int(NOBODY), int(NOBODY))
    return NOBODY


def assert_tidy(result: Result, codes: tuple[int, ...], what: str) -> None:
    """An expected exit code, no traceback, and messages of one short line each.

    Exit 2 is one `modelcache: error:` line on stderr, or (a run whose items failed) JSON whose
    every failed item gives its reason in one line."""
    assert result.code in codes, f"{what}: exit {result.code}: {result.err[-2000:]}"
    for text in (result.err, result.out):
        assert "Traceback" not in text and "internal error" not in text, f"{what}: {text[-2000:]}"
    long_lines = [line[:80] + "..." for line in result.err.splitlines() if len(line) > MAX_LINE]
    assert not long_lines, f"{what}: messages longer than {MAX_LINE} characters: {long_lines}"
    if result.code == 2:
        lines = result.err.strip().splitlines()
        if len(lines) == 1 and lines[0].startswith("modelcache: error: "):
            return
        failed = [o for o in result.json().get("outcomes", []) if o["status"] == "failed"]
        assert failed and all("\n" not in o["reason"] for o in failed), f"{what}: {result.err[-2000:]}"


def analyze_json(cache: Path, *models: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    args: list[str | os.PathLike[str]] = ["analyze", "--json", "--cache-dir", cache]
    for m in models:
        args += ["--models", m]
    result = run_cli(*args, *extra)
    assert result.code in (0, 1), result.err
    assert "Traceback" not in result.err
    data: dict[str, Any] = result.json()
    return data


STORE_ORDER = ["hf_cache", "llamacpp", "modelscope", "ollama", "lmstudio", "local_dir", "plain"]
OLLAMA_BLOB = re.compile(r"sha256-[0-9a-f]{64}")


def _is_not_content(path: Path, cache: Path, store: str, root: Path) -> bool:
    """Metadata or a partial download (by each store's documented layout): never counted as a duplicate."""
    if path.name.endswith(".incomplete"):
        return True
    rel = path.relative_to(root).parts
    if store == "ollama":
        return not (len(rel) == 2 and rel[0] == "blobs" and OLLAMA_BLOB.fullmatch(rel[1]))
    if store == "modelscope":
        return path.name in (".mdl", ".msc", ".mv") or "._____temp" in rel or ".lock" in rel
    if store == "llamacpp":
        return path.name.endswith((".downloadInProgress", ".etag", ".json", ".lastModified"))
    if store == "lmstudio":
        return False
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


def walk_as_owner(root: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """`os.walk` as the files' owner sees it: folders without read and search permission are not entered
    (root enters them all; the CLI, run as their owner, cannot)."""
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.islink(os.path.join(dirpath, d))
                   or os.lstat(os.path.join(dirpath, d)).st_mode & 0o500 == 0o500]  # fmt: skip
        yield dirpath, dirs, files


def expected_figures(cache: Path, models: list[Path], stores: Mapping[str, Path] | None = None) -> dict[str, int]:
    """Byte counts by the documented definitions, computed from the files alone (as their owner can read them)."""
    owner: dict[tuple[int, int], tuple[str, int]] = {}
    content: dict[bytes, set[tuple[int, int]]] = {}
    sizes: dict[bytes, int] = {}
    roots = [(cache, None), *((m, None) for m in models), *((p, k) for k, p in (stores or {}).items())]
    for root, kind in roots:
        if not root.exists() or root.stat().st_mode & 0o500 != 0o500:
            continue
        for dirpath, _dirs, files in walk_as_owner(root):
            for name in files:
                path = Path(dirpath, name)
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or (name.startswith(".modelcache-") and name.endswith(".tmp")):
                    continue  # a temporary file a killed modelcache run left: not counted (clean removes it)
                store = kind or _store_of(path, cache, models)
                inode = (st.st_dev, st.st_ino)
                if inode not in owner or STORE_ORDER.index(store) < STORE_ORDER.index(owner[inode][0]):
                    owner[inode] = (store, st.st_size)
                if st.st_size and not _is_not_content(path, cache, store, root):
                    if not st.st_mode & 0o400:
                        continue  # its owner cannot read it
                    try:
                        digest = hashlib.sha256(path.read_bytes()).digest()
                    except PermissionError:
                        continue
                    content.setdefault(digest, set()).add(inode)
                    sizes[digest] = st.st_size
    per_store = {s: sum(size for st, size in owner.values() if st == s) for s in STORE_ORDER}
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


def assert_same_tree(before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]) -> None:
    """Two `snapshot_tree`s: the same paths; every non-folder with its type, size, mtime, link text and
    mode (an undone copy is a new inode)."""
    assert set(after) == set(before), set(after) ^ set(before)
    for path, entry in before.items():
        if not stat.S_ISDIR(entry[0]):
            assert [after[path][i] for i in (0, 1, 2, 4, 5)] == [entry[i] for i in (0, 1, 2, 4, 5)], path

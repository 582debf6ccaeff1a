"""A local, in-process stand-in for the Hugging Face Hub, for tests.

`LocalHub` serves repos defined in Python over plain HTTP on 127.0.0.1, speaking the subset of the Hub
protocol that the real ``huggingface_hub`` 2.4 client uses to download: revision info, tree listing
(paginated), refs, and ``/resolve/`` with HEAD, GET and byte ranges. Xet is never advertised, so the client
always falls back to plain HTTP and every byte it downloads goes through this server (and shows up in
`LocalHub.request_log`).

Example:
    ```python
    from huggingface_hub import snapshot_download
    from modelcache.testing import LocalHub

    with LocalHub() as hub:
        c1 = hub.add_commit("org/model", {"config.json": b"{}", "model.safetensors": b"\\0" * 1024})
        path = snapshot_download("org/model", endpoint=hub.url, cache_dir=tmp_path / "hub")
        # blobs/<sha256> for LFS files, blobs/<git sha1> for small files:
        assert hub.file("org/model", "model.safetensors").etag == LocalHub.etag_of(b"\\0" * 1024, lfs=True)
        hub.add_commit("org/model", {"config.json": b'{"v": 2}'})  # moves "main"; c1 stays resolvable
    ```

Only the standard library is used, so the server can run wherever the tests run.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any

from .hub_http import HTTPError, HubHTTPServer
from .hub_repos import (
    COMMIT_RE,
    EPOCH,
    FailRule,
    HubCommit,
    HubFile,
    LfsOverride,
    RecordedRequest,
    Repo,
    RepoType,
    default_is_lfs,
    git_blob_sha1,
    iso_date,
    sha256_hex,
)

__all__ = ["LocalHub"]


class LocalHub:
    """A Hub-compatible HTTP server on 127.0.0.1, serving repos defined in Python.

    Point the real client at it with ``endpoint=hub.url`` (or ``HF_ENDPOINT=hub.url`` in a subprocess).
    Commits are full trees; branches move when a commit is added to them; old commits stay resolvable by sha.

    Args:
        lfs_rule: Which files are LFS when neither the repo nor the commit says otherwise.
            Defaults to `default_is_lfs`.
        lfs_redirect: If True, ``/resolve/`` answers LFS files with a 302 to a second local server acting as
            the CDN (as the real Hub does); otherwise LFS files are served directly with a 200.
        tree_page_size: Entries per page of the tree listing (the Hub uses 1000; 50 with ``expand=true``).
            Lower it to exercise pagination.

    Example:
        ```python
        with LocalHub() as hub:
            c1 = hub.add_commit("org/model", {"config.json": b"{}", "w/model.safetensors": b"x" * 100})
            c2 = hub.add_commit("org/model", {"config.json": b'{"a": 1}'})   # main -> c2
            hub.tag("org/model", "v1", c1)
            hub.add_commit("org/data", {"train.csv": b"a,b\\n"}, repo_type="dataset")
            hub.fail_after("w/model.safetensors", 10)   # next GET of that file drops after 10 bytes
            hf_hub_download("org/model", "config.json", endpoint=hub.url, cache_dir=...)
            [r.range for r in hub.request_log if r.method == "GET"]
        ```
    """

    def __init__(
        self,
        *,
        lfs_rule: Callable[[str, bytes], bool] = default_is_lfs,
        lfs_redirect: bool = False,
        tree_page_size: int = 1000,
    ) -> None:
        self.lfs_rule = lfs_rule
        self.lfs_redirect = lfs_redirect
        self.tree_page_size = tree_page_size
        self._lock = threading.RLock()
        self._repos: dict[tuple[RepoType, str], Repo] = {}
        self._lfs_objects: dict[str, HubFile] = {}
        self._log: list[RecordedRequest] = []
        self._fail_rules: list[FailRule] = []
        self._bytes_per_second: float | None = None
        self._commit_counter = 0
        self._server: HubHTTPServer | None = None
        self._cdn: HubHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> LocalHub:
        """Start serving on a free port of 127.0.0.1 (idempotent). Returns self."""
        with self._lock:
            if self._server is not None:
                return self
            servers = [HubHTTPServer(self, is_cdn=False)]
            if self.lfs_redirect:
                servers.append(HubHTTPServer(self, is_cdn=True))
            self._server = servers[0]
            self._cdn = servers[1] if self.lfs_redirect else None
            for server in servers:
                # A short poll interval keeps stop() (run after every test) from costing up to half a second.
                thread = threading.Thread(
                    target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="LocalHub", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections (idempotent). Repos are kept; `start()` picks a new port."""
        with self._lock:
            servers = [s for s in (self._server, self._cdn) if s is not None]
            self._server = self._cdn = None
            threads, self._threads = self._threads, []
        for server in servers:
            server.shutdown()
            server.close_all_connections()
            server.server_close()
        for thread in threads:
            thread.join(timeout=5)

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Endpoint to give the client, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("LocalHub is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def cdn_url(self) -> str | None:
        """Origin of the fake CDN when ``lfs_redirect=True``, else None."""
        return None if self._cdn is None else f"http://127.0.0.1:{self._cdn.server_address[1]}"

    # -- repo content --------------------------------------------------------------------------------------

    def create_repo(
        self,
        repo_id: str,
        *,
        repo_type: RepoType = "model",
        lfs_rule: Callable[[str, bytes], bool] | None = None,
    ) -> None:
        """Create an empty repo (`add_commit` creates repos too). ``lfs_rule`` overrides the hub's rule."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None:
                if not 1 <= len(repo_id.split("/")) <= 2 or not all(repo_id.split("/")):
                    raise ValueError(f"Invalid repo id {repo_id!r}")
                self._repos[(repo_type, repo_id)] = Repo(repo_id, repo_type, lfs_rule)
            elif lfs_rule is not None:
                repo.lfs_rule = lfs_rule

    def add_commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        repo_type: RepoType = "model",
        branch: str = "main",
        message: str = "",
        lfs: LfsOverride = None,
        parent: str | None = None,
    ) -> str:
        """Add a commit whose tree is exactly ``files`` and point ``branch`` at it. Returns its 40-hex sha.

        Args:
            repo_id: ``"namespace/name"`` (or a bare legacy ``"name"``); created if missing.
            files: Path (``/``-separated) to content. This is the whole tree, not a diff.
            repo_type: ``"model"``, ``"dataset"`` (or ``"space"``).
            branch: Branch created or moved to the new commit.
            message: Commit title (shown in expanded tree listings).
            lfs: Which files are LFS in this commit (see `LfsOverride`); None uses the repo/hub rule.
            parent: Parent commit; defaults to the branch's current head.
        """
        for path, content in files.items():
            parts = path.split("/")
            if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path:
                raise ValueError(f"Invalid path in repo: {path!r}")
            if not isinstance(content, bytes):
                raise TypeError(f"Content of {path!r} must be bytes")
        self.create_repo(repo_id, repo_type=repo_type)
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            is_lfs = self._lfs_predicate(repo, lfs)
            tree = {p: HubFile(p, content, is_lfs(p, content)) for p, content in sorted(files.items())}
            if parent is None:
                parent = repo.branches.get(branch)
            elif parent not in repo.commits:
                raise ValueError(f"Unknown parent commit {parent} in {repo_id}")
            self._commit_counter += 1
            seq = self._commit_counter
            listing = "".join(f"{f.blob_id} {p}\n" for p, f in tree.items())
            sha = hashlib.sha1(
                f"{repo_type}/{repo_id}\nparent {parent}\n{listing}\n{message}\n{seq}".encode()
            ).hexdigest()
            repo.commits[sha] = HubCommit(sha, tree, parent, message, EPOCH + timedelta(minutes=seq))
            repo.branches[branch] = sha
            for hub_file in tree.values():
                if hub_file.lfs:
                    self._lfs_objects[hub_file.sha256] = hub_file
            return sha

    def set_branch(self, repo_id: str, branch: str, commit: str, *, repo_type: RepoType = "model") -> None:
        """Create or move ``branch`` to an existing ``commit`` (e.g. to revert a branch)."""
        self._set_ref(repo_id, repo_type, lambda repo: repo.branches, branch, commit)

    def delete_branch(self, repo_id: str, branch: str, *, repo_type: RepoType = "model") -> None:
        """Delete ``branch``; its commits stay resolvable by sha."""
        with self._lock:
            del self._get_repo(repo_id, repo_type).branches[branch]

    def tag(self, repo_id: str, tag: str, commit: str, *, repo_type: RepoType = "model") -> None:
        """Create or move tag ``tag`` to ``commit``."""
        self._set_ref(repo_id, repo_type, lambda repo: repo.tags, tag, commit)

    def _set_ref(
        self, repo_id: str, repo_type: RepoType, refs: Callable[[Repo], dict[str, str]], name: str, commit: str
    ) -> None:
        """Point ``name`` in the repo's ``refs`` (its branches or its tags) at the existing ``commit``."""
        with self._lock:
            repo = self._get_repo(repo_id, repo_type)
            if commit not in repo.commits:
                raise ValueError(f"Unknown commit {commit} in {repo_id}")
            refs(repo)[name] = commit

    def commit_sha(self, repo_id: str, revision: str = "main", *, repo_type: RepoType = "model") -> str:
        """Resolve a branch, tag or sha to the commit sha the hub would report."""
        with self._lock:
            return self._resolve(self._get_repo(repo_id, repo_type), revision).sha

    def file(self, repo_id: str, path: str, revision: str = "main", *, repo_type: RepoType = "model") -> HubFile:
        """The `HubFile` at ``path`` in ``revision``, to compute what the client should have written."""
        with self._lock:
            return self._resolve(self._get_repo(repo_id, repo_type), revision).files[path]

    @staticmethod
    def etag_of(content: bytes, *, lfs: bool) -> str:
        """Unquoted ETag (= cache blob name) of ``content``: sha256 if LFS, git blob sha1 otherwise."""
        return sha256_hex(content) if lfs else git_blob_sha1(content)

    # -- fault injection and observation -------------------------------------------------------------------

    def throttle(self, bytes_per_second: float | None) -> None:
        """Limit the speed of every file body sent from now on; None removes the limit."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive")
        self._bytes_per_second = bytes_per_second

    def fail_after(self, path: str, n_bytes: int, *, times: int | None = 1, repo_id: str | None = None) -> None:
        """Make the next ``times`` GETs of repo file ``path`` drop the connection at file offset ``n_bytes``.

        The response headers announce the full length, then the socket is closed once the body reaches byte
        ``n_bytes`` of the file (a ranged request starting at or past it gets no body at all). ``times=None``
        fails every GET. Applies to any repo unless ``repo_id`` is given.
        """
        with self._lock:
            self._fail_rules.append(FailRule(path, n_bytes, times, repo_id))

    def clear_faults(self) -> None:
        """Remove every `fail_after` rule and the throttle."""
        with self._lock:
            self._fail_rules.clear()
            self._bytes_per_second = None

    @property
    def request_log(self) -> list[RecordedRequest]:
        """Snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self._log.clear()

    # -- internals used by the handler ---------------------------------------------------------------------

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._log.append(record)

    def _lfs_predicate(self, repo: Repo, lfs: LfsOverride) -> Callable[[str, bytes], bool]:
        if lfs is None:
            return repo.lfs_rule or self.lfs_rule
        if isinstance(lfs, bool):
            every_file = lfs
            return lambda _path, _content: every_file
        if callable(lfs):
            return lfs
        # A lone string is an Iterable[str] too, but means one path, not a set of characters.
        lfs_paths = frozenset([lfs] if isinstance(lfs, str) else lfs)
        return lambda path, _content: path in lfs_paths

    def _get_repo(self, repo_id: str, repo_type: RepoType) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"No {repo_type} repo {repo_id!r} on this LocalHub")
        return repo

    def _match_repo(self, repo_type: RepoType, segments: list[str]) -> tuple[Repo, list[str]]:
        """Split URL segments into a known repo and the rest; namespaced ids win over legacy bare names."""
        with self._lock:
            for n in (2, 1):
                repo = self._repos.get((repo_type, "/".join(segments[:n])))
                if repo is not None and len(segments) >= n:
                    return repo, segments[n:]
        repo_id = "/".join(segments[:2])
        raise HTTPError(404, "RepoNotFound", f"Repository not found: {repo_type} {repo_id}")

    def _resolve(self, repo: Repo, revision: str) -> HubCommit:
        with self._lock:
            name = revision
            for prefix, refs in (("refs/heads/", repo.branches), ("refs/tags/", repo.tags)):
                if revision.startswith(prefix) and revision[len(prefix) :] in refs:
                    return repo.commits[refs[revision[len(prefix) :]]]
            sha = repo.branches.get(name) or repo.tags.get(name)
            if sha is None and COMMIT_RE.fullmatch(revision) and revision in repo.commits:
                sha = revision
            if sha is None:
                raise HTTPError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return repo.commits[sha]

    def _repo_info(self, repo: Repo, revision: str | None, blobs: bool) -> dict[str, Any]:
        commit = self._resolve(repo, revision or "main")
        with self._lock:
            first = min(c.date for c in repo.commits.values())
        siblings: list[dict[str, Any]] = []
        for hub_file in commit.files.values():
            sibling: dict[str, Any] = {"rfilename": hub_file.path}
            if blobs:  # like the Hub, sizes and ids only with ?blobs=true (files_metadata=True)
                sibling.update(size=hub_file.size, blobId=hub_file.blob_id)
                if hub_file.lfs:
                    sibling["lfs"] = {
                        "sha256": hub_file.sha256,
                        "size": hub_file.size,
                        "pointerSize": hub_file.pointer_size,
                    }
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": commit.sha,
            "lastModified": iso_date(commit.date),
            "createdAt": iso_date(first),
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        if blobs:
            info["usedStorage"] = sum(f.size for f in commit.files.values())
        return info

    def _refs(self, repo: Repo) -> dict[str, Any]:
        with self._lock:

            def refs(kind: str, mapping: dict[str, str]) -> list[dict[str, str]]:
                return [
                    {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}
                    for name, sha in sorted(mapping.items())
                ]

            return {"branches": refs("heads", repo.branches), "tags": refs("tags", repo.tags), "converts": []}

    def _tree_entries(
        self, repo: Repo, commit: HubCommit, folder: str, recursive: bool, expand: bool
    ) -> list[dict[str, Any]]:
        prefix = f"{folder}/" if folder else ""
        files = [f for p, f in commit.files.items() if p.startswith(prefix)]
        if folder and not files:
            raise HTTPError(404, "EntryNotFound", f"{folder} does not exist on {commit.sha}")
        dirs: dict[str, list[HubFile]] = {}
        listed: list[HubFile] = []
        for hub_file in files:
            rel_parts = hub_file.path[len(prefix) :].split("/")
            for depth in range(1, len(rel_parts)):
                if depth > 1 and not recursive:
                    break
                dirs.setdefault(prefix + "/".join(rel_parts[:depth]), []).append(hub_file)
            if recursive or len(rel_parts) == 1:
                listed.append(hub_file)
        entries: list[dict[str, Any]] = []
        for path in sorted(dirs):
            tree_listing = "".join(f"{f.blob_id} {f.path}\n" for f in dirs[path])
            entry: dict[str, Any] = {
                "type": "directory",
                "oid": hashlib.sha1(tree_listing.encode()).hexdigest(),
                "size": 0,
                "path": path,
            }
            if expand:
                entry["lastCommit"] = self._last_commit(repo, commit, path, is_dir=True)
            entries.append(entry)
        for hub_file in sorted(listed, key=lambda f: f.path):
            entry = {"type": "file", "oid": hub_file.blob_id, "size": hub_file.size, "path": hub_file.path}
            if hub_file.lfs:
                entry["lfs"] = {
                    "oid": hub_file.sha256,
                    "size": hub_file.size,
                    "pointerSize": hub_file.pointer_size,
                }
            if expand:
                entry["lastCommit"] = self._last_commit(repo, commit, hub_file.path, is_dir=False)
                entry["securityFileStatus"] = {"status": "safe", "avScan": None, "pickleImportScan": None}
            entries.append(entry)
        return entries

    def _last_commit(self, repo: Repo, commit: HubCommit, path: str, *, is_dir: bool) -> dict[str, str]:
        """The newest ancestor commit that changed ``path`` (what the Hub shows as "last commit")."""

        def state(c: HubCommit) -> tuple[tuple[str, str], ...]:
            if is_dir:
                return tuple((p, f.blob_id) for p, f in c.files.items() if p.startswith(path + "/"))
            f = c.files.get(path)
            return ((path, f.blob_id),) if f is not None else ()

        with self._lock:
            current = commit
            while current.parent is not None:
                parent = repo.commits[current.parent]
                if state(parent) != state(current):
                    break
                current = parent
        return {"id": current.sha, "title": current.message or "Commit", "date": iso_date(current.date)}

    def _lfs_object(self, sha256: str) -> HubFile | None:
        with self._lock:
            return self._lfs_objects.get(sha256)

    def _consume_fail_rule(self, path: str, repo_id: str | None) -> int | None:
        with self._lock:
            for rule in self._fail_rules:
                if rule.path == path and (rule.repo_id is None or rule.repo_id == repo_id):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self._fail_rules.remove(rule)
                    return rule.n_bytes
        return None

    def repos(self) -> list[tuple[RepoType, str]]:
        """(repo_type, repo_id) of every repo on this hub."""
        with self._lock:
            return sorted(self._repos)

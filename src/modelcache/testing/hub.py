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

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = [
    "DEFAULT_LFS_SUFFIXES",
    "LFS_SIZE_THRESHOLD",
    "HubCommit",
    "HubFile",
    "LfsOverride",
    "LocalHub",
    "RecordedRequest",
    "RepoType",
    "default_is_lfs",
    "git_blob_sha1",
    "lfs_pointer",
    "sha256_hex",
]

RepoType = Literal["model", "dataset", "space"]

#: Suffixes the Hub's default ``.gitattributes`` sends to LFS (the subset that matters for model files).
DEFAULT_LFS_SUFFIXES: tuple[str, ...] = (
    ".safetensors",
    ".bin",
    ".gguf",
    ".pt",
    ".pth",
    ".ckpt",
    ".onnx",
    ".h5",
    ".msgpack",
    ".model",
)
#: Files at least this large are LFS whatever their name (the Hub rejects bigger non-LFS files).
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

#: Per-commit LFS decision: ``None`` (use the repo rule), ``True``/``False`` (every file), a collection of
#: paths (exactly those are LFS), or a predicate ``(path, content) -> bool``.
LfsOverride = bool | Iterable[str] | Callable[[str, bytes], bool] | None

_REPO_TYPES: dict[str, RepoType] = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX: dict[RepoType, str] = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")
# Commit dates are synthetic but deterministic, so two runs of a test see the same repo metadata.
_EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)
_CHUNK = 64 * 1024


def sha256_hex(content: bytes) -> str:
    """SHA-256 of ``content``: the Hub's ETag (and the cache's blob name) for an LFS file."""
    return hashlib.sha256(content).hexdigest()


def git_blob_sha1(content: bytes) -> str:
    """Git blob id of ``content``: the Hub's ETag (and the cache's blob name) for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(content: bytes) -> bytes:
    """The git-lfs pointer file the Hub stores in git in place of an LFS file's content."""
    return (
        b"version https://git-lfs.github.com/spec/v1\n"
        + f"oid sha256:{sha256_hex(content)}\nsize {len(content)}\n".encode()
    )


def default_is_lfs(path: str, content: bytes) -> bool:
    """Whether the Hub would store ``path`` in LFS by default: weight-like suffix, or at least 10 MiB."""
    return path.lower().endswith(DEFAULT_LFS_SUFFIXES) or len(content) >= LFS_SIZE_THRESHOLD


@dataclass(frozen=True)
class HubFile:
    """One file of a commit, with the identifiers the Hub reports for it.

    Attributes:
        path: Path in the repo, ``/``-separated.
        content: The file's bytes (what a download produces).
        lfs: Whether the file is stored in LFS (this decides its ETag and blob id).
    """

    path: str
    content: bytes = field(repr=False)
    lfs: bool

    @property
    def size(self) -> int:
        """Size of the real content in bytes (for LFS files too, not the pointer's size)."""
        return len(self.content)

    @property
    def sha256(self) -> str:
        """SHA-256 of the content."""
        return sha256_hex(self.content)

    @property
    def blob_id(self) -> str:
        """Git object id as listed by the API: the pointer's blob id if LFS, the content's otherwise."""
        return git_blob_sha1(lfs_pointer(self.content) if self.lfs else self.content)

    @property
    def etag(self) -> str:
        """Unquoted ETag the client sees, i.e. the name of the blob in the cache."""
        return self.sha256 if self.lfs else git_blob_sha1(self.content)

    @property
    def pointer_size(self) -> int:
        """Size of the LFS pointer file (reported as ``pointerSize`` in listings)."""
        return len(lfs_pointer(self.content))


@dataclass(frozen=True)
class HubCommit:
    """A commit: a full tree of files plus history metadata."""

    sha: str
    files: Mapping[str, HubFile]
    parent: str | None
    message: str
    date: datetime


@dataclass
class RecordedRequest:
    """One request received by the hub (or its CDN), as recorded in `LocalHub.request_log`.

    The record is appended when the request arrives and updated while it is answered, so a test that has
    just received a response already sees its status; ``bytes_sent`` counts body bytes handed to the socket.
    """

    method: str
    path: str  # raw (still percent-encoded) URL path, without the query string
    query: str
    range: str | None
    status: int = 0
    bytes_sent: int = 0


@dataclass
class _Repo:
    repo_id: str
    repo_type: RepoType
    lfs_rule: Callable[[str, bytes], bool] | None
    commits: dict[str, HubCommit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class _FailRule:
    path: str
    n_bytes: int
    remaining: int | None
    repo_id: str | None


class _HubHTTPServer(ThreadingHTTPServer):
    # Handler threads must not keep the test process alive, nor make shutdown wait on idle keep-alive clients.
    daemon_threads = True

    def __init__(self, hub: LocalHub, is_cdn: bool) -> None:
        self.hub = hub
        self.is_cdn = is_cdn
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Tracked so that `stop()` can cut keep-alive connections the client's pool would otherwise hold open.
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _HTTPError(Exception):
    def __init__(self, status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so the client's connection pool reuses connections as it does with the real Hub.
    protocol_version = "HTTP/1.1"
    server: _HubHTTPServer
    # Idle keep-alive connections are dropped eventually even if `stop()` is never called.
    timeout = 30

    record: RecordedRequest

    def log_message(self, format: str, *args: Any) -> None:
        # The request log replaces stderr access logs, which would only clutter test output.
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        self.record = RecordedRequest(
            method=self.command, path=parts.path, query=parts.query, range=self.headers.get("Range")
        )
        self.server.hub._record(self.record)
        try:
            if self.server.is_cdn:
                self._route_cdn(parts.path, parse_qs(parts.query))
            else:
                self._route_hub(parts.path, parse_qs(parts.query))
        except _HTTPError as err:
            self._send_error(err)
        except OSError:
            # The client went away (or `stop()` cut the connection): nothing left to answer.
            self.close_connection = True

    # -- routing -------------------------------------------------------------------------------------------

    def _route_hub(self, raw_path: str, query: dict[str, list[str]]) -> None:
        segments = raw_path.strip("/").split("/")
        hub = self.server.hub
        if segments[0] == "api" and len(segments) >= 3 and segments[1] in _REPO_TYPES:
            repo_type = _REPO_TYPES[segments[1]]
            repo, rest = hub._match_repo(repo_type, segments[2:])
            if not rest:
                self._send_json(hub._repo_info(repo, None, _flag(query, "blobs")))
            elif rest[0] == "revision" and len(rest) >= 2:
                # The client percent-encodes the revision as one segment, but tolerate a raw "refs/pr/1".
                self._send_json(hub._repo_info(repo, unquote("/".join(rest[1:])), _flag(query, "blobs")))
            elif rest[0] == "tree" and len(rest) >= 2:
                self._send_tree(repo, unquote(rest[1]), unquote("/".join(rest[2:])), query)
            elif rest == ["refs"]:
                self._send_json(hub._refs(repo))
            else:
                raise _HTTPError(404, None, f"Not implemented by LocalHub: {raw_path}")
            return

        repo_type = "model"
        if segments[0] in ("datasets", "spaces"):
            repo_type = _REPO_TYPES[segments[0]]
            segments = segments[1:]
        if "resolve" not in segments[:3]:
            raise _HTTPError(404, None, f"Not implemented by LocalHub: {raw_path}")
        idx = segments.index("resolve")
        repo, rest = hub._match_repo(repo_type, segments[:idx])
        if rest:  # e.g. /gpt2/extra/resolve/...: a legacy repo id must not swallow a bogus segment
            raise _HTTPError(404, "RepoNotFound", f"Repository not found: {'/'.join(segments[:idx])}")
        if len(segments) < idx + 3:
            raise _HTTPError(400, None, "Expected /resolve/{revision}/{path}")
        commit = hub._resolve(repo, unquote(segments[idx + 1]))
        filename = unquote("/".join(segments[idx + 2 :]))
        hub_file = commit.files.get(filename)
        if hub_file is None:
            # X-Repo-Commit lets the client record the miss in .no_exist/<commit>/.
            message = f"{filename} does not exist on {commit.sha}"
            raise _HTTPError(404, "EntryNotFound", message, {"X-Repo-Commit": commit.sha})
        self._send_resolve(repo, commit, hub_file)

    def _route_cdn(self, raw_path: str, query: dict[str, list[str]]) -> None:
        segments = raw_path.strip("/").split("/")
        hub_file = self.server.hub._lfs_object(segments[1]) if len(segments) == 2 else None
        if segments[0] != "cdn-lfs" or hub_file is None:
            raise _HTTPError(404, None, "Unknown CDN object")
        filename = query.get("filename", [hub_file.path])[0]
        repo_id = query.get("repo", [None])[0]
        # A real CDN knows nothing about repos or commits: only content headers.
        self._send_content(hub_file, filename, repo_id, {"ETag": f'"{hub_file.sha256}"'})

    # -- endpoints -----------------------------------------------------------------------------------------

    def _send_tree(self, repo: _Repo, revision: str, folder: str, query: dict[str, list[str]]) -> None:
        hub = self.server.hub
        commit = hub._resolve(repo, revision)
        recursive = _flag(query, "recursive")
        expand = _flag(query, "expand")
        entries = hub._tree_entries(repo, commit, folder.strip("/"), recursive, expand)
        page_size = min(hub.tree_page_size, 50) if expand else hub.tree_page_size
        start = int(query.get("cursor", ["0"])[0])
        page = entries[start : start + page_size]
        headers: dict[str, str] = {}
        if start + page_size < len(entries):
            # Absolute URL: the client feeds the Link target straight to its HTTP client, without a base URL.
            host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
            flags = f"recursive={str(recursive).lower()}&expand={str(expand).lower()}"
            path = urlsplit(self.path).path
            headers["Link"] = f'<http://{host}{path}?{flags}&cursor={start + page_size}>; rel="next"'
        self._send_json(page, headers)

    def _send_resolve(self, repo: _Repo, commit: HubCommit, hub_file: HubFile) -> None:
        hub = self.server.hub
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{hub_file.etag}"'}
        if hub_file.lfs:
            # The client prefers X-Linked-* to ETag/Content-Length: that is how it sees through CDN redirects.
            headers["X-Linked-Etag"] = f'"{hub_file.sha256}"'
            headers["X-Linked-Size"] = str(hub_file.size)
            if hub._cdn is not None:
                # Different port = different origin, so the client stops at this 302 (as with the real CDN),
                # takes the metadata from it, and later GETs the Location directly.
                cdn_port = hub._cdn.server_address[1]
                location = (
                    f"http://127.0.0.1:{cdn_port}/cdn-lfs/{hub_file.sha256}"
                    f"?repo={quote(repo.repo_id, safe='')}&filename={quote(hub_file.path, safe='')}"
                )
                self.record.status = 302
                self.send_response(302)
                for name, value in {**headers, "Location": location, "Content-Length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()
                return
        self._send_content(hub_file, hub_file.path, repo.repo_id, headers)

    def _send_content(self, hub_file: HubFile, path: str, repo_id: str | None, headers: Mapping[str, str]) -> None:
        size = hub_file.size
        start, end = 0, size - 1
        status = 200
        range_header = self.headers.get("Range")
        if range_header is not None and self.command == "GET":
            parsed = _parse_range(range_header, size)
            if parsed is not None:
                start, end = parsed
                status = 206
        length = max(end - start + 1, 0)

        self.record.status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return

        hub = self.server.hub
        stop_at = hub._consume_fail_rule(path, repo_id)
        stop = end + 1 if stop_at is None else min(end + 1, max(stop_at, start))
        pos = start
        while pos < stop:
            rate = hub._bytes_per_second
            # Small chunks when throttled, so the rate is smooth and a killed client leaves a partial file.
            chunk_size = _CHUNK if rate is None else max(1, min(_CHUNK, int(rate / 20)))
            chunk = hub_file.content[pos : min(pos + chunk_size, stop)]
            # Counted before writing so a client that has read everything already sees the final count.
            self.record.bytes_sent += len(chunk)
            try:
                self.wfile.write(chunk)
            except OSError:
                self.record.bytes_sent -= len(chunk)
                raise
            pos += len(chunk)
            if rate is not None:
                time.sleep(len(chunk) / rate)
        if stop < end + 1:
            # Content-Length promised more: closing now is exactly what a dropped connection looks like.
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    # -- low level -----------------------------------------------------------------------------------------

    def _send_json(self, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.record.status = 200
        self.send_response(200)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.record.bytes_sent += len(body)
            self.wfile.write(body)

    def _send_error(self, err: _HTTPError) -> None:
        body = json.dumps({"error": err.message}).encode()
        self.record.status = err.status
        self.send_response(err.status)
        if err.code is not None:
            self.send_header("X-Error-Code", err.code)
        self.send_header("X-Error-Message", err.message)
        for name, value in err.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() in ("1", "true", "yes")


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single ``bytes=`` range; None to ignore it; raises 416 if unsatisfiable."""
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        # Malformed or multi-range: RFC 9110 lets a server ignore it and send everything with a 200.
        return None
    first_s, last_s = match.groups()
    if first_s:
        first = int(first_s)
        last = min(int(last_s), size - 1) if last_s else size - 1
    else:  # suffix range: the last N bytes
        first, last = max(size - int(last_s), 0), size - 1
    if first >= size or last < first:
        raise _HTTPError(416, None, "Range Not Satisfiable", {"Content-Range": f"bytes */{size}"})
    return (first, last)


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
        self._repos: dict[tuple[RepoType, str], _Repo] = {}
        self._lfs_objects: dict[str, HubFile] = {}
        self._log: list[RecordedRequest] = []
        self._fail_rules: list[_FailRule] = []
        self._bytes_per_second: float | None = None
        self._commit_counter = 0
        self._server: _HubHTTPServer | None = None
        self._cdn: _HubHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> LocalHub:
        """Start serving on a free port of 127.0.0.1 (idempotent). Returns self."""
        with self._lock:
            if self._server is not None:
                return self
            servers = [_HubHTTPServer(self, is_cdn=False)]
            if self.lfs_redirect:
                servers.append(_HubHTTPServer(self, is_cdn=True))
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
                self._repos[(repo_type, repo_id)] = _Repo(repo_id, repo_type, lfs_rule)
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
            repo.commits[sha] = HubCommit(sha, tree, parent, message, _EPOCH + timedelta(minutes=seq))
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
        self, repo_id: str, repo_type: RepoType, refs: Callable[[_Repo], dict[str, str]], name: str, commit: str
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
            self._fail_rules.append(_FailRule(path, n_bytes, times, repo_id))

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

    def _lfs_predicate(self, repo: _Repo, lfs: LfsOverride) -> Callable[[str, bytes], bool]:
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

    def _get_repo(self, repo_id: str, repo_type: RepoType) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"No {repo_type} repo {repo_id!r} on this LocalHub")
        return repo

    def _match_repo(self, repo_type: RepoType, segments: list[str]) -> tuple[_Repo, list[str]]:
        """Split URL segments into a known repo and the rest; namespaced ids win over legacy bare names."""
        with self._lock:
            for n in (2, 1):
                repo = self._repos.get((repo_type, "/".join(segments[:n])))
                if repo is not None and len(segments) >= n:
                    return repo, segments[n:]
        repo_id = "/".join(segments[:2])
        raise _HTTPError(404, "RepoNotFound", f"Repository not found: {repo_type} {repo_id}")

    def _resolve(self, repo: _Repo, revision: str) -> HubCommit:
        with self._lock:
            name = revision
            for prefix, refs in (("refs/heads/", repo.branches), ("refs/tags/", repo.tags)):
                if revision.startswith(prefix) and revision[len(prefix) :] in refs:
                    return repo.commits[refs[revision[len(prefix) :]]]
            sha = repo.branches.get(name) or repo.tags.get(name)
            if sha is None and _COMMIT_RE.fullmatch(revision) and revision in repo.commits:
                sha = revision
            if sha is None:
                raise _HTTPError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return repo.commits[sha]

    def _repo_info(self, repo: _Repo, revision: str | None, blobs: bool) -> dict[str, Any]:
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
            "lastModified": _iso(commit.date),
            "createdAt": _iso(first),
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

    def _refs(self, repo: _Repo) -> dict[str, Any]:
        with self._lock:

            def refs(kind: str, mapping: dict[str, str]) -> list[dict[str, str]]:
                return [
                    {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}
                    for name, sha in sorted(mapping.items())
                ]

            return {"branches": refs("heads", repo.branches), "tags": refs("tags", repo.tags), "converts": []}

    def _tree_entries(
        self, repo: _Repo, commit: HubCommit, folder: str, recursive: bool, expand: bool
    ) -> list[dict[str, Any]]:
        prefix = f"{folder}/" if folder else ""
        files = [f for p, f in commit.files.items() if p.startswith(prefix)]
        if folder and not files:
            raise _HTTPError(404, "EntryNotFound", f"{folder} does not exist on {commit.sha}")
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

    def _last_commit(self, repo: _Repo, commit: HubCommit, path: str, *, is_dir: bool) -> dict[str, str]:
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
        return {"id": current.sha, "title": current.message or "Commit", "date": _iso(current.date)}

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


def _iso(date: datetime) -> str:
    return date.strftime("%Y-%m-%dT%H:%M:%S.000Z")

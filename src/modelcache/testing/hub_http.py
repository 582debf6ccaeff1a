"""The HTTP side of LocalHub: a threaded server on 127.0.0.1 and the handler that answers the subset of
the Hub protocol the real huggingface_hub 2.4 client uses (revision info, tree listing, refs, `/resolve/`
with HEAD, GET and byte ranges), plus the CDN a redirect leads to. Standard library only."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .hub_repos import CHUNK, RANGE_RE, REPO_TYPES_BY_URL, HubCommit, HubFile, RecordedRequest, Repo

if TYPE_CHECKING:
    from .hub import LocalHub


class HubHTTPServer(ThreadingHTTPServer):
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


class HTTPError(Exception):
    """An error answer of the Hub: status, its `X-Error-Code`, message and extra headers."""

    def __init__(self, status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so the client's connection pool reuses connections as it does with the real Hub.
    protocol_version = "HTTP/1.1"
    server: HubHTTPServer
    # Idle keep-alive connections are dropped eventually even if `stop()` is never called.
    timeout = 30
    # A reply's headers and body are two writes: with Nagle's algorithm the second waits for the
    # client's delayed ACK, 40 ms a request (most of a small download's time).
    disable_nagle_algorithm = True

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
        except HTTPError as err:
            self._send_error(err)
        except OSError:
            # The client went away (or `stop()` cut the connection): nothing left to answer.
            self.close_connection = True

    # -- routing -------------------------------------------------------------------------------------------

    def _route_hub(self, raw_path: str, query: dict[str, list[str]]) -> None:
        segments = raw_path.strip("/").split("/")
        hub = self.server.hub
        if segments[0] == "api" and len(segments) >= 3 and segments[1] in REPO_TYPES_BY_URL:
            repo_type = REPO_TYPES_BY_URL[segments[1]]
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
                raise HTTPError(404, None, f"Not implemented by LocalHub: {raw_path}")
            return

        repo_type = "model"
        if segments[0] in ("datasets", "spaces"):
            repo_type = REPO_TYPES_BY_URL[segments[0]]
            segments = segments[1:]
        if "resolve" not in segments[:3]:
            raise HTTPError(404, None, f"Not implemented by LocalHub: {raw_path}")
        idx = segments.index("resolve")
        repo, rest = hub._match_repo(repo_type, segments[:idx])
        if rest:  # e.g. /gpt2/extra/resolve/...: a legacy repo id must not swallow a bogus segment
            raise HTTPError(404, "RepoNotFound", f"Repository not found: {'/'.join(segments[:idx])}")
        if len(segments) < idx + 3:
            raise HTTPError(400, None, "Expected /resolve/{revision}/{path}")
        commit = hub._resolve(repo, unquote(segments[idx + 1]))
        filename = unquote("/".join(segments[idx + 2 :]))
        hub_file = commit.files.get(filename)
        if hub_file is None:
            # X-Repo-Commit lets the client record the miss in .no_exist/<commit>/.
            message = f"{filename} does not exist on {commit.sha}"
            raise HTTPError(404, "EntryNotFound", message, {"X-Repo-Commit": commit.sha})
        self._send_resolve(repo, commit, hub_file)

    def _route_cdn(self, raw_path: str, query: dict[str, list[str]]) -> None:
        segments = raw_path.strip("/").split("/")
        hub_file = self.server.hub._lfs_object(segments[1]) if len(segments) == 2 else None
        if segments[0] != "cdn-lfs" or hub_file is None:
            raise HTTPError(404, None, "Unknown CDN object")
        filename = query.get("filename", [hub_file.path])[0]
        repo_id = query.get("repo", [None])[0]
        # A real CDN knows nothing about repos or commits: only content headers.
        self._send_content(hub_file, filename, repo_id, {"ETag": f'"{hub_file.sha256}"'})

    # -- endpoints -----------------------------------------------------------------------------------------

    def _send_tree(self, repo: Repo, revision: str, folder: str, query: dict[str, list[str]]) -> None:
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

    def _send_resolve(self, repo: Repo, commit: HubCommit, hub_file: HubFile) -> None:
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
            chunk_size = CHUNK if rate is None else max(1, min(CHUNK, int(rate / 20)))
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

    def _send_error(self, err: HTTPError) -> None:
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
    match = RANGE_RE.fullmatch(header.strip())
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
        raise HTTPError(416, None, "Range Not Satisfiable", {"Content-Range": f"bytes */{size}"})
    return (first, last)



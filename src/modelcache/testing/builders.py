"""Build machines the way users get them: the real huggingface_hub client, downloading from LocalHub.

Used by the tests, the demo and the benchmarks, so that all three see the same layouts.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .hub import LocalHub

# Set before any download: no telemetry, no Xet (LocalHub speaks plain HTTP), no progress bars.
CLIENT_ENV = {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_SYMLINKS_WARNING": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
}


@contextmanager
def client_env() -> Iterator[None]:
    """`CLIENT_ENV` set for the duration (huggingface_hub reads some of it at each call), then put back."""
    saved = {k: os.environ.get(k) for k in CLIENT_ENV}
    os.environ.update(CLIENT_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def random_bytes(size: int, seed: int | str) -> bytes:
    """Deterministic bytes that no other seed reproduces (so no accidental duplicates)."""
    return random.Random(str(seed)).randbytes(size)


def download_to_cache(
    hub: LocalHub,
    repo_id: str,
    cache_dir: str | os.PathLike[str],
    *,
    revision: str | None = None,
    repo_type: str = "model",
    allow_patterns: list[str] | None = None,
) -> Path:
    """`snapshot_download` into an HF cache; returns the snapshot folder."""
    return _snapshot(hub, repo_id, cache_dir, None, revision, repo_type, allow_patterns)


def download_to_local_dir(
    hub: LocalHub,
    repo_id: str,
    local_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    revision: str | None = None,
    repo_type: str = "model",
) -> Path:
    """`snapshot_download(local_dir=...)`, as the download manager of the story did."""
    return _snapshot(hub, repo_id, cache_dir, local_dir, revision, repo_type, None)


def _snapshot(
    hub: LocalHub,
    repo_id: str,
    cache_dir: str | os.PathLike[str],
    local_dir: str | os.PathLike[str] | None,
    revision: str | None,
    repo_type: str,
    allow_patterns: list[str] | None,
) -> Path:
    from huggingface_hub import snapshot_download

    folder = snapshot_download(
        repo_id,
        revision=revision,
        repo_type=repo_type,
        cache_dir=os.fspath(cache_dir),
        local_dir=None if local_dir is None else os.fspath(local_dir),
        endpoint=hub.url,
        token=False,
        allow_patterns=allow_patterns,
    )
    return Path(folder)


def interrupted_download(
    hub: LocalHub,
    repo_id: str,
    filename: str,
    cache_dir: str | os.PathLike[str],
    *,
    local_dir: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Start `hf_hub_download` in another process and kill it mid-file, as a Ctrl-C or the OOM killer would.

    huggingface_hub writes in chunks of `DOWNLOAD_CHUNK_SIZE` (10 MiB), so the file must be larger
    than one chunk for bytes to reach the disk. The hub drops every transfer of the file just past
    the first chunk; the process is killed while it retries. Returns the per-process
    `<etag>.<8 hex>.incomplete` file left behind.
    """
    from huggingface_hub import constants

    chunk = constants.DOWNLOAD_CHUNK_SIZE
    size = len(hub.file(repo_id, filename).content)
    if size <= chunk:
        raise ValueError(f"{filename} must be larger than {chunk} bytes to leave a partial file")
    hub.fail_after(filename, chunk + 64 * 1024, times=None, repo_id=repo_id)
    code = (
        "import sys; from huggingface_hub import hf_hub_download; "
        "hf_hub_download(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3], endpoint=sys.argv[4], token=False, "
        "local_dir=sys.argv[5] or None)"
    )
    where = os.fspath(local_dir) if local_dir is not None else ""
    pattern = ".cache/huggingface/download/**/*.incomplete" if local_dir is not None else "*/blobs/*.incomplete"
    search = Path(local_dir) if local_dir is not None else Path(cache_dir)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, repo_id, filename, os.fspath(cache_dir), hub.url, where],
        env={**os.environ, **CLIENT_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for partial in search.glob(pattern):
                if _size(partial) >= chunk:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return partial
            if proc.poll() is not None:
                raise RuntimeError(f"download of {filename} ended (exit {proc.returncode}) before it was killed")
            time.sleep(0.01)
        raise TimeoutError(f"no partial download of {filename} appeared in {timeout}s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        hub.clear_faults()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def write_tree(root: str | os.PathLike[str], files: Mapping[str, bytes]) -> None:
    """Write plain files (a hand-made model folder)."""
    for rel, content in files.items():
        path = Path(root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def ollama_manifest(layers: list[tuple[bytes, str]]) -> bytes:
    """An Ollama manifest (`manifests/<host>/<namespace>/<model>/<tag>`) naming `layers` (content, media type)."""
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(), "size": 2},
        "layers": [{"mediaType": media, "digest": "sha256:" + hashlib.sha256(c).hexdigest(), "size": len(c)}
                   for c, media in layers],
    }).encode()  # fmt: skip

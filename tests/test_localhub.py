"""LocalHub against the real huggingface_hub 2.4 client: what the cache and local_dir layouts depend on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from modelcache.testing import LocalHub, default_is_lfs, git_blob_sha1, sha256_hex

WEIGHTS = bytes(range(256)) * 400  # 100 KiB, LFS by suffix
CONFIG = b'{"hidden_size": 8}'
TOKENIZER = b'{"vocab": ["a", "b"]}'
MIB10 = 10 * 1024 * 1024  # huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE: the client writes in such chunks


def _model_files() -> dict[str, bytes]:
    return {"config.json": CONFIG, "model.safetensors": WEIGHTS, "tokenizer/tokenizer.json": TOKENIZER}


def _requests(hub: LocalHub) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in hub.request_log]


def _fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_snapshot_into_cache_dir_builds_the_hub_cache_layout(local_hub: LocalHub, tmp_path: Path) -> None:
    commit = local_hub.add_commit("org/model", _model_files())
    cache = tmp_path / "cache"

    snapshot = Path(snapshot_download("org/model", endpoint=local_hub.url, cache_dir=cache))

    repo_dir = cache / "models--org--model"
    assert snapshot == repo_dir / "snapshots" / commit
    assert (repo_dir / "refs" / "main").read_text() == commit
    lfs_etag, small_etag = sha256_hex(WEIGHTS), git_blob_sha1(CONFIG)
    assert sorted(p.name for p in (repo_dir / "blobs").iterdir()) == sorted(
        [lfs_etag, small_etag, git_blob_sha1(TOKENIZER)]
    )
    # Snapshot entries are relative symlinks into blobs/, named by etag.
    link = snapshot / "model.safetensors"
    assert link.is_symlink() and os.readlink(link) == f"../../blobs/{lfs_etag}"
    assert os.readlink(snapshot / "tokenizer" / "tokenizer.json") == f"../../../blobs/{git_blob_sha1(TOKENIZER)}"
    assert (snapshot / "config.json").read_bytes() == CONFIG and link.read_bytes() == WEIGHTS
    # huggingface_hub 2.4 caches the tree listing of the commit next to refs/ and snapshots/.
    tree = json.loads((repo_dir / "trees" / f"{commit}.json").read_text())
    assert tree["format_version"] == 1
    assert tree["files"]["model.safetensors"] == {
        "size": len(WEIGHTS),
        "blob_id": local_hub.file("org/model", "model.safetensors").blob_id,
        "lfs_sha256": lfs_etag,
        "lfs_size": len(WEIGHTS),
    }
    assert tree["files"]["config.json"] == {"size": len(CONFIG), "blob_id": small_etag}
    assert not list(repo_dir.rglob("*.incomplete"))

    # Protocol: revision info, one tree page, then HEAD + GET per file (against the commit sha, not "main").
    reqs = _requests(local_hub)
    assert reqs[:2] == [
        ("GET", "/api/models/org/model/revision/main"),
        ("GET", f"/api/models/org/model/tree/{commit}"),
    ]
    assert sorted(reqs[2:]) == sorted(
        (method, f"/org/model/resolve/{commit}/{name}") for name in _model_files() for method in ("HEAD", "GET")
    )
    assert local_hub.request_log[1].query == "recursive=true&expand=false"

    # Same commit again: the tree cache and snapshot short-circuit everything but the revision lookup.
    local_hub.clear_log()
    snapshot_download("org/model", endpoint=local_hub.url, cache_dir=cache)
    assert _requests(local_hub) == [("GET", "/api/models/org/model/revision/main")]


def test_snapshot_into_local_dir_writes_files_and_download_metadata(local_hub: LocalHub, tmp_path: Path) -> None:
    commit = local_hub.add_commit("org/model", _model_files())
    local_dir, cache = tmp_path / "local", tmp_path / "cache"

    result = snapshot_download("org/model", endpoint=local_hub.url, local_dir=local_dir, cache_dir=cache)

    assert Path(result) == local_dir
    assert (local_dir / "model.safetensors").read_bytes() == WEIGHTS
    assert not (local_dir / "model.safetensors").is_symlink()
    assert (local_dir / "tokenizer" / "tokenizer.json").read_bytes() == TOKENIZER
    meta_dir = local_dir / ".cache" / "huggingface" / "download"
    for name, content in _model_files().items():
        lines = (meta_dir / f"{name}.metadata").read_text().splitlines()
        expected_etag = LocalHub.etag_of(content, lfs=default_is_lfs(name, content))
        assert lines[:2] == [commit, expected_etag]
        assert float(lines[2]) > 0
    assert (local_dir / ".cache" / "huggingface" / "trees" / f"{commit}.json").is_file()
    # Kept on record: even a local_dir download writes refs/<revision> into cache_dir (and nothing else).
    repo_dir = cache / "models--org--model"
    assert (repo_dir / "refs" / "main").read_text() == commit
    assert sorted(p.name for p in repo_dir.iterdir()) == ["refs"]
    assert not list(local_dir.rglob("*.incomplete"))


def test_hf_hub_download_one_file_and_missing_file(local_hub: LocalHub, tmp_path: Path) -> None:
    commit = local_hub.add_commit("org/model", _model_files())
    cache = tmp_path / "cache"

    path = hf_hub_download("org/model", "tokenizer/tokenizer.json", endpoint=local_hub.url, cache_dir=cache)

    repo_dir = cache / "models--org--model"
    assert Path(path) == repo_dir / "snapshots" / commit / "tokenizer" / "tokenizer.json"
    assert Path(path).read_bytes() == TOKENIZER
    assert (repo_dir / "refs" / "main").read_text() == commit
    # Unlike snapshot_download, the GET reuses the HEAD's URL: "main", not the commit the HEAD reported.
    assert _requests(local_hub) == [
        ("HEAD", "/org/model/resolve/main/tokenizer/tokenizer.json"),
        ("GET", "/org/model/resolve/main/tokenizer/tokenizer.json"),
    ]
    assert not (repo_dir / "trees").exists()  # only snapshot_download writes the tree cache

    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("org/model", "nope.txt", endpoint=local_hub.url, cache_dir=cache)
    assert (repo_dir / ".no_exist" / commit / "nope.txt").is_file()


def test_dataset_repo(local_hub: LocalHub, tmp_path: Path) -> None:
    commit = local_hub.add_commit("org/data", {"train/part-0.parquet": b"PAR1" * 10}, repo_type="dataset")
    cache = tmp_path / "cache"

    snapshot = snapshot_download("org/data", repo_type="dataset", endpoint=local_hub.url, cache_dir=cache)

    assert Path(snapshot) == cache / "datasets--org--data" / "snapshots" / commit
    assert (Path(snapshot) / "train" / "part-0.parquet").read_bytes() == b"PAR1" * 10
    paths = [r.path for r in local_hub.request_log]
    assert paths[0] == "/api/datasets/org/data/revision/main"
    assert f"/datasets/org/data/resolve/{commit}/train/part-0.parquet" in paths
    # A dataset is not a model: the same id as a model is unknown.
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("org/data", endpoint=local_hub.url, cache_dir=cache)


def test_revisions_tags_and_a_moved_branch(local_hub: LocalHub, tmp_path: Path) -> None:
    c1 = local_hub.add_commit("org/model", _model_files(), message="first")
    local_hub.tag("org/model", "v1", c1)
    new_config = b'{"hidden_size": 16}'
    c2 = local_hub.add_commit("org/model", {**_model_files(), "config.json": new_config}, message="second")
    assert c1 != c2 and len(c2) == 40 and local_hub.commit_sha("org/model") == c2
    cache = tmp_path / "cache"
    repo_dir = cache / "models--org--model"

    main = Path(snapshot_download("org/model", endpoint=local_hub.url, cache_dir=cache))
    v1 = Path(snapshot_download("org/model", revision="v1", endpoint=local_hub.url, cache_dir=cache))
    by_sha = Path(snapshot_download("org/model", revision=c1, endpoint=local_hub.url, cache_dir=cache))

    assert main.name == c2 and v1.name == c1 and by_sha == v1
    assert (repo_dir / "refs" / "main").read_text() == c2
    assert (repo_dir / "refs" / "v1").read_text() == c1
    assert (main / "config.json").read_bytes() == new_config and (v1 / "config.json").read_bytes() == CONFIG
    # Unchanged weights are one blob shared by both snapshots.
    assert (main / "model.safetensors").resolve() == (v1 / "model.safetensors").resolve()
    assert len(list((repo_dir / "blobs").iterdir())) == 4
    assert {p.stem for p in (repo_dir / "trees").iterdir()} == {c1, c2}

    # Move main: the next download follows it; the old snapshot stays.
    c3 = local_hub.add_commit("org/model", {"config.json": new_config}, message="drop weights")
    snapshot_download("org/model", endpoint=local_hub.url, cache_dir=cache)
    assert (repo_dir / "refs" / "main").read_text() == c3
    assert sorted(p.name for p in (repo_dir / "snapshots").iterdir()) == sorted([c1, c2, c3])
    local_hub.set_branch("org/model", "main", c1)
    assert local_hub.commit_sha("org/model", "refs/heads/main") == c1

    with pytest.raises(RevisionNotFoundError):
        snapshot_download("org/model", revision="nope", endpoint=local_hub.url, cache_dir=cache)


def test_same_content_in_two_repos_gives_the_same_blob_names(local_hub: LocalHub, tmp_path: Path) -> None:
    local_hub.add_commit("org/a", {"model.safetensors": WEIGHTS, "config.json": CONFIG})
    local_hub.add_commit("other/b", {"weights/model.safetensors": WEIGHTS})
    cache = tmp_path / "cache"

    a = Path(snapshot_download("org/a", endpoint=local_hub.url, cache_dir=cache))
    b = Path(snapshot_download("other/b", endpoint=local_hub.url, cache_dir=cache))

    # Per-repo blob stores: same name, two copies on disk (the duplication modelcache is about).
    blob_a = (a / "model.safetensors").resolve()
    blob_b = (b / "weights" / "model.safetensors").resolve()
    assert blob_a.name == blob_b.name == sha256_hex(WEIGHTS)
    assert blob_a != blob_b and not blob_a.samefile(blob_b)


def test_allow_patterns(local_hub: LocalHub, tmp_path: Path) -> None:
    commit = local_hub.add_commit("org/model", _model_files())
    cache = tmp_path / "cache"

    snapshot = Path(snapshot_download("org/model", endpoint=local_hub.url, cache_dir=cache, allow_patterns=["*.json"]))

    # fnmatch semantics: "*" also matches "/", so the nested tokenizer.json is included.
    files = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
    assert files == ["config.json", "tokenizer/tokenizer.json"]
    assert not any(r.path.endswith("model.safetensors") for r in local_hub.request_log)
    # The tree cache still lists the whole commit, not just what was downloaded.
    tree = json.loads((cache / "models--org--model" / "trees" / f"{commit}.json").read_text())
    assert sorted(tree["files"]) == sorted(_model_files())


def test_missing_repo_raises_repository_not_found(local_hub: LocalHub, tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("org/missing", endpoint=local_hub.url, cache_dir=tmp_path / "cache")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json", endpoint=local_hub.url, cache_dir=tmp_path / "cache")
    status, headers, _ = _fetch(f"{local_hub.url}/api/models/org/missing/revision/main")
    assert status == 404 and headers["X-Error-Code"] == "RepoNotFound"


def test_resolve_headers_and_range_requests(local_hub: LocalHub) -> None:
    commit = local_hub.add_commit("org/model", _model_files())
    url = f"{local_hub.url}/org/model/resolve/main/model.safetensors"

    status, headers, body = _fetch(url, method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["X-Repo-Commit"] == commit
    assert headers["ETag"] == headers["X-Linked-Etag"] == f'"{sha256_hex(WEIGHTS)}"'
    assert headers["X-Linked-Size"] == headers["Content-Length"] == str(len(WEIGHTS))
    assert headers["Accept-Ranges"] == "bytes"
    assert not any(name.lower().startswith("x-xet") for name in headers)
    status, headers, _ = _fetch(f"{local_hub.url}/org/model/resolve/main/config.json", method="HEAD")
    assert headers["ETag"] == f'"{git_blob_sha1(CONFIG)}"' and "X-Linked-Etag" not in headers

    status, headers, body = _fetch(url, {"Range": "bytes=100-"})
    assert status == 206 and body == WEIGHTS[100:]
    assert headers["Content-Range"] == f"bytes 100-{len(WEIGHTS) - 1}/{len(WEIGHTS)}"
    status, headers, body = _fetch(url, {"Range": "bytes=10-19"})
    assert (status, body, headers["Content-Length"]) == (206, WEIGHTS[10:20], "10")
    status, headers, _ = _fetch(url, {"Range": f"bytes={len(WEIGHTS)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(WEIGHTS)}"
    assert [r.range for r in local_hub.request_log if r.method == "GET"] == [
        "bytes=100-",
        "bytes=10-19",
        f"bytes={len(WEIGHTS)}-",
    ]


def test_dropped_connection_is_resumed_with_a_range_request(local_hub: LocalHub, tmp_path: Path) -> None:
    big = os.urandom(MIB10 + 50_000)
    local_hub.add_commit("org/model", {"model.safetensors": big})
    local_hub.fail_after("model.safetensors", MIB10 + 20_000)  # first GET only
    cache = tmp_path / "cache"

    path = hf_hub_download("org/model", "model.safetensors", endpoint=local_hub.url, cache_dir=cache)

    # http_get retries in-process (after a 1 s sleep) with Range: bytes=N-, N = bytes already *written*.
    # It writes in 10 MiB chunks, so the 20_000 bytes received past the first chunk are fetched again.
    assert Path(path).read_bytes() == big
    gets = [r for r in local_hub.request_log if r.method == "GET"]
    assert [(r.range, r.status, r.bytes_sent) for r in gets] == [
        (None, 200, MIB10 + 20_000),
        (f"bytes={MIB10}-", 206, 50_000),
    ]
    assert not list(cache.rglob("*.incomplete"))


def test_drop_before_the_first_10_mib_restarts_from_zero(local_hub: LocalHub, tmp_path: Path) -> None:
    local_hub.add_commit("org/model", _model_files())
    local_hub.fail_after("model.safetensors", 30_000)
    cache = tmp_path / "cache"

    path = hf_hub_download("org/model", "model.safetensors", endpoint=local_hub.url, cache_dir=cache)

    assert Path(path).read_bytes() == WEIGHTS
    gets = [r for r in local_hub.request_log if r.method == "GET"]
    assert [(r.range, r.status, r.bytes_sent) for r in gets] == [
        (None, 200, 30_000),
        (None, 200, len(WEIGHTS)),
    ]


_KILLABLE_CLIENT = """
import sys
from huggingface_hub import snapshot_download
snapshot_download(sys.argv[1], cache_dir=sys.argv[2], max_workers=1)
"""


def _size_or_zero(path: Path) -> int:
    """A file's size; 0 once it is gone (a small file's partial download is renamed to its blob at once)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def test_killed_download_leaves_an_incomplete_blob_that_is_never_resumed(local_hub: LocalHub, tmp_path: Path) -> None:
    big = os.urandom(MIB10 + 200_000)
    commit = local_hub.add_commit("org/model", {"config.json": CONFIG, "model.safetensors": big})
    cache = tmp_path / "cache"
    blobs = cache / "models--org--model" / "blobs"
    # Every transfer dies just past the first 10 MiB write: the client keeps one full chunk on disk and
    # spends ~5 s in its retry loop, a wide and deterministic window to kill it in.
    local_hub.fail_after("model.safetensors", MIB10 + 64 * 1024, times=None)
    # Also proves HF_ENDPOINT works: the subprocess is given no endpoint argument.
    env = {**os.environ, "HF_ENDPOINT": local_hub.url, "HF_HOME": str(tmp_path / "hf_home")}
    env |= {"HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE_CLIENT, "org/model", str(cache)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        partial: list[Path] = []
        while not partial and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
            partial = [p for p in blobs.glob("*.incomplete") if _size_or_zero(p) >= MIB10] if blobs.is_dir() else []
    finally:
        proc.kill()  # SIGKILL: unlike Ctrl-C, no `finally` in the client gets to delete the temp file
        proc.wait()
    local_hub.clear_faults()
    assert partial, f"no partial download seen (client exit code {proc.returncode})"
    cut = [r for r in local_hub.request_log if r.method == "GET" and r.path.endswith("model.safetensors")]
    assert cut[0].range is None and MIB10 <= cut[0].bytes_sent <= MIB10 + 64 * 1024

    # What a killed 2.4 client leaves: <etag>.<8 hex>.incomplete (process-unique), no final blob, no pointer.
    (leftover,) = partial
    etag = sha256_hex(big)
    name, suffix, ext = leftover.name.split(".")
    assert (name, len(suffix), ext) == (etag, 8, "incomplete")
    assert leftover.read_bytes() == big[:MIB10]
    assert not (blobs / etag).exists()
    repo_dir = cache / "models--org--model"
    assert not (repo_dir / "snapshots" / commit / "model.safetensors").exists()
    assert (repo_dir / "refs" / "main").read_text() == commit
    assert (repo_dir / "trees" / f"{commit}.json").is_file()

    # A new run downloads from scratch (no Range) and leaves the stale temp file behind.
    local_hub.clear_log()
    snapshot_download("org/model", endpoint=local_hub.url, cache_dir=cache)
    assert (blobs / etag).read_bytes() == big
    gets = [r for r in local_hub.request_log if r.method == "GET" and r.path.endswith("model.safetensors")]
    assert [(r.range, r.bytes_sent) for r in gets] == [(None, len(big))]
    assert leftover.exists()


def test_throttle_slows_file_bodies(local_hub: LocalHub, tmp_path: Path) -> None:
    local_hub.add_commit("org/model", _model_files())
    local_hub.throttle(400_000)
    start = time.monotonic()
    hf_hub_download("org/model", "model.safetensors", endpoint=local_hub.url, cache_dir=tmp_path / "cache")
    assert time.monotonic() - start >= len(WEIGHTS) / 400_000 * 0.9


def test_lfs_redirect_to_a_cdn_origin(tmp_path: Path, hf_home: Path) -> None:
    with LocalHub(lfs_redirect=True) as hub:
        hub.add_commit("org/model", _model_files())
        snapshot = Path(snapshot_download("org/model", endpoint=hub.url, cache_dir=tmp_path / "cache"))

        assert (snapshot / "model.safetensors").read_bytes() == WEIGHTS
        assert hub.cdn_url is not None and hub.cdn_url != hub.url
        log = {(r.method, r.path.rsplit("/", 1)[-1]): r for r in hub.request_log}
        assert log["HEAD", "model.safetensors"].status == 302  # metadata taken from the 302 itself
        assert log["GET", sha256_hex(WEIGHTS)].path.startswith("/cdn-lfs/")
        assert ("GET", "model.safetensors") not in log  # the client went straight to the CDN
        assert log["HEAD", "config.json"].status == 200  # small files are never redirected


def test_lfs_overrides(local_hub: LocalHub, tmp_path: Path) -> None:
    assert default_is_lfs("weights.gguf", b"") and default_is_lfs("x.txt", b"\0" * (10 * 1024 * 1024))
    assert not default_is_lfs("x.txt", b"\0" * (10 * 1024 * 1024 - 1))
    local_hub.add_commit("org/a", {"weights.dat": b"w" * 50, "model.bin": b"b" * 50}, lfs=["weights.dat"])
    local_hub.create_repo("org/b", lfs_rule=lambda path, content: path.endswith(".dat"))
    local_hub.add_commit("org/b", {"weights.dat": b"w" * 50})
    assert local_hub.file("org/a", "weights.dat").lfs and not local_hub.file("org/a", "model.bin").lfs
    assert local_hub.file("org/b", "weights.dat").lfs

    snapshot = Path(snapshot_download("org/a", endpoint=local_hub.url, cache_dir=tmp_path / "cache"))

    assert os.readlink(snapshot / "weights.dat").endswith(sha256_hex(b"w" * 50))
    assert os.readlink(snapshot / "model.bin").endswith(git_blob_sha1(b"b" * 50))


def test_api_listing_pagination_and_metadata(tmp_path: Path, hf_home: Path) -> None:
    with LocalHub(tree_page_size=2) as hub:
        commit = hub.add_commit("org/model", {**_model_files(), "tokenizer/extra/merges.txt": b"a b"})
        hub.tag("org/model", "v1", commit)
        api = HfApi(endpoint=hub.url)

        everything = list(api.list_repo_tree("org/model", recursive=True))
        # 4 files + 2 folders (recursive listings include folders), 2 per page.
        assert sum(r.path.startswith("/api/models/org/model/tree/") for r in hub.request_log) == 3
        assert sorted(e.path for e in everything) == sorted(
            [*_model_files(), "tokenizer/extra/merges.txt", "tokenizer", "tokenizer/extra"]
        )
        top = list(api.list_repo_tree("org/model"))
        assert sorted(e.path for e in top) == ["config.json", "model.safetensors", "tokenizer"]
        sub = list(api.list_repo_tree("org/model", path_in_repo="tokenizer", expand=True))
        assert sorted(e.path for e in sub) == ["tokenizer/extra", "tokenizer/tokenizer.json"]
        assert all(e.last_commit is not None and e.last_commit.oid == commit for e in sub)

        info = api.model_info("org/model", revision="v1", files_metadata=True)
        assert info.sha == commit and info.siblings is not None
        weights = next(s for s in info.siblings if s.rfilename == "model.safetensors")
        assert weights.size == len(WEIGHTS) and weights.lfs is not None
        assert weights.lfs.sha256 == sha256_hex(WEIGHTS)
        plain = api.model_info("org/model")  # like the Hub: no sizes unless files_metadata=True
        assert plain.siblings is not None and all(s.size is None for s in plain.siblings)
        refs = api.list_repo_refs("org/model")
        assert [(b.name, b.target_commit) for b in refs.branches] == [("main", commit)]
        assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", commit)]

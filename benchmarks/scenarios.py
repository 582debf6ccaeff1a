"""The benchmark scenarios, built as huggingface_hub 2.4 builds them.

Every scenario starts with template repos downloaded through the REAL client from `LocalHub`
(`snapshot_download` into a cache, and with `local_dir=` into a models folder). The data-heavy
scenario is built that way in full. The metadata-heavy and scale scenarios have thousands of
repos, which would take the client about 0.45 s each over HTTP, so after the templates the
remaining repos are replicated on disk by `replicate_cache_repo` / `replicate_local_dir`, which
use huggingface_hub's own writers where it has them (`write_tree_cache`, `write_download_metadata`,
`get_local_download_paths`, `_cache_commit_hash_for_specific_revision`). Before replicating, the
templates are replicated into a scratch folder too and compared entry by entry with what the
client wrote (`compare_layouts`): names, types, modes, symlink targets, bytes, and each
`.metadata` file's commit, etag and a timestamp not older than its file. Any difference stops
the build.

Each built scenario leaves `manifest.json` with the ground truth: every model file's sha256,
size and path, so the runner can check what each tool found and list the bytes that must be read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcache.testing import HubFile, LocalHub, default_is_lfs, git_blob_sha1
from modelcache.testing.builders import client_env, download_to_cache, download_to_local_dir, random_bytes

BUILD_VERSION = 3  # bump when a generator changes: trees on disk are rebuilt

# The default .gitattributes of a new Hub repo: byte-identical in almost every repo of a real cache.
_LFS_EXTENSIONS = (
    *("7z", "arrow", "bin", "bz2", "ckpt", "ftz", "gz", "h5", "joblib", "lfs.*", "mlmodel", "model", "msgpack"),
    *("npy", "npz", "onnx", "ot", "parquet", "pb", "pickle", "pkl", "pt", "pth", "rar", "safetensors", "tar"),
    *("tflite", "tgz", "wasm", "xz", "zip", "zst"),
)
GITATTRIBUTES = (
    "".join(f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in _LFS_EXTENSIONS)
    + "saved_model/**/* filter=lfs diff=lfs merge=lfs -text\n*tfevents* filter=lfs diff=lfs merge=lfs -text\n"
).encode()

MB = 1_000_000


@dataclass(frozen=True)
class RepoSpec:
    repo_id: str
    files: dict[str, bytes]
    local: bool  # also downloaded with `local_dir=` into the models folder

    @property
    def folder(self) -> str:
        return "models--" + self.repo_id.replace("/", "--")

    @property
    def local_name(self) -> str:
        return self.repo_id.split("/")[-1]


def _log_size(rng: random.Random, low: int, high: int) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


# -- generators -----------------------------------------------------------------------------------------


def small_repo(i: int, tag: str, parts: int = 32) -> RepoSpec:
    """About 50 small files (19 + `parts`), as a small model repo has: configs, tokenizer files, data
    parts, small shards.

    Shared with other repos: `.gitattributes` (all repos) and the tokenizer files of its family (one
    base model in 40). One repo in ten is also downloaded with `local_dir=`.
    """
    rng = random.Random(f"{tag}-{i}")
    family = i % 40
    files: dict[str, bytes] = {".gitattributes": GITATTRIBUTES}

    def unique(path: str, low: int, high: int) -> None:
        files[path] = random_bytes(_log_size(rng, low, high), f"{tag}-{i}-{path}")

    unique("README.md", 200, 8000)
    for name in ("config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json"):
        unique(name, 100, 4000)
    fam = random.Random(f"{tag}-family-{family}")
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        files[name] = random_bytes(_log_size(fam, 16_384, 65_536), f"{tag}-family-{family}-{name}")
    for k in range(parts):
        unique(f"data/part-{k:03d}.json", 100, 16_384)
    for k in range(10):
        unique(f"weights/shard-{k:02d}.safetensors", 4096, 131_072)
    return RepoSpec(f"bench-org{i % 50}/model-{i:05d}", files, local=i % 10 == 0)


def data_repo(i: int, scale: float) -> RepoSpec:
    """A model repo with ~150 MB of weights (x `scale`); one in two also downloaded with `local_dir=`.

    Ten families (architectures) of four fine-tunes: same shard count and sizes in a family, and the
    same first bytes (a safetensors header describes the tensors, not their values), different
    weights. The family's tokenizer files are identical in its four repos (as fine-tunes keep the
    base model's tokenizer).
    """
    family = i % 10
    fam = random.Random(f"data-family-{family}")
    n_shards = 1 + family % 3
    shard_size = int(scale * 145 * MB / n_shards * fam.uniform(0.85, 1.15))
    header = random_bytes(fam.randrange(8_000, 48_000), f"data-header-{family}")
    rng = random.Random(f"data-{i}")
    files: dict[str, bytes] = {
        ".gitattributes": GITATTRIBUTES,
        "README.md": random_bytes(rng.randrange(500, 6000), f"data-{i}-readme"),
        "config.json": random_bytes(rng.randrange(600, 1500), f"data-{i}-config"),
        "generation_config.json": random_bytes(rng.randrange(100, 300), f"data-{i}-gen"),
        "tokenizer.json": random_bytes(int(fam.uniform(1.5, 3.5) * MB), f"data-family-{family}-tok"),
        "tokenizer_config.json": random_bytes(fam.randrange(1000, 5000), f"data-family-{family}-tokcfg"),
    }
    for k in range(n_shards):
        body = random_bytes(shard_size - len(header), f"data-{i}-shard-{k}")
        files[f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors"] = header + body
    return RepoSpec(f"bench-data/model-{i:02d}", files, local=i % 2 == 0)


MIXED_LLM_EVERY = 15  # one repo in 15 is LLM-like, the others small models
MIXED_FINE_TUNES = 4  # the first LLM-like repos: a base model and its fine-tunes


def mixed_repo(i: int, scale: float) -> RepoSpec:
    """A repo of the mixed scenario (issue 17): LLM-like (one in `MIXED_LLM_EVERY`) or a small model;
    one in four (i % 4 == 1) also downloaded with `local_dir=`."""
    llm = i % MIXED_LLM_EVERY == 0
    spec = _llm_repo(i, scale) if llm else _small_model_repo(i)
    return RepoSpec(spec.repo_id, spec.files, local=i % 4 == 1)


def _llm_repo(i: int, scale: float) -> RepoSpec:
    """A few JSON files, tokenizer files of a few MB, 1 to 3 safetensors shards of tens of MB (x `scale`).

    The first `MIXED_FINE_TUNES` are one family of fine-tunes: the same shard count and sizes, the same
    first bytes of each shard (a safetensors header describes the tensors, not their values) and the
    same tokenizer files; other weights. The others are unrelated models.
    """
    rng = random.Random(f"mixed-llm-{i}")
    in_family = i < MIXED_LLM_EVERY * MIXED_FINE_TUNES
    fam = random.Random("mixed-llm-family") if in_family else random.Random(f"mixed-llm-{i}-own")
    tag = "mixed-llm-family" if in_family else f"mixed-llm-{i}"
    n_shards = fam.randint(1, 3)
    sizes = [int(scale * _log_size(fam, 8 * MB, 40 * MB)) for _ in range(n_shards)]
    header = random_bytes(fam.randrange(8_000, 48_000), f"{tag}-header")
    files: dict[str, bytes] = {
        ".gitattributes": GITATTRIBUTES,
        "README.md": random_bytes(rng.randrange(500, 9000), f"mixed-llm-{i}-readme"),
        "config.json": random_bytes(rng.randrange(600, 1500), f"mixed-llm-{i}-config"),
        "generation_config.json": random_bytes(rng.randrange(100, 300), f"mixed-llm-{i}-gen"),
        "special_tokens_map.json": random_bytes(fam.randrange(200, 700), f"{tag}-special"),
        "tokenizer_config.json": random_bytes(fam.randrange(1000, 9000), f"{tag}-tokcfg"),
        "tokenizer.json": random_bytes(_log_size(fam, 2 * MB, 8 * MB), f"{tag}-tok"),
    }
    if fam.random() < 0.5:
        files["tokenizer.model"] = random_bytes(_log_size(fam, MB // 2, 4 * MB), f"{tag}-spm")
    for k, size in enumerate(sizes):
        name = f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors" if n_shards > 1 else "model.safetensors"
        files[name] = header + random_bytes(size - len(header), f"mixed-llm-{i}-shard-{k}")
    if n_shards > 1:
        files["model.safetensors.index.json"] = random_bytes(rng.randrange(20_000, 60_000), f"mixed-llm-{i}-index")
    return RepoSpec(f"bench-mixed/llm-{i:03d}", files, local=False)


def _small_model_repo(i: int) -> RepoSpec:
    """Tens of files from a few bytes to a few MB: configs, a vocabulary shared by the family (one base
    model in 25), small weights in several formats, data parts."""
    rng = random.Random(f"mixed-small-{i}")
    family = i % 25
    fam = random.Random(f"mixed-small-family-{family}")
    files: dict[str, bytes] = {".gitattributes": GITATTRIBUTES}

    def unique(path: str, low: int, high: int) -> None:
        files[path] = random_bytes(_log_size(rng, low, high), f"mixed-small-{i}-{path}")

    unique("README.md", 200, 8000)
    for name in ("config.json", "preprocessor_config.json", "tokenizer_config.json"):
        unique(name, 20, 4000)
    for name in ("vocab.txt", "tokenizer.json"):
        files[name] = random_bytes(_log_size(fam, 100_000, 2 * MB), f"mixed-small-family-{family}-{name}")
    for name in ("model.safetensors", "pytorch_model.bin", "onnx/model.onnx"):
        if rng.random() < 0.7:
            unique(name, 100_000, 2 * MB)
    for k in range(rng.randint(4, 16)):
        unique(f"data/part-{k:03d}.bin", 20, 1_000_000)
    return RepoSpec(f"bench-mixed/small-{i:03d}", files, local=False)


# -- replication with huggingface_hub's own writers -------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    """One repo file with the identifiers the Hub gives it (computed once: hashing is the slow part)."""

    path: str
    content: bytes
    lfs: bool
    sha256: str
    blob_id: str  # what the tree listing reports
    etag: str  # the cache blob's name: sha256 for LFS files, git blob sha1 otherwise

    @property
    def size(self) -> int:
        return len(self.content)


def file_infos(spec: RepoSpec) -> list[FileInfo]:
    out = []
    for path, content in sorted(spec.files.items()):
        f = HubFile(path, content, default_is_lfs(path, content))
        sha = hashlib.sha256(content).hexdigest()
        out.append(FileInfo(path, content, f.lfs, sha, f.blob_id, sha if f.lfs else git_blob_sha1(content)))
    return out


def _tree_entries(files: list[FileInfo]) -> dict[str, Any]:
    from huggingface_hub._tree_cache import TreeCacheEntry

    return {
        f.path: TreeCacheEntry(
            size=f.size,
            blob_id=f.blob_id,
            lfs_sha256=f.sha256 if f.lfs else None,
            lfs_size=f.size if f.lfs else None,
        )
        for f in files
    }


def commit_sha(spec: RepoSpec) -> str:
    listing = "".join(f"{p}\n{hashlib.sha1(c).hexdigest()}\n" for p, c in sorted(spec.files.items()))
    return hashlib.sha1(f"model/{spec.repo_id}\n{listing}".encode()).hexdigest()


_LOCK_MODE = 0o664  # huggingface_hub.utils.WeakFileLock passes mode=0o664 to filelock, which fchmods it


def replicate_cache_repo(cache: Path, spec: RepoSpec, commit: str, files: list[FileInfo]) -> None:
    """Write `spec` into an HF cache as `snapshot_download(cache_dir=cache)` does."""
    from huggingface_hub._local_folder import _create_cachedir_tag
    from huggingface_hub._tree_cache import write_tree_cache
    from huggingface_hub.file_download import _cache_commit_hash_for_specific_revision

    storage = os.path.join(cache, spec.folder)
    write_tree_cache(storage, commit, _tree_entries(files))
    locks = os.path.join(cache, ".locks", spec.folder)
    blobs = os.path.join(storage, "blobs")
    os.makedirs(locks, exist_ok=True)
    os.makedirs(blobs, exist_ok=True)
    _create_cachedir_tag(cache)
    _cache_commit_hash_for_specific_revision(storage, "main", commit)
    snapshot = os.path.join(storage, "snapshots", commit)
    made: set[str] = set()
    for f in files:
        lock = os.path.join(locks, f"{f.etag}.lock")
        if not os.path.exists(lock):
            os.close(os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600))
            os.chmod(lock, _LOCK_MODE)
        blob = os.path.join(blobs, f.etag)
        if not os.path.exists(blob):
            with open(blob, "wb") as out:
                out.write(f.content)
        pointer = os.path.join(snapshot, f.path)
        parent = os.path.dirname(pointer)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        os.symlink(os.path.relpath(blob, parent), pointer)  # as file_download._create_symlink


def replicate_local_dir(cache: Path, local_dir: Path, spec: RepoSpec, commit: str, files: list[FileInfo]) -> None:
    """`snapshot_download(local_dir=local_dir, cache_dir=cache)` of a repo already in the cache: copies."""
    from huggingface_hub._local_folder import get_local_download_paths, write_download_metadata
    from huggingface_hub._tree_cache import tree_cache_folder_for_local_dir, write_tree_cache
    from huggingface_hub.file_download import _cache_commit_hash_for_specific_revision
    from huggingface_hub.utils import WeakFileLock

    write_tree_cache(tree_cache_folder_for_local_dir(str(local_dir)), commit, _tree_entries(files))
    storage = cache / spec.folder
    _cache_commit_hash_for_specific_revision(str(storage), "main", commit)
    for f in files:
        paths = get_local_download_paths(local_dir, f.path)
        with WeakFileLock(paths.lock_path):
            shutil.copyfile(storage / "blobs" / f.etag, paths.file_path)
        write_download_metadata(local_dir=local_dir, filename=f.path, commit_hash=commit, etag=f.etag)


# -- the layout check ----------------------------------------------------------------------------------


def describe(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry below `root`: what a client-written and a replicated tree must agree on."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode)
            elif rel.endswith(".metadata") and "/.cache/huggingface/download/" in f"/{rel}":
                commit, etag, timestamp = Path(path).read_text().splitlines()
                local_dir, file_rel = f"/{rel}".split("/.cache/huggingface/download/")
                described = os.path.join(root, local_dir.lstrip("/"), file_rel[: -len(".metadata")])
                fresh = os.stat(described).st_mtime <= float(timestamp)
                out[rel] = ("metadata", mode, commit, etag, "fresh" if fresh else "OLDER THAN FILE")
            else:
                out[rel] = ("file", mode, st.st_size, hashlib.sha256(Path(path).read_bytes()).hexdigest())
    return out


def compare_layouts(client: Path, replica: Path) -> list[str]:
    a, b = describe(client), describe(replica)
    problems = [f"only in client tree: {k}" for k in sorted(a.keys() - b.keys())]
    problems += [f"only in replica: {k}" for k in sorted(b.keys() - a.keys())]
    problems += [f"differs: {k}: client {a[k]} replica {b[k]}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    problems += [f"stale metadata: {k}" for k, v in a.items() if v[0] == "metadata" and v[-1] != "fresh"]
    return problems


# -- building ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_client() -> Iterator[None]:
    """The client's settings for LocalHub (`client_env`), without progress bars."""
    from huggingface_hub.utils.tqdm import disable_progress_bars

    disable_progress_bars()
    with client_env():
        yield


class Manifest:
    """Ground truth: every model file written (path, size, sha256), and counts."""

    def __init__(self) -> None:
        self.files: list[tuple[str, int, str]] = []

    def add_repo(self, cache: Path, models: Path, spec: RepoSpec, files: list[FileInfo]) -> None:
        storage = cache / spec.folder / "blobs"
        for f in files:
            self.files.append((str(storage / f.etag), f.size, f.sha256))
            if spec.local:
                self.files.append((str(models / spec.local_name / f.path), f.size, f.sha256))


def _client_repo(hub: LocalHub, cache: Path, models: Path, spec: RepoSpec) -> str:
    commit = hub.add_commit(spec.repo_id, spec.files)
    download_to_cache(hub, spec.repo_id, cache)
    if spec.local:
        download_to_local_dir(hub, spec.repo_id, models / spec.local_name, cache)
    return commit


def build_small_repos(
    root: Path, n_repos: int, templates: int, tag: str, log: Callable[[str], None], parts: int = 32
) -> Manifest:
    """`n_repos` small repos: the first `templates` through the client, checked, the rest replicated."""
    cache, models = root / "hub", root / "models"
    manifest = Manifest()
    templates = min(templates, n_repos)
    specs = [small_repo(i, tag, parts) for i in range(templates)]
    commits: list[str] = []
    t0 = time.monotonic()
    with quiet_client(), LocalHub() as hub:
        for spec in specs:
            commits.append(_client_repo(hub, cache, models, spec))
            manifest.add_repo(cache, models, spec, file_infos(spec))
    log(f"  {templates} template repos through huggingface_hub + LocalHub in {time.monotonic() - t0:.0f} s")
    check = root.parent / f".layout-check-{root.name}"
    shutil.rmtree(check, ignore_errors=True)
    for spec, commit in zip(specs, commits, strict=True):
        files = file_infos(spec)
        replicate_cache_repo(check / "hub", spec, commit, files)
        if spec.local:
            replicate_local_dir(check / "hub", check / "models" / spec.local_name, spec, commit, files)
    problems = compare_layouts(root, check)
    if problems:
        raise SystemExit("replicated layout differs from the client's:\n  " + "\n  ".join(problems[:40]))
    shutil.rmtree(check)
    log(f"  layout check: replicas of the {templates} templates match the client's trees entry for entry")
    t0 = time.monotonic()
    for i in range(templates, n_repos):
        spec = small_repo(i, tag, parts)
        files = file_infos(spec)
        commit = commit_sha(spec)
        replicate_cache_repo(cache, spec, commit, files)
        if spec.local:
            replicate_local_dir(cache, models / spec.local_name, spec, commit, files)
        manifest.add_repo(cache, models, spec, files)
        if (i + 1) % 500 == 0:
            log(f"  {i + 1}/{n_repos} repos ({time.monotonic() - t0:.0f} s)")
    return manifest


def build_data(root: Path, n_repos: int, scale: float, log: Callable[[str], None]) -> Manifest:
    """Every repo through the real client, one LocalHub at a time (it holds the bytes in memory)."""
    cache, models = root / "hub", root / "models"
    manifest = Manifest()
    t0 = time.monotonic()
    with quiet_client():
        for i in range(n_repos):
            spec = data_repo(i, scale)
            with LocalHub() as hub:
                _client_repo(hub, cache, models, spec)
            manifest.add_repo(cache, models, spec, file_infos(spec))
            log(f"  repo {i + 1}/{n_repos} downloaded ({time.monotonic() - t0:.0f} s)")
    return manifest


def build_mixed(root: Path, n_repos: int, scale: float, log: Callable[[str], None]) -> Manifest:
    """Every repo through the real client, a LocalHub for each 25 (it holds their bytes in memory)."""
    cache, models = root / "hub", root / "models"
    manifest = Manifest()
    t0 = time.monotonic()
    with quiet_client():
        for start in range(0, n_repos, 25):
            specs = [mixed_repo(i, scale) for i in range(start, min(n_repos, start + 25))]
            with LocalHub() as hub:
                for spec in specs:
                    _client_repo(hub, cache, models, spec)
                    manifest.add_repo(cache, models, spec, file_infos(spec))
            log(f"  {start + len(specs)}/{n_repos} repos downloaded ({time.monotonic() - t0:.0f} s)")
    return manifest


def count_entries(roots: list[Path]) -> dict[str, int]:
    counts = {"files": 0, "symlinks": 0, "dirs": 0, "bytes": 0}
    stack = [str(r) for r in roots if r.exists()]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    counts["dirs"] += 1
                    stack.append(e.path)
                elif e.is_symlink():
                    counts["symlinks"] += 1
                else:
                    counts["files"] += 1
                    counts["bytes"] += e.stat(follow_symlinks=False).st_size
    return counts


@dataclass
class Built:
    name: str
    root: Path
    info: dict[str, Any]

    @property
    def cache(self) -> Path:
        return self.root / "hub"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def manifest(self) -> list[tuple[str, int, str]]:
        with open(self.root / "manifest.json") as f:
            return [tuple(x) for x in json.load(f)["files"]]  # type: ignore[misc]


def ensure(
    name: str, root: Path, params: dict[str, Any], build: Callable[[Path], Manifest], log: Callable[[str], None]
) -> Built:
    """Build the scenario under `root` unless a finished build with the same parameters is there."""
    stamp = root / "BUILT.json"
    params = {**params, "build_version": BUILD_VERSION}
    if stamp.exists():
        info = json.loads(stamp.read_text())
        if info.get("params") == params:
            log(f"{name}: reusing {root} ({info['counts']['files']:,} files, {info['counts']['symlinks']:,} symlinks)")
            return Built(name, root, info)
    log(f"{name}: building {root} {params}")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t0 = time.monotonic()
    manifest = build(root)
    counts = count_entries([root / "hub", root / "models"])
    with open(root / "manifest.json", "w") as f:
        json.dump({"files": manifest.files}, f)
    info = {"params": params, "counts": counts, "build_seconds": round(time.monotonic() - t0, 1)}
    stamp.write_text(json.dumps(info, indent=1))
    log(
        f"{name}: built in {info['build_seconds']} s: {counts['files']:,} files, {counts['symlinks']:,} symlinks, "
        f"{counts['bytes'] / 1e9:.2f} GB"
    )
    return Built(name, root, info)


def metadata_scenario(data_dir: Path, log: Callable[[str], None], n_repos: int = 2000, templates: int = 40) -> Built:
    params = {"repos": n_repos, "templates": templates}
    return ensure(
        "metadata", data_dir / "metadata", params, lambda r: build_small_repos(r, n_repos, templates, "meta", log), log
    )


def data_scenario(data_dir: Path, log: Callable[[str], None], n_repos: int = 40, scale: float = 1.0) -> Built:
    params = {"repos": n_repos, "scale": scale}
    return ensure("data", data_dir / "data", params, lambda r: build_data(r, n_repos, scale, log), log)


def mixed_scenario(data_dir: Path, log: Callable[[str], None], n_repos: int = 300, scale: float = 1.0) -> Built:
    params = {"repos": n_repos, "scale": scale}
    return ensure("mixed", data_dir / "mixed", params, lambda r: build_mixed(r, n_repos, scale, log), log)


def entries_per_small_repo(parts: int = 32) -> float:
    """Entries on disk (regular files and symlinks) a small repo makes: a blob, a snapshot link and a
    lock per file, a ref and a tree file; the tenth with a local_dir copy adds a copy, a metadata
    file and a lock per file, and a few more."""
    files = 19 + parts
    return 3 * files + 2 + 0.1 * (3 * files + 3)


def scale_scenario(
    data_dir: Path, n_files: int, log: Callable[[str], None], templates: int = 10, n_repos: int | None = None
) -> Built:
    """About `n_files` entries in small repos of 51 files, or, with `n_repos`, in that many repos (as
    many data parts per repo as it takes; the issue 8 scale run: 1,000,000 files in 10,000 repos)."""
    if n_repos is None:
        parts, n_repos = 32, max(templates, round(n_files / entries_per_small_repo()))
        name = f"scale-{n_files}"
    else:
        per_repo = n_files / n_repos
        parts = min(range(1, 200), key=lambda p: abs(entries_per_small_repo(p) - per_repo))
        name = f"scale-{n_files}-r{n_repos}"
    params: dict[str, Any] = {"files": n_files, "repos": n_repos, "templates": templates}
    if parts != 32:
        params["parts"] = parts
    return ensure(
        name,
        data_dir / name,
        params,
        lambda r: build_small_repos(r, n_repos, templates, "scale", log, parts),
        log,
    )


if __name__ == "__main__":  # python benchmarks/scenarios.py DIR N_REPOS: a small tree, for a look
    built = ensure(
        "sample",
        Path(sys.argv[1]),
        {"repos": int(sys.argv[2])},
        lambda r: build_small_repos(r, int(sys.argv[2]), 4, "sample", print),
        print,
    )
    print(built.info)

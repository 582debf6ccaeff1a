"""Reader for the ModelScope cache, both layouts (`MODELSCOPE_CACHE`, else `~/.cache/modelscope`).

Up to modelscope 1.37 (`<root>/hub/...`, or `MODELSCOPE_CACHE` itself):
```
models/<owner>/<name with . as ___>/<files>    .mdl {'id'}, .msc [{'Path','Revision'}], .mv "Revision:..."
models/<owner>/<real name> -> <masked folder>  (a folder symlink: skipped, never followed)
models/._____temp/<owner>/<name>/<path>        partial downloads (and <path>_<start>_<end> parts)
datasets/<owner>/<name>/...
.lock/<owner>___<name>                          snapshot locks
```
From 1.38 (`<root>/models/<owner>--<name>/snapshots/<revision>/<files>`), with partial
`<path>.incomplete`, `<path>_<start>_<end>` and `<path>.parallel_tmp` files beside the real ones,
written while modelscope_hub holds a `filelock` lock of that file,
`<root>/.lock/<repo type>_<owner>___<name>_<path with / as ___ and . as _>.lock` (flock on Linux;
the file stays after release). `clean` keeps a partial file while its lock is held.
No sha256 is stored on disk: copies are found by content. `.msc` and `.mdl` are pickles; they are
read with an unpickler that builds only plain values (a crafted file cannot run code).
Source: modelscope `hub/file_download.py`, `snapshot_download.py`, modelscope_hub `_download.py`
(`DownloadManager._lock_path`, `_optional_file_lock`, `_download_with_resume`, `_parallel_download`).
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

from ..common import SMALL_FILE_CAP, read_capped
from ..inventory import FileRecord, Repo, RepoStatus, Role
from ..store_kind import StoreKind
from .base import Collector, walk
from .registry import CleanKind, Guard, Partials, StoreSpec, from_env, home

STORE = StoreKind.declare("modelscope", rank=30)
TITLE = "ModelScope"
TEMP = "._____temp"
METADATA_FILES = {".mdl", ".msc", ".mv"}
PART = re.compile(r".+_\d+_\d+")
PART_SUFFIX = re.compile(r"_\d+_\d+\Z")
PARTIAL_SUFFIXES = (".incomplete", ".parallel_tmp")
LOCKS = ".lock"
FILE_LOCK = re.compile(r"(?:model|dataset)_.+\.lock")  # modelscope_hub's per-file locks (not 1.37's snapshot locks)
REPO_TYPES = {"models": "model", "datasets": "dataset"}


def locate() -> tuple[str, str]:
    return from_env("MODELSCOPE_CACHE", (home(".cache", "modelscope"), "default (~/.cache/modelscope)"))


def read_pickle(path: str) -> Any:
    """A `.msc` / `.mdl` file's plain value, or None when it is not one (or is a link, a FIFO, past 1 MiB)."""
    import pickle  # here: only a ModelScope cache has pickles, and the module is 1.5 ms of every start

    class PlainUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    try:
        return PlainUnpickler(io.BytesIO(read_capped(path, SMALL_FILE_CAP))).load()
    except Exception:  # any malformed pickle: report, never run
        return None


def is_partial(name: str) -> bool:
    return name.endswith(PARTIAL_SUFFIXES) or bool(PART.fullmatch(name))


def downloaded_file(partial: str) -> str:
    """The file a partial file is written for: `<file>.incomplete`, `<file>.parallel_tmp` and
    `<file>_<start>_<end>` are all `<file>`.

    >>> downloaded_file("sub/model.safetensors_0_99"), downloaded_file("a.bin.parallel_tmp")
    ('sub/model.safetensors', 'a.bin')
    """
    for suffix in PARTIAL_SUFFIXES:
        if partial.endswith(suffix):
            return partial[: -len(suffix)]
    return PART_SUFFIX.sub("", partial)


def file_lock(root: str, repo_type: str, repo_id: str, path: str) -> str:
    """The lock modelscope_hub holds while it downloads `path` of a repo into the cache at `root`.

    >>> file_lock("/c", "model", "Qwen/Qwen2.5-7B", "sub/model.safetensors")
    '/c/.lock/model_Qwen___Qwen2.5-7B_sub___model_safetensors.lock'
    """
    safe_file = path.replace("/", "___").replace(".", "_")
    return os.path.join(root, LOCKS, f"{repo_type}_{repo_id.replace('/', '___')}_{safe_file}.lock")


def partial_lock(record: FileRecord) -> str | None:
    """The lock of a partial file of the 1.38 layout, `<root>/<models|datasets>/<owner>--<name>/
    snapshots/<revision>/<path>...`; None for 1.37's `._____temp/` (no lock of a file: it is live
    while open). The repo id is the folder's name up to its first `--` (an owner with `--` in its
    name would be misread: none is known)."""
    repo = record.repo_key
    kind_dir, folder = os.path.split(repo)
    repo_type = REPO_TYPES.get(os.path.basename(kind_dir))
    snapshots = os.path.join(repo, "snapshots") + os.sep
    if repo_type is None or "--" not in folder or not record.path.startswith(snapshots):
        return None
    _revision, sep, path = record.path[len(snapshots) :].partition(os.sep)
    if not sep:
        return None
    return file_lock(os.path.dirname(kind_dir), repo_type, folder.replace("--", "/", 1), downloaded_file(path))


def is_file_lock(record: FileRecord) -> bool:
    """One of modelscope_hub's per-file locks (in `<root>/.lock/`)."""
    folder, name = os.path.split(record.path)
    return record.role is Role.METADATA and os.path.basename(folder) == LOCKS and bool(FILE_LOCK.fullmatch(name))


def read_modelscope(root: str, out: Collector) -> None:
    """Read whichever layouts are under `root` (it may be `~/.cache/modelscope` or its `hub/`)."""
    root = os.path.abspath(root)
    found = False
    for base in (root, os.path.join(root, "hub")):
        for kind in ("models", "datasets"):
            folder = os.path.join(base, kind)
            if os.path.isdir(folder):
                found = True
                _read_kind(folder, kind[:-1], out)
        lock_dir = os.path.join(base, LOCKS)
        for entry in walk(lock_dir, out.warn):
            if entry.is_file:
                out.add(entry, STORE, Role.METADATA, lock_dir, f"{LOCKS}/{entry.relpath}")
    if not found:
        out.warn(root, "not a ModelScope cache (no models/ or datasets/); skipped")


def _read_kind(folder: str, repo_type: str, out: Collector) -> None:
    for owner in sorted(os.listdir(folder)):
        owner_path = os.path.join(folder, owner)
        if owner == TEMP:
            for entry in walk(owner_path, out.warn):
                if entry.is_file:
                    out.add(entry, STORE, Role.INCOMPLETE, owner_path, entry.relpath)
            continue
        if os.path.islink(owner_path) or not os.path.isdir(owner_path):
            continue
        if "--" in owner and os.path.isdir(os.path.join(owner_path, "snapshots")):
            _read_new(owner_path, owner.replace("--", "/", 1), repo_type, out)
            continue
        for name in sorted(os.listdir(owner_path)):
            path = os.path.join(owner_path, name)
            if os.path.isdir(path) and not os.path.islink(path):  # the real-name symlink is skipped
                _read_old(path, f"{owner}/{name}", repo_type, out)


def _read_old(path: str, masked_id: str, repo_type: str, out: Collector) -> None:
    mdl = read_pickle(os.path.join(path, ".mdl")) if os.path.exists(os.path.join(path, ".mdl")) else None
    repo_id = str(mdl["id"]) if isinstance(mdl, dict) and isinstance(mdl.get("id"), str) else masked_id
    repo_id = repo_id.replace("___", ".")
    msc_path = os.path.join(path, ".msc")
    listed: set[str] | None = None
    problems: list[str] = []
    if os.path.exists(msc_path):
        msc = read_pickle(msc_path)
        if isinstance(msc, list) and all(isinstance(i, dict) and isinstance(i.get("Path"), str) for i in msc):
            listed = {i["Path"] for i in msc}
        else:
            out.warn(msc_path, "corrupt .msc file list; skipped")
    revision = ""
    try:
        text = read_capped(os.path.join(path, ".mv"), 4096).decode("utf-8")[:200]
        revision = text.split(",")[0].removeprefix("Revision:")
    except (OSError, UnicodeDecodeError):
        pass
    found: set[str] = set()
    for entry in walk(path, out.warn):
        if not entry.is_file:
            continue
        role = Role.METADATA if entry.relpath in METADATA_FILES else Role.MODEL
        out.add(entry, STORE, role, path)
        found.add(entry.relpath)
    status = RepoStatus.UNKNOWN
    if listed is not None:
        missing = listed - found
        status = RepoStatus.INCOMPLETE if missing else RepoStatus.COMPLETE
        if missing:
            problems.append(f"{len(missing)} of {len(listed)} files not downloaded")
    revisions = (revision,) if revision else ()
    out.repos.append(Repo(path, repo_id, repo_type, STORE, path, revisions, status, tuple(problems)))


def _read_new(path: str, repo_id: str, repo_type: str, out: Collector) -> None:
    snapshots = os.path.join(path, "snapshots")
    revisions = tuple(sorted(os.listdir(snapshots)))
    partial = 0
    for entry in walk(snapshots, out.warn):
        if not entry.is_file:
            continue
        if is_partial(os.path.basename(entry.path)):
            out.add(entry, STORE, Role.INCOMPLETE, path)
            partial += 1
        else:
            out.add(entry, STORE, Role.MODEL, path, entry.relpath.split("/", 1)[-1])
    status = RepoStatus.INCOMPLETE if partial else RepoStatus.UNKNOWN
    problems = (f"{partial} partial download file(s)",) if partial else ()
    out.repos.append(Repo(path, repo_id, repo_type, STORE, path, revisions, status, problems))


PARTIALS = Partials(
    CleanKind(f"{STORE.value}-partial", f"interrupted {TITLE} downloads"),
    Guard.TOOL_LOCK,
    locks=CleanKind(f"{STORE.value}-stale-lock", f"{TITLE} lock files nobody holds"),
    lock_of=partial_lock,
    is_lock=is_file_lock,
)
# modelscope_hub `_download.py` (>=1.38): `<path>.incomplete` (or `.parallel_tmp`) replaced over
# the file; modelscope <=1.37 `put_file` removes the old file, then moves the new one in.
SPEC = StoreSpec(
    STORE,
    TITLE,
    reader=read_modelscope,
    locate=locate,
    partials=PARTIALS,
    written_in_place_by=None,
)

"""What `prune` removes, whole or not at all: its units, built from a scan, and the probes that say
whether one may go now. Read-only; the planner (`prune.py`) orders the units and the acting side
(`act/prune.py`) removes them, asking these probes again right before.

The units:

- HF cache (always): a repo folder with its revisions, refs, file lists and blobs (`repo`); and each
  detached revision (no ref names it, while a ref names another) as a unit of its own (`revision`):
  its snapshot folder, file list, markers and the blobs no other revision of the repo links to, so
  that an old revision goes before its repo does. While a ref of the repo holds no commit hash, no
  revision of it counts as detached (it may name any of them: see clean.py).
- Ollama (`--store ollama`): a model's manifest and the blobs no other manifest names, as `ollama rm`.
- ModelScope (`--store modelscope`): a model's folder (and, in its 1.37 layout, the real-name symlink
  to it).
- llama.cpp (`--store llamacpp`): one model's cached file set (its files, their sidecars and its
  `manifest=` files); in its HF layout, a repo as in the HF cache.

Never a local_dir download or a plain model folder: those are the user's own folders, not caches
(prune reads no model folder at all).

Each unit lists its `steps` in removal order, the first being the one after which the unit is gone
for its tool (the repo folder, the snapshot folder, the manifest): the acting side moves them aside
in that order, so that a kill leaves the whole unit or none of it as the tool sees it, never a
snapshot or manifest naming a missing blob.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .common import within
from .inventory import FileRecord, Inventory, RepoScan, Role, inode_key, still_names
from .locks import LOCKS, is_locked
from .store_kind import StoreKind
from .stores.ollama import read_manifest

HF, REPO, REVISION = "hf_cache", "repo", "revision"


@dataclass(frozen=True, slots=True)
class Step:
    """One entry a unit's removal takes away, as it was found."""

    path: str
    dev: int
    ino: int
    is_dir: bool
    # A blob another revision or model may come to name meanwhile: the folder whose references are read
    # again right before it goes (a repo folder, whose snapshots are read; Ollama's manifests folder).
    unused_in: str | None = None


@dataclass(frozen=True, slots=True)
class Revision:
    """A revision a unit removes, as `undo` downloads it again: its commit, files and the refs naming it."""

    commit: str
    files: tuple[str, ...]
    refs: tuple[str, ...]


@dataclass(frozen=True)
class Unit:
    """One thing prune removes whole or not at all."""

    kind: str  # repo, revision, ollama, modelscope, llamacpp
    store: StoreKind
    name: str  # repo id or model name, as its tool shows it: what --keep matches
    repo_type: str
    path: str  # the folder or file that is the unit (a revision: its snapshot folder)
    root: str  # the cache or store folder it lies in
    steps: tuple[Step, ...]
    files: tuple[FileRecord, ...]  # every regular file its removal unlinks
    used_by: tuple[FileRecord, ...]  # the model files whose access times say when it was last used
    revisions: tuple[Revision, ...] = ()  # HF units: what undo downloads again
    parent: str | None = None  # a detached revision: its repo folder
    lock_dir: str | None = None  # where the locks of a download of it are ...
    lock_prefixes: tuple[str, ...] = ()  # ... named so ("": every lock in it)
    live: tuple[str, ...] = ()  # partial files that, while some process has one open, show a download of it

    @property
    def label(self) -> str:
        if self.kind == REVISION and self.revisions:
            return f"{self.name}@{self.revisions[0].commit[:12]}"
        return self.name

    @property
    def repo_folder(self) -> str | None:
        """An HF unit's repo folder name (`models--org--name`), under which its uses are recorded."""
        if self.kind not in (REPO, REVISION):
            return None
        return os.path.basename(self.parent or self.path)


def _step(path: str, unused_in: str | None = None) -> Step | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return Step(path, st.st_dev, st.st_ino, os.path.isdir(path) and not os.path.islink(path), unused_in)


def _steps(paths: Iterable[tuple[str, str | None]]) -> tuple[Step, ...]:
    return tuple(step for path, unused_in in paths if (step := _step(path, unused_in)) is not None)


def _model_files(records: Sequence[FileRecord]) -> tuple[FileRecord, ...]:
    return tuple(r for r in records if r.role is Role.MODEL)


# -- HF cache --------------------------------------------------------------------------------------------------


def hf_units(inventory: Inventory, by_repo: dict[str, list[FileRecord]], root: str, store: StoreKind) -> list[Unit]:
    """The repos of the HF cache layout at `root` (the HF cache, or llama.cpp's own), and their detached revisions."""
    units: list[Unit] = []
    for scan in inventory.hf_repos:
        if os.path.dirname(scan.repo_dir) != root:
            continue
        records = by_repo.get(scan.repo_dir, [])
        if not scan.commits and not _model_files(records):
            continue  # a folder of refs only: clean's garbage, not a model
        units += _hf_repo_units(scan, records, root, store)
    return units


def _hf_repo_units(scan: RepoScan, records: list[FileRecord], root: str, store: StoreKind) -> list[Unit]:
    links: dict[str, set[str]] = {}  # commit -> blob names its snapshot links to
    revisions = {}
    for snap in scan.snapshots:
        links[snap.commit] = {b for b in snap.blobs if b is not None}
        paths = tuple(dict.fromkeys([*snap.relpaths, *(r.relpath for r in snap.files)]))
        refs = tuple(sorted(name for name, commit in scan.refs.items() if commit == snap.commit))
        revisions[snap.commit] = Revision(snap.commit, paths, refs)
    lock_dir = os.path.join(root, LOCKS, os.path.basename(scan.repo_dir))

    def unit(kind: str, path: str, steps: tuple[Step, ...], files: Sequence[FileRecord], **more: object) -> Unit:
        return Unit(kind, store, scan.repo_id, scan.repo_type, path, root, steps, tuple(files), lock_dir=lock_dir,
                    **more)  # type: ignore[arg-type]  # fmt: skip

    repo = unit(
        REPO,
        scan.repo_dir,
        _steps([(scan.repo_dir, None)]),
        records,
        used_by=_model_files(records) or tuple(records),
        revisions=tuple(revisions.values()),
    )
    unreadable = any(name not in scan.refs for name in scan.ref_paths)
    named = set(scan.refs.values())
    if unreadable or not named & set(scan.commits):
        return [repo]  # no revision of it is detached (above): the repo is the one unit
    by_path = {r.path: r for r in records}
    blob_names = set(scan.blob_names)
    units = []
    for commit in (c for c in scan.commits if c not in named):
        own = links.get(commit, set()) - set().union(*(v for c, v in links.items() if c != commit))
        snapshot = os.path.join(scan.repo_dir, "snapshots", commit)
        trees = os.path.join(scan.repo_dir, "trees", commit + ".json")
        markers = os.path.join(scan.repo_dir, ".no_exist", commit)
        blobs = [os.path.join(scan.repo_dir, "blobs", name) for name in sorted(own) if name in blob_names]
        files = [by_path[p] for p in [trees, *blobs] if p in by_path]
        files += [r for r in records if r.path.startswith((snapshot + os.sep, markers + os.sep))]
        linked = [
            r for n in sorted(links.get(commit, ())) if (r := by_path.get(os.path.join(scan.repo_dir, "blobs", n)))
        ]
        units.append(
            unit(
                REVISION,
                snapshot,
                # The snapshot folder first: once it is gone the revision is, and no link names a missing blob.
                _steps([(snapshot, None), (trees, None), (markers, None), *((b, scan.repo_dir) for b in blobs)]),
                files,
                used_by=_model_files(files) or tuple(linked),
                revisions=(revisions[commit],),
                parent=scan.repo_dir,
            )
        )
    return [*units, repo]


def blob_still_named(repo_dir: str, blob: str) -> bool:
    """Whether a snapshot left in `repo_dir` links to the blob `blob` (a path in its blobs/)."""
    name = os.path.basename(blob)
    for dirpath, dirs, files in os.walk(os.path.join(repo_dir, "snapshots")):
        for entry in [*files, *dirs]:
            try:
                if os.path.basename(os.readlink(os.path.join(dirpath, entry))) == name:
                    return True
            except OSError:
                continue
    return False


# -- other tools' stores ---------------------------------------------------------------------------------------


def ollama_units(inventory: Inventory, by_repo: dict[str, list[FileRecord]], root: str) -> list[Unit]:
    """Each manifest (a model) with the blobs no other manifest names, as `ollama rm` removes them."""
    manifests_dir, blobs_dir = os.path.join(root, "manifests"), os.path.join(root, "blobs")
    layers: dict[str, list[str]] = {}
    for repo in inventory.repos:
        if repo.store is StoreKind.OLLAMA and within(repo.path, manifests_dir):
            found = read_manifest(repo.path)
            if not isinstance(found, str):  # a corrupt manifest is reported by the scan, and no unit
                layers[repo.path] = [hexdigest for hexdigest, _size in found]
    uses: dict[str, int] = {}
    for hexes in layers.values():
        for h in set(hexes):
            uses[h] = uses.get(h, 0) + 1
    by_path = {r.path: r for r in inventory.records if within(r.path, root)}
    live = tuple(r.path for r in by_path.values() if r.role is Role.INCOMPLETE)
    model_names = {repo.key: repo.repo_id for repo in inventory.repos}
    units = []
    for manifest, hexes in sorted(layers.items()):
        blobs = [os.path.join(blobs_dir, f"sha256-{h}") for h in sorted(set(hexes))]
        own = [b for b in blobs if uses[os.path.basename(b)[7:]] == 1]
        files = [by_path[p] for p in [manifest, *own] if p in by_path]
        units.append(
            Unit(
                "ollama",
                StoreKind.OLLAMA,
                model_names.get(manifest, manifest),
                "model",
                manifest,
                root,
                _steps([(manifest, None), *((b, manifests_dir) for b in own)]),
                tuple(files),
                _model_files(files) or tuple(by_path[b] for b in blobs if b in by_path),
                live=live,  # Ollama takes no lock: a partial blob some process has open is a pull under way
            )
        )
    return units


def ollama_blob_still_named(manifests_dir: str, blob: str) -> bool:
    """Whether a manifest left in `manifests_dir` names the blob `blob` (`blobs/sha256-<hex>`), or one
    cannot be read (then it may)."""
    wanted = os.path.basename(blob).removeprefix("sha256-")
    for dirpath, _dirs, files in os.walk(manifests_dir):
        for name in files:
            found = read_manifest(os.path.join(dirpath, name))
            if isinstance(found, str) or any(h == wanted for h, _ in found):
                return True
    return False


def modelscope_units(inventory: Inventory, by_repo: dict[str, list[FileRecord]], root: str) -> list[Unit]:
    """Each model (or dataset) folder, both layouts; with the 1.37 layout's real-name symlink to it."""
    units = []
    for repo in inventory.repos:
        if repo.store is not StoreKind.MODELSCOPE or not within(repo.path, root):
            continue
        folder = repo.path
        owner_dir = os.path.dirname(folder)  # <kind>/<owner> (1.37), or <kind> itself (>= 1.38: <owner>--<name>)
        kind_dir = owner_dir if "--" in os.path.basename(folder) else os.path.dirname(owner_dir)
        base = os.path.dirname(kind_dir)
        aliases = []
        try:
            for name in sorted(os.listdir(owner_dir)):
                alias = os.path.join(owner_dir, name)
                if os.path.islink(alias) and os.path.realpath(alias) == os.path.realpath(folder):
                    aliases.append(alias)
        except OSError:
            pass
        records = by_repo.get(folder, [])
        owner, _, model = repo.repo_id.partition("/")
        temp = os.path.join(kind_dir, "._____temp", owner, model) + os.sep
        units.append(
            Unit(
                "modelscope",
                StoreKind.MODELSCOPE,
                repo.repo_id,
                repo.repo_type,
                folder,
                root,
                _steps([(folder, None), *((a, None) for a in aliases)]),
                tuple(records),
                _model_files(records) or tuple(records),
                lock_dir=os.path.join(base, ".lock"),
                # modelscope_hub's per-file locks (>= 1.38), and 1.37's lock of a whole snapshot
                lock_prefixes=(f"{repo.repo_type}_{owner}___{model}_", f"{owner}___{model}"),
                live=tuple(r.path for r in inventory.records if r.path.startswith(temp)),
            )
        )
    return units


def llamacpp_units(inventory: Inventory, by_repo: dict[str, list[FileRecord]], root: str) -> list[Unit]:
    """Each model's cached file set in llama.cpp's flat cache: its `manifest=` files first (what llama.cpp
    looks a model up by), then the sidecars, then the model files; its HF layout is read as HF repos."""
    units = hf_units(inventory, by_repo, root, StoreKind.LLAMACPP)
    hf_layout = {u.path for u in units}
    loose = by_repo.get(root, [])
    for repo in inventory.repos:
        flat = repo.store is StoreKind.LLAMACPP and repo.path != root and within(repo.path, root)
        if not flat or repo.path in hf_layout or "/" not in repo.repo_id or repo.repo_type != "model":
            continue
        owner, _, model = repo.repo_id.partition("/")
        manifests = [
            r for r in loose if re.fullmatch(rf"manifest={re.escape(owner)}={re.escape(model)}=.*\.json", r.name)
        ]
        records = by_repo.get(repo.path, [])
        order = {Role.METADATA: 1, Role.MODEL: 2, Role.INCOMPLETE: 3}
        ordered = [*manifests, *sorted(records, key=lambda r: (order.get(r.role, 4), r.path))]
        units.append(
            Unit(
                "llamacpp",
                StoreKind.LLAMACPP,
                repo.repo_id,
                "model",
                repo.path,
                root,
                _steps((r.path, None) for r in ordered),
                tuple(ordered),
                _model_files(records) or tuple(records),
                live=tuple(r.path for r in records if r.role is Role.INCOMPLETE),
            )
        )
    return units


# -- may it go now? ------------------------------------------------------------------------------------------


def pinned(unit: Unit, keep: Sequence[tuple[str, str]]) -> str | None:
    """Why `unit` is pinned (its name matches a `--keep` or config pattern: (pattern, where from)), or None."""
    for pattern, source in keep:
        if fnmatch.fnmatchcase(unit.name, pattern):
            return f"pinned: matches {source} {pattern!r}"
    return None


def unit_locks(unit: Unit) -> list[str]:
    """The lock files a download of `unit` takes, as they are now (sorted: taken in one order by all)."""
    return sorted(path for path, _ino in _lock_entries(unit))


def _lock_entries(unit: Unit) -> list[tuple[str, int]]:
    if unit.lock_dir is None:
        return []
    prefixes = unit.lock_prefixes or ("",)
    try:
        with os.scandir(unit.lock_dir) as it:
            return [(e.path, e.inode()) for e in it if e.name.startswith(prefixes)]
    except OSError:
        return []


def busy(unit: Unit, open_now: set[tuple[int, int]], held: set[int] | None = None, *, probe: bool = True) -> str | None:
    """Why `unit` is being downloaded now (a lock of it held, a partial file of it open), or None. `held`: the
    inodes `locks.held_lock_inodes` found locked (None: probe each lock file); `probe` False: the caller holds
    the unit's locks itself, so that any probe would find its own hold."""
    if probe:
        entries = _lock_entries(unit)
        if held is not None and any(ino in held for _path, ino in entries):
            return "being downloaded: a lock of its download is held"
        if held is None and any(is_locked(path) for path, _ino in entries):
            return "being downloaded: a lock of its download is held"
    for path in unit.live:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in open_now:
            return f"being downloaded: a live process has its partial file {os.path.basename(path)} open"
    return None


def in_use(unit: Unit, open_now: set[tuple[int, int]], *, recheck: bool = False) -> str | None:
    """Why `unit` is in use (a file of it open or memory-mapped by a live process: removing it would free
    nothing until that process ends), or None. `recheck`: only the files still there as the scan saw them
    count (a repo whose detached revision went before it: that revision's inodes are free, and may be
    another file's now, even one of this run's)."""
    for record in unit.files:
        if record.inode in open_now and (not recheck or still_names(record)):
            return f"in use: a live process has {record.relpath} open or memory-mapped"
    return None


def exclusive_inodes(records: Iterable[FileRecord]) -> dict[bytes, int]:
    """Per inode with more than one name: how many of `records` name it (prune's `names seen`)."""
    seen: dict[bytes, int] = {}
    for r in records:
        if r.nlink > 1:
            key = inode_key(r)
            seen[key] = seen.get(key, 0) + 1
    return seen


def atime_kept(root: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Why reads do not move access times on the mount holding `root` (`noatime`, or FUSE, which does as
    its daemon pleases), or None where they do (relatime, strictatime)."""
    real = os.path.realpath(root)
    best = ("", "", "")
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                point = re.sub(r"\\([0-7]{3})", lambda o: chr(int(o[1], 8)), fields[4])  # `\040` is a space
                if within(real, point) and len(point) >= len(best[0]):  # the deepest; of stacked ones, the last
                    best = (point, fields[5], fields[fields.index("-") + 1])
    except (OSError, ValueError, IndexError):
        return None
    point, options, fstype = best
    if "noatime" in options.split(","):
        return f"noatime mount {point}"
    if fstype.startswith("fuse"):
        return f"FUSE mount {point}"
    return None

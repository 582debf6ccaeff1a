"""Consolidation plans: what would change, and the facts each change relies on. Pure.

A `Plan` is made from an `Inventory` and its proven duplicate groups. In each group one
copy is kept, chosen by a visible rule (`keep_rank`); every other copy gets an `Action`:
replaced by a link to the kept copy, removed, left alone (outside what the mode does: in
auto, a copy that a next step of the user's tools would write through a link, `aliases`), or
skipped with a reason (the mode applies, a fact of this machine prevents it). Actions carry
the inode, size and mtime of both copies as the plan saw them: `act.consolidate` re-checks
them, and compares bytes, before it touches anything.

Plans serialise to JSON (`Plan.to_json` / `Plan.from_json`) for `--plan-out` and `apply`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from . import __version__
from .aliases import Writer, hardlink_risk, read_only_note, symlink_risk
from .common import display, read_capped, within
from .duplicates import DuplicateGroup
from .errors import InputError
from .inventory import FileRecord, Inventory, Role
from .modes import Mode
from .store_kind import StoreKind
from .stores.registry import spec_of

PLAN_SCHEMA = 1
MAX_PLAN_BYTES = 256 << 20  # about 2 KB per copy in the plan: room for 100,000 copies
# File systems whose copy-on-write clones (FICLONE) `auto` and `reflink` try.
REFLINK_FILESYSTEMS = {"btrfs", "xfs", "bcachefs", "ocfs2", "zfs"}


SYMLINK_RISK = (
    "a symlink into the HF cache vanishes with its target: `hf cache rm` and `hf cache prune` "
    "delete what a symlink points at, and this path then reads nothing"
)


@dataclass(frozen=True, slots=True)
class FileState:
    """What the plan saw of one copy; `act.consolidate` refuses to act if any of it changed."""

    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    store: str
    repo: str  # the repo folder, local_dir download or plain folder it belongs to

    @classmethod
    def of(cls, record: FileRecord) -> FileState:
        f = record.facts
        return cls(record.path, f.dev, f.ino, f.size, f.mtime_ns, record.store.value, record.repo_key)


@dataclass(frozen=True, slots=True)
class Adoption:
    """Where a local_dir file goes in the HF cache when it is adopted (`--adopt`)."""

    etag: str  # from the file's metadata: sha256 (LFS) or git blob sha1; verified before the move
    commit: str
    blob: str  # <cache>/<repo folder>/blobs/<etag>: the local file's inode, hard-linked in
    snapshot: str  # <cache>/<repo folder>/snapshots/<commit>/<path>, a relative symlink to the blob
    link_text: str
    ref: str | None  # <cache>/<repo folder>/refs/main, written when no such ref exists
    tree: str | None = None  # <cache>/<repo folder>/trees/<commit>.json, copied when absent ...
    tree_source: str | None = None  # ... from the local_dir's .cache/huggingface/trees/<commit>.json


@dataclass(frozen=True, slots=True)
class Action:
    """One copy to replace (`link`), remove (`delete`), leave alone (`leave`: outside what the mode does)
    or skip (`skip`: the mode applies, something on this machine prevents it), with the reason."""

    id: int
    kind: str  # "link" | "delete" | "adopt" | "skip" | "leave"
    methods: tuple[str, ...]  # link kinds to try in order: reflink, hardlink, symlink
    target: FileState
    keep: FileState
    digest: str  # sha256 of the content, proven when the plan was made
    keep_reason: str
    symlink_to: str | None = None  # the relative link text, for symlinks
    # why it is skipped or left alone; for an auto link by reflink alone, why no hard link is made instead
    # (the copy is left alone if the file system refuses the reflink)
    reason: str | None = None
    alternatives: tuple[str, ...] = ()  # modes that would reclaim a skipped or left-alone copy
    warnings: tuple[str, ...] = ()
    adopt: Adoption | None = None  # kind "adopt": the local file becomes the cache's blob
    # what a next step of the user's tools would write through the link made (explicit modes and
    # adoptions: auto makes no such link); stated in the dry run and before the run acts
    risks: tuple[str, ...] = ()

    @property
    def frees(self) -> int:
        """Bytes given back when this action runs (a reflink frees the blocks; all kinds free the size)."""
        return 0 if self.kind in ("skip", "leave", "adopt") else self.target.size

    @property
    def changes(self) -> bool:
        """Whether running it changes a file (a skipped or left-alone copy stays as it is)."""
        return self.kind not in ("skip", "leave")


@dataclass(frozen=True)
class PlanHeader:
    schema_version: int
    tool_version: str
    created_at: float
    argv: tuple[str, ...]
    roots: tuple[str, ...]
    mode: str
    complete: bool = True
    # whether file modes fail to stop the user the plan was made for (root); None in plans made before it
    # was recorded. `apply` refuses, as root, a plan whose hard links relied on modes that stop its user.
    ignores_modes: bool | None = None


@dataclass(frozen=True)
class FolderSummary:
    """How far the plan consolidates one local_dir download or plain folder."""

    path: str
    store: str
    files: int  # model files in it
    covered: int  # of which the plan links, removes or adopts
    only_here: tuple[str, ...]  # relpaths whose bytes exist nowhere else: they stay as they are
    cache_snapshot: str | None  # the HF cache snapshot holding this download's commit, when complete

    @property
    def fully_consolidated(self) -> bool:
        return self.covered == self.files and (self.store != "local_dir" or self.cache_snapshot is not None)


@dataclass(frozen=True)
class Plan:
    header: PlanHeader
    actions: tuple[Action, ...] = field(default_factory=tuple)
    folders: tuple[FolderSummary, ...] = ()

    @property
    def bytes_to_free(self) -> int:
        """Bytes freed once every action has run: the size of each copy whose last path goes."""
        going: dict[tuple[int, int], int] = {}
        staying: set[tuple[int, int]] = set()
        for a in self.actions:
            inode = (a.target.dev, a.target.ino)
            if a.kind == "adopt":
                continue
            if not a.changes:
                staying.add(inode)
            else:
                going[inode] = a.target.size
        return sum(size for inode, size in going.items() if inode not in staying)

    def refused_to(self, writer: Writer) -> str | None:
        """Why `writer` may not run this plan, or None. A plan made for a user whom file modes stop may hold
        hard links that only those modes keep safe; run by root, its next steps would write through them."""
        if self.header.ignores_modes or not writer.ignores_modes:
            return None
        for a in self.actions:
            names = {StoreKind(a.target.store), StoreKind(a.keep.store)}
            if "hardlink" in a.methods and hardlink_risk(names, StoreKind(a.keep.store), writer):
                which = _short(repr(display(a.target.path)))
                return (
                    f"this plan was made for a user whom file modes stop, and it hard-links copies that a next "
                    f"step would write through as {writer.who} ({which}): make a new plan as this user "
                    "(consolidate --dry-run --plan-out)"
                )
        return None

    def to_json(self) -> str:
        data = {
            "header": asdict(self.header),
            "actions": [asdict(a) for a in self.actions],
            "folders": [asdict(f) for f in self.folders],
        }
        return json.dumps(data, indent=1, ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Read a saved plan; anything malformed is an `InputError`, never a traceback.

        A plan is refused whole when a value has the wrong type, or a path is not absolute and
        clean or lies outside the plan's own roots (the folders `consolidate` read): such a plan
        is not one modelcache wrote, and none of its actions may run.
        """
        try:
            data = json.loads(text)
            header = PlanHeader(**{**data["header"], "argv": tuple(data["header"]["argv"])})
            if header.schema_version != PLAN_SCHEMA:
                raise InputError(
                    f"plan schema {_short(repr(header.schema_version))} is not supported (expected {PLAN_SCHEMA})"
                )
            actions = tuple(
                Action(
                    **{
                        **a,
                        "methods": tuple(a["methods"]),
                        "alternatives": tuple(a["alternatives"]),
                        "warnings": tuple(a["warnings"]),
                        "risks": tuple(a.get("risks", ())),
                        "target": FileState(**a["target"]),
                        "keep": FileState(**a["keep"]),
                        "adopt": Adoption(**a["adopt"]) if a.get("adopt") else None,
                    }
                )
                for a in data["actions"]
            )
            folders = tuple(FolderSummary(**{**f, "only_here": tuple(f["only_here"])}) for f in data.get("folders", []))
        except InputError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise InputError(f"not a modelcache plan: {e.__class__.__name__}: {_short(str(e))}") from None
        problem = _malformed(header, actions)
        if problem is not None:
            raise InputError(f"not a modelcache plan: {problem}")
        roots = tuple(header.roots)
        for path in [*roots, *(p for a in actions for p in _paths_of(a))]:
            if not os.path.isabs(path) or ".." in path.split(os.sep):
                raise InputError(f"plan holds a path that is not absolute and clean: {_short(repr(path))}")
        for a in actions:
            for path in [*_paths_of(a), *_link_destinations(a)]:
                if not any(within(path, root) for root in roots):
                    raise InputError(f"plan holds a path outside the folders it was made for: {_short(repr(path))}")
        return cls(PlanHeader(**{**asdict(header), "roots": roots}), actions, folders)


def _short(text: str, limit: int = 200) -> str:
    """Text from a file, cut to fit in a one-line message."""
    return text if len(text) <= limit else text[:limit] + "..."


_HEX_DIGEST = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_KINDS = ("link", "delete", "skip", "leave", "adopt")
_METHODS = ("reflink", "hardlink", "symlink")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _malformed(header: PlanHeader, actions: Sequence[Action]) -> str | None:
    """What in a parsed plan has a type or value that no plan of modelcache's has, or None."""
    if not isinstance(header.roots, list | tuple) or not all(isinstance(r, str) for r in header.roots):
        return "its roots are not a list of paths"
    if not isinstance(header.mode, str) or header.mode not in {m.value for m in Mode}:
        return f"unknown mode {_short(repr(header.mode), 40)}"
    if header.ignores_modes not in (True, False, None):
        return "its user's facts are not true or false"
    for a in actions:
        which = f"action {_short(repr(a.id), 40)}"
        if not _is_int(a.id) or a.kind not in _KINDS or not all(m in _METHODS for m in a.methods):
            return f"{which}: unknown id, kind or link method"
        for s in (a.target, a.keep):
            if not all(isinstance(v, str) for v in (s.path, s.store, s.repo)):
                return f"{which}: a path that is not text"
            if s.store not in {k.value for k in StoreKind}:
                return f"{which}: an unknown store {_short(repr(s.store), 40)}"
            if not all(_is_int(v) for v in (s.dev, s.ino, s.size, s.mtime_ns)):
                return f"{which}: file facts that are not whole numbers"
        if not isinstance(a.digest, str) or not _HEX_DIGEST.fullmatch(a.digest):
            return f"{which}: a digest that is not a hex digest"
        if not isinstance(a.keep_reason, str) or not all(isinstance(v, str | None) for v in (a.symlink_to, a.reason)):
            return f"{which}: a reason or link text that is not text"
        if not all(isinstance(v, str) for v in (*a.alternatives, *a.warnings, *a.risks)):
            return f"{which}: a mode, warning or risk that is not text"
        if ("symlink" in a.methods) != isinstance(a.symlink_to, str) or (a.kind == "adopt") != (a.adopt is not None):
            return f"{which}: its kind and its details disagree"
        if a.adopt is not None:
            d = a.adopt
            if not isinstance(d.etag, str) or not _HEX_DIGEST.fullmatch(d.etag):
                return f"{which}: an adopted etag that is not a hex digest"
            if not isinstance(d.commit, str) or not re.fullmatch(r"[0-9a-f]{40}", d.commit):
                return f"{which}: an adopted commit that is not a commit hash"
            if not all(isinstance(v, str) for v in (d.blob, d.snapshot, d.link_text)) or not all(
                isinstance(v, str | None) for v in (d.ref, d.tree, d.tree_source)
            ):
                return f"{which}: an adopted path that is not text"
    return None


def _paths_of(a: Action) -> list[str]:
    """Every path an action may read or write, but the destinations of the links it makes."""
    paths = [a.target.path, a.keep.path, a.target.repo, a.keep.repo]
    if a.adopt is not None:
        d = a.adopt
        paths += [p for p in (d.blob, d.snapshot, d.ref, d.tree, d.tree_source) if p is not None]
    return paths


def _link_destinations(a: Action) -> list[str]:
    """Where the symlinks an action makes lead (link texts are relative: resolved from their folder)."""
    found = []
    if a.symlink_to is not None:
        found.append(os.path.normpath(os.path.join(os.path.dirname(a.target.path), a.symlink_to)))
    if a.adopt is not None:
        found.append(os.path.normpath(os.path.join(os.path.dirname(a.adopt.snapshot), a.adopt.link_text)))
    return found


def keep_rank(record: FileRecord) -> tuple[int, int, int, str]:
    """Sort key of the copy to keep: the smallest is kept.

    1. the store, by rank (`StoreKind`): the HF cache (what huggingface_hub and transformers read),
       then the other tools' stores, then local_dir copies, then plain folders;
    2. in the cache: a Xet shared-store file, then a blob, then a snapshot copy (no-symlink caches);
    3. the oldest file (mtime);
    4. the path, so that the choice is stable.
    """
    place = 0
    if record.store is StoreKind.HF_CACHE:
        place = 0 if record.repo_key.endswith(os.sep + "blobs") else 1 if record.relpath.startswith("blobs/") else 2
    return (record.store.rank, place, record.facts.mtime_ns, record.path)


KEEP_REASONS = {  # by (store, place): see keep_rank
    ("hf_cache", 0): "HF cache: Xet shared blob store file",
    ("hf_cache", 1): "HF cache blob (what huggingface_hub and transformers read)",
    ("hf_cache", 2): "HF cache snapshot file",
    ("local_dir", 0): "local_dir copy (no copy in the HF cache)",
    ("plain", 0): "plain folder copy (oldest)",
}


def plan_consolidate(
    inventory: Inventory,
    groups: Sequence[DuplicateGroup],
    mode: Mode,
    fs_types: Mapping[int, str],
    argv: Sequence[str] = (),
    adopt: bool = False,
    writer: Writer | None = None,
) -> Plan:
    """The plan for `consolidate --mode MODE [--adopt]`: pure, reads nothing.

    `fs_types` maps a device number to its file system type (`"ext4"`, `"xfs"`, ...): it
    decides where reflinks can be tried. `writer` is who runs the next steps (default: this
    process's user, `Writer.current`): it decides which hard links auto makes. With `adopt`,
    local_dir files the cache lacks are moved into it first (`adoptions`).
    """
    writer = Writer.current() if writer is None else writer
    snapshot_of: dict[str, str] = {}
    for link in sorted(inventory.links, key=lambda link: link.path):
        snapshot_of.setdefault(link.target, link.path)
    actions: list[Action] = []
    if adopt:
        from .adoption import adoptions  # (it builds on this module's types)

        actions += adoptions(inventory, groups, mode, fs_types, writer)
    for group in groups:
        if not group.proven:
            raise InputError("consolidate acts only on proven duplicates (run without --fast)")
        records = group.records
        keep = min(records, key=keep_rank)
        rank = keep_rank(keep)
        names: dict[tuple[int, int], set[StoreKind]] = {}  # the stores each inode has a name in
        for r in records:
            names.setdefault(r.facts.inode, set()).add(r.store)
        context = _Context(
            keep,
            KEEP_REASONS.get((keep.store.value, rank[1]), "kept"),
            group.digest.hexdigest,
            frozenset(names[keep.facts.inode]),
            fs_types,
            snapshot_of,
            writer,
        )
        for record in sorted(records, key=lambda r: r.path):
            if record.facts.inode == keep.facts.inode:
                continue
            actions.append(_action(len(actions) + 1, record, mode, context))
    header = PlanHeader(PLAN_SCHEMA, __version__, time.time(), tuple(argv), inventory.roots, mode.value)
    header = replace(header, ignores_modes=writer.ignores_modes)
    return Plan(header, tuple(actions), folder_summaries(inventory, groups, actions))


def folder_summaries(
    inventory: Inventory, groups: Sequence[DuplicateGroup], actions: Sequence[Action]
) -> tuple[FolderSummary, ...]:
    """Per model folder: how many files the plan covers, which exist only there, and the cache's snapshot."""
    duplicated = {p for g in groups for p in g.paths}
    covered = {a.target.path for a in actions if a.changes}
    repos = {r.key: r for r in inventory.repos}
    cache_repos = {r.path: r for r in inventory.repos if r.store is StoreKind.HF_CACHE}
    files: dict[str, list[FileRecord]] = {}
    for record in inventory.records:
        if record.store is not StoreKind.HF_CACHE and record.role is Role.MODEL:
            files.setdefault(record.repo_key, []).append(record)
    summaries = []
    for key, records in sorted(files.items()):
        repo = repos.get(key)
        snapshot = None
        commits = {r.revision for r in records if r.revision is not None}
        origin = cache_repos.get(repo.origin) if repo is not None and repo.origin is not None else None
        if origin is not None and len(commits) == 1 and origin.status.value == "complete":
            (commit,) = commits
            if any(rev.startswith(commit[:12]) for rev in origin.revisions):
                snapshot = os.path.join(origin.path, "snapshots", commit)
        only_here = tuple(sorted(r.relpath for r in records if r.path not in duplicated and r.path not in covered))
        summaries.append(
            FolderSummary(
                path=key,
                store=records[0].store.value,
                files=len(records),
                covered=sum(1 for r in records if r.path in covered),
                only_here=only_here,
                cache_snapshot=snapshot,
            )
        )
    return tuple(summaries)


@dataclass(frozen=True)
class _Context:
    """What the actions of one duplicate group share."""

    keep: FileRecord
    keep_reason: str
    digest: str
    keep_names: frozenset[StoreKind]  # the stores in which the kept inode has a name
    fs_types: Mapping[int, str]
    snapshot_of: Mapping[str, str]  # blob -> the first snapshot link that leads to it
    writer: Writer


# The modes a left-alone copy is offered, in this order (the one planned left out).
_OFFERED = (Mode.AUTO, Mode.DELETE, Mode.REFLINK, Mode.HARDLINK, Mode.SYMLINK)


def _action(action_id: int, target: FileRecord, mode: Mode, c: _Context) -> Action:
    """What `mode` does with one copy; a copy it leaves alone is offered the modes that would change it."""
    action = _decide(action_id, target, mode, c)
    if action.kind != "leave":
        return action
    offered = {m: d for m in _OFFERED if m is not mode and (d := _decide(action_id, target, m, c)).changes}
    risky = [m.value for m, d in offered.items() if d.risks]
    note = f"; {' and '.join(risky)} would reclaim it with a risk (their dry run says which)" if risky else ""
    return _replace(action, alternatives=tuple(m.value for m in offered), reason=f"{action.reason}{note}")


def _decide(action_id: int, target: FileRecord, mode: Mode, c: _Context) -> Action:
    keep = c.keep
    base = Action(
        id=action_id,
        kind="link",
        methods=(),
        target=FileState.of(target),
        keep=FileState.of(keep),
        digest=c.digest,
        keep_reason=c.keep_reason,
    )
    in_cache = target.store is StoreKind.HF_CACHE
    tolerated = spec_of(target.store).links  # what its tool tolerates in place of a copy (its module says)
    keep_in_cache = keep.store is StoreKind.HF_CACHE
    same_device = target.facts.dev == keep.facts.dev
    fs = c.fs_types.get(target.facts.dev, "unknown")
    can_reflink = same_device and fs in REFLINK_FILESYSTEMS

    def skip(reason: str, *alternatives: Mode) -> Action:
        return _replace(base, kind="skip", reason=reason, alternatives=tuple(m.value for m in alternatives))

    def leave(reason: str) -> Action:
        return _replace(base, kind="leave", reason=reason)

    if target.repo_key.endswith(os.sep + "blobs") and in_cache:
        return leave("the Xet shared blob store is huggingface_hub's own; never rewritten")
    elsewhere = [m for m in (Mode.SYMLINK, Mode.DELETE) if m in tolerated and keep_in_cache]
    if not tolerated & ({Mode.REFLINK, Mode.HARDLINK} if mode is Mode.AUTO else {mode}):
        where = "the HF cache (a blob or snapshot would break)" if in_cache else f"{target.store.value}'s store"
        why = "its tool deletes or mishandles what links point at" if not in_cache else ""
        return leave(f"{mode.value} never applies inside {where}" + (f": {why}" if why else ""))
    if mode in (Mode.SYMLINK, Mode.DELETE):
        if not keep_in_cache:
            return leave(
                f"not in the cache: {mode.value} applies to copies of HF cache files, and no copy of these "
                f"bytes is in the HF cache (the kept copy is in {keep.store.value})"
            )
        if keep.path not in c.snapshot_of and keep.relpath.startswith("blobs/"):
            # A blob no snapshot uses is garbage to `clean` and `hf cache prune`: these bytes would go with it.
            return skip(
                f"{mode.value} needs the kept copy to stay in the HF cache; it is a blob no snapshot uses "
                "(clean removes those)",
                *([Mode.HARDLINK] if same_device else []),
            )
        if mode is Mode.DELETE:
            return _replace(base, kind="delete")
        link_to = c.snapshot_of.get(keep.path, keep.path)
        text = os.path.relpath(link_to, os.path.dirname(target.path))
        risks = tuple(r for r in (symlink_risk(target.store), SYMLINK_RISK) if r is not None)
        return _replace(base, methods=("symlink",), symlink_to=text, risks=risks)
    if not same_device:
        return skip(
            f"on another file system than the kept copy (device {target.facts.dev} vs {keep.facts.dev})", *elsewhere
        )
    if mode is Mode.REFLINK:
        if not can_reflink:
            return skip(f"{fs} does not support reflinks", Mode.HARDLINK, *elsewhere)
        return _replace(base, methods=("reflink",))
    # A hard link: every name of the kept inode, and this copy, become one file.
    names = c.keep_names | {target.store}
    risk = hardlink_risk(names, keep.store, c.writer)
    note = read_only_note(names) if risk is None else None
    if mode is Mode.HARDLINK:
        return _replace(base, methods=("hardlink",), warnings=(note,) if note else (), risks=(risk,) if risk else ())
    if risk is None:  # auto: no next step writes through a hard link here, for this user
        methods = ("reflink", "hardlink") if can_reflink else ("hardlink",)
        return _replace(base, methods=methods, warnings=(note,) if note and not can_reflink else ())
    why = f"auto makes no link that a next step writes through: {risk}"
    if can_reflink:  # independent inodes: nothing writes through a reflink
        return _replace(base, methods=("reflink",), reason=f"if {fs} refuses the reflink, left alone: {why}")
    return leave(why)


def _replace(action: Action, **changes: Any) -> Action:
    return replace(action, **changes)


def fs_types_of(devices: Iterable[int], mountinfo: str = "/proc/self/mountinfo") -> dict[int, str]:
    """File system type of each device, read from the kernel's mount table (read-only, no probe)."""
    wanted = set(devices)
    found: dict[int, str] = {}
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                major, minor = (int(x) for x in fields[2].split(":"))
                dev = os.makedev(major, minor)
                fstype = fields[fields.index("-") + 1]
                if dev in wanted:
                    found[dev] = fstype
    except (OSError, ValueError, IndexError):
        pass
    return found


def read_plan(path: Path) -> Plan:
    try:
        data = read_capped(str(path), MAX_PLAN_BYTES, follow_symlinks=True)
    except OSError as e:
        raise InputError(f"cannot read plan {path}: {e.strerror}") from None
    return Plan.from_json(data.decode("utf-8", errors="surrogateescape"))

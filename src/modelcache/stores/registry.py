"""What each store declares about itself, and the registry that collects the declarations.

Each store is one module of this package. It declares its kind and one `StoreSpec`:

```
STORE = StoreKind.declare("ollama", rank=40)
SPEC = StoreSpec(STORE, "Ollama", locate=locate, reader=read_ollama, partials=tool_partials(STORE, "Ollama"))
```

`specs()` imports every module of the package (`pkgutil.iter_modules`: no list is kept by hand)
and collects the `StoreSpec`s they define, in rank order. scan (which reader), locations (where
each store is found), clean (its partial files and their guards), report (titles), plan (the link
methods its tool tolerates) and the `stores` command read it. Adding a store is adding a module.

This module imports no store module at load time: the store modules import it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from ..inventory import FileRecord
from ..modes import Mode
from ..store_kind import StoreKind

if TYPE_CHECKING:
    from .base import Collector

Reader = Callable[[str, "Collector"], None]  # read the store at a folder into a collector; read-only
Locate = Callable[[], "tuple[str, str] | None"]  # (folder, how it was found) by the tool's own rules

# The link methods a store's tool tolerates in place of a copy. Tools that own their files delete
# or mishandle what a symlink points at, and expect their files to stay: reflinks and hard links only.
TOOL_LINKS = frozenset({Mode.REFLINK, Mode.HARDLINK})
ANY_LINK = frozenset({Mode.REFLINK, Mode.HARDLINK, Mode.SYMLINK, Mode.DELETE})
NO_LINK: frozenset[Mode] = frozenset()

# What `written_in_place_by` says of a store whose tool was not read: it may open one of its files and
# write into it (a hard link to that file would carry the write into every other name of the inode).
MAY_WRITE_IN_PLACE = "its tool is not known to replace its files by rename: it may rewrite one in place"


class Guard(str, Enum):
    """What tells `clean` that a partial download is still live."""

    BLOB_LOCK = "blob-lock"  # huggingface_hub's `<cache>/.locks/<repo folder>/<etag>.lock` (locks.blob_lock)
    LOCAL_DIR_LOCK = "local-dir-lock"  # the `.lock` beside a local_dir file's `.metadata` (locks.local_dir_lock)
    OPEN_FILE = "open-file"  # the tool takes no lock: a file some process has open is live
    # A lock file of the tool's own, held while it writes the file (`Partials.lock_of` names it; a file
    # without one, from an older version of the tool, is live while open, as for OPEN_FILE)
    TOOL_LOCK = "tool-lock"


@dataclass(frozen=True, slots=True)
class CleanKind:
    """A kind of item `clean` lists: its name (JSON `kind`) and its title (text output)."""

    name: str
    title: str


@dataclass(frozen=True, slots=True)
class Partials:
    """A store's partial downloads: its reader gives them the role INCOMPLETE (local_dir's are
    found in its download folder); `guard` says what shows one is live."""

    files: CleanKind
    guard: Guard
    locks: CleanKind | None = None  # the lock files nobody holds, listed beside them (lock guards)
    note: Callable[[str], str] | None = None  # words added to the reason, by file name
    # TOOL_LOCK: the lock the tool holds while it writes a partial file (None: it has none), and
    # which of the store's files are such locks (listed as `locks` when nobody holds them)
    lock_of: Callable[[FileRecord], str | None] | None = None
    is_lock: Callable[[FileRecord], bool] | None = None

    def __post_init__(self) -> None:
        if (self.guard is Guard.TOOL_LOCK) != (self.lock_of is not None):
            raise ValueError(f"{self.files.name}: a tool's lock guard is what names each file's lock, and only that")
        if self.is_lock is not None and self.locks is None:
            raise ValueError(f"{self.files.name}: lock files found are listed under a kind of their own")


@dataclass(frozen=True, slots=True)
class OnRequest:
    """Files of a store that `clean` removes only when asked (a tool's own cache, rebuilt on
    demand), unless a process has one of them open. `select` picks them among the store's records."""

    files: CleanKind
    select: Callable[[FileRecord], bool]
    reason: str


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """One store, as its module declares it.

    `option` is how a user names its folder: `--store KIND=PATH` (then `reader` reads it, and
    `locate`, if any, finds it where its tool keeps it), or `--cache-dir` / `--models` for the
    HF cache and the model folders, which scan reads itself (the cache first: its commits name
    the local_dir downloads). `summary`: its own line in `analyze`'s summary (the HF cache and
    the model folders have the original document's lines).

    `written_in_place_by`: the ordinary later step (of its tool, or of the user) that opens one of its
    files and writes new bytes into it, in words; None when every such step replaces a file by renaming
    a new one over it, or removes it first (a hard-linked name is then never written through).
    `consolidate`'s auto mode hard-links such a file only where the write bits stop that writer.
    """

    kind: StoreKind
    title: str
    reader: Reader | None = None
    locate: Locate | None = None
    option: str = "--store"
    partials: Partials | None = None
    on_request: OnRequest | None = None
    links: frozenset[Mode] = TOOL_LINKS
    summary: bool = True
    written_in_place_by: str | None = MAY_WRITE_IN_PLACE

    def __post_init__(self) -> None:
        if (self.option == "--store") != (self.reader is not None):
            raise ValueError(f"store {self.kind.value}: a reader is what reads a --store folder, and only that")


def tool_partials(kind: StoreKind, title: str, note: Callable[[str], str] | None = None) -> Partials:
    """The partial downloads of a tool that takes no lock: `<kind>-partial`, live while open."""
    return Partials(CleanKind(f"{kind.value}-partial", f"interrupted {title} downloads"), Guard.OPEN_FILE, note=note)


# -- the registry ------------------------------------------------------------------------------------

_SPECS: tuple[StoreSpec, ...] | None = None
_BY_KIND: dict[StoreKind, StoreSpec] = {}
_loading = False


def specs() -> tuple[StoreSpec, ...]:
    """Every store's declaration, in rank order. The first call imports the store modules."""
    global _SPECS, _loading
    if _SPECS is None:
        if _loading:  # a store module asked for every store while being imported: it would miss some
            raise RuntimeError("a store module used the store registry while the registry was loading")
        _loading = True
        try:
            found = _discover()
        finally:
            _loading = False
        _BY_KIND.update((spec.kind, spec) for spec in found)
        _SPECS = found
    return _SPECS


def spec_of(kind: StoreKind) -> StoreSpec:
    spec = _BY_KIND.get(kind)
    if spec is None:
        specs()
        spec = _BY_KIND[kind]
    return spec


def _discover() -> tuple[StoreSpec, ...]:
    package = __name__.rpartition(".")[0]
    found: dict[StoreKind, StoreSpec] = {}
    import pkgutil  # here: only a scan needs it, not every start of the command

    for module_info in pkgutil.iter_modules(sys.modules[package].__path__):
        module = importlib.import_module(f"{package}.{module_info.name}")
        for value in vars(module).values():
            if isinstance(value, StoreSpec) and found.setdefault(value.kind, value) is not value:
                raise ValueError(f"store {value.kind.value} is declared twice (in {module.__name__})")
    return tuple(sorted(found.values(), key=lambda spec: spec.kind.rank))


# -- where stores are found: helpers for `locate` -----------------------------------------------------


def home(*parts: str) -> str:
    return os.path.join(os.path.expanduser("~"), *parts)


def xdg(var: str, default: str, *parts: str) -> str:
    """`$var/parts`, else `~/default/parts` (the XDG base directory rule)."""
    return os.path.join(os.environ.get(var) or home(default), *parts)


def from_env(var: str, default: tuple[str, str]) -> tuple[str, str]:
    """`$var` when it is set (the source says so), else `default`."""
    value = os.environ.get(var)
    return (value, var) if value else default


def first_dir(*candidates: tuple[str, str]) -> tuple[str, str]:
    """The first candidate that exists, else the first (shown as not found)."""
    return next(((p, src) for p, src in candidates if p and os.path.isdir(p)), candidates[0])

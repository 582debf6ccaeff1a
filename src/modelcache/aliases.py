"""What the user's next steps do through a link that `consolidate` makes, and who they run as.

A hard link is one inode under several names: a program that opens one name and writes into it
changes them all. One that writes a new file and renames it over the name, or removes the name
first, does not. A symlink into the HF cache carries such a write into the cache's blob. Each
store declares the ordinary later step that writes one of its files in place
(`StoreSpec.written_in_place_by`; None where every such step replaces a file by rename). A next
step writes through

- a reflink: never (independent inodes that share blocks copy-on-write);
- a hard link: when a name of the inode (the copy, the kept copy, another hard link of it) is
  written in place by its next step, and file modes do not stop the writer. The linked inode is
  made read-only, which stops every writer with EACCES but root (a process that holds
  CAP_DAC_OVERRIDE);
- a symlink: when the copy is written in place by its next step (the blob is writable by its
  owner);
- no link (delete): never.

The next steps are assumed to run as the user who runs modelcache (`Writer.current`). Reads
nothing but the process's own status (`/proc/self/status`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from .store_kind import StoreKind
from .stores.registry import MAY_WRITE_IN_PLACE, spec_of

CAP_DAC_OVERRIDE = 1  # linux/capability.h: bypass file read, write and execute permission checks


@dataclass(frozen=True, slots=True)
class Writer:
    """Who runs the next steps: the effective user of this process, and whether file modes stop it."""

    uid: int
    ignores_modes: bool  # CAP_DAC_OVERRIDE in its effective set (root's, normally): write bits do not stop it

    @classmethod
    def current(cls, status: str = "/proc/self/status") -> Writer:
        uid = os.geteuid()
        return cls(uid, _has_capability(CAP_DAC_OVERRIDE, status, default=uid == 0))

    @property
    def who(self) -> str:
        return "root" if self.uid == 0 else f"user {self.uid}, who holds CAP_DAC_OVERRIDE"


def _has_capability(bit: int, status: str, default: bool) -> bool:
    """Whether the effective capability set (`CapEff:` of /proc/self/status) holds `bit`; `default` where
    the kernel does not say (not Linux)."""
    try:
        with open(status, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError, IndexError):
        pass
    return default


def in_place_writers(stores: Iterable[StoreKind]) -> tuple[str, ...]:
    """The next steps that write a file of these stores in place, in words: by store rank, each once."""
    found: list[str] = []
    for kind in sorted(set(stores), key=lambda k: k.rank):
        spec = spec_of(kind)
        text = spec.written_in_place_by
        if text is not None:
            text = f"{spec.title}: {text}" if text == MAY_WRITE_IN_PLACE else text
            if text not in found:
                found.append(text)
    return tuple(found)


def _landing(keep_store: StoreKind) -> str:
    if keep_store is StoreKind.HF_CACHE:
        return "the HF cache's blob, which then holds bytes that do not match its name"
    return f"the kept copy (in {spec_of(keep_store).title})"


def hardlink_risk(stores: Iterable[StoreKind], keep_store: StoreKind, writer: Writer) -> str | None:
    """What writes through a hard link joining files of `stores` (the kept copy's among them), for `writer`;
    None when no next step writes one of them in place, or when file modes stop `writer`."""
    writers = in_place_writers(stores)
    if not writers or not writer.ignores_modes:
        return None
    return (
        f"{'; '.join(writers)}. Through a hard link that write lands in {_landing(keep_store)}, "
        f"and the read-only mode of the linked file does not stop {writer.who}"
    )


def read_only_note(stores: Iterable[StoreKind]) -> str | None:
    """What a user whom file modes stop meets after a hard link joining files of `stores`: the write fails."""
    writers = in_place_writers(stores)
    if not writers:
        return None
    return (
        f"{'; '.join(writers)}. The hard-linked file is made read-only, so that write fails with "
        "'Permission denied' instead of changing every copy: `modelcache undo` the run first (or consolidate "
        "with --mode delete), and never make the file writable again"
    )


def symlink_risk(target_store: StoreKind) -> str | None:
    """What writes through a symlink, made in place of a copy in `target_store`, into the cache's blob."""
    writers = in_place_writers([target_store])
    if not writers:
        return None
    return (
        f"{'; '.join(writers)}. Through a symlink into the HF cache that write lands in the blob, which then "
        "holds bytes that do not match its name (blobs are writable by their owner: any user)"
    )

"""What an acting command returns: one `Outcome` per change, a `RunResult` per run, and `Skip`.

Plain values: imports nothing of modelcache, so the CLI and report can name these types without
pulling in the rest of the acting package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# What clean removed and verify --repair downloaded is not put back; a prune is downloaded again.
UNDOABLE = ("consolidate", "apply", "prune")
OnBytes = Callable[[int], None] | None  # told how many bytes were just read (a progress bar)


@dataclass(frozen=True, slots=True)
class Outcome:
    action_id: int
    target: str
    status: str  # "done", "skipped", "failed"; "left_alone" (outside what the mode does: no warning)
    method: str | None = None
    reason: str | None = None
    freed: int = 0


@dataclass(frozen=True)
class RunResult:
    run_id: str
    outcomes: tuple[Outcome, ...]
    bytes_verified: int
    empty_dirs: tuple[str, ...]
    removed_dirs: tuple[str, ...]
    recovered: tuple[str, ...]  # interrupted runs finished or rolled back first

    @property
    def bytes_freed(self) -> int:
        return sum(o.freed for o in self.outcomes)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


class Skip(Exception):
    """This action is not carried out; the message says why. Nothing was changed."""

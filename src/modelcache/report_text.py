"""Helpers of the text reports: `--top N` (the largest rows only) and one-line bars.

Kept apart from `report.py` (analyze, list and verify) so that each stays short; sizes are written
as `report_format.format_size` writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from .report_format import format_size

if TYPE_CHECKING:
    from .plan import Action

T = TypeVar("T")
BAR_WIDTH = 30
FULL, EMPTY = "█", "░"


@dataclass(frozen=True)
class Top(Generic[T]):
    """The rows a table shows under `--top N`, in the table's own order, and what was left out."""

    rows: list[T]
    left_out: int
    left_out_bytes: int

    def note(self, what: str, top: int | None) -> str | None:
        """The line that says how many rows were left out, or None when none were."""
        if not self.left_out:
            return None
        return f"  ... {self.left_out:,} more {what} ({format_size(self.left_out_bytes)}) left out by --top {top}"


def top_rows(rows: Sequence[T], top: int | None, size: Callable[[T], int]) -> Top[T]:
    """The `top` largest of `rows` by `size` (all of them when `top` is None), kept in the order of `rows`:
    a table sorted by store or by name stays so, with only its largest rows."""
    if top is None or len(rows) <= top:
        return Top(list(rows), 0, 0)
    ranked = sorted(range(len(rows)), key=lambda i: (-size(rows[i]), i))
    chosen = set(ranked[:top])
    left = [rows[i] for i in ranked[top:]]
    return Top([r for i, r in enumerate(rows) if i in chosen], len(left), sum(size(r) for r in left))


def bar(part: int, whole: int, width: int = BAR_WIDTH) -> str:
    """`part` of `whole` as a bar of `width` cells: a part that is not 0 shows at least one full cell.

    >>> bar(1, 4, 8)
    '██░░░░░░'
    """
    if whole <= 0 or part <= 0:
        return EMPTY * width
    cells = max(1, round(width * min(part, whole) / whole))
    return FULL * cells + EMPTY * (width - cells)


def store_bars(held: dict[str, int], total: int) -> list[str]:
    """analyze's summary: a bar per store (by title, in rank order) of its share of Total Storage."""
    lines = ["  Where it is (share of Total Storage):"] if held else []
    for title, part in held.items():
        lines.append(f"    {title:<20} {bar(part, total)} {percent(part, total):>4}  {format_size(part)}")
    return lines


def percent(part: int, whole: int) -> str:
    """A share as the bar beside it reads: '<1%' rather than a '0%' that is not nothing."""
    if whole <= 0 or part <= 0:
        return "0%"
    share = 100 * part / whole
    return "<1%" if share < 1 else f"{share:.0f}%"


# What an action does to its copy, in words: (one file, several files), by (kind, link kinds tried).
_FATES = {
    ("link", ("reflink", "hardlink")): ("becomes a reflink (else a hard link)", "become reflinks (else hard links)"),
    ("link", ("hardlink",)): ("becomes a hard link", "become hard links"),
    ("link", ("reflink",)): ("becomes a reflink", "become reflinks"),
    ("link", ("symlink",)): ("becomes a symlink", "become symlinks"),
    ("delete", ()): ("is removed", "are removed"),
    ("adopt", ()): ("moves into the HF cache", "move into the HF cache"),
}


def what_happens(actions: Sequence[Action]) -> str:
    """The plan's changes in words, e.g. "9 files become hard links, 2 files are removed"."""
    counts: dict[tuple[str, tuple[str, ...]], int] = {}
    for a in actions:
        if a.changes:
            key = (a.kind, a.methods if a.kind == "link" else ())
            counts[key] = counts.get(key, 0) + 1
    parts = []
    for key, n in counts.items():
        one, many = _FATES.get(key, (f"is changed ({key[0]})", f"are changed ({key[0]})"))
        parts.append(f"1 file {one}" if n == 1 else f"{n} files {many}")
    return ", ".join(parts) or "no file changes"

"""A squarified treemap: rectangles whose areas are proportional to sizes, as near to squares as it finds.

Pure geometry, no I/O (`report --html` draws what it computes). The algorithm is Bruls, Huizing and
van Wijk's "Squarified Treemaps" (2000), as WinDirStat and QDirStat lay out a disk: the sizes, largest
first, are laid in rows along the shorter side of what is left, and a row grows while adding the next
size does not make its worst aspect ratio worse. The last row of each level takes exactly the room
left, so the rectangles of a level tile their parent with no gap and no overlap (to float rounding).

>>> [round(r.area, 9) for r in squarify([6, 6, 4, 3, 2, 2, 1], Rect(0, 0, 6, 4))]
[6.0, 6.0, 4.0, 3.0, 2.0, 2.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    w: float
    h: float

    @property
    def area(self) -> float:
        return self.w * self.h

    def intersection(self, other: Rect) -> float:
        """The area this rectangle shares with `other`."""
        w = min(self.x + self.w, other.x + other.w) - max(self.x, other.x)
        h = min(self.y + self.h, other.y + other.h) - max(self.y, other.y)
        return w * h if w > 0 and h > 0 else 0.0


def _worst(row: Sequence[float], side: float) -> float:
    """The worst aspect ratio (>= 1) of `row`'s areas laid along a side of length `side`."""
    total = sum(row)
    if total <= 0 or side <= 0:
        return float("inf")
    thickness = total / side
    return max(max(a / thickness**2, thickness**2 / a) if a > 0 else float("inf") for a in row)


def _lay_row(row: Sequence[float], rect: Rect, last: bool) -> tuple[list[Rect], Rect]:
    """`row`'s areas as a strip along the shorter side of `rect`; the strip and what is left of `rect`.

    The last row takes all of `rect` (its areas sum to it but for float rounding): no sliver is left.
    """
    total = sum(row)
    placed = []
    if rect.w >= rect.h:  # a column at the left, as tall as rect
        width = rect.w if last else (total / rect.h if rect.h else 0.0)
        y = rect.y
        for i, a in enumerate(row):
            h = (rect.y + rect.h - y) if last and i == len(row) - 1 else (a / width if width else 0.0)
            placed.append(Rect(rect.x, y, width, h))
            y += h
        return placed, Rect(rect.x + width, rect.y, rect.w - width, rect.h)
    height = rect.h if last else (total / rect.w if rect.w else 0.0)
    x = rect.x
    for i, a in enumerate(row):
        w = (rect.x + rect.w - x) if last and i == len(row) - 1 else (a / height if height else 0.0)
        placed.append(Rect(x, rect.y, w, height))
        x += w
    return placed, Rect(rect.x, rect.y + height, rect.w, rect.h - height)


def squarify(sizes: Sequence[float], rect: Rect) -> list[Rect]:
    """One rectangle per size, in the order of `sizes`, tiling `rect` with areas proportional to the sizes.

    Sizes of 0 get an empty rectangle (at `rect`'s far corner); all sizes 0 (or none), all empty.
    """
    total = float(sum(sizes))
    out: list[Rect] = [Rect(rect.x + rect.w, rect.y + rect.h, 0.0, 0.0)] * len(sizes)
    order = sorted((i for i, s in enumerate(sizes) if s > 0), key=lambda i: -sizes[i])
    if total <= 0 or rect.area <= 0 or not order:
        return out
    scale = rect.area / total
    areas = [sizes[i] * scale for i in order]
    left = rect
    row: list[float] = []
    start = 0  # index in `order` of the row's first size
    for k, area in enumerate(areas):
        side = min(left.w, left.h)
        if row and _worst([*row, area], side) > _worst(row, side):
            placed, left = _lay_row(row, left, last=False)
            for j, r in enumerate(placed):
                out[order[start + j]] = r
            row, start = [], k
        row.append(area)
    placed, _ = _lay_row(row, left, last=True)
    for j, r in enumerate(placed):
        out[order[start + j]] = r
    return out


def layout(
    root: T, rect: Rect, size: Callable[[T], float], children: Callable[[T], Sequence[T]]
) -> Iterator[tuple[T, Rect, int]]:
    """Every node of the tree under `root` (itself first, at depth 0) with its rectangle and depth.

    A node's size must be the sum of its children's (the caller's tree says so): then the leaves tile
    `rect` and each leaf's area is its share of the root's size.
    """
    stack = [(root, rect, 0)]
    while stack:
        node, r, depth = stack.pop()
        yield node, r, depth
        kids = children(node)
        if kids:
            for kid, kid_rect in zip(kids, squarify([size(k) for k in kids], r), strict=True):
                stack.append((kid, kid_rect, depth + 1))

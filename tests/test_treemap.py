"""The treemap layout: on random trees, the leaves tile the area, never overlap, and have areas
proportional to their sizes; each node's children tile the node."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.treemap import Rect, layout, squarify

from .strategies import examples

EXAMPLES = examples(200)  # pure geometry: hundreds of examples take a second


@dataclass(frozen=True)
class Node:
    own: int  # a leaf's size (0 for inner nodes)
    kids: tuple[Node, ...] = ()

    @property
    def size(self) -> int:
        return self.own + sum(k.size for k in self.kids)


def trees(max_leaves: int = 60) -> st.SearchStrategy[Node]:
    # Sizes from 0 to 10^12: a 1-byte config beside a 100 GB shard, and empty files.
    leaf = st.builds(Node, st.one_of(st.integers(0, 10), st.integers(0, 10**12)))
    return st.recursive(
        leaf,
        lambda kids: st.builds(
            Node, st.just(0), st.tuples(kids, kids) | st.lists(kids, min_size=1, max_size=8).map(tuple)
        ),
        max_leaves=max_leaves,
    )


rects = st.builds(
    Rect,
    st.floats(-1000, 1000),
    st.floats(-1000, 1000),
    st.floats(1, 5000),
    st.floats(1, 5000),
)


def check_tiling(parent: Rect, sizes: list[int], placed: list[Rect]) -> None:
    """`placed` tile `parent`: inside it, no overlap, areas proportional to `sizes`, summing to it."""
    total = sum(sizes)
    eps = 1e-6 * parent.area
    # A width is a difference of two positions: it carries their rounding, which for a tiny rectangle far from
    # the origin (a deep tile) is large beside the width itself.
    rounding = 1e-12 * (abs(parent.x) + abs(parent.y) + parent.w + parent.h) * (parent.w + parent.h) * 4
    assert len(placed) == len(sizes)
    for size, r in zip(sizes, placed, strict=True):
        assert r.w >= -1e-9 and r.h >= -1e-9
        if total:
            expected = parent.area * size / total
            assert math.isclose(r.area, expected, rel_tol=1e-6, abs_tol=eps + rounding), (size, r)
        if r.area > 0:
            assert r.x >= parent.x - 1e-6 * parent.w and r.y >= parent.y - 1e-6 * parent.h
            assert r.x + r.w <= parent.x + parent.w * (1 + 1e-9) + 1e-6 * parent.w
            assert r.y + r.h <= parent.y + parent.h * (1 + 1e-9) + 1e-6 * parent.h
    if total:
        assert math.isclose(sum(r.area for r in placed), parent.area, rel_tol=1e-6, abs_tol=rounding * len(placed))
    for i, a in enumerate(placed):
        for b in placed[i + 1 :]:
            assert a.intersection(b) <= eps, (a, b)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.integers(0, 10**12), max_size=40), rects)
def test_squarify_tiles_its_rectangle(sizes: list[int], parent: Rect) -> None:
    check_tiling(parent, sizes, squarify(sizes, parent))


@settings(max_examples=EXAMPLES, deadline=None)
@given(trees(), rects)
def test_a_tree_layout_tiles_the_area_and_nests(root: Node, area: Rect) -> None:
    placed = list(layout(root, area, lambda n: n.size, lambda n: n.kids))
    by_node = {id(node): (r, depth) for node, r, depth in placed}
    assert len(by_node) == len(placed)  # each node once
    # the leaves: the whole area, shared out by size
    leaves = [(node.size, r) for node, r, _ in placed if not node.kids]
    check_tiling(area, [s for s, _ in leaves], [r for _, r in leaves])
    # each node's children tile it, one level deeper
    for node, r, depth in placed:
        if node.kids:
            kids = [by_node[id(k)] for k in node.kids]
            assert all(d == depth + 1 for _, d in kids)
            check_tiling(r, [k.size for k in node.kids], [kr for kr, _ in kids])


def test_squares_where_the_sizes_allow() -> None:
    """Four equal sizes in a square are four squares (a slice-and-dice layout would make strips)."""
    placed = squarify([1, 1, 1, 1], Rect(0, 0, 100, 100))
    assert all(math.isclose(r.w, 50) and math.isclose(r.h, 50) for r in placed), placed
    worst = max(max(r.w / r.h, r.h / r.w) for r in squarify([5, 4, 3, 2, 1] * 4, Rect(0, 0, 400, 300)))
    assert worst < 4

"""`report --html`: one self-contained page of where the space goes.

The page holds the figures of `analyze` (the original document's four lines, the other stores, metadata
and partial downloads), what `consolidate`, `clean` and `prune` would give back, a treemap of
`space.build_space`'s tree laid out here in Python (`treemap.squarify`), and the repos and folders
sorted by size with bars. The stylesheet and the script are inline (`html_assets.py`); the only
links are plain `<a href>`s to the model pages on the Hub. Nothing is fetched when it is viewed.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from typing import Any

from . import __version__
from .analysis import Analysis
from .common import display
from .html_assets import COLOURS, SCRIPT, stylesheet
from .locations import Location, StoreLocation
from .report import format_size
from .space import SECOND_COPIES, SHORT_TITLES, TITLES, Node, Space, Status
from .store_kind import StoreKind
from .stores.registry import spec_of
from .treemap import Rect, layout

WIDTH, HEIGHT = 1000.0, 620.0  # the picture's units (it scales to the page's width)
STATUSES = list(Status)


def render_page(
    space: Space,
    a: Analysis,
    cache: Location,
    models: Sequence[Location],
    stores: Sequence[StoreLocation],
    endpoint: str,
    merged: int = 0,
) -> str:
    """The page, as text. `endpoint` is the Hub the model pages link to; `merged`: files shown together."""
    e = html.escape
    roots = [f"HF cache: {display(cache.path)}"] + [f"models: {display(m.path)}" for m in models]
    roots += [f"{s.kind.value}: {display(s.path)}" for s in stores]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    placed = _laid_out(space.root)
    data = json.dumps(_data(placed), separators=(",", ":")).replace("</", "<\\/")
    merged_note = (
        f'<p class="note">The {merged:,} smallest files are drawn together, per folder and status.</p>'
        if merged
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>modelcache report: where the space goes</title>
<style>{stylesheet()}</style></head>
<body>
<header><h1>Where the space goes</h1>
<div class="where">modelcache {e(__version__)}, {e(when)}. {e("; ".join(roots))}</div></header>
<main>
<div class="figures">{_storage_card(a)}{_give_back_card(space, a)}</div>
{_legend(space)}
<div class="layout">
<section><h2>The picture: each file's area is the bytes it holds on disk</h2>
<div id="crumbs"></div>
<svg id="treemap" viewBox="0 0 {WIDTH:g} {HEIGHT:g}" role="img" aria-label="treemap of the space used"></svg>
<div id="tile-info">Point at a tile for its path, size, digest and status; click one to zoom into its repo or
folder, and the path above the picture to zoom out.</div>
{merged_note}
<h2>In view, largest first</h2>
<div class="scroll" style="max-height:320px"><table class="sizes"><tbody id="in-view"></tbody></table></div>
<noscript><p class="note">The picture needs JavaScript; the table beside it does not.</p></noscript>
</section>
<section><h2>Repos and folders, largest first</h2>
<div class="scroll">{_repo_table(placed, endpoint)}</div></section>
</div>
</main>
<script type="application/json" id="space-data">{data}</script>
<script>{SCRIPT}</script>
</body></html>
"""


def _row(label: str, n: int, extra: str = "", cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return (
        f"<tr{c}><td>{html.escape(label)}</td><td class='n'>{format_size(n)}</td>"
        f"<td class='n'>{n:,} bytes</td><td>{extra}</td></tr>"
    )


def _storage_card(a: Analysis) -> str:
    """analyze's summary: the original document's four lines, the other stores, metadata and partials."""
    wasted = "probable (--fast)" if a.fast else "← wasted space"
    rows = [_row("HuggingFace Cache", a.hf_cache_bytes), _row("Local Models", a.local_bytes)]
    for kind in StoreKind:
        spec = spec_of(kind)
        if spec.summary and a.store_bytes[kind]:
            cross = a.cross_store_bytes[kind]
            also = f"of which {format_size(cross)} also in another store" if cross else ""
            rows.append(_row(spec.title, a.store_bytes[kind], html.escape(also)))
    rows.append(_row("Duplicate Storage", a.duplicate_bytes, html.escape(wasted), "waste"))
    rows.append(_row("Total Storage", a.total_bytes))
    rows.append(_row("of which huggingface_hub metadata", a.metadata_bytes))
    rows.append(_row("of which partial downloads", a.incomplete_bytes))
    return f'<div class="card" id="storage"><h2>Current storage</h2><table>{"".join(rows)}</table></div>'


def _give_back_card(space: Space, a: Analysis) -> str:
    """What consolidate, clean and prune would free, each with the colour its files have in the picture."""

    def sw(s: Status) -> str:
        return f'<span class="sw s-{s.value}"></span>'

    left = (
        f"<br><span class='note'>{sw(Status.LEFT)}{format_size(space.left_alone_bytes)} of second copies auto "
        "leaves alone (a next step of your tools would write through a link); "
        "<code>consolidate --dry-run</code> names the modes that would reclaim them.</span>"
        if space.left_alone_bytes
        else ""
    )
    prune = (
        f"{sw(Status.PRUNE)}<b>{format_size(space.prune_frees)}</b>"
        if space.prune_frees is not None
        else "<span class='note'>give report a budget (--older-than 90d, --max-size 500G) to see it</span>"
    )
    pruned = f"{space.prune_frees:,} bytes" if space.prune_frees is not None else ""
    consolidate, clean = space.consolidate_frees, space.clean_frees
    return f"""<div class="card" id="give-back"><h2>What you can give back</h2><table>
<tr><td>consolidate (auto)</td><td class="n big" id="consolidate-frees">{sw(Status.FREED)}{format_size(consolidate)}
</td><td class="note">{consolidate:,} bytes</td></tr>
<tr><td>clean</td><td class="n big" id="clean-frees">{sw(Status.GARBAGE)}{format_size(clean)}</td>
<td class="note">{clean:,} bytes</td></tr>
<tr><td>prune</td><td class="n big" id="prune-frees">{prune}</td><td class="note">{pruned}</td></tr>
</table>
<div class="note">Second copies in all: {format_size(a.duplicate_bytes)} (Duplicate Storage).{left}</div></div>"""


def _legend(space: Space) -> str:
    held = space.root.by_status
    buttons = []
    for s in STATUSES:
        if s is Status.PRUNE and space.prune_frees is None:
            continue
        amount = format_size(held.get(s, 0))
        buttons.append(
            f'<button type="button" data-s="{s.value}" aria-pressed="false" title="show only these">'
            f'<span class="sw s-{s.value}"></span>{html.escape(TITLES[s])} <b>{amount}</b></button>'
        )
    return f'<div class="legend" id="legend">{"".join(buttons)}</div>'


def _repo_table(placed: Sequence[tuple[Node, Rect, int]], endpoint: str) -> str:
    """Every repo and folder, largest first (ncdu's list), with a bar of its bytes by status."""
    index = {id(node): i for i, (node, _, _) in enumerate(placed)}
    repos = sorted((n for n, _, _ in placed if n.level == 2), key=lambda n: (-n.size, n.name, n.path))
    top = repos[0].size if repos else 0
    rows = []
    for n in repos:
        bar = "".join(
            f'<span class="s-{s.value}" style="width:{100 * b / top:.2f}%"></span>'
            for s in STATUSES
            if (b := n.by_status.get(s, 0)) and top
        )
        second = sum(n.by_status.get(s, 0) for s in SECOND_COPIES)
        garbage = n.by_status.get(Status.GARBAGE, 0)
        store = n.repo.store.value if n.repo is not None else ""
        name = html.escape(n.name)
        link = _model_page(n, endpoint)
        if link:
            name = f'<a href="{html.escape(link)}">{name}</a>'
        notes = []
        if second:
            notes.append(f"second copies {format_size(second)}")
        if garbage:
            notes.append(f"garbage {format_size(garbage)}")
        if not n.size and n.repo is not None:
            notes.append("holds no bytes of its own (hard links to another copy, or empty)")
        rows.append(
            f'<tr data-i="{index[id(n)]}"><td class="n">{format_size(n.size)}<div class="bar">{bar}</div></td>'
            f'<td class="repo">{name}<div class="path">{html.escape(display(n.path))}</div></td>'
            f"<td>{html.escape(store)}</td><td>{html.escape('; '.join(notes))}</td></tr>"
        )
    return (
        '<table class="sizes" id="repos"><thead><tr><th>Size</th><th>Repo or folder</th><th>Store</th>'
        f"<th>Of which</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _model_page(n: Node, endpoint: str) -> str | None:
    """The Hub page of a repo of the HF cache or a local_dir download (a plain link: nothing is loaded)."""
    repo = n.repo
    if repo is None or repo.store not in (StoreKind.HF_CACHE, StoreKind.LOCAL_DIR) or repo.repo_id.count("/") != 1:
        return None
    prefix = {"model": "", "dataset": "/datasets", "space": "/spaces"}.get(repo.repo_type)
    return None if prefix is None else f"{endpoint.rstrip('/')}{prefix}/{repo.repo_id}"


def _laid_out(root: Node) -> list[tuple[Node, Rect, int]]:
    """Every node with its rectangle, in pre-order (a subtree is a contiguous run)."""
    return list(layout(root, Rect(0.0, 0.0, WIDTH, HEIGHT), lambda n: n.size, lambda n: n.children))


def _data(placed: Sequence[tuple[Node, Rect, int]]) -> dict[str, Any]:
    """The script's input: the laid-out nodes as arrays (see the top of `html_assets.SCRIPT`)."""
    index = {id(node): i for i, (node, _, _) in enumerate(placed)}
    parent = {id(c): index[id(n)] for n, _, _ in placed for c in n.children}
    ends = [i + 1 for i in range(len(placed))]
    for i in range(len(placed) - 1, 0, -1):  # a subtree ends where its last descendant's does
        p = parent[id(placed[i][0])]
        ends[p] = max(ends[p], ends[i])
    repo_path = {id(placed[0][0]): ""}
    nodes = []
    for i, (n, r, _) in enumerate(placed):
        p = parent.get(id(n), 0)
        if n.level == 2:
            repo_path[id(n)] = n.path
        base = repo_path.get(id(n)) or repo_path.get(id(placed[p][0]), "")
        repo_path.setdefault(id(n), base)
        path = display(n.path)
        if n.level > 2 and base and path.startswith(base + "/"):
            path = "+" + path[len(base) + 1 :]  # the script adds its repo's path back
            if n.digest.endswith(":" + path[7:]) and path.startswith("+blobs/"):
                path = "+#"  # a blob named by its digest: the script makes the name from the digest
        nodes.append(
            [
                p,
                n.level,
                round(r.x, 2),
                round(r.y, 2),
                round(r.w, 2),
                round(r.h, 2),
                STATUSES.index(n.status),
                display(n.name),
                n.size,
                path if n.level >= 2 else "",
                n.digest,
                1 if n.proven else 0,
                n.names,
                n.count,
                ends[i],
                [x for st in STATUSES if (b := n.by_status.get(st)) for x in (STATUSES.index(st), b)]
                if n.children
                else [],
            ]
        )
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "statuses": [s.value for s in STATUSES],
        "titles": [TITLES[s] for s in STATUSES],
        "short": [SHORT_TITLES[s] for s in STATUSES],
        "colours": [COLOURS[s] for s in STATUSES],
        "nodes": nodes,
    }

"""`report --html`: the page agrees with analyze and the dry runs, loads nothing from the network, and a
real browser (Debian's chromium, tests/browser.py) draws it, names every repo and folder, zooms on a
click and shows a tile's details on hover. The machine is built with LocalHub and the real client."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelcache.testing import LocalHub
from modelcache.testing.builders import (
    download_to_cache,
    download_to_local_dir,
    interrupted_download,
    random_bytes,
    write_tree,
)

from .browser import browser, colours
from .machine import NOBODY, Machine, as_unprivileged, client_env, keep_client_home
from .test_bad_input import missing_folder

MB = 1_000_000
BETA = random_bytes(400_000, "beta-weights")
OWN = random_bytes(30_000, "finetune-own")
ORPHAN = random_bytes(70_000, "orphan")
SECOND_COPY_COLOURS = {(0xE4, 0x57, 0x2E), (0xF3, 0x9C, 0x12)}  # html_assets.COLOURS: freed, left alone
KEPT_COLOUR = (0x2F, 0x6D, 0xB5)


@dataclass(frozen=True)
class ReportMachine(Machine):
    def roots(self) -> list[str]:
        return [*super().roots(), "--no-discover"]

    def report(self, user: str | None = None) -> tuple[Path, str]:
        """`report --html` of this machine, as `user`: the page's path and its text."""
        page = self.root / "out" / "report.html"
        page.parent.mkdir(exist_ok=True)
        if user is not None:
            os.chown(page.parent, int(user), int(user))
        done = self.cli("report", "--html", page, *self.roots(), user=user)
        assert done.code == 0, done.err
        assert f"Report written to {page}" in done.out
        return page, page.read_text()

    def json(self, *args: str, user: str | None = None) -> Any:
        done = self.cli(*args, "--json", *self.roots(), user=user)
        assert done.code in (0, 1), done.err
        return done.json()


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReportMachine]:
    """org/alpha (with a local_dir copy and a blob no snapshot uses), org/beta at two revisions that share
    their weights (and a renamed copy of them in a plain folder, beside a file with two hard links), and
    a download of org/gguf killed halfway."""
    m = ReportMachine(tmp_path_factory.mktemp("report-machine"))
    cache, models = m.cache, m.models
    with client_env() as mp, LocalHub() as hub:
        keep_client_home(m.root / "hf_home", mp)
        hub.add_commit("org/alpha", {"model.safetensors": random_bytes(600_000, "alpha"), "config.json": b'{"a": 1}'})
        first = hub.add_commit("org/beta", {"model.safetensors": BETA, "config.json": b'{"v": 1}'})
        hub.add_commit("org/beta", {"model.safetensors": BETA, "config.json": b'{"v": 2}'})
        hub.add_commit("org/gguf", {"tiny.gguf": random_bytes(12 * MB, "gguf")})
        download_to_cache(hub, "org/alpha", cache)
        download_to_cache(hub, "org/beta", cache, revision=first)
        download_to_cache(hub, "org/beta", cache)
        download_to_local_dir(hub, "org/alpha", models / "alpha", cache)
        interrupted_download(hub, "org/gguf", "tiny.gguf", cache)
    write_tree(models / "finetune", {"base.safetensors": BETA, "own.bin": OWN})
    os.link(models / "finetune" / "own.bin", models / "finetune" / "own-again.bin")
    orphan = cache / "models--org--alpha" / "blobs" / hashlib.sha256(ORPHAN).hexdigest()
    orphan.write_bytes(ORPHAN)
    yield m


def page_data(text: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="space-data">(.*?)</script>', text, re.DOTALL)
    assert found is not None
    data: dict[str, Any] = json.loads(found.group(1).replace("<\\/", "</"))
    return data


def leaves(data: dict[str, Any]) -> list[list[Any]]:
    nodes = data["nodes"]
    return [n for i, n in enumerate(nodes) if n[14] == i + 1 and n[1] >= 3]


def full_path(data: dict[str, Any], i: int) -> str:
    nodes = data["nodes"]
    path = nodes[i][9]
    if not path.startswith("+"):
        return str(path)
    a = i
    while nodes[a][1] > 2:
        a = nodes[a][0]
    if path == "+#":
        return f"{nodes[a][9]}/blobs/{nodes[i][10].split(':')[1]}"
    return f"{nodes[a][9]}/{path[1:]}"


def status_of(data: dict[str, Any], path: str) -> str:
    nodes = data["nodes"]
    found = [data["statuses"][n[6]] for i, n in enumerate(nodes) if n[14] == i + 1 and full_path(data, i) == path]
    assert len(found) == 1, (path, found)
    return str(found[0])


@pytest.mark.parametrize("as_nobody", [False, True], ids=["root", "nobody"])
def test_the_page_has_analyzes_figures_and_the_dry_runs(
    machine: ReportMachine, as_nobody: bool, shared_tmp: Path
) -> None:
    """The figures, the tree and the colours of the page are those of analyze and of consolidate's and
    clean's dry runs, run by the same user (auto links what this user's next steps cannot write through)."""
    m, user = machine, None
    if as_nobody:
        if os.geteuid() != 0:
            pytest.skip("the nobody run needs root to hand the machine over")
        m = ReportMachine(shared_tmp / "m")
        subprocess.run(["cp", "-a", str(machine.root), str(m.root)], check=True)  # keeps the hard links
        user = as_unprivileged(m)
    _, text = m.report(user)
    a = m.json("analyze", user=user)
    plan = m.json("consolidate", "--dry-run", user=user)
    garbage = m.json("clean", "--dry-run", user=user)
    storage = text.split('id="storage"')[1].split("</table>")[0]
    for key in (
        "hf_cache_bytes",
        "local_bytes",
        "duplicate_bytes",
        "total_bytes",
        "metadata_bytes",
        "incomplete_bytes",
    ):
        assert f"{a[key]:,} bytes" in storage, (key, a[key])
    assert a["duplicate_bytes"] > 1_000_000 and a["incomplete_bytes"] > 0
    give_back = text.split('id="give-back"')[1]
    assert f"{plan['bytes_to_free']:,} bytes" in give_back.split('id="clean-frees"')[0]
    assert garbage["bytes_to_free"] >= len(ORPHAN)
    assert f"{garbage['bytes_to_free']:,} bytes" in give_back.split('id="clean-frees"')[1].split("</tr>")[0]

    data = page_data(text)
    nodes = data["nodes"]
    assert nodes[0][8] == a["total_bytes"] == sum(n[8] for n in leaves(data))
    stores = {n[7]: n[8] for n in nodes if n[1] == 1}
    titles = {"hf_cache": "HF cache", "local_dir": "local_dir downloads", "plain": "plain folders"}
    assert stores == {titles[s["store"]]: s["bytes"] for s in a["stores"]}
    assert {n[9] for n in nodes if n[1] == 2} >= {r["path"] for r in a["repos"]}
    # each copy the plan acts on, or leaves alone, has that colour; each kept copy is "kept"
    for action in plan["plan"]["actions"]:
        wanted = "freed" if action["kind"] in ("link", "delete") else "left"
        assert status_of(data, action["target"]["path"]) == wanted, action
    kept = {act["keep"]["path"] for act in plan["plan"]["actions"]}
    assert {status_of(data, p) for p in kept} == {"kept"}
    for item in garbage["items"]:
        if item["action"] == "remove" and item["size"]:
            assert status_of(data, item["path"]) == "garbage", item
    partial = next(Path(m.cache).glob("models--org--gguf/blobs/*.incomplete"))
    assert status_of(data, str(partial)) in ("partial", "garbage")
    own = [n for n in leaves(data) if n[7] in ("own.bin", "own-again.bin")]  # two names, one inode, one leaf
    assert len(own) == 1 and own[0][12] == 2 and data["statuses"][own[0][6]] == "shared" and own[0][8] == len(OWN)
    # beta's weights: one blob that both revisions use, drawn once
    shared = [n for n in nodes if n[1] == 3 and n[7] == "shared by 2 revisions"]
    assert len(shared) == 1 and shared[0][8] == len(BETA)
    if user == NOBODY:  # the read-only mode stops nobody: auto links the local copies, and frees them
        assert plan["bytes_to_free"] > 600_000


def test_with_a_budget_the_page_shows_what_prune_would_free(machine: ReportMachine, shared_tmp: Path) -> None:
    """Given prune's budget, the page's prune figure is prune's own dry run's, and the files of each unit it
    would remove have prune's colour (but for garbage, which clean takes first); without one, it says how to
    ask. The least recently used repo goes first: org/alpha is made two years old."""
    m = ReportMachine(shared_tmp / "m")
    subprocess.run(["cp", "-a", str(machine.root), str(m.root)], check=True)
    old = time.time() - 2 * 365 * 86400
    for path in (m.cache / "models--org--alpha" / "blobs").iterdir():
        os.utime(path, (old, path.stat().st_mtime))
    page = m.root / "out" / "budget.html"
    page.parent.mkdir(exist_ok=True)
    budget = ("--older-than", "365d")
    done = m.cli("report", "--html", page, *m.roots(), *budget)
    assert done.code == 0, done.err
    pruned = m.cli("prune", "--dry-run", "--json", "--cache-dir", m.cache, *budget)
    assert pruned.code == 0, pruned.err
    plan = pruned.json()
    removed = [u for u in plan["units"] if u["action"] == "remove"]
    assert [u["id"] for u in removed] == ["org/alpha"] and plan["bytes_to_free"] > 600_000
    text = page.read_text()
    figure = text.split('id="prune-frees"')[1].split("</tr>")[0]
    assert f"{plan['bytes_to_free']:,} bytes" in figure
    data = page_data(text)
    nodes = data["nodes"]
    alpha = [
        data["statuses"][n[6]]
        for i, n in enumerate(nodes)
        if n[14] == i + 1 and n[1] >= 3 and "models--org--alpha" in full_path(data, i)
    ]
    assert "prune" in alpha and set(alpha) <= {"prune", "garbage"}, alpha
    assert "give report a budget" in m.report()[1].split('id="prune-frees"')[1].split("</tr>")[0]


EXTERNAL = [
    (r"""\bsrc\s*=""", "an element loading src="),
    (r"""<link\b""", "a <link> (stylesheet, icon, preload)"),
    (r"""url\s*\(""", "a CSS url()"),
    (r"""@import""", "a CSS @import"),
    (
        r"""\bfetch\s*\(|XMLHttpRequest|\bimport\s*\(|WebSocket|EventSource|sendBeacon|new\s+Worker""",
        "a script request",
    ),
    (r"""<(iframe|object|embed|img|image|video|audio|source|use)\b""", "an embedded resource"),
    (r"""@font-face""", "a web font"),
]


def external_references(text: str) -> list[str]:
    """Everything in the page that could load from elsewhere; http(s) only inside <a href="..."> is fine."""
    found = [f"{what}: {m.group(0)!r}" for pattern, what in EXTERNAL for m in re.finditer(pattern, text, re.I)]
    links = set(re.findall(r"""<a href="(https?://[^"]*)">""", text))
    for m in re.finditer(r"""(https?:)?//[\w.-]+\.\w+[^\s"'<>)]*""", text):
        if m.group(0) not in links and not m.group(0).startswith("//"):
            found.append(f"an address outside a link: {m.group(0)!r}")
    return found


def test_the_page_loads_nothing_from_the_network(machine: ReportMachine) -> None:
    _, text = machine.report()
    assert external_references(text) == []
    assert '<a href="' in text  # the repos of the cache link to their model pages
    # the scan sees each kind of reference it must
    for extra in ('<img src="x.png">', '<link rel="stylesheet" href="https://cdn.example.com/a.css">',
                  "<style>@import 'a.css'</style>", "<style>b{background:url(https://x.io/a.png)}</style>",
                  "<script>fetch('/data.json')</script>", "<p>see https://tracker.example.com/p.gif</p>"):  # fmt: skip
        assert external_references(text + extra), extra


def test_a_browser_draws_the_page_names_every_repo_and_shows_the_duplicate_bytes(machine: ReportMachine) -> None:
    page, _ = machine.report()
    a = machine.json("analyze")
    with browser() as driver:
        driver.get(page.as_uri())
        rects = driver.find_elements("css selector", "#treemap rect")
        assert len(rects) > 10
        table = driver.find_element("id", "repos").text
        for repo in a["repos"]:
            assert repo["id"] in table and repo["path"] in table, repo
        storage = driver.find_element("id", "storage").text
        assert re.search(rf"Duplicate Storage\s+\S+\s+{a['duplicate_bytes']:,} bytes", storage), storage
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []  # no script error
        png = driver.get_screenshot_as_png()
    seen = colours(png)
    sampled = sum(seen.values())
    assert len(seen) >= 8 and max(seen.values()) < 0.8 * sampled  # not blank, not one colour
    # the second copies stand out, and so does the cache's kept copy they duplicate
    assert sum(n for rgb, n in seen.items() if rgb in SECOND_COPY_COLOURS) > 0.01 * sampled
    assert seen.get(KEPT_COLOUR, 0) > 0.01 * sampled


def test_a_click_on_a_repo_zooms_into_it_and_a_tile_shows_its_details(machine: ReportMachine) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    page, text = machine.report()
    data = page_data(text)
    nodes = data["nodes"]
    alpha = next(i for i, n in enumerate(nodes) if n[1] == 2 and n[9].endswith("models--org--alpha"))
    weights = next(i for i in range(alpha, nodes[alpha][14]) if nodes[i][7] == "model.safetensors")
    with browser() as driver:
        driver.get(page.as_uri())
        tile = driver.find_element("css selector", f'#treemap rect[data-i="{weights}"]')
        ActionChains(driver).move_to_element(tile).perform()
        shown = driver.find_element("id", "tile-info").text
        assert full_path(data, weights) in shown and "600.0KB (600,000 bytes)" in shown
        assert f"digest: {nodes[weights][10]}" in shown and "status: the copy kept" in shown
        assert driver.find_element("id", "treemap").get_attribute("data-view") == ""
        before = tile.size["width"]
        ActionChains(driver).move_to_element(tile).click().perform()  # a real click where the tile is drawn
        deadline = time.monotonic() + 10
        while driver.find_element("id", "treemap").get_attribute("data-view") != nodes[alpha][9]:
            assert time.monotonic() < deadline, "no zoom"
            time.sleep(0.05)
        drawn = [int(r.get_attribute("data-i")) for r in driver.find_elements("css selector", "#treemap rect")]
        assert drawn and all(alpha < i < nodes[alpha][14] for i in drawn)  # the repo's parts alone
        assert "org/alpha" in driver.find_element("id", "crumbs").text
        listed = driver.find_element("id", "in-view").text  # the repo's revisions and parts, largest first
        assert listed.index(nodes[nodes[weights][0]][7]) < listed.index("in no snapshot") < listed.index("metadata")
        # the tile, now as large as the picture allows, fills more of it than before
        zoomed = driver.find_element("css selector", f'#treemap rect[data-i="{weights}"]')
        assert zoomed.size["width"] > before
        driver.find_element("css selector", '#crumbs a[data-i="0"]').click()
        assert driver.find_element("id", "treemap").get_attribute("data-view") == ""


def test_a_page_that_cannot_be_written_is_one_line_and_exit_2(machine: ReportMachine, shared_tmp: Path) -> None:
    for where, said in [
        (machine.root / "no-such-folder" / "r.html", "folder not found for --html"),
        (machine.root, "--html names a folder, not a file"),
    ]:
        done = machine.cli("report", "--html", where, *machine.roots())
        assert done.code == 2 and done.err.strip() == f"modelcache: error: {said}: {where}"[: len(done.err.strip())]
        assert done.err.count("\n") == 1, done.err
    if os.geteuid() == 0:  # as nobody, into a folder only root may write (or even enter)
        closed = shared_tmp / "closed"
        closed.mkdir(mode=0o700)
        done = machine.cli("report", "--html", closed / "r.html", *machine.roots(), user=NOBODY)
        assert done.code == 2 and done.err.startswith("modelcache: error: cannot write"), done.err
        assert done.err.count("\n") == 1 and not (closed / "r.html").exists()


def build_metadata_heavy(root: Path, n_repos: int = 2000) -> None:
    """The metadata-heavy benchmark tree's shape (benchmarks/scenarios.py: 2,000 repos of ~50 files, a tenth
    also downloaded with local_dir=, written by huggingface_hub's own writers), each file cut to 1/64 of its
    size: the page's size follows the count of files and folders, not their bytes."""
    from benchmarks import scenarios

    for i in range(n_repos):
        spec = scenarios.small_repo(i, "meta")
        files = {path: content[: max(1, len(content) // 64)] for path, content in spec.files.items()}
        spec = scenarios.RepoSpec(spec.repo_id, files, spec.local)
        infos = scenarios.file_infos(spec)
        commit = scenarios.commit_sha(spec)
        scenarios.replicate_cache_repo(root / "cache", spec, commit, infos)
        if spec.local:
            scenarios.replicate_local_dir(root / "cache", root / "models" / spec.local_name, spec, commit, infos)


def test_a_page_of_2000_repos_stays_under_10_mb_and_renders_in_time(tmp_path: Path) -> None:
    m = ReportMachine(tmp_path)
    build_metadata_heavy(m.root)
    page, text = m.report()
    size = page.stat().st_size
    assert size < 10_000_000, size
    table = text.split('id="repos"')[1]
    named = re.findall(r'<td class="repo"><a href="[^"]*">([^<]*)</a><div class="path">([^<]*)</div>', table)
    assert len({path for _, path in named}) == 2000 + 200  # every repo, and every local_dir copy
    assert len({name for name, _ in named}) == 2000
    with browser() as driver:
        start = time.monotonic()
        driver.get(page.as_uri())  # returns once the page's script has run: the picture is drawn
        drawn = driver.execute_script("return document.querySelectorAll('#treemap rect').length")
        took = time.monotonic() - start
        assert drawn > 2000, drawn
        assert took < 30, f"{took:.1f} s to load and draw a page of {size:,} bytes"


@pytest.mark.parametrize("option", ["--cache-dir", "--models", "--store"])
def test_a_folder_given_that_is_not_there_is_one_line_and_no_page(machine: ReportMachine, option: str) -> None:
    missing = machine.root / "typo"
    value, message = missing_folder(option, missing)
    page = machine.root / "out" / "typo.html"
    done = machine.cli("report", "--html", page, *machine.roots(), option, value)
    assert (done.code, done.out) == (2, "") and done.err.splitlines() == [f"modelcache: error: {message}: {missing}"]
    assert not page.exists() and not missing.exists()


def test_the_smallest_files_are_drawn_together_per_folder_and_status() -> None:
    from modelcache.space import Node, Status, _total, merge_small

    root = Node("everything", 0)
    for r in range(3):
        repo = Node(f"org/r{r}", 2)
        root.children.append(Node("store", 1, children=[repo]))
        for f in range(40):
            status = Status.LEFT if f % 3 == 0 else Status.UNIQUE
            repo.children.append(Node(f"f{f}", 3, size=1000 * (r + 1) + f, status=status))
    _total(root)
    before = (root.size, dict(root.by_status), [c.size for c in root.children])
    cut = sorted((1000 * (r + 1) + f for r in range(3) for f in range(40)), reverse=True)[29]
    merged = merge_small(root, keep=30)
    files = [n for store in root.children for repo in store.children for n in repo.children]
    assert (root.size, dict(root.by_status), [c.size for c in root.children]) == before
    assert sum(n.count for n in files) == 120 and merged == sum(n.count for n in files if n.count > 1)
    singles = [n for n in files if n.count == 1]
    assert len(singles) == 30 and min(n.size for n in singles) >= cut  # the 30 largest, each drawn alone
    for repo in (r for store in root.children for r in store.children):  # one merged leaf per status at most
        groups = [n.status for n in repo.children if n.count > 1]
        assert len(groups) == len(set(groups))
        assert sum(n.size for n in repo.children) == repo.size

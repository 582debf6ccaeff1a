"""What a new user sees first: help texts, the plan's total in words, `--top`, the bar per store."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_cache, download_to_local_dir, random_bytes, write_tree

from .machine import run_cli

COMMANDS = [
    *("analyze", "consolidate", "apply", "undo", "clean", "verify", "list", "stores", "demo", "download", "path"),
    "report",
]


@pytest.fixture
def machine(local_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Three repos of 300, 200 and 100 KB in the cache, a local_dir copy of the first, a plain copy of a
    weight of the second: the folder arguments of the CLI."""
    monkeypatch.setenv("MODELCACHE_INDEX", str(tmp_path / "index.sqlite"))
    monkeypatch.setenv("MODELCACHE_STATE", str(tmp_path / "state"))
    cache, models = tmp_path / "cache", tmp_path / "models"
    for name, size in (("big", 300_000), ("mid", 200_000), ("small", 100_000)):
        local_hub.add_commit(
            f"org/{name}", {"model.safetensors": random_bytes(size, name), "config.json": name.encode()}
        )
        download_to_cache(local_hub, f"org/{name}", cache)
    download_to_local_dir(local_hub, "org/big", models / "big", cache)
    write_tree(models / "mine", {"w.safetensors": random_bytes(200_000, "mid")})
    return ["--cache-dir", str(cache), "--models", str(models), "--no-discover"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_artefacts(command: str) -> None:
    """rich took `[default: ...]` in a help text for markup and dropped it: "HF hub cache folder ."."""
    text = run_cli(command, "--help", env={"COLUMNS": "200"}).out
    assert "Usage:" in text
    for line in text.splitlines():
        assert not re.search(r"\w \.(\s|$)", line), line  # a word, a space, a lone dot
        assert "()" not in line and "[]" not in line, line
    # On a narrow terminal, the description's paragraphs are reflowed: no sentence cut in two by a line
    # break of the docstring (a short line followed by more of the same paragraph).
    narrow = run_cli(command, "--help", env={"COLUMNS": "80"}).out
    description = narrow.split("Usage:")[1].split("╭")[0].splitlines()[2:]
    for line, after in itertools.pairwise(description):
        assert len(line.strip()) > 50 or not after.strip() or not line.strip(), (line, after)


def test_the_plan_total_says_what_happens_in_words(machine: list[str]) -> None:
    hardlink = run_cli("consolidate", "--mode", "hardlink", "--dry-run", *machine)
    assert hardlink.code == 0, hardlink.err
    # the local_dir copy's two files and the plain copy: three copies, each to become a hard link
    assert "Total: 3 files become hard links, freeing 500.0KB (500,003 bytes);" in hardlink.out, hardlink.out
    delete = run_cli("consolidate", "--mode", "delete", "--dry-run", *machine)
    assert "Total: 3 files are removed, freeing" in delete.out, delete.out
    assert "file(s) to" not in hardlink.out + delete.out


def test_top_shows_the_largest_rows_and_says_what_it_left_out(machine: list[str]) -> None:
    full = run_cli("analyze", *machine)
    top = run_cli("analyze", "--top", "1", *machine)
    assert full.code == top.code == 0, top.err
    assert "org/small" in full.out and "org/mid" in full.out
    # five repos and folders: the largest (org/big, 300 KB, in the cache or its local_dir copy) is shown
    table = top.out.split("Repos and folders")[1].split("Duplicate groups")[0]
    assert "org/big" in table and "org/small" not in table and "org/mid" not in table and "mine" not in table
    assert re.search(r"\.\.\. 4 more repos and folders \([\d.]+KB\) left out by --top 1", top.out), top.out
    groups = top.out.split("Duplicate groups (3), largest first:")[1]
    assert len(re.findall(r"x 2 copies", groups)) == 1
    assert "... 2 more groups" in groups and "left out by --top 1" in groups
    listed = run_cli("list", "--top", "2", *machine)
    assert listed.code == 0, listed.err
    assert "org/small" not in listed.out and "... 3 more models and folders" in listed.out, listed.out
    assert run_cli("list", "--top", "0", *machine).code == 2
    # --json is always whole
    assert len(run_cli("analyze", "--json", *machine).json()["repos"]) == 5


def test_the_summary_has_a_bar_per_store(machine: list[str]) -> None:
    out = run_cli("analyze", *machine).out
    bars = dict(re.findall(r"^    (HF cache|local_dir downloads|plain folders) +([█░]{30}) ", out, re.MULTILINE))
    assert set(bars) == {"HF cache", "local_dir downloads", "plain folders"}, out
    # the cache holds 600 KB of about 1,100 KB: more than half the bar; the plain copy 200 KB: under a quarter
    assert 15 <= bars["HF cache"].count("█") <= 18 and 4 <= bars["plain folders"].count("█") <= 6

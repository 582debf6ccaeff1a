"""`modelcache demo`, the README's first command, on a fresh folder."""

from __future__ import annotations

import re
from pathlib import Path

from .machine import expected_figures, run_cli


def test_demo_shows_the_duplicated_bytes_it_made(tmp_path: Path) -> None:
    where = tmp_path / "demo"
    result = run_cli("demo", "--dir", where, env={"MODELCACHE_INDEX": str(tmp_path / "unused.sqlite")})
    assert result.code == 0, result.err
    made = re.search(r"The demo made ([\d,]+) bytes .* analyze found ([\d,]+): matches\.", result.out)
    assert made is not None, result.out
    assert made.group(1) == made.group(2)
    # and that figure is what the files themselves say
    independent = expected_figures(where / "hf" / "hub", [where / "models"])
    assert int(made.group(1).replace(",", "")) == independent["duplicate_bytes"]
    assert f"({independent['duplicate_bytes']:,} bytes)  ← WASTED SPACE" in result.out
    # the demo left what it said: a partial download, and commands that work as printed
    assert list((where / "hf" / "hub").glob("*/blobs/*.incomplete"))
    assert "modelcache analyze --cache-dir" in result.out
    assert not (tmp_path / "unused.sqlite").exists()  # the demo keeps its own index


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mine")
    result = run_cli("demo", "--dir", tmp_path)
    assert result.code == 2 and result.err.strip() == f"modelcache: error: demo folder is not empty: {tmp_path}"
    assert (tmp_path / "x").read_text() == "mine"


def test_the_commands_the_demo_prints_work(tmp_path: Path) -> None:
    import shlex

    where = tmp_path / "demo"
    result = run_cli("demo", "--dir", where)
    lines = [line.strip() for line in result.out.splitlines() if "modelcache " in line and "MODELCACHE_INDEX" in line]
    assert len(lines) >= 6
    for line in lines:
        words = shlex.split(line.split("#")[0])
        start = words.index("modelcache")
        env = dict(w.split("=", 1) for w in words[:start])
        args = words[start + 1 :]
        ran = run_cli(*args, env=env)
        assert ran.code in (0, 1), (line, ran.err)
        assert "Traceback" not in ran.err
        assert str(where) in env["MODELCACHE_INDEX"]  # the demo never touches the user's own index

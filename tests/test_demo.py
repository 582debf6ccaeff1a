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
    assert "  modelcache analyze\n" in result.out and "--no-discover" not in result.out  # the config says it
    assert not (tmp_path / "unused.sqlite").exists()  # the demo keeps its own index


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mine")
    result = run_cli("demo", "--dir", tmp_path)
    assert result.code == 2 and result.err.strip() == f"modelcache: error: demo folder is not empty: {tmp_path}"
    assert (tmp_path / "x").read_text() == "mine"


def test_the_commands_the_demo_prints_work(tmp_path: Path) -> None:
    """Its environment once, in one export line; then short commands, each of which works as printed."""
    import shlex

    where = tmp_path / "demo"
    result = run_cli("demo", "--dir", where)
    exports = [line.strip() for line in result.out.splitlines() if line.strip().startswith("export ")]
    assert len(exports) == 1, result.out
    env = dict(word.split("=", 1) for word in shlex.split(exports[0])[1:])
    assert set(env) == {"HF_HUB_CACHE", "MODELCACHE_CONFIG", "MODELCACHE_INDEX", "MODELCACHE_STATE"}
    assert all(value.startswith(str(where)) for value in env.values())  # never the user's own index or state
    lines = [line.strip() for line in result.out.splitlines() if line.strip().startswith("modelcache ")]
    assert len(lines) >= 8 and any(line.startswith("modelcache report --html") for line in lines)
    assert all(len(line.split("#")[0].strip()) < 80 for line in lines if "--html" not in line), lines
    for line in lines:
        args = shlex.split(line.split("#")[0])[1:]
        ran = run_cli(*args, env={**env, "BROWSER": "true"})  # --open runs `true`, not a browser
        assert ran.code in (0, 1), (line, ran.err)
        assert "Traceback" not in ran.err
    # the report shows what the demo made
    page = (where / "report.html").read_text()
    made = re.search(r"The demo made ([\d,]+) bytes", result.out)
    assert made is not None and f"{made.group(1)} bytes" in page.split('id="storage"')[1].split("</table>")[0]
    assert "demo/Qwen2-VL-mini-Instruct" in page and "my-finetune" in page

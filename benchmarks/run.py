"""Issue 7 and 17 benchmarks: modelcache, its peers and the machine's limits, on the same trees, in one run.

    python benchmarks/run.py [--scenario metadata|data|mixed|scale|all]... [--repeat N] [--scale-files N]

Scenarios (built once under --data-dir, default /work/bench-data, reused while their parameters
are unchanged; see scenarios.py for how they are built with LocalHub and the real client):

- metadata: 2,000 small repos (~50 files each), a tenth with local_dir copies. Warm page cache.
- data: 40 repos, ~6 GB in the cache, ~3 GB of local_dir copies. Every run starts with the page
  cache dropped (`echo 3 > /proc/sys/vm/drop_caches`), then the same tools again with a warm page
  cache; `consolidate` (hard links) is timed on it and undone after each run.
- mixed (issue 17): 300 repos, ~2 GB in the cache: one in 15 LLM-like (JSON files, tokenizers of a
  few MB, safetensors shards of tens of MB; four of them a family of fine-tunes sharing shard sizes),
  the others small models (tens of files from bytes to a few MB); a quarter also as local_dir
  copies. Cold (page cache dropped before every run of every tool) then warm, as data.
- scale: --scale-files (default 1,000,000) files and a quarter and half of that: `analyze` time and
  peak memory only, and peak memory per file. Repos of 51 files, or --scale-repos N of them (issue 8's
  scale run: --scale-repos 10000, about 100 files each).

Each round runs every tool once, in the same order; rounds repeat --repeat times; the table shows
medians. modelcache's digest index is cold (a fresh MODELCACHE_INDEX) unless the row says warm
(the same index again, right after a cold run). Results go to benchmarks/results/<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import scenarios
from measure import Run, drop_caches, run

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
MODELCACHE = str(BIN / "modelcache")  # the console script: what a user runs
HF = str(BIN / "hf")
PY = sys.executable
LIMITS = str(HERE / "limits.py")
CORES = os.cpu_count() or 1

BASE_ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "NO_COLOR": "1",
    "MODELCACHE_CONFIG": "/nonexistent/modelcache-bench.toml",
}


def compile_modelcache() -> str:
    """Byte-compile the modelcache that the runs import, as `pip install` does for a user.

    An editable install (or PYTHONDONTWRITEBYTECODE, set on this machine) would otherwise compile
    every module again in every run: 30 ms of a warm re-analyze. Returns where it is.
    """
    where = subprocess.run(
        [PY, "-c", "import modelcache, os; print(os.path.dirname(modelcache.__file__))"],
        env=BASE_ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run([PY, "-m", "compileall", "-q", where], check=True, env=BASE_ENV)
    return where


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- output parsing: which duplicate groups each tool reported ---------------------------------------------


def blank_line_groups(path: Path) -> list[list[str]]:
    """jdupes, fdupes and rmlint's fdupes formatter: one path a line, groups separated by blank lines."""
    groups: list[list[str]] = [[]]
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                groups[-1].append(line)
            elif groups[-1]:
                groups.append([])
    return [g for g in groups if len(g) > 1]


def modelcache_groups(path: Path) -> list[list[str]]:
    with open(path) as f:
        return [d["paths"] for d in json.load(f)["duplicates"]]


def model_dup_bytes(groups: list[list[str]], sizes: dict[str, int]) -> int:
    """Reclaimable bytes among the scenario's model files (each manifest path is its own inode)."""
    total = 0
    for g in groups:
        members = [p for p in g if p in sizes]
        if len(members) > 1:
            total += (len(members) - 1) * sizes[members[0]]
    return total


# -- tools ---------------------------------------------------------------------------------------------


@dataclass
class Tool:
    name: str
    argv: list[str]
    kind: str  # "modelcache", "peer" or "limit"
    parse: Callable[[Path], list[list[str]]] | None = None
    index: str | None = None  # modelcache: "cold" (fresh index) or "warm" (the round's index again)
    ok_codes: tuple[int, ...] = (0,)
    env: dict[str, str] = field(default_factory=dict)


def tools_for(built: scenarios.Built, lists: dict[str, Path], *, fast: bool = True) -> list[Tool]:
    c, m = str(built.cache), str(built.models)
    mc = [MODELCACHE, "analyze", "--json", "--cache-dir", c, "--models", m]
    out = [
        Tool("hf cache ls", [HF, "cache", "ls", "--cache-dir", c], "peer"),
        Tool("modelcache analyze --fast", [*mc, "--fast"], "modelcache", modelcache_groups, "cold", (0, 1)),
        Tool("modelcache analyze", mc, "modelcache", modelcache_groups, "cold", (0, 1)),
        Tool("modelcache analyze (warm index)", mc, "modelcache", modelcache_groups, "warm", (0, 1)),
        # issue 15: planning a prune of every unit (the table, as JSON), the HF cache alone as prune reads it
        Tool(
            "modelcache prune --dry-run",
            [MODELCACHE, "prune", "--json", "--dry-run", "--older-than", "0", "--cache-dir", c],
            "modelcache",
            index="warm",
        ),
        Tool("jdupes -r", ["jdupes", "-r", "-q", c, m], "peer", blank_line_groups),
        Tool(
            "rmlint --without-fiemap",
            ["rmlint", "-T", "df", "--without-fiemap", "-o", "fdupes:{out}", c, m],
            "peer",
            blank_line_groups,
        ),
        Tool("fdupes -r", ["fdupes", "-r", "-q", c, m], "peer", blank_line_groups),
        Tool("limit: scandir walk", [PY, LIMITS, "walk", c, m], "limit"),
        Tool("limit: scandir walk + lstat", [PY, LIMITS, "walk-stat", c, m], "limit"),
        Tool("limit: cat must-read", ["xargs", "-0", "-a", str(lists["must_read0"]), "cat"], "limit"),
        Tool(f"limit: sha256 must-read x{CORES}", [PY, LIMITS, "sha256", str(lists["must_read"])], "limit"),
        Tool("limit: sha256 must-read x16", [PY, LIMITS, "sha256", str(lists["must_read"]), "16"], "limit"),
        Tool("limit: sha256 one side x16", [PY, LIMITS, "sha256", str(lists["one_side"]), "16"], "limit"),
    ]
    if not fast:
        out = [t for t in out if "--fast" not in t.name]
    return out


def rmlint_default(built: scenarios.Built) -> Tool:
    c, m = str(built.cache), str(built.models)
    argv = ["rmlint", "-T", "df", "-o", "fdupes:{out}", c, m]
    return Tool("rmlint (default: fiemap)", argv, "peer", blank_line_groups)


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self.found: dict[tuple[str, str], int] = {}

    def measure(self, scenario: str, tool: Tool, built: scenarios.Built, *, cold: bool, round_: int) -> Run:
        out = self.work / f"{scenario}-{len(self.rows[(scenario, tool.name)])}.out"
        env = {**BASE_ENV, **tool.env}
        if tool.index is not None:
            index = self.work / f"index-{scenario}-{round_}.sqlite"
            if tool.index == "cold":
                for suffix in ("", "-journal", "-wal"):
                    Path(f"{index}{suffix}").unlink(missing_ok=True)
            env["MODELCACHE_INDEX"] = str(index)
            env["MODELCACHE_STATE"] = str(self.work / "state")
        argv = [a.replace("{out}", str(out)) for a in tool.argv]
        result = run(argv, env=env, cwd=self.work, stdout=out, cold=cold, ok_codes=tool.ok_codes)
        record = result.as_dict()
        if tool.parse is not None:
            sizes = built_sizes(built)
            found = model_dup_bytes(tool.parse(out), sizes)
            record["dup_bytes_found"] = found
            self.found[(scenario, tool.name)] = found
        self.rows[(scenario, tool.name)].append(record)
        log(
            f"  {scenario:<14} {tool.name:<38} {result.wall:8.2f} s  {result.peak_rss / 1e6:7.0f} MB  "
            f"rchar {result.rchar / 1e6:9.0f} MB  disk {result.read_bytes / 1e6:9.0f} MB"
        )
        out.unlink(missing_ok=True)
        Path(str(out) + ".err").unlink(missing_ok=True)
        return result


_SIZES: dict[str, dict[str, int]] = {}


def built_sizes(built: scenarios.Built) -> dict[str, int]:
    key = str(built.root)
    if key not in _SIZES:
        _SIZES[key] = {p: size for p, size, _ in built.manifest()}
    return _SIZES[key]


def truth(built: scenarios.Built, work: Path) -> tuple[int, dict[str, Path], int]:
    """(expected duplicate bytes, file lists of what must be read, bytes that must be read)."""
    files = built.manifest()
    count = Counter(sha for _, _, sha in files)
    sizes = {sha: size for _, size, sha in files}
    expected = sum((n - 1) * sizes[sha] for sha, n in count.items() if n > 1)
    must = [p for p, _, sha in files if count[sha] > 1]
    must_bytes = sum(size for _, size, sha in files if count[sha] > 1)
    lists = {"must_read": work / f"{built.name}-must-read.txt", "must_read0": work / f"{built.name}-must-read.0"}
    lists["must_read"].write_text("".join(p + "\n" for p in must))
    lists["must_read0"].write_text("".join(p + "\0" for p in must))
    # What trusting one side's claim would leave to read: every copy of a content but one (a cache blob).
    seen: set[str] = set()
    one_side = []
    for p, _, sha in sorted(files, key=lambda f: "/blobs/" not in f[0]):
        if count[sha] > 1:
            if sha in seen:
                one_side.append(p)
            seen.add(sha)
    lists["one_side"] = work / f"{built.name}-one-side.txt"
    lists["one_side"].write_text("".join(p + "\n" for p in one_side))
    lists["all0"] = work / f"{built.name}-all.0"
    lists["all0"].write_text("".join(p + "\0" for p, _, _ in files))
    return expected, lists, must_bytes


def warm_up(built: scenarios.Built, lists: dict[str, Path]) -> None:
    """Bring the tree's metadata and bytes into the page cache (and the tools' code)."""
    subprocess.run([PY, LIMITS, "walk-stat", str(built.cache), str(built.models)], check=True, capture_output=True)
    subprocess.run(["xargs", "-0", "-a", str(lists["all0"]), "cat"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([MODELCACHE, "--version"], check=True, capture_output=True, env=BASE_ENV)
    subprocess.run([HF, "version"], check=False, capture_output=True, env=BASE_ENV)


# -- scenarios -----------------------------------------------------------------------------------------


ONLY_MODELCACHE = False  # --only-modelcache: a baseline run of another modelcache, without peers and limits


SKIP: list[str] = []  # --skip NAME: tools whose name starts with NAME are not run (e.g. a slow peer, again)


def selected(tools: list[Tool]) -> list[Tool]:
    kept = [t for t in tools if not any(t.name.startswith(name) for name in SKIP)]
    return [t for t in kept if t.kind == "modelcache"] if ONLY_MODELCACHE else kept


def bench_metadata(bench: Bench, built: scenarios.Built, repeat: int) -> dict[str, Any]:
    expected, lists, must_bytes = truth(built, bench.work)
    tools = selected(tools_for(built, lists))
    # fdupes needs minutes here (it compares candidate files pairwise): run once, after the rounds.
    once = [t for t in tools if t.name.startswith("fdupes")]
    tools = [t for t in tools if t not in once]
    warm_up(built, lists)
    for r in range(repeat):
        log(f"metadata: round {r + 1}/{repeat} (warm page cache)")
        for tool in tools:
            bench.measure("metadata", tool, built, cold=False, round_=r)
    for tool in selected([*once, rmlint_default(built)]):
        bench.measure("metadata", tool, built, cold=False, round_=0)
    return {"expected_dup_bytes": expected, "must_read_bytes": must_bytes, **built.info}


def bench_data(bench: Bench, built: scenarios.Built, repeat: int, cold_ok: bool, name: str = "data") -> dict[str, Any]:
    """The tools with the page cache dropped before each run (`<name>-cold`), then warm (`<name>-warm`).
    The data-heavy scenario also times `consolidate` and `undo`; the mixed one (issue 17) does not."""
    expected, lists, must_bytes = truth(built, bench.work)
    tools = selected(tools_for(built, lists))
    c, m = str(built.cache), str(built.models)
    consolidate = Tool(
        "modelcache consolidate --mode hardlink (warm index)",
        [MODELCACHE, "consolidate", "--yes", "--json", "--mode", "hardlink", "--cache-dir", c, "--models", m],
        "modelcache",
        index="warm",
    )
    undo = Tool("modelcache undo (restore copies)", [MODELCACHE, "undo", "--json"], "modelcache", index="warm")
    modes = ([(f"{name}-cold", True)] if cold_ok else []) + [(f"{name}-warm", False)]
    for scenario, cold in modes:
        if not cold:
            warm_up(built, lists)
        for r in range(repeat):
            log(f"{scenario}: round {r + 1}/{repeat} ({'page cache dropped before each run' if cold else 'warm'})")
            for tool in tools:
                bench.measure(scenario, tool, built, cold=cold, round_=r)
            if name == "data":
                bench.measure(scenario, consolidate, built, cold=cold, round_=r)
                bench.measure(scenario, undo, built, cold=False, round_=r)
                check_restored(built)
        for tool in selected([rmlint_default(built)]):
            bench.measure(scenario, tool, built, cold=cold, round_=0)
    return {"expected_dup_bytes": expected, "must_read_bytes": must_bytes, **built.info}


def check_restored(built: scenarios.Built) -> None:
    inodes = Counter()
    for p, _, _ in built.manifest():
        st = os.stat(p)
        inodes[(st.st_dev, st.st_ino)] += 1
    shared = sum(1 for n in inodes.values() if n > 1)
    if shared:
        raise SystemExit(f"undo did not restore the tree: {shared} inodes still shared")


def bench_scale(bench: Bench, data_dir: Path, n_files: int, repeat: int, n_repos: int | None = None) -> dict[str, Any]:
    """`analyze` on n_files, half and a quarter of that (with `n_repos`: in that many repos, halved and
    quartered with the files, so that each tree has the same files per repo)."""
    sizes = [n_files // 4, n_files // 2, n_files]

    def repos(n: int) -> int | None:
        return None if n_repos is None else max(1, n_repos * n // n_files)

    info: dict[str, Any] = {}
    for n in sizes:
        built = scenarios.scale_scenario(data_dir, n, log, n_repos=repos(n))
        info[str(n)] = built.info
    for r in range(repeat):
        for n in sizes:
            built = scenarios.scale_scenario(data_dir, n, lambda _: None, n_repos=repos(n))
            c, m = str(built.cache), str(built.models)
            mc = [MODELCACHE, "analyze", "--json", "--cache-dir", c, "--models", m]
            if r == 0:
                lists = {"all0": bench.work / f"{built.name}-all.0"}
                lists["all0"].write_text("".join(p + "\0" for p, _, _ in built.manifest()))
                warm_up(built, lists)
            log(f"scale {n:,}: round {r + 1}/{repeat} (warm page cache)")
            for tool in selected(
                [
                    Tool("modelcache analyze --fast", [*mc, "--fast"], "modelcache", None, "cold", (0, 1)),
                    Tool("modelcache analyze", mc, "modelcache", None, "cold", (0, 1)),
                    Tool("modelcache analyze (warm index)", mc, "modelcache", None, "warm", (0, 1)),
                    Tool("limit: scandir walk + lstat", [PY, LIMITS, "walk-stat", c, m], "limit"),
                ]
            ):
                bench.measure(f"scale-{n}", tool, built, cold=False, round_=r)
    return info


# -- report --------------------------------------------------------------------------------------------


def med(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def summarize(bench: Bench) -> list[dict[str, Any]]:
    table = []
    for (scenario, tool), rows in bench.rows.items():
        table.append(
            {
                "scenario": scenario,
                "tool": tool,
                "runs": len(rows),
                "wall_median": med(rows, "wall"),
                "wall_min": min(r["wall"] for r in rows),
                "wall_max": max(r["wall"] for r in rows),
                "cpu_median": med(rows, "cpu"),
                "peak_rss_median": med(rows, "peak_rss"),
                "rchar_median": med(rows, "rchar"),
                "read_bytes_median": med(rows, "read_bytes"),
                "dup_bytes_found": rows[-1].get("dup_bytes_found"),
            }
        )
    return table


def targets(table: list[dict[str, Any]], info: dict[str, Any], scale_n: int) -> list[dict[str, Any]]:
    by = {(t["scenario"], t["tool"]): t for t in table}

    def wall(s: str, tool: str) -> float | None:
        t = by.get((s, tool))
        return t["wall_median"] if t else None

    out: list[dict[str, Any]] = []

    def ratio(name: str, num: float | None, den: float | None, limit: float, note: str = "") -> None:
        if num is None or den is None or den == 0:
            return
        value = num / den
        out.append({"target": name, "ratio": value, "limit": limit, "met": value <= limit, "note": note})

    s = "metadata"
    hf = wall(s, "hf cache ls")
    ratio("1a metadata: analyze --fast / hf cache ls", wall(s, "modelcache analyze --fast"), hf, 0.2)
    ratio("1b metadata: analyze / hf cache ls", wall(s, "modelcache analyze"), wall(s, "hf cache ls"), 0.25)
    ratio("1c metadata: analyze / jdupes", wall(s, "modelcache analyze"), wall(s, "jdupes -r"), 1.0)
    fast = wall(s, "modelcache analyze --fast")
    ratio("15 metadata: prune --dry-run (planning) / analyze --fast", wall(s, "modelcache prune --dry-run"), fast, 1.2)
    for s in ("data-cold", "data-warm"):
        mc, jd = by.get((s, "modelcache analyze")), by.get((s, "jdupes -r"))
        cat = wall(s, "limit: cat must-read")
        ratio(f"2a {s}: analyze (cold index) / jdupes", wall(s, "modelcache analyze"), wall(s, "jdupes -r"), 0.5)
        if mc and jd:
            ratio(f"2b {s}: bytes read (rchar) / jdupes'", mc["rchar_median"], jd["rchar_median"], 0.55)
            if s == "data-cold":
                ratio(
                    f"2b' {s}: bytes from disk (read_bytes) / jdupes'",
                    mc["read_bytes_median"],
                    jd["read_bytes_median"],
                    0.55,
                )
        ratio(
            f"2c {s}: analyze / sha256 x{CORES} threads of the must-read bytes",
            wall(s, "modelcache analyze"),
            wall(s, f"limit: sha256 must-read x{CORES}"),
            1.3,
        )
        ratio(
            f"2c' {s}: analyze / sha256 x16 threads of the must-read bytes",
            wall(s, "modelcache analyze"),
            wall(s, "limit: sha256 must-read x16"),
            1.3,
            "stricter floor: as many reads in flight as modelcache",
        )
        ratio(
            f"3 {s}: warm re-analyze / cold analyze",
            wall(s, "modelcache analyze (warm index)"),
            wall(s, "modelcache analyze"),
            0.05,
        )
        ratio(
            f"4 {s}: consolidate / cat of both copies",
            wall(s, "modelcache consolidate --mode hardlink (warm index)"),
            cat,
            1.2,
        )
    # Issue 17: the first run on a cold disk, whatever the mix of file sizes; a re-run next to `hf cache ls`.
    ratio("17a mixed-cold: analyze (cold index) / jdupes", wall("mixed-cold", "modelcache analyze"),
          wall("mixed-cold", "jdupes -r"), 0.6)  # fmt: skip
    ratio(
        "17b mixed-cold: analyze (cold index) / sha256 x16 threads of the must-read bytes",
        wall("mixed-cold", "modelcache analyze"),
        wall("mixed-cold", "limit: sha256 must-read x16"),
        1.3,
    )
    ratio("17c data-cold: analyze (cold index) / jdupes", wall("data-cold", "modelcache analyze"),
          wall("data-cold", "jdupes -r"), 0.25)  # fmt: skip
    for s in ("metadata", "data-warm", "mixed-warm"):
        ratio(
            f"17d {s}: re-run (index kept, page cache warm) / hf cache ls",
            wall(s, "modelcache analyze (warm index)"),
            wall(s, "hf cache ls"),
            0.5,
        )
    ratio(
        "3 metadata: warm re-analyze / cold analyze",
        wall("metadata", "modelcache analyze (warm index)"),
        wall("metadata", "modelcache analyze"),
        0.05,
    )
    big = by.get((f"scale-{scale_n}", "modelcache analyze"))
    if big:
        peak = max(
            t["peak_rss_median"]
            for t in table
            if t["scenario"] == f"scale-{scale_n}" and t["tool"].startswith("modelcache")
        )
        out.append(
            {
                "target": f"5 scale {scale_n:,} files: peak RSS (MB)",
                "ratio": peak / 1e6,
                "limit": 300.0,
                "met": peak <= 300e6,
                "note": "",
            }
        )
        points = []
        for n in (scale_n // 4, scale_n // 2, scale_n):
            t = by.get((f"scale-{n}", "modelcache analyze"))
            files = info.get("scale", {}).get(str(n), {}).get("counts", {})
            entries = files.get("files", 0) + files.get("symlinks", 0)
            if t and entries:
                points.append((entries, t["peak_rss_median"]))
        for entries, peak_rss in points:
            out.append(
                {
                    "target": f"5 scale: peak RSS per file at {entries:,} files (B/file)",
                    "ratio": peak_rss / entries,
                    "limit": 300.0,
                    # Not a target of its own: the issue asks for 300 MB at 1,000,000 files and a flat
                    # slope; at fewer files the ~25 MB every run takes before the first file weighs more.
                    "met": None,
                    "note": "for information: includes the ~25 MB of the interpreter and imports",
                }
            )
        if len(points) == 3:
            slopes = [(points[i + 1][1] - points[i][1]) / (points[i + 1][0] - points[i][0]) for i in range(2)]
            out.append(
                {
                    "target": "5 scale: bytes of peak RSS per extra file (1/4->1/2, 1/2->1)",
                    "ratio": slopes[1] / slopes[0] if slopes[0] else float("inf"),
                    "limit": 1.25,
                    "met": slopes[1] / slopes[0] <= 1.25 if slopes[0] else False,
                    "note": f"{slopes[0]:.0f} B/file then {slopes[1]:.0f} B/file (ratio: flat = 1.0)",
                }
            )
    return out


def print_table(table: list[dict[str, Any]], goals: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{'scenario':<16} {'tool':<52} {'median s':>9} {'min-max':>13} {'peak RSS':>9} "
        f"{'read MB':>9} {'disk MB':>9} {'dup MB found':>12}"
    )
    for t in table:
        found = "" if t["dup_bytes_found"] is None else f"{t['dup_bytes_found'] / 1e6:.1f}"
        print(
            f"{t['scenario']:<16} {t['tool']:<52} {t['wall_median']:9.2f} "
            f"{t['wall_min']:6.2f}-{t['wall_max']:<6.2f} {t['peak_rss_median'] / 1e6:7.0f}MB "
            f"{t['rchar_median'] / 1e6:9.0f} {t['read_bytes_median'] / 1e6:9.0f} {found:>12}"
        )
    print()
    for g in goals:
        verdict = "info" if g["met"] is None else "met" if g["met"] else "MISSED"
        print(f"{g['target']:<66} {g['ratio']:8.3f}  (limit {g['limit']})  {verdict}  {g['note']}")


def machine() -> dict[str, Any]:
    def out(*argv: str) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            return (done.stdout.strip() or done.stderr.strip()).splitlines()[0]
        except (OSError, IndexError):
            return "?"

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem = next(int(ln.split()[1]) * 1024 for ln in meminfo if ln.startswith("MemTotal"))
    import huggingface_hub

    return {
        "cpu": cpu,
        "cores": CORES,
        "memory_bytes": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "huggingface_hub": huggingface_hub.__version__,
        "jdupes": out("jdupes", "--version"),
        "rmlint": out("rmlint", "--version"),
        "fdupes": out("fdupes", "--version"),
        "modelcache_commit": out("git", "-C", str(HERE.parent), "describe", "--always", "--dirty"),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=["metadata", "data", "mixed", "scale", "all"], action="append")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale-files", type=int, default=1_000_000)
    parser.add_argument(
        "--scale-repos", type=int, default=None, help="spread the scale files over this many repos (issue 8: 10000)"
    )
    default_dir = Path(os.environ.get("MODELCACHE_BENCH_DATA", "/work/bench-data"))
    parser.add_argument("--data-dir", type=Path, default=default_dir, help="where the trees are built")
    parser.add_argument("--data-scale", type=float, default=1.0, help="shrink the data-heavy scenario (0.5: 3+1.5 GB)")
    parser.add_argument("--metadata-repos", type=int, default=2000)
    parser.add_argument("--mixed-scale", type=float, default=1.0, help="scale the mixed scenario's LLM shards")
    parser.add_argument("--no-cold", action="store_true", help="do not drop the page cache (data scenario)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON [benchmarks/results/<date>.json]")
    parser.add_argument("--only-modelcache", action="store_true", help="skip the peers and limits (baselines)")
    parser.add_argument("--skip", action="append", default=[], help="do not run tools named so (repeatable)")
    parser.add_argument(
        "--pythonpath", default=None, help="import modelcache from here (PYTHONPATH), e.g. a baseline's src"
    )
    args = parser.parse_args()

    started = time.monotonic()
    if args.pythonpath:
        BASE_ENV["PYTHONPATH"] = args.pythonpath
    log(f"modelcache byte-compiled in {compile_modelcache()}")
    global ONLY_MODELCACHE
    ONLY_MODELCACHE = args.only_modelcache
    SKIP.extend(args.skip)
    data_dir: Path = args.data_dir
    work = data_dir / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bench = Bench(work)
    info: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    cold_ok = not args.no_cold and drop_caches()
    if not args.no_cold and not cold_ok:
        log("cannot drop the page cache here: the data scenario runs with a warm page cache only")
    info["cold_page_cache"] = cold_ok
    asked = set(args.scenario or ["all"])
    want = {"metadata", "data", "mixed", "scale"} if "all" in asked else asked
    if "metadata" in want:
        built = scenarios.metadata_scenario(data_dir, log, n_repos=args.metadata_repos)
        info["metadata"] = bench_metadata(bench, built, args.repeat)
    if "data" in want:
        built = scenarios.data_scenario(data_dir, log, scale=args.data_scale)
        info["data"] = bench_data(bench, built, args.repeat, cold_ok)
    if "mixed" in want:
        built = scenarios.mixed_scenario(data_dir, log, scale=args.mixed_scale)
        info["mixed"] = bench_data(bench, built, args.repeat, cold_ok, name="mixed")
    if "scale" in want:
        info["scale"] = bench_scale(bench, data_dir, args.scale_files, args.repeat, args.scale_repos)
    table = summarize(bench)
    goals = targets(table, info, args.scale_files)
    info["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    info["runtime_seconds"] = round(time.monotonic() - started, 1)
    print_table(table, goals)
    for name in ("metadata", "data", "mixed"):
        if name in info:
            log(f"{name}: expected duplicate bytes (ground truth) {info[name]['expected_dup_bytes']:,}")
    log(f"benchmark runtime: {info['runtime_seconds']:.0f} s")
    out = args.out or HERE / "results" / f"{time.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = {f"{s} | {t}": rows for (s, t), rows in bench.rows.items()}
    out.write_text(json.dumps({"info": info, "table": table, "targets": goals, "runs": raw}, indent=1) + "\n")
    log(f"results written to {out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

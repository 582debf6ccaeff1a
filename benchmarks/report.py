"""Render a results file of run.py as the Markdown tables of docs/performance.md.

python benchmarks/report.py benchmarks/results/<date>.json [--baseline benchmarks/results/<date>-baseline.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def mb(n: float) -> str:
    return f"{n / 1e6:,.0f}"


def tables(results: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    base = {(t["scenario"], t["tool"]): t for t in baseline["table"]} if baseline else {}
    out = []
    scenario = None
    header = "| tool | median wall (s) | min-max (s) | peak RSS (MB) | read (MB, rchar) | from disk (MB) "
    header += "| dup MB found |"
    if base:
        header += " before (s / MB RSS) |"
    for t in results["table"]:
        if t["scenario"] != scenario:
            scenario = t["scenario"]
            out += ["", f"**{scenario}**", "", header, "|" + "---|" * (header.count("|") - 1)]
        found = "" if t["dup_bytes_found"] is None else f"{t['dup_bytes_found'] / 1e6:,.1f}"
        row = (
            f"| {t['tool']} | {t['wall_median']:.2f} | {t['wall_min']:.2f}-{t['wall_max']:.2f} | "
            f"{mb(t['peak_rss_median'])} | {mb(t['rchar_median'])} | {mb(t['read_bytes_median'])} | {found} |"
        )
        if base:
            b = base.get((t["scenario"], t["tool"]))
            row += f" {b['wall_median']:.2f} / {mb(b['peak_rss_median'])} |" if b else " |"
        out.append(row)
    out += ["", "| target | measured | limit | |", "|---|---|---|---|"]
    for g in results["targets"]:
        verdict = "for information" if g["met"] is None else "met" if g["met"] else "**missed**"
        note = f" ({g['note']})" if g["note"] else ""
        out.append(f"| {g['target']}{note} | {g['ratio']:.3f} | {g['limit']} | {verdict} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path)
    parser.add_argument("--baseline", type=Path)
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    print(tables(results, baseline))


if __name__ == "__main__":
    main()

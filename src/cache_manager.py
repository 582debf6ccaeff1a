#!/usr/bin/env python3
"""The cache manager of the original solution document, as a thin shim over `modelcache`.

    python src/cache_manager.py --analyze                  # = modelcache analyze
    python src/cache_manager.py --consolidate --dry-run    # = modelcache consolidate --mode delete --dry-run
    python src/cache_manager.py --consolidate              # = modelcache consolidate --mode delete --yes
    python src/cache_manager.py --clean                    # = modelcache clean --yes

`--consolidate` removes the local copies (`./models`, or the config file's folders) whose
bytes the HF cache holds, each verified byte for byte first and journaled
(`modelcache undo` puts them back). Every run prints the modelcache command it stands for.
"""

from __future__ import annotations

import argparse
import sys


def modelcache_args(argv: list[str] | None = None) -> list[str]:
    """The `modelcache` arguments that the original flags stand for."""
    parser = argparse.ArgumentParser(
        prog="cache_manager.py",
        description="Analyze the model cache, remove duplicate local copies, clean broken downloads "
        "(a shim over the `modelcache` command).",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--analyze", action="store_true", help="show cache usage and duplicates")
    action.add_argument("--consolidate", action="store_true", help="remove local copies the HF cache holds")
    action.add_argument("--clean", action="store_true", help="remove broken and partial downloads")
    parser.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
    parser.add_argument("--cache-dir", help="HF hub cache folder [default: where huggingface_hub puts it]")
    parser.add_argument("--models", action="append", help="a model folder (repeatable) [default: ./models]")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    if args.analyze:
        command = ["analyze"]
    elif args.consolidate:
        command = ["consolidate", "--mode", "delete", "--dry-run" if args.dry_run else "--yes"]
    else:
        command = ["clean", "--dry-run" if args.dry_run else "--yes"]
    if args.cache_dir:
        command += ["--cache-dir", args.cache_dir]
    for folder in args.models or []:
        command += ["--models", folder]
    if args.json:
        command.append("--json")
    return command


def main(argv: list[str] | None = None) -> None:
    command = modelcache_args(argv)
    from modelcache.cli import main as modelcache_main

    if "--json" not in command:
        print(f"(modelcache {' '.join(command)})", file=sys.stderr)
    modelcache_main(command)


if __name__ == "__main__":
    main()

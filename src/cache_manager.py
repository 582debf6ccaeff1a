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

import sys

from modelcache.shims import add_cache_dir, cache_dir_args, run_modelcache, shim_parser


def modelcache_args(argv: list[str] | None = None) -> list[str]:
    """The `modelcache` arguments that the original flags stand for."""
    parser, action = shim_parser(
        "cache_manager.py", "Analyze the model cache, remove duplicate local copies, clean broken downloads"
    )
    action.add_argument("--analyze", action="store_true", help="show cache usage and duplicates")
    action.add_argument("--consolidate", action="store_true", help="remove local copies the HF cache holds")
    action.add_argument("--clean", action="store_true", help="remove broken and partial downloads")
    parser.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
    add_cache_dir(parser)
    parser.add_argument("--models", action="append", help="a model folder (repeatable) [default: ./models]")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    if args.analyze:
        command = ["analyze"]
    elif args.consolidate:
        command = ["consolidate", "--mode", "delete", "--dry-run" if args.dry_run else "--yes"]
    else:
        command = ["clean", "--dry-run" if args.dry_run else "--yes"]
    command += cache_dir_args(args)
    for folder in args.models or []:
        command += ["--models", folder]
    if args.json:
        command.append("--json")
    return command


def main(argv: list[str] | None = None) -> None:
    command = modelcache_args(argv)
    if "--json" not in command:
        print(f"(modelcache {' '.join(command)})", file=sys.stderr)
    run_modelcache(command)


if __name__ == "__main__":
    main()

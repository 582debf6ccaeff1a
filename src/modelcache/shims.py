"""What the two shims of the original solution (`src/cache_manager.py`, `src/model_download_manager_fixed.py`)
share: a parser of one required action and options, and the hand-over to the `modelcache` command.

It lives in the package, not beside the shims, because users copy the two shim files into their own
projects' `src/` and run them from there.
"""

from __future__ import annotations

import argparse

CACHE_DIR_HELP = "HF hub cache folder [default: where huggingface_hub puts it]"


def shim_parser(prog: str, summary: str) -> tuple[argparse.ArgumentParser, argparse._MutuallyExclusiveGroup]:
    """The parser of the shim `prog`, and its group of actions (exactly one of them is required)."""
    parser = argparse.ArgumentParser(prog=prog, description=f"{summary} (a shim over the `modelcache` command).")
    return parser, parser.add_mutually_exclusive_group(required=True)


def add_cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", help=CACHE_DIR_HELP)


def cache_dir_args(args: argparse.Namespace) -> list[str]:
    """`--cache-dir DIR` for `modelcache`, when the shim was given a (non-empty) one."""
    return ["--cache-dir", args.cache_dir] if args.cache_dir else []


def run_modelcache(command: list[str]) -> None:
    """`modelcache COMMAND`, in this process (it exits with the command's code)."""
    from modelcache.cli import main

    main(command)

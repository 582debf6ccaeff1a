#!/usr/bin/env python3
"""The fixed download manager of the original solution document, as a thin shim over `modelcache`.

Downloads go into the Hugging Face cache only (never a separate `./models` folder); paths
are found in the cache without the network.

    from model_download_manager_fixed import FixedModelDownloadManager, get_cached_model_path

    manager = FixedModelDownloadManager()
    manager.download_qwen_image()                       # into the cache only
    get_cached_model_path("Qwen/Qwen-Image")            # the snapshot folder, or None

    python src/model_download_manager_fixed.py --list              # = modelcache list
    python src/model_download_manager_fixed.py --path REPO         # = modelcache path REPO
    python src/model_download_manager_fixed.py --download REPO     # = modelcache download REPO
"""

from __future__ import annotations

from modelcache.download import DownloadManager, FixedModelDownloadManager, get_cached_model_path
from modelcache.shims import add_cache_dir, cache_dir_args, run_modelcache, shim_parser

__all__ = ["DownloadManager", "FixedModelDownloadManager", "get_cached_model_path", "main"]


def main(argv: list[str] | None = None) -> None:
    parser, action = shim_parser(
        "model_download_manager_fixed.py", "Download models into the Hugging Face cache only, and find them there"
    )
    action.add_argument("--list", action="store_true", help="list the cached models and whether each is complete")
    action.add_argument("--path", metavar="REPO", help="print the cached snapshot folder of REPO (no network)")
    action.add_argument("--download", metavar="REPO", help="download REPO into the cache")
    parser.add_argument("--revision", help="branch, tag or commit hash [default: main]")
    add_cache_dir(parser)
    args = parser.parse_args(argv)

    common = cache_dir_args(args)
    revision = ["--revision", args.revision] if args.revision else []
    if args.list:
        run_modelcache(["list", *common])
    elif args.path is not None:
        run_modelcache(["path", args.path, *revision, *common])
    else:
        run_modelcache(["download", args.download, *revision, *common])


if __name__ == "__main__":
    main()

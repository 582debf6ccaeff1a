"""`modelcache demo`: a sample machine built with LocalHub and the real client, then analyzed.

The machine: an HF cache with three small repos; `models/` holding local_dir copies of two of
them (the download manager of the original story); a fine-tune folder with a renamed copy of
one weight file; and a download killed halfway. The demo works out on its own, from what it
built, how many bytes are duplicated, and shows that `analyze` finds exactly that.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from collections import Counter
from hashlib import sha256
from pathlib import Path

from rich.console import Console

from .analysis import analyze
from .digests import DigestIndex
from .duplicates import find_duplicates
from .errors import EXIT_ERROR, EXIT_OK, InputError
from .locations import Location
from .report import format_size, render_analysis
from .scan import scan_locations

MB = 1_000_000


def demo_repos() -> dict[str, dict[str, bytes]]:
    from .testing.builders import random_bytes

    return {
        "demo/Qwen-Image-mini": {
            "model_index.json": b'{"_class_name": "QwenImagePipeline"}\n',
            "transformer/diffusion_pytorch_model.safetensors": random_bytes(3 * MB, "qi-transformer"),
            "vae/diffusion_pytorch_model.safetensors": random_bytes(MB, "qi-vae"),
            "text_encoder/model.safetensors": random_bytes(2 * MB, "qi-text"),
            "README.md": b"# Qwen-Image-mini\nA demo repo.\n",
        },
        "demo/Qwen2-VL-mini-Instruct": {
            "config.json": b'{"model_type": "qwen2_vl"}\n',
            "model.safetensors": random_bytes(4 * MB, "vl-weights"),
            "tokenizer.json": random_bytes(200_000, "vl-tokenizer").hex().encode()[:200_000],
        },
        "demo/tiny-llm": {
            "config.json": b'{"model_type": "llama", "hidden_size": 64}\n',
            "model.safetensors": random_bytes(MB, "tiny-weights"),
        },
        "demo/tiny-llm-GGUF": {
            # Larger than huggingface_hub's 10 MiB write chunk, so that a killed download leaves bytes.
            "tiny-llm.Q4_K_M.gguf": random_bytes(12 * MB, "tiny-gguf"),
        },
    }


def build_demo_machine(root: Path) -> tuple[Path, Path, int]:
    """Build the sample machine under `root`; return (HF cache, models folder, expected duplicate bytes)."""
    os.environ.update(_client_env())
    from huggingface_hub.utils.tqdm import disable_progress_bars

    from .testing import LocalHub
    from .testing.builders import download_to_cache, download_to_local_dir, interrupted_download, write_tree

    disable_progress_bars()
    cache, models = root / "hf" / "hub", root / "models"
    repos = demo_repos()
    copies: Counter[bytes] = Counter()  # content digest -> distinct copies on disk
    sizes: dict[bytes, int] = {}

    def count(content: bytes) -> None:
        key = sha256(content).digest()
        copies[key] += 1
        sizes[key] = len(content)

    with LocalHub() as hub:
        for repo_id, files in repos.items():
            hub.add_commit(repo_id, files)
        for repo_id in ("demo/Qwen-Image-mini", "demo/Qwen2-VL-mini-Instruct", "demo/tiny-llm"):
            download_to_cache(hub, repo_id, cache)
            for content in repos[repo_id].values():
                count(content)
        # The download manager of the story: snapshot_download(local_dir=...) copies out of the cache.
        for repo_id in ("demo/Qwen-Image-mini", "demo/Qwen2-VL-mini-Instruct"):
            download_to_local_dir(hub, repo_id, models / repo_id.split("/")[1], cache)
            for content in repos[repo_id].values():
                count(content)
        # Someone copied a weight file into their fine-tune folder under another name.
        renamed = repos["demo/Qwen2-VL-mini-Instruct"]["model.safetensors"]
        write_tree(models / "my-finetune", {"base-weights.safetensors": renamed, "notes.txt": b"lr=1e-5\n"})
        count(renamed)
        count(b"lr=1e-5\n")
        interrupted_download(hub, "demo/tiny-llm-GGUF", "tiny-llm.Q4_K_M.gguf", cache)
    expected = sum((n - 1) * sizes[key] for key, n in copies.items())
    return cache, models, expected


def _client_env() -> dict[str, str]:
    from .testing.builders import CLIENT_ENV

    return CLIENT_ENV


def run_demo(where: Path | None, out: Console, err: Console) -> int:
    """Build the demo machine, analyze it, and print what to try next. Returns an exit code."""
    if where is not None:
        if where.exists() and any(where.iterdir()):
            raise InputError(f"demo folder is not empty: {where}")
        where.mkdir(parents=True, exist_ok=True)
        root = where.resolve()
    else:
        root = Path(tempfile.mkdtemp(prefix="modelcache-demo-"))
    err.print(f"Building a sample machine in {root} (LocalHub on 127.0.0.1 + huggingface_hub)...", highlight=False)
    cache, models, expected = build_demo_machine(root)
    index_path = root / "digests.sqlite"

    cache_loc, model_locs = Location(str(cache), "demo"), [Location(str(models), "demo")]
    inventory = scan_locations(cache_loc, model_locs)  # the demo's own folders only, no other stores
    index = DigestIndex(index_path)
    try:
        result = find_duplicates(inventory.records, index)
    finally:
        index.close()
    analysis = analyze(inventory, result)
    render_analysis(analysis, cache_loc, model_locs, out)

    out.print()
    same = analysis.duplicate_bytes == expected
    verdict = "matches" if same else "DOES NOT MATCH"
    out.print(
        f"The demo made {expected:,} bytes ({format_size(expected)}) of duplicates; "
        f"analyze found {analysis.duplicate_bytes:,}: {verdict}.",
        highlight=False,
    )
    out.print()
    for line in try_next(root, cache, models, index_path):
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    return EXIT_OK if same else EXIT_ERROR


def try_next(root: Path, cache: Path, models: Path, index: Path) -> list[str]:
    """What to try next: the demo's environment once (one `export` line, and a config file in the demo
    folder naming its models folder and keeping the other tools' stores of this machine, found where
    each tool keeps them, out of the demo: `discover = false`), then short commands."""
    config = root / "config.toml"
    # a JSON string is a TOML basic string
    config.write_text(f"models = [{json.dumps(str(models))}]\ndiscover = false\n")
    env = {
        "HF_HUB_CACHE": cache,
        "MODELCACHE_CONFIG": config,
        "MODELCACHE_INDEX": index,
        "MODELCACHE_STATE": root / "state",
    }
    report = shlex.quote(str(root / "report.html"))
    return [
        "Try next, in a shell of its own (the export points modelcache, and huggingface_hub, at the demo folder;",
        "each command reads or changes only the demo folder):",
        "  export " + " ".join(f"{name}={shlex.quote(str(value))}" for name, value in env.items()),
        "  modelcache analyze",
        f"  modelcache report --html {report} --open     # the picture",
        "  modelcache consolidate --dry-run",
        # auto links only what no next step writes through (as root on ext4: nothing; the dry run says why)
        "  modelcache consolidate --yes                 # then: modelcache undo",
        "  modelcache consolidate --mode delete --dry-run",
        "  modelcache clean --dry-run --older-than 0",
        "  modelcache list",
        "  modelcache verify --all",
        f"  rm -rf {shlex.quote(str(root))}   # when done",
    ]

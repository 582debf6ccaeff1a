"""The commands of the original solution document, as written there, on a machine built through LocalHub.

The machine is the story's: an HF cache holding Qwen/Qwen-Image and Qwen/Qwen2-VL-7B-Instruct,
and a project whose `./models` holds second copies of both, made by a download manager that
used `snapshot_download(local_dir=...)`. The project's `src/` holds the two shims; every
command runs from the project folder exactly as the document writes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_cache, download_to_local_dir, interrupted_download, random_bytes

from .machine import Result, snapshot_tree

SHIMS = Path(__file__).resolve().parent.parent / "src"
QWEN_IMAGE = {
    "model_index.json": b'{"_class_name": "QwenImagePipeline"}\n',
    "transformer/diffusion_pytorch_model.safetensors": random_bytes(400_000, "qi-transformer"),
    "vae/diffusion_pytorch_model.safetensors": random_bytes(150_000, "qi-vae"),
    "README.md": b"# Qwen-Image\n",
}
QWEN2_VL = {
    "config.json": b'{"model_type": "qwen2_vl"}\n',
    "model.safetensors": random_bytes(350_000, "vl-weights"),
    "tokenizer.json": random_bytes(20_000, "vl-tok").hex().encode(),
}


class Project:
    def __init__(self, root: Path, hub: LocalHub) -> None:
        self.root = root
        self.dir = root / "project"
        self.cache = root / "hf" / "hub"
        self.models = self.dir / "models"
        (self.dir / "src").mkdir(parents=True)
        for shim in ("cache_manager.py", "model_download_manager_fixed.py"):
            shutil.copy(SHIMS / shim, self.dir / "src" / shim)
        self.env = {
            "HOME": str(root / "home"),  # no other tool's store of this machine is read
            "HF_HOME": str(root / "hf"),
            "HF_HUB_CACHE": str(self.cache),
            "HF_ENDPOINT": hub.url,
            "MODELCACHE_INDEX": str(root / "state" / "digests.sqlite"),
            "MODELCACHE_STATE": str(root / "state"),
            "MODELCACHE_CONFIG": str(root / "no-config.toml"),
        }
        for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
            self.env[var] = str(root / "home" / var.lower())

    def run(self, *args: str, **env: str) -> Result:
        """`python ARGS` from the project folder, as the document writes it."""
        proc = subprocess.run(
            [sys.executable, *args],
            cwd=self.dir,
            capture_output=True,
            env={**os.environ, **self.env, **env},
            timeout=120,
        )
        result = Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
        assert "Traceback" not in result.err, result.err
        return result

    def snapshot(self, repo_id: str, commit: str) -> Path:
        return Path(os.path.realpath(self.cache)) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit

    def local_model_files(self) -> list[str]:
        """Model files in ./models (not huggingface_hub's `.cache/huggingface` metadata)."""
        found = []
        for dirpath, dirs, files in os.walk(self.models):
            dirs[:] = [d for d in dirs if d != ".cache"]
            found += [os.path.join(dirpath, f) for f in files]
        return sorted(found)


@pytest.fixture
def project(local_hub: LocalHub, tmp_path: Path) -> tuple[Project, dict[str, str]]:
    p = Project(tmp_path, local_hub)
    commits = {
        "Qwen/Qwen-Image": local_hub.add_commit("Qwen/Qwen-Image", QWEN_IMAGE),
        "Qwen/Qwen2-VL-7B-Instruct": local_hub.add_commit("Qwen/Qwen2-VL-7B-Instruct", QWEN2_VL),
    }
    for repo_id in commits:
        download_to_cache(local_hub, repo_id, p.cache)
        # The old ModelDownloadManager: snapshot_download(local_dir="./models/...") -> the duplicates.
        download_to_local_dir(local_hub, repo_id, p.models / repo_id.split("/")[1], p.cache)
    return p, commits


def figures(p: Project) -> dict[str, int]:
    proc = subprocess.run(
        [sys.executable, "-m", "modelcache", "analyze", "--json"],
        cwd=p.dir,
        capture_output=True,
        env={**os.environ, **p.env},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    data = Result(0, proc.stdout.decode(), "").json()
    return {k: data[k] for k in ("hf_cache_bytes", "local_bytes", "duplicate_bytes", "total_bytes", "incomplete_bytes")}


def test_the_solution_document_step_by_step(local_hub: LocalHub, project: tuple[Project, dict[str, str]]) -> None:
    p, commits = project
    # A download killed long ago: what `--clean` is for ("Clean up any broken downloads").
    local_hub.add_commit("Qwen/Qwen-Image-Edit", {"model.safetensors": random_bytes(11 * 1024 * 1024, "edit")})
    partial = interrupted_download(local_hub, "Qwen/Qwen-Image-Edit", "model.safetensors", p.cache)
    two_hours_ago = time.time() - 7200
    os.utime(partial, (two_hours_ago, two_hours_ago))
    local_hub.stop()  # from here on, nothing needs the network
    offline = {"HF_HUB_OFFLINE": "1"}
    duplicated = sum(len(c) for c in (*QWEN_IMAGE.values(), *QWEN2_VL.values()))
    before = figures(p)
    assert before["duplicate_bytes"] == duplicated

    # Step 1: analyze, and check which models are complete.
    analyzed = p.run("src/cache_manager.py", "--analyze", **offline)
    assert analyzed.code == 0, analyzed.err
    for line in ("📈 Current Storage:", "HuggingFace Cache:", "Local Models:", "Total Storage:"):
        assert line in analyzed.out
    assert "Duplicate Storage:" in analyzed.out and f"({duplicated:,} bytes)  ← WASTED SPACE" in analyzed.out
    listed = p.run("src/model_download_manager_fixed.py", "--list", **offline)
    assert listed.code == 0, listed.err
    for repo_id in commits:
        row = next(line for line in listed.out.splitlines() if repo_id + " " in line)
        assert "complete" in row

    # Step 2: consolidate, dry run first: it shows the deletions and changes nothing.
    tree = snapshot_tree(p.cache, p.models)
    dry = p.run("src/cache_manager.py", "--consolidate", "--dry-run", **offline)
    assert dry.code == 0, dry.err
    assert "delete" in dry.out and f"({duplicated:,} bytes)" in dry.out
    assert snapshot_tree(p.cache, p.models) == tree

    consolidated = p.run("src/cache_manager.py", "--consolidate", **offline)
    assert consolidated.code == 0, consolidated.err + consolidated.out
    assert "Freed " in consolidated.out and f"({duplicated:,} bytes)" in consolidated.out
    assert p.local_model_files() == []  # the second copies are gone ...
    after = figures(p)
    assert after["duplicate_bytes"] == 0
    assert after["hf_cache_bytes"] == before["hf_cache_bytes"]  # ... and the cache is as it was
    assert after["total_bytes"] == before["total_bytes"] - duplicated

    # Step 4: the models are where the cache keeps them, found without the network.
    for repo_id, commit in commits.items():
        found = p.run("src/model_download_manager_fixed.py", "--path", repo_id, **offline)
        assert found.code == 0, found.err
        assert found.out == f"{p.snapshot(repo_id, commit)}\n"
    snippet = p.run(
        "-c",
        "from model_download_manager_fixed import get_cached_model_path\n"
        "print('Qwen-Image path:', get_cached_model_path('Qwen/Qwen-Image'))\n"
        "print('Qwen2-VL path:', get_cached_model_path('Qwen/Qwen2-VL-7B-Instruct'))\n",
        PYTHONPATH="src",
        **offline,
    )
    assert snippet.code == 0, snippet.err
    assert snippet.out == (
        f"Qwen-Image path: {p.snapshot('Qwen/Qwen-Image', commits['Qwen/Qwen-Image'])}\n"
        f"Qwen2-VL path: {p.snapshot('Qwen/Qwen2-VL-7B-Instruct', commits['Qwen/Qwen2-VL-7B-Instruct'])}\n"
    )
    for repo_id, commit in commits.items():
        files = QWEN_IMAGE if repo_id == "Qwen/Qwen-Image" else QWEN2_VL
        for rel, content in files.items():
            assert (p.snapshot(repo_id, commit) / rel).read_bytes() == content

    # Quick start 5 / maintenance: clean up broken downloads.
    assert figures(p)["incomplete_bytes"] > 0
    cleaned = p.run("src/cache_manager.py", "--clean", **offline)
    assert cleaned.code == 0, cleaned.err + cleaned.out
    assert not partial.exists()
    assert figures(p)["incomplete_bytes"] == 0
    again = p.run("src/cache_manager.py", "--analyze", **offline)
    assert again.code == 0 and "Duplicate Storage:" in again.out


def test_the_fixed_manager_downloads_into_the_cache_only(
    local_hub: LocalHub, project: tuple[Project, dict[str, str]]
) -> None:
    p, commits = project
    shutil.rmtree(p.cache)
    shutil.rmtree(p.models)
    code = (
        "from model_download_manager_fixed import FixedModelDownloadManager\n"
        "from model_download_manager_fixed import FixedModelDownloadManager as ModelDownloadManager\n"
        "manager = FixedModelDownloadManager()\n"
        "print(manager.download_qwen_image())\n"
        "print(ModelDownloadManager().download_qwen2_vl())\n"
    )
    result = p.run("-c", code, PYTHONPATH="src")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        str(p.snapshot("Qwen/Qwen-Image", commits["Qwen/Qwen-Image"])),
        str(p.snapshot("Qwen/Qwen2-VL-7B-Instruct", commits["Qwen/Qwen2-VL-7B-Instruct"])),
    ]
    assert not p.models.exists()
    assert sorted(os.listdir(p.dir)) == ["src"]  # nothing but the project's own files

    # The same through the command line of the shim; a second run fetches nothing.
    local_hub.clear_log()
    again = p.run("src/model_download_manager_fixed.py", "--download", "Qwen/Qwen-Image")
    assert again.code == 0, again.err
    assert again.out == f"{p.snapshot('Qwen/Qwen-Image', commits['Qwen/Qwen-Image'])}\n"
    assert not [r for r in local_hub.request_log if "/resolve/" in r.path and r.method == "GET"]


def test_the_shims_refuse_bad_input_in_one_line(project: tuple[Project, dict[str, str]]) -> None:
    p, _ = project
    usage = p.run("src/cache_manager.py")
    assert usage.code == 2 and "one of the arguments --analyze --consolidate --clean is required" in usage.err
    missing = p.run("src/model_download_manager_fixed.py", "--path", "Qwen/Qwen-Nope", HF_HUB_OFFLINE="1")
    assert missing.code == 1 and missing.err == f"modelcache: error: Qwen/Qwen-Nope is not in the cache {p.cache}\n"
    bad = p.run("src/model_download_manager_fixed.py", "--path", "../../etc")
    assert bad.code == 2 and bad.err.startswith("modelcache: error: not a repo id: '../../etc'")

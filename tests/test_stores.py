"""Every store on the machine: each laid out as its tool writes it, found where the tool keeps it.

The HF cache is made by the real huggingface_hub client through LocalHub. The other stores
are laid out by hand from their documented layouts (shared/STORES.md): their clients cannot
be pointed at a loopback server here (Ollama, LM Studio, llama.cpp and GPT4All are not Python
packages; modelscope's client talks only to its own hub API).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_cache, ollama_manifest, random_bytes, write_tree

from .machine import run_cli

GGUF = random_bytes(600_000, "gguf")  # the same GGUF in the HF cache, Ollama, LM Studio and more
WEIGHTS = random_bytes(400_000, "weights")  # the same safetensors in the HF cache and ModelScope
OTHER = random_bytes(100_000, "other")
SHA_GGUF = hashlib.sha256(GGUF).hexdigest()


class Machine:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.cache = root / "hf" / "hub"
        self.ollama = root / "ollama"
        self.lmstudio = self.home / ".lmstudio" / "models"
        self.modelscope = root / "modelscope"
        self.llamacpp = root / "llama.cpp"
        self.data = root / "xdg-data"
        self.torch = root / "torch"
        self.comfy = root / "ComfyUI"
        self.extra = root / "a1111"
        self.textgen = root / "textgen" / "models"

    @property
    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "OLLAMA_MODELS": str(self.ollama),
            "MODELSCOPE_CACHE": str(self.modelscope),
            "LLAMA_CACHE": str(self.llamacpp),
            "XDG_DATA_HOME": str(self.data),
            "XDG_CONFIG_HOME": str(self.root / "xdg-config"),
            "TORCH_HOME": str(self.torch),
        }

    def args(self, *extra: str) -> list[str]:
        return [
            "--cache-dir", str(self.cache),
            "--store", f"comfyui={self.comfy}",
            "--store", f"textgen_webui={self.textgen}",
            *extra,
        ]  # fmt: skip

    def run(self, *args: str, code: int | None = 0) -> dict[str, Any]:
        result = run_cli(*args, "--json", env=self.env)
        assert "Traceback" not in result.err
        if code is not None:
            assert result.code == code, result.err + result.out
        data: dict[str, Any] = result.json()
        return data

    def views(self) -> dict[str, bytes]:
        """What each tool sees: every file name under the stores, with its bytes."""
        seen = {}
        for root in (
            self.ollama,
            self.lmstudio,
            self.modelscope,
            self.llamacpp,
            self.data,
            self.torch,
            self.comfy,
            self.extra,
            self.textgen,
            self.cache,
        ):
            for path in root.rglob("*"):
                if path.is_file():
                    seen[str(path)] = path.read_bytes()
        return seen


@pytest.fixture
def machine(local_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    monkeypatch.setenv("MODELCACHE_INDEX", str(tmp_path / "state" / "digests.sqlite"))
    monkeypatch.setenv("MODELCACHE_STATE", str(tmp_path / "state"))
    m = Machine(tmp_path)
    local_hub.add_commit("bartowski/tiny-GGUF", {"tiny-Q4_K_M.gguf": GGUF})
    local_hub.add_commit("Qwen/Qwen2.5-0.5B", {"model.safetensors": WEIGHTS, "config.json": b"{}"})
    download_to_cache(local_hub, "bartowski/tiny-GGUF", m.cache)
    download_to_cache(local_hub, "Qwen/Qwen2.5-0.5B", m.cache)
    # Ollama: a model made from the same GGUF (byte-identical layer), and one of its own
    template = b"{{ .Prompt }}"
    write_tree(m.ollama, {
        f"blobs/sha256-{SHA_GGUF}": GGUF,
        f"blobs/sha256-{hashlib.sha256(template).hexdigest()}": template,
        f"blobs/sha256-{hashlib.sha256(b'{}').hexdigest()}": b"{}",
        f"blobs/sha256-{hashlib.sha256(OTHER).hexdigest()}": OTHER,
        "manifests/hf.co/bartowski/tiny-GGUF/Q4_K_M": ollama_manifest(
            [(GGUF, "application/vnd.ollama.image.model"), (template, "application/vnd.ollama.image.template")]),
        "manifests/registry.ollama.ai/library/other/latest": ollama_manifest(
            [(OTHER, "application/vnd.ollama.image.model")]),
    })  # fmt: skip
    write_tree(m.lmstudio, {"bartowski/tiny-GGUF/tiny-Q4_K_M.gguf": GGUF})
    # ModelScope <= 1.37 and >= 1.38
    write_tree(m.modelscope, {
        "models/Qwen/Qwen2___5-0___5B/model.safetensors": WEIGHTS,
        "models/Qwen/Qwen2___5-0___5B/config.json": b"{}",
        "models/Qwen/Qwen2___5-0___5B/.mdl": pickle.dumps({"id": "Qwen/Qwen2___5-0___5B"}),
        "models/Qwen/Qwen2___5-0___5B/.msc": pickle.dumps(
            [{"Path": "model.safetensors", "Revision": "master"}, {"Path": "config.json", "Revision": "master"}]),
        "models/Qwen/Qwen2___5-0___5B/.mv": b"Revision:master,CreatedAt:1700000000",
        "models/Qwen--Qwen2.5-Coder/snapshots/master/model.safetensors": WEIGHTS,
    })  # fmt: skip
    os.symlink(m.modelscope / "models/Qwen/Qwen2___5-0___5B", m.modelscope / "models/Qwen/Qwen2.5-0.5B")
    write_tree(m.llamacpp, {
        "bartowski_tiny-GGUF_tiny-Q4_K_M.gguf": GGUF,
        "bartowski_tiny-GGUF_tiny-Q4_K_M.gguf.etag": SHA_GGUF.encode(),
    })  # fmt: skip
    write_tree(m.data / "nomic.ai" / "GPT4All", {"tiny-Q4_K_M.gguf": GGUF})
    write_tree(m.data / "Jan" / "data" / "llamacpp" / "models", {
        "bartowski/tiny-GGUF/model.gguf": GGUF, "bartowski/tiny-GGUF/model.yml": b"name: tiny\n"})  # fmt: skip
    write_tree(m.torch / "hub" / "checkpoints", {"resnet18-f37072fd.pth": OTHER})
    write_tree(m.comfy / "models", {"checkpoints/tiny.safetensors": WEIGHTS})
    write_tree(m.extra, {"loras/style.safetensors": random_bytes(50_000, "lora")})
    (m.comfy / "extra_model_paths.yaml").write_text(f"a111:\n  base_path: {m.extra}\n  loras: loras\n")
    sums = f"url: x\nsha256sum:\n    {SHA_GGUF} tiny-Q4_K_M.gguf\n".encode()
    write_tree(m.textgen, {
        "bartowski_tiny-GGUF/tiny-Q4_K_M.gguf": GGUF,
        "bartowski_tiny-GGUF/huggingface-metadata.txt": sums,
    })  # fmt: skip
    return m


def test_every_store_is_found_and_its_models_named(machine: Machine) -> None:
    stores = {s["store"]: s for s in machine.run("stores", *machine.args()[:2])["stores"]}
    assert stores["ollama"]["source"] == "OLLAMA_MODELS" and stores["ollama"]["present"]
    assert stores["lmstudio"]["source"] == "default (~/.lmstudio)" and stores["lmstudio"]["present"]
    assert stores["llamacpp"]["source"] == "LLAMA_CACHE"
    report = machine.run("analyze", *machine.args())
    ids = {(r["store"], r["id"]) for r in report["repos"]}
    assert {
        ("hf_cache", "bartowski/tiny-GGUF"),
        ("ollama", "hf.co/bartowski/tiny-GGUF:Q4_K_M"),
        ("ollama", "other:latest"),
        ("lmstudio", "bartowski/tiny-GGUF"),
        ("modelscope", "Qwen/Qwen2.5-0.5B"),
        ("modelscope", "Qwen/Qwen2.5-Coder"),
        ("llamacpp", "bartowski/tiny-GGUF"),
        ("jan", "bartowski/tiny-GGUF"),
        ("comfyui", "checkpoints/tiny.safetensors"),
        ("comfyui", "loras/style.safetensors"),
        ("torch_hub", "resnet18-f37072fd.pth"),
        ("textgen_webui", "bartowski_tiny-GGUF"),
    } <= ids
    statuses = {(r["store"], r["id"]): r["status"] for r in report["repos"]}
    assert statuses[("modelscope", "Qwen/Qwen2.5-0.5B")] == "complete"
    assert statuses[("ollama", "hf.co/bartowski/tiny-GGUF:Q4_K_M")] == "complete"
    # one group per content, across every store: the GGUF in 7 places, the safetensors in 4, OTHER in 2
    groups = {g["digest"]: g for g in report["duplicates"]}
    assert groups["sha256:" + SHA_GGUF]["copies"] == 7
    assert groups["sha256:" + hashlib.sha256(WEIGHTS).hexdigest()]["copies"] == 4
    # and "{}": the HF config.json, ModelScope's config.json and Ollama's config blob
    expected = 6 * len(GGUF) + 3 * len(WEIGHTS) + len(OTHER) + 2 * len(b"{}")
    assert report["duplicate_bytes"] == expected
    by_store = {s["store"]: s for s in report["stores"]}
    assert by_store["ollama"]["cross_store_duplicate_bytes"] == len(GGUF) + len(OTHER) + len(b"{}")
    assert by_store["lmstudio"]["bytes"] == len(GGUF)


@pytest.mark.parametrize("mode", ["auto", "hardlink"])
def test_consolidate_links_across_stores_and_every_tool_sees_the_same(machine: Machine, mode: str) -> None:
    before = machine.views()
    duplicate = machine.run("analyze", *machine.args())["duplicate_bytes"]
    result = machine.run("consolidate", "--yes", "--mode", mode, *machine.args())
    left = {o["path"]: o for o in result["outcomes"] if o["status"] == "left_alone"}
    left_bytes = sum(os.path.getsize(p) for p in left)
    assert result["bytes_freed"] == duplicate - left_bytes and result["failed"] == 0 and result["skipped"] == 0
    assert machine.views() == before  # same names, same bytes, in every store
    hf_blob = machine.cache / "models--bartowski--tiny-GGUF" / "blobs" / SHA_GGUF
    ollama = machine.ollama / f"blobs/sha256-{SHA_GGUF}"
    lmstudio = machine.lmstudio / "bartowski/tiny-GGUF/tiny-Q4_K_M.gguf"
    # Ollama replaces its blobs by rename: a hard link to the cache's blob is safe for anyone. LM Studio is not
    # known to: as root (whom the read-only mode does not stop), auto leaves its copy alone.
    as_root_auto = mode == "auto" and os.geteuid() == 0
    assert (str(lmstudio) in left) == as_root_auto and str(ollama) not in left
    if as_root_auto:
        assert "LM Studio: its tool is not known to replace its files by rename" in left[str(lmstudio)]["reason"]
    for copy in (ollama, *([] if as_root_auto else [lmstudio])):
        assert os.stat(copy).st_ino == os.stat(hf_blob).st_ino and not copy.is_symlink()
    for manifest in (machine.ollama / "manifests").rglob("*"):  # every layer still resolves
        if manifest.is_file():
            for layer in json.loads(manifest.read_text())["layers"]:
                blob = machine.ollama / "blobs" / layer["digest"].replace(":", "-")
                assert blob.stat().st_size == layer["size"]
                assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == layer["digest"]
    assert machine.run("analyze", *machine.args())["duplicate_bytes"] == left_bytes


def test_symlink_and_delete_never_touch_another_tools_store(machine: Machine) -> None:
    before = machine.views()
    for mode in ("symlink", "delete"):
        result = machine.run("consolidate", "--yes", "--mode", mode, *machine.args(), code=None)
        assert result["done"] == 0 and result["skipped"] == 0  # left alone: no warning
        assert all(o["status"] == "left_alone" and "never applies inside" in o["reason"] for o in result["outcomes"])
    assert machine.views() == before
    assert not any(p.is_symlink() for p in machine.ollama.rglob("*"))


def test_clean_knows_each_stores_partial_files(machine: Machine) -> None:
    partials = {
        "ollama-partial": machine.ollama / f"blobs/sha256-{'a' * 64}-partial",
        "modelscope-partial": machine.modelscope / "models/._____temp/Qwen/Qwen2.5-0.5B/model.safetensors",
        "llamacpp-partial": machine.llamacpp / "bartowski_tiny-GGUF_big.gguf.downloadInProgress",
        "gpt4all-partial": machine.data / "nomic.ai/GPT4All/incomplete-big.gguf",
        "torch_hub-partial": machine.torch / f"hub/checkpoints/vit.pth.{'b' * 32}.partial",
    }
    for path in partials.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 50_000)  # an Ollama -partial is pre-sized: its size says nothing
    young = machine.run("clean", "--dry-run", *machine.args())
    kept = {i["kind"]: i for i in young["items"] if i["kind"] in partials}
    assert set(kept) == set(partials) and {i["action"] for i in kept.values()} == {"keep"}
    two_days_ago = time.time() - 2 * 86400
    for path in partials.values():
        os.utime(path, (two_days_ago, two_days_ago))
    # a live process holding one open keeps it, however old
    holder = subprocess.Popen([sys.executable, "-c", "import sys,time; f=open(sys.argv[1],'rb'); time.sleep(60)",
                               str(partials["ollama-partial"])])  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            plan = machine.run("clean", "--dry-run", *machine.args())
            held = next(i for i in plan["items"] if i["kind"] == "ollama-partial")
            if held["action"] == "keep":
                break
            time.sleep(0.1)
        assert held["action"] == "keep" and "open" in held["reason"]
        assert {i["kind"]: i["action"] for i in plan["items"] if i["kind"] in partials} == {
            **{k: "remove" for k in partials}, "ollama-partial": "keep"}  # fmt: skip
        before = machine.views()
        machine.run("clean", "--yes", *machine.args())
    finally:
        holder.kill()
        holder.wait()
    after = machine.views()
    removed = {str(p) for k, p in partials.items() if k != "ollama-partial"}
    assert set(before) - set(after) == removed
    assert all(after[p] == before[p] for p in after)


def test_missing_unreadable_and_corrupt_stores_are_reported_and_skipped(machine: Machine) -> None:
    (machine.ollama / "manifests/registry.ollama.ai/library/other/latest").write_text("{not json")
    (machine.comfy / "extra_model_paths.yaml").write_text(": : :\n\t- [")
    (machine.modelscope / "models/Qwen/Qwen2___5-0___5B/.msc").write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")
    report = machine.run("analyze", *machine.args(), code=1)
    messages = " | ".join(w["message"] for w in report["warnings"])
    assert "corrupt manifest" in messages and "extra_model_paths.yaml" in messages and "corrupt .msc" in messages
    ids = {(r["store"], r["id"]) for r in report["repos"]}
    assert ("lmstudio", "bartowski/tiny-GGUF") in ids and ("ollama", "hf.co/bartowski/tiny-GGUF:Q4_K_M") in ids
    missing = run_cli("analyze", "--store", f"ollama={machine.root / 'nope'}", "--cache-dir", str(machine.cache),
                      env=machine.env)  # fmt: skip
    assert missing.code == 2 and "store folder not found (--store ollama)" in missing.err
    bad_kind = run_cli("analyze", "--store", "winamp=/tmp", env=machine.env)
    assert bad_kind.code == 2 and "--store takes KIND=PATH" in bad_kind.err


def test_the_kept_copy_is_explained_by_its_own_store(tmp_path: Path) -> None:
    """The reason recorded for the kept copy names the store it is in (found: a llama.cpp copy was
    called a local_dir copy, and a plain folder copy went unexplained, when reasons went by position)."""
    gguf, weights = random_bytes(50_000, "kept-gguf"), random_bytes(40_000, "kept-weights")
    write_tree(tmp_path / "llama.cpp", {"org_repo_m.gguf": gguf})
    write_tree(tmp_path / "models", {"a/m.gguf": gguf, "a/w.safetensors": weights, "b/w.safetensors": weights})
    env = {"MODELCACHE_INDEX": str(tmp_path / "digests.sqlite"), "MODELCACHE_STATE": str(tmp_path / "state")}
    (tmp_path / "hub").mkdir()  # an empty HF cache: it must exist, being given
    result = run_cli(
        "consolidate", "--dry-run", "--json", "--no-discover", "--cache-dir", tmp_path / "hub",
        "--models", tmp_path / "models", "--store", f"llamacpp={tmp_path / 'llama.cpp'}", env=env,
    )  # fmt: skip
    assert result.code == 0, result.err
    reasons = {os.path.basename(a["keep"]["path"]): a["keep_reason"] for a in result.json()["plan"]["actions"]}
    assert reasons == {"org_repo_m.gguf": "kept", "w.safetensors": "plain folder copy (oldest)"}


def test_the_kinds_are_the_stores_modules_in_rank_order() -> None:
    from modelcache.store_kind import StoreKind
    from modelcache.stores.registry import specs

    assert [k.value for k in StoreKind] == [
        "hf_cache", "llamacpp", "modelscope", "ollama", "lmstudio", "jan", "gpt4all", "comfyui", "torch_hub",
        "textgen_webui", "local_dir", "plain", "xet_cache",
    ]  # fmt: skip
    assert [s.kind for s in specs()] == list(StoreKind)
    # one module a store (folders.py: local_dir and plain, told apart by one walk of a model folder)
    package = Path(__file__).parent.parent / "src" / "modelcache" / "stores"
    modules = {p.stem for p in package.glob("*.py")} - {"__init__", "base", "registry"}
    assert modules == {k.value for k in StoreKind} - {"local_dir", "plain"} | {"folders"}
    kind = StoreKind("ollama")
    assert kind is StoreKind.OLLAMA and kind == "ollama" and kind.value == "ollama"
    assert pickle.loads(pickle.dumps(kind)) is kind
    with pytest.raises(ValueError):
        StoreKind("winamp")


WINAMP = """
import os
from modelcache.store_kind import StoreKind
from modelcache.stores.base import read_files
from modelcache.stores.registry import StoreSpec, tool_partials

STORE = StoreKind.declare("winamp", rank=75)


def read_winamp(root, out):
    read_files(root, STORE, out, lambda e: None, partial=lambda name: name.endswith(".part"))


SPEC = StoreSpec(
    STORE, "Winamp", reader=read_winamp, locate=lambda: (os.environ["WINAMP_MODELS"], "WINAMP_MODELS"),
    partials=tool_partials(STORE, "Winamp"),
)
"""


def test_a_store_is_one_module(tmp_path: Path) -> None:
    """A new module in the stores package is all a store needs: found, read, counted, cleaned."""
    extra = tmp_path / "extra"
    write_tree(extra, {"winamp.py": WINAMP.encode()})
    winamp = tmp_path / "winamp"
    write_tree(winamp, {"m.gguf": GGUF, "other.gguf.part": b"\0" * 1000})
    old = time.time() - 2 * 86400
    os.utime(winamp / "other.gguf.part", (old, old))
    write_tree(tmp_path / "models", {"copy/m.gguf": GGUF})
    env = {
        "WINAMP_MODELS": str(winamp),
        "HOME": str(tmp_path / "home"),
        "MODELCACHE_INDEX": str(tmp_path / "digests.sqlite"),
        "MODELCACHE_STATE": str(tmp_path / "state"),
    }
    # the package's folder and one more, as if the module were dropped into src/modelcache/stores/
    run = "import sys, modelcache.stores as s, modelcache.cli as c;s.__path__.append(sys.argv[1]);c.main(sys.argv[2:])"

    def cli(*args: str) -> dict[str, Any]:
        argv = [sys.executable, "-c", run, str(extra), *args, "--json"]
        proc = subprocess.run(argv, capture_output=True, env={**os.environ, **env}, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    rows = {s["store"]: s for s in cli("stores")["stores"]}
    assert rows["winamp"] == {"store": "winamp", "path": str(winamp), "source": "WINAMP_MODELS", "present": True}
    (tmp_path / "hub").mkdir()  # an empty HF cache: it must exist, being given
    where = ("--cache-dir", str(tmp_path / "hub"), "--models", str(tmp_path / "models"))
    report = cli("analyze", *where)
    assert {s["store"]: s["bytes"] for s in report["stores"]}["winamp"] == len(GGUF) + 1000
    assert report["duplicate_bytes"] == len(GGUF)
    plan = cli("consolidate", "--dry-run", *where)["plan"]
    assert [os.path.basename(a["keep"]["path"]) for a in plan["actions"]] == ["m.gguf"]
    assert plan["actions"][0]["keep"]["store"] == "winamp"  # rank 75: before the plain folder
    items = cli("clean", "--dry-run", *where)["items"]
    assert [(i["kind"], i["action"]) for i in items] == [("winamp-partial", "remove")]

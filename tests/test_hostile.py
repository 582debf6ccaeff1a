"""Hostile input against every command: each piece refused or skipped, never followed, never a traceback.

What a hostile (or just badly damaged) machine can hold, and what must happen to it:

1. Metadata that other tools wrote, as a reader finds it: local_dir `.metadata` files, HF
   `refs/*`, `trees/<commit>.json`, Ollama manifests, ModelScope `.msc` pickles. Each is given
   `..` paths, absolute paths, 50 MB of contents, binary garbage, values of the wrong type,
   deep nesting, a symlink out of the roots and a FIFO (which would block a plain `open`).
   Every command still ends with exit 0, 1 or 2 and one-line messages; nothing outside the
   roots is read through a link, written or created; a pickle never runs code; and no reader
   holds more than a bounded amount of any such file in memory (measured with tracemalloc).
2. Saved plans (`modelcache apply PLAN`) with the same kinds of damage, and plans that point
   where they should not: outside the plan's own roots, at a file that is not the one the plan
   describes (inode, size or mtime), through a symlink out of the roots. Each changes nothing.
3. Races between plan and act: a copy swapped for a symlink to a file outside the roots, a
   snapshot symlink swapped for a file, a model folder swapped for a symlink to a folder outside
   the roots; and, in-process, a kept copy (or an adopted file) replaced by other bytes of the
   same size and mtime right after it was verified, before the link is made.
4. All of the above at once, against analyze, list, verify, clean, consolidate and stores.

Every subprocess gets its own MODELCACHE_STATE, MODELCACHE_INDEX and HOME (the stores of other
tools are found there). No test asserts a timing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import shutil
import stat
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_cache, download_to_local_dir, random_bytes, write_tree

from .machine import MAX_LINE, Result, assert_tidy, client_env, snapshot_tree
from .machine import Machine as BaseMachine

EXIT_OK, EXIT_WARNINGS, EXIT_ERROR = 0, 1, 2
HUGE = 50_000_000  # bytes: far past any size these files have in real life
WEIGHTS = random_bytes(150_000, "hostile-weights")
LONELY = random_bytes(120_000, "hostile-lonely")  # only in a local_dir download: --adopt moves it into the cache
CONFIG_V1, CONFIG_V2 = b'{"v": 1}', b'{"v": 2}'
OLD_NS = 1_600_000_000 * 10**9


@dataclass(frozen=True)
class Template:
    root: Path
    old_commit: str  # detached: main moved on
    commit: str  # org/alpha main
    lonely_commit: str


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Template]:
    """An HF cache (org/alpha at two commits, the older one detached), local_dir copies of org/alpha and
    of org/lonely (whose bytes the cache lacks), a plain copy of the weights."""
    root = tmp_path_factory.mktemp("hostile-template")
    with client_env(), LocalHub() as hub:
        old = hub.add_commit("org/alpha", {"config.json": CONFIG_V1, "model.safetensors": WEIGHTS})
        download_to_cache(hub, "org/alpha", root / "cache", revision=old)
        new = hub.add_commit("org/alpha", {"config.json": CONFIG_V2, "model.safetensors": WEIGHTS})
        download_to_cache(hub, "org/alpha", root / "cache")
        download_to_local_dir(hub, "org/alpha", root / "models" / "alpha", root / "cache")
        lonely = hub.add_commit("org/lonely", {"config.json": b'{"lonely": 1}', "model.safetensors": LONELY})
        download_to_local_dir(hub, "org/lonely", root / "models" / "lonely", root / "cache")
    write_tree(root / "models" / "plain", {"weights.bin": WEIGHTS})
    yield Template(root, old, new, lonely)


@dataclass(frozen=True)
class Machine(BaseMachine):
    t: Template

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def repo(self) -> Path:
        return self.cache / "models--org--alpha"

    @property
    def blob(self) -> Path:
        return self.repo / "blobs" / hashlib.sha256(WEIGHTS).hexdigest()

    def env(self) -> dict[str, str]:
        h = self.home
        return {
            **super().env(),
            "HOME": str(h),
            "XDG_CONFIG_HOME": str(h / ".config"),
            "XDG_CACHE_HOME": str(h / ".cache"),
            "XDG_DATA_HOME": str(h / ".local" / "share"),
            "XDG_STATE_HOME": str(h / ".local" / "state"),
            "OLLAMA_MODELS": str(h / "ollama"),
            "MODELSCOPE_CACHE": str(h / "modelscope"),
            "LLAMA_CACHE": str(h / "llama.cpp"),
            "TORCH_HOME": str(h / "torch"),
            "HF_HOME": str(h / "hf"),
            "HF_HUB_OFFLINE": "1",
        }

    def cli(
        self,
        *args: str | os.PathLike[str],
        env: dict[str, str] | None = None,
        user: str | None = None,
        codes: tuple[int, ...] = (EXIT_OK, EXIT_WARNINGS),
    ) -> Result:
        result = super().cli(*args, env=env, user=user)
        assert_tidy(result, codes, " ".join(map(str, args[:2])))
        return result


@pytest.fixture
def m(template: Template, tmp_path: Path) -> Machine:
    machine = Machine(tmp_path / "m", template)
    shutil.copytree(template.root, machine.root, symlinks=True)
    machine.outside.mkdir()
    (machine.outside / "sentinel.bin").write_bytes(WEIGHTS)  # the bytes of a cache blob, outside every root
    os.utime(machine.outside / "sentinel.bin", ns=(OLD_NS, OLD_NS))
    (machine.outside / "ref-target").write_text(template.old_commit)  # what a ref holds
    machine.home.mkdir()
    return machine


def outside_facts(m: Machine) -> dict[str, tuple[Any, ...]]:
    """Every entry outside the roots: type, bytes, inode, links, mode, mtime (a link made to it shows in nlink)."""
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirs, files in os.walk(m.outside):
        for name in [*dirs, *files]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
            found[path] = (stat.S_IFMT(st.st_mode), digest, st.st_ino, st.st_nlink, st.st_mode, st.st_mtime_ns)
    return found


def fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def padded(data: bytes, size: int = HUGE) -> bytes:
    """`data` and then whitespace to `size` bytes: still valid JSON (and a valid ref, once stripped)."""
    return data + b" " * (size - len(data))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_of(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.out)
    return data


def warnings_of(result: Result) -> dict[str, str]:
    found = {w["path"]: w["message"] for w in json_of(result)["warnings"]}
    long_ones = [m[:80] + "..." for m in found.values() if len(m) > MAX_LINE]
    assert not long_ones, f"warnings longer than {MAX_LINE} characters: {long_ones}"
    return found


def tree_json(files: dict[str, bytes]) -> bytes:
    """A `trees/<commit>.json` file list as huggingface_hub 2.4 writes it."""
    entries = {
        p: {"size": len(c), "blob_id": hashlib.sha1(b"blob %d\0" % len(c) + c).hexdigest()}
        | ({"lfs_sha256": sha256_hex(c), "lfs_size": len(c)} if p.endswith(".safetensors") else {})
        for p, c in files.items()
    }
    return json.dumps({"format_version": 1, "files": entries}, indent=1).encode()


NESTED = b"[" * 200_000  # deeper than any parser's recursion limit


# -- 1. metadata of other tools ------------------------------------------------------------------------------


def test_local_dir_metadata_hostile(m: Machine) -> None:
    """`.metadata` files that would name an outside file, carry a hostile commit, or are not metadata at all:
    no claim is taken from them, so nothing is adopted from them; the one valid file is."""
    lonely = m.models / "lonely"
    meta = lonely / ".cache" / "huggingface" / "download"
    commit, ts = m.t.lonely_commit, "1700000000.0"
    variants: dict[str, bytes | Callable[[Path], None]] = {
        "dotdot": f"{commit}\n../../../../outside/sentinel.bin\n{ts}\n".encode(),
        "absolute": f"{commit}\n{m.outside / 'sentinel.bin'}\n{ts}\n".encode(),
        # a true etag (the file's own sha256), a hostile commit: only the commit check stops it
        "commit-dotdot": b"../../../../outside\n%s\n" + ts.encode() + b"\n",
        "commit-absolute": b"/etc\n%s\n" + ts.encode() + b"\n",
        "huge": commit.encode() + b"\n" + b"A" * HUGE,
        "binary": bytes(range(256)) * 64,
        "wrong-types": json.dumps({"commit": commit, "etag": 5, "timestamp": [ts]}).encode(),
        "no-timestamp": f"{commit}\n%s\nyesterday\n".encode(),
        "fifo": fifo,
        "symlink-out": lambda p: os.symlink(m.outside / "lonely.metadata", p),
    }
    files: dict[str, bytes] = {}
    for i, (name, variant) in enumerate(variants.items()):
        content = random_bytes(2000 + i, f"lonely-{name}")  # its own bytes: nothing to link it to by content
        files[name] = content
        (lonely / f"{name}.safetensors").write_bytes(content)
        os.utime(lonely / f"{name}.safetensors", ns=(OLD_NS, OLD_NS))
        target = meta / f"{name}.safetensors.metadata"
        if callable(variant):
            variant(target)
        else:
            target.write_bytes(variant.replace(b"%s", sha256_hex(content).encode()))
    # what the symlinked one points at is a perfectly valid metadata file, outside the roots
    (m.outside / "lonely.metadata").write_text(f"{commit}\n{sha256_hex(files['symlink-out'])}\n{ts}\n")
    outside = outside_facts(m)
    before = {n: (lonely / f"{n}.safetensors").stat() for n in variants}

    analyzed = m.cli("analyze", "--json", *m.roots())
    warned = warnings_of(analyzed)
    for name in ("huge", "binary", "wrong-types", "no-timestamp", "commit-dotdot", "commit-absolute"):
        assert "corrupt download metadata" in warned[str(meta / f"{name}.safetensors.metadata")], name
    adopted = json_of(m.cli("consolidate", "--adopt", "--mode", "hardlink", "--yes", "--json", *m.roots()))
    adopted_paths = {o["path"] for o in adopted["outcomes"] if o["status"] == "done" and o["method"] == "adopt"}
    assert str(lonely / "model.safetensors") in adopted_paths  # the valid one: the test can see an adoption
    blobs = {p.name for p in (m.cache / "models--org--lonely" / "blobs").iterdir()}
    for name, content in files.items():
        path = lonely / f"{name}.safetensors"
        assert str(path) not in adopted_paths, name
        assert sha256_hex(content) not in blobs, name
        st = path.stat()
        assert (st.st_ino, st.st_nlink, st.st_mtime_ns, path.read_bytes()) == (
            before[name].st_ino,
            1,
            before[name].st_mtime_ns,
            content,
        ), name
    assert outside_facts(m) == outside
    assert stat.S_ISFIFO(os.lstat(meta / "fifo.safetensors.metadata").st_mode)
    m.cli("undo")
    assert outside_facts(m) == outside


def test_refs_hostile(m: Machine) -> None:
    refs = m.repo / "refs"
    (refs / "dotdot").write_text("../../../../outside/ref-target")
    (refs / "absolute").write_text(str(m.outside / "ref-target"))
    (refs / "huge").write_bytes(padded(m.t.old_commit.encode()))  # a valid commit, once 50 MB of blanks are stripped
    (refs / "binary").write_bytes(b"\x00\xff" * 50)
    (refs / "wrong-type").write_text(json.dumps({"commit": m.t.old_commit}))
    os.symlink(m.outside / "ref-target", refs / "link-out")  # a ref that reads well, through a link out of the roots
    fifo(refs / "fifo")
    outside = outside_facts(m)

    analyzed = m.cli("analyze", "--json", *m.roots())
    assert "larger than" in warnings_of(analyzed)[str(refs / "huge")]
    listed = json_of(m.cli("list", "--json", *m.roots()))
    (alpha,) = [r for r in listed["repos"] if r["id"] == "org/alpha" and r["store"] == "hf_cache"]
    assert not any(name in " ".join(alpha["revisions"]) for name in ("huge", "link-out", "dotdot", "fifo"))
    # `path` resolves a revision through refs/: none of these names a commit, none is read through the link
    names = ["dotdot", "absolute", "huge", "binary", "wrong-type", "link-out", "fifo"]

    for name in names:
        result = m.cli("path", "org/alpha", "--revision", name, "--cache-dir", str(m.cache), codes=(EXIT_WARNINGS,))
        assert "no revision" in result.err, (name, result.err)
    main = m.cli("path", "org/alpha", "--cache-dir", str(m.cache), codes=(EXIT_OK,))
    assert main.out.strip().endswith(m.t.commit)
    # clean reads every ref before it removes a detached revision (the old commit); consolidate links
    m.cli("clean", "--yes", "--revisions", "--older-than", "0", "--json", *m.roots())
    m.cli("consolidate", "--yes", *m.roots())
    assert os.readlink(refs / "link-out") == str(m.outside / "ref-target")
    assert stat.S_ISFIFO(os.lstat(refs / "fifo").st_mode)
    assert outside_facts(m) == outside
    assert (m.repo / "snapshots" / m.t.commit / "model.safetensors").read_bytes() == WEIGHTS


def test_trees_hostile(m: Machine) -> None:
    trees = m.repo / "trees"
    fake = [hashlib.sha1(str(i).encode()).hexdigest() for i in range(12)]
    good = {"config.json": CONFIG_V2, "model.safetensors": WEIGHTS}
    variants = {
        # the commit's own file list, 50 MB: valid JSON once read whole
        m.t.commit: padded(tree_json({**good, "only-listed.bin": b"x"})),
        # the detached commit's: its snapshot is complete, plus a file that would lie outside the roots
        m.t.old_commit: tree_json(
            {"config.json": CONFIG_V1, "model.safetensors": WEIGHTS, "../../../../outside/x": b"x"}
        ),
        fake[0]: tree_json({"/etc/passwd": WEIGHTS, str(m.outside / "sentinel.bin"): WEIGHTS}),
        fake[1]: tree_json({"../../../../outside/sentinel.bin": WEIGHTS}),
        fake[2]: bytes(range(256)) * 100,
        fake[3]: json.dumps({"format_version": 1, "files": [1, 2]}).encode(),
        fake[4]: json.dumps({"format_version": 1, "files": {"a": {"size": "big"}}}).encode(),
        fake[5]: b'{"format_version": 1, "files": {"a": {"size": 1e400}}}',  # infinity: no int
        fake[6]: b'{"format_version": 1, "files": {"a": {"size": 1, "lfs_sha256": 5}}}',
        fake[7]: json.dumps({"format_version": "1"}).encode(),
        fake[8]: NESTED,
        fake[9]: b"[]",
    }
    for commit, content in variants.items():
        (trees / f"{commit}.json").write_bytes(content)
    (m.outside / "tree.json").write_bytes(tree_json(good))
    os.symlink(m.outside / "tree.json", trees / f"{fake[10]}.json")
    fifo(trees / f"{fake[11]}.json")
    local_trees = m.models / "alpha" / ".cache" / "huggingface" / "trees"
    (local_trees / f"{m.t.commit}.json").write_bytes(NESTED)
    outside = outside_facts(m)

    analyzed = m.cli("analyze", "--json", *m.roots())
    warned = warnings_of(analyzed)
    assert "larger than" in warned[str(trees / f"{m.t.commit}.json")]
    for commit in [*fake[2:6], *fake[7:10]]:  # fake[6]: a wrong-typed claim is no claim; the list is fine
        assert str(trees / f"{commit}.json") in warned, commit
    assert "corrupt file list" in warned[str(local_trees / f"{m.t.commit}.json")]
    m.cli("list", "--json", *m.roots())
    m.cli("verify", "--all", "--json", *m.roots())
    m.cli("path", "org/alpha", "--cache-dir", str(m.cache), codes=(EXIT_OK, EXIT_WARNINGS))
    # the detached commit is complete by its safe entries; the one out of the snapshot is never looked up
    old = m.cli("path", "org/alpha", "--revision", m.t.old_commit, "--cache-dir", str(m.cache), codes=(EXIT_OK,))
    assert old.out.strip().endswith(m.t.old_commit)
    m.cli("clean", "--yes", "--older-than", "0", *m.roots())
    m.cli("consolidate", "--yes", *m.roots())
    assert outside_facts(m) == outside
    assert os.readlink(trees / f"{fake[10]}.json") == str(m.outside / "tree.json")
    assert stat.S_ISFIFO(os.lstat(trees / f"{fake[11]}.json").st_mode)


def ollama_manifest(layers: list[tuple[str, int]], config: tuple[str, int]) -> dict[str, Any]:
    def layer(digest: str, size: int, media: str) -> dict[str, Any]:
        return {"mediaType": media, "digest": digest, "size": size}

    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": layer(*config, "application/vnd.docker.container.image.v1+json"),
        "layers": [layer(d, s, "application/vnd.ollama.image.model") for d, s in layers],
    }


def make_ollama(m: Machine) -> tuple[Path, list[str]]:
    """An Ollama store with one good model (its weights: a copy of the cache blob) and hostile manifests."""
    root = m.home / "ollama"
    config = b'{"model_format": "gguf"}'
    for data in (WEIGHTS, config):
        write_tree(root / "blobs", {f"sha256-{sha256_hex(data)}": data})
    good = ollama_manifest(
        [(f"sha256:{sha256_hex(WEIGHTS)}", len(WEIGHTS))], (f"sha256:{sha256_hex(config)}", len(config))
    )
    library = root / "manifests" / "registry.ollama.ai" / "library"
    bad: dict[str, bytes | str] = {
        "dotdot": json.dumps(ollama_manifest([("sha256:../../../../outside/sentinel.bin", 1)], ("sha256:x", 1))),
        "absolute": json.dumps(ollama_manifest([(f"sha256:{m.outside / 'sentinel.bin'}", 1)], ("sha256:y", 1))),
        "long-digest": json.dumps(ollama_manifest([("sha256:" + "f" * 500_000, 1)], ("sha256:z", 1))),
        "binary": bytes(range(256)) * 100,
        "layers-not-a-list": json.dumps({"layers": "all of them"}),
        "size-not-a-number": json.dumps({"layers": [{"digest": f"sha256:{sha256_hex(WEIGHTS)}", "size": "big"}]}),
        "size-infinite": b'{"layers": [{"digest": "sha256:%s", "size": 1e400}]}' % sha256_hex(WEIGHTS).encode(),
        "digest-not-a-string": json.dumps({"layers": [{"digest": 5, "size": 1}]}),
        "nested": NESTED,
    }
    for name, text in bad.items():
        write_tree(library / name, {"latest": text if isinstance(text, bytes) else text.encode()})
    write_tree(library / "good", {"latest": json.dumps(good).encode()})
    write_tree(library / "huge", {"latest": padded(json.dumps(good).encode())})
    (m.outside / "manifest").write_text(json.dumps(good))
    (library / "link-out").mkdir()
    os.symlink(m.outside / "manifest", library / "link-out" / "latest")
    fifo(library / "fifo" / "latest")
    return root, [*bad, "huge"]


def test_ollama_manifests_hostile(m: Machine) -> None:
    root, bad = make_ollama(m)
    library = root / "manifests" / "registry.ollama.ai" / "library"
    outside = outside_facts(m)
    analyzed = m.cli("analyze", "--json", *m.roots())
    warned = warnings_of(analyzed)
    for name in bad:
        message = warned[str(library / name / "latest")]
        assert ("larger than" if name == "huge" else "corrupt manifest") in message, (name, message)
    listed = {r["id"]: r for r in json_of(m.cli("list", "--json", *m.roots()))["repos"] if r["store"] == "ollama"}
    assert listed["good:latest"]["status"] == "complete"
    assert not {f"{n}:latest" for n in [*bad, "link-out", "fifo"]} & set(listed)
    done = json_of(m.cli("consolidate", "--yes", "--json", *m.roots()))
    ollama_blob = root / "blobs" / f"sha256-{sha256_hex(WEIGHTS)}"
    assert str(ollama_blob) in {o["path"] for o in done["outcomes"] if o["status"] == "done"}
    assert ollama_blob.read_bytes() == WEIGHTS and os.stat(ollama_blob).st_ino == os.stat(m.blob).st_ino
    assert outside_facts(m) == outside
    assert os.readlink(library / "link-out" / "latest") == str(m.outside / "manifest")


class _RunsCode:
    """Unpickling this calls os.mkdir: what a crafted `.msc` would do to a plain `pickle.load`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def make_modelscope(m: Machine, marker: Path) -> tuple[Path, dict[str, Path]]:
    """ModelScope's old layout: one good repo and one per hostile `.msc`; returns (root, {name: .msc path})."""
    root = m.home / "modelscope" / "hub" / "models" / "org"
    good = [{"Path": "model.bin", "Revision": "v1"}]
    msc: dict[str, bytes | None] = {
        "good": pickle.dumps(good),
        "runs-code": pickle.dumps([{"Path": "model.bin", "Revision": "v1", "x": _RunsCode(str(marker))}]),
        "dotdot": pickle.dumps([{"Path": "../../../../../outside/sentinel.bin", "Revision": "v1"}]),
        "absolute": pickle.dumps([{"Path": str(m.outside / "sentinel.bin"), "Revision": "v1"}]),
        "huge": pickle.dumps([{"Path": "model.bin", "Revision": "v" * HUGE}]),
        "binary": bytes(range(256)) * 100,
        "wrong-types": pickle.dumps({"Path": 5}),
        "path-not-a-string": pickle.dumps([{"Path": 5}]),
        "nested": b"(" * 200_000 + b"l" * 200_000 + b".",
        "fifo": None,
        "link-out": None,
    }
    paths = {}
    for name, data in msc.items():
        repo = root / name
        write_tree(repo, {"model.bin": random_bytes(3000, f"ms-{name}"), ".mdl": pickle.dumps({"id": f"org/{name}"})})
        paths[name] = repo / ".msc"
        if name == "fifo":
            fifo(paths[name])
        elif name == "link-out":
            (m.outside / "msc").write_bytes(pickle.dumps(good))
            os.symlink(m.outside / "msc", paths[name])
        else:
            assert data is not None
            paths[name].write_bytes(data)
    (root / "dotdot" / ".mdl").write_bytes(pickle.dumps({"id": "../../../../etc"}))
    return root, paths


def test_modelscope_pickles_hostile(m: Machine) -> None:
    marker = m.outside / "code-ran"
    pickle.loads(pickle.dumps(_RunsCode(str(marker))))  # the payload is live: plain pickle runs it ...
    assert marker.is_dir()
    marker.rmdir()
    _root, msc = make_modelscope(m, marker)
    outside = outside_facts(m)
    analyzed = m.cli("analyze", "--json", *m.roots())
    warned = warnings_of(analyzed)
    for name in ("runs-code", "huge", "binary", "wrong-types", "path-not-a-string", "nested", "fifo", "link-out"):
        assert "corrupt .msc" in warned[str(msc[name])], name
    assert str(msc["good"]) not in warned
    listed = {r["id"]: r for r in json_of(m.cli("list", "--json", *m.roots()))["repos"] if r["store"] == "modelscope"}
    assert listed["org/good"]["status"] == "complete"
    m.cli("consolidate", "--yes", *m.roots())
    m.cli("clean", "--dry-run", *m.roots())
    assert not marker.exists()  # ... modelcache never does
    assert outside_facts(m) == outside


@pytest.mark.parametrize("reader", ["ref", "tree", "manifest", "pickle", "metadata", "plan"])
def test_readers_hold_a_bounded_amount_of_a_huge_file(tmp_path: Path, reader: str) -> None:
    """Each reader, given a 50 MB file (a plan: one past its cap), holds at most a few MB of it at once
    (tracemalloc), and refuses it or reads only what it needs."""
    from modelcache.errors import InputError
    from modelcache.plan import read_plan
    from modelcache.stores.folders import parse_metadata
    from modelcache.stores.hf_cache import read_ref, read_tree_file
    from modelcache.stores.modelscope import read_pickle
    from modelcache.stores.ollama import read_manifest

    path = tmp_path / "huge"
    commit = "a" * 40
    data = {
        "ref": padded(commit.encode()),
        "tree": padded(tree_json({"a.safetensors": b"a"})),
        "manifest": padded(
            json.dumps(ollama_manifest([("sha256:" + "b" * 64, 1)], ("sha256:" + "c" * 64, 1))).encode()
        ),
        "pickle": pickle.dumps([{"Path": "a", "Revision": "v" * HUGE}]),
        "metadata": padded(f"{commit}\n{'d' * 64}\n".encode() + b"1e9"),
        "plan": b"",  # below: a plan may be large (one action per copy), but not past its cap
    }[reader]
    path.write_bytes(data)
    del data
    if reader == "plan":
        from modelcache.plan import MAX_PLAN_BYTES

        with open(path, "wb") as f:
            f.truncate(MAX_PLAN_BYTES + 1)  # sparse: no disk, and no reason to read it
    calls: dict[str, Callable[[], Any]] = {
        "ref": lambda: read_ref(str(path)),
        "tree": lambda: read_tree_file(str(path)),
        "manifest": lambda: read_manifest(str(path)),
        "pickle": lambda: read_pickle(str(path)),
        "metadata": lambda: parse_metadata(str(path)),
        "plan": lambda: read_plan(path),
    }
    tracemalloc.start()
    try:
        try:
            answer = calls[reader]()
        except InputError as e:
            answer = e.message
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, f"{reader}: {peak:,} bytes held at once"
    if reader == "metadata":
        assert not isinstance(answer, str)  # its three lines come first: read, and the rest never
    else:
        assert answer is None or isinstance(answer, str), f"{reader}: a 50 MB file was accepted: {type(answer)}"


# -- 2. saved plans ------------------------------------------------------------------------------------------


def save_plan(m: Machine, path: Path, *extra: str) -> dict[str, Any]:
    """A saved plan; hard links unless `extra` names a mode (what auto made on ext4 before it weighed the next
    steps: as root it now leaves alone the local copies these tests race on)."""
    mode = () if "--mode" in extra else ("--mode", "hardlink")
    m.cli("consolidate", "--dry-run", "--plan-out", str(path), *mode, *extra, *m.roots(), codes=(EXIT_OK,))
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def action_for(plan: dict[str, Any], target: Path) -> dict[str, Any]:
    (action,) = [a for a in plan["actions"] if a["target"]["path"] == str(target)]
    found: dict[str, Any] = action
    return found


def facts_of(path: Path) -> dict[str, int]:
    st = os.lstat(path)
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def one_action(plan: dict[str, Any], action: dict[str, Any]) -> dict[str, Any]:
    return {**plan, "actions": [action]}


def hostile_plans(m: Machine, auto: dict[str, Any], symlink: dict[str, Any], adopt: dict[str, Any]) -> dict[str, Any]:
    """name -> (plan text, exit codes allowed, text the error must hold)."""
    plain = m.models / "plain" / "weights.bin"
    sentinel = m.outside / "sentinel.bin"
    base = action_for(auto, plain)

    def edit(plan: dict[str, Any], action: dict[str, Any], **sides: Any) -> str:
        changed = copy.deepcopy(action)
        for side, values in sides.items():
            if isinstance(changed[side], dict):
                changed[side].update(values)
            else:
                changed[side] = values
        return json.dumps(one_action(plan, changed))

    refused, skipped = (EXIT_ERROR,), (EXIT_WARNINGS,)
    adopt_action = next(a for a in adopt["actions"] if a["kind"] == "adopt")
    sym_action = action_for(symlink, plain)
    outside_rel = os.path.relpath(sentinel, plain.parent)
    return {
        "dotdot-in-an-absolute-path": (
            edit(auto, base, target={"path": str(m.models / "plain" / ".." / ".." / "outside" / "sentinel.bin")}),
            refused,
            "not absolute and clean",
        ),
        # the facts are right: only the roots can tell that this is not the plan's file to touch
        "target-outside-the-roots": (
            edit(auto, base, target={"path": str(sentinel), **facts_of(sentinel)}),
            refused,
            "outside",
        ),
        "kept-copy-outside-the-roots": (
            edit(auto, base, keep={"path": str(sentinel), **facts_of(sentinel)}),
            refused,
            "outside",
        ),
        "symlink-leading-out-of-the-roots": (edit(symlink, sym_action, symlink_to=outside_rel), refused, "outside"),
        "adopted-blob-outside-the-roots": (
            edit(adopt, adopt_action, adopt={"blob": str(m.outside / "new-blob")}),
            refused,
            "outside",
        ),
        "adopted-etag-with-dotdot": (
            edit(adopt, adopt_action, adopt={"etag": "../../../outside/lock"}),
            refused,
            "not a modelcache plan",
        ),
        "roots-widened-to-a-string": (
            json.dumps({**one_action(auto, base), "header": {**auto["header"], "roots": "/"}}),
            refused,
            "not a modelcache plan",
        ),
        "wrong-inode": (edit(auto, base, target={"ino": base["target"]["ino"] + 1}), skipped, ""),
        "wrong-size": (edit(auto, base, target={"size": base["target"]["size"] + 1}), skipped, ""),
        "wrong-mtime": (edit(auto, base, target={"mtime_ns": base["target"]["mtime_ns"] + 1}), skipped, ""),
        "kept-copy-wrong-inode": (edit(auto, base, keep={"ino": base["keep"]["ino"] + 1}), skipped, ""),
        "another-file-of-the-same-size": (
            edit(auto, base, target={"path": str(m.models / "alpha" / "config.json")}),
            skipped,
            "",
        ),
        "binary-garbage": (bytes(range(256)).decode("latin-1") * 10, refused, "not a modelcache plan"),
        "nested": ("[" * 200_000, refused, "not a modelcache plan"),
        "huge-garbage": ("{" + " " * HUGE, refused, "not a modelcache plan"),
        "inode-not-a-number": (edit(auto, base, target={"ino": "x"}), refused, "not a modelcache plan"),
        "size-not-a-number": (edit(auto, base, target={"size": "big"}), refused, "not a modelcache plan"),
        "dev-null": (edit(auto, base, keep={"dev": None}), refused, "not a modelcache plan"),
        "digest-not-a-string": (edit(auto, base, digest=5), refused, "not a modelcache plan"),
        "unknown-kind": (edit(auto, base, kind="explode"), refused, "not a modelcache plan"),
        "methods-a-string": (edit(auto, base, methods="hardlink"), refused, "not a modelcache plan"),
        "actions-not-a-list": (json.dumps({**auto, "actions": {"a": 1}}), refused, "not a modelcache plan"),
        "action-a-number": (json.dumps({**auto, "actions": [5]}), refused, "not a modelcache plan"),
        "a-key-of-a-million-characters": (
            edit(auto, base, target={"x" * 1_000_000: 1}),
            refused,
            "not a modelcache plan",
        ),
    }


def test_hostile_plans_change_nothing(m: Machine, tmp_path: Path) -> None:
    auto = save_plan(m, tmp_path / "auto.json")
    symlink = save_plan(m, tmp_path / "symlink.json", "--mode", "symlink")
    adopt = save_plan(m, tmp_path / "adopt.json", "--adopt")
    plans = hostile_plans(m, auto, symlink, adopt)
    over_cap = tmp_path / "over-cap.json"
    with open(over_cap, "wb") as f:
        f.truncate(300 * 1024 * 1024)  # sparse: costs no disk, and must not be read
    before = snapshot_tree(m.cache, m.models)
    outside = outside_facts(m)
    for name, (text, codes, message) in plans.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        result = m.cli("apply", "--yes", str(path), codes=codes)
        assert message in result.err, (name, result.err)
        assert snapshot_tree(m.cache, m.models) == before, name
        assert outside_facts(m) == outside, name
    result = m.cli("apply", "--yes", str(over_cap), codes=(EXIT_ERROR,))
    assert "larger than" in result.err
    # the same plans, untouched, still work: what was refused above was the damage
    applied = json_of(m.cli("apply", "--yes", "--json", str(tmp_path / "auto.json")))
    assert applied["done"] == len(auto["actions"]) and applied["skipped"] == 0
    assert outside_facts(m) == outside


# -- 3. races between plan and act ---------------------------------------------------------------------------


def swap_for_symlink(path: Path, to: Path) -> None:
    os.unlink(path)
    os.symlink(to, path)


def test_copy_swapped_for_a_symlink_out_of_the_roots_is_skipped(m: Machine, tmp_path: Path) -> None:
    """The local copy, then (on a second machine state) the kept blob, become symlinks to an outside file
    with the very same bytes between the dry run and apply."""
    plan = save_plan(m, tmp_path / "plan.json")
    local = m.models / "alpha" / "model.safetensors"
    swap_for_symlink(local, m.outside / "sentinel.bin")
    outside = outside_facts(m)
    result = m.cli("apply", "--yes", "--json", str(tmp_path / "plan.json"))
    outcomes = {o["path"]: o for o in json_of(result)["outcomes"]}
    assert outcomes[str(local)]["status"] == "skipped" and "no longer a regular file" in outcomes[str(local)]["reason"]
    assert sum(o["status"] == "done" for o in outcomes.values()) == len(plan["actions"]) - 1
    assert os.readlink(local) == str(m.outside / "sentinel.bin")
    assert outside_facts(m) == outside
    m.cli("undo")
    # now the kept copy itself
    plan = save_plan(m, tmp_path / "plan2.json")
    swap_for_symlink(m.blob, m.outside / "sentinel.bin")
    outside = outside_facts(m)
    result = m.cli("apply", "--yes", "--json", str(tmp_path / "plan2.json"))
    for o in json_of(result)["outcomes"]:
        if action_for(plan, Path(o["path"]))["keep"]["path"] == str(m.blob):
            assert o["status"] == "skipped" and "the kept copy" in o["reason"], o
    assert outside_facts(m) == outside
    assert (m.models / "plain" / "weights.bin").read_bytes() == WEIGHTS
    assert os.lstat(m.models / "plain" / "weights.bin").st_nlink == 1


def test_snapshot_symlink_swapped_for_a_file_is_skipped(m: Machine, tmp_path: Path) -> None:
    """symlink mode links a local copy to the cache's snapshot symlink; that symlink becomes a file of other
    bytes between the dry run and apply: the copies must not become links to those bytes."""
    plan = save_plan(m, tmp_path / "plan.json", "--mode", "symlink")
    snapshot = m.repo / "snapshots" / m.t.commit / "model.safetensors"
    os.unlink(snapshot)
    snapshot.write_bytes(random_bytes(len(WEIGHTS), "impostor"))
    result = m.cli("apply", "--yes", "--json", str(tmp_path / "plan.json"))
    outcomes = {o["path"]: o for o in json_of(result)["outcomes"]}
    for copy_ in (m.models / "alpha" / "model.safetensors", m.models / "plain" / "weights.bin"):
        assert outcomes[str(copy_)]["status"] == "skipped", outcomes[str(copy_)]
        assert not copy_.is_symlink() and copy_.read_bytes() == WEIGHTS
    assert outcomes[str(m.models / "alpha" / "config.json")]["status"] == "done"
    assert len(plan["actions"]) == 3


def test_folder_swapped_for_a_symlink_out_of_the_roots_is_skipped(m: Machine, tmp_path: Path) -> None:
    """The model folder is moved out of the roots and a symlink to it left in its place: the file has the same
    inode, size and mtime, but it now lies outside, and nothing there may change."""
    save_plan(m, tmp_path / "plan.json")
    moved = m.outside / "plain"
    os.rename(m.models / "plain", moved)
    os.symlink(moved, m.models / "plain")
    outside = outside_facts(m)
    result = m.cli("apply", "--yes", "--json", str(tmp_path / "plan.json"))
    outcomes = {o["path"]: o for o in json_of(result)["outcomes"]}
    skipped = outcomes[str(m.models / "plain" / "weights.bin")]
    assert skipped["status"] == "skipped", skipped
    assert outside_facts(m) == outside
    assert outcomes[str(m.models / "alpha" / "model.safetensors")]["status"] == "done"


# -- the kept copy replaced after it was verified (in-process) -----------------------------------------------


def replace_with_impostor(path: str) -> None:
    """Other bytes of the same size and mtime under the same name (a new inode), as `os.replace` leaves them."""
    st = os.lstat(path)
    tmp = path + ".impostor"
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF
    Path(tmp).write_bytes(bytes(data))
    os.chmod(tmp, stat.S_IMODE(st.st_mode))
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)


@pytest.mark.parametrize(
    ("mode", "when"),
    [
        ("hardlink", "after-compare"),
        ("hardlink", "after-begin"),
        ("symlink", "after-compare"),
        ("symlink", "after-begin"),
        ("delete", "after-compare"),
        ("delete", "after-begin"),
        ("adopt", "after-begin"),
    ],
)
def test_copy_replaced_between_verify_and_link_is_skipped(
    m: Machine, monkeypatch: pytest.MonkeyPatch, mode: str, when: str
) -> None:
    """Right after the byte comparison (or the etag check), or right after the journal's `begin` record (just
    before the link, removal or adoption), the verified file is replaced: the change must be skipped."""
    from modelcache.act import consolidate, fsops, runs
    from modelcache.digests import DigestIndex
    from modelcache.duplicates import find_duplicates
    from modelcache.locations import Location
    from modelcache.plan import Mode, fs_types_of, plan_consolidate
    from modelcache.scan import scan_locations

    for name, value in m.env().items():
        monkeypatch.setenv(name, value)
    inventory = scan_locations(Location(str(m.cache), "test"), [Location(str(m.models), "test")])
    index = DigestIndex(m.root / "state" / "digests.sqlite")
    try:
        groups = find_duplicates(inventory.records, index).groups
    finally:
        index.close()
    plan_mode = Mode.HARDLINK if mode == "adopt" else Mode(mode)
    plan = plan_consolidate(
        inventory, groups, plan_mode, fs_types_of({r.facts.dev for r in inventory.records}), adopt=mode == "adopt"
    )
    # adoption verifies the local file itself; every other change verifies the kept copy
    victim = str(m.models / "lonely" / "model.safetensors") if mode == "adopt" else str(m.blob)
    victims = [a for a in plan.actions if a.kind != "skip" and victim in (a.keep.path, a.target.path)]
    assert victims
    bytes_of = {p: Path(p).read_bytes() for a in plan.actions for p in (a.target.path, a.keep.path)}
    swapped: list[str] = []

    def swap_once(action: Any) -> None:
        if victim in (action.keep.path, action.target.path) and not swapped:
            replace_with_impostor(victim)
            swapped.append(victim)

    if when == "after-compare":
        compare = consolidate.compare

        def compare_then_swap(action: Any, *args: Any) -> int:
            read = compare(action, *args)
            swap_once(action)
            return read

        monkeypatch.setattr(consolidate, "compare", compare_then_swap)
    else:
        begin = runs.begin_change

        def begin_then_swap(journal: Any, action: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
            record = begin(journal, action, *args, **kwargs)
            swap_once(action)
            return record

        monkeypatch.setattr(runs, "begin_change", begin_then_swap)

    run = consolidate.execute(plan)
    assert swapped
    outcomes = {o.action_id: o for o in run.outcomes}
    first = victims[0]
    assert outcomes[first.id].status == "skipped", outcomes[first.id]
    for a in victims[1:]:  # the later ones see the new inode at their first check
        assert outcomes[a.id].status == "skipped", outcomes[a.id]
    removed = {o.target for o in run.outcomes if o.status == "done" and o.method == "delete"}
    keep_of = {a.target.path: a.keep.path for a in plan.actions}
    for path, data in bytes_of.items():
        if path in removed:  # removed for a copy the cache keeps: those bytes are still there
            assert not os.path.lexists(path) and Path(keep_of[path]).read_bytes() == data, path
        elif path != victim:
            assert Path(path).read_bytes() == data, path  # every other path still reads its own bytes
    if mode == "adopt":
        assert not (m.cache / "models--org--lonely" / "blobs" / sha256_hex(LONELY)).exists()
    assert not fsops.leftover_temp_files([m.cache, m.models])
    records = [json.loads(line) for p in (m.root / "state" / "journal").glob("*.jsonl") for line in p.open()]
    closed = {r["action"] for r in records if r["type"] in ("done", "abandoned")}
    assert all(r["action"] in closed for r in records if r["type"] == "begin")


# -- 4. everything at once, every command --------------------------------------------------------------------


def test_every_command_on_a_hostile_tree(m: Machine, tmp_path: Path) -> None:
    refs, trees = m.repo / "refs", m.repo / "trees"
    (refs / "huge").write_bytes(padded(m.t.commit.encode()))
    (refs / "dotdot").write_text("../../../../outside/ref-target")
    os.symlink(m.outside / "ref-target", refs / "link-out")
    fifo(refs / "fifo")
    (trees / f"{m.t.commit}.json").write_bytes(padded(tree_json({"model.safetensors": WEIGHTS})))
    (trees / f"{'e' * 40}.json").write_bytes(NESTED)
    meta = m.models / "lonely" / ".cache" / "huggingface" / "download"
    (meta / "model.safetensors.metadata").write_text(f"{m.t.lonely_commit}\n../../../outside/sentinel.bin\n1e9\n")
    fifo(meta / "config.json.metadata")
    make_ollama(m)
    make_modelscope(m, m.outside / "code-ran")
    llama = m.home / "llama.cpp"
    write_tree(llama, {"org_repo_model.gguf": WEIGHTS})
    fifo(llama / "org_repo_model.gguf.etag")
    (llama / "org_repo_model.gguf.json").write_bytes(padded(b'{"etag": "x"}'))
    os.symlink("loop", m.models / "plain" / "loop")
    os.symlink(m.outside, m.models / "plain" / "outside-folder")
    os.symlink(m.outside / "sentinel.bin", m.models / "plain" / "outside-file.bin")
    lmstudio = m.home / ".lmstudio-home-pointer"
    fifo(lmstudio)
    before = snapshot_tree(m.cache, m.models, m.home)
    outside = outside_facts(m)
    for args in (
        ["analyze"],
        ["analyze", "--json"],
        ["list"],
        ["list", "--json"],
        ["verify", "--all"],
        ["clean", "--dry-run", "--revisions", "--older-than", "0"],
        ["clean", "--dry-run", "--json"],
        ["consolidate", "--dry-run", "--adopt"],
        ["consolidate", "--dry-run", "--json", "--mode", "symlink"],
    ):
        result = m.cli(*args, *m.roots(), codes=(EXIT_OK, EXIT_WARNINGS, EXIT_ERROR))
        if "--json" in args and result.code != EXIT_ERROR:
            json_of(result)
        assert snapshot_tree(m.cache, m.models, m.home) == before, args  # finding changes nothing
        assert outside_facts(m) == outside, args
    for args in (["stores"], ["stores", "--json"]):
        result = m.cli(*args, codes=(EXIT_OK,))
        assert "ollama" in result.out and str(m.home / "ollama") in result.out
    assert not (m.outside / "code-ran").exists()

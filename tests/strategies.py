"""Random machines for the property tests: the hypothesis strategy and the builder, shared by every property test.

A machine is a template (an HF cache with three repos, one of them at two revisions, and a
local_dir copy, all made by the real huggingface_hub client through LocalHub) plus what
hypothesis draws (`Spec`):

- extras in the model folders: copies, renamed copies, hard links to a cache blob, same-size
  lookalikes, symlinks into the cache and out of the roots (to a sentinel), dangling and
  looping links, files with odd names (spaces, newlines, bytes that are not UTF-8, long names);
- other tools' stores holding copies of cache files: Ollama (blob + manifest), LM Studio,
  ModelScope (with its pickles) and a flat llama.cpp folder (with its etag sidecar);
- interrupted downloads and garbage, old or young: `.incomplete` blobs, local_dir partial
  downloads and locks, orphan blobs, dangling refs, Ollama `-partial` blobs, ModelScope temp
  files, llama.cpp `.downloadInProgress`, temporary files of an interrupted modelcache run;
- corrupt metadata: truncated, binary, garbage-JSON or empty local_dir `.metadata`, Ollama
  manifests and refs; a llama.cpp etag that lies; a cache blob with a flipped byte (bit rot);
- files without read permission, read-only folders and unreadable folders (drawn only by the
  tests that run the CLI as a user whom permission bits stop: `cli_user`).

Example counts: `MODELCACHE_PROPERTY_EXAMPLES` sets every property test's count; without it,
each test has its own default, sized for CI. The big profile, by hand:
`MODELCACHE_PROPERTY_EXAMPLES=200 pytest tests/test_properties.py tests/test_properties_cli.py`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

from modelcache.testing import LocalHub
from modelcache.testing.builders import (
    CLIENT_ENV,
    client_env,
    download_to_cache,
    download_to_local_dir,
    ollama_manifest,
    random_bytes,
    write_tree,
)

BLOB_A = random_bytes(30_000, "prop-a")
BLOB_B = random_bytes(20_000, "prop-b")
SMALL = b'{"small": true}'
NEW = random_bytes(25_000, "prop-new")  # only on the Hub (org/four): what `download` must fetch
BLOBS = {"A": BLOB_A, "B": BLOB_B, "SMALL": SMALL}
SHA = {key: hashlib.sha256(content).hexdigest() for key, content in BLOBS.items()}
HUB_ONLY = {"a.safetensors": BLOB_A, "new.bin": NEW, "config.json": SMALL}  # org/four: half of it is on disk
TWO_DAYS = 2 * 86400
NOBODY = "65534"


def examples(default: int) -> int:
    """A property test's example count: its CI default, or MODELCACHE_PROPERTY_EXAMPLES."""
    return int(os.environ.get("MODELCACHE_PROPERTY_EXAMPLES", str(default)))


# -- the template ------------------------------------------------------------------------------------------


def build_template(hub: LocalHub, root: Path) -> Path:
    """Fill `hub`, then download: org/one, org/two, org/three at two revisions, and a local_dir copy of org/one."""
    hub.add_commit("org/one", {"a.safetensors": BLOB_A, "config.json": SMALL})
    hub.add_commit("org/two", {"w/a.safetensors": BLOB_A, "b.bin": BLOB_B, "sub dir/ünï café.json": SMALL})
    first = hub.add_commit("org/three", {"b.bin": BLOB_B, "config.json": b"{}"})
    hub.add_commit("org/three", {"b.bin": BLOB_B, "config.json": b'{"v": 2}'})
    hub.add_commit("org/four", HUB_ONLY)  # never downloaded by the template
    with client_env():
        for repo in ("org/one", "org/two"):
            download_to_cache(hub, repo, root / "cache")
        download_to_cache(hub, "org/three", root / "cache", revision=first)
        download_to_cache(hub, "org/three", root / "cache")
        download_to_local_dir(hub, "org/one", root / "models" / "one", root / "cache")
    return root


# -- what hypothesis draws ---------------------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(["copy.bin", "with space.safetensors", "line\nbreak.bin", "ünïcode.gguf", "x" * 200]),
    st.binary(min_size=1, max_size=12).map(lambda b: os.fsdecode(b.replace(b"/", b"_").replace(b"\0", b"_"))),
).filter(lambda n: n not in (".", "..") and not n.startswith(".modelcache-"))
CONTENT = st.sampled_from(["A", "B", "SMALL", "unique", "A-hardlink"])  # A-hardlink: the cache's blob itself
EXTRAS = st.lists(
    st.tuples(
        st.sampled_from(["copy", "hardlink", "lookalike", "symlink", "outside", "dangling", "loop", "unique"]),
        st.sampled_from(["A", "B", "SMALL"]),
        NAMES,
        st.sampled_from(["plain", "one", "deep/er"]),
    ),
    max_size=8,
)
STORE_KINDS = ["ollama", "lmstudio", "modelscope", "llamacpp"]
STORES = st.lists(st.tuples(st.sampled_from(STORE_KINDS), CONTENT), max_size=5)
GARBAGE_KINDS = [
    "incomplete-blob",
    "local-incomplete",
    "local-lock",
    "orphan-blob",
    "dangling-ref",
    "ollama-partial",
    "modelscope-temp",
    "llamacpp-partial",
    "modelcache-tmp",
]
GARBAGE = st.lists(st.tuples(st.sampled_from(GARBAGE_KINDS), st.booleans()), max_size=4)  # (kind, old)
CORRUPT = st.lists(
    st.tuples(
        st.sampled_from(
            ["local-metadata", "ollama-manifest", "ref", "llamacpp-etag", "bitrot", "local-bitrot", "local-missing"]
        ),
        st.sampled_from(["truncated", "binary", "garbage-json", "empty"]),
    ),
    max_size=3,
)
PERM_FILES = ["models/one/a.safetensors", "models/one/config.json", f"cache/models--org--two/blobs/{SHA['B']}", "extra"]
PERM_DIRS = ["models/plain", "models/deep/er", "models/one", "cache/models--org--three/blobs", "store"]
PERMS = st.lists(
    st.one_of(
        st.tuples(st.just("unreadable-file"), st.sampled_from(PERM_FILES)),
        st.tuples(st.sampled_from(["read-only-dir", "unreadable-dir"]), st.sampled_from(PERM_DIRS)),
    ),
    max_size=2,
)


@dataclass(frozen=True)
class Spec:
    """One drawn machine (hypothesis prints it for a failing example; paste it into an `@example`)."""

    extras: list[tuple[str, str, str, str]] = field(default_factory=list)
    stores: list[tuple[str, str]] = field(default_factory=list)
    garbage: list[tuple[str, bool]] = field(default_factory=list)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    perms: list[tuple[str, str]] = field(default_factory=list)


def specs(*, perms: bool) -> st.SearchStrategy[Spec]:
    """Machines; `perms` draws permission faults too (only where the command runs as a user they stop)."""
    return st.builds(Spec, EXTRAS, STORES, GARBAGE, CORRUPT, PERMS if perms else st.just([]))


# -- building one ------------------------------------------------------------------------------------------


@dataclass
class Machine:
    root: Path
    cache: Path
    models: Path
    sentinel: Path
    stores: dict[str, Path] = field(default_factory=dict)
    old_garbage: list[Path] = field(default_factory=list)  # what clean --older-than 1h must remove
    young_garbage: list[Path] = field(default_factory=list)  # what it must keep
    corrupt: list[Path] = field(default_factory=list)  # files whose bytes do not match their claim
    locked: list[Path] = field(default_factory=list)  # files and folders given permission faults

    @property
    def drawn_temp_files(self) -> list[Path]:
        """Temporary files of an interrupted modelcache run that the machine was drawn with."""
        return [p for p in self.old_garbage + self.young_garbage if p.name.startswith(".modelcache-")]

    @property
    def roots(self) -> list[Path]:
        return [self.cache, self.models, *self.stores.values()]

    @property
    def state(self) -> Path:
        return self.root / "state"

    def where(self) -> list[str]:
        """The CLI options that name exactly this machine's roots (nothing discovered elsewhere)."""
        args = ["--cache-dir", str(self.cache), "--models", str(self.models), "--no-discover"]
        for kind, path in self.stores.items():
            args += ["--store", f"{kind}={path}"]
        return args

    @property
    def env(self) -> dict[str, str]:
        return {
            "MODELCACHE_STATE": str(self.state),
            "MODELCACHE_INDEX": str(self.state / "digests.sqlite"),
            "HOME": str(self.root / "home"),
            "XDG_DATA_HOME": str(self.root / "home" / "data"),
            "XDG_CONFIG_HOME": str(self.root / "home" / "config"),
            "HF_HUB_CACHE": str(self.cache),
            "HF_HOME": str(self.root / "home" / "hf"),
            "OLLAMA_MODELS": str(self.stores.get("ollama", self.root / "no-ollama")),
            "MODELSCOPE_CACHE": str(self.stores.get("modelscope", self.root / "no-modelscope")),
            "LLAMA_CACHE": str(self.stores.get("llamacpp", self.root / "no-llamacpp")),
            "TORCH_HOME": str(self.root / "no-torch"),
            **CLIENT_ENV,
        }

    def cleanup(self) -> None:
        for dirpath, dirs, _files in os.walk(self.root):
            for d in dirs:
                p = os.path.join(dirpath, d)
                if not os.path.islink(p):
                    os.chmod(p, 0o755)
        shutil.rmtree(self.root, ignore_errors=True)


def _age(path: Path, old: bool) -> None:
    if old:
        then = time.time() - TWO_DAYS
        os.utime(path, (then, then), follow_symlinks=False)


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


STORE_SKELETON = {"ollama": "blobs", "lmstudio": ".", "modelscope": "models", "llamacpp": "."}  # what makes one


def _store_root(m: Machine, kind: str) -> Path:
    """The folder of a store of `kind`, made (with what identifies it) the first time it is asked for."""
    path = m.root / "stores" / kind
    if kind not in m.stores:
        (path / STORE_SKELETON[kind]).mkdir(parents=True, exist_ok=True)
        m.stores[kind] = path
    return path


def _add_extras(m: Machine, extras: list[tuple[str, str, str, str]]) -> list[Path]:
    files = []
    blob_a = m.cache / "models--org--one" / "blobs" / SHA["A"]
    for i, (kind, which, name, where) in enumerate(extras):
        folder = m.models / where
        folder.mkdir(parents=True, exist_ok=True)
        path = Path(os.path.join(folder, f"{i}-{name}"))
        content = BLOBS[which]
        if kind == "copy":
            path.write_bytes(content)
        elif kind == "hardlink" and which == "A":
            os.link(blob_a, path)
        elif kind == "lookalike":
            path.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
        elif kind == "symlink":
            os.symlink(os.path.relpath(m.cache / "models--org--one", folder), path)
        elif kind == "outside":
            os.symlink(m.sentinel, path)
        elif kind == "dangling":
            os.symlink(m.root / "nowhere", path)
        elif kind == "loop":
            os.symlink(path.name, path)
        elif kind != "hardlink":
            path.write_bytes(random_bytes(1000 + i, f"unique-{i}"))
        if os.path.isfile(path) and not os.path.islink(path):
            files.append(path)
    return files


def _place(m: Machine, path: Path, content: bytes, which: str) -> None:
    """A file with `content`: a copy, or (`A-hardlink`) another name of the cache's blob of A."""
    if os.path.exists(path):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if which.endswith("-hardlink"):
        os.link(m.cache / "models--org--one" / "blobs" / SHA["A"], path)
    else:
        path.write_bytes(content)


def _add_stores(m: Machine, stores: list[tuple[str, str]]) -> None:
    """Copies of cache files (or bytes of their own) where each tool keeps them."""
    for i, (kind, which) in enumerate(stores):
        content = BLOBS[which.removesuffix("-hardlink")] if which != "unique" else random_bytes(2000 + i, f"store-{i}")
        sha = hashlib.sha256(content).hexdigest()
        root = _store_root(m, kind)
        if kind == "ollama":
            write_tree(root, {
                f"blobs/sha256-{hashlib.sha256(b'{}').hexdigest()}": b"{}",
                f"manifests/registry.ollama.ai/library/m{i}/latest": ollama_manifest(
                    [(content, "application/vnd.ollama.image.model")]),
            })  # fmt: skip
            _place(m, root / "blobs" / f"sha256-{sha}", content, which)
        elif kind == "lmstudio":
            _place(m, root / "pub" / f"repo{i}" / f"model-{i}.gguf", content, which)
        elif kind == "modelscope":
            folder = f"models/org/m{i}"
            write_tree(root, {
                f"{folder}/model.safetensors": content,
                f"{folder}/.mdl": pickle.dumps({"id": f"org/m{i}"}),
                f"{folder}/.msc": pickle.dumps([{"Path": "model.safetensors", "Revision": "master"}]),
                f"{folder}/.mv": b"Revision:master,CreatedAt:1700000000",
            })  # fmt: skip
        else:
            write_tree(root, {f"org_repo{i}_model-{i}.gguf": content, f"org_repo{i}_model-{i}.gguf.etag": sha.encode()})


def _add_garbage(m: Machine, garbage: list[tuple[str, bool]]) -> None:
    local_download = m.models / "one" / ".cache" / "huggingface" / "download"
    for i, (kind, old) in enumerate(garbage):
        partial = BLOB_B[: 1000 + i]
        fake = hashlib.sha256(f"garbage-{i}".encode()).hexdigest()
        if kind == "incomplete-blob":
            path = _write(m.cache / "models--org--two" / "blobs" / f"{fake}.incomplete", partial)
        elif kind == "local-incomplete":
            path = _write(local_download / f"g{i}AAAAAAAAAAAAAAAAAAAAAAAAA=.{fake}.incomplete", partial)
        elif kind == "local-lock":
            path = _write(local_download / f"g{i}.safetensors.lock", b"")
        elif kind == "orphan-blob":
            orphan = random_bytes(1500 + i, f"orphan-{i}")
            path = _write(m.cache / "models--org--three" / "blobs" / hashlib.sha256(orphan).hexdigest(), orphan)
        elif kind == "dangling-ref":
            path = _write(m.cache / "models--org--two" / "refs" / f"dangling{i}", fake[:40].encode())
        elif kind == "ollama-partial":
            path = _write(_store_root(m, "ollama") / "blobs" / f"sha256-{fake}-partial", b"\0" * len(partial))
        elif kind == "modelscope-temp":
            path = _write(_store_root(m, "modelscope") / "models" / "._____temp" / "org" / f"t{i}" / "w.bin", partial)
        elif kind == "llamacpp-partial":
            path = _write(_store_root(m, "llamacpp") / f"org_big_g{i}.gguf.downloadInProgress", partial)
        else:
            path = _write(m.models / "plain" / f".modelcache-{fake[:8]}.tmp", partial)
        _age(path, old)
        # Orphan blobs and dangling refs are garbage at any age; the rest only once old.
        (m.old_garbage if old or kind in ("orphan-blob", "dangling-ref") else m.young_garbage).append(path)


CORRUPTIONS = {
    "truncated": lambda good: good[: len(good) // 2],
    "binary": lambda good: bytes(range(256)) * 3,
    "garbage-json": lambda good: b'{"layers": [{"digest": 7, "size": "x"}], "config": [' + b"[" * 50,
    "empty": lambda good: b"",
}


def _add_corruption(m: Machine, corrupt: list[tuple[str, str]]) -> None:
    local_weights = m.models / "one" / "a.safetensors"
    for i, (where, how) in enumerate(corrupt):
        bad = CORRUPTIONS[how]
        if where == "local-metadata":
            path = m.models / "one" / ".cache" / "huggingface" / "download" / "a.safetensors.metadata"
            path.write_bytes(bad(path.read_bytes()))
        elif where == "ollama-manifest":
            good = ollama_manifest([(BLOB_A, "application/vnd.ollama.image.model")])
            _write(_store_root(m, "ollama") / "manifests" / "registry.ollama.ai" / "library" / f"bad{i}" / "latest",
                   bad(good))  # fmt: skip
            _write(_store_root(m, "ollama") / "blobs" / f"sha256-{SHA['A']}", BLOB_A)
        elif where == "ref":
            path = m.cache / "models--org--one" / "refs" / "main"
            path.write_bytes(bad(path.read_bytes()))
        elif where == "llamacpp-etag":  # a sidecar claiming A's sha256 for a lookalike of A
            root = _store_root(m, "llamacpp")
            lookalike = BLOB_A[:-1] + bytes([BLOB_A[-1] ^ 1])
            m.corrupt.append(_write(root / f"org_lie_c{i}.gguf", lookalike))
            _write(root / f"org_lie_c{i}.gguf.etag", SHA["A"].encode())
        elif where == "local-missing":  # a partial local_dir copy: a file its metadata names is gone
            (m.models / "one" / "config.json").unlink(missing_ok=True)
        else:  # bit rot: one byte flipped, mtime kept, in a cache blob or in the local_dir copy (its claim trusted)
            _flip(m, m.cache / "models--org--two" / "blobs" / SHA["B"] if where == "bitrot" else local_weights)
    if local_weights in m.corrupt and "local-metadata" in {where for where, _how in corrupt}:
        m.corrupt.remove(local_weights)  # with its metadata unreadable, nothing claims its digest


def _flip(m: Machine, path: Path) -> None:
    if path in m.corrupt:
        return
    st_ = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    m.corrupt.append(path)


def _add_perms(m: Machine, perms: list[tuple[str, str]], extra_files: list[Path]) -> None:
    for what, target in perms:
        if what == "unreadable-file":
            path = extra_files[0] if target == "extra" and extra_files else m.root / target
            if (target == "extra" and not extra_files) or not path.exists():
                continue  # no extra file drawn, or the file was drawn missing
            path.chmod(stat.S_IMODE(path.lstat().st_mode) & ~0o444)
        else:
            if target == "store":
                if not m.stores:
                    continue
                path = next(iter(m.stores.values()))
            else:
                path = m.root / target
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o555 if what == "read-only-dir" else 0o000)
        m.locked.append(path)


def build(template: Path, spec: Spec, where: Path | None = None) -> Machine:
    """A new machine: a copy of the template plus what `spec` draws (in a new folder under `where`, else
    under the system's temp folder)."""
    root = Path(tempfile.mkdtemp(prefix="modelcache-prop-", dir=where))
    root.chmod(0o755)  # another user (nobody) may have to enter it
    shutil.copytree(template / "cache", root / "cache", symlinks=True)
    shutil.copytree(template / "models", root / "models", symlinks=True)
    m = Machine(root, root / "cache", root / "models", root / "outside" / "sentinel.bin")
    _write(m.sentinel, BLOB_A)  # the same bytes as a cache blob, reachable only through symlinks
    (root / "models" / "plain").mkdir()
    m.state.mkdir()
    extra_files = _add_extras(m, spec.extras)
    _add_stores(m, spec.stores)
    _add_garbage(m, spec.garbage)
    _add_corruption(m, spec.corrupt)
    if spec.stores and "ollama" in m.stores:  # an outside link from a store too
        os.symlink(m.sentinel, m.stores["ollama"] / "blobs" / "outside-link")
    _add_perms(m, spec.perms, extra_files)
    return m


# -- running the CLI as a user whom permissions stop ------------------------------------------------------


def _nobody_runs_python() -> bool:
    from .machine import run_cli

    return run_cli("--version", user=NOBODY).code == 0


# As root, permission bits stop nothing: the CLI then runs as user nobody, owning the machine.
# Where nobody cannot run this Python (a venv under a private home), permission faults are not
# drawn: they would have no effect.
AS_ROOT = os.geteuid() == 0
PERMS_BITE = not AS_ROOT or _nobody_runs_python()
CLI_USER = NOBODY if AS_ROOT and PERMS_BITE else None


def hand_over(m: Machine) -> None:
    """Give the machine (and its state folder) to the user the CLI runs as."""
    if CLI_USER is None:
        return
    uid = int(CLI_USER)
    for dirpath, dirs, files in os.walk(m.root):
        for name in [*dirs, *files]:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)
    os.chown(m.root, uid, uid)


# -- what the files say, computed without modelcache ------------------------------------------------------


def contents(*roots: Path) -> dict[str, tuple[str, bytes | None]]:
    """Every path under `roots`: its kind, and the sha256 of what it reads (None: it does not read)."""
    found: dict[str, tuple[str, bytes | None]] = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(dirpath, name)
                mode = os.lstat(path).st_mode
                kind = "dir" if stat.S_ISDIR(mode) else "link" if stat.S_ISLNK(mode) else "file"
                data = None
                if kind != "dir":
                    try:
                        with open(path, "rb") as f:
                            data = hashlib.sha256(f.read()).digest()
                    except OSError:
                        data = None
                found[path] = (kind, data)
    return found


def outside_state(m: Machine) -> tuple[bytes, int, int, int]:
    """The sentinel outside the roots: bytes, inode, mtime, mode."""
    st_ = m.sentinel.stat()
    return m.sentinel.read_bytes(), st_.st_ino, st_.st_mtime_ns, st_.st_mode


def _old(path: str, min_age: float, now: float) -> bool:
    return now - os.lstat(path).st_mtime >= min_age


def expected_garbage(m: Machine, min_age: float, revisions: bool = False) -> set[str]:
    """What `clean --older-than MIN_AGE [--revisions]` may remove, by the documented rules, from the files alone.

    With `revisions`, a revision is detached (and pruned, as `hf cache prune` does) when no ref
    names it, and only when every ref of its repo holds a commit hash: a ref that does not
    (truncated, garbage) may name any revision, so none is pruned."""
    now = time.time()
    found: set[str] = set()
    for repo in m.cache.iterdir():
        if not repo.name.startswith(("models--", "datasets--", "spaces--")) or not repo.is_dir():
            continue
        snapshots = repo / "snapshots"
        commits = set(os.listdir(snapshots)) if snapshots.is_dir() else set()
        refs = {os.path.join(d, f): Path(d, f).read_bytes().strip().decode("utf-8", "replace")
                for d, _, fs in os.walk(repo / "refs") for f in fs}  # fmt: skip
        readable_refs = all(re.fullmatch(r"[0-9a-f]{40}", text) for text in refs.values())
        detached = commits - set(refs.values()) if revisions and readable_refs else set()
        for commit in detached:
            for folder in (snapshots / commit, repo / ".no_exist" / commit):
                found |= {os.path.join(d, n) for d, ds, fs in os.walk(folder) for n in ds + fs} | {str(folder)}
            found.add(str(repo / "trees" / f"{commit}.json"))
        used = {os.path.basename(os.readlink(os.path.join(d, f)))
                for c in commits - detached
                for d, _, fs in os.walk(snapshots / c) for f in fs if os.path.islink(os.path.join(d, f))}  # fmt: skip
        for blob in (repo / "blobs").iterdir() if (repo / "blobs").is_dir() else []:
            if blob.name.endswith(".incomplete"):
                if _old(str(blob), min_age, now):
                    found.add(str(blob))
            elif blob.name not in used:
                found.add(str(blob))  # an orphan blob (or one only detached revisions use)
        for ref, text in refs.items():
            if text not in commits and (re.fullmatch(r"[0-9a-f]{40}", text) or not commits):
                found.add(ref)  # points at no snapshot (a ref holding no commit hash is kept while revisions are)
    for dirpath, _dirs, files in os.walk(m.cache / ".locks"):
        found |= {os.path.join(dirpath, f) for f in files if f.endswith(".lock")}
    for root in m.roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                partial = (
                    (name.startswith(".modelcache-") and name.endswith(".tmp"))
                    or (os.sep + os.path.join(".cache", "huggingface", "download") in dirpath
                        and name.endswith((".incomplete", ".lock")))
                    or (root == m.stores.get("ollama") and re.fullmatch(r"sha256-[0-9a-f]{64}-partial(-\d+)?", name))
                    or (root == m.stores.get("modelscope") and "._____temp" in Path(path).parts)
                    or (root == m.stores.get("llamacpp") and name.endswith(".downloadInProgress"))
                )  # fmt: skip
                if partial and _old(path, min_age, now):
                    found.add(path)
    # In the cache, a folder whose every entry is garbage goes with it (removals leave it empty).
    for dirpath, dirs, files in os.walk(m.cache, topdown=False):
        entries = [os.path.join(dirpath, n) for n in dirs + files]
        if dirpath != str(m.cache) and all(e in found for e in entries):
            found.add(dirpath)
    return found


def hf_repo_sizes(m: Machine) -> dict[str, int]:
    """`list`'s size of each HF cache repo: distinct inodes under its folder."""
    sizes = {}
    for repo in m.cache.iterdir():
        kind, _, rest = repo.name.partition("--")
        if kind not in ("models", "datasets", "spaces") or not repo.is_dir():
            continue
        inodes = {}
        for dirpath, _dirs, files in os.walk(repo):
            for name in files:
                st_ = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISREG(st_.st_mode):
                    inodes[(st_.st_dev, st_.st_ino)] = st_.st_size
        sizes[rest.replace("--", "/")] = sum(inodes.values())
    return sizes

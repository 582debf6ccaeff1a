"""Reader for Ollama's model store (`OLLAMA_MODELS`, else `~/.ollama/models`).

```
models/blobs/sha256-<64 hex>                         # content, named by its sha256 (a claim)
models/blobs/sha256-<64 hex>-partial                 # a download: pre-sized to the final length
models/blobs/sha256-<64 hex>-partial-<N>             # its per-part progress (JSON)
models/blobs/sha256-<digits>                         # `ollama create` temporaries
models/manifests/<host>/<namespace>/<model>/<tag>    # JSON: config + layers, each {digest, size}
```

Each manifest is one model (`llama3.2:latest`, `hf.co/bartowski/x:Q4_K_M`). A blob used by
several manifests belongs to the first of them (its bytes are counted once); a blob no
manifest names belongs to the store itself. A corrupt manifest is reported and skipped.
Source: ollama `manifest/paths.go`, `server/download.go`, `server/images.go` (shared/STORES.md).
"""

from __future__ import annotations

import json
import os
import re

from ..common import SMALL_FILE_CAP, TooLarge, read_capped, reason
from ..inventory import Digest, Repo, RepoStatus, Role
from ..store_kind import StoreKind
from .base import Collector, walk
from .registry import StoreSpec, first_dir, from_env, home, tool_partials

STORE = StoreKind.declare("ollama", rank=40)
TITLE = "Ollama"
BLOB = re.compile(r"sha256-([0-9a-f]{64})")
PARTIAL = re.compile(r"sha256-[0-9a-f]{64}-partial(-\d+)?")
DEFAULT_HOST = "registry.ollama.ai"


def locate() -> tuple[str, str]:
    return from_env(
        "OLLAMA_MODELS",
        first_dir(
            (home(".ollama", "models"), "default (~/.ollama/models)"),
            ("/usr/share/ollama/.ollama/models", "default (Linux service)"),
        ),
    )


def model_name(relpath: str) -> str:
    """`registry.ollama.ai/library/llama3.2/latest` -> `llama3.2:latest`, as `ollama list` shows it."""
    parts = relpath.split("/")
    if len(parts) < 4:
        return relpath
    host, namespace, model, tag = parts[0], "/".join(parts[1:-2]), parts[-2], parts[-1]
    if host != DEFAULT_HOST:
        return f"{host}/{namespace}/{model}:{tag}"
    return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"


def read_manifest(path: str) -> list[tuple[str, int]] | str:
    """(sha256 hex, size) of every layer and the config, or why the manifest cannot be read (one short line)."""
    try:
        data = json.loads(read_capped(path, SMALL_FILE_CAP))
        layers = [*data.get("layers", []), data["config"]] if data.get("config") else list(data["layers"])
        found = []
        for layer in layers:
            digest = str(layer["digest"])
            if not digest.startswith("sha256:") or Digest.from_name(digest[7:]) is None:
                return f"corrupt manifest: bad digest {digest[:80]!r}"
            found.append((digest[7:], int(layer["size"])))
        return found
    except TooLarge as e:
        return f"manifest {e.strerror}"
    except OSError as e:
        return f"unreadable manifest: {reason(e)}"
    except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError, RecursionError) as e:
        return f"corrupt manifest ({e.__class__.__name__}: {str(e)[:200]})"


def read_ollama(root: str, out: Collector) -> None:
    root = os.path.abspath(root)
    blobs_dir, manifests_dir = os.path.join(root, "blobs"), os.path.join(root, "manifests")
    if not os.path.isdir(blobs_dir) and not os.path.isdir(manifests_dir):
        out.warn(root, "not an Ollama models folder (no blobs/ or manifests/); skipped")
        return
    manifests: dict[str, list[tuple[str, int]]] = {}
    for entry in walk(manifests_dir, out.warn):
        if not entry.is_file:
            continue
        out.add(entry, STORE, Role.METADATA, entry.path, "manifests/" + entry.relpath)
        layers = read_manifest(entry.path)
        if isinstance(layers, str):
            out.warn(entry.path, layers)
        else:
            manifests[entry.path] = layers
    owner: dict[str, str] = {}  # blob hex -> the first manifest (by path) that names it
    for path in sorted(manifests):
        for hexdigest, _size in manifests[path]:
            owner.setdefault(hexdigest, path)

    present: dict[str, int] = {}
    for entry in walk(blobs_dir, out.warn):
        name = entry.relpath
        if not entry.is_file:
            if entry.is_symlink:
                out.warn(entry.path, "a symlinked blob: not counted (its target is another store's file)")
            continue
        match = BLOB.fullmatch(name)
        if match is None:
            # -partial, -partial-N and `ollama create` temporaries: Ollama prunes them after an hour.
            kind = Role.INCOMPLETE if PARTIAL.fullmatch(name) or name.startswith("sha256-") else Role.METADATA
            out.add(entry, STORE, kind, blobs_dir, "blobs/" + name)
            continue
        hexdigest = match.group(1)
        present[hexdigest] = entry.st.st_size
        out.add(entry, STORE, Role.MODEL, owner.get(hexdigest, blobs_dir), "blobs/" + name, Digest("sha256", hexdigest))

    for path, layers in sorted(manifests.items()):
        missing = [h for h, size in layers if present.get(h) != size]
        status = RepoStatus.BROKEN if missing else RepoStatus.COMPLETE
        problems = tuple(f"layer sha256:{h[:12]} missing or of another size" for h in missing)
        name = model_name(os.path.relpath(path, manifests_dir).replace(os.sep, "/"))
        out.repos.append(Repo(path, name, "model", STORE, path, (), status, problems))
    unreferenced = [h for h in present if h not in owner]
    if unreferenced:
        out.repos.append(
            Repo(
                blobs_dir,
                "(blobs no manifest names)",
                "store",
                STORE,
                blobs_dir,
                (),
                RepoStatus.UNKNOWN,
                (f"{len(unreferenced)} blob(s): Ollama prunes them at its next start",),
            )
        )


def _presized(name: str) -> str:
    return " (pre-sized to its final length: its size says nothing of progress)" if name.endswith("-partial") else ""


# server/download.go: a pull writes `-partial` and renames it to its content-addressed name;
# a blob is never written in place, and `ollama rm` / prune remove (unlink) it.
SPEC = StoreSpec(
    STORE,
    TITLE,
    reader=read_ollama,
    locate=locate,
    partials=tool_partials(STORE, TITLE, _presized),
    written_in_place_by=None,
)

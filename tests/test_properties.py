"""Properties on random machines, and faults injected at every call of the one module that writes.

Each example copies a template machine (an HF cache and a local_dir copy made by the real
huggingface_hub client through LocalHub), then adds what hypothesis draws: copies, renamed
copies, hard links, same-size lookalikes, symlinks inside and outside the roots, dangling and
looping links, odd names (spaces, newlines, bytes that are not UTF-8, long names). On each:

1. analyze's totals equal an independent computation from the files (per inode);
2. finding and planning change nothing;
3. after consolidate, in every mode, every path reads its old bytes (or, removed, is journaled
   with its bytes still in the cache); after undo the tree is exactly as before;
4. nothing outside the roots changes (a sentinel reachable only through symlinks);
5. nothing raises past the library's own errors.

The example count is bounded for CI (MODELCACHE_PROPERTY_EXAMPLES, default 25); run more by
hand: `MODELCACHE_PROPERTY_EXAMPLES=500 pytest tests/test_properties.py`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcache import fsops
from modelcache.digests import DigestIndex
from modelcache.duplicates import find_duplicates
from modelcache.errors import ModelcacheError
from modelcache.execute import execute, leftover_temp_files, recover, undo
from modelcache.locations import Location
from modelcache.plan import Mode, fs_types_of, plan_consolidate
from modelcache.scan import scan_locations
from modelcache.testing import LocalHub
from modelcache.testing.builders import CLIENT_ENV, download_to_cache, download_to_local_dir, random_bytes

from .machine import expected_figures, snapshot_tree

EXAMPLES = int(os.environ.get("MODELCACHE_PROPERTY_EXAMPLES", "25"))
BLOB_A = random_bytes(30_000, "prop-a")
BLOB_B = random_bytes(20_000, "prop-b")
SMALL = b'{"small": true}'


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("template")
    saved = {k: os.environ.get(k) for k in CLIENT_ENV}
    os.environ.update(CLIENT_ENV)
    try:
        with LocalHub() as hub:
            hub.add_commit("org/one", {"a.safetensors": BLOB_A, "config.json": SMALL})
            hub.add_commit("org/two", {"w/a.safetensors": BLOB_A, "b.bin": BLOB_B})
            first = hub.add_commit("org/three", {"b.bin": BLOB_B, "config.json": b"{}"})
            hub.add_commit("org/three", {"b.bin": BLOB_B, "config.json": b'{"v": 2}'})
            for repo in ("org/one", "org/two"):
                download_to_cache(hub, repo, root / "cache")
            download_to_cache(hub, "org/three", root / "cache", revision=first)
            download_to_cache(hub, "org/three", root / "cache")
            download_to_local_dir(hub, "org/one", root / "models" / "one", root / "cache")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield root


NAMES = st.one_of(
    st.sampled_from(["copy.bin", "with space.safetensors", "line\nbreak.bin", "ünïcode.gguf", "x" * 200]),
    st.binary(min_size=1, max_size=12).map(lambda b: os.fsdecode(b.replace(b"/", b"_").replace(b"\0", b"_"))),
).filter(lambda n: n not in (".", "..") and not n.startswith(".modelcache-"))
EXTRAS = st.lists(
    st.tuples(
        st.sampled_from(["copy", "hardlink", "lookalike", "symlink", "outside", "dangling", "loop", "unique"]),
        st.sampled_from(["A", "B", "SMALL"]),
        NAMES,
        st.sampled_from(["plain", "one", "deep/er"]),
    ),
    max_size=8,
)


def build(template: Path, extras: list[tuple[str, str, str, str]]) -> tuple[Path, Path, Path, Path]:
    """A new machine: the template plus `extras`; returns (root, cache, models, sentinel)."""
    root = Path(tempfile.mkdtemp(prefix="modelcache-prop-"))
    shutil.copytree(template / "cache", root / "cache", symlinks=True)
    shutil.copytree(template / "models", root / "models", symlinks=True)
    outside = root / "outside"
    outside.mkdir()
    sentinel = outside / "sentinel.bin"
    sentinel.write_bytes(BLOB_A)  # the same bytes as a cache blob, reachable only through a symlink
    blob = {"A": BLOB_A, "B": BLOB_B, "SMALL": SMALL}
    blob_path = {
        key: root / "cache" / "models--org--one" / "blobs" / hashlib.sha256(BLOB_A).hexdigest() if key == "A" else None
        for key in blob
    }
    for i, (kind, which, name, where) in enumerate(extras):
        folder = root / "models" / where
        folder.mkdir(parents=True, exist_ok=True)
        path = Path(os.path.join(folder, f"{i}-{name}"))
        content = blob[which]
        if kind == "copy":
            path.write_bytes(content)
        elif kind == "hardlink" and blob_path[which] is not None:
            os.link(blob_path[which], path)  # type: ignore[arg-type]
        elif kind == "lookalike":
            path.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
        elif kind == "symlink":
            os.symlink(os.path.relpath(root / "cache" / "models--org--one", folder), path)
        elif kind == "outside":
            os.symlink(sentinel, path)
        elif kind == "dangling":
            os.symlink(root / "nowhere", path)
        elif kind == "loop":
            os.symlink(path.name, path)
        else:
            path.write_bytes(random_bytes(1000 + i, f"unique-{i}"))
    return root, root / "cache", root / "models", sentinel


def contents(*roots: Path) -> dict[str, tuple[str, bytes | None]]:
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


@contextmanager
def state(root: Path) -> Iterator[Path]:
    old = os.environ.get("MODELCACHE_STATE")
    os.environ["MODELCACHE_STATE"] = str(root / "state")
    try:
        yield root / "state"
    finally:
        if old is None:
            os.environ.pop("MODELCACHE_STATE", None)
        else:
            os.environ["MODELCACHE_STATE"] = old


def scan_and_plan(root: Path, cache: Path, models: Path, mode: Mode) -> Any:
    inventory = scan_locations(Location(str(cache), "test"), [Location(str(models), "test")])
    index = DigestIndex(root / "state" / "digests.sqlite")
    try:
        result = find_duplicates(inventory.records, index)
    finally:
        index.close()
    devices = {r.facts.dev for r in inventory.records}
    return inventory, result, plan_consolidate(inventory, result.groups, mode, fs_types_of(devices))


def outside_state(sentinel: Path) -> tuple[bytes, int, int]:
    st_ = sentinel.stat()
    return sentinel.read_bytes(), st_.st_ino, st_.st_mtime_ns


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extras=EXTRAS, mode=st.sampled_from(list(Mode)))
def test_random_machines_keep_every_byte(template: Path, extras: list[tuple[str, str, str, str]], mode: Mode) -> None:
    root, cache, models, sentinel = build(template, extras)
    try:
        with state(root):
            before_tree = snapshot_tree(cache, models)
            before = contents(cache, models)
            outside = outside_state(sentinel)
            inventory, result, plan = scan_and_plan(root, cache, models, mode)
            # 1. totals, per inode, equal an independent computation (unreadable files aside)
            figures = expected_figures(cache, [models])
            assert result.duplicate_bytes == figures["duplicate_bytes"]
            assert inventory.total_bytes() == figures["total_bytes"]
            # 2. finding and planning change nothing
            assert snapshot_tree(cache, models) == before_tree
            # 3. consolidate keeps every byte
            run = execute(plan)
            after = contents(cache, models)
            removed = {o.target for o in run.outcomes if o.status == "done" and o.method == "delete"}
            cache_bytes = {v[1] for p, v in after.items() if p.startswith(str(cache))}
            for path, (_kind, data) in before.items():
                if path in removed:
                    assert not os.path.lexists(path) and data in cache_bytes
                elif data is not None:
                    assert after[path][1] == data, path
            assert outside_state(sentinel) == outside  # 4.
            assert not leftover_temp_files([cache, models])
            # ... and undo gives back the exact tree
            undo(run.run_id) if any(o.status == "done" for o in run.outcomes) else None
            restored = snapshot_tree(cache, models)
            assert set(restored) == set(before_tree)
            for path, entry in before_tree.items():
                if not stat.S_ISDIR(entry[0]):
                    same = restored[path]
                    assert (same[0], same[1], same[2], same[4], same[5]) == (
                        entry[0],
                        entry[1],
                        entry[2],
                        entry[4],
                        entry[5],
                    ), path
            assert contents(cache, models) == before
            assert outside_state(sentinel) == outside
    except ModelcacheError:
        pass  # 5. a library error is a clear one-line message, never a traceback
    finally:
        shutil.rmtree(root, ignore_errors=True)


ERRNOS = [errno.ENOSPC, errno.EIO, errno.EACCES, errno.EPERM, errno.EXDEV, errno.EROFS]
WRITERS = ["hardlink", "reflink", "symlink", "replace", "remove", "remove_dir", "set_mtime", "set_mode",
           "fsync_dir", "copy_to", "make_dirs", "write_new"]  # fmt: skip


@contextmanager
def fail_at(call: int, code: int) -> Iterator[list[str]]:
    """Make the `call`-th call (1-based) into fsops fail with `code`; yields the names of calls made."""
    calls: list[str] = []
    originals = {name: getattr(fsops, name) for name in WRITERS}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            if len(calls) == call:
                raise OSError(code, os.strerror(code), str(args[0]) if args else None)
            return fn(*args, **kwargs)

        return wrapper

    for name, fn in originals.items():
        setattr(fsops, name, wrap(name, fn))
    try:
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(fsops, name, fn)


@pytest.mark.parametrize("mode", [Mode.AUTO, Mode.DELETE, Mode.SYMLINK])
def test_a_fault_at_every_write_loses_nothing(template: Path, mode: Mode) -> None:
    """ENOSPC, EIO, EACCES, EPERM, EXDEV, EROFS injected at each fsops call of a run, in turn."""
    extras = [("copy", "A", "a.bin", "plain"), ("copy", "B", "b.bin", "deep/er"), ("copy", "SMALL", "c.json", "one")]
    root, cache, models, sentinel = build(template, extras)
    try:
        with state(root):
            before = contents(cache, models)
            *_, plan = scan_and_plan(root, cache, models, mode)
            with fail_at(10_000, errno.EIO) as calls:  # a clean run, to count the calls
                run = execute(plan)
            undo(run.run_id)
            assert contents(cache, models) == before
            total_calls = len(calls)
            assert total_calls > 0
            injected = 0
            for call in range(1, total_calls + 1):
                code = ERRNOS[call % len(ERRNOS)]
                *_, plan = scan_and_plan(root, cache, models, mode)
                with fail_at(call, code):
                    try:
                        run = execute(plan)
                    except OSError:
                        run = None  # a fault outside any one action (the folder fsync): nothing half-done
                injected += 1
                recover()
                after = contents(cache, models)
                for path, (_kind, data) in before.items():
                    if os.path.lexists(path) and data is not None:
                        assert after[path][1] == data, (call, code, path)
                assert not leftover_temp_files([cache, models]), (call, code)
                if run is not None:
                    undo(run.run_id)
                assert contents(cache, models) == before, (call, code)
            assert injected == total_calls
            assert sentinel.read_bytes() == BLOB_A
    finally:
        shutil.rmtree(root, ignore_errors=True)

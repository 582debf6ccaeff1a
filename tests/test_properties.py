"""Properties on random machines, and faults injected at every call of the one module that writes.

Each example builds a machine from `strategies.specs` (a template HF cache and local_dir copy made
by the real huggingface_hub client through LocalHub, plus drawn copies, links, odd names, other
tools' stores, garbage and corrupt metadata; see tests/strategies.py) and checks, in-process:

1. analyze's totals equal an independent computation from the files (per inode);
2. finding and planning change nothing;
3. after consolidate, in every mode, every path reads its old bytes (or, removed, is journaled
   with its bytes still in the cache); after undo the tree is exactly as before;
4. nothing outside the roots changes (a sentinel reachable only through symlinks);
5. nothing raises past the library's own errors.

The same properties through the CLI, for the other commands, are in test_properties_cli.py.
The example count is bounded for CI (default 25); run more by hand:
`MODELCACHE_PROPERTY_EXAMPLES=500 pytest tests/test_properties.py`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcache.act import fsops
from modelcache.act.consolidate import execute
from modelcache.act.fsops import leftover_temp_files
from modelcache.act.recover import recover
from modelcache.act.undo import undo
from modelcache.digests import DigestIndex
from modelcache.duplicates import find_duplicates
from modelcache.errors import ModelcacheError
from modelcache.locations import Location, StoreLocation
from modelcache.plan import Mode, fs_types_of, plan_consolidate
from modelcache.scan import scan_locations
from modelcache.store_kind import StoreKind

from .machine import assert_same_tree, expected_figures, snapshot_tree
from .strategies import BLOB_A, Machine, Spec, build, contents, examples, outside_state, specs

EXAMPLES = examples(25)


@contextmanager
def state(m: Machine) -> Iterator[Path]:
    old = os.environ.get("MODELCACHE_STATE")
    os.environ["MODELCACHE_STATE"] = str(m.state)
    try:
        yield m.state
    finally:
        if old is None:
            os.environ.pop("MODELCACHE_STATE", None)
        else:
            os.environ["MODELCACHE_STATE"] = old


def scan_and_plan(m: Machine, mode: Mode) -> Any:
    stores = [StoreLocation(StoreKind(kind), str(path), "--store") for kind, path in m.stores.items()]
    inventory = scan_locations(Location(str(m.cache), "test"), [Location(str(m.models), "test")], stores)
    index = DigestIndex(m.state / "digests.sqlite")
    try:
        result = find_duplicates(inventory.records, index)
    finally:
        index.close()
    devices = {r.facts.dev for r in inventory.records}
    return inventory, result, plan_consolidate(inventory, result.groups, mode, fs_types_of(devices))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs(perms=False), mode=st.sampled_from(list(Mode)))
def test_random_machines_keep_every_byte(template: Path, spec: Spec, mode: Mode) -> None:
    m = build(template, spec)
    roots = m.roots
    try:
        with state(m):
            before_tree = snapshot_tree(*roots)
            before = contents(*roots)
            outside = outside_state(m)
            inventory, result, plan = scan_and_plan(m, mode)
            # 1. totals, per inode, equal an independent computation (unreadable files aside)
            figures = expected_figures(m.cache, [m.models], m.stores)
            assert result.duplicate_bytes == figures["duplicate_bytes"]
            assert inventory.total_bytes() == figures["total_bytes"]
            # 2. finding and planning change nothing
            assert snapshot_tree(*roots) == before_tree
            # 3. consolidate keeps every byte
            run = execute(plan)
            after = contents(*roots)
            removed = {o.target for o in run.outcomes if o.status == "done" and o.method == "delete"}
            cache_bytes = {v[1] for p, v in after.items() if p.startswith(str(m.cache))}
            for path, (_kind, data) in before.items():
                if path in removed:
                    assert not os.path.lexists(path) and data in cache_bytes
                elif data is not None:
                    assert after[path][1] == data, path
            assert outside_state(m) == outside  # 4.
            assert set(leftover_temp_files(roots)) == set(map(str, m.drawn_temp_files))
            # ... and undo gives back the exact tree
            undo(run.run_id) if any(o.status == "done" for o in run.outcomes) else None
            assert_same_tree(before_tree, snapshot_tree(*roots))
            assert contents(*roots) == before
            assert outside_state(m) == outside
    except ModelcacheError:
        pass  # 5. a library error is a clear one-line message, never a traceback
    finally:
        m.cleanup()


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
    m = build(template, Spec(extras=extras))
    cache, models = m.cache, m.models
    try:
        with state(m):
            before = contents(cache, models)
            *_, plan = scan_and_plan(m, mode)
            with fail_at(10_000, errno.EIO) as calls:  # a clean run, to count the calls
                run = execute(plan)
            undo(run.run_id)
            assert contents(cache, models) == before
            total_calls = len(calls)
            assert total_calls > 0
            injected = 0
            for call in range(1, total_calls + 1):
                code = ERRNOS[call % len(ERRNOS)]
                *_, plan = scan_and_plan(m, mode)
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
            assert m.sentinel.read_bytes() == BLOB_A
    finally:
        m.cleanup()

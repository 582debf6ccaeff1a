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

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcache.act.consolidate import execute
from modelcache.act.fsops import leftover_temp_files
from modelcache.act.undo import undo
from modelcache.errors import ModelcacheError
from modelcache.plan import Mode

from .fault_scenarios import Consolidate, consolidate_machine, scan_and_plan, use_state
from .faults import sweep
from .machine import assert_same_tree, expected_figures, snapshot_tree
from .strategies import BLOB_A, Spec, build, contents, examples, outside_state, specs

EXAMPLES = examples(25)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs(perms=False), mode=st.sampled_from(list(Mode)))
def test_random_machines_keep_every_byte(template: Path, spec: Spec, mode: Mode) -> None:
    m = build(template, spec)
    roots = m.roots
    try:
        with use_state(m.state):
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


@pytest.mark.parametrize("mode", [Mode.AUTO, Mode.DELETE, Mode.SYMLINK])
def test_a_fault_at_every_write_loses_nothing(template: Path, mode: Mode) -> None:
    """ENOSPC, EIO, EACCES, EPERM, EXDEV, EROFS injected at each fsops call of a run, in turn, each firing
    (tests/faults.py): after recovery every path reads its old bytes and no temporary file is left; undo
    gives back the exact tree (tests/fault_scenarios.py: `Consolidate`)."""
    m = consolidate_machine(template)
    try:
        swept = sweep(Consolidate(m, mode))
        assert len(swept.faulted) == len(swept.clean.calls) > 0
        assert m.sentinel.read_bytes() == BLOB_A
    finally:
        m.cleanup()

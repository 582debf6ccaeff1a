"""`prune`'s budget arithmetic on random machines, against an independent per-inode computation.

Each example copies the prune template (tests/prune_machine.py, made by the real client through LocalHub)
plus two repos holding the same weights, and draws: when each unit was last used (distinct days, set with
`os.utime`), whether the twins' blobs are one inode (as consolidate leaves them), which repos also have
every blob hard-linked from outside the cache, which are pinned, and the budget (`--max-size` as a share of
the cache, and perhaps `--older-than`). Then, in this process:

1. the plan's exclusive bytes before, and after its removals, equal a walk of the files that counts each
   inode once and only when every name of it is in the cache (`prune_machine.exclusive_bytes`);
2. the removed set is what the rule gives, worked out on the files: least recently used first, a unit goes
   when it is older than the age, or while the size budget does not hold and removing it frees blob bytes;
   pinned units stay; so it is the LRU prefix of the removable units that meets the budget;
3. the plan is unreachable exactly when that prefix (every removable unit) does not meet the budget;
4. carried out, the cache holds what the plan said, `hf cache ls` reads it, no snapshot names a missing blob.

`MODELCACHE_PROPERTY_EXAMPLES` sets the example count (default 10).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from modelcache.act.prune import execute_prune
from modelcache.locations import Location
from modelcache.prune import Budget, plan_prune
from modelcache.scan import scan_locations
from modelcache.testing import LocalHub
from modelcache.testing.builders import client_env as builder_env
from modelcache.testing.builders import download_to_cache, random_bytes

from .conftest import point_client_at
from .fault_scenarios import use_state
from .machine import client_env, keep_client_home
from .prune_machine import DAY, REPOS, REV, broken_links, build_template, exclusive_bytes, fresh, hf_cache_ls, inodes
from .prune_machine import revision_paths as old_revision_paths
from .strategies import examples

TWINS = ("org/twin1", "org/twin2")
TWIN_WEIGHTS = random_bytes(75_000, "prune-twins")
REPO_IDS = (*REPOS, *TWINS)
GROUPS = (*REPO_IDS, "rev-new", "rev-old")  # what a last use is drawn for: each repo, and org/rev's two revisions


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with client_env() as mp, LocalHub() as hub:
        keep_client_home(tmp_path_factory.mktemp("hf_home"), mp)
        point_client_at(hub.url, mp)
        root = build_template(hub, tmp_path_factory.mktemp("prune-prop-template"))
        with builder_env():
            for twin in TWINS:
                hub.add_commit(twin, {"config.json": twin.encode(), "model.safetensors": TWIN_WEIGHTS})
                download_to_cache(hub, twin, root / "cache")
        yield root


def _set(m_cache: Path, repo: str, days: int, now: float, blobs: set[str] | None = None) -> None:
    folder = m_cache / ("models--" + repo.replace("/", "--")) / "blobs"
    for blob in folder.iterdir():
        if blobs is None or blob.name in blobs:
            os.utime(blob, (now - days * DAY, blob.stat().st_mtime))


def _blobs(paths: list[str]) -> set[str]:
    return {os.path.basename(p) for p in paths if "/blobs/" in p}


def _blob_exclusive(cache: Path, without: list[str]) -> int:
    """Exclusive bytes of the blobs alone: what a unit must free to go for a size budget (not only refs)."""
    total = 0
    for size, nlink, paths in inodes(cache).values():
        left = [p for p in paths if not any(p == g or p.startswith(g + os.sep) for g in without)]
        if len(paths) >= nlink and left and any("/blobs/" in p for p in paths):
            total += size
    return total


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    days=st.permutations(range(1, 3 * len(GROUPS), 3)),
    twins_linked=st.booleans(),
    outside=st.sets(st.sampled_from(REPO_IDS), max_size=3),
    pinned=st.sets(st.sampled_from((*REPO_IDS, REV)), max_size=3),
    share=st.one_of(st.floats(0.0, 0.4), st.floats(0.4, 1.05)),
    older_than=st.one_of(st.none(), st.integers(1, 3 * len(GROUPS))),
)
def test_the_budget_arithmetic_on_random_machines(
    template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    days: list[int],
    twins_linked: bool,
    outside: set[str],
    pinned: set[str],
    share: float,
    older_than: int | None,
) -> None:
    now = time.time()
    m = fresh(template, tmp_path_factory.mktemp("prop") / "m", now)
    try:
        age = dict(zip(GROUPS, days, strict=True))
        repo_dir = {r: m.repo(r) for r in (*REPO_IDS, REV)}
        old = m.old_commit()
        revision = old_revision_paths(m.repo(REV), old)
        for repo in REPO_IDS:
            _set(m.cache, repo, age[repo], now)
        _set(m.cache, REV, age["rev-new"], now)
        _set(m.cache, REV, age["rev-old"], now, _blobs(revision))
        if twins_linked:  # one inode, two names in the cache (as consolidate leaves them)
            one, two = (next(repo_dir[t].glob("snapshots/*/model.safetensors")).resolve() for t in TWINS)
            os.link(one, two.with_suffix(".tmp"))
            os.replace(two.with_suffix(".tmp"), two)
        for repo in outside:  # every blob also has a name outside the cache: removing the repo frees none
            for i, blob in enumerate(sorted((repo_dir[repo] / "blobs").iterdir())):
                target = m.models / "outside" / repo.replace("/", "_") / str(i)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    os.link(blob, target)

        # The units, least recently used first: (name, newest atime of its blobs, paths), a revision before its
        # repo, then by name. Read from the files: linked blobs share one atime, whichever was set last.
        def used(blobs: list[Path]) -> float:
            return max((os.lstat(b).st_atime_ns for b in blobs), default=0) / 1e9

        units = [(r, used(list((repo_dir[r] / "blobs").iterdir())), [str(repo_dir[r])]) for r in REPO_IDS]
        own = [Path(p) for p in revision if "/blobs/" in p]
        units += [
            ("rev-old", used(own), revision),
            (REV, used(list((m.repo(REV) / "blobs").iterdir())), [str(m.repo(REV))]),
        ]
        units.sort(key=lambda u: (u[1], u[0] != "rev-old", REV if u[0] == "rev-old" else u[0]))
        before = exclusive_bytes(m.cache)
        max_size = int(before * share)
        taken: list[str] = []
        expected = []
        for name, last, paths in units:
            if name in pinned or (name == "rev-old" and REV in pinned):
                continue
            need = exclusive_bytes(m.cache, without=taken) > max_size
            frees = _blob_exclusive(m.cache, taken) > _blob_exclusive(m.cache, taken + paths)
            if (older_than is not None and last < now - older_than * DAY) or (need and frees):
                taken += paths
                expected.append(paths[0])
        reachable = exclusive_bytes(m.cache, without=taken) <= max_size

        with use_state(m.state):
            inventory = scan_locations(Location(str(m.cache), "--cache-dir"), [], [])
            budget = Budget(max_size=max_size, older_than=None if older_than is None else older_than * DAY)
            plan = plan_prune(inventory, str(m.cache), budget, keep=[(p, "--keep") for p in pinned], now=now,
                              open_now=set())  # fmt: skip
        assert plan.exclusive_before == before
        removed = [d.unit.path for d in plan.removals]
        assert removed == expected, [(d.unit.label, d.last_used, d.reason) for d in plan.decisions]
        assert plan.exclusive_after == exclusive_bytes(m.cache, without=taken)
        assert (plan.unreachable is None) == reachable, plan.unreachable
        event("unreachable" if plan.unreachable else f"{min(len(removed), 3)}{'+' if len(removed) > 2 else ''} removed")
        event("a unit kept for freeing nothing" if any(d.reason.startswith("frees") for d in plan.decisions) else "-")
        if plan.unreachable is None and removed:
            with use_state(m.state):
                result = execute_prune(plan)
            assert [o.status for o in result.outcomes] == ["done"] * len(removed), [o.reason for o in result.outcomes]
            assert exclusive_bytes(m.cache) == plan.exclusive_after <= max_size
            assert broken_links(m.cache) == [] and hf_cache_ls(m.cache)[1] == []
    finally:
        shutil.rmtree(m.root)

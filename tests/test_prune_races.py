"""`modelcache prune` and the world changing around it, on caches the real client made through LocalHub.

1. Between the plan and the removal: prune run on a terminal without --yes plans, prints its table and asks;
   while it waits for the answer, the unit it means to remove (org/a) is read by a program, located through
   `modelcache path`, given a new revision or a new file by huggingface_hub, locked by a download starting,
   memory-mapped by a server, or has a blob replaced. Then the answer is yes: that unit is left alone exactly
   as it is then, and said so (skipped, with the reason; exit 1, as the README's exit codes say), while the run
   goes on with the next unit (org/rev's detached revision). Each case is caught by one check of
   `act/guards.py still_prunable` (the lock: by `act/prune.py` holding the unit's download locks), and each
   test fails with that check removed.
2. After a removal: huggingface_hub downloads the removed repos again; the cache is consistent (the client's
   own scan sees no warning, no link is broken, `modelcache verify` finds nothing wrong), and `modelcache undo`
   of the prune leaves what the client downloaded as it is (the same inodes, times and refs): it brings back
   only the revisions missing, and a ref the client moved keeps the client's commit.

As root, and as user nobody on a machine of nobody's (a lock file, a download and the state folder are
then nobody's; the checks read the same).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from modelcache.testing import LocalHub
from modelcache.testing.builders import random_bytes

from .machine import HOLD_LOCKS, as_unprivileged, helper, snapshot_tree
from .prune_machine import (
    DAY,
    MAP_AND_CLOSE,
    REV,
    PruneMachine,
    blob_of,
    broken_links,
    build_template,
    client_download,
    folder,
    fresh,
    hf_cache_ls,
    prune_answered,
    quiet_contents,
    weights,
)

# org/a (90 days) goes first, then org/rev's detached revision (60 days); every other repo is pinned.
ARGS = ("--older-than", "55d", "--keep", "org/[!ar]*")
USERS = pytest.mark.parametrize("unprivileged", [False, True], ids=["root", "nobody"])


@pytest.fixture(scope="module")
def template(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_template(hub, tmp_path_factory.mktemp("prune-template"))


def machine(template: Path, tmp_path: Path, shared_tmp: Path, unprivileged: bool) -> tuple[PruneMachine, str | None]:
    """A fresh machine (of nobody's, where nobody can reach it, when `unprivileged`) and the user to run as."""
    m = fresh(template, (shared_tmp if unprivileged else tmp_path) / "m")
    return m, as_unprivileged(m) if unprivileged else None


# -- 1. a change between the plan and the removal -------------------------------------------------------------
#
# Each change is made to org/a while prune waits for its answer; it returns the reason prune must give.
Change = Callable[[PruneMachine, str | None, LocalHub, ExitStack], str]


def read_by_a_program(m: PruneMachine, user: str | None, hub: LocalHub, held: ExitStack) -> str:
    """A program loads the model: its weights are read through the snapshot (a plain read: the atime moves)."""
    snapshot = next((m.repo("org/a") / "snapshots").iterdir())
    assert (snapshot / "model.safetensors").read_bytes() == weights("org/a")
    return "used since the plan was made"


def located_through_modelcache(m: PruneMachine, user: str | None, hub: LocalHub, held: ExitStack) -> str:
    """`modelcache path` reads no model file (no atime moves) but records a use (uses.py)."""
    assert m.cli("path", "org/a", "--cache-dir", m.cache, user=user).code == 0
    return "located through modelcache since the plan was made"


def new_revision_downloaded(m: PruneMachine, user: str | None, hub: LocalHub, held: ExitStack) -> str:
    """huggingface_hub downloads another commit of the repo, by its hash (no ref moves): the repo holds a
    revision the plan never saw."""
    commit = hub.add_commit("org/a", {"config.json": b'{"v": 2}', "model.safetensors": weights("org/a")[::-1]},
                            branch=f"race-{uuid.uuid4().hex[:8]}")  # fmt: skip
    client_download(m, "org/a", commit, user)
    return "a revision the plan did not see was downloaded into it since"


def weights_only(m: PruneMachine, user: str | None, hub: LocalHub) -> None:
    """(Before the plan.) org/a downloaded in part, as a program that loads only the weights fetches it
    (`allow_patterns`), last used 90 days ago."""
    shutil.rmtree(m.repo("org/a"))
    client_download(m, "org/a", "main", user, "*.safetensors")
    for blob in (m.repo("org/a") / "blobs").iterdir():
        os.utime(blob, (time.time() - 90 * DAY, blob.stat().st_mtime))


def new_file_downloaded(m: PruneMachine, user: str | None, hub: LocalHub, held: ExitStack) -> str:
    """huggingface_hub downloads another file of the revision the cache holds in part: a new link in its snapshot."""
    client_download(m, "org/a", "main", user, "config.json")
    return "a file the plan did not see was downloaded into it since: config.json"


def download_lock_held(m: PruneMachine, user: str | None, hub: LocalHub, held: ExitStack) -> str:
    """A download of a new file of the repo starts: huggingface_hub holds `.locks/<repo>/<etag>.lock` (filelock),
    a lock file that was not there when the plan was made."""
    etag = hashlib.sha256(b"a file of org/a the plan never saw").hexdigest()
    held.enter_context(helper(HOLD_LOCKS, m.cache / ".locks" / folder("org/a") / f"{etag}.lock", user=user))
    return "being downloaded: a lock of its download is held"


def mapped_by_a_server(m: PruneMachine, user: str | None, hub: LocalHub, held: ExitStack) -> str:
    """A server maps the weights and closes the file (safetensors' way): only /proc/<pid>/maps shows it. The
    mapping moves the access time: put back, so that only the mapping tells."""
    blob = blob_of(m, "org/a")
    st = blob.stat()
    held.enter_context(helper(MAP_AND_CLOSE, blob, user=user))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    return "in use: a live process has blobs/"


def blob_replaced(m: PruneMachine, user: str | None, hub: LocalHub, held: ExitStack) -> str:
    """A blob replaced as huggingface_hub's `force_download` replaces one (a new file renamed over it), its times
    then put back as they were (as `cp -p` or `rsync -a` would): only its inode tells."""
    blob = blob_of(m, "org/a")
    st = blob.stat()
    new = blob.with_name(blob.name + ".incomplete")
    new.write_bytes(weights("org/a"))
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    if user is not None:
        os.chown(new, int(user), int(user))
    os.replace(new, blob)
    return f"blobs/{blob.name} was replaced or written since the plan was made"


# What the machine is before the plan, where a change needs it (the template, elsewhere).
PREPARE: dict[str, Callable[[PruneMachine, str | None, LocalHub], None]] = {"new-file": weights_only}
CHANGES: dict[str, Change] = {
    "read": read_by_a_program,
    "located": located_through_modelcache,
    "new-revision": new_revision_downloaded,
    "new-file": new_file_downloaded,
    "download-lock": download_lock_held,
    "mapped": mapped_by_a_server,
    "blob-replaced": blob_replaced,
}


@USERS
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_unit_changed_after_the_plan_is_left_alone_and_the_run_goes_on(
    template: Path, tmp_path: Path, shared_tmp: Path, hub: LocalHub, change: str, unprivileged: bool
) -> None:
    m, user = machine(template, tmp_path, shared_tmp, unprivileged)
    if change in PREPARE:
        PREPARE[change](m, user, hub)
    repo, old_revision = m.repo("org/a"), m.repo(REV) / "snapshots" / m.old_commit()
    after: dict[str, tuple[str, bytes | None]] = {}
    why: list[str] = []
    with ExitStack() as held:

        def meanwhile() -> None:
            why.append(CHANGES[change](m, user, hub, held))
            after.update(quiet_contents(repo))  # read with O_NOATIME: as the change left it

        run = prune_answered(m, *ARGS, meanwhile=meanwhile, user=user)
    table = run.out[: run.out.index("[y/N]")]
    going = [row.split()[1] for row in table.splitlines() if " remove " in row]
    assert going == ["org/a", f"{REV}@{m.old_commit()[:12]}"], table  # the plan: both go
    assert run.code == 1, run.out  # done, with warnings: a planned change skipped (README, exit codes)
    assert f"skipped: {repo}: " in run.out and why[0] in run.out, run.out
    assert quiet_contents(repo) == after  # left alone: every entry as the change left it
    assert not old_revision.exists()  # the run went on with the next unit
    records = [r for records in m.journals() for r in records]
    assert not [r for r in records if r.get("target") == str(repo)], records  # nothing journaled for it
    assert str(old_revision) in [r.get("target") for r in records if r.get("type") == "begin"]
    ids, warnings = hf_cache_ls(m.cache)
    assert "org/a" in ids and warnings == [] and broken_links(m.cache) == []


def test_what_the_scan_does_not_count_as_part_of_a_revision_is_no_change(template: Path, tmp_path: Path) -> None:
    """The last checks read the snapshots as the plan's scan does: a file in snapshots/ is no revision, and
    neither it nor an unchanged unit's entries stop it from going."""
    m = fresh(template, tmp_path / "m")
    (m.repo("org/a") / "snapshots" / "notes.txt").write_text("not a revision")
    run = m.prune(*ARGS, "--yes", "--json")
    assert run.code == 0, run.out + run.err
    assert [o["status"] for o in run.json()["outcomes"]] == ["done", "done"] and not m.repo("org/a").exists()


# -- 2. a download right after a removal, then undo ----------------------------------------------------------


def files_of(tree: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """A `snapshot_tree` without its folders (whose mtimes move when an entry is added)."""
    return {path: entry for path, entry in tree.items() if not stat.S_ISDIR(entry[0])}


@USERS
def test_the_client_downloads_pruned_repos_again_and_undo_leaves_its_downloads_alone(
    template: Path, tmp_path: Path, shared_tmp: Path, hub: LocalHub, unprivileged: bool
) -> None:
    m, user = machine(template, tmp_path, shared_tmp, unprivileged)
    moving = f"org/moving-{'nobody' if unprivileged else 'root'}"  # a repo of this test's own on the module's Hub
    config = b'{"v": 1}'
    v1 = hub.add_commit(moving, {"config.json": config, "model.safetensors": random_bytes(100_000, moving + "1")})
    client_download(m, moving, "main", user)
    for blob in m.repo(moving).glob("blobs/*"):
        os.utime(blob, (time.time() - 100 * DAY, blob.stat().st_mtime))
    run = m.prune("--older-than", "85d", "--keep", "org/[!am]*", "--yes", "--json", user=user)
    assert run.code == 0, run.err
    done = {o["path"] for o in run.json()["outcomes"] if o["status"] == "done"}
    assert done == {str(m.repo("org/a")), str(m.repo(moving))}
    assert not m.repo("org/a").exists() and not m.repo(moving).exists()

    # Right after: the real client downloads both again, org/a at the same commit, `moving` at a new one.
    weights_v2 = random_bytes(100_000, moving + "2")
    v2 = hub.add_commit(moving, {"config.json": config, "model.safetensors": weights_v2})
    for repo in ("org/a", moving):
        client_download(m, repo, "main", user)
    assert (m.repo(moving) / "refs" / "main").read_text() == v2
    assert (m.repo("org/a") / "snapshots").is_dir() and blob_of(m, "org/a").read_bytes() == weights("org/a")
    consistent(m, {"org/a", moving}, user)

    downloaded = files_of(snapshot_tree(m.repo("org/a"), m.repo(moving)))
    undo = m.cli("undo", "--json", user=user)
    assert undo.code == 0, undo.err
    assert [o["status"] for o in undo.json()["outcomes"]] == ["done", "done"]
    after = files_of(snapshot_tree(m.repo("org/a"), m.repo(moving)))
    # What the client downloaded is untouched: the same inodes, sizes, mtimes, link targets and modes; refs/main
    # keeps the client's commit. Undo added only the revision no longer there (v1, detached now), and its file list.
    assert {p: after.get(p) for p in downloaded} == downloaded
    added = sorted(os.path.relpath(p, m.repo(moving)) for p in set(after) - set(downloaded))
    assert added == [f"blobs/{hub.file(moving, 'model.safetensors', v1).etag}", f"snapshots/{v1}/config.json",
                     f"snapshots/{v1}/model.safetensors", f"trees/{v1}.json"], added  # fmt: skip
    assert (m.repo(moving) / "refs" / "main").read_text() == v2
    assert (m.repo(moving) / "snapshots" / v1 / "model.safetensors").read_bytes() == random_bytes(100_000, moving + "1")
    consistent(m, {"org/a", moving}, user)


def consistent(m: PruneMachine, repos: set[str], user: str | None) -> None:
    """huggingface_hub's own scan sees `repos` without a warning, no link is broken, and `modelcache verify` of
    the whole cache finds every file as its name says."""
    ids, warnings = hf_cache_ls(m.cache)
    assert repos <= ids and warnings == [] and broken_links(m.cache) == []
    verify = m.cli("verify", "--all", *m.roots(), "--no-discover", "--json", user=user)
    assert verify.code == 0, verify.out + verify.err

"""The optimisations of issue 7 keep results exact.

- the partial-hash stage (first and last block) only splits groups: files that differ anywhere,
  the middle included, are never reported as one group, and identical files always are;
- the digest index is trusted only for the same inode with the same size and mtime: a change of
  any of the three makes the file be hashed again;
- results with a cold index, a warm index and no index are identical;
- consolidate's read-ahead: a reading made by the pool counts only while both copies are the
  same inode, size, mtime and ctime; otherwise the action reads them again itself.

No test here asserts a time.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcache import digests, duplicates
from modelcache.act import consolidate, guards
from modelcache.act.undo import undo
from modelcache.digests import DigestIndex, edge_fingerprint, hash_file
from modelcache.duplicates import DuplicateResult, find_duplicates
from modelcache.inventory import Digest, FileFacts
from modelcache.plan import Action, Mode, Plan, fs_types_of, plan_consolidate
from modelcache.scan import scan
from modelcache.testing import LocalHub
from modelcache.testing.builders import download_to_cache, download_to_local_dir, random_bytes, write_tree


def analyze(cache: Path, models: Path, index: DigestIndex | None = None) -> DuplicateResult:
    inventory = scan(cache_dir=cache, models=[str(models)])
    return find_duplicates(inventory.records, index)


def groups(result: DuplicateResult) -> set[tuple[str, int, tuple[str, ...]]]:
    return {(str(g.digest), g.size, g.paths) for g in result.groups}


def expected_groups(*roots: Path) -> set[frozenset[str]]:
    """Groups of identical content among the model files under `roots`, by reading every byte.

    Model files: cache blobs and everything else outside huggingface_hub's bookkeeping folders.
    """
    by_digest: dict[bytes, set[str]] = {}
    walks = [os.walk(root) for root in roots]
    for dirpath, dirnames, names in (step for w in walks for step in w):
        dirnames[:] = [d for d in dirnames if d not in (".cache", ".locks", "refs", "trees", "snapshots")]
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or os.path.getsize(path) == 0 or name == "CACHEDIR.TAG":
                continue
            with open(path, "rb") as f:
                by_digest.setdefault(hashlib.sha256(f.read()).digest(), set()).add(path)
    return {frozenset(paths) for paths in by_digest.values() if len(paths) > 1}


# -- partial hashes never merge different files ------------------------------------------------------------


@pytest.fixture
def small_fingerprint_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send small files through the partial-hash stage, so that hypothesis can try many of them."""
    monkeypatch.setattr(duplicates, "FINGERPRINT_MIN_SIZE", 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.integers(min_value=1, max_value=300_000),
    data=st.data(),
)
def test_partial_hash_never_merges_files_that_differ_anywhere(
    small_fingerprint_threshold: None, size: int, data: st.DataObject
) -> None:
    """Same size, same first and last 64 KiB (when the file has them), bytes apart anywhere else."""
    base = random_bytes(size, f"base-{size}")
    positions = data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=4, unique=True), label="flipped")
    other = bytearray(base)
    for p in positions:
        other[p] ^= 0xFF
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp, "models")
        write_tree(models / "a", {"w.bin": base})
        write_tree(models / "b", {"w.bin": bytes(other), "copy.bin": base})
        write_tree(models / "c", {"w.bin": bytes(other)})
        result = analyze(Path(tmp, "no-cache"), models)
        found = {frozenset(g.paths) for g in result.groups}
        assert found == expected_groups(models)
        assert found == {
            frozenset({str(models / "a" / "w.bin"), str(models / "b" / "copy.bin")}),
            frozenset({str(models / "b" / "w.bin"), str(models / "c" / "w.bin")}),
        }


def test_files_alike_at_both_ends_differ_in_the_middle(tmp_path: Path) -> None:
    """At the real threshold: a large file, a copy, and a lookalike whose middle byte differs."""
    size = duplicates.FINGERPRINT_MIN_SIZE + 12_345
    base = random_bytes(size, "big")
    middle = bytearray(base)
    middle[size // 2] ^= 1
    models = tmp_path / "models"
    write_tree(models / "a", {"model.safetensors": base})
    write_tree(models / "b", {"model.safetensors": base, "lookalike.safetensors": bytes(middle)})
    paths = ("a/model.safetensors", "b/model.safetensors", "b/lookalike.safetensors")
    a, b, lookalike = (str(models / p) for p in paths)
    assert edge_fingerprint(a, size) == edge_fingerprint(lookalike, size)  # the partial hash cannot tell them apart
    result = analyze(tmp_path / "no-cache", models)
    assert [g.paths for g in result.groups] == [(a, b)]
    assert result.groups[0].digest.hexdigest == hashlib.sha256(base).hexdigest()


def test_partial_hash_splits_without_reading_whole_files(tmp_path: Path) -> None:
    """Same size, different ends: the fingerprint settles it and no file is hashed in full."""
    size = duplicates.FINGERPRINT_MIN_SIZE + 1
    models = tmp_path / "models"
    write_tree(models / "a", {"x.bin": random_bytes(size, "x")})
    write_tree(models / "b", {"y.bin": random_bytes(size, "y")})
    result = analyze(tmp_path / "no-cache", models)
    assert result.groups == () and result.files_hashed == 0


def test_a_file_known_to_the_index_still_meets_its_unknown_twin(tmp_path: Path) -> None:
    """The partial-hash stage runs over known and unknown members alike."""
    size = duplicates.FINGERPRINT_MIN_SIZE + 7
    content = random_bytes(size, "twin")
    models = tmp_path / "models"
    write_tree(models / "a", {"w.bin": content, "copy.bin": content, "other.bin": random_bytes(size, "other")})
    index = DigestIndex(tmp_path / "index.sqlite")
    first = analyze(tmp_path / "no-cache", models, index)
    assert first.files_hashed == 2  # the two copies; other.bin was told apart by its ends
    write_tree(models / "b", {"w.bin": content})  # a new copy of an indexed file
    second = analyze(tmp_path / "no-cache", models, index)
    assert [g.paths for g in second.groups] == [tuple(str(models / p) for p in ("a/copy.bin", "a/w.bin", "b/w.bin"))]
    assert second.files_hashed == 1  # only the new copy
    index.close()


# -- claims only keep files apart ----------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hub"


@pytest.fixture
def models(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


def test_same_size_files_named_apart_are_not_read(local_hub: LocalHub, cache: Path, models: Path) -> None:
    """Blob names differ: the files cannot be equal (unless one is corrupt) and nothing is read."""
    for name in ("a", "b", "c"):
        local_hub.add_commit(f"org/{name}", {"model.safetensors": random_bytes(300_000, name), "c.json": name.encode()})
        download_to_cache(local_hub, f"org/{name}", cache)
    result = analyze(cache, models)
    assert result.groups == () and result.files_hashed == 0


def test_lfs_and_git_names_of_the_same_bytes_are_compared(local_hub: LocalHub, cache: Path, models: Path) -> None:
    """One repo keeps a file in LFS (blob named by sha256), another in git (named by git sha1): same bytes."""
    content = random_bytes(50_000, "shared-tokenizer")
    local_hub.add_commit("org/lfs", {"tokenizer.json": content}, lfs=True)
    local_hub.add_commit("org/git", {"tokenizer.json": content}, lfs=False)
    local_hub.add_commit("org/git2", {"tokenizer.json": random_bytes(50_000, "other")}, lfs=False)
    for repo in ("org/lfs", "org/git", "org/git2"):
        download_to_cache(local_hub, repo, cache)
    names = sorted(p.name for p in cache.glob("models--org--*/blobs/*"))
    assert sorted(len(n) for n in names) == [40, 40, 64]
    result = analyze(cache, models)
    assert len(result.groups) == 1 and result.groups[0].inodes == 2
    assert {Path(p).parent.parent.name for p in result.groups[0].paths} == {"models--org--lfs", "models--org--git"}
    assert result.files_hashed == 2  # the lone sha256-named blob is read once; then the git blob that matches it


def test_a_plain_copy_is_read_and_then_only_the_blob_it_matches(local_hub: LocalHub, cache: Path, models: Path) -> None:
    contents = {name: random_bytes(200_000, name) for name in "abcd"}
    for name, content in contents.items():
        local_hub.add_commit(f"org/{name}", {"model.safetensors": content})
        download_to_cache(local_hub, f"org/{name}", cache)
    write_tree(models / "plain", {"renamed.bin": contents["c"]})
    result = analyze(cache, models)
    assert [(g.inodes, g.digest.hexdigest) for g in result.groups] == [(2, hashlib.sha256(contents["c"]).hexdigest())]
    assert result.files_hashed == 2


def test_a_corrupt_blob_is_never_grouped_with_the_copy_of_its_name(
    local_hub: LocalHub, cache: Path, models: Path
) -> None:
    content = random_bytes(100_000, "good")
    local_hub.add_commit("org/a", {"model.safetensors": content})
    download_to_cache(local_hub, "org/a", cache)
    download_to_local_dir(local_hub, "org/a", models / "a", cache)
    (blob,) = cache.glob("models--org--a/blobs/*")
    st = os.stat(blob)
    with open(blob, "r+b") as f:  # bit rot: the bytes change, the name and the mtime do not
        f.seek(50_000)
        f.write(b"\xff")
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    result = analyze(cache, models)
    assert result.groups == ()
    assert [w.path for w in result.warnings] == [str(blob)]
    assert "does not match its claimed digest" in result.warnings[0].message


@settings(max_examples=40, deadline=None)
@given(
    files=st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(["none", "sha256", "gitsha1", "wrong-sha256", "wrong-gitsha1"])),
        min_size=2,
        max_size=9,
    ),
    known=st.sets(st.integers(0, 8), max_size=3),
)
def test_claims_right_or_wrong_never_merge_different_files(files: list[tuple[int, str]], known: set[int]) -> None:
    """Same-size files from a pool of four contents, each with a claim that may be missing or false.

    Sound: every group holds identical bytes. Complete where claims are right: files whose claims
    are all true (or absent) are grouped with every identical file whose claims are true too.
    """
    from modelcache.inventory import Digest, FileRecord, Role
    from modelcache.store_kind import StoreKind
    from modelcache.testing import git_blob_sha1

    pool = [random_bytes(5000, f"pool-{i}") for i in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        records = []
        for i, (which, claim) in enumerate(files):
            path = Path(tmp, f"f{i}")
            path.write_bytes(pool[which])
            content = pool[which] if not claim.startswith("wrong") else pool[(which + 1) % 4]
            claimed = {
                "none": None,
                "sha256": Digest("sha256", hashlib.sha256(content).hexdigest()),
                "gitsha1": Digest("gitsha1", git_blob_sha1(content)),
            }.get(claim.removeprefix("wrong-"))
            facts = FileFacts.from_stat(os.lstat(path))
            records.append(FileRecord(str(path), StoreKind.PLAIN, Role.MODEL, tmp, path.name, facts, claimed))
        index = DigestIndex(Path(tmp, "index.sqlite"))
        seeded = [r for i, r in enumerate(records) if i in known]
        for r in seeded:  # some files already proven by an earlier run
            index.record(r.facts, hash_file(r.path, r.facts.size).sha256)
        index.flush()
        result = find_duplicates(records, index)
        index.close()
        for g in result.groups:
            assert len({Path(p).read_bytes() for p in g.paths}) == 1
            assert g.digest.hexdigest == hashlib.sha256(Path(g.paths[0]).read_bytes()).hexdigest()
        grouped = {p: i for i, g in enumerate(result.groups) for p in g.paths}
        honest = [(str(Path(tmp, f"f{i}")), which) for i, (which, claim) in enumerate(files) if "wrong" not in claim]
        for a, wa in honest:
            for b, wb in honest:
                if a < b and wa == wb:
                    assert a in grouped and grouped.get(a) == grouped.get(b), (a, b)


# -- the digest index is invalidated by size, mtime or inode ---------------------------------------------


def facts(path: Path) -> FileFacts:
    return FileFacts.from_stat(os.lstat(path))


def test_index_entry_is_keyed_by_inode_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    f = facts(path)
    index = DigestIndex(tmp_path / "index.sqlite")
    index.record(f, "a" * 64)
    assert index.lookup(f) is None  # lookups answer what earlier runs recorded
    index.close()
    changed = {
        "size": FileFacts(f.dev, f.ino, f.size + 1, f.mtime_ns, f.nlink),
        "mtime": FileFacts(f.dev, f.ino, f.size, f.mtime_ns + 1, f.nlink),
        "inode": FileFacts(f.dev, f.ino + 1, f.size, f.mtime_ns, f.nlink),
        "device": FileFacts(f.dev + 1, f.ino, f.size, f.mtime_ns, f.nlink),
    }
    reopened = DigestIndex(tmp_path / "index.sqlite")
    reopened.load([f, *changed.values()])
    assert reopened.lookup(f) == Digest("sha256", "a" * 64)
    for what, other in changed.items():
        assert reopened.lookup(other) is None, what
    reopened.close()


def test_a_long_run_writes_its_digests_as_it_goes(tmp_path: Path) -> None:
    """Digests reach the index every WRITE_ROWS, not only at the end: a stopped run keeps them."""
    path = tmp_path / "index.sqlite"
    index = DigestIndex(path)
    rows = digests.WRITE_ROWS + 5
    for i in range(rows):
        index.record(FileFacts(1, i, 10, 20, 1), f"{i:064x}")

    def written() -> int:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT count(*) FROM digests").fetchone()[0])

    assert written() == digests.WRITE_ROWS  # as if the process were killed here
    index.close()
    assert written() == rows


@pytest.mark.parametrize("size", [5000, duplicates.FINGERPRINT_MIN_SIZE + 3], ids=["small", "large"])
@pytest.mark.parametrize("change", ["size", "mtime", "inode"])
def test_changed_file_is_hashed_again(tmp_path: Path, size: int, change: str) -> None:
    """After a change the old digest is never used, even when every other fact still matches.

    a and b start identical; b then changes to the bytes of c. Trusting b's old digest would
    report (a, b); the truth is (b, c).
    """
    content = random_bytes(size, f"pair-{size}")
    if change == "size":
        new = content + b"\0"
    else:
        flipped = bytearray(content)
        flipped[size // 2] ^= 0xFF  # the ends stay: only a full hash can tell
        new = bytes(flipped)
    models = tmp_path / "models"
    write_tree(models / "a", {"w.bin": content})
    write_tree(models / "b", {"w.bin": content})
    write_tree(models / "c", {"w.bin": new})
    a, b, c = (str(models / x / "w.bin") for x in "abc")
    index = DigestIndex(tmp_path / "index.sqlite")
    cold = analyze(tmp_path / "no-cache", models, index)
    assert [g.paths for g in cold.groups] == [(a, b)]
    path = Path(b)
    before = os.stat(path)
    if change == "size":
        path.write_bytes(new)  # same inode, one byte longer, old mtime put back
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    elif change == "mtime":
        with open(path, "r+b") as f:  # same inode, same size, new bytes and a new mtime
            f.write(new)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000))
    else:
        replacement = path.with_name("new")
        replacement.write_bytes(new)  # a new inode, moved over the old one, old mtime put back
        os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.link(path, tmp_path / "old-inode")  # keeps the old inode number from being reused
        os.replace(replacement, path)
    after = os.stat(path)
    assert (after.st_ino != before.st_ino) == (change == "inode")
    assert (after.st_size != before.st_size) == (change == "size")
    assert (after.st_mtime_ns != before.st_mtime_ns) == (change == "mtime")
    warm = analyze(tmp_path / "no-cache", models, index)
    assert [g.paths for g in warm.groups] == [(b, c)]
    # b is hashed again; so is c when it had no partner of its size before
    assert warm.files_hashed == (2 if change == "size" else 1)
    assert groups(warm) == groups(analyze(tmp_path / "no-cache", models))  # no index: the same answer
    index.close()


def test_unchanged_files_are_not_read_again(tmp_path: Path) -> None:
    content = random_bytes(duplicates.FINGERPRINT_MIN_SIZE + 3, "unchanged")
    models = tmp_path / "models"
    write_tree(models / "a", {"w.bin": content})
    write_tree(models / "b", {"w.bin": content})
    index = DigestIndex(tmp_path / "index.sqlite")
    cold = analyze(tmp_path / "no-cache", models, index)
    warm = analyze(tmp_path / "no-cache", models, index)
    assert cold.files_hashed == 2 and warm.files_hashed == 0 and warm.bytes_hashed == 0
    assert groups(cold) == groups(warm)
    index.close()


# -- cold and warm index: identical results --------------------------------------------------------------


def test_cold_warm_and_no_index_give_identical_results(local_hub: LocalHub, tmp_path: Path) -> None:
    """A machine built with the real client: cache, local_dir copies, lookalikes, small and large files."""
    cache, models = tmp_path / "hub", tmp_path / "models"
    big = duplicates.FINGERPRINT_MIN_SIZE + 4096
    header = random_bytes(32_768, "header")  # same header, other weights: edges alike at the start only
    repos = {
        "org/a": {
            "config.json": b'{"a": 1}',
            "model.safetensors": header + random_bytes(big - len(header), "a"),
            "tokenizer.json": random_bytes(20_000, "tok"),
        },
        "org/b": {
            "config.json": b'{"b": 1}',
            "model.safetensors": header + random_bytes(big - len(header), "b"),
            "tokenizer.json": random_bytes(20_000, "tok"),
        },
        "org/c": {"weights.bin": random_bytes(300_000, "c"), "small.txt": b"same size!"},
    }
    for repo_id, files in repos.items():
        local_hub.add_commit(repo_id, files)
        download_to_cache(local_hub, repo_id, cache)
    download_to_local_dir(local_hub, "org/a", models / "a", cache)
    download_to_local_dir(local_hub, "org/c", models / "c", cache)
    write_tree(models / "plain", {"renamed.bin": repos["org/c"]["weights.bin"], "other.txt": b"other size"})

    index = DigestIndex(tmp_path / "index.sqlite")
    cold = analyze(cache, models, index)
    warm = analyze(cache, models, index)
    index.close()
    reopened = DigestIndex(tmp_path / "index.sqlite")
    warm_from_disk = analyze(cache, models, reopened)
    reopened.close()
    none = analyze(cache, models)

    assert cold.groups == warm.groups == warm_from_disk.groups == none.groups
    assert cold.warnings == warm.warnings == none.warnings == ()
    assert cold.files_hashed > 0 and warm.files_hashed == 0 and warm_from_disk.files_hashed == 0
    assert all(g.proven for g in warm.groups)
    found = {frozenset(os.path.realpath(p) for p in g.paths) for g in cold.groups}
    assert found == expected_groups(cache, models)
    for g in cold.groups:
        assert g.digest.hexdigest == hash_file(g.paths[0], g.size).sha256


# -- consolidate's read-ahead: a reading made early counts only while nothing changed -------------------------


def read_ahead_plan(local_hub: LocalHub, cache: Path, models: Path, monkeypatch: pytest.MonkeyPatch) -> Plan:
    """Three repos, each in the cache and as a local_dir copy: a hard-link plan of three actions."""
    monkeypatch.setenv("MODELCACHE_STATE", str(cache.parent / "state"))
    for name in "abc":
        local_hub.add_commit(f"org/{name}", {"model.safetensors": random_bytes(3_000_000, f"ahead-{name}")})
        download_to_cache(local_hub, f"org/{name}", cache)
        download_to_local_dir(local_hub, f"org/{name}", models / name, cache)
    inventory = scan(cache_dir=cache, models=[str(models)])
    groups = find_duplicates(inventory.records).groups
    plan = plan_consolidate(inventory, groups, Mode.HARDLINK, fs_types_of({r.facts.dev for r in inventory.records}))
    assert [a.kind for a in plan.actions] == ["link"] * 3
    return plan


def flip_a_byte_keeping_the_mtime(path: str) -> None:
    """What bit rot, or a tool that puts the mtime back, leaves: other bytes, same inode, size and mtime."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(2_000_000)
        byte = f.read(1)
        f.seek(2_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("side", ["target", "keep"])
def test_a_copy_changed_after_it_was_read_ahead_is_read_again(
    local_hub: LocalHub, cache: Path, models: Path, monkeypatch: pytest.MonkeyPatch, side: str
) -> None:
    """The pool read an action's copies; then one of them changes (same inode, size and mtime) before the
    action's turn. The early reading must not count: the copies are read again and the action is skipped."""
    plan = read_ahead_plan(local_hub, cache, models, monkeypatch)
    victim = plan.actions[1]
    path = getattr(victim, side).path
    take = guards.ReadAhead.take
    seen: list[guards.Reading | None] = []

    def take_then_change(self: guards.ReadAhead, action: Action) -> guards.Reading | None:
        reading = take(self, action)  # waits for the pool to finish reading this action
        if action.id == victim.id:
            seen.append(reading)
            flip_a_byte_keeping_the_mtime(path)
        return reading

    monkeypatch.setattr(guards.ReadAhead, "take", take_then_change)
    before = {a.target.path: Path(a.target.path).read_bytes() for a in plan.actions}
    result = consolidate.execute(plan)
    assert seen and seen[0] is not None and seen[0].same  # the early reading found equal bytes
    status = {o.action_id: (o.status, o.reason or "") for o in result.outcomes}
    assert status[victim.id][0] == "skipped"
    assert ("differs" if side == "target" else "no longer matches") in status[victim.id][1]
    assert [status[a.id][0] for a in plan.actions if a is not victim] == ["done", "done"]
    for target, data in before.items():
        if target != path:
            assert Path(target).read_bytes() == data
    assert os.stat(victim.target.path).st_ino != os.stat(victim.keep.path).st_ino  # nothing linked to it


def test_read_ahead_and_reading_in_turn_give_the_same_results(
    local_hub: LocalHub, cache: Path, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no reader in the pool every action reads its copies itself: same outcomes, same bytes verified."""
    plan = read_ahead_plan(local_hub, cache, models, monkeypatch)
    readings: list[bool] = []
    take = guards.ReadAhead.take

    def counting_take(self: guards.ReadAhead, action: Action) -> guards.Reading | None:
        reading = take(self, action)
        readings.append(guards.current(reading, action))
        return reading

    monkeypatch.setattr(guards.ReadAhead, "take", counting_take)
    first = consolidate.execute(plan)
    assert readings == [True, True, True]  # each action used what the pool read
    undo(first.run_id)  # the copies are back, as new inodes: plan again
    inventory = scan(cache_dir=cache, models=[str(models)])
    groups = find_duplicates(inventory.records).groups
    again = plan_consolidate(inventory, groups, Mode.HARDLINK, fs_types_of({r.facts.dev for r in inventory.records}))
    monkeypatch.setattr(guards.ReadAhead, "take", lambda self, action: None)
    second = consolidate.execute(again)
    assert [(o.target, o.status, o.method) for o in first.outcomes] == [
        (o.target, o.status, o.method) for o in second.outcomes
    ]
    assert [o.status for o in second.outcomes] == ["done"] * 3
    assert first.bytes_verified == second.bytes_verified == 2 * sum(a.target.size for a in plan.actions)


@pytest.mark.parametrize("wanted", [1, 40], ids=["few: matched in SQLite", "many: filtered in a pass"])
def test_index_loads_only_the_wanted_inodes_either_way(tmp_path: Path, wanted: int) -> None:
    path = tmp_path / "index.sqlite"
    index = DigestIndex(path)
    files = [FileFacts(7, i, 100 + i, 10**18 + i, 1) for i in range(60)]
    for f in files:
        index.record(f, hashlib.sha256(b"%d" % f.ino).hexdigest())
    index.close()
    with sqlite3.connect(path) as db:  # damaged rows are never a match (and never an error)
        db.execute("INSERT INTO digests VALUES (7, 1000, 5, 5, 'not hex')")
        db.execute(f"INSERT INTO digests VALUES (7, 1001, 5, 'five', '{'0' * 64}')")
    reopened = DigestIndex(path)
    reopened.load([*files[:wanted], FileFacts(7, 1000, 5, 5, 1), FileFacts(7, 1001, 5, 5, 1)])
    for f in files:
        expected = Digest("sha256", hashlib.sha256(b"%d" % f.ino).hexdigest()) if f.ino < wanted else None
        assert reopened.lookup(f) == expected
    assert reopened.lookup(FileFacts(7, 1000, 5, 5, 1)) is None
    # known(): the same answers, streamed for the items asked about (a changed mtime is no match)
    asked = [*files[:wanted], FileFacts(7, 1000, 5, 5, 1), FileFacts(7, 0, 100, 1, 1)]
    streamed = dict(reopened.known(asked, lambda f: f))
    assert streamed == {f: reopened.lookup(f) for f in files[1:wanted]}
    assert reopened.error is None
    reopened.close()

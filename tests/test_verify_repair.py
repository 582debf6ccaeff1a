"""`verify` names what shares a corrupt file's inode; `verify --repair` gives the file an inode of its own.

The scenario of issue 14: `consolidate --mode hardlink` linked a copy to a cache blob; later a tool
wrote new bytes in place through the copy (huggingface_hub's local_dir update copies a cached file
onto the existing local path with `shutil.copyfile`; `cp` does the same). The blob then holds bytes
its name does not promise, and the copy holds what its tool meant to put there. Each machine is built
with the real client through LocalHub and the CLI in a subprocess. Root ignores the read-only mode
consolidate sets, so the tools write through as root; run as another user, the tests first make the
shared inode writable, as that user would have to.

The repairs run as root and as user `nobody` (owning the machine), and as `nobody` on a cache it may
not write. The last tests call `act.repair.redownload` in-process with a client that misbehaves (it
writes in place, or writes nothing): the repair must then report a failure, never `done`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import constants as hf_constants

from modelcache.act.journal import iter_open_changes
from modelcache.testing import LocalHub
from modelcache.testing.builders import CLIENT_ENV, download_to_cache, download_to_local_dir, random_bytes, write_tree

from .machine import NOBODY, Machine, as_unprivileged, run_cli

V1 = {"config.json": b'{"v": 1}', "model.safetensors": random_bytes(300_000, "links-v1")}
V2 = {"config.json": b'{"v": 2}', "model.safetensors": random_bytes(300_000, "links-v2")}
WEIGHTS = V1["model.safetensors"]
TUNED = random_bytes(300_000, "links-fine-tuned")  # what the user's `cp` puts over a plain copy


@dataclass(frozen=True)
class Links(Machine):
    """A machine whose huggingface_hub home lies inside it (user nobody can use it too)."""

    def env(self) -> dict[str, str]:
        home = self.root / "home"
        return {**super().env(), "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), **CLIENT_ENV}

    def json(self, *args: str, code: int, user: str | None = None) -> dict[str, Any]:
        result = self.cli(*args, *self.roots(), "--json", user=user)
        assert result.code == code, f"{args}: exit {result.code}: {result.err}{result.out}"
        data: dict[str, Any] = result.json()
        return data

    def blob(self, repo: str, content: bytes) -> Path:
        return self.cache / f"models--{repo.replace('/', '--')}" / "blobs" / hashlib.sha256(content).hexdigest()

    def statuses(self) -> dict[tuple[str, str], str]:
        return {(r["store"], r["id"]): r["status"] for r in self.json("list", code=0)["repos"]}


def consolidated(
    hub: LocalHub,
    root: Path,
    *,
    local_dir: bool = True,
    plain: bool = False,
    other: bool = False,
    mode: str = "hardlink",
) -> Links:
    """org/x in the cache, and its copies (a local_dir download, a plain folder, another repo's blob) linked
    to its blobs by `consolidate --mode hardlink` (or `mode`)."""
    m = Links(root)
    hub.add_commit("org/x", V1)
    download_to_cache(hub, "org/x", m.cache)
    if other:
        hub.add_commit("org/y", {"model.safetensors": WEIGHTS})
        download_to_cache(hub, "org/y", m.cache)
    if local_dir:
        download_to_local_dir(hub, "org/x", m.models / "x", m.cache)
    if plain:
        write_tree(m.models / "mine", {"weights.bin": WEIGHTS})
    done = m.cli("consolidate", "--yes", "--mode", mode, *m.roots())
    assert done.code == 0, done.err
    assert m.blob("org/x", WEIGHTS).stat().st_nlink > 1 or mode != "hardlink"
    return m


def writable(path: Path) -> None:
    """Root writes through the read-only mode consolidate set; any other user must lift it first."""
    if os.geteuid() != 0 and not path.is_symlink():
        path.chmod(0o644)


def cp_over(path: Path, data: bytes, tmp: Path) -> None:
    """What `cp new.bin PATH` does: the bytes written in place, through PATH (and a symlink at PATH)."""
    new = tmp / "new.bin"
    new.write_bytes(data)
    writable(path)
    shutil.copyfile(new, path)


def update_local_dir(hub: LocalHub, m: Links) -> Path:
    """A new revision, cached; then `snapshot_download(local_dir=...)` again, as the user's script does:
    huggingface_hub copies the cached file onto the local path, in place. Returns the local file."""
    local = m.models / "x" / "model.safetensors"
    writable(local)
    writable(m.models / "x" / "config.json")
    hub.add_commit("org/x", V2)
    download_to_cache(hub, "org/x", m.cache)
    download_to_local_dir(hub, "org/x", m.models / "x", m.cache)
    assert m.blob("org/x", WEIGHTS).read_bytes() == V2["model.safetensors"]  # the write went through
    return local


def identity(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def cache_is_whole(hub: LocalHub, cache: Path) -> None:
    """Every blob matches its name, every snapshot reads its own revision's bytes, and each snapshot entry
    is still the symlink huggingface_hub made."""
    for blob in cache.glob("*/blobs/*"):
        data = blob.read_bytes()
        if len(blob.name) == 64:
            assert hashlib.sha256(data).hexdigest() == blob.name, blob
        else:
            assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob.name, blob
    for snapshot in cache.glob("*/snapshots/*"):
        repo_id = snapshot.parent.parent.name.removeprefix("models--").replace("--", "/")
        for entry in snapshot.rglob("*"):
            content = hub.file(repo_id, entry.relative_to(snapshot).as_posix(), snapshot.name).content
            assert entry.is_symlink() and entry.read_bytes() == content, entry


def repaired_cleanly(m: Links, hub: LocalHub, result: dict[str, Any], blobs: Mapping[Path, list[Path]]) -> None:
    """`verify --repair` did each blob, which now has an inode of its own, and the journal names its links."""
    assert {o["path"]: o["status"] for o in result["repair"]["outcomes"]} == {str(b): "done" for b in blobs}
    cache_is_whole(hub, m.cache)
    for blob, links in blobs.items():
        assert all(blob.stat().st_ino != link.stat().st_ino for link in links)
    begins = {r["target"]: r for r in m.journals()[-1] if r.get("type") == "begin"}
    assert {b: sorted(begins[str(b)]["hard_links"]) for b in blobs} == {
        b: sorted(map(str, ls)) for b, ls in blobs.items()
    }
    again = m.json("verify", "--all", code=0)
    assert again["corrupt"] == [] and "corrupt" not in m.statuses().values()


@pytest.mark.parametrize("user", [None, "nobody"])
def test_a_local_dir_update_through_a_hard_link_is_named_and_repaired(
    local_hub: LocalHub, shared_tmp: Path, user: str | None
) -> None:
    m = consolidated(local_hub, shared_tmp / "m")
    local = update_local_dir(local_hub, m)
    blob = m.blob("org/x", WEIGHTS)

    found = m.json("verify", "--all", code=1)
    corrupt = {c["path"]: c for c in found["corrupt"]}
    assert corrupt[str(blob)]["hard_links"] == [str(local)]
    assert not corrupt[str(blob)]["changed_without_mtime"]
    text = m.cli("verify", "--all", *m.roots())
    assert f"bytes changed through the hard link {local} (same inode)" in text.out
    # The blob is corrupt even though the local copy on its inode matches its own (newer) claim.
    assert m.statuses()[("hf_cache", "org/x")] == "corrupt"

    before = identity(local)
    links = {p: os.readlink(p) for p in m.cache.glob("*/snapshots/*/*")}
    result = m.json("verify", "--all", "--repair", code=0, user=as_unprivileged(m) if user else None)
    assert result["status"] == "success"
    assert identity(local) == before and local.read_bytes() == V2["model.safetensors"]
    assert (m.models / "x" / "config.json").read_bytes() == V2["config.json"]
    assert {p: os.readlink(p) for p in m.cache.glob("*/snapshots/*/*")} == links
    config = m.cache / "models--org--x" / "blobs" / hashlib.sha1(b'blob 8\0{"v": 1}').hexdigest()
    repaired_cleanly(m, local_hub, result, {blob: [local], config: [m.models / "x" / "config.json"]})


@pytest.mark.parametrize("user", [None, "nobody"])
def test_cp_over_a_hard_linked_plain_copy_is_named_and_repaired(
    local_hub: LocalHub, shared_tmp: Path, user: str | None
) -> None:
    m = consolidated(local_hub, shared_tmp / "m", local_dir=False, plain=True)
    plain = m.models / "mine" / "weights.bin"
    cp_over(plain, TUNED, shared_tmp)
    blob = m.blob("org/x", WEIGHTS)
    assert blob.read_bytes() == TUNED

    found = m.json("verify", "--all", code=1)
    assert [(c["path"], c["hard_links"]) for c in found["corrupt"]] == [(str(blob), [str(plain)])]
    assert found["unverifiable_files"] == 1  # the plain copy: no claim to check, but named as the cause
    assert f"bytes changed through the hard link {plain} (same inode)" in m.cli("verify", "--all", *m.roots()).out

    before = identity(plain)
    text = m.cli("verify", "--all", "--repair", *m.roots(), user=as_unprivileged(m) if user else None)
    assert text.code == 0, text.err
    assert f"into an inode of its own ({plain} keeps its bytes)" in text.out
    assert identity(plain) == before and plain.read_bytes() == TUNED
    cache_is_whole(local_hub, m.cache)
    assert blob.stat().st_ino != plain.stat().st_ino
    assert m.json("verify", "--all", code=0)["corrupt"] == []


def test_a_write_through_a_copy_linked_to_two_repos_blobs_is_named_in_both(
    local_hub: LocalHub, shared_tmp: Path
) -> None:
    """Another repo's blob with the same bytes was linked too: the one write changed both blobs. Each names
    the local copy and the other blob; the repair gives each blob an inode of its own."""
    m = consolidated(local_hub, shared_tmp / "m", other=True)
    x, y = m.blob("org/x", WEIGHTS), m.blob("org/y", WEIGHTS)
    assert x.stat().st_ino == y.stat().st_ino
    local = update_local_dir(local_hub, m)
    assert y.read_bytes() == V2["model.safetensors"]

    corrupt = {c["path"]: c["hard_links"] for c in m.json("verify", "--all", code=1)["corrupt"]}
    assert corrupt[str(x)] == sorted([str(local), str(y)]) and corrupt[str(y)] == sorted([str(local), str(x)])
    text = m.cli("verify", "--all", *m.roots()).out
    assert "bytes changed through one of its links:" in text and f"  hard link {local} (same inode)" in text

    before = identity(local)
    result = m.json("verify", "--all", "--repair", code=0)
    assert identity(local) == before and local.read_bytes() == V2["model.safetensors"]
    assert x.stat().st_ino != y.stat().st_ino
    config = m.cache / "models--org--x" / "blobs" / hashlib.sha1(b'blob 8\0{"v": 1}').hexdigest()
    repaired_cleanly(m, local_hub, result, {x: [local, y], y: [local, x], config: [m.models / "x" / "config.json"]})


@pytest.mark.parametrize("user", [None, "nobody"])
@pytest.mark.parametrize("writer", ["local_dir update", "cp"])
def test_a_write_through_a_symlink_is_named_and_the_link_keeps_the_bytes(
    local_hub: LocalHub, shared_tmp: Path, writer: str, user: str | None
) -> None:
    """`consolidate --mode symlink` made the copy a symlink into the cache; a tool wrote through it, so the
    blob's inode holds the only copy of the new bytes. The repair first makes the link a file of its own
    holding them (dropping the blob's inode would lose them), then downloads the blob again."""
    plain = writer == "cp"
    m = consolidated(local_hub, shared_tmp / "m", local_dir=not plain, plain=plain, mode="symlink")
    blob = m.blob("org/x", WEIGHTS)
    if plain:
        link = m.models / "mine" / "weights.bin"
        assert link.is_symlink()
        cp_over(link, TUNED, shared_tmp)
        wrote = TUNED
    else:
        link = update_local_dir(local_hub, m)
        wrote = V2["model.safetensors"]
    assert link.is_symlink() and blob.read_bytes() == wrote

    found = m.json("verify", "--all", code=1)
    corrupt = {c["path"]: c for c in found["corrupt"]}
    assert (corrupt[str(blob)]["symlinks"], corrupt[str(blob)]["hard_links"]) == ([str(link)], [])
    assert f"bytes changed through the symlink {link} (it leads here)" in m.cli("verify", "--all", *m.roots()).out

    result = m.json("verify", "--all", "--repair", code=0, user=as_unprivileged(m) if user else None)
    assert result["repair"]["outcomes"] and {o["status"] for o in result["repair"]["outcomes"]} == {"done"}
    assert not link.is_symlink() and link.read_bytes() == wrote
    cache_is_whole(local_hub, m.cache)
    keeps = [r for r in m.journals()[-1] if r.get("op") == "keep" and r["type"] == "begin"]
    assert [r["target"] for r in keeps if r["target"] == str(link)] == [str(link)]
    assert m.json("verify", "--all", code=0)["corrupt"] == []


def test_a_symlink_to_a_blob_that_rotted_in_place_follows_the_repair(local_hub: LocalHub, shared_tmp: Path) -> None:
    """Bytes that changed under an unchanged mtime were written by no tool: the symlink is meant to read the
    blob, and reads the repaired blob afterwards (it stays a symlink). The digest index tells only the first
    verify after the change; a later one keeps the link's bytes in a file of its own, the side that loses
    nothing."""
    m = consolidated(local_hub, shared_tmp / "m", local_dir=False, plain=True, mode="symlink")
    link, blob = m.models / "mine" / "weights.bin", m.blob("org/x", WEIGHTS)
    assert m.json("verify", "--all", code=0)["corrupt"] == []  # the digest index learns the blob's digest
    st = blob.stat()
    data = bytearray(blob.read_bytes())
    data[1000] ^= 1
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    blob.chmod(stat.S_IMODE(st.st_mode))

    result = m.json("verify", "--all", "--repair", code=0)
    (found,) = result["corrupt"]
    assert found["changed_without_mtime"] and found["symlinks"] == [str(link)]
    assert [o["status"] for o in result["repair"]["outcomes"]] == ["done"]
    assert link.is_symlink() and link.read_bytes() == WEIGHTS
    cache_is_whole(local_hub, m.cache)


def test_a_repair_nobody_may_not_write_fails_loudly_and_changes_nothing(local_hub: LocalHub, shared_tmp: Path) -> None:
    """The cache is root's; nobody owns only the state folder: the download cannot be made, and the blob and
    the local copy stay as they were (the copy keeps its new bytes)."""
    m = consolidated(local_hub, shared_tmp / "m")
    local = update_local_dir(local_hub, m)
    blob = m.blob("org/x", WEIGHTS)
    if os.geteuid() != 0:
        pytest.skip("runs as user nobody only when the tests run as root")
    if run_cli("--version", user=NOBODY).code != 0:
        pytest.skip("user nobody cannot run this Python")
    for mine in (m.state, m.root / "home"):
        mine.mkdir(exist_ok=True)
        for path in [mine, *mine.rglob("*")]:
            os.chown(path, int(NOBODY), int(NOBODY), follow_symlinks=False)
    before = {p: identity(p) for p in (blob, local)}

    result = m.cli("verify", "--all", "--repair", *m.roots(), "--json", user=NOBODY)
    assert result.code == 2, result.err
    failed = [o for o in result.json()["repair"]["outcomes"] if o["status"] == "failed"]
    assert failed and all("could not download it again" in o["reason"] and "\n" not in o["reason"] for o in failed)
    assert {p: identity(p) for p in (blob, local)} == before
    assert local.read_bytes() == V2["model.safetensors"]


def test_a_corrupt_local_copy_sharing_a_whole_blobs_inode_is_repaired_without_writing_the_blob(
    local_hub: LocalHub, shared_tmp: Path
) -> None:
    """The other way round: the local copy's metadata names the newer revision while its bytes, on the
    blob's inode, are still the old ones. The repair downloads into the local path, never through the
    inode: the blob keeps its inode and its (right) bytes."""
    m = consolidated(local_hub, shared_tmp / "m")
    commit = local_hub.add_commit("org/x", V2)
    local = m.models / "x" / "model.safetensors"
    meta = m.models / "x" / ".cache" / "huggingface" / "download" / "model.safetensors.metadata"
    etag = hashlib.sha256(V2["model.safetensors"]).hexdigest()
    meta.write_text(f"{commit}\n{etag}\n{local.stat().st_mtime + 1}\n")  # fresh, so the claim counts
    blob = m.blob("org/x", WEIGHTS)

    found = m.json("verify", "--all", code=1)
    assert [(c["path"], c["hard_links"]) for c in found["corrupt"]] == [(str(local), [str(blob)])]
    assert f"shares its bytes with the hard link {blob} (same inode)" in m.cli("verify", "--all", *m.roots()).out

    before = identity(blob)
    result = m.json("verify", "--all", "--repair", code=0)
    assert [o["status"] for o in result["repair"]["outcomes"]] == ["done"]
    assert identity(blob) == before and blob.read_bytes() == WEIGHTS
    assert local.read_bytes() == V2["model.safetensors"] and local.stat().st_ino != blob.stat().st_ino
    cache_is_whole(local_hub, m.cache)
    assert m.json("verify", "--all", code=0)["corrupt"] == []


def test_a_corrupt_snapshot_copy_of_a_no_symlink_cache_is_repaired(
    local_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub leaves an existing snapshot file as it is, even with force_download: the repair puts
    the blob it downloaded in the copy's place, as huggingface_hub places a new blob in such a cache."""
    m = Links(tmp_path / "m")
    m.models.mkdir(parents=True)
    local_hub.add_commit("org/x", V1)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_SYMLINKS", True)
    snapshot = download_to_cache(local_hub, "org/x", m.cache)
    copy = snapshot / "model.safetensors"
    assert not copy.is_symlink() and not any((m.cache / "models--org--x" / "blobs").iterdir())
    data = bytearray(copy.read_bytes())
    data[7] ^= 1
    copy.write_bytes(bytes(data))

    assert [c["path"] for c in m.json("verify", "--all", code=1)["corrupt"]] == [str(copy)]
    result = m.json("verify", "--all", "--repair", code=0)
    assert [o["status"] for o in result["repair"]["outcomes"]] == ["done"]
    assert copy.read_bytes() == WEIGHTS and not copy.is_symlink()
    assert not any((m.cache / "models--org--x" / "blobs").iterdir())  # moved into place, as huggingface_hub does
    assert m.json("verify", "--all", code=0)["corrupt"] == []


# -- a client that misbehaves: the repair reports it, never `done` -------------------------------------


@pytest.fixture
def linked_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A "blob" holding other bytes than its name, and a hard link to it elsewhere; modelcache's state in tmp."""
    monkeypatch.setenv("MODELCACHE_STATE", str(tmp_path / "state"))
    blob = tmp_path / "cache" / "blobs" / hashlib.sha256(WEIGHTS).hexdigest()
    write_tree(blob.parent, {blob.name: TUNED})
    other = tmp_path / "models" / "weights.bin"
    other.parent.mkdir(parents=True)
    os.link(blob, other)
    return blob, other


def redownload_with(client: Any, blob: Path, other: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import huggingface_hub

    from modelcache.act.repair import redownload
    from modelcache.inventory import Digest
    from modelcache.verify import Redownload

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", client)
    claim = Digest("sha256", blob.name)
    target = Redownload(str(blob), "model", "org/x", "main", "model.safetensors", None, claim, (str(other),))
    (outcome,) = redownload([target], str(blob.parent.parent)).outcomes
    return outcome


def test_a_client_writing_in_place_through_the_shared_inode_is_a_failure(
    linked_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    blob, other = linked_pair

    def in_place(**download: Any) -> str:
        with open(blob, "r+b") as f:  # the right bytes, but written through the inode the other path shares
            f.write(WEIGHTS)
        return str(blob)

    outcome = redownload_with(in_place, blob, other, monkeypatch)
    assert outcome.status == "failed"
    assert outcome.reason == "downloaded again, but it still shares its inode with its hard links"


def test_a_client_that_changes_the_other_path_is_a_failure(
    linked_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    blob, other = linked_pair

    def writes_both(**download: Any) -> str:
        tmp = blob.with_name("new")
        tmp.write_bytes(WEIGHTS)
        os.replace(tmp, blob)
        other.write_bytes(b"clobbered")
        return str(blob)

    outcome = redownload_with(writes_both, blob, other, monkeypatch)
    assert outcome.status == "failed"
    assert outcome.reason == f"{other}, which shared its inode, changed during the download"


def test_a_client_that_writes_nothing_is_a_failure(
    linked_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    blob, other = linked_pair
    outcome = redownload_with(lambda **download: str(blob), blob, other, monkeypatch)
    assert outcome.status == "failed" and outcome.reason.startswith("downloaded again, but it still does not match")
    assert other.read_bytes() == TUNED


# -- a kill at every journal record of a repair ----------------------------------------------------------


def test_a_repair_killed_at_any_record_leaves_every_path_readable_and_the_next_one_finishes(
    local_hub: LocalHub, shared_tmp: Path
) -> None:
    """A symlink-mode copy written through (so the run keeps the link's bytes, then downloads the blob again),
    killed after each journal record in turn: the link reads the bytes its tool wrote at every moment, the
    blob is readable, and the next `verify --repair` recovers the run and finishes the repair."""
    template = consolidated(local_hub, shared_tmp / "template", mode="symlink")
    update_local_dir(local_hub, template)
    records = 0
    for n in range(1, 40):
        m = template.copy(shared_tmp / f"kill-{n}")
        link, blob = m.models / "x" / "model.safetensors", m.blob("org/x", WEIGHTS)
        killed = m.cli("verify", "--all", *m.roots(), "--repair", env={"MODELCACHE_TEST_KILL_AFTER_RECORDS": str(n)})
        assert link.read_bytes() == V2["model.safetensors"] and blob.read_bytes() in (WEIGHTS, V2["model.safetensors"])
        if killed.code == 0:
            records = n  # the run ended before the n-th record: every kill point was tried
            break
        assert killed.code == -9, killed.err
        result = m.json("verify", "--all", "--repair", code=0)
        assert result["status"] == "success"
        assert not link.is_symlink() and link.read_bytes() == V2["model.safetensors"]
        cache_is_whole(local_hub, m.cache)
        assert not list(m.root.rglob(".modelcache-*")), "a temporary file of ours was left"
        # Every change the killed run began is closed (recovered, or done before the kill).
        assert not [r for run in m.journals() for r in iter_open_changes(run)]
        shutil.rmtree(m.root)
    assert records > 5

"""`modelcache.act.fsops` on its own, on real temp folders: every public function, one by one.

fsops is the one module that links, renames, removes or writes the user's files, so each of
its promises is shown directly: a new entry never replaces an existing one unless the name
says so (`replace`); a replacement is atomic and its folder flushed after the rename; a
failure leaves no temporary file; copies carry bytes, mode, times and (as root) owner;
clones fail as "unsupported" where the file system cannot clone, and work on XFS (a loop
image, where one can be made). Permission cases run as user nobody when the tests run as
root (root ignores permission bits), as `tests/machine.run_cli` does for the CLI.
"""

from __future__ import annotations

import ast
import errno
import inspect
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelcache.act import fsops
from modelcache.common import TMP_PREFIX
from modelcache.testing.builders import random_bytes

from .filesystems import xfs_image

NOBODY = 65534
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40
RUN = "20260101T000000.000000Z-abcdef"
# Findings, shown by tests that fail until they are fixed:


# -- helpers ------------------------------------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    """Temporary files of ours (fsops' `TMP_PREFIX`, or write_durably's `.<name>.<hex>.tmp`) in `folder`."""
    return sorted(n for n in os.listdir(folder) if n.startswith(".") and n.endswith(".tmp"))


Synced = tuple[str, Any]  # (path, what it held then: a folder's sorted names, a file's bytes)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[Synced]:
    """Every fsync fsops makes, in order, with what the synced folder or file held at that moment."""
    real_fsync = os.fsync
    seen: list[Synced] = []

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        seen.append((path, sorted(os.listdir(path)) if os.path.isdir(path) else read_noatime(path)))
        real_fsync(fd)

    monkeypatch.setattr(fsops.os, "fsync", fsync)
    return seen


def fail(monkeypatch: pytest.MonkeyPatch, target: Any, name: str, code: int) -> list[tuple[Any, ...]]:
    """Make `target.name` raise OSError(`code`); returns the calls it got, so a test can show the fault fired."""
    calls: list[tuple[Any, ...]] = []

    def failing(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(target, name, failing)
    return calls


def read_noatime(path: str) -> bytes:
    """The bytes of `path`, read without touching its access time (which the tests check)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def fs_type(path: Path) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True).stdout.strip()


# -- names, and replacing ----------------------------------------------------------------------------------


def test_temp_name_is_beside_the_target_and_fresh(tmp_path: Path) -> None:
    target = str(tmp_path / "sub" / "model.safetensors")
    names = {fsops.temp_name(target, RUN) for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert os.path.dirname(name) == os.path.dirname(target)
        assert os.path.basename(name).startswith(f"{TMP_PREFIX}{RUN}-") and name.endswith(".tmp")


def test_partial_name_is_huggingface_hubs_partial_download_name_beside_the_blob(tmp_path: Path) -> None:
    """What a kill leaves under it is a partial download to huggingface_hub and to `clean`."""
    blob = str(tmp_path / "blobs" / ("ab" * 32))
    names = {fsops.partial_name(blob) for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert re.fullmatch(re.escape(blob) + r"\.[0-9a-f]{8}\.incomplete", name), name


def test_replace_is_a_rename_and_its_folder_is_flushed_after_it(tmp_path: Path, fsyncs: list[Synced]) -> None:
    target = write(tmp_path / "d" / "model.bin", b"old")
    tmp = write(Path(fsops.temp_name(str(target), RUN)), b"new")
    ino = tmp.stat().st_ino
    fsops.replace(str(tmp), str(target))
    assert target.read_bytes() == b"new" and target.stat().st_ino == ino  # the same inode: renamed, not copied
    assert not tmp.exists()
    assert fsyncs == [(str(target.parent), ["model.bin"])]  # flushed once the rename was made


def test_fsync_dir_flushes_that_folder(tmp_path: Path, fsyncs: list[Synced]) -> None:
    write(tmp_path / "f", b"")
    fsops.fsync_dir(str(tmp_path))
    assert fsyncs == [(str(tmp_path), ["f"])]
    with pytest.raises(NotADirectoryError):
        fsops.fsync_dir(str(tmp_path / "f"))


# -- new entries: links and small files --------------------------------------------------------------------


def test_hardlink_makes_one_inode_and_never_replaces(tmp_path: Path) -> None:
    keep = write(tmp_path / "keep", b"bytes")
    fsops.hardlink(str(keep), str(tmp_path / "tmp"))
    assert (tmp_path / "tmp").stat().st_ino == keep.stat().st_ino and keep.stat().st_nlink == 2
    other = write(tmp_path / "other", b"other")
    with pytest.raises(FileExistsError):
        fsops.hardlink(str(keep), str(other))
    assert other.read_bytes() == b"other"


def test_hardlink_of_a_symlink_links_the_symlink_itself(tmp_path: Path) -> None:
    os.symlink("dangling", tmp_path / "link")
    fsops.hardlink(str(tmp_path / "link"), str(tmp_path / "tmp"))
    assert os.readlink(tmp_path / "tmp") == "dangling"
    assert os.lstat(tmp_path / "tmp").st_ino == os.lstat(tmp_path / "link").st_ino


def test_symlink_writes_the_text_given_and_never_replaces(tmp_path: Path) -> None:
    fsops.symlink("../../blobs/abc", str(tmp_path / "tmp"))
    assert os.readlink(tmp_path / "tmp") == "../../blobs/abc"  # as given, even dangling
    write(tmp_path / "taken", b"x")
    with pytest.raises(FileExistsError):
        fsops.symlink("elsewhere", str(tmp_path / "taken"))
    assert (tmp_path / "taken").read_bytes() == b"x"


def test_write_new_writes_flushes_and_never_overwrites(tmp_path: Path, fsyncs: list[Synced]) -> None:
    path = tmp_path / "ref.tmp"
    fsops.write_new(str(path), COMMIT_A.encode())
    assert path.read_bytes() == COMMIT_A.encode() and stat.S_IMODE(path.stat().st_mode) == 0o644 & ~umask()
    assert fsyncs == [(str(path), COMMIT_A.encode())]  # its bytes were there when it was flushed
    with pytest.raises(FileExistsError):
        fsops.write_new(str(path), COMMIT_B.encode())
    assert path.read_bytes() == COMMIT_A.encode()
    os.symlink("nowhere", tmp_path / "dangling")
    with pytest.raises(FileExistsError):  # not even through a dangling symlink
        fsops.write_new(str(tmp_path / "dangling"), b"x")
    assert not (tmp_path / "nowhere").exists()


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- removing ------------------------------------------------------------------------------------------------


def test_remove_unlinks_and_flushes_the_folder(tmp_path: Path, fsyncs: list[Synced]) -> None:
    target = write(tmp_path / "d" / "copy.bin", b"x")
    write(tmp_path / "d" / "other.bin", b"y")
    fsops.remove(str(target))
    assert not target.exists()
    assert fsyncs == [(str(target.parent), ["other.bin"])]
    with pytest.raises(FileNotFoundError):
        fsops.remove(str(target))
    assert len(fsyncs) == 1


def test_remove_of_a_symlink_leaves_what_it_points_at(tmp_path: Path) -> None:
    blob = write(tmp_path / "blob", b"bytes")
    os.symlink("blob", tmp_path / "link")
    fsops.remove(str(tmp_path / "link"))
    assert not os.path.lexists(tmp_path / "link") and blob.read_bytes() == b"bytes"


def test_remove_dir_removes_only_an_empty_folder(tmp_path: Path, fsyncs: list[Synced]) -> None:
    (tmp_path / "empty").mkdir()
    write(tmp_path / "full" / "f", b"x")
    fsops.remove_dir(str(tmp_path / "empty"))
    assert fsyncs == [(str(tmp_path), ["full"])]
    with pytest.raises(OSError) as raised:
        fsops.remove_dir(str(tmp_path / "full"))
    assert raised.value.errno == errno.ENOTEMPTY and (tmp_path / "full" / "f").exists()


def test_remove_entry_removes_files_links_and_empty_folders_unfollowed(tmp_path: Path) -> None:
    tree = tmp_path / "snapshot"
    blob = write(tmp_path / "blob", b"kept")
    write(tree / "sub" / "f", b"x")
    (tree / "link").symlink_to(blob)
    (tree / "dirlink").symlink_to(tmp_path)
    kinds = []
    for entry in ("sub/f", "sub", "link", "dirlink"):
        kinds.append(stat.S_IFMT(fsops.remove_entry(str(tree / entry)).st_mode))
    assert kinds == [stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFLNK]
    assert os.listdir(tree) == [] and blob.read_bytes() == b"kept"  # what a link led to stays
    write(tree / "full" / "f", b"x")
    with pytest.raises(OSError) as raised:
        fsops.remove_entry(str(tree / "full"))
    assert raised.value.errno == errno.ENOTEMPTY


def test_move_aside_renames_flushes_both_folders_and_never_replaces(tmp_path: Path, fsyncs: list[Synced]) -> None:
    """prune's step: a folder (or file, or link) renamed into a folder of ours, both folders flushed after."""
    repo = write(tmp_path / "cache" / "models--org--a" / "blobs" / "b", b"blob").parent.parent
    aside = tmp_path / "cache" / ".modelcache-run.tmp"
    aside.mkdir()
    ino = repo.stat().st_ino
    fsops.move_aside(str(repo), str(aside / "0"))
    assert not repo.exists() and (aside / "0").stat().st_ino == ino and (aside / "0" / "blobs" / "b").exists()
    assert fsyncs == [(str(tmp_path / "cache"), [".modelcache-run.tmp"]), (str(aside), ["0"])]
    other = write(tmp_path / "cache" / "other", b"x")
    with pytest.raises(FileExistsError):
        fsops.move_aside(str(other), str(aside / "0"))  # a name already there is never replaced
    assert other.read_bytes() == b"x" and (aside / "0" / "blobs" / "b").read_bytes() == b"blob"


def test_leftover_temp_files_finds_our_temporary_names_only(tmp_path: Path) -> None:
    ours = write(tmp_path / "a" / "b" / f"{TMP_PREFIX}run-1234.tmp", b"")
    write(tmp_path / "a" / "blob.incomplete", b"")
    write(tmp_path / "c" / "model.safetensors", b"")
    assert fsops.leftover_temp_files([tmp_path / "a", str(tmp_path / "c")]) == [str(ours)]


def test_discard_says_whether_there_was_a_file(tmp_path: Path) -> None:
    tmp = write(tmp_path / f"{TMP_PREFIX}x.tmp", b"partial")
    assert fsops.discard(str(tmp)) is True and not tmp.exists()
    assert fsops.discard(str(tmp)) is False


# -- metadata ------------------------------------------------------------------------------------------------


def test_set_mtime_to_the_nanosecond_and_not_through_a_symlink(tmp_path: Path) -> None:
    blob = write(tmp_path / "blob", b"x")
    fsops.set_mtime(str(blob), 1_000_000_001_123_456_789, 1_500_000_000_987_654_321)
    st = blob.stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_001_123_456_789, 1_500_000_000_987_654_321)
    os.symlink("blob", tmp_path / "link")
    fsops.set_mtime(str(tmp_path / "link"), 5, 7)
    assert os.lstat(tmp_path / "link").st_mtime_ns == 7
    assert blob.stat().st_mtime_ns == 1_500_000_000_987_654_321  # the link's own times, not its target's


def test_set_mode(tmp_path: Path) -> None:
    blob = write(tmp_path / "blob", b"x", 0o644)
    fsops.set_mode(str(blob), 0o444)
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444


# -- copying -------------------------------------------------------------------------------------------------

ATIME, MTIME = 1_600_000_000_111_111_111, 1_650_000_000_222_222_222


def test_copy_to_is_an_independent_copy_with_mode_and_times(tmp_path: Path, fsyncs: list[Synced]) -> None:
    data = random_bytes(5 * (1 << 20) // 2, "copy")  # more than one chunk, not a whole number of them
    source = write(tmp_path / "blob", data)
    tmp = tmp_path / "d" / "tmp"
    tmp.parent.mkdir()
    chunks: list[bytes] = []
    fsops.copy_to(str(source), str(tmp), 0o100640, ATIME, MTIME, None, on_chunk=chunks.append)
    st = tmp.stat()
    assert read_noatime(str(tmp)) == data and b"".join(chunks) == data and len(chunks) == 3
    assert st.st_ino != source.stat().st_ino and st.st_nlink == 1
    assert stat.S_IMODE(st.st_mode) == 0o640 and (st.st_atime_ns, st.st_mtime_ns) == (ATIME, MTIME)
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())  # no owner asked for: ours
    assert fsyncs == [(str(tmp), data)]  # flushed, whole
    fsops.copy_to(str(source), str(tmp_path / "plain"), 0o644, ATIME, MTIME, None)  # on_chunk is optional
    assert (tmp_path / "plain").read_bytes() == data


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another owner")
def test_copy_to_gives_the_owner_asked_for_as_root(tmp_path: Path) -> None:
    source = write(tmp_path / "blob", b"owned")
    fsops.copy_to(str(source), str(tmp_path / "tmp"), 0o600, ATIME, MTIME, (NOBODY, NOBODY))
    st = (tmp_path / "tmp").stat()
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY) and stat.S_IMODE(st.st_mode) == 0o600


def test_copy_to_never_overwrites_and_a_failure_leaves_no_tmp(tmp_path: Path) -> None:
    source = write(tmp_path / "blob", random_bytes(3 << 20, "fail"))
    taken = write(tmp_path / "taken", b"mine")
    with pytest.raises(FileExistsError):
        fsops.copy_to(str(source), str(taken), 0o644, ATIME, MTIME, None)
    assert taken.read_bytes() == b"mine"

    seen: list[int] = []

    def stop_at_the_second_chunk(chunk: bytes) -> None:
        seen.append(len(chunk))
        if len(seen) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        fsops.copy_to(str(source), str(tmp_path / "tmp"), 0o644, ATIME, MTIME, None, on_chunk=stop_at_the_second_chunk)
    assert len(seen) == 2 and not (tmp_path / "tmp").exists()
    with pytest.raises(FileNotFoundError):
        fsops.copy_to(str(tmp_path / "missing"), str(tmp_path / "tmp"), 0o644, ATIME, MTIME, None)
    assert sorted(os.listdir(tmp_path)) == ["blob", "taken"]


def test_copy_to_a_failing_flush_leaves_no_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write(tmp_path / "blob", b"bytes")
    calls = fail(monkeypatch, fsops.os, "fsync", errno.EIO)
    with pytest.raises(OSError, match="Input/output error"):
        fsops.copy_to(str(source), str(tmp_path / "tmp"), 0o644, ATIME, MTIME, None)
    assert calls and sorted(os.listdir(tmp_path)) == ["blob"]


def test_make_dirs_returns_the_folders_it_made_outermost_first(tmp_path: Path) -> None:
    assert fsops.make_dirs(str(tmp_path / "a" / "b" / "c")) == [
        str(tmp_path / "a"),
        str(tmp_path / "a" / "b"),
        str(tmp_path / "a" / "b" / "c"),
    ]
    assert (tmp_path / "a" / "b" / "c").is_dir()
    assert fsops.make_dirs(str(tmp_path / "a" / "b")) == []
    assert fsops.make_dirs(str(tmp_path / "a" / "x" / "y")) == [str(tmp_path / "a" / "x"), str(tmp_path / "a/x/y")]
    write(tmp_path / "file", b"")
    with pytest.raises(NotADirectoryError):
        fsops.make_dirs(str(tmp_path / "file" / "sub"))


# -- clones: unsupported on ext4, real on XFS --------------------------------------------------------------


@pytest.fixture
def no_clones(tmp_path: Path) -> Path:
    """A folder on a file system without copy-on-write clones (this machine's ext4 temp folder)."""
    kind = fs_type(tmp_path)
    if kind in ("xfs", "btrfs", "bcachefs", "ocfs2", "zfs"):
        pytest.skip(f"the temp folder is on {kind}, which may clone")
    return tmp_path


def test_clones_where_the_file_system_cannot_are_unsupported_and_leave_nothing(no_clones: Path) -> None:
    source = write(no_clones / "blob", b"bytes")
    like = source.stat()
    for clone in (
        lambda tmp: fsops.reflink(str(source), tmp, like),
        lambda tmp: fsops.clone_new(str(source), tmp, 0o444),
    ):
        with pytest.raises(OSError) as raised:
            clone(str(no_clones / "tmp"))
        assert raised.value.errno in fsops.UNSUPPORTED, raised.value
        assert sorted(os.listdir(no_clones)) == ["blob"]


@pytest.fixture(scope="module")
def xfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An XFS image with reflinks for this module (skipped, with the reason, where one cannot be made: the
    clones are then shown unsupported only)."""
    with xfs_image(tmp_path_factory.mktemp("xfs")) as mount:
        yield mount


@pytest.fixture
def on_xfs(xfs: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh folder of this test on the XFS image."""
    folder = xfs / request.node.name.replace("/", "_")
    folder.mkdir()
    yield folder
    shutil.rmtree(folder)


def free_bytes(folder: Path) -> int:
    os.sync()
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def test_reflink_on_xfs_shares_blocks_with_the_mode_times_and_owner_of_the_copy(
    on_xfs: Path, fsyncs: list[Synced]
) -> None:
    data = random_bytes(16 << 20, "clone")
    keep = write(on_xfs / "keep", data, 0o444)
    like = write(on_xfs / "copy", b"the copy it replaces", 0o640)
    os.utime(like, ns=(ATIME, MTIME))
    if os.geteuid() == 0:
        os.chown(like, NOBODY, NOBODY)
    before = free_bytes(on_xfs)
    fsops.reflink(str(keep), str(on_xfs / "tmp"), like.stat())
    assert before - free_bytes(on_xfs) < 1 << 20  # 16 MiB of bytes, no new blocks
    st = (on_xfs / "tmp").stat()
    assert (on_xfs / "tmp").read_bytes() == data and st.st_ino != keep.stat().st_ino and st.st_nlink == 1
    assert stat.S_IMODE(st.st_mode) == 0o640 and (st.st_atime_ns, st.st_mtime_ns) == (ATIME, MTIME)
    assert (st.st_uid, st.st_gid) == (like.stat().st_uid, like.stat().st_gid)
    assert [path for path, _ in fsyncs] == [str(on_xfs / "tmp")]


def test_clone_new_on_xfs_has_the_mode_asked_for(on_xfs: Path, fsyncs: list[Synced]) -> None:
    source = write(on_xfs / "blob", b"weights" * 1000, 0o644)
    fsops.clone_new(str(source), str(on_xfs / "tmp"), 0o444)
    st = (on_xfs / "tmp").stat()
    assert (on_xfs / "tmp").read_bytes() == b"weights" * 1000 and st.st_ino != source.stat().st_ino
    assert stat.S_IMODE(st.st_mode) == 0o444
    assert fsyncs == [(str(on_xfs / "tmp"), b"weights" * 1000)]


def test_clones_never_overwrite_and_a_failure_leaves_no_tmp(on_xfs: Path, tmp_path: Path) -> None:
    source = write(on_xfs / "blob", b"bytes")
    taken = write(on_xfs / "taken", b"mine")
    with pytest.raises(FileExistsError):
        fsops.clone_new(str(source), str(taken), 0o444)
    with pytest.raises(FileExistsError):
        fsops.reflink(str(source), str(taken), source.stat())
    assert taken.read_bytes() == b"mine"  # an existing file is neither written nor removed
    elsewhere = write(tmp_path / "other-fs", b"bytes")
    with pytest.raises(OSError) as raised:
        fsops.clone_new(str(elsewhere), str(on_xfs / "tmp"), 0o444)  # across file systems
    assert raised.value.errno in fsops.UNSUPPORTED
    assert sorted(os.listdir(on_xfs)) == ["blob", "taken"]


# -- placing new files ---------------------------------------------------------------------------------------


def test_place_new_gives_the_file_its_name_and_flushes_the_folder(tmp_path: Path, fsyncs: list[Synced]) -> None:
    tmp = write(tmp_path / "blobs" / f"{TMP_PREFIX}x.tmp", b"verified")
    ino = tmp.stat().st_ino
    fsops.place_new(str(tmp), str(tmp_path / "blobs" / "abc"))
    placed = (tmp_path / "blobs" / "abc").stat()
    assert placed.st_ino == ino and placed.st_nlink == 1 and not tmp.exists()
    assert fsyncs == [(str(tmp_path / "blobs"), ["abc"])]


@pytest.mark.parametrize("links", ["supported", "unsupported"])
def test_place_new_never_replaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, links: str) -> None:
    refused = fail(monkeypatch, fsops.os, "link", errno.EPERM) if links == "unsupported" else None
    tmp = write(tmp_path / "tmp", b"new")
    target = write(tmp_path / "abc", b"there first")
    os.symlink("nowhere", tmp_path / "dangling")
    for taken in (target, tmp_path / "dangling"):
        with pytest.raises(FileExistsError):
            fsops.place_new(str(tmp), str(taken))
    assert target.read_bytes() == b"there first" and os.readlink(tmp_path / "dangling") == "nowhere"
    assert tmp.read_bytes() == b"new"
    assert refused is None or len(refused) == 2


def test_place_new_where_links_are_unsupported_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = fail(monkeypatch, fsops.os, "link", errno.EPERM)
    tmp = write(tmp_path / "tmp", b"new")
    ino = tmp.stat().st_ino
    fsops.place_new(str(tmp), str(tmp_path / "abc"))
    assert refused and (tmp_path / "abc").stat().st_ino == ino and not tmp.exists()


def test_place_new_other_link_errors_are_raised_as_they_are(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fsops.place_new(str(tmp_path / "no-such-tmp"), str(tmp_path / "abc"))
    assert os.listdir(tmp_path) == []


# -- refs and modelcache's own files ---------------------------------------------------------------------


def test_write_ref_makes_its_folders_and_writes_the_bare_hash(tmp_path: Path, fsyncs: list[Synced]) -> None:
    ref = tmp_path / "models--org--x" / "refs" / "main"
    assert fsops.write_ref(str(ref), COMMIT_A, RUN) is True
    assert ref.read_bytes() == COMMIT_A.encode() and leftovers(ref.parent) == []
    (tmp_file, data), (folder, names) = fsyncs
    assert os.path.dirname(tmp_file) == str(ref.parent) and os.path.basename(tmp_file).startswith(TMP_PREFIX + RUN)
    assert data == COMMIT_A.encode() and (folder, names) == (str(ref.parent), ["main"])


@pytest.mark.parametrize("held", [COMMIT_A, COMMIT_A + "\n", "  " + COMMIT_A + "\r\n"])
def test_write_ref_leaves_a_ref_that_holds_the_commit_alone(tmp_path: Path, fsyncs: list[Synced], held: str) -> None:
    ref = write(tmp_path / "refs" / "main", held.encode())
    os.utime(ref, ns=(ATIME, MTIME))
    before = ref.stat()
    assert fsops.write_ref(str(ref), COMMIT_A, RUN) is False
    after = ref.stat()
    assert (after.st_ino, after.st_mtime_ns, ref.read_bytes()) == (before.st_ino, MTIME, held.encode())
    assert fsyncs == []


@pytest.mark.parametrize("held", [COMMIT_B.encode(), b"\xff\xfe not text", b""])
def test_write_ref_replaces_another_commit_atomically(tmp_path: Path, held: bytes) -> None:
    ref = write(tmp_path / "refs" / "main", held)
    ino = ref.stat().st_ino
    assert fsops.write_ref(str(ref), COMMIT_A, RUN) is True
    assert ref.read_bytes() == COMMIT_A.encode() and ref.stat().st_ino != ino  # a new file renamed over it
    assert leftovers(ref.parent) == []


@pytest.mark.parametrize("failing", ["replace", "write_new"])
def test_write_ref_failure_leaves_the_ref_and_no_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     failing: str) -> None:  # fmt: skip
    ref = write(tmp_path / "refs" / "main", COMMIT_B.encode())
    calls = fail(monkeypatch, fsops, failing, errno.ENOSPC)
    with pytest.raises(OSError, match="No space left"):
        fsops.write_ref(str(ref), COMMIT_A, RUN)
    assert len(calls) == 1 and ref.read_bytes() == COMMIT_B.encode() and leftovers(ref.parent) == []


def test_write_durably_writes_replaces_and_flushes(tmp_path: Path, fsyncs: list[Synced]) -> None:
    plan = tmp_path / "plan.json"
    fsops.write_durably(plan, b'{"v": 1}')
    fsops.write_durably(plan, b'{"v": 2}')
    assert plan.read_bytes() == b'{"v": 2}' and leftovers(tmp_path) == []
    (tmp1, data1), folder1, (_, data2), folder2 = fsyncs
    assert os.path.dirname(tmp1) == str(tmp_path) and os.path.basename(tmp1).startswith(TMP_PREFIX)
    assert (data1, data2) == (b'{"v": 1}', b'{"v": 2}')
    assert folder1 == folder2 == (str(tmp_path), ["plan.json"])


def test_write_durably_failure_leaves_no_tmp(tmp_path: Path) -> None:
    (tmp_path / "plan.json").mkdir()  # `--plan-out` names a folder: the rename fails
    with pytest.raises(IsADirectoryError):
        fsops.write_durably(tmp_path / "plan.json", b"{}")
    assert leftovers(tmp_path) == []


# -- permissions: as a user whom permission bits stop ------------------------------------------------------

CALL = """
import ast, errno, sys
from modelcache.act import fsops
try:
    result = getattr(fsops, sys.argv[1])(*ast.literal_eval(sys.argv[2]))
except OSError as e:
    print(errno.errorcode[e.errno])
else:
    print("ok", result)
"""


def call_unprivileged(function: str, *args: Any) -> str:
    """`fsops.function(*args)` in a process of a user whom permissions stop (nobody, when we are root): "ok
    <result>", or the errno name it raised."""
    cmd = [sys.executable, "-c", CALL, function, repr(args)]
    if os.geteuid() == 0:
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def unprivileged_python() -> None:
    if os.geteuid() == 0 and call_unprivileged("temp_name", "/x", "r").split()[0] != "ok":
        pytest.skip("running as root, and user nobody cannot run this Python to see permissions bite")


@pytest.fixture
def shared(unprivileged_python: None) -> Iterator[Path]:
    """A folder the unprivileged user owns (and can enter), with a read-only folder `ro` in it, owned by it too."""
    path = Path(tempfile.mkdtemp(prefix="modelcache-fsops-"))
    path.chmod(0o755)
    (path / "ro").mkdir()
    write(path / "ro" / "file", b"kept")
    (path / "ro" / "sub").mkdir()
    write(path / "ro" / "refs" / "main", COMMIT_B.encode())
    write(path / "blob", b"bytes")
    if os.geteuid() == 0:
        for p in [path, *path.rglob("*")]:
            os.chown(p, NOBODY, NOBODY)
    for folder in (path / "ro", path / "ro" / "refs"):
        folder.chmod(0o555)
    yield path
    for folder in (path / "ro", path / "ro" / "refs"):
        folder.chmod(0o755)
    shutil.rmtree(path)


def test_a_read_only_folder_stops_every_change_cleanly(shared: Path) -> None:
    ro, blob = shared / "ro", str(shared / "blob")
    before = {str(p): (p.stat().st_ino, p.read_bytes() if p.is_file() else None) for p in ro.rglob("*")}
    calls = {
        "remove": (str(ro / "file"),),
        "remove_dir": (str(ro / "sub"),),
        "write_new": (str(ro / "new"), b"x"),
        "symlink": ("blob", str(ro / "new")),
        "hardlink": (blob, str(ro / "new")),
        "copy_to": (blob, str(ro / "new"), 0o644, ATIME, MTIME, None),
        "place_new": (blob, str(ro / "new")),
        "replace": (blob, str(ro / "file")),
        "make_dirs": (str(ro / "a" / "b"),),
        "move_aside": (str(ro / "file"), str(shared / "aside")),
        "write_ref": (str(ro / "refs" / "main"), COMMIT_A, RUN),
    }
    got = {name: call_unprivileged(name, *args) for name, args in calls.items()}
    assert got == dict.fromkeys(calls, "EACCES")
    after = {str(p): (p.stat().st_ino, p.read_bytes() if p.is_file() else None) for p in ro.rglob("*")}
    assert after == before and (shared / "blob").read_bytes() == b"bytes"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a file of another owner (root's)")
def test_files_of_another_owner(shared: Path) -> None:
    """Root's file, readable by all: its mode and times cannot be set, and (fs.protected_hardlinks) it
    cannot be hard-linked; place_new then renames instead."""
    theirs = write(shared / "theirs", b"root's bytes")
    assert call_unprivileged("set_mode", str(theirs), 0o600) == "EPERM"
    assert call_unprivileged("set_mtime", str(theirs), 5, 7) == "EPERM"
    assert stat.S_IMODE(theirs.stat().st_mode) == 0o644 and theirs.stat().st_mtime_ns != 7
    if Path("/proc/sys/fs/protected_hardlinks").read_text().strip() != "1":
        pytest.skip("fs.protected_hardlinks is off: links to other users' files are allowed")
    assert call_unprivileged("hardlink", str(theirs), str(shared / "link")) == "EPERM"
    assert errno.EPERM in fsops.UNSUPPORTED  # so a consolidate run takes it as "this link cannot be made here"
    ino = theirs.stat().st_ino
    assert call_unprivileged("place_new", str(theirs), str(shared / "placed")) == "ok None"
    assert (shared / "placed").stat().st_ino == ino and not theirs.exists()


# -- coverage of the module ----------------------------------------------------------------------------------


def test_every_public_function_of_fsops_has_a_direct_test() -> None:
    """A function added to fsops gets its test here (called as `fsops.name`, or named to `call_unprivileged`)."""
    public = {
        name
        for name, value in vars(fsops).items()
        if inspect.isfunction(value) and value.__module__ == fsops.__name__ and not name.startswith("_")
    }
    tree = ast.parse(Path(__file__).read_text())
    named = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and getattr(n.value, "id", "") == "fsops"}
    named |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not public - named, f"fsops functions without a direct test here: {sorted(public - named)}"

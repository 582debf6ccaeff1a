"""`modelcache.act.journal` on its own, with a real `MODELCACHE_STATE` in a temp folder.

The journal is what makes every change undoable and every crash recoverable, so each of its
promises is shown directly: records come back exactly as written (file names that are not
UTF-8 included); a line a crash tore is ignored and the next record starts on a line of its
own; a `begin` without `done` or `abandoned` is an open change; each record is on the disk
before `append` returns; a full disk is one clear error; the crash hook leaves exactly N
records; `runs` and `find_run` read the journals back; the writer lock keeps a second
process out.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modelcache.act import journal
from modelcache.act.journal import (
    KILL_AFTER_ENV,
    Journal,
    WriterLock,
    find_run,
    iter_open_changes,
    read_records,
    runs,
)
from modelcache.errors import ModelcacheError

from .machine import run_cli, small_tmpfs

# A name with bytes that are not UTF-8 (as os.fsdecode gives it: lone surrogates) and one that is.
ODD_NAME = os.fsdecode(b"/models/caf\xe9/\xff\xfe weights.bin")
UTF8_NAME = "/models/café/模型.safetensors"
# Findings, shown by tests that fail until they are fixed:

@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh `MODELCACHE_STATE` for this test (and the processes it starts)."""
    folder = tmp_path / "state"
    monkeypatch.setenv("MODELCACHE_STATE", str(folder))
    return folder


def write_journal(
    state: Path,
    run_id: str,
    *records: dict[str, Any],
    command: str = "consolidate",
    started: float = 1.0,
    end: str | None = "complete",
) -> Path:
    """A journal file as a run leaves it: its `run` record, `records`, and an `end` record unless `end` is None."""
    folder = state / "journal"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [{"type": "run", "run": run_id, "command": command, "started": started}, *records]
    if end is not None:
        lines.append({"type": "end", "status": end, "ended": started + 1})
    path = folder / f"{run_id}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def change(action: int | str, *closing: str) -> list[dict[str, Any]]:
    """The records of one change: its `begin`, then each record type in `closing` (`done`, `abandoned`)."""
    return [{"type": "begin", "action": action, "op": "link", "target": f"/m/{action}"}] + [
        {"type": kind, "action": action} for kind in closing
    ]


# -- records ------------------------------------------------------------------------------------------------


def test_records_come_back_exactly_as_written_non_utf8_names_included(state: Path) -> None:
    j = Journal.start("consolidate", roots=[ODD_NAME, UTF8_NAME])
    written = [
        {"type": "begin", "action": 0, "op": "link", "target": ODD_NAME, "keep": UTF8_NAME, "size": 2**40},
        {"type": "done", "action": 0, "op": "link"},
        {"type": "begin", "action": "rmdir:" + ODD_NAME, "op": "rmdir", "target": os.path.dirname(ODD_NAME)},
        {"type": "abandoned", "action": "rmdir:" + ODD_NAME, "reason": "Directory not empty"},
    ]
    for record in written:
        j.append(record)
    j.finish("complete")

    assert j.path.parent == state / "journal" and j.path.name == f"{j.run_id}.jsonl"
    records = read_records(j.path)
    assert records[0] == {
        "type": "run",
        "run": j.run_id,
        "command": "consolidate",
        "started": records[0]["started"],
        "roots": [ODD_NAME, UTF8_NAME],
    }
    assert records[1:-1] == written
    assert records[-1]["type"] == "end" and records[-1]["status"] == "complete"
    assert records[1]["target"].encode("utf-8", "surrogateescape") == b"/models/caf\xe9/\xff\xfe weights.bin"
    j.path.read_bytes().decode("ascii")  # ensure_ascii: the file itself is plain ASCII, one record a line
    assert len(j.path.read_bytes().splitlines()) == len(written) + 2


def test_run_ids_sort_in_the_order_runs_started(monkeypatch: pytest.MonkeyPatch) -> None:
    starts = [1_700_000_000.5, 1_700_000_000.75, 1_700_000_001.0, 1_700_000_001.125, 1_800_000_000.0]
    clock = iter(starts)
    fake_time = SimpleNamespace(time=lambda: next(clock), strftime=time.strftime, gmtime=time.gmtime)
    monkeypatch.setattr(journal, "time", fake_time)  # the journal's clock only
    ids = [journal.new_run_id() for _ in starts]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids[0].startswith("20231114T221320.500000Z-") and ids[2].startswith("20231114T221321.000000Z-")


def test_records_that_are_not_objects_are_ignored(state: Path) -> None:
    path = write_journal(state, "r1", *change(0, "done"))
    with open(path, "a") as f:
        f.write("[1, 2]\n42\n\n")
    assert [r["type"] for r in read_records(path)] == ["run", "begin", "done", "end"]


# -- a crash mid-write -------------------------------------------------------------------------------------


def test_a_torn_last_line_is_ignored_and_the_next_record_starts_a_new_line(state: Path) -> None:
    path = write_journal(state, "r1", *change(0), end=None)
    with open(path, "a") as f:
        f.write('{"type": "done", "act')  # the crash came mid-write
    assert [r["type"] for r in read_records(path)] == ["run", "begin"]
    assert [r["action"] for r in iter_open_changes(read_records(path))] == [0]

    j = Journal(path, "r1")  # recovery opens the journal again and settles the open change
    j.append({"type": "abandoned", "action": 0, "recovered": True})
    j.finish("recovered")
    lines = path.read_text().splitlines()
    assert lines[-3] == '{"type": "done", "act'  # left as it was, on a line of its own
    assert [r["type"] for r in read_records(path)] == ["run", "begin", "abandoned", "end"]
    assert list(iter_open_changes(read_records(path))) == []


@pytest.mark.parametrize("content", [b"", b'{"type": "run", "run": "r1"}\n'])
def test_reopening_a_whole_journal_adds_no_blank_line(state: Path, content: bytes) -> None:
    path = state / "journal" / "r1.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    j = Journal(path, "r1")
    j.append({"type": "note"})
    assert path.read_bytes() == content + b'{"type": "note"}\n'


# -- open changes -------------------------------------------------------------------------------------------


def test_a_begin_without_done_or_abandoned_is_an_open_change() -> None:
    records = [*change(0, "done"), *change(1), *change(2, "abandoned"), *change(3)]
    assert [r["action"] for r in iter_open_changes(records)] == [1, 3]
    assert list(iter_open_changes([*change("rmdir:/m/x")])) == [change("rmdir:/m/x")[0]]
    assert list(iter_open_changes([])) == []


def test_a_done_closes_its_change_even_when_a_later_record_follows() -> None:
    records = [*change(0), {"type": "skip", "action": 1}, {"type": "done", "action": 0}]
    assert list(iter_open_changes(records)) == []


def test_a_second_attempt_after_an_abandoned_one_is_open_and_carries_what_it_learned(state: Path) -> None:
    """consolidate tries a reflink, abandons it (the file system refuses), then begins a hard link of the same
    action: a kill in that second attempt must leave it open, for recovery (and, in-process, for `settle`);
    a `learned` record adds to the begin it follows (an adopted clone's inode)."""
    reflink, hardlink = {**change(4)[0], "op": "reflink"}, {**change(4)[0], "op": "hardlink"}
    learned = {"type": "learned", "action": 4, "facts": {"x": 1}}
    records = [reflink, {"type": "abandoned", "action": 4}, hardlink, learned]
    assert list(iter_open_changes(records)) == [{**hardlink, "x": 1}]
    assert list(iter_open_changes([*records, {"type": "done", "action": 4}])) == []
    j = Journal.start("consolidate")
    for r in records:
        j.append(r)
    assert j.open_begin(4) == {**hardlink, "x": 1}


def test_open_begin_is_the_latest_change_until_it_is_closed(state: Path) -> None:
    j = Journal.start("consolidate")
    assert j.open_begin(0) is None
    first = change(0)[0]
    j.append(first)
    assert j.open_begin(0) == first
    assert j.open_begin(1) is None
    second = change(1)[0]
    j.append(second)
    assert j.open_begin(0) is None  # no longer the latest change
    assert j.open_begin(1) == second
    j.append({"type": "done", "action": 1})
    assert j.open_begin(1) is None
    j.append(change(2)[0])
    j.append({"type": "abandoned", "action": 2})
    assert j.open_begin(2) is None


# -- runs and find_run --------------------------------------------------------------------------------------


def test_runs_reads_status_changes_and_order(state: Path) -> None:
    assert runs() == []  # no journal folder yet
    write_journal(state, "c-complete", *change(0, "done"), *change(1, "done"), started=30.0)
    write_journal(state, "a-interrupted", *change(0, "done"), *change(1), started=10.0, end=None)
    write_journal(
        state,
        "b-recovered",
        *change(0),
        {"type": "abandoned", "action": 0},
        started=20.0,
        end="recovered",
        command="apply",
    )
    write_journal(state, "d-tie", started=30.0, command="undo", end="interrupted")
    (state / "journal" / "e-empty.jsonl").write_text("")
    (state / "journal" / "f-no-header.jsonl").write_text(json.dumps(change(0)[0]) + "\n")
    (state / "journal" / "notes.txt").write_text("not a journal\n")

    found = runs()
    assert [r.run_id for r in found] == ["a-interrupted", "b-recovered", "c-complete", "d-tie"]
    by_id = {r.run_id: r for r in found}
    assert (by_id["a-interrupted"].finished, by_id["a-interrupted"].status) == (False, "interrupted")
    assert (by_id["b-recovered"].finished, by_id["b-recovered"].status) == (True, "recovered")
    assert (by_id["c-complete"].finished, by_id["c-complete"].status) == (True, "complete")
    assert (by_id["d-tie"].finished, by_id["d-tie"].status) == (True, "interrupted")  # ended by an error
    assert [r.changes for r in found] == [1, 0, 2, 0]
    assert [r.command for r in found] == ["consolidate", "apply", "consolidate", "undo"]
    assert by_id["c-complete"].path == state / "journal" / "c-complete.jsonl"
    assert by_id["b-recovered"].started == 20.0


def test_the_last_end_record_gives_the_status(state: Path) -> None:
    """A run that ended by an error and whose open change recovery settled later: the newest `end` counts."""
    path = write_journal(state, "r1", *change(0), end="interrupted")
    with open(path, "a") as f:
        f.write(json.dumps({"type": "abandoned", "action": 0}) + "\n")
        f.write(json.dumps({"type": "end", "status": "recovered"}) + "\n")
    (run,) = runs()
    assert run.status == "recovered"


def test_find_run_by_prefix_newest_of_a_command_and_clear_errors(state: Path) -> None:
    write_journal(state, "20260101T000000.000001Z-aaaaaa", started=1.0)
    write_journal(state, "20260101T000000.000002Z-bbbbbb", started=2.0, command="apply")
    write_journal(state, "20260102T000000.000001Z-cccccc", started=3.0, command="undo")

    assert find_run("20260102").run_id == "20260102T000000.000001Z-cccccc"
    assert find_run("20260101T000000.000002").run_id == "20260101T000000.000002Z-bbbbbb"
    assert find_run("20260101T000000.000001Z-aaaaaa").run_id == "20260101T000000.000001Z-aaaaaa"
    assert find_run(None).run_id == "20260102T000000.000001Z-cccccc"
    assert find_run(None, "consolidate").run_id == "20260101T000000.000001Z-aaaaaa"
    assert find_run("2026", "apply").run_id == "20260101T000000.000002Z-bbbbbb"  # unique among apply runs

    with pytest.raises(ModelcacheError, match=r"no single journaled run matches '20260101' \(2 found\)"):
        find_run("20260101")
    with pytest.raises(ModelcacheError, match=r"no single journaled run matches 'x' \(0 found\)"):
        find_run("x")
    with pytest.raises(ModelcacheError, match=r"^no journaled clean run to undo$"):
        find_run(None, "clean")


def test_find_run_with_no_journal_at_all(state: Path) -> None:
    with pytest.raises(ModelcacheError, match=r"^no journaled run to undo$"):
        find_run(None)


# -- durability ---------------------------------------------------------------------------------------------


def test_each_record_is_on_disk_before_append_returns(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At each fsync the file already holds the record just written, whole; `append` returns only after it."""
    real_fsync = os.fsync
    synced: list[bytes] = []  # the journal's content at each fsync of it

    def fsync(fd: int) -> None:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):  # the folder's fsync (its new entry) is another test's
            synced.append(Path(f"/proc/self/fd/{fd}").read_bytes())
        real_fsync(fd)

    monkeypatch.setattr(journal.os, "fsync", fsync)
    j = Journal.start("consolidate")
    expected = [json.dumps(read_records(j.path)[0]).encode() + b"\n"]
    assert synced == [expected[0]]
    for record in [*change(0, "done"), *change(1)]:
        j.append(record)
        expected.append(json.dumps(record).encode() + b"\n")
        assert synced[-1] == b"".join(expected)  # fsynced, with this record last, before append returned
    j.finish("complete")
    assert len(synced) == len(expected) + 1 and synced[-1] == j.path.read_bytes()
    assert synced[-1].startswith(b"".join(expected)) and read_records(j.path)[-1]["status"] == "complete"


def test_a_new_journal_file_is_durable_in_its_folder(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync
    folders: list[str] = []

    def fsync(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            folders.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(journal.os, "fsync", fsync)
    Journal.start("consolidate")
    assert str(state / "journal") in folders


@pytest.fixture
def tiny_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`MODELCACHE_STATE` on a tmpfs of 64 KiB (as root; skipped, with the reason, where it cannot be mounted)."""
    with small_tmpfs(tmp_path / "small", "64k", "cannot mount a tmpfs to fill up") as mount:
        (mount / "state" / "journal").mkdir(parents=True)
        monkeypatch.setenv("MODELCACHE_STATE", str(mount / "state"))
        yield mount / "state"


def fill_up(state: Path) -> Path:
    """Take every free byte of the file system `state` is on; returns the file that holds them."""
    filler = state.parent / "filler"
    with pytest.raises(OSError, match="No space left"), open(filler, "wb") as f:
        f.write(bytes(1 << 20))
    return filler


@pytest.fixture(params=["tmpfs", "fsync"])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`MODELCACHE_STATE` where the next journal write meets a full disk: a real tiny tmpfs filled up, or an
    fsync that fails with ENOSPC (as a file system with delayed allocation reports it)."""
    if request.param == "tmpfs":
        fill_up(request.getfixturevalue("tiny_state"))
        return
    monkeypatch.setenv("MODELCACHE_STATE", str(tmp_path / "state"))

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(journal.os, "fsync", no_space)


@pytest.mark.usefixtures("full_disk")
def test_a_full_disk_is_one_clear_error() -> None:
    with pytest.raises(ModelcacheError) as raised:
        Journal.start("consolidate", pad="x" * 10_000)
    message = raised.value.message
    assert message.startswith("cannot write the journal ") and message.endswith(": No space left on device")
    assert "\n" not in message and raised.value.__cause__ is None and raised.value.__suppress_context__


def test_a_full_disk_mid_run_leaves_only_whole_records(tiny_state: Path) -> None:
    """Records that failed for want of space never leave a merged or torn line once space is back."""
    j = Journal.start("consolidate")
    filler = fill_up(tiny_state)
    with pytest.raises(ModelcacheError, match="No space left on device"):
        for action in range(100):
            j.append({**change(action)[0], "pad": "y" * 3000})
    filler.unlink()
    j.append({"type": "end", "status": "interrupted"})
    lines = j.path.read_bytes().splitlines()
    assert all(json.loads(line) for line in lines)  # every line one whole record
    assert read_records(j.path)[-1] == {"type": "end", "status": "interrupted"}


def test_a_full_disk_is_one_line_from_the_cli(tiny_state: Path, tmp_path: Path) -> None:
    """consolidate with its state on a full disk: one error line, exit 2, nothing changed, nothing printed at exit."""
    models = tmp_path / "models"
    for folder in ("a", "b"):
        (models / folder).mkdir(parents=True)
        (models / folder / "w.bin").write_bytes(b"same bytes" * 1000)
    (tmp_path / "cache").mkdir()  # an empty HF cache: it must exist, being given
    before = {p: (p.stat().st_ino, p.read_bytes()) for p in models.rglob("*.bin")}
    fill_up(tiny_state)
    done = run_cli(
        "consolidate", "--yes", "--mode", "hardlink", "--no-discover",
        "--cache-dir", tmp_path / "cache", "--models", models,
        env={"MODELCACHE_INDEX": str(tmp_path / "index.sqlite"), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.code == 2, done.err
    *risks, error = done.err.splitlines()  # as root, --mode hardlink first states its risk (docs/safety.md)
    assert all(line.startswith("modelcache: warning: [risk ") for line in risks)
    assert error.startswith("modelcache: error: cannot write the journal ") and "No space left on device" in error
    assert {p: (p.stat().st_ino, p.read_bytes()) for p in models.rglob("*.bin")} == before


# -- the crash hook -----------------------------------------------------------------------------------------

WRITE_FIVE = """
from modelcache.act.journal import Journal
j = Journal.start("consolidate")
for action in range(5):
    j.append({"type": "begin", "action": action, "op": "link", "target": "/m/%d" % action})
print("not killed", flush=True)
"""


@pytest.mark.parametrize("kill_after", [1, 3, 6])
def test_the_kill_hook_leaves_exactly_n_whole_records(state: Path, kill_after: int) -> None:
    env = {**os.environ, KILL_AFTER_ENV: str(kill_after)}
    done = subprocess.run([sys.executable, "-c", WRITE_FIVE], capture_output=True, env=env, timeout=60)
    assert done.returncode == -signal.SIGKILL and done.stdout == b""
    (path,) = (state / "journal").glob("*.jsonl")
    data = path.read_bytes()
    assert data.endswith(b"\n") and len(data.splitlines()) == kill_after
    assert len(read_records(path)) == kill_after


def test_without_the_kill_hook_the_process_runs_on(state: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != KILL_AFTER_ENV}
    done = subprocess.run([sys.executable, "-c", WRITE_FIVE], capture_output=True, env=env, timeout=60)
    assert done.returncode == 0 and done.stdout == b"not killed\n"


# -- the writer lock ----------------------------------------------------------------------------------------

HOLD_THE_LOCK = """
import sys
from modelcache.act.journal import WriterLock
with WriterLock():
    print("held", flush=True)
    sys.stdin.read()
"""


def test_the_writer_lock_keeps_a_second_process_out(state: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(ModelcacheError) as raised, WriterLock(timeout=0.1):
            pytest.fail("took the lock another process holds")
        assert raised.value.message == (f"another modelcache process is changing files (lock: {state / 'writer.lock'})")
    finally:
        holder.communicate(b"", timeout=60)
    assert holder.returncode == 0
    with WriterLock(timeout=0):  # released when the holder let go
        pass


def test_a_state_folder_that_cannot_be_made_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a file").write_text("")
    monkeypatch.setenv("MODELCACHE_STATE", str(tmp_path / "a file"))
    with pytest.raises(ModelcacheError), WriterLock(timeout=0):
        pass

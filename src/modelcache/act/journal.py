"""Write-ahead journal of every change: one JSON-lines file per run, each record fsynced.

A change is journaled as `begin` (with everything needed to finish or undo it) before the
first byte moves, and `done` after. A run ends with an `end` record; a journal without one
was interrupted, and `recover.recover` finishes or rolls back its open changes before
anything else runs.

Paths are written as Python strings; file names that are not UTF-8 travel as lone
surrogates, which Python's json reads back exactly.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..errors import ModelcacheError
from ..locations import state_dir
from .fsops import fsync_dir

# Test hook: SIGKILL this process right after the Nth journal record reaches the disk, to
# prove that a crash at that point loses nothing (tests/test_consolidate_faults.py, tests/test_journal.py).
KILL_AFTER_ENV = "MODELCACHE_TEST_KILL_AFTER_RECORDS"


def journal_dir() -> Path:
    return state_dir() / "journal"


def new_run_id() -> str:
    """UTC time to the microsecond, then random: ids sort in the order runs started."""
    now = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z-{secrets.token_hex(3)}"


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


class Journal:
    """An open journal for one run. Use `Journal.start(...)`, then `append`, then `finish`."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        try:
            torn = path.exists() and path.stat().st_size > 0 and _last_byte(path) != b"\n"
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
            if torn:  # a crash cut the last record short: start the next one on a line of its own
                self._file.write("\n")
        except OSError as e:
            raise ModelcacheError(f"cannot write the journal {path}: {e.strerror}") from None
        self._count = 0
        self.last_begin: dict[str, Any] = {}
        self._closed: set[Any] = set()
        kill_after = os.environ.get(KILL_AFTER_ENV)
        self._kill_after = int(kill_after) if kill_after else None

    @classmethod
    def start(cls, command: str, **fields: Any) -> Journal:
        folder = journal_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ModelcacheError(f"cannot write the journal in {folder}: {e.strerror}") from None
        run_id = new_run_id()
        journal = cls(folder / f"{run_id}.jsonl", run_id)
        journal.append({"type": "run", "run": run_id, "command": command, "started": time.time(), **fields})
        try:
            fsync_dir(str(folder))  # the new file's name, durable too: else a power cut can lose the journal whole
        except OSError as e:
            raise ModelcacheError(f"cannot write the journal in {folder}: {e.strerror}") from None
        return journal

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and make it durable before returning (a full disk is a clear error)."""
        try:
            self._file.write(json.dumps(record, ensure_ascii=True) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as e:
            raise ModelcacheError(f"cannot write the journal {self.path}: {e.strerror}") from None
        if record.get("type") == "begin":
            self.last_begin = record
            self._closed.discard(record["action"])  # a second attempt (another method) opens it again
        elif record.get("type") == "learned" and record.get("action") == self.last_begin.get("action"):
            self.last_begin.update(record["facts"])
        elif record.get("type") in ("done", "abandoned"):
            self._closed.add(record.get("action"))
        self._count += 1
        if self._kill_after is not None and self._count >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def open_begin(self, action: Any) -> dict[str, Any] | None:
        """The `begin` of `action` if it is the latest change and not closed yet (an error cut it short)."""
        if self.last_begin.get("action") == action and action not in self._closed:
            return self.last_begin
        return None

    def finish(self, status: str) -> None:
        self.append({"type": "end", "status": status, "ended": time.time()})
        self._file.close()


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every whole record in a journal; a torn last line (a crash mid-write) is ignored."""
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    path: Path
    command: str
    started: float
    finished: bool
    status: str
    changes: int  # `done` records


def runs() -> list[RunInfo]:
    """Every journaled run, oldest first."""
    folder = journal_dir()
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.jsonl")):
        records = read_records(path)
        if not records or records[0].get("type") != "run":
            continue
        end = next((r for r in reversed(records) if r.get("type") == "end"), None)
        found.append(
            RunInfo(
                run_id=records[0]["run"],
                path=path,
                command=str(records[0].get("command")),
                started=float(records[0].get("started", 0)),
                finished=end is not None,
                status=str(end.get("status")) if end else "interrupted",
                changes=sum(1 for r in records if r.get("type") == "done"),
            )
        )
    return sorted(found, key=lambda r: (r.started, r.run_id))


def find_run(run_id: str | None, command: str | None = None) -> RunInfo:
    """A run by id (or a unique prefix), or the newest run of `command` when `run_id` is None."""
    candidates = [r for r in runs() if command is None or r.command == command]
    if run_id is None:
        if not candidates:
            raise ModelcacheError(f"no journaled {command or ''} run to undo".replace("  ", " "))
        return candidates[-1]
    matches = [r for r in candidates if r.run_id.startswith(run_id)]
    if len(matches) != 1:
        raise ModelcacheError(f"no single journaled run matches {run_id!r} ({len(matches)} found)")
    return matches[0]


class WriterLock:
    """One modelcache process changes files at a time (a second one waits, then gives up)."""

    def __init__(self, timeout: float = 10.0) -> None:
        self._folder = state_dir()
        self._lock = FileLock(str(self._folder / "writer.lock"), timeout=timeout)

    def __enter__(self) -> WriterLock:
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout:  # (a TimeoutError, so an OSError: caught first)
            raise ModelcacheError(
                f"another modelcache process is changing files (lock: {self._lock.lock_file})"
            ) from None
        except OSError as e:
            raise ModelcacheError(f"cannot use the state folder {self._folder}: {e.strerror or e}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def latest_changes(records: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """Per action, its latest `begin` record, with what the change journaled as it went (`learned` records
    after it: facts known only once a step was taken, such as the inode of a file it made)."""
    latest: dict[Any, dict[str, Any]] = {}
    for r in records:
        if r.get("type") == "begin":
            latest[r["action"]] = dict(r)
        elif r.get("type") == "learned" and r.get("action") in latest:
            latest[r["action"]].update(r.get("facts", {}))
    return latest


def iter_open_changes(records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The latest `begin` of each action with no `done` or `abandoned` record after it (an earlier attempt,
    abandoned, closes only itself), with what it learned."""
    latest = latest_changes(records)
    open_actions: dict[Any, None] = {}
    for r in records:
        if r.get("type") == "begin":
            open_actions[r["action"]] = None
        elif r.get("type") in ("done", "abandoned"):
            open_actions.pop(r.get("action"), None)
    for action in open_actions:
        yield latest[action]

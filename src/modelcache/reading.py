"""Reads scheduled for the disk: in which order files are read, how many reads are in flight, and
how many threads hash what they bring.

- **Threads: as many as hashing needs**, three a core (`HASHERS`): while one waits for the first
  bytes of its task, another hashes. hashlib frees the GIL while it hashes, so more threads only
  wait for a core, and on small files they fight over the GIL. Threads are not what keeps the
  disk busy here.
- **Reads in flight: asked for ahead of the hashing**, with `posix_fadvise(POSIX_FADV_WILLNEED)`,
  which starts the kernel reading and returns. A task takes a batch of files (up to `BATCH_FILES`
  files or `BATCH_BYTES` bytes), opens them all and asks for all of their bytes before it hashes
  the first, so a batch of small or medium files is one burst of requests that the disk serves
  in parallel, while a single reader would wait for each file in turn. A larger file is read
  ahead by the kernel, or asked for `AHEAD` bytes ahead of where it is hashed where the disk's
  own readahead (`/sys/block/*/queue/read_ahead_kb`, 128 KiB on many machines) asks for less.
  On a disk without heads up to `STREAMS` large files are read at once, each a stream the kernel
  reads ahead of.
- **Copies read in step.** Files of one size whose claims say they are equal are read together: one
  is hashed, the others compared with it byte for byte as it is read (`digests.read_in_step`), so a
  group costs one hash, not one a copy (on 2 cores, the data-heavy tree's first run took half the
  CPU). On a rotational disk this is done for large files only, each read in steps of the kernel's
  readahead (a seek a step); smaller files there are read alone, in the order of the sweep.
- **Order: the disk's** (`disks.py`): on a rotational disk, the order the files lie on it; elsewhere,
  largest first.

The figures behind the numbers are in docs/performance.md (issue 17).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from .common import open_quietly
from .digests import SMALL, Hasher, HashResult, edge_block, fingerprint_open, read_in_step
from .disks import Disk, Scheduler, Target

if TYPE_CHECKING:
    from .inventory import FileFacts

T = TypeVar("T", bound=Target)
# Three hashing threads a core: while one waits for the first bytes of its task, another hashes (one a
# core left the cores idle a quarter of the time on a cold disk; docs/performance.md, issue 17).
HASHERS = 3 * (os.cpu_count() or 1)
BATCH_FILES = 64  # files per task: the pool's cost per task (~20 us) is paid per batch
BATCH_BYTES = 16 << 20  # bytes per task: files this large or larger are a task of their own
AHEAD = 16 << 20  # bytes of a large file asked for ahead of where it is hashed
# Large files (`BATCH_BYTES` or more) of a disk without heads are read by up to this many threads at
# once: each is a stream the kernel reads ahead of (with 6 threads in all, largest first, the data-heavy
# tree hashed 35% slower than with 16, issue 7's number; docs/performance.md). On a rotational disk
# they stay within `HASHERS`, in block order: as few streams as hashing needs, for one sweep.
STREAMS = 16
WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)
SEQUENTIAL = getattr(os, "POSIX_FADV_SEQUENTIAL", None)


R = TypeVar("R")
# (paths read together, their size, git blob sha1 too, bytes to keep asked for ahead by hand) of each
# unit of a task: a file, or files of one size read in step (`Unit`)
Job = list[tuple[tuple[str, ...], int, bool, int]]
Opened = list[list[int | OSError]]  # the files of each unit of a task, open, or why not


def batches(targets: Sequence[T], files: Callable[[T], int] = lambda t: 1) -> list[list[T]]:
    """`targets`, in their order, cut into tasks: a large file alone, smaller ones up to `BATCH_FILES`
    files or `BATCH_BYTES` bytes together (a target being `files(t)` files of its size)."""
    out: list[list[T]] = []
    current: list[T] = []
    current_files = current_bytes = 0
    for t in targets:
        size = t.facts.size
        if size >= BATCH_BYTES:
            out.append([t])
            continue
        n = files(t)
        current.append(t)
        current_files += n
        current_bytes += size * n
        if current_files >= BATCH_FILES or current_bytes >= BATCH_BYTES:
            out.append(current)
            current, current_files, current_bytes = [], 0, 0
    if current:
        out.append(current)
    return out


# -- reading ----------------------------------------------------------------------------------------------


def ahead_for(disk: Disk) -> int:
    """Bytes of a large file to keep asked for ahead of the hashing by hand on `disk`: `AHEAD`, or 0
    where the disk's own readahead (`read_ahead_kb`, doubled for a file read whole) asks for as much
    (8 MiB here: by hand, the data-heavy tree took 10% longer to hash, docs/performance.md)."""
    kernel = disk.read_ahead_kb
    return 0 if kernel is not None and 2 * kernel * 1024 >= AHEAD else AHEAD


def will_need(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start reading these bytes now (it returns at once); a file system that
    cannot is read when asked, as before."""
    if WILLNEED is not None and length > 0:
        _advise(fd, offset, length, WILLNEED)


def _advise(fd: int, offset: int, length: int, advice: int) -> None:
    try:  # noqa: SIM105 (contextlib.suppress costs more than the call, once a file)
        os.posix_fadvise(fd, offset, length, advice)
    except OSError:
        pass  # only a hint


def _open_all(job: Job, first: Callable[[int, int, int], None]) -> Opened:
    """Open every file of a task and call `first(fd, size, ahead)` on each (the reads to start)."""
    opened: Opened = []
    for paths, size, _, ahead in job:
        unit: list[int | OSError] = []
        for path in paths:
            try:
                fd = open_quietly(path)
            except OSError as e:
                unit.append(e)
                continue
            unit.append(fd)
            first(fd, size, ahead)
        opened.append(unit)
    return opened


def _start(fd: int, size: int, ahead: int) -> None:
    """Ask for a file's bytes as its task starts: all of a file up to `AHEAD` bytes; of a larger one,
    the first `ahead` bytes (more as it is hashed), or none where the disk's own readahead asks for
    as much (`ahead` 0): pages asked for by hand carry no mark that starts the kernel's next readahead,
    so a file the kernel would read ahead on its own is read more slowly after them."""
    if size > SMALL and SEQUENTIAL is not None:
        _advise(fd, 0, 0, SEQUENTIAL)  # the whole file will be read: the kernel doubles its own readahead
    will_need(fd, 0, size if size <= AHEAD else min(size, ahead))


# What reading a unit found, for each of its files: its digests (those of the one hashed, for a file
# found equal to it byte for byte), why it could not be read, or None: not alike the one hashed, or that
# one could not be read (it is to be hashed alone).
Outcome = HashResult | OSError | None


def hash_opened(job: Job, fds: Opened, on_bytes: Callable[[int], None] | None = None) -> list[list[Outcome]]:
    """What reading each unit of a task, opened as `fds`, found: the first file that could be opened is
    hashed, the others compared with it in step (`digests.read_in_step`)."""
    return [
        _hash_unit(unit, size, git, on_bytes, will_need_ahead if ahead else None)
        for (_, size, git, ahead), unit in zip(job, fds, strict=True)
    ]


def _hash_unit(
    unit: list[int | OSError],
    size: int,
    git: bool,
    on_bytes: Callable[[int], None] | None,
    ahead: Callable[[int, int, int, int], int] | None,
) -> list[Outcome]:
    opened = [(i, fd) for i, fd in enumerate(unit) if not isinstance(fd, OSError)]
    outcomes: list[Outcome] = [fd if isinstance(fd, OSError) else None for fd in unit]
    if not opened:
        return outcomes
    (first, fd), others = opened[0], opened[1:]
    hasher = Hasher(size, gitsha1=git)
    try:
        alike = read_in_step(fd, [o for _, o in others], hasher, on_bytes=on_bytes, ahead=ahead)
        # No other file alike: the first was not read to its end, and is hashed alone later.
        result: Outcome = None if others and True not in alike else hasher.result()
    except OSError as e:
        result, alike = e, [False] * len(others)
    outcomes[first] = result
    for (i, _), same in zip(others, alike, strict=True):
        if isinstance(same, OSError):
            outcomes[i] = same
        elif same and isinstance(result, HashResult):
            outcomes[i] = result
    return outcomes


def will_need_ahead(fd: int, asked: int, done: int, size: int) -> int:
    """While a large file is hashed: keep `AHEAD` / 2 to `AHEAD` bytes asked for past `done`.
    Returns how far the file has been asked for now."""
    asked = max(asked, min(size, AHEAD))  # `_start` asked for the first `AHEAD` bytes
    if asked < size and asked - done < AHEAD // 2:
        will_need(fd, asked, AHEAD // 2)
        asked += AHEAD // 2
    return asked


def _start_edges(fd: int, size: int, ahead: int) -> None:
    block = edge_block(size)
    will_need(fd, 0, block)
    if size > block:
        will_need(fd, max(block, size - block), block)


def fingerprint_opened(job: Job, fds: Opened) -> list[list[bytes | OSError]]:
    """The edge fingerprint (`digests.edge_fingerprint`) of each file of a task, opened as `fds`, or why not."""
    out: list[list[bytes | OSError]] = []
    for (_, size, _, _), unit in zip(job, fds, strict=True):
        prints: list[bytes | OSError] = []
        for fd in unit:
            try:
                prints.append(fd if isinstance(fd, OSError) else fingerprint_open(fd, size))
            except OSError as e:
                prints.append(e)
        out.append(prints)
    return out


class Unit(Generic[T]):
    """Files read together: one file, or files of one size that are expected to be equal (claims say
    so), read in step so that one is hashed and the others only compared with it. Read where and when
    its first file is."""

    __slots__ = ("files",)

    def __init__(self, files: Sequence[T]) -> None:
        self.files = files

    @property
    def path(self) -> str:
        return self.files[0].path

    @property
    def facts(self) -> FileFacts:
        return self.files[0].facts


def _count(unit: Unit[T]) -> int:
    return len(unit.files)


class Readers(Generic[T]):
    """The hashing threads of one run and the reads asked for ahead of them, started when first needed
    (a run that reads nothing starts none); `scheduler` orders the reads."""

    def __init__(self, threads: int | None = None, scheduler: Scheduler | None = None) -> None:
        self.threads = max(1, threads or HASHERS)
        self.scheduler = scheduler or Scheduler()

    def hash(
        self, targets: Sequence[T], wants_git: Callable[[T], bool], on_bytes: Callable[[int], None] | None = None
    ) -> Iterator[tuple[T, HashResult | OSError]]:
        """(target, its digests or why not) for each target, in the order they were read."""
        for unit, outcomes in self.hash_alike([[t] for t in targets], wants_git, on_bytes):
            outcome = outcomes[0]
            assert outcome is not None  # a file alone is hashed, or cannot be read
            yield unit[0], outcome

    def hash_alike(
        self,
        groups: Sequence[Sequence[T]],
        wants_git: Callable[[T], bool],
        on_bytes: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[Sequence[T], list[Outcome]]]:
        """Hash each group of files of one size expected to be equal: one of them, the others compared
        with it byte for byte as it is read (a memcmp instead of a hash each: on 2 cores, the
        data-heavy tree's first run took half the CPU). Yields (files, what reading found of each),
        in the order they were read. On a rotational disk, files under `BATCH_BYTES` are read alone,
        in the order of their place on it (a sweep); larger ones in step, each asked for in the
        kernel's readahead steps (8 to 16 MiB: a seek a step, a few % of a disk with heads)."""
        disk = self.scheduler.disk
        units: list[Unit[T]] = []
        for group in groups:
            if len(group) > 1 and group[0].facts.size < BATCH_BYTES and disk(group[0].facts.dev).rotational:
                units.extend(Unit([t]) for t in group)
            else:
                units.append(Unit(group))
        tasks = batches(self.scheduler.order(units), _count)

        def describe(u: Unit[T]) -> tuple[tuple[str, ...], int, bool, int]:
            files = u.files
            git = any(wants_git(t) for t in files)
            return (tuple(t.path for t in files), u.facts.size, git, ahead_for(disk(u.facts.dev)))

        def work(job: Job, fds: Opened) -> list[list[Outcome]]:
            return hash_opened(job, fds, on_bytes)

        def alone(task: list[Unit[T]]) -> bool:  # a large file of a disk without heads: a stream of its own
            return len(task) == 1 and task[0].facts.size >= BATCH_BYTES and not disk(task[0].facts.dev).rotational

        pipeline = _Pipeline(tasks, describe, self.threads, _start, work, alone, max(self.threads, STREAMS))
        for task, results in zip(tasks, pipeline, strict=True):
            for unit, outcomes in zip(task, results, strict=True):
                yield unit.files, outcomes

    def fingerprints(self, targets: Sequence[T]) -> Iterator[tuple[T, bytes | OSError]]:
        """(target, the fingerprint of its ends or why not) for each target: 128 KiB each, so in tasks
        of `BATCH_FILES` whatever their sizes."""
        ordered = [Unit([t]) for t in self.scheduler.order(targets)]
        tasks = [ordered[i : i + BATCH_FILES] for i in range(0, len(ordered), BATCH_FILES)]
        pipeline = _Pipeline(tasks, _no_git, self.threads, _start_edges, fingerprint_opened)
        for task, results in zip(tasks, pipeline, strict=True):
            for unit, (result,) in zip(task, results, strict=True):
                yield unit.files[0], result


def _no_git(u: Unit[T]) -> tuple[tuple[str, ...], int, bool, int]:
    return ((u.path,), u.facts.size, False, 0)


class _Pipeline(Generic[T, R]):
    """`threads` threads take the tasks in order; each opens all the files of its task and asks for
    their bytes (`start`) before it hashes the first (`work`). Iterating gives each task's results
    in the order of `tasks`, as they are ready. A task's (path, size, git) are made when it is taken
    (`describe`): held for every file to read at once, they were 12 MB at a million files.
    """

    def __init__(
        self,
        tasks: list[list[T]],
        describe: Callable[[T], tuple[tuple[str, ...], int, bool, int]],
        threads: int,
        start: Callable[[int, int, int], None],
        work: Callable[[Job, Opened], list[R]],
        alone: Callable[[list[T]], bool] = lambda task: False,
        most: int = 0,
    ) -> None:
        """`threads` hash at once; tasks for which `alone` is true (large files of a disk without heads)
        are read by up to `most` threads at once, all tasks counted."""
        import threading

        self.tasks = tasks
        self.describe = describe
        self.start = start
        self.work = work
        self.cond = threading.Condition()
        self.results: dict[int, list[R]] = {}
        self.taken = 0  # tasks handed to a thread
        self.failure: BaseException | None = None
        self.stopping = False
        self.alone = alone
        self.free = threads  # threads that may take a task not `alone` now
        self.threads = [
            threading.Thread(target=self._run, name=f"modelcache-hash-{i}", daemon=True)
            for i in range(min(max(threads, most), len(tasks)))
        ]

    def __iter__(self) -> Iterator[list[R]]:
        if not self.tasks:
            return
        for thread in self.threads:
            thread.start()
        finished = False
        try:
            for k in range(len(self.tasks)):
                with self.cond:
                    while k not in self.results and self.failure is None:
                        self.cond.wait()
                    if self.failure is not None:
                        raise self.failure
                    results = self.results.pop(k)
                yield results
            finished = True
        finally:
            with self.cond:
                self.stopping = True
            if finished:
                for thread in self.threads:
                    thread.join()
            # else (an exception, Ctrl-C) each thread ends the file it is on, without being waited for

    def _run(self) -> None:
        try:
            while True:
                with self.cond:
                    # Tasks are taken in order, each once a thread may run it: they start in order.
                    while True:
                        k = self.taken
                        if self.stopping or k >= len(self.tasks):
                            return
                        gated = not self.alone(self.tasks[k])
                        if not gated or self.free:
                            break
                        self.cond.wait()
                    self.taken += 1
                    self.free -= gated
                try:
                    job = [self.describe(t) for t in self.tasks[k]]
                    fds = _open_all(job, self.start)
                    try:
                        results = self.work(job, fds)
                    finally:
                        _close_all(fds)
                finally:
                    with self.cond:
                        self.free += gated
                        self.cond.notify_all()
                with self.cond:
                    self.results[k] = results
                    self.cond.notify_all()
        except BaseException as e:  # a bug, not a file that cannot be read (those are results)
            with self.cond:
                if self.failure is None:
                    self.failure = e
                self.stopping = True
                self.cond.notify_all()


def _close_all(fds: Opened) -> None:
    for unit in fds:
        for fd in unit:
            if not isinstance(fd, OSError):
                os.close(fd)

"""Fault injection into the one module that changes files, `modelcache.act.fsops`: the harness every
fault test uses.

The writers are found, not listed: every public function of fsops except the few that only read
(`READ_ONLY`, each with why). A new fsops function is therefore a writer, and the coverage test in
tests/test_faults.py fails until some scenario injects a fault at it.

`inject(at=N)` makes the Nth writer call of the block raise `OSError(code)` instead of running (or
`inject(op="write_ref")`: the first call of that writer). The wrapper goes where each function is
looked up: fsops' own globals (so calls inside fsops, as `replace` -> `fsync_dir`, fail too) and
every modelcache module that bound a writer by name (`journal` imports `fsync_dir`). The object it
yields says which calls were made and whether and where the fault fired; leaving the block without
an exception and without the fault firing fails the test (a fault aimed at a function nothing calls
any more is a failure, not a silent pass).

`sweep` runs a scenario once unfaulted, then once per call index of that run, each time on a fresh
machine (a copy of a template, or the same machine put back), with a fault at that call (errnos in
rotation), and checks the scenario's invariants after each.
"""

from __future__ import annotations

import errno
import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Generic, Protocol, TypeVar

from modelcache.act import fsops
from modelcache.errors import ModelcacheError

# Public functions of fsops that change nothing, so a fault there is no fault of a write.
READ_ONLY = {
    "temp_name": "builds a name beside the target; touches no file",
    "partial_name": "builds huggingface_hub's partial-download name beside a blob; touches no file",
    "leftover_temp_files": "walks folders and lists names; reads only",
}
ERRNOS = (errno.ENOSPC, errno.EIO, errno.EACCES, errno.EPERM, errno.EXDEV, errno.EROFS)
_WRAPPED = "__fault_wrapper_of__"
M = TypeVar("M")
R = TypeVar("R")


def writers() -> tuple[str, ...]:
    """Every public function defined in fsops that is not `READ_ONLY`, sorted."""
    defined = {
        name
        for name, value in vars(fsops).items()
        if inspect.isfunction(value) and value.__module__ == fsops.__name__ and not name.startswith("_")
    }
    assert set(READ_ONLY) <= defined, f"READ_ONLY names functions fsops no longer has: {set(READ_ONLY) - defined}"
    return tuple(sorted(defined - set(READ_ONLY)))


WRITERS = writers()


def errno_for(at: int) -> int:
    """The errno of the fault at call `at` of a sweep: ENOSPC, EIO, EACCES, EPERM, EXDEV, EROFS in turn."""
    return ERRNOS[at % len(ERRNOS)]


@dataclass
class Call:
    """One writer call: its name, its first argument (the path it acts on), and how it ended:
    "running", "ok", "injected", or the errno name of a real failure (an unsupported clone: "EOPNOTSUPP")."""

    op: str
    path: str | None
    outcome: str = "running"


@dataclass(repr=False)
class Faults:
    """What one `inject` block saw. `target` describes the fault asked for ("" for none)."""

    target: str
    code: int
    calls: list[Call] = field(default_factory=list)
    fired_at: int | None = None  # 1-based index in `calls`

    @property
    def fired(self) -> bool:
        return self.fired_at is not None

    @property
    def fault(self) -> Call | None:
        return self.calls[self.fired_at - 1] if self.fired_at is not None else None

    @property
    def ops(self) -> list[str]:
        return [c.op for c in self.calls]

    def first_ok(self, op: str) -> int:
        """The 1-based index of the first call of `op` that worked (a fault there replaces a write that
        would have happened); AssertionError when no call of `op` worked."""
        for i, call in enumerate(self.calls, start=1):
            if call.op == op and call.outcome == "ok":
                return i
        raise AssertionError(f"no call of fsops.{op} worked in this run: {self.summary()}")

    def summary(self) -> str:
        where = f"fired at call {self.fired_at} ({self.fault})" if self.fault else "did not fire"
        code = errno.errorcode[self.code]
        return f"{self.target or 'no fault'} [{code}] {where}; {len(self.calls)} calls: {self.ops}"

    __str__ = __repr__ = summary


def _lookups() -> list[tuple[ModuleType, str, str]]:
    """(module, attribute, writer) for every place a modelcache module looks a writer up: fsops' own
    globals, and every module that bound one by name (`from .fsops import fsync_dir`)."""
    originals = {id(getattr(fsops, name)): name for name in WRITERS}
    found = []
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "modelcache" or module_name.startswith("modelcache.")):
            continue
        for attr, value in list(vars(module).items()):
            writer = originals.get(id(value))
            if writer is not None and value is getattr(fsops, writer):
                found.append((module, attr, writer))
    return found


@contextmanager
def inject(
    at: int | None = None, *, op: str | None = None, path: str | None = None, nth: int = 1, code: int = errno.EIO
) -> Iterator[Faults]:
    """Fail the `at`-th writer call of the block (1-based), or the `nth` call of the writer `op` (on `path`,
    its first argument, if given), with `OSError(code)` naming that argument; with neither, fail nothing.

    The failing call does not run. Calls after it (the caller's clean-up) run and are recorded.
    Leaving the block normally without the fault having fired raises AssertionError."""
    if op is not None and op not in WRITERS:
        raise ValueError(f"fsops.{op} is not a writer (writers: {', '.join(WRITERS)})")
    if path is not None and op is None:
        raise ValueError("a path chooses among the calls of one writer: name it (op=...)")
    assert not hasattr(getattr(fsops, WRITERS[0]), _WRAPPED), "inject blocks do not nest"
    target = f"call {at}" if at is not None else f"call {nth} of fsops.{op}" if op is not None else ""
    target += f" on {path}" if path is not None and target else ""
    faults = Faults(target, code)
    seen_of_op = 0

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal seen_of_op
            first = os.fsdecode(args[0]) if args and isinstance(args[0], (str, bytes, os.PathLike)) else None
            call = Call(name, first)
            faults.calls.append(call)
            chosen = name == op and (path is None or first == path)
            seen_of_op += chosen
            hit = len(faults.calls) == at if at is not None else chosen and seen_of_op == nth
            if hit and not faults.fired:
                call.outcome = "injected"
                faults.fired_at = len(faults.calls)
                raise OSError(code, os.strerror(code), first)
            try:
                result = fn(*args, **kwargs)
            except OSError as e:
                call.outcome = errno.errorcode.get(e.errno or 0, repr(e))
                raise
            except BaseException:
                call.outcome = "raised"
                raise
            call.outcome = "ok"
            return result

        setattr(wrapper, _WRAPPED, fn)
        return wrapper

    wrappers = {name: wrap(name, getattr(fsops, name)) for name in WRITERS}
    patched = _lookups()
    for module, attr, writer in patched:
        setattr(module, attr, wrappers[writer])
    try:
        yield faults
    finally:
        for module, attr, writer in patched:
            setattr(module, attr, getattr(wrappers[writer], _WRAPPED))
        _unwrap_late_bindings()
    if target and not faults.fired:
        raise AssertionError(f"the fault never fired: {faults}")


def _unwrap_late_bindings() -> None:
    """A module imported inside the block may have bound a wrapper by name: give it the original."""
    for module_name, module in list(sys.modules.items()):
        if module is not None and module_name.startswith("modelcache"):
            for attr, value in list(vars(module).items()):
                original = getattr(value, _WRAPPED, None)
                if original is not None:
                    setattr(module, attr, original)


def record() -> AbstractContextManager[Faults]:
    """Record the writer calls of the block, failing none."""
    return inject()


def attempt(fn: Callable[[], R]) -> R | ModelcacheError:
    """`fn()`, or the `ModelcacheError` it raised, whose message must be one line. Anything else (an
    OSError, a bug) propagates: it would be a traceback or an internal error for the user."""
    try:
        return fn()
    except ModelcacheError as e:
        assert e.message and "\n" not in e.message and "Traceback" not in e.message, repr(e.message)
        return e


# -- sweeps ----------------------------------------------------------------------------------------------


class Scenario(Protocol[M, R]):
    """A command on a machine, and what must hold after it, with or without a fault."""

    def fresh(self, label: str) -> M:
        """A machine to run on, as the scenario's template (a copy, or the same one put back)."""
        ...

    def act(self, m: M) -> R:
        """The command under test (only its writer calls are counted and faulted)."""
        ...

    def check(self, m: M, outcome: R | ModelcacheError, fault: Faults | None) -> None:
        """The invariants, after the run (`fault` None: the unfaulted run)."""
        ...

    def done(self, m: M) -> None:
        """Let the machine go."""
        ...


@dataclass(frozen=True)
class Swept(Generic[R]):
    """What a sweep did: the unfaulted run's calls, and each faulted run."""

    clean: Faults
    faulted: tuple[Faults, ...]

    @property
    def fired_ops(self) -> set[str]:
        return {f.fault.op for f in self.faulted if f.fault is not None}


def run_once(scenario: Scenario[M, R], label: str, faults: Callable[[], AbstractContextManager[Faults]]) -> Faults:
    """One run of `scenario` on a fresh machine inside `faults()` (an `inject` or `record`), then its checks."""
    m = scenario.fresh(label)
    try:
        with faults() as seen:
            outcome = attempt(lambda: scenario.act(m))
        assert seen.fired or not seen.target, seen
        scenario.check(m, outcome, seen if seen.target else None)
        return seen
    finally:
        scenario.done(m)


_BASELINES: dict[int, tuple[object, Faults]] = {}


def baseline(scenario: Scenario[M, R]) -> Faults:
    """The scenario's run without a fault (made once: every run of a scenario makes the same calls)."""
    key = id(scenario)
    if key not in _BASELINES:
        _BASELINES[key] = (scenario, run_once(scenario, "baseline", record))  # the scenario kept: its id stays its
    return _BASELINES[key][1]


def sweep(scenario: Scenario[M, R]) -> Swept[R]:
    """The scenario unfaulted, then with a fault at each of its writer calls in turn (errnos rotating)."""
    clean = baseline(scenario)
    assert clean.calls, "the scenario made no writer call"
    faulted = tuple(
        run_once(scenario, f"at-{at}", functools.partial(inject, at, code=errno_for(at)))
        for at in range(1, len(clean.calls) + 1)
    )
    for at, seen in enumerate(faulted, start=1):
        assert seen.fired_at == at, seen
    return Swept(clean, faulted)

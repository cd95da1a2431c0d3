"""What the examples share: virtual time, a fault switch, an idempotency table.

None of this is sagaflow: it is the scaffolding a real application has around its sagas
(participants that remember idempotency keys) plus what a demo and a test suite need
(faults to inject, time that does not have to pass for real).

- :func:`run_virtual` and :class:`LoopClock`: run coroutines on an event loop whose time
  jumps to the next timer when nothing is ready, so an async step that hangs past a
  10 s timeout is cancelled at once, and the durations printed are the virtual ones.
  (Sync sagas use ``sagaflow.testing.VirtualClock``: sleeps instant but recorded.)
- :class:`Faults`: each participant's switch to make an operation fail, fail after its
  effect (the response is lost), or hang.
- :func:`killed_child`: run a demo's child process that is SIGKILLed mid-saga, and say so.
- :class:`IdempotencyKeys`: a participant's memory of the keys it has applied, so a
  retried call returns the first call's result and a compensation that comes before
  (or without) its forward call leaves a tombstone that refuses the late forward call.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import attrs

from sagaflow import Direction, SagaRecord, StepContext
from sagaflow.stores import Store

__all__ = [
    "case_folder",
    "BlockingStore",
    "Faults",
    "IdempotencyKeys",
    "LoopClock",
    "Voided",
    "forward_key",
    "run_virtual",
]

T = TypeVar("T")

#: The repository's root: where a demo's child process runs from.
ROOT = Path(__file__).resolve().parents[1]


def killed_child(out: Any, module: str, *args: str) -> int:
    """Run ``python -m module args...`` (a demo's child, which kills itself with SIGKILL
    inside a saga), print its output with ``out.out`` and note the kill; its exit status.
    A child that was not killed is an error naming how it ended."""
    child = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )
    for line in child.stdout.splitlines():
        out.out(line)
    if child.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the child should have been killed; it exited {child.returncode}: "
                           f"{child.stderr.strip()}")
    out.note(f"process killed (SIGKILL): exit status {child.returncode}")
    return child.returncode


def forward_key(ctx: StepContext) -> str:
    """The idempotency key of the forward call that ``ctx`` (a compensation's) undoes.

    A compensation runs after the step failed for good, timed out or completed; only the
    participant knows whether the forward call took effect, and it knows it by this key.
    """
    return f"{ctx.saga_id}:{ctx.step}:{Direction.FORWARD.value}"


# --- time ---------------------------------------------------------------------------


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that, when nothing is ready and a timer is due, skips to the timer."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        ready: list[tuple[Any, int]] = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only real I/O can wake the loop
            return super().select(None)
        self.now += timeout
        return []


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: ``time()`` moves only by jumping to due timers.

    Right for coroutines that wait with ``asyncio.sleep`` and ``asyncio.timeout`` (the
    async examples' participants). Work on other threads does not move this time, so do
    not use it for sagas with plain ``def`` steps (run in the executor under ``arun``).
    """

    def __init__(self) -> None:
        self._virtual = _JumpingSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh virtual-time event loop."""
    with asyncio.Runner(loop_factory=_VirtualTimeLoop) as runner:
        return runner.run(main)


class LoopClock:
    """An orchestrator clock that reads the running event loop's time.

    Under :func:`run_virtual` that is virtual time, shared by the orchestrator (backoff,
    durations) and the participants (latency, hangs, timeouts): one consistent timeline.
    It starts at ``start`` (default: the real time now), so records carry real dates.
    Only for ``arun``: it has no blocking ``sleep``.
    """

    def __init__(self, start: float | None = None) -> None:
        self.start = time.time() if start is None else start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.start + asyncio.get_running_loop().time()

    def sleep(self, seconds: float) -> None:
        raise TypeError("LoopClock is for Orchestrator.arun(); use VirtualClock with run()")

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(seconds)


class BlockingStore:
    """A view of a store whose async methods call its blocking ones.

    For async sagas under :func:`run_virtual`: while a coroutine awaits another thread
    (a durable store's group commit), the virtual loop sees nothing ready and jumps to
    the next timer, so virtual time runs ahead. A short blocking write keeps the
    timeline exact. Fine for a demo's sub-millisecond local writes; in production,
    give the orchestrator the store itself.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, record: SagaRecord) -> SagaRecord | None:
        return self.store.create(record)

    def save(self, record: SagaRecord) -> None:
        self.store.save(record)

    def load(self, saga_id: str) -> SagaRecord | None:
        return self.store.load(saga_id)

    def query(self, **filters: Any) -> list[SagaRecord]:
        return self.store.query(**filters)

    async def acreate(self, record: SagaRecord) -> SagaRecord | None:
        return self.store.create(record)

    async def asave(self, record: SagaRecord) -> None:
        self.store.save(record)

    async def aload(self, saga_id: str) -> SagaRecord | None:
        return self.store.load(saga_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


# --- faults -------------------------------------------------------------------------


@attrs.define
class _Fault:
    op: str
    at: str
    error: BaseException | None
    hang: float | None
    times: int | None  # None: every call, until cleared
    skip: int = 0  # calls to let through first


class Faults:
    """A participant's fault switch, for the demo and the tests.

    Each operation of a participant calls ``check(op)`` (or ``await acheck(op)``) where it
    starts, and ``check(op, "after")`` once its effect is applied. A fault armed
    ``at="after"`` models the nasty case: the effect happened, the caller never hears of
    it. ``calls`` counts every call of every operation.
    """

    def __init__(self) -> None:
        self._armed: list[_Fault] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.calls: Counter[str] = Counter()

    def fail(
        self,
        op: str,
        error: BaseException,
        *,
        times: int | None = 1,
        at: str = "before",
        skip: int = 0,
        stall: float | None = None,
    ) -> None:
        """Make ``times`` calls of ``op`` raise ``error`` (``None``: every call), after
        letting ``skip`` calls through; with ``stall``, each waits that long first."""
        self._arm(_Fault(op, at, error, stall, times, skip))

    def hang(
        self, op: str, seconds: float, *, times: int | None = 1, at: str = "before", skip: int = 0
    ) -> None:
        """Make ``times`` calls of ``op`` stall for ``seconds`` at ``at``, after ``skip``."""
        self._arm(_Fault(op, at, None, seconds, times, skip))

    def clear(self) -> None:
        """Disarm every fault and let stalled calls go on."""
        with self._lock:
            self._armed.clear()
        self._release.set()

    def check(self, op: str, at: str = "before") -> None:
        """Called by the participant: raise or stall here if a fault is armed."""
        fault = self._take(op, at)
        if fault is None:
            return
        if fault.hang is not None:
            self._release.wait(fault.hang)  # clear() ends the stall early
        if fault.error is not None:
            raise _fresh(fault.error)

    async def acheck(self, op: str, at: str = "before") -> None:
        """:meth:`check` for async participants: a stall is an ``asyncio.sleep``."""
        fault = self._take(op, at)
        if fault is None:
            return
        if fault.hang is not None:
            await asyncio.sleep(fault.hang)
        if fault.error is not None:
            raise _fresh(fault.error)

    def _arm(self, fault: _Fault) -> None:
        if fault.times is not None and fault.times < 1:
            raise ValueError(f"times must be >= 1 or None (every call), got {fault.times!r}")
        with self._lock:
            self._release.clear()
            self._armed.append(fault)

    def _take(self, op: str, at: str) -> _Fault | None:
        with self._lock:
            if at == "before":
                self.calls[op] += 1
            for fault in self._armed:
                if fault.op == op and fault.at == at:
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times == 0:
                            self._armed.remove(fault)
                    return fault
        return None


def _fresh(error: BaseException) -> BaseException:
    """A new exception like ``error``: raising one instance twice chains tracebacks."""
    try:
        return type(error)(*error.args)
    except TypeError:
        return error


# --- idempotency --------------------------------------------------------------------


class Voided(Exception):
    """A forward call arrived after its compensation: it was cancelled, it must not apply."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"{key} was compensated before it arrived; refusing to apply it")


class IdempotencyKeys:
    """What a participant remembers per idempotency key.

    ``once(key, apply)`` applies a change the first time a key is seen and returns the
    first result on every repeat (a retry after a lost response changes nothing).
    ``undo(key, forward_key, revert)`` reverts the forward call's effect once; when the
    forward call never took effect (it failed, or timed out before arriving) there is
    nothing to undo, and the forward key is voided so that a late arrival is refused.
    Both are atomic (a lock, and no ``await`` inside), for threads and coroutines alike.
    """

    def __init__(self) -> None:
        self.results: dict[str, Any] = {}
        self.voided: set[str] = set()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # filed by examples._filed: not the lock
        return {"results": self.results, "voided": self.voided}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        vars(self).update(state)

    def once(self, key: str, apply: Callable[[], T]) -> T:
        with self._lock:
            if key in self.voided:
                raise Voided(key)
            if key not in self.results:
                self.results[key] = apply()
            return self.results[key]  # type: ignore[no-any-return]

    def undo(self, key: str, forward: str, revert: Callable[[Any], T]) -> T | None:
        with self._lock:
            if key not in self.results:
                if forward in self.results:
                    self.results[key] = revert(self.results[forward])
                else:
                    self.voided.add(forward)
                    self.results[key] = None
            return self.results[key]  # type: ignore[no-any-return]

    def applied(self, key: str) -> bool:
        """Whether a call with ``key`` took effect."""
        return key in self.results


@functools.cache
def case_folder(name: str) -> Path:
    """A folder for the example cases' participants' files (``name``: whose), made once
    per process that first asks and removed when that process exits. The processes it
    forks (those the crash points kill, and their recoveries) share it and never remove
    it: a recovery must find what the killed process wrote."""
    folder = Path(tempfile.mkdtemp(prefix=f"sagaflow-{name}-"))
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, True))
    return folder

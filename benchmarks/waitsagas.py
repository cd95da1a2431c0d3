"""The sagas of the waits benchmark (:mod:`benchmarks.waits`), in a module of their own:
a worker process imports it (``sagaflow worker --import benchmarks.waitsagas``) and
finds these classes and nothing else.

Each handler notes the Unix time it ran in the saga's data (``time.time()``: the same
clock in every process of the machine), so the benchmark reads from the stored record
when the saga resumed, wherever it resumed.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

from sagaflow import saga, step, timer, wait

DAY = 86_400.0
#: How long the timer sagas wait (seconds).
TIMER = 0.05


@attrs.frozen
class Go:
    """The signal's payload: decoded and checked like saga data."""

    by: str = "bench"


@saga(name="bench_signal_wait")
@attrs.define
class SignalWait:
    """A step, a wait for signal ``go`` (timeout: a day), a step."""

    n: int = 0
    handled_at: float = 0.0

    @step(timeout=None)
    def first(self, ctx: Any) -> None:
        self.n += 1

    @first.compensate(timeout=None)
    def undo_first(self, ctx: Any) -> None:
        self.n -= 1

    @wait("go", payload=Go, timeout=DAY)
    def go(self, signal: Go, ctx: Any) -> None:
        self.handled_at = time.time()

    @step(pivot=True, timeout=None)
    def last(self, ctx: Any) -> None:
        self.n += 1


@saga(name="bench_signal_wait_async")
@attrs.define
class ASignalWait:
    """:class:`SignalWait` with async steps and handler."""

    n: int = 0
    handled_at: float = 0.0

    @step
    async def first(self, ctx: Any) -> None:
        self.n += 1

    @first.compensate
    async def undo_first(self, ctx: Any) -> None:
        self.n -= 1

    @wait("go", payload=Go, timeout=DAY)
    async def go(self, signal: Go, ctx: Any) -> None:
        self.handled_at = time.time()

    @step(pivot=True)
    async def last(self, ctx: Any) -> None:
        self.n += 1


@saga(name="bench_no_wait")
@attrs.define
class NoWait:
    """:class:`SignalWait` with its wait made a plain step: the same calls, no wait."""

    n: int = 0
    handled_at: float = 0.0

    @step(timeout=None)
    def first(self, ctx: Any) -> None:
        self.n += 1

    @first.compensate(timeout=None)
    def undo_first(self, ctx: Any) -> None:
        self.n -= 1

    @step(readonly=True, timeout=None)
    def go(self, ctx: Any) -> None:
        self.handled_at = time.time()

    @step(pivot=True, timeout=None)
    def last(self, ctx: Any) -> None:
        self.n += 1


@saga(name="bench_no_wait_async")
@attrs.define
class ANoWait:
    """:class:`NoWait` with async steps."""

    n: int = 0
    handled_at: float = 0.0

    @step
    async def first(self, ctx: Any) -> None:
        self.n += 1

    @first.compensate
    async def undo_first(self, ctx: Any) -> None:
        self.n -= 1

    @step(readonly=True)
    async def go(self, ctx: Any) -> None:
        self.handled_at = time.time()

    @step(pivot=True)
    async def last(self, ctx: Any) -> None:
        self.n += 1


@saga(name="bench_timer_wait")
@attrs.define
class TimerWait:
    """A step, a durable timer of :data:`TIMER` seconds, a step."""

    fired_at: float = 0.0

    @step(readonly=True, timeout=None)
    def first(self, ctx: Any) -> None:
        pass

    @timer(after=TIMER)
    def pause(self, ctx: Any) -> None:
        self.fired_at = time.time()

    @step(pivot=True, timeout=None)
    def last(self, ctx: Any) -> None:
        pass


@saga(name="bench_timer_wait_async")
@attrs.define
class ATimerWait:
    """:class:`TimerWait` with async steps and handler."""

    fired_at: float = 0.0

    @step(readonly=True)
    async def first(self, ctx: Any) -> None:
        pass

    @timer(after=TIMER)
    async def pause(self, ctx: Any) -> None:
        self.fired_at = time.time()

    @step(pivot=True)
    async def last(self, ctx: Any) -> None:
        pass

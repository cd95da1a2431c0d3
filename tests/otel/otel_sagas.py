"""Sagas the OpenTelemetry tests run: sync and async steps, a parallel group, a fan-out.
Each call makes a span of its own ("user <call>", as an HTTP client would) with the
tracer :func:`reset` gives, and raises as :data:`FAIL` says."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import attrs
from opentelemetry.trace import Tracer

from sagaflow import Retry, SagaRejected, parallel, saga, step

#: call name -> how many more times it raises (-1: always); "reject:<call>" rejects
FAIL: dict[str, int] = {}
#: call names that die as a killed process would (KeyboardInterrupt), once
CRASH: set[str] = set()
_tracer: list[Tracer | None] = [None]
#: what a call abandoned past its timeout waits for before it returns (the test opens it)
GATE = threading.Event()
#: (call name, the trace id and span id of the span current in it)
SEEN: list[tuple[str, int, int]] = []


def reset(tracer: Tracer | None) -> None:
    _tracer[0] = tracer
    FAIL.clear()
    CRASH.clear()
    SEEN.clear()
    GATE.set()  # an abandoned call left over from a test ends
    GATE.clear()


def act(name: str) -> None:
    """What a participant call does: its own span (current context: the call's), then
    the failure the test asked for."""
    tracer = _tracer[0]
    assert tracer is not None
    with tracer.start_as_current_span(f"user {name}") as span:
        c = span.get_span_context()
        SEEN.append((name, c.trace_id, c.span_id))
    if name in CRASH:
        CRASH.discard(name)
        raise KeyboardInterrupt
    if FAIL.get(f"reject:{name}"):
        raise SagaRejected(f"{name}: no")
    left = FAIL.get(name, 0)
    if left:
        FAIL[name] = left - 1
        raise ConnectionError(f"{name} unavailable")


_quick = Retry(attempts=2, backoff=0.0, jitter=0.0)


@saga
class Trip:
    """reserve (compensated) -> pay (compensated) -> ship (pivot); plain ``def`` steps."""

    trip: str = "t-1"

    @step(retry=_quick)
    def reserve(self, ctx: Any) -> None:
        act("reserve")

    @reserve.compensate(retry=_quick)
    def release(self, ctx: Any) -> None:
        act("release")

    @step(retry=_quick)
    def pay(self, ctx: Any) -> None:
        act("pay")

    @pay.compensate(retry=_quick)
    def refund(self, ctx: Any) -> None:
        act("refund")

    @step(pivot=True, retry=Retry(attempts=1))
    def ship(self, ctx: Any) -> None:
        act("ship")


@saga
class UnlimitedTrip:
    """Trip with no timeouts at all: the sync driver calls on the caller's thread."""

    @step(timeout=None, retry=_quick)
    def reserve(self, ctx: Any) -> None:
        act("reserve")

    @reserve.compensate(timeout=None)
    def release(self, ctx: Any) -> None:
        act("release")

    @step(timeout=None, pivot=True, retry=Retry(attempts=1))
    def pay(self, ctx: Any) -> None:
        act("pay")


@saga
class AsyncTrip:
    """Coroutine steps; ``wait`` never returns when FAIL says "hang"."""

    @step(retry=_quick)
    async def reserve(self, ctx: Any) -> None:
        await asyncio.sleep(0)
        act("reserve")

    @reserve.compensate
    async def release(self, ctx: Any) -> None:
        await asyncio.sleep(0)
        act("release")

    @step(timeout=0.05, retry=Retry(attempts=1))
    async def pay(self, ctx: Any) -> None:
        act("pay")
        if FAIL.get("hang"):
            await asyncio.Event().wait()  # past its timeout: cancelled by the driver

    @pay.compensate
    async def refund(self, ctx: Any) -> None:
        act("refund")


@saga
class Party:
    """A parallel group (hall, band) and a fan-out over the guests."""

    guests: list[str] = attrs.field(factory=lambda: ["ann", "bob", "cy"])
    book = parallel()

    @book.step
    def hall(self, ctx: Any) -> None:
        act("hall")

    @hall.compensate
    def unbook_hall(self, ctx: Any) -> None:
        act("unbook hall")

    @book.step
    def band(self, ctx: Any) -> None:
        act("band")

    @band.compensate
    def unbook_band(self, ctx: Any) -> None:
        act("unbook band")

    @step(each="guests", key=lambda guest: guest)
    def invite(self, guest: str, ctx: Any) -> None:
        act(f"invite {guest}")

    @invite.compensate
    def uninvite(self, guest: str, ctx: Any) -> None:
        act(f"uninvite {guest}")

    @step(pivot=True, retry=Retry(attempts=1))
    def celebrate(self, ctx: Any) -> None:
        act("celebrate")


@saga
class AsyncParty:
    """Party's shape with coroutine members and items."""

    guests: list[str] = attrs.field(factory=lambda: ["ann", "bob", "cy"])
    book = parallel()

    @book.step(readonly=True)
    async def hall(self, ctx: Any) -> None:
        await asyncio.sleep(0)
        act("hall")

    @book.step(readonly=True)
    async def band(self, ctx: Any) -> None:
        await asyncio.sleep(0)
        act("band")

    @step(each="guests", key=lambda guest: guest, readonly=True)
    async def invite(self, guest: str, ctx: Any) -> None:
        await asyncio.sleep(0)  # the other items run meanwhile, each in its own context
        act(f"invite {guest}")


@saga
class StuckTrip:
    """A plain ``def`` step that overruns its timeout until the test opens GATE."""

    @step(retry=_quick)
    def reserve(self, ctx: Any) -> None:
        act("reserve")

    @reserve.compensate
    def release(self, ctx: Any) -> None:
        act("release")

    @step(timeout=0.05, pivot=True, retry=Retry(attempts=1))
    def pay(self, ctx: Any) -> None:
        act("pay")
        assert GATE.wait(30)

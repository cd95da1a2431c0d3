"""Saga classes the PostgreSQL tests run, in this process or in worker processes
(module level, so that a worker can import them by path)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import attrs

from sagaflow import Retry, saga, step
from sagaflow.worker import current_lease

#: (saga id, step, direction, lease token, worker id) of every call made in this process
CALLS: list[tuple[str, str, str, int | None, str | None]] = []
_calls = threading.Lock()


def note(ctx: Any, what: str) -> None:
    lease = current_lease()
    with _calls:
        CALLS.append((
            ctx.saga_id, what, ctx.direction.value,
            None if lease is None else lease.token, None if lease is None else lease.owner,
        ))


def calls_of(saga_id: str) -> list[tuple[str, str, str, int | None, str | None]]:
    with _calls:
        return [c for c in CALLS if c[0] == saga_id]


@saga(name="pg-hello")
@attrs.define
class Hello:
    """Two plain steps (run on worker threads under a worker)."""

    who: str = "world"
    greeted: bool = False

    @step
    def greet(self, ctx: Any) -> None:
        note(ctx, "greet")
        self.greeted = True

    @greet.compensate
    def ungreet(self, ctx: Any) -> None:
        note(ctx, "ungreet")

    @step(pivot=True)
    def finish(self, ctx: Any) -> None:
        note(ctx, "finish")


@saga(name="pg-ahello")
@attrs.define
class AHello:
    """Two async steps; ``fail`` makes the second one fail, so the first is compensated."""

    fail: bool = False

    @step
    async def greet(self, ctx: Any) -> None:
        note(ctx, "greet")

    @greet.compensate
    async def ungreet(self, ctx: Any) -> None:
        note(ctx, "ungreet")

    @step(pivot=True)
    async def finish(self, ctx: Any) -> None:
        note(ctx, "finish")
        if self.fail:
            raise ValueError("refused")


@saga(name="pg-flaky")
@attrs.define
class Flaky:
    """Fails its first ``failures`` attempts; the retry waits ``backoff`` seconds."""

    failures: int = 1

    @step(retry=Retry(attempts=4, backoff=0.3, jitter=0.0))
    async def call(self, ctx: Any) -> None:
        note(ctx, "call")
        if ctx.attempt <= self.failures:
            raise ConnectionError("busy")

    @call.compensate
    async def undo(self, ctx: Any) -> None:
        note(ctx, "undo")


@saga(name="pg-slow")
@attrs.define
class Slow:
    """One step that takes ``seconds``."""

    seconds: float = 1.0

    @step(timeout=60)
    async def work(self, ctx: Any) -> None:
        note(ctx, "work")
        await asyncio.sleep(self.seconds)
        note(ctx, "worked")

    @work.compensate
    async def undo(self, ctx: Any) -> None:
        note(ctx, "undo")


@saga(name="pg-slow-sync")
@attrs.define
class SlowSync:
    """One plain step that takes ``seconds`` (on a worker thread)."""

    seconds: float = 1.0

    @step(timeout=60)
    def work(self, ctx: Any) -> None:
        note(ctx, "work")
        time.sleep(self.seconds)
        note(ctx, "worked")

    @work.compensate
    def undo(self, ctx: Any) -> None:
        note(ctx, "undo")


@saga(name="pg-deadline", deadline=0.5)
@attrs.define
class Hurried:
    """Must finish within half a second of its start."""

    @step
    async def first(self, ctx: Any) -> None:
        note(ctx, "first")

    @first.compensate
    async def unfirst(self, ctx: Any) -> None:
        note(ctx, "unfirst")

    @step(pivot=True)
    async def second(self, ctx: Any) -> None:
        note(ctx, "second")

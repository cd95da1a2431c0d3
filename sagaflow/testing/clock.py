"""A virtual clock: sleeping advances time instantly, so backoff costs no real time."""

from __future__ import annotations

import asyncio

__all__ = ["VirtualClock"]


class VirtualClock:
    """A :class:`~sagaflow.clock.Clock` whose time moves only when someone sleeps.

    ``sleeps`` lists every requested sleep, so tests can check backoff delays.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.time = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.time += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"VirtualClock(time={self.time!r}, slept={sum(self.sleeps):g}s)"

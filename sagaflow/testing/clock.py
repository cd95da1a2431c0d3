"""A virtual clock: sleeping advances time instantly, so backoff costs no real time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["VirtualClock"]


class VirtualClock:
    """A :class:`~sagaflow.clock.Clock` whose time moves only when someone sleeps.

    ``sleeps`` lists every requested sleep, so tests can check backoff delays;
    ``jumps`` lists every :meth:`advance` (time that passed without a sleep, such as a
    call running into its timeout). ``on_now``, when set, is called at the start of
    every :meth:`now`: fault injection uses it to move time at the exact point where
    the orchestrator looks at the clock.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.time = start
        self.start = start
        self.sleeps: list[float] = []
        self.jumps: list[float] = []
        self.on_now: Callable[[], None] | None = None

    def now(self) -> float:
        if self.on_now is not None:
            self.on_now()
        return self.time

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError(f"a clock only moves forward: advance({seconds!r})")
        self.jumps.append(seconds)
        self.time += seconds

    def advance_to(self, when: float) -> None:
        """Move time forward to ``when`` (a Unix time); no-op if it is already later."""
        if when > self.time:
            self.advance(when - self.time)

    @property
    def elapsed(self) -> float:
        """Virtual seconds since the clock was made."""
        return self.time - self.start

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"VirtualClock(time={self.time!r}, slept={sum(self.sleeps):g}s)"

"""Time, behind one small interface so runs can use a virtual clock in tests."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "duration"]


class Clock(Protocol):
    """Unix time and sleeping: what the drivers need of time."""

    def now(self) -> float:
        """Seconds since the epoch."""

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds``."""

    async def asleep(self, seconds: float) -> None:
        """Wait ``seconds`` without blocking the event loop."""


class SystemClock:
    """The real clock."""

    now = staticmethod(time.time)
    sleep = staticmethod(time.sleep)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def duration(seconds: float) -> str:
    """A duration as a person writes it: ``3d``, ``1h30m``, ``45s``, ``0.5s``."""
    if seconds != int(seconds) or seconds < 60:
        return f"{seconds:g}s"
    left, parts = int(seconds), []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        n, left = divmod(left, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)

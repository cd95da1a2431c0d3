"""An event loop on virtual time, for coroutine steps whose participants ``await`` delays.

When nothing is ready and a timer is due, the loop jumps to the timer instead of
waiting: ``asyncio.sleep(0.2)`` (a participant's simulated latency) and
``asyncio.timeout`` cost no real time. Work on other threads does not move this time,
so it is used only for sagas whose steps and compensations are all coroutines.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

__all__ = ["VirtualTimeLoop", "all_coroutines"]


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        ready: list[tuple[Any, int]] = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer pending: only real I/O (or a thread) can wake us
            return super().select(None)
        self.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` moves only by jumping to due timers."""

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


def all_coroutines(spec: Any) -> bool:
    """Whether every step and compensation of ``spec`` is a coroutine function."""
    return all(
        s.is_async and (s.compensation is None or s.compensation_is_async) for s in spec.steps
    )

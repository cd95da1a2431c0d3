"""The ``ctx`` a step or compensation receives."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Direction", "StepContext", "idempotency_key"]


class Direction(enum.Enum):
    """Whether a call moves the saga forward or undoes a step."""

    FORWARD = "forward"
    COMPENSATE = "compensate"


# Enum.value is a descriptor lookup; the key is built on every call, so read a dict.
_WORDS = {Direction.FORWARD: "forward", Direction.COMPENSATE: "compensate"}


class StepContext:
    """What a step or compensation knows about its call.

    ``idempotency_key`` is stable for (saga id, step, direction): the same on every
    retry and after recovery, so a participant can deduplicate on it. ``emit`` records
    a domain event; events are kept, in order, only if this attempt succeeds.

    A context describes the call it is passed to; a driver passes the same object to
    the run's next call (:meth:`rebind`), so keep what you need of it, not the context.
    """

    __slots__ = (
        "_clock",
        "_pending",
        "attempt",
        "call_deadline",
        "deadline",
        "direction",
        "saga_id",
        "saga_name",
        "signal",
        "step",
        "timeout",
    )

    def __init__(
        self,
        saga_id: str,
        saga_name: str,
        step: str,
        direction: Direction,
        attempt: int,
        timeout: float | None,
        deadline: float | None,
        now: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.saga_id = saga_id
        self.saga_name = saga_name
        #: a wait's handler: the payload of the signal being delivered
        self.signal: Any = None
        self._clock = clock
        # No list until the call emits something: most calls emit nothing.
        self._pending: list[Any] | tuple[()] = ()
        self.rebind(step, direction, attempt, timeout, deadline, now)

    def rebind(
        self,
        step: str,
        direction: Direction,
        attempt: int,
        timeout: float | None,
        deadline: float | None,
        now: float,
    ) -> None:
        """Describe the run's next call: one context per run, not one per call."""
        self.step = step
        self.direction = direction
        self.attempt = attempt
        #: seconds this call may take (the step's timeout or the time left to the deadline)
        self.timeout = timeout
        #: Unix time of the saga's (or, compensating, the compensation's) deadline
        self.deadline = deadline
        #: Unix time at which this call times out (``None``: no limit)
        self.call_deadline = None if timeout is None else now + timeout
        if self._pending:
            self._pending = ()  # the last call's list went to the record (or was dropped)

    @property
    def emitted(self) -> Sequence[Any]:
        """The domain events this call emitted so far."""
        return self._pending

    @property
    def idempotency_key(self) -> str:
        """``"{saga_id}:{step}:{direction}"``: what a participant deduplicates on."""
        return f"{self.saga_id}:{self.step}:{_WORDS[self.direction]}"

    @property
    def forward_key(self) -> str:
        """The idempotency key of this step's forward call: what a compensation looks
        for to learn whether there is anything to undo."""
        return f"{self.saga_id}:{self.step}:forward"

    @property
    def time_left(self) -> float | None:
        """Seconds before this call times out (``None``: no limit)."""
        if self.call_deadline is None:
            return None
        return max(0.0, self.call_deadline - self._clock())

    def emit(self, event: Any) -> None:
        """Record a domain event (kept only if this attempt succeeds)."""
        pending = self._pending
        if pending:
            pending.append(event)  # a list: () is falsy
        else:
            self._pending = [event]

    def __repr__(self) -> str:
        return (
            f"StepContext(saga_id={self.saga_id!r}, step={self.step!r}, "
            f"direction={_WORDS[self.direction]}, attempt={self.attempt})"
        )


def idempotency_key(saga_id: str, step: str, direction: Direction) -> str:
    """The key a participant deduplicates on: stable for (saga id, step, direction)."""
    return f"{saga_id}:{step}:{_WORDS[direction]}"

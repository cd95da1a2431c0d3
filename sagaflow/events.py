"""Lifecycle events: what the orchestrator reports about a run, to its history and listeners.

Events are small slotted attrs instances of plain data (the error as text), so a history
can be stored, compared and printed. Treat them as immutable: they are not frozen only
because frozen attrs classes cost three times as much to create, and two are created
per step. Import them through this module
(``sagaflow.events.StepFailed``): ``sagaflow.StepFailed`` is the error of the same name.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar

import attrs

__all__ = [
    "CompensationCompleted",
    "CompensationFailed",
    "CompensationRetrying",
    "CompensationStarted",
    "EventIgnored",
    "LifecycleEvent",
    "Listener",
    "OperatorAction",
    "Listeners",
    "SagaCompensated",
    "SagaCompleted",
    "SagaFailed",
    "SagaStarted",
    "SignalDelivered",
    "StepCompleted",
    "StepFailed",
    "StepRejected",
    "StepRetrying",
    "StepSkipped",
    "StepStarted",
    "WaitExpired",
    "WaitStarted",
    "logger",
]

logger = logging.getLogger("sagaflow")
logger.addHandler(logging.NullHandler())

Listener = Callable[["LifecycleEvent"], "Awaitable[None] | None"]


@attrs.define(slots=True, weakref_slot=False)
class LifecycleEvent:
    """Something that happened to a run. ``at`` is a Unix timestamp (seconds)."""

    level: ClassVar[int] = logging.INFO

    saga_id: str
    saga_name: str
    at: float
    step: str | None = None
    attempt: int = 0
    error: str | None = None

    def describe(self) -> str:
        """One line for a log or a console."""
        where = f" {self.step!r}" if self.step else ""
        tries = f" (attempt {self.attempt})" if self.attempt > 1 else ""
        err = f": {self.error}" if self.error else ""
        return f"{type(self).__name__}{where}{tries}{err}"


@attrs.define(slots=True, weakref_slot=False)
class SagaStarted(LifecycleEvent):
    """The run began."""


@attrs.define(slots=True, weakref_slot=False)
class StepStarted(LifecycleEvent):
    """An attempt of a forward step began."""

    level: ClassVar[int] = logging.DEBUG


@attrs.define(slots=True, weakref_slot=False)
class StepCompleted(LifecycleEvent):
    """A forward step succeeded."""


@attrs.define(slots=True, weakref_slot=False)
class StepSkipped(LifecycleEvent):
    """A conditional step's guard was false; it did not run and needs no undo."""


@attrs.define(slots=True, weakref_slot=False)
class _Retrying(LifecycleEvent):
    level: ClassVar[int] = logging.WARNING
    delay: float = 0.0

    def describe(self) -> str:
        return f"{super().describe()}; retrying in {self.delay:.3g}s"


@attrs.define(slots=True, weakref_slot=False)
class StepRetrying(_Retrying):
    """An attempt failed with a retryable error; the next one starts after ``delay``."""


@attrs.define(slots=True, weakref_slot=False)
class StepFailed(LifecycleEvent):
    """A forward step failed for good."""

    level: ClassVar[int] = logging.WARNING
    timed_out: bool = False


@attrs.define(slots=True, weakref_slot=False)
class StepRejected(LifecycleEvent):
    """A step or a wait's handler rejected the saga for a business reason (``error``);
    not retried: the saga compensates (or, after the pivot, fails)."""

    level: ClassVar[int] = logging.WARNING


@attrs.define(slots=True, weakref_slot=False)
class WaitStarted(LifecycleEvent):
    """The saga reached a wait and parked: until ``signal`` comes (``None``: a timer),
    at the latest until ``until`` (a Unix time)."""

    signal: str | None = None
    until: float | None = None

    def describe(self) -> str:
        what = f"signal {self.signal!r}" if self.signal else "its time"
        return f"WaitStarted {self.step!r}: for {what}"


@attrs.define(slots=True, weakref_slot=False)
class SignalDelivered(LifecycleEvent):
    """Signal ``signal`` (the caller's ``signal_id``, arrival number ``seq``) was handed
    to the wait's handler."""

    signal: str = ""
    signal_id: str = ""
    seq: int = 0

    def describe(self) -> str:
        return f"SignalDelivered {self.signal!r} to {self.step!r} (id {self.signal_id})"


@attrs.define(slots=True, weakref_slot=False)
class WaitExpired(LifecycleEvent):
    """A wait's time ran out before its signal came; ``on_timeout`` says what followed."""

    level: ClassVar[int] = logging.WARNING
    signal: str | None = None
    on_timeout: str = ""

    def describe(self) -> str:
        return f"WaitExpired {self.step!r}: no {self.signal!r}, {self.on_timeout}"


@attrs.define(slots=True, weakref_slot=False)
class CompensationStarted(LifecycleEvent):
    """An attempt of a compensation began."""


@attrs.define(slots=True, weakref_slot=False)
class CompensationRetrying(_Retrying):
    """A compensation attempt failed; the next one starts after ``delay``."""


@attrs.define(slots=True, weakref_slot=False)
class CompensationCompleted(LifecycleEvent):
    """A compensation succeeded: the step is undone."""


@attrs.define(slots=True, weakref_slot=False)
class CompensationFailed(LifecycleEvent):
    """A compensation failed for good: the step could not be undone."""

    level: ClassVar[int] = logging.ERROR


@attrs.define(slots=True, weakref_slot=False)
class SagaCompleted(LifecycleEvent):
    """Every forward step succeeded (or was skipped)."""


@attrs.define(slots=True, weakref_slot=False)
class SagaCompensated(LifecycleEvent):
    """The saga failed and every step that needed undoing was undone."""

    level: ClassVar[int] = logging.WARNING


@attrs.define(slots=True, weakref_slot=False)
class SagaFailed(LifecycleEvent):
    """The saga ended in a state only an operator can fix."""

    level: ClassVar[int] = logging.ERROR


@attrs.define(slots=True, weakref_slot=False)
class OperatorAction(LifecycleEvent):
    """An operator acted on the saga: ``action`` is retry, resolve or cancel."""

    level: ClassVar[int] = logging.WARNING
    action: str = ""
    note: str | None = None

    def describe(self) -> str:
        note = f": {self.note}" if self.note else ""
        return f"OperatorAction {self.action}{note}"


@attrs.define(slots=True, weakref_slot=False)
class EventIgnored(LifecycleEvent):
    """A choreography's participant ignored an event for this instance (a duplicate,
    a late one, one out of order): the message's ``event_id`` and ``event_type``, the
    ``participant`` that received it and ``reason`` (where the instance was instead)."""

    event_id: str = ""
    event_type: str = ""
    participant: str = ""
    reason: str = ""

    def describe(self) -> str:
        of = f" (id {self.event_id})" if self.event_id else ""
        return f"EventIgnored {self.event_type}{of} by {self.participant}: {self.reason}"


def _heard(level: int) -> bool:
    """Whether a handler other than sagaflow's own NullHandler takes a record of
    ``level``: only then is a record worth building (the level check alone passes
    WARNING by default, for a NullHandler to drop)."""
    found = False
    node: logging.Logger | None = logger
    while node is not None:
        for handler in node.handlers:
            found = True
            if level >= handler.level and not isinstance(handler, logging.NullHandler):
                return True
        if not node.propagate:
            break
        node = node.parent
    last = logging.lastResort
    return not found and last is not None and level >= last.level


class Listeners:
    """The listeners of an orchestrator; a listener that raises is logged, never fatal."""

    __slots__ = ("async_", "sync")

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self.sync: list[Callable[[LifecycleEvent], Any]] = []
        self.async_: list[Callable[[LifecycleEvent], Awaitable[Any]]] = []
        for listener in listeners:
            if not callable(listener):
                raise TypeError(f"a listener must be callable(event), got {listener!r}")
            target = getattr(listener, "__call__", listener)  # noqa: B004
            if inspect.iscoroutinefunction(listener) or inspect.iscoroutinefunction(target):
                self.async_.append(listener)  # type: ignore[arg-type]
            else:
                self.sync.append(listener)

    def notify(self, events: list[LifecycleEvent], start: int) -> None:
        """Tell the sync listeners (and the log) about ``events[start:]``."""
        sync = self.sync
        for i in range(start, len(events)):
            event = events[i]
            level = event.level
            if logger.isEnabledFor(level) and _heard(level):
                logger.log(level, "saga %s %s: %s", event.saga_name, event.saga_id,
                           event.describe())
            for listener in sync:
                try:
                    listener(event)
                except Exception:
                    logger.exception("listener %r raised on %r; ignored", listener, event)

    async def anotify(self, events: list[LifecycleEvent], start: int) -> None:
        """Tell every listener, sync and async, about ``events[start:]``."""
        self.notify(events, start)
        if not self.async_:
            return
        for i in range(start, len(events)):
            for listener in self.async_:
                try:
                    await listener(events[i])
                except Exception:
                    logger.exception("listener %r raised on %r; ignored", listener, events[i])

"""Waits and timers: entering a wait, parking, a signal handed over, a wait's time running out."""

from __future__ import annotations

from typing import Any

from .. import events as ev
from ..errors import (
    StepError,
    WaitTimedOut,
)
from ..machine import FAILED
from ..records import (
    SagaRecord,
    SagaStatus,
    Signal,
    StepRecord,
    StepStatus,
)
from ..spec import OnTimeout, SagaSpec, StepSpec, WaitSpec
from ._moves import (
    RETRIABLE,
    S_WAITING,
    Call,
    Park,
    advance,
    begin_compensation,
    corrupt,
    finish,
    start_step,
    step_failed,
    transition,
    wanted,
)

__all__ = [
    "GO_ON",
    "at_wait",
    "deliver",
    "expire",
    "in_time",
]


GO_ON = object()  # at_wait: the wait's time came; start its handler


def at_wait(
    spec: SagaSpec, record: SagaRecord, s: StepSpec, sr: StepRecord, now: float
) -> Park | object | None:
    """The saga is at wait ``s``: enter it, or see whether its time came.

    A :class:`Park` while it waits; ``GO_ON`` when a timer's time came (its handler
    starts); ``None`` when the record moved on (skipped, expired, or a broken guard).
    """
    w = s.wait
    assert w is not None
    if sr.status is S_WAITING:
        until = record.wake_at
        if until is None or now < until:
            return Park(s.index, w.signal, until, False)
        if w.signal is None:
            record.wake_at = None
            record.waiting = None
            return GO_ON
        return Park(s.index, w.signal, until, False, True)
    # Reached: enter the wait (or skip it).
    if s.when is not None and not wanted(spec, record, s, now):
        return None
    try:
        until = _until(w, record.data, now)
    except Exception as exc:  # a broken timer fails like a broken guard
        sr.attempts = 1
        sr.started_at = now
        step_failed(spec, record, now, StepError(s.index, s.name, exc), exc, False)
        return None
    sr.status = S_WAITING
    sr.started_at = now
    record.waiting = "" if w.signal is None else w.signal
    wake = until
    if s.kind is not RETRIABLE and record.deadline_at is not None:
        # The saga's deadline wakes it too, to compensate.
        wake = record.deadline_at if wake is None else min(wake, record.deadline_at)
    record.wake_at = wake
    record.history.append(
        ev.WaitStarted(record.saga_id, spec.name, now, s.name, 0, None, w.signal, until)
    )
    return Park(s.index, w.signal, wake, True)


def _until(w: WaitSpec, data: Any, now: float) -> float | None:
    """When a wait entered at ``now`` times out, or its timer fires (a Unix time)."""
    if w.signal is not None:
        return None if w.timeout is None else now + w.timeout
    if w.at is not None:
        when = w.at(data)
        if hasattr(when, "timestamp"):
            if getattr(when, "tzinfo", None) is None:
                raise ValueError(
                    f"the timer's at= gave a naive datetime {when!r}: give an aware one "
                    "(datetime.now(timezone.utc) + ...) so that it means one moment everywhere"
                )
            return float(when.timestamp())
        return float(when)
    after: Any = w.after(data) if callable(w.after) else w.after
    if hasattr(after, "total_seconds"):
        after = after.total_seconds()
    return now + float(after)


def in_time(park: Park, signal: Signal | None) -> Signal | None:
    """``signal`` if it may be delivered at ``park``: always while the wait stands;
    once its time has come, only if it was stored by then."""
    if signal is None or not park.expires:
        return signal
    return signal if park.until is None or signal.at <= park.until else None


def expire(spec: SagaSpec, record: SagaRecord, now: float) -> None:
    """The wait the saga is parked at ran out of time (a :class:`Park` that ``expires``)
    and no signal came in time: it ends as its ``on_timeout`` says."""
    i = record.cursor
    s = spec.steps[i]
    w = s.wait
    assert w is not None
    record.wake_at = None
    record.waiting = None
    _expired(spec, record, s, record.steps[i], w, now)


def _expired(
    spec: SagaSpec, record: SagaRecord, s: StepSpec, sr: StepRecord, w: WaitSpec, now: float
) -> None:
    """Wait ``s``'s time ran out before its signal came."""
    sr.status = StepStatus.EXPIRED
    sr.finished_at = now
    on_timeout = w.on_timeout
    record.history.append(
        ev.WaitExpired(record.saga_id, spec.name, now, s.name, 0, None, w.signal,
                       on_timeout.value)
    )
    if on_timeout is OnTimeout.CONTINUE:
        advance(spec, record, now, "timeout")
        return
    reason = WaitTimedOut(s.name, w.signal, w.timeout or 0)
    sr.error = str(reason)
    if on_timeout is OnTimeout.FAIL:
        transition(spec, record, "timeout", FAILED)
        finish(spec, record, now, SagaStatus.FAILED, reason)
    else:
        begin_compensation(spec, record, now, reason, "timeout")


def deliver(
    spec: SagaSpec, record: SagaRecord, signal: Signal, payload: Any, now: float
) -> Call:
    """Hand ``signal`` (its ``payload`` decoded) to the wait the saga is parked at; the
    handler's call, to perform and :func:`settle`.

    No checkpoint goes between this and the settlement: a handler changes only the
    saga's own fields, so the checkpoint after it records the delivery (the signal's
    mark moves) and its outcome together, once. A crash before it leaves the signal
    undelivered, to be handed over again.
    """
    i = record.cursor
    s = spec.steps[i]
    sr = record.steps[i]
    if s.wait is None or sr.status is not S_WAITING or record.waiting != signal.name:
        raise corrupt(
            record, f"a signal {signal.name!r} was handed to it, but it does not wait for one "
            f"at {s.name!r}"
        )
    record.signal_marks[signal.name] = signal.seq
    record.waiting = None
    record.wake_at = None
    record.history.append(
        ev.SignalDelivered(record.saga_id, spec.name, now, s.name, 0, None, signal.name,
                           signal.signal_id, signal.seq)
    )
    return start_step(spec, record, s, sr, now, False, payload)

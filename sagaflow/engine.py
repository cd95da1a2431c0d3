"""The decision core: given a spec, a record and the time, what happens next.

No I/O and no clock: the drivers (:mod:`sagaflow.runner`) pass ``now`` in, perform the
:class:`Call` or :class:`Sleep` that :func:`next_command` returns, and report the
outcome to :func:`settle`. Both mutate the record in place and append the lifecycle
events to its history; every state change goes through :func:`transition`, which
checks it against the class's state machine. The sync and async drivers share all of
this, and so do the testing toolkit's virtual-clock runs and crash recovery.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from typing import Any

import attrs

from . import events as ev
from .context import Direction
from .errors import (
    CodecError,
    CompensationError,
    CorruptRecord,
    InvalidTransition,
    OperatorError,
    SagaCancelled,
    SagaDeadlineExceeded,
    SagaflowError,
    SagaRejected,
    StepError,
    StepTimeout,
    WaitTimedOut,
    _describe,
)
from .machine import COMPENSATED, COMPLETED, FAILED, compensation_state
from .policy import Retry, backoff_delay
from .records import (
    CompensationStatus,
    SagaRecord,
    SagaStatus,
    Signal,
    StepRecord,
    StepStatus,
)
from .spec import CompensationOrder, OnTimeout, SagaSpec, StepKind, StepSpec, WaitSpec

__all__ = [
    "Batch",
    "Call",
    "OperatorError",
    "Park",
    "Sleep",
    "abandon",
    "cancel",
    "deliver",
    "interrupt",
    "new_record",
    "next_command",
    "resolve",
    "retry",
    "settle",
    "transition",
    "unstorable",
]

FORWARD = Direction.FORWARD
COMPENSATE = Direction.COMPENSATE


# Enum members read through their class cost a descriptor lookup each (Python 3.11);
# the engine reads them on every step, so it keeps them as module globals.
_RUNNING = SagaStatus.RUNNING
_COMPENSATING = SagaStatus.COMPENSATING
_S_RUNNING = StepStatus.RUNNING
_S_COMPLETED = StepStatus.COMPLETED
_S_SKIPPED = StepStatus.SKIPPED
_S_WAITING = StepStatus.WAITING
_C_RUNNING = CompensationStatus.RUNNING
_C_COMPENSATED = CompensationStatus.COMPENSATED
_RETRIABLE = StepKind.RETRIABLE
_PIVOT = StepKind.PIVOT


@attrs.define(slots=True, weakref_slot=False)
class Call:
    """Call step ``index`` (forward or its compensation), as attempt ``attempt``.

    ``timeout`` is what the call may take: the step's own timeout, or less when the
    saga's (or the compensation's) deadline comes first, which ``deadline_bound`` says.
    """

    index: int
    direction: Direction
    attempt: int
    timeout: float | None
    deadline_bound: bool
    #: a wait's handler: the delivered signal's payload (the driver sets ``ctx.signal``);
    #: a fan-out's call: the item it is applied to
    payload: Any = None
    #: a fan-out's call: the item's position in the collection (``-1``: not an item)
    item: int = -1
    #: a parallel group member's or a fan-out item's call: the position in
    #: ``record.steps`` of the record it settles (``-1``: the step's own, ``index``)
    slot: int = -1


@attrs.frozen(slots=True)
class Batch:
    """At a parallel group or a fan-out: start ``calls`` at once (the engine marked them
    started: save the record first), then wait until any call in flight ends, or until
    ``until`` (a member waits to retry then), and ask again with the calls still in
    flight (``next_command``'s ``running``).

    ``cancel``: the group failed. An async driver cancels its calls in flight and
    reports each with :func:`abandon` (their outcome is unknown); a sync one lets them
    finish and settles them as they end.
    """

    calls: tuple[Call, ...]
    until: float | None
    cancel: bool = False


@attrs.frozen(slots=True)
class Sleep:
    """Wait until ``until`` (a Unix time) before asking again: a retry's backoff."""

    until: float


@attrs.frozen(slots=True)
class Park:
    """The saga is at wait ``index``: it waits for signal ``signal`` (``None``: a timer)
    until ``until`` (a Unix time: the timeout, the timer, or the saga's deadline).

    The driver looks for the signal in the store and hands it over with
    :func:`deliver`; without one it saves the record (``entered``: the record changed,
    the wait was just reached) and lets go of the saga: a parked saga is a row with a
    wake time, resumed by a signal or when the time comes.

    ``expires``: the wait's time has come. A signal stored by then (``at <= until``) is
    still delivered (it came in time; the saga was only resumed late); without one the
    driver calls :func:`expire`.
    """

    index: int
    signal: str | None
    until: float | None
    entered: bool
    expires: bool = False


# Every edge taken, once: a path holds these tuples, not a new one per state change.
_edges: dict[tuple[str, str, str], tuple[str, str, str]] = {}


def transition(spec: SagaSpec, record: SagaRecord, trigger: str, dest: str) -> None:
    """Move ``record`` to ``dest`` by ``trigger``, if the class's machine allows it; the
    change is added to the record's path."""
    edge = (record.state, trigger, dest)
    if edge not in spec.transitions:
        raise InvalidTransition(spec.name, record.state, trigger, dest)
    record.state = dest
    record.path.append(_edges.setdefault(edge, edge))


def new_record(spec: SagaSpec, saga: Any, saga_id: str, now: float) -> SagaRecord:
    """The record of a fresh run, started: at the first step, SagaStarted in its history."""
    record = SagaRecord(
        saga_id, spec.name, spec.fingerprint, saga, [StepRecord(s.name) for s in spec.steps],
        now,
    )
    record.updated_at = now
    if spec.key is not None:
        key = getattr(saga, spec.key)
        record.business_key = None if key is None else str(key)
    if spec.deadline is not None:
        record.deadline_at = now + spec.deadline
    transition(spec, record, "start", spec.state_of(0))
    record.status = _RUNNING
    record.history.append(ev.SagaStarted(saga_id, spec.name, now))
    return record


_IDLE: frozenset[int] = frozenset()


def next_command(
    spec: SagaSpec, record: SagaRecord, now: float, running: Collection[int] = _IDLE
) -> Call | Batch | Sleep | Park | None:
    """What the driver must do next; ``None`` once the run is over.

    Starting a call marks the attempt started in the record, so the driver saves the
    record before performing the call (write-ahead). ``running``: at a parallel group
    or a fan-out, the slots (positions in ``record.steps``) of the calls the driver
    has in flight; a started one not among them was cut off (by a crash).
    """
    while True:
        status = record.status
        if status is _RUNNING:
            i = record.cursor
            if i.__class__ is not int or not 0 <= i < len(spec.steps) or (
                len(record.steps) < len(spec.steps)
            ):
                raise _corrupt(record, f"its step cursor {i!r} is not a step of {spec.name!r}")
            s = spec.steps[i]
            if s.group is not None or s.each is not None:
                batch = _forward_block(spec, record, s, now, running)
                if batch is None:
                    continue  # the record left the block (or moved past a fan-out)
                return batch
            if record.state is not s.name and record.state != s.name:
                raise _corrupt(
                    record, f"it is RUNNING at step {s.name!r} but its state is "
                    f"{record.state!r}"
                )
            sr = record.steps[i]
            guarded = s.kind is not _RETRIABLE and record.deadline_at is not None
            if guarded and now >= record.deadline_at:  # type: ignore[operator]
                reason = SagaDeadlineExceeded(spec.deadline or 0)
                if sr.status is _S_RUNNING:  # waiting to retry, or cut off by a crash
                    unknown = record.wake_at is None
                    if unknown:
                        sr.timed_out = True
                    _step_failed(spec, record, now, reason, reason, unknown, keep_error=True)
                else:
                    if sr.status is _S_WAITING:  # parked at a wait: it waits no more
                        sr.status = StepStatus.FAILED
                        sr.finished_at = now
                        sr.error = str(reason)
                    _begin_compensation(spec, record, now, reason)
                continue
            if s.wait is not None and sr.status is not _S_RUNNING:
                parked = _at_wait(spec, record, s, sr, now)
                if parked is None:
                    continue  # it moved on (skipped, expired, failed)
                if parked.__class__ is Park:
                    return parked
            elif record.wake_at is not None:
                if now < record.wake_at:
                    return Sleep(record.wake_at)
                record.wake_at = None
            elif sr.status is _S_RUNNING:
                # Started and never settled: the process died during the attempt, which
                # may have taken effect. If the step fails for good, it is undone too.
                sr.timed_out = True
            elif sr.attempts == 0 and s.when is not None and not _wanted(spec, record, s, now):
                continue
            return _start(spec, record, s, sr, now, guarded, None)

        if status is _COMPENSATING:
            if record.wake_at is not None:
                if now < record.wake_at:
                    return Sleep(record.wake_at)
                record.wake_at = None
            position = record.cursor
            if position.__class__ is not int or not 0 <= position < len(record.undo):
                raise _corrupt(record, f"its undo cursor {position!r} is out of its undo list")
            i = record.undo[position]
            if i.__class__ is not int or not 0 <= i < len(spec.steps) or (
                len(record.steps) < len(spec.steps)
            ):
                raise _corrupt(record, f"its undo list names step {i!r}, not a step")
            s = spec.steps[i]
            if s.group is not None or s.each is not None:
                batch = _compensation_block(spec, record, s, now, running)
                if batch is None:
                    continue
                return batch
            if record.state != compensation_state(s.name):
                raise _corrupt(
                    record, f"it is COMPENSATING step {s.name!r} but its state is "
                    f"{record.state!r}"
                )
            sr = record.steps[i]
            if sr.compensation is _C_COMPENSATED:  # undone before an operator's retry
                _next_undo(spec, record, now, "undone")
                continue
            limit = record.compensation_deadline_at
            if limit is not None and now >= limit:
                _compensation_failed(spec, record, now, "compensation deadline passed")
                continue
            sr.compensation_attempts += 1
            sr.compensation = _C_RUNNING
            if sr.compensation_started_at is None:
                sr.compensation_started_at = now
            record.history.append(
                ev.CompensationStarted(
                    record.saga_id, spec.name, now, s.name, sr.compensation_attempts
                )
            )
            timeout = s.compensation_timeout
            bound = False
            if limit is not None and (timeout is None or limit - now < timeout):
                timeout, bound = limit - now, True
            return Call(i, COMPENSATE, sr.compensation_attempts, timeout, bound)
        return None


def _wanted(spec: SagaSpec, record: SagaRecord, s: StepSpec, now: float) -> bool:
    """Whether conditional step ``s`` runs; if not, the record moved past it (skipped,
    or failed: a broken guard fails its step, as the step would)."""
    assert s.when is not None
    try:
        if s.when(record.data):
            return True
    except Exception as exc:
        sr = record.steps[s.index]
        sr.attempts = 1
        sr.started_at = now
        _step_failed(spec, record, now, StepError(s.index, s.name, exc), exc, False)
        return False
    record.steps[s.index].status = _S_SKIPPED
    record.history.append(ev.StepSkipped(record.saga_id, spec.name, now, s.name))
    _advance(spec, record, now, "skip")
    return False


def _start(
    spec: SagaSpec,
    record: SagaRecord,
    s: StepSpec,
    sr: StepRecord,
    now: float,
    guarded: bool,
    payload: Any,
) -> Call:
    """Start the next attempt of forward step ``s`` (or a wait's handler)."""
    sr.attempts += 1
    sr.status = _S_RUNNING
    if sr.started_at is None:
        sr.started_at = now
    record.history.append(ev.StepStarted(record.saga_id, spec.name, now, s.name, sr.attempts))
    timeout = s.timeout
    bound = False
    if guarded:
        left = record.deadline_at - now  # type: ignore[operator]
        if timeout is None or left < timeout:
            timeout, bound = left, True
    return Call(s.index, FORWARD, sr.attempts, timeout, bound, payload)


_GO_ON = object()  # _at_wait: the wait's time came; start its handler


def _at_wait(
    spec: SagaSpec, record: SagaRecord, s: StepSpec, sr: StepRecord, now: float
) -> Park | object | None:
    """The saga is at wait ``s``: enter it, or see whether its time came.

    A :class:`Park` while it waits; ``_GO_ON`` when a timer's time came (its handler
    starts); ``None`` when the record moved on (skipped, expired, or a broken guard).
    """
    w = s.wait
    assert w is not None
    if sr.status is _S_WAITING:
        until = record.wake_at
        if until is None or now < until:
            return Park(s.index, w.signal, until, False)
        if w.signal is None:
            record.wake_at = None
            record.waiting = None
            return _GO_ON
        return Park(s.index, w.signal, until, False, True)
    # Reached: enter the wait (or skip it).
    if s.when is not None and not _wanted(spec, record, s, now):
        return None
    try:
        until = _until(w, record.data, now)
    except Exception as exc:  # a broken timer fails like a broken guard
        sr.attempts = 1
        sr.started_at = now
        _step_failed(spec, record, now, StepError(s.index, s.name, exc), exc, False)
        return None
    sr.status = _S_WAITING
    sr.started_at = now
    record.waiting = "" if w.signal is None else w.signal
    wake = until
    if s.kind is not _RETRIABLE and record.deadline_at is not None:
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
        _advance(spec, record, now, "timeout")
        return
    reason = WaitTimedOut(s.name, w.signal, w.timeout or 0)
    sr.error = str(reason)
    if on_timeout is OnTimeout.FAIL:
        transition(spec, record, "timeout", FAILED)
        _finish(spec, record, now, SagaStatus.FAILED, reason)
    else:
        _begin_compensation(spec, record, now, reason, "timeout")


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
    if s.wait is None or sr.status is not _S_WAITING or record.waiting != signal.name:
        raise _corrupt(
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
    return _start(spec, record, s, sr, now, False, payload)


def settle(
    spec: SagaSpec,
    record: SagaRecord,
    call: Call,
    now: float,
    error: BaseException | None = None,
    timed_out: bool = False,
    emitted: Sequence[Any] | None = None,
    rand: Callable[[], float] = random.random,
) -> None:
    """Record the outcome of ``call``: success (``error is None``), an error, or a timeout."""
    if call.slot >= 0:
        _settle_slot(spec, record, call, now, error, timed_out, emitted, rand)
        return
    i = call.index
    s = spec.steps[i]
    sr = record.steps[i]
    if call.direction is FORWARD:
        if error is None and not timed_out:
            sr.status = _S_COMPLETED
            sr.finished_at = now
            sr.error = None
            if emitted:
                record.events.extend(emitted)
            record.history.append(
                ev.StepCompleted(record.saga_id, spec.name, now, s.name, call.attempt)
            )
            _advance(spec, record, now, "advance")
            return
        if isinstance(error, SagaRejected):
            _rejected(spec, record, now, error)
            return
        if timed_out:
            sr.timed_out = True
            if call.deadline_bound:
                reason: SagaflowError = SagaDeadlineExceeded(spec.deadline or 0, s.name)
                _step_failed(spec, record, now, reason, reason, True)
                return
            error = StepTimeout(i, s.name, call.timeout or 0)
        assert error is not None
        limit = None if s.kind is _RETRIABLE else record.deadline_at
        later = _retry_later(spec, record, call, s.retry, error, limit, now, rand)
        if later is _RETRY:
            sr.error = _describe(error)
            return
        if later is _PAST_DEADLINE:  # a retry was due, but after the saga's deadline
            failure: SagaflowError = SagaDeadlineExceeded(spec.deadline or 0, s.name)
        elif isinstance(error, StepError):
            failure = error
        else:
            failure = StepError(i, s.name, error)
        _step_failed(spec, record, now, failure, error, timed_out)
        return

    # a compensation
    if error is None and not timed_out:
        sr.compensation = _C_COMPENSATED
        sr.compensation_finished_at = now
        sr.compensation_error = None
        if emitted:
            record.events.extend(emitted)
        record.history.append(
            ev.CompensationCompleted(record.saga_id, spec.name, now, s.name, call.attempt)
        )
        _next_undo(spec, record, now, "undone")
        return
    if timed_out:
        if call.deadline_bound:
            _compensation_failed(spec, record, now, "compensation deadline passed")
            return
        error = StepTimeout(i, s.compensation_name or s.name, call.timeout or 0)
    assert error is not None
    later = _retry_later(
        spec, record, call, s.compensation_retry, error, record.compensation_deadline_at,
        now, rand,
    )
    if later is _RETRY:
        sr.compensation_error = _describe(error)
        return
    text = _describe(error)
    if later is _PAST_DEADLINE:
        text += " (no retry: the compensation deadline would pass first)"
    _compensation_failed(spec, record, now, text)


def unstorable(
    spec: SagaSpec,
    record: SagaRecord,
    call: Call,
    now: float,
    error: BaseException,
    rand: Callable[[], float] = random.random,
) -> None:
    """``call`` returned, but what it left in the saga's fields cannot be stored.

    The driver has put the record back as the store holds it (the fields as they were
    before the call); the call may have taken effect, so its outcome is unknown: it
    counts as failed with ``error`` and, a forward step, is compensated too.
    """
    if call.direction is FORWARD:
        record.steps[call.index if call.slot < 0 else call.slot].timed_out = True
    lost = CodecError(
        f"it returned, but what it left in the saga's fields cannot be stored, so its "
        f"outcome is unknown: {error}"
    )
    lost.__cause__ = error
    settle(spec, record, call, now, lost, False, None, rand)


# What _retry_later decided.
_RETRY = "retry"
_NO_RETRY = "no retry"
_PAST_DEADLINE = "past the deadline"


def _corrupt(record: SagaRecord, why: str) -> CorruptRecord:
    """Refused before any call: running an inconsistent record could repeat a step."""
    return CorruptRecord(record.saga_id, f"{why}; nothing was run")


def _retry_later(
    spec: SagaSpec,
    record: SagaRecord,
    call: Call,
    policy: Retry,
    error: BaseException,
    limit: float | None,
    now: float,
    rand: Callable[[], float],
    slot: StepRecord | None = None,
) -> str:
    """Schedule the next attempt of ``call`` if ``policy`` allows one before ``limit``:
    the run's (or, a member or an item, its ``slot``'s) ``wake_at``."""
    if call.attempt >= policy.attempts or not policy.is_retryable(error):
        return _NO_RETRY
    delay = backoff_delay(policy, call.attempt, rand())
    if limit is not None and now + delay >= limit:
        return _PAST_DEADLINE  # the deadline would pass before the retry: give up now
    event = ev.StepRetrying if call.direction is FORWARD else ev.CompensationRetrying
    if slot is None:
        record.wake_at = now + delay
        name = spec.steps[call.index].name
    else:
        slot.wake_at = now + delay
        name = slot.name
    record.history.append(
        event(record.saga_id, spec.name, now, name, call.attempt, _describe(error),
              delay=delay)
    )
    return _RETRY


def interrupt(spec: SagaSpec, record: SagaRecord, call: Call | None, now: float) -> None:
    """The run was cancelled: the call in flight has an unknown outcome; compensate.

    A compensation in flight is left to finish (drivers shield compensation); after
    the pivot nothing can be undone, so the saga ends FAILED for an operator.
    """
    if record.status is not _RUNNING:
        return
    if _in_block(spec, record):
        # The driver has abandoned the calls it had in flight: what is left is settled
        # as the block fails.
        if record.error is None:
            record.error = SagaCancelled(spec.state_of(record.cursor))
        _forward_block(spec, record, spec.steps[record.cursor], now, _IDLE)
        return
    step = None
    if call is not None and call.direction is FORWARD:
        sr = record.steps[call.index]
        step = sr.name
        sr.timed_out = True
        sr.status = StepStatus.TIMED_OUT
        sr.finished_at = now
        sr.error = "cancelled while running"
        record.history.append(
            ev.StepFailed(record.saga_id, spec.name, now, step, call.attempt, sr.error,
                          timed_out=True)
        )
    else:
        sr = record.steps[record.cursor]
        if sr.status is _S_WAITING:  # parked at a wait: it waits no more
            step = sr.name
            sr.status = StepStatus.FAILED
            sr.finished_at = now
            sr.error = "cancelled while waiting"
        elif sr.status is _S_RUNNING:  # waiting to retry: its last attempt failed for good now
            step = sr.name
            sr.status = StepStatus.FAILED
            sr.finished_at = now
            record.history.append(
                ev.StepFailed(record.saga_id, spec.name, now, step, sr.attempts, sr.error)
            )
    record.wake_at = None
    record.waiting = None
    reason = SagaCancelled(step)
    current = spec.steps[record.cursor]
    if current.kind is _RETRIABLE or (
        current.kind is _PIVOT and record.steps[record.cursor].timed_out
    ):
        transition(spec, record, "fail", FAILED)
        _finish(spec, record, now, SagaStatus.FAILED, reason)
    else:
        _begin_compensation(spec, record, now, reason)


def _advance(spec: SagaSpec, record: SagaRecord, now: float, trigger: str) -> None:
    record.cursor += 1
    if record.cursor < len(spec.steps):
        s = spec.steps[record.cursor]
        transition(spec, record, trigger, s.name if s.group is None else spec.groups[s.group].name)
    else:
        transition(spec, record, trigger, COMPLETED)
        _finish(spec, record, now, SagaStatus.COMPLETED, None)


def _step_failed(
    spec: SagaSpec,
    record: SagaRecord,
    now: float,
    failure: SagaflowError,
    error: BaseException,
    timed_out: bool,
    keep_error: bool = False,
) -> None:
    i = record.cursor
    s = spec.steps[i]
    sr = record.steps[i]
    sr.status = StepStatus.TIMED_OUT if timed_out else StepStatus.FAILED
    sr.finished_at = now
    if not keep_error or sr.error is None:
        sr.error = _describe(error)
    if failure is not error:
        failure.__cause__ = error
    record.history.append(
        ev.StepFailed(record.saga_id, spec.name, now, s.name, sr.attempts, sr.error,
                      timed_out=timed_out)
    )
    if s.kind is _RETRIABLE or (s.kind is _PIVOT and sr.timed_out):
        transition(spec, record, "fail", FAILED)
        _finish(spec, record, now, SagaStatus.FAILED, failure)
    else:
        _begin_compensation(spec, record, now, failure)


def _rejected(spec: SagaSpec, record: SagaRecord, now: float, given: SagaRejected) -> None:
    """The step at the cursor rejected the saga: a business "no", never retried; what
    was done is compensated (after the pivot, the saga fails for an operator)."""
    i = record.cursor
    s = spec.steps[i]
    sr = record.steps[i]
    reason = SagaRejected(given.reason, s.name)
    reason.__cause__ = given
    sr.status = StepStatus.REJECTED
    sr.finished_at = now
    sr.error = given.reason
    record.history.append(
        ev.StepRejected(record.saga_id, spec.name, now, s.name, sr.attempts, given.reason)
    )
    if s.kind is _RETRIABLE or (s.kind is _PIVOT and sr.timed_out):
        transition(spec, record, "fail", FAILED)
        _finish(spec, record, now, SagaStatus.FAILED, reason)
    else:
        _begin_compensation(spec, record, now, reason)


def _needs_undo(spec: SagaSpec, record: SagaRecord, j: int) -> bool:
    if spec.compensations[j] is None:
        return False
    sr = record.steps[j]
    if spec.steps[j].each is not None:  # a fan-out: any of its items
        return any(_did(it) for it in _items(record, sr))
    return sr.status is _S_COMPLETED or sr.timed_out


def _did(sr: StepRecord) -> bool:
    """Whether step record ``sr`` may have taken effect (so it needs undoing)."""
    return sr.status is _S_COMPLETED or sr.timed_out


def _items(record: SagaRecord, sr: StepRecord) -> list[StepRecord]:
    """A fan-out's item records."""
    return record.steps[sr.first_item:sr.first_item + sr.items]


def _begin_compensation(
    spec: SagaSpec,
    record: SagaRecord,
    now: float,
    reason: SagaflowError,
    trigger: str = "compensate",
) -> None:
    start = record.cursor
    g = spec.steps[start].group
    if g is not None:  # the whole group, whichever member the cursor is at
        start = spec.groups[g].last
    undo = [j for j in range(start, -1, -1) if _needs_undo(spec, record, j)]
    for j in undo:
        sr = record.steps[j]
        sr.compensation = CompensationStatus.PENDING
        if spec.steps[j].each is not None:
            for it in _items(record, sr):
                if _did(it):
                    it.compensation = CompensationStatus.PENDING
    record.undo = undo
    record.cursor = 0
    record.wake_at = None
    record.waiting = None
    record.error = reason
    record.status = _COMPENSATING
    if spec.compensation_deadline is not None:
        record.compensation_deadline_at = now + spec.compensation_deadline
    if undo:
        transition(spec, record, trigger, compensation_state(spec.state_of(undo[0])))
    else:
        transition(spec, record, trigger, COMPENSATED)
        _finish(spec, record, now, SagaStatus.COMPENSATED, reason)


def _compensation_failed(spec: SagaSpec, record: SagaRecord, now: float, error: str) -> None:
    i = record.undo[record.cursor]
    s = spec.steps[i]
    sr = record.steps[i]
    sr.compensation = CompensationStatus.FAILED
    sr.compensation_finished_at = now
    sr.compensation_error = error
    record.failures[s.name] = error
    record.history.append(
        ev.CompensationFailed(
            record.saga_id, spec.name, now, s.name, sr.compensation_attempts, error
        )
    )
    _next_undo(spec, record, now, "undo_failed")


def _next_undo(spec: SagaSpec, record: SagaRecord, now: float, trigger: str) -> None:
    record.cursor += 1
    if record.cursor < len(record.undo):
        dest = compensation_state(spec.state_of(record.undo[record.cursor]))
        transition(spec, record, trigger, dest)
        return
    if record.failures:
        transition(spec, record, trigger, FAILED)
        reason = record.error
        _finish(
            spec, record, now, SagaStatus.FAILED,
            CompensationError(record.failures, reason),
        )
    else:
        transition(spec, record, trigger, COMPENSATED)
        _finish(spec, record, now, SagaStatus.COMPENSATED, record.error)


_FINAL_EVENTS: dict[SagaStatus, type[ev.LifecycleEvent]] = {
    SagaStatus.COMPLETED: ev.SagaCompleted,
    SagaStatus.COMPENSATED: ev.SagaCompensated,
    SagaStatus.FAILED: ev.SagaFailed,
}


def _finish(
    spec: SagaSpec,
    record: SagaRecord,
    now: float,
    status: SagaStatus,
    error: SagaflowError | None,
) -> None:
    record.status = status
    record.error = error
    record.finished_at = now
    record.wake_at = None
    record.waiting = None
    record.history.append(
        _FINAL_EVENTS[status](
            record.saga_id, spec.name, now, None, 0, None if error is None else str(error)
        )
    )


# --- parallel groups and fan-outs ---------------------------------------------------------
#
# A group's members and a fan-out's items are "slots": step records (positions in
# record.steps) that run at once, each with its own attempts, retries, timeout and
# compensation. The driver tells which of them it has in flight (``running``); the record
# says the rest. A slot RUNNING and not in flight waits to retry (its ``wake_at``) or was
# cut off by a crash (its outcome is unknown: run again, with the same key). The block is
# failing once ``record.error`` is set (a slot failed for good, the deadline passed, or the
# run was cancelled): nothing new starts, and the record leaves the block when nothing is
# in flight any more.

_FINISHED = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED})
_C_DONE = frozenset({CompensationStatus.COMPENSATED, CompensationStatus.FAILED})
_REVERSE = CompensationOrder.REVERSE


def _forward_block(
    spec: SagaSpec, record: SagaRecord, s: StepSpec, now: float, running: Collection[int]
) -> Batch | None:
    """The record is at a parallel group or a fan-out: what to start, or ``None`` once
    it left the block (all done, or failed and nothing in flight)."""
    unit = spec.state_of(s.index)
    if record.state != unit:
        raise _corrupt(record, f"it is RUNNING at {unit!r} but its state is {record.state!r}")
    steps = record.steps
    if s.each is None:
        g = spec.groups[s.group]  # type: ignore[index]
        slots: range = g.members
        limit = g.limit
        after_pivot = g.after_pivot
        items: Sequence[Any] = ()
    else:
        sr = steps[s.index]
        if sr.status is StepStatus.PENDING and not _fan_out(spec, record, s, sr, now):
            return None  # skipped, or its collection could not be fanned out
        slots = range(sr.first_item, sr.first_item + sr.items)
        limit = s.each.limit
        after_pivot = s.kind is _RETRIABLE
        items = _collection(spec, record, s, sr)
    guarded = not after_pivot and record.deadline_at is not None
    if guarded and now >= record.deadline_at and record.error is None:  # type: ignore[operator]
        record.error = SagaDeadlineExceeded(spec.deadline or 0)
    failing = record.error is not None
    calls: list[Call] = []
    until: float | None = None
    active = 0
    pending: list[int] = []
    for slot in slots:
        m = steps[slot]
        status = m.status
        if status is _S_RUNNING:
            if slot in running:
                active += 1
                continue
            wake = m.wake_at
            if wake is not None and now < wake and not failing:
                active += 1
                until = wake if until is None or wake < until else until
                continue
            if wake is None:
                m.timed_out = True  # started and never settled: cut off by a crash
            m.wake_at = None
            if failing:  # (record.error holds why)
                why = "its outcome is unknown (cut off)" if wake is None else m.error or ""
                _slot_failed(spec, record, m, now, f"{why}; not run again: {unit!r} failed",
                             wake is None)
                continue
            member = s if s.each is not None else spec.steps[slot]
            calls.append(_start_slot(spec, record, member, m, slot, now, guarded, items))
            active += 1
        elif status is StepStatus.PENDING and not failing:
            pending.append(slot)
    if not failing:
        for slot in pending:
            if limit is not None and active >= limit:
                break
            m = steps[slot]
            member = spec.steps[slot] if s.each is None else s
            if member.when is not None and not _slot_wanted(spec, record, member, m, now):
                if record.error is not None:
                    break  # its guard broke: the group fails
                continue
            calls.append(_start_slot(spec, record, member, m, slot, now, guarded, items))
            active += 1
    if record.error is not None:
        if running:
            return Batch(tuple(calls), None, True)
        _leave_failed(spec, record, s, after_pivot, now)
        return None
    if calls or running or until is not None:
        if guarded:
            until = record.deadline_at if until is None else min(until, record.deadline_at)  # type: ignore[type-var]
        return Batch(tuple(calls), until)
    for slot in slots:
        if steps[slot].status not in _FINISHED:  # cannot be: every slot is settled
            raise _corrupt(record, f"its {steps[slot].name!r} is {steps[slot].status.value}"
                           f" at {unit!r}")
    if s.each is not None:
        sr = steps[s.index]
        sr.status = _S_COMPLETED
        sr.finished_at = now
        record.history.append(ev.StepCompleted(record.saga_id, spec.name, now, s.name, 1))
        _advance(spec, record, now, "advance")
    else:
        record.cursor = spec.groups[s.group].last  # type: ignore[index]
        _advance(spec, record, now, "advance")
    return None


def _fan_out(
    spec: SagaSpec, record: SagaRecord, s: StepSpec, sr: StepRecord, now: float
) -> bool:
    """Fan-out ``s`` is reached: its items' records are made (each named by its key),
    or it is skipped or fails; whether its items are to run."""
    if s.when is not None and not _wanted(spec, record, s, now):
        return False
    f = s.each
    assert f is not None
    sr.attempts = 1
    sr.started_at = now
    try:
        value = getattr(record.data, f.field)
        if not isinstance(value, (list, tuple)):
            raise TypeError(
                f"the fan-out {s.name!r} is over the field {f.field!r}, which holds a "
                f"{type(value).__name__}, not a list or tuple: give the field a list (or "
                "tuple) of the items"
            )
        names = [_item_name(s, k, item) for k, item in enumerate(value)]
        if len(set(names)) != len(names):
            seen: dict[str, int] = {}
            for k, name in enumerate(names):
                if name in seen:
                    raise ValueError(
                        f"items #{seen[name]} and #{k} of the fan-out {s.name!r} have one key"
                        f" ({name}): give key= a function that tells every item apart, "
                        "since an item's key is its idempotency key"
                    )
                seen[name] = k
    except Exception as exc:
        _step_failed(spec, record, now, StepError(s.index, s.name, exc), exc, False)
        return False
    sr.status = _S_RUNNING
    sr.first_item = len(record.steps)
    sr.items = len(names)
    record.steps.extend([StepRecord(name) for name in names])
    record.history.append(ev.StepStarted(record.saga_id, spec.name, now, s.name, 1))
    return True


def _item_name(s: StepSpec, k: int, item: Any) -> str:
    """The record name (and so the idempotency key) of item ``k`` of fan-out ``s``."""
    key = s.each.key  # type: ignore[union-attr]
    return f"{s.name}[{k if key is None else key(item)}]"


def _collection(spec: SagaSpec, record: SagaRecord, s: StepSpec, sr: StepRecord) -> Sequence[Any]:
    """The items fan-out ``s`` is applied to, as many as when it started (or the record
    cannot be driven: its items changed under it)."""
    value = getattr(record.data, s.each.field, None)  # type: ignore[union-attr]
    if not isinstance(value, (list, tuple)) or len(value) != sr.items:
        got = (
            f"{len(value)} items" if isinstance(value, (list, tuple))
            else f"a {type(value).__name__}"
        )
        raise _corrupt(
            record, f"its fan-out {s.name!r} started over {sr.items} items of "
            f"{s.each.field!r}, which now holds {got}"  # type: ignore[union-attr]
        )
    return value


def _slot_wanted(
    spec: SagaSpec, record: SagaRecord, s: StepSpec, m: StepRecord, now: float
) -> bool:
    """Whether conditional member ``s`` runs; if not it is skipped (or, its guard
    broken, failed: the group fails)."""
    assert s.when is not None
    try:
        if s.when(record.data):
            return True
    except Exception as exc:
        m.attempts = 1
        m.started_at = now
        _slot_failed(spec, record, m, now, _describe(exc), False,
                     StepError(s.index, s.name, exc))
        return False
    m.status = _S_SKIPPED
    record.history.append(ev.StepSkipped(record.saga_id, spec.name, now, m.name))
    return False


def _start_slot(
    spec: SagaSpec,
    record: SagaRecord,
    s: StepSpec,
    m: StepRecord,
    slot: int,
    now: float,
    guarded: bool,
    items: Sequence[Any],
) -> Call:
    """Start the next attempt of member ``s`` (or of the fan-out's item in ``slot``)."""
    item = -1
    payload = None
    if s.each is not None:
        item = slot - record.steps[s.index].first_item
        payload = items[item]
        _check_item(record, s, m, item, payload)
    m.attempts += 1
    m.status = _S_RUNNING
    if m.started_at is None:
        m.started_at = now
    record.history.append(ev.StepStarted(record.saga_id, spec.name, now, m.name, m.attempts))
    timeout = s.timeout
    bound = False
    if guarded:
        left = record.deadline_at - now  # type: ignore[operator]
        if timeout is None or left < timeout:
            timeout, bound = left, True
    return Call(s.index, FORWARD, m.attempts, timeout, bound, payload, item, slot)


def _check_item(record: SagaRecord, s: StepSpec, m: StepRecord, k: int, item: Any) -> None:
    """Item ``k`` is still the one its record was made for (same key), or nothing runs."""
    try:
        name = _item_name(s, k, item)
    except Exception as exc:
        raise _corrupt(record, f"the key of item #{k} of its fan-out {s.name!r} broke: "
                       f"{_describe(exc)}") from exc
    if name != m.name:
        raise _corrupt(
            record, f"item #{k} of its fan-out {s.name!r} is now {name!r}, not {m.name!r} as "
            "when the fan-out started: the collection changed under it"
        )


def _slot_failed(
    spec: SagaSpec,
    record: SagaRecord,
    m: StepRecord,
    now: float,
    text: str,
    timed_out: bool,
    failure: SagaflowError | None = None,
) -> None:
    """Member (or item) ``m`` failed for good; the block fails with ``failure`` unless
    it already does."""
    m.status = StepStatus.TIMED_OUT if timed_out or m.timed_out else StepStatus.FAILED
    if timed_out:
        m.timed_out = True
    m.finished_at = now
    m.wake_at = None
    m.error = text
    record.history.append(
        ev.StepFailed(record.saga_id, spec.name, now, m.name, m.attempts, text,
                      timed_out=m.timed_out)
    )
    if record.error is None and failure is not None:
        record.error = failure


def _settle_slot(
    spec: SagaSpec,
    record: SagaRecord,
    call: Call,
    now: float,
    error: BaseException | None,
    timed_out: bool,
    emitted: Sequence[Any] | None,
    rand: Callable[[], float],
) -> None:
    """:func:`settle` for a member's or an item's call: only its own record changes;
    the next :func:`next_command` sees whether the block is over."""
    s = spec.steps[call.index]
    m = record.steps[call.slot]
    if call.direction is FORWARD:
        if error is None and not timed_out:
            m.status = _S_COMPLETED
            m.finished_at = now
            m.error = None
            if emitted:
                record.events.extend(emitted)
            record.history.append(
                ev.StepCompleted(record.saga_id, spec.name, now, m.name, call.attempt)
            )
            return
        if isinstance(error, SagaRejected):
            m.status = StepStatus.REJECTED
            m.finished_at = now
            m.error = error.reason
            record.history.append(
                ev.StepRejected(record.saga_id, spec.name, now, m.name, m.attempts, error.reason)
            )
            if record.error is None:
                reason = SagaRejected(error.reason, m.name)
                reason.__cause__ = error
                record.error = reason
            return
        if timed_out:
            m.timed_out = True
            if call.deadline_bound:
                failure: SagaflowError = SagaDeadlineExceeded(spec.deadline or 0, m.name)
                _slot_failed(spec, record, m, now, str(failure), True, failure)
                return
            error = StepTimeout(call.index, m.name, call.timeout or 0)
        assert error is not None
        later = _NO_RETRY
        if record.error is None:  # a failing group retries nothing
            limit = None if s.kind is _RETRIABLE else record.deadline_at
            later = _retry_later(spec, record, call, s.retry, error, limit, now, rand, m)
        if later is _RETRY:
            m.error = _describe(error)
            return
        if later is _PAST_DEADLINE:
            failure = SagaDeadlineExceeded(spec.deadline or 0, m.name)
        elif isinstance(error, StepError):
            failure = error
        else:
            failure = StepError(call.index, m.name, error)
        if failure is not error:
            failure.__cause__ = error
        _slot_failed(spec, record, m, now, _describe(error), timed_out, failure)
        return

    if error is None and not timed_out:
        m.compensation = _C_COMPENSATED
        m.compensation_finished_at = now
        m.compensation_error = None
        if emitted:
            record.events.extend(emitted)
        record.history.append(
            ev.CompensationCompleted(record.saga_id, spec.name, now, m.name, call.attempt)
        )
        return
    if timed_out:
        if call.deadline_bound:
            _slot_undo_failed(spec, record, m, now, "compensation deadline passed")
            return
        error = StepTimeout(call.index, s.compensation_name or s.name, call.timeout or 0)
    assert error is not None
    later = _retry_later(
        spec, record, call, s.compensation_retry, error, record.compensation_deadline_at,
        now, rand, m,
    )
    if later is _RETRY:
        m.compensation_error = _describe(error)
        return
    text = _describe(error)
    if later is _PAST_DEADLINE:
        text += " (no retry: the compensation deadline would pass first)"
    _slot_undo_failed(spec, record, m, now, text)


def _slot_undo_failed(
    spec: SagaSpec, record: SagaRecord, m: StepRecord, now: float, error: str
) -> None:
    m.compensation = CompensationStatus.FAILED
    m.compensation_finished_at = now
    m.compensation_error = error
    m.wake_at = None
    record.failures[m.name] = error
    record.history.append(
        ev.CompensationFailed(record.saga_id, spec.name, now, m.name, m.compensation_attempts,
                              error)
    )


def _leave_failed(
    spec: SagaSpec, record: SagaRecord, s: StepSpec, after_pivot: bool, now: float
) -> None:
    """The block failed and nothing of it is in flight: compensate (or, after the pivot,
    fail for an operator)."""
    reason = record.error
    assert reason is not None
    if s.each is not None:
        sr = record.steps[s.index]
        items = _items(record, sr)
        sr.timed_out = any(it.timed_out for it in items)
        sr.status = StepStatus.TIMED_OUT if sr.timed_out else StepStatus.FAILED
        sr.finished_at = now
        sr.error = str(reason)
        record.history.append(
            ev.StepFailed(record.saga_id, spec.name, now, s.name, 1, sr.error,
                          timed_out=sr.timed_out)
        )
    if after_pivot:
        transition(spec, record, "fail", FAILED)
        _finish(spec, record, now, SagaStatus.FAILED, reason)
    else:
        _begin_compensation(spec, record, now, reason)


def _compensation_block(
    spec: SagaSpec, record: SagaRecord, s: StepSpec, now: float, running: Collection[int]
) -> Batch | None:
    """The record compensates a group's members (the run of them at the undo cursor)
    or a fan-out's items: what to start, or ``None`` once they are all settled."""
    unit = spec.state_of(s.index)
    if record.state != compensation_state(unit):
        raise _corrupt(record, f"it is COMPENSATING {unit!r} but its state is {record.state!r}")
    steps = record.steps
    undo = record.undo
    end = record.cursor + 1
    items: Sequence[Any] = ()
    if s.each is None:
        g = spec.groups[s.group]  # type: ignore[index]
        while end < len(undo) and spec.steps[undo[end]].group == s.group:
            end += 1
        slots = undo[record.cursor:end]
        limit, order = g.limit, g.compensation
    else:
        sr = steps[s.index]
        slots = [sr.first_item + k for k, it in enumerate(_items(record, sr)) if _did(it)]
        limit, order = s.each.limit, s.each.compensation
        items = _collection(spec, record, s, sr)
    if order is _REVERSE:
        # The last to complete is undone first; one at a time.
        slots = sorted(slots, key=lambda j: (steps[j].finished_at or 0.0, j), reverse=True)
        limit = 1
    deadline = record.compensation_deadline_at
    past = deadline is not None and now >= deadline
    calls: list[Call] = []
    until: float | None = None
    active = 0
    pending: list[int] = []
    for slot in slots:
        m = steps[slot]
        c = m.compensation
        if c in _C_DONE:
            continue
        if c is _C_RUNNING:
            if slot in running:
                active += 1
                continue
            wake = m.wake_at
            if wake is not None and now < wake and not past:
                active += 1
                until = wake if until is None or wake < until else until
                continue
            m.wake_at = None
        if past:
            _slot_undo_failed(spec, record, m, now, "compensation deadline passed")
        elif c is _C_RUNNING:  # due to retry, or cut off by a crash: again
            member = s if s.each is not None else spec.steps[slot]
            calls.append(_undo_slot(spec, record, member, m, slot, now, items))
        else:
            pending.append(slot)
    for slot in pending:
        if limit is not None and active >= limit:
            break
        member = spec.steps[slot] if s.each is None else s
        calls.append(_undo_slot(spec, record, member, steps[slot], slot, now, items))
        active += 1
    if calls or running or until is not None:
        if deadline is not None:
            until = deadline if until is None else min(until, deadline)
        return Batch(tuple(calls), until)
    failed = any(steps[j].compensation is CompensationStatus.FAILED for j in slots)
    if s.each is not None:
        sr = steps[s.index]
        sr.compensation = CompensationStatus.FAILED if failed else _C_COMPENSATED
        sr.compensation_finished_at = now
    record.cursor = end - 1
    _next_undo(spec, record, now, "undo_failed" if failed else "undone")
    return None


def _undo_slot(
    spec: SagaSpec,
    record: SagaRecord,
    s: StepSpec,
    m: StepRecord,
    slot: int,
    now: float,
    items: Sequence[Any],
) -> Call:
    """Start the next attempt of the compensation of member ``s`` (or of an item)."""
    item = -1
    payload = None
    if s.each is not None:
        item = slot - record.steps[s.index].first_item
        payload = items[item]
        _check_item(record, s, m, item, payload)
    m.compensation_attempts += 1
    m.compensation = _C_RUNNING
    if m.compensation_started_at is None:
        m.compensation_started_at = now
    record.history.append(
        ev.CompensationStarted(record.saga_id, spec.name, now, m.name, m.compensation_attempts)
    )
    timeout = s.compensation_timeout
    bound = False
    limit = record.compensation_deadline_at
    if limit is not None and (timeout is None or limit - now < timeout):
        timeout, bound = limit - now, True
    return Call(s.index, COMPENSATE, m.compensation_attempts, timeout, bound, payload, item, slot)


def abandon(spec: SagaSpec, record: SagaRecord, call: Call, now: float, why: str) -> None:
    """A member's (or an item's) call in flight was cancelled by the driver (the group
    failed, or the run was cancelled): its outcome is unknown, so it is undone too."""
    m = record.steps[call.slot]
    if call.direction is FORWARD:
        _slot_failed(spec, record, m, now, why, True, SagaCancelled(m.name))
    else:
        _slot_undo_failed(spec, record, m, now, why)


def _at_block(spec: SagaSpec, record: SagaRecord) -> StepSpec | None:
    """The group member or fan-out the record's cursor is at, if it is at one."""
    s = spec.steps[record.cursor]
    return s if s.group is not None or s.each is not None else None


def _in_block(spec: SagaSpec, record: SagaRecord) -> bool:
    """Whether the running record is inside a group or a fan-out that started."""
    s = _at_block(spec, record)
    return s is not None and (s.each is None or record.steps[s.index].status is _S_RUNNING)


# --- operator actions -------------------------------------------------------------------


def cancel(spec: SagaSpec, record: SagaRecord, now: float, note: str | None = None) -> None:
    """An operator cancels a running saga: it compensates what it did.

    A step that was started and not finished (in flight, or cut short by a crash) has
    an unknown outcome and is compensated too. After the pivot nothing can be undone:
    the saga ends FAILED for an operator.
    """
    if record.status is not _RUNNING:
        raise OperatorError(
            f"saga {record.saga_id!r} is {record.status.value}: only a RUNNING saga can be "
            "cancelled"
        )
    record.history.append(
        ev.OperatorAction(record.saga_id, spec.name, now, action="cancel", note=note)
    )
    if _in_block(spec, record):
        # Nothing new starts; the calls in flight end (or, async, are cancelled) and
        # the driver's next turn compensates.
        if record.error is None:
            record.error = SagaCancelled(spec.state_of(record.cursor))
        return
    sr = record.steps[record.cursor]
    in_flight = sr.status is _S_RUNNING and record.wake_at is None
    call = None
    if in_flight:
        call = Call(record.cursor, FORWARD, sr.attempts, None, False)
    interrupt(spec, record, call, now)


def retry(spec: SagaSpec, record: SagaRecord, now: float, note: str | None = None) -> None:
    """An operator retries a FAILED saga: its failed compensations, or its failed
    retriable step, get a fresh retry budget and run again."""
    if record.status is not SagaStatus.FAILED:
        raise OperatorError(
            f"saga {record.saga_id!r} is {record.status.value}: only a FAILED saga can be "
            "retried"
        )
    record.history.append(
        ev.OperatorAction(record.saga_id, spec.name, now, action="retry", note=note)
    )
    record.resolution = None
    record.finished_at = None
    if record.failures:
        # The chain is walked again from the first failed compensation, through those
        # already done, so that every state change stays an edge of the machine.
        first = None
        for position, j in enumerate(record.undo):
            sr = record.steps[j]
            again = [sr]
            if spec.steps[j].each is not None:
                again += _items(record, sr)
            for one in again:
                if one.compensation is CompensationStatus.FAILED:
                    one.compensation = CompensationStatus.PENDING
                    one.compensation_attempts = 0
                    if first is None:
                        first = position
        assert first is not None
        reason = record.error
        if isinstance(reason, CompensationError):
            reason = reason.reason
        record.cursor = first
        record.failures = {}
        record.error = reason
        record.status = _COMPENSATING
        if spec.compensation_deadline is not None:
            record.compensation_deadline_at = now + spec.compensation_deadline
        dest = compensation_state(spec.state_of(record.undo[first]))
        transition(spec, record, "retry", dest)
        return
    sr = record.steps[record.cursor]
    again = [sr]
    block = _at_block(spec, record)
    if block is not None and block.group is not None:
        again = [record.steps[j] for j in spec.groups[block.group].members]
    elif block is not None and sr.items:  # a fan-out: its items that did not finish
        again = _items(record, sr)
        sr.status = _S_RUNNING
        sr.finished_at = None
        sr.error = None
    for one in again:
        if one.status not in _FINISHED:
            one.status = StepStatus.PENDING
            one.attempts = 0
            one.finished_at = None
            one.wake_at = None
    record.error = None
    record.status = _RUNNING
    transition(spec, record, "retry", spec.state_of(record.cursor))


def resolve(spec: SagaSpec, record: SagaRecord, now: float, note: str) -> None:
    """An operator marks a FAILED saga as handled by hand; the note says how."""
    if record.status is not SagaStatus.FAILED:
        raise OperatorError(
            f"saga {record.saga_id!r} is {record.status.value}: only a FAILED saga can be "
            "resolved"
        )
    if not note or not note.strip():
        raise OperatorError("resolve needs a note saying what was done by hand")
    record.resolution = note
    record.history.append(
        ev.OperatorAction(record.saga_id, spec.name, now, action="resolve", note=note)
    )

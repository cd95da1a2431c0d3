"""What every part of the engine shares: the commands a driver performs (:class:`Call`,
:class:`Batch`, :class:`Sleep`, :class:`Park`), and how a record moves: a checked
:func:`transition`, on to the next step, a step failing for good, into and along the
chain of compensations, to its end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from .. import events as ev
from ..context import Direction
from ..errors import (
    CompensationError,
    CorruptRecord,
    InvalidTransition,
    SagaDeadlineExceeded,
    SagaflowError,
    SagaRejected,
    StepError,
    _describe,
)
from ..machine import COMPENSATED, COMPLETED, FAILED, compensation_state
from ..policy import Retry, backoff_delay
from ..records import (
    CompensationStatus,
    SagaRecord,
    SagaStatus,
    StepRecord,
    StepStatus,
)
from ..spec import SagaSpec, StepKind, StepSpec

__all__ = [
    "Batch",
    "COMPENSATE",
    "COMPENSATING",
    "C_COMPENSATED",
    "C_RUNNING",
    "Call",
    "FORWARD",
    "IDLE",
    "NO_RETRY",
    "PAST_DEADLINE",
    "PIVOT",
    "Park",
    "RETRIABLE",
    "RETRY",
    "RUNNING",
    "S_COMPLETED",
    "S_RUNNING",
    "S_SKIPPED",
    "S_WAITING",
    "Sleep",
    "advance",
    "begin_compensation",
    "compensated",
    "compensation_failed",
    "completed",
    "corrupt",
    "did",
    "failure_of",
    "finish",
    "items_of",
    "needs_undo",
    "new_record",
    "next_undo",
    "rejected",
    "retry_later",
    "start_step",
    "start_undo",
    "step_failed",
    "transition",
    "wanted",
]

FORWARD = Direction.FORWARD
COMPENSATE = Direction.COMPENSATE


# Enum members read through their class cost a descriptor lookup each (Python 3.11);
# the engine reads them on every step, so it keeps them as module globals.
RUNNING = SagaStatus.RUNNING
COMPENSATING = SagaStatus.COMPENSATING
S_RUNNING = StepStatus.RUNNING
S_COMPLETED = StepStatus.COMPLETED
S_SKIPPED = StepStatus.SKIPPED
S_WAITING = StepStatus.WAITING
C_RUNNING = CompensationStatus.RUNNING
C_COMPENSATED = CompensationStatus.COMPENSATED
RETRIABLE = StepKind.RETRIABLE
PIVOT = StepKind.PIVOT


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
    record.status = RUNNING
    record.history.append(ev.SagaStarted(saga_id, spec.name, now))
    return record


IDLE: frozenset[int] = frozenset()


def wanted(spec: SagaSpec, record: SagaRecord, s: StepSpec, now: float) -> bool:
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
        step_failed(spec, record, now, StepError(s.index, s.name, exc), exc, False)
        return False
    record.steps[s.index].status = S_SKIPPED
    record.history.append(ev.StepSkipped(record.saga_id, spec.name, now, s.name))
    advance(spec, record, now, "skip")
    return False


def start_step(
    spec: SagaSpec,
    record: SagaRecord,
    s: StepSpec,
    sr: StepRecord,
    now: float,
    guarded: bool,
    payload: Any,
    item: int = -1,
    slot: int = -1,
) -> Call:
    """Start the next attempt of forward step ``s`` on its record ``sr`` (or a wait's
    handler; or, ``slot`` given, a group member's or a fan-out item's)."""
    sr.attempts += 1
    sr.status = S_RUNNING
    if sr.started_at is None:
        sr.started_at = now
    record.history.append(ev.StepStarted(record.saga_id, spec.name, now, sr.name, sr.attempts))
    timeout = s.timeout
    bound = False
    if guarded:
        left = record.deadline_at - now  # type: ignore[operator]
        if timeout is None or left < timeout:
            timeout, bound = left, True
    return Call(s.index, FORWARD, sr.attempts, timeout, bound, payload, item, slot)


def start_undo(
    spec: SagaSpec,
    record: SagaRecord,
    s: StepSpec,
    sr: StepRecord,
    now: float,
    payload: Any = None,
    item: int = -1,
    slot: int = -1,
) -> Call:
    """Start the next attempt of step ``s``'s compensation on its record ``sr``, limited
    by the compensation deadline."""
    sr.compensation_attempts += 1
    sr.compensation = C_RUNNING
    if sr.compensation_started_at is None:
        sr.compensation_started_at = now
    record.history.append(
        ev.CompensationStarted(record.saga_id, spec.name, now, sr.name, sr.compensation_attempts)
    )
    timeout = s.compensation_timeout
    bound = False
    limit = record.compensation_deadline_at
    if limit is not None and (timeout is None or limit - now < timeout):
        timeout, bound = limit - now, True
    return Call(s.index, COMPENSATE, sr.compensation_attempts, timeout, bound, payload, item,
                slot)


def completed(
    spec: SagaSpec, record: SagaRecord, sr: StepRecord, now: float, attempt: int,
    emitted: Sequence[Any] | None,
) -> None:
    """A forward call on ``sr`` succeeded: its events join the record's."""
    sr.status = S_COMPLETED
    sr.finished_at = now
    sr.error = None
    if emitted:
        record.events.extend(emitted)
    record.history.append(ev.StepCompleted(record.saga_id, spec.name, now, sr.name, attempt))


def compensated(
    spec: SagaSpec, record: SagaRecord, sr: StepRecord, now: float, attempt: int,
    emitted: Sequence[Any] | None,
) -> None:
    """A compensation of ``sr`` succeeded: its events join the record's."""
    sr.compensation = C_COMPENSATED
    sr.compensation_finished_at = now
    sr.compensation_error = None
    if emitted:
        record.events.extend(emitted)
    record.history.append(
        ev.CompensationCompleted(record.saga_id, spec.name, now, sr.name, attempt)
    )


def failure_of(
    spec: SagaSpec, later: str, error: BaseException, index: int, name: str
) -> SagaflowError:
    """What a forward call's failure for good (``later``: what :func:`retry_later`
    decided) is reported as: the deadline, or a step error caused by ``error``."""
    if later is PAST_DEADLINE:  # a retry was due, but after the saga's deadline
        failure: SagaflowError = SagaDeadlineExceeded(spec.deadline or 0, name)
    elif isinstance(error, StepError):
        failure = error
    else:
        failure = StepError(index, name, error)
    return failure


# What retry_later decided.
RETRY = "retry"
NO_RETRY = "no retry"
PAST_DEADLINE = "past the deadline"


def corrupt(record: SagaRecord, why: str) -> CorruptRecord:
    """Refused before any call: running an inconsistent record could repeat a step."""
    return CorruptRecord(record.saga_id, f"{why}; nothing was run")


def retry_later(
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
        return NO_RETRY
    delay = backoff_delay(policy, call.attempt, rand())
    if limit is not None and now + delay >= limit:
        return PAST_DEADLINE  # the deadline would pass before the retry: give up now
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
    return RETRY


def advance(spec: SagaSpec, record: SagaRecord, now: float, trigger: str) -> None:
    record.cursor += 1
    if record.cursor < len(spec.steps):
        s = spec.steps[record.cursor]
        transition(spec, record, trigger, s.name if s.group is None else spec.groups[s.group].name)
    else:
        transition(spec, record, trigger, COMPLETED)
        finish(spec, record, now, SagaStatus.COMPLETED, None)


def step_failed(
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
    if s.kind is RETRIABLE or (s.kind is PIVOT and sr.timed_out):
        transition(spec, record, "fail", FAILED)
        finish(spec, record, now, SagaStatus.FAILED, failure)
    else:
        begin_compensation(spec, record, now, failure)


def rejected(spec: SagaSpec, record: SagaRecord, now: float, given: SagaRejected) -> None:
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
    if s.kind is RETRIABLE or (s.kind is PIVOT and sr.timed_out):
        transition(spec, record, "fail", FAILED)
        finish(spec, record, now, SagaStatus.FAILED, reason)
    else:
        begin_compensation(spec, record, now, reason)


def needs_undo(spec: SagaSpec, record: SagaRecord, j: int) -> bool:
    if spec.compensations[j] is None:
        return False
    sr = record.steps[j]
    if spec.steps[j].each is not None:  # a fan-out: any of its items
        return any(did(it) for it in items_of(record, sr))
    return sr.status is S_COMPLETED or sr.timed_out


def did(sr: StepRecord) -> bool:
    """Whether step record ``sr`` may have taken effect (so it needs undoing)."""
    return sr.status is S_COMPLETED or sr.timed_out


def items_of(record: SagaRecord, sr: StepRecord) -> list[StepRecord]:
    """A fan-out's item records."""
    return record.steps[sr.first_item:sr.first_item + sr.items]


def begin_compensation(
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
    undo = [j for j in range(start, -1, -1) if needs_undo(spec, record, j)]
    for j in undo:
        sr = record.steps[j]
        sr.compensation = CompensationStatus.PENDING
        if spec.steps[j].each is not None:
            for it in items_of(record, sr):
                if did(it):
                    it.compensation = CompensationStatus.PENDING
    record.undo = undo
    record.cursor = 0
    record.wake_at = None
    record.waiting = None
    record.error = reason
    record.status = COMPENSATING
    if spec.compensation_deadline is not None:
        record.compensation_deadline_at = now + spec.compensation_deadline
    if undo:
        transition(spec, record, trigger, compensation_state(spec.state_of(undo[0])))
    else:
        transition(spec, record, trigger, COMPENSATED)
        finish(spec, record, now, SagaStatus.COMPENSATED, reason)


def compensation_failed(spec: SagaSpec, record: SagaRecord, now: float, error: str) -> None:
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
    next_undo(spec, record, now, "undo_failed")


def next_undo(spec: SagaSpec, record: SagaRecord, now: float, trigger: str) -> None:
    record.cursor += 1
    if record.cursor < len(record.undo):
        dest = compensation_state(spec.state_of(record.undo[record.cursor]))
        transition(spec, record, trigger, dest)
        return
    if record.failures:
        transition(spec, record, trigger, FAILED)
        reason = record.error
        finish(
            spec, record, now, SagaStatus.FAILED,
            CompensationError(record.failures, reason),
        )
    else:
        transition(spec, record, trigger, COMPENSATED)
        finish(spec, record, now, SagaStatus.COMPENSATED, record.error)


_FINAL_EVENTS: dict[SagaStatus, type[ev.LifecycleEvent]] = {
    SagaStatus.COMPLETED: ev.SagaCompleted,
    SagaStatus.COMPENSATED: ev.SagaCompensated,
    SagaStatus.FAILED: ev.SagaFailed,
}


def finish(
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

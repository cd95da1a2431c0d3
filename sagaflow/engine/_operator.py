"""What happens to a run from outside: its task cancelled (:func:`interrupt`), and an
operator's cancel, retry and resolve."""

from __future__ import annotations

from .. import events as ev
from ..errors import (
    CompensationError,
    OperatorError,
    SagaCancelled,
)
from ..machine import FAILED, compensation_state
from ..records import (
    CompensationStatus,
    SagaRecord,
    SagaStatus,
    StepStatus,
)
from ..spec import SagaSpec
from ._blocks import (
    FINISHED,
    at_block,
    forward_block,
    in_block,
)
from ._moves import (
    COMPENSATING,
    FORWARD,
    IDLE,
    PIVOT,
    RETRIABLE,
    RUNNING,
    S_RUNNING,
    S_WAITING,
    Call,
    begin_compensation,
    finish,
    items_of,
    transition,
)

__all__ = [
    "cancel",
    "interrupt",
    "resolve",
    "retry",
]


def interrupt(spec: SagaSpec, record: SagaRecord, call: Call | None, now: float) -> None:
    """The run was cancelled: the call in flight has an unknown outcome; compensate.

    A compensation in flight is left to finish (drivers shield compensation); after
    the pivot nothing can be undone, so the saga ends FAILED for an operator. Inside a
    group or a fan-out the driver abandons its calls in flight first (a member's
    ``call`` is not settled here again).
    """
    if record.status is not RUNNING:
        return
    if in_block(spec, record):
        # The driver has abandoned (engine.abandon) the calls it had in flight, ``call``
        # among them: abandoning it here again recorded its failure twice. What is left
        # is settled as the block fails.
        if record.error is None:
            record.error = SagaCancelled(spec.state_of(record.cursor))
        forward_block(spec, record, spec.steps[record.cursor], now, IDLE)
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
        if sr.status is S_WAITING:  # parked at a wait: it waits no more
            step = sr.name
            sr.status = StepStatus.FAILED
            sr.finished_at = now
            sr.error = "cancelled while waiting"
        elif sr.status is S_RUNNING:  # waiting to retry: its last attempt failed for good now
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
    if current.kind is RETRIABLE or (
        current.kind is PIVOT and record.steps[record.cursor].timed_out
    ):
        transition(spec, record, "fail", FAILED)
        finish(spec, record, now, SagaStatus.FAILED, reason)
    else:
        begin_compensation(spec, record, now, reason)


# --- operator actions -------------------------------------------------------------------


def cancel(spec: SagaSpec, record: SagaRecord, now: float, note: str | None = None) -> None:
    """An operator cancels a running saga: it compensates what it did.

    A step that was started and not finished (in flight, or cut short by a crash) has
    an unknown outcome and is compensated too. After the pivot nothing can be undone:
    the saga ends FAILED for an operator.
    """
    if record.status is not RUNNING:
        raise OperatorError(
            f"saga {record.saga_id!r} is {record.status.value}: only a RUNNING saga can be "
            "cancelled"
        )
    record.history.append(
        ev.OperatorAction(record.saga_id, spec.name, now, action="cancel", note=note)
    )
    if in_block(spec, record):
        # Nothing new starts; the calls in flight end (or, async, are cancelled) and
        # the driver's next turn compensates.
        if record.error is None:
            record.error = SagaCancelled(spec.state_of(record.cursor))
        return
    sr = record.steps[record.cursor]
    in_flight = sr.status is S_RUNNING and record.wake_at is None
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
                again += items_of(record, sr)
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
        record.status = COMPENSATING
        if spec.compensation_deadline is not None:
            record.compensation_deadline_at = now + spec.compensation_deadline
        dest = compensation_state(spec.state_of(record.undo[first]))
        transition(spec, record, "retry", dest)
        return
    sr = record.steps[record.cursor]
    again = [sr]
    block = at_block(spec, record)
    if block is not None and block.group is not None:
        again = [record.steps[j] for j in spec.groups[block.group].members]
    elif block is not None and sr.items:  # a fan-out: its items that did not finish
        again = items_of(record, sr)
        sr.status = S_RUNNING
        sr.finished_at = None
        sr.error = None
    for one in again:
        if one.status not in FINISHED:
            one.status = StepStatus.PENDING
            one.attempts = 0
            one.finished_at = None
            one.wake_at = None
    record.error = None
    record.status = RUNNING
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

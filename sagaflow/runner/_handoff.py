"""What a driver does with a choreographed instance (:func:`hand_off`): never its calls,
which its participants make (:mod:`sagaflow.choreography`), only what is due of it; and
how such an instance is a parked row between its events (:func:`park`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._choreodefs import ChoreographySpec, FlowFailed, StepDue
from ..engine._moves import begin_compensation, compensation_failed, next_undo, step_failed
from ..errors import SagaDeadlineExceeded
from ..records import CompensationStatus, SagaRecord, SagaResult, SagaStatus, StepStatus
from ..spec import StepKind
from ._common import enter, leave
from ._once import asave_once, save_once

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..spec import SagaSpec

__all__ = [
    "PARKED",
    "ahand_off",
    "flow_failed",
    "hand_off",
    "park",
    "phase_deadline",
    "step_due",
]

#: What ``record.waiting`` holds while a choreographed instance waits for its next event.
PARKED = "choreography"
_RUNNING = SagaStatus.RUNNING
_COMPENSATING = SagaStatus.COMPENSATING


def phase_deadline(record: SagaRecord) -> float | None:
    """When the instance's phase ends: its deadline while RUNNING, its compensation
    deadline while COMPENSATING."""
    if record.status is _COMPENSATING:
        return record.compensation_deadline_at
    return record.deadline_at


def park(record: SagaRecord) -> None:
    """Between its events an instance is a parked row (RUNNING or COMPENSATING), so that
    recovery and ``check_stalled`` leave it to its participants. Its ``wake_at``: a
    retry's time while one waits (the engine's), else its phase's deadline (what the
    engine knows as no wake time: see :meth:`Participant._unpark`)."""
    if record.status is not _RUNNING and record.status is not _COMPENSATING:
        if record.waiting == PARKED:
            record.waiting = None
        return
    record.waiting = PARKED
    if record.wake_at is None:
        record.wake_at = phase_deadline(record)


def retry_at_of(record: SagaRecord) -> float | None:
    """The time a retry waits for, in a parked row (``None``: none waits)."""
    wake = record.wake_at
    return None if wake is None or wake == phase_deadline(record) else wake


def _correlation(chor: ChoreographySpec, record: SagaRecord) -> str:
    return str(getattr(record.data, chor.correlation))


def flow_failed(chor: ChoreographySpec, record: SagaRecord, step: str) -> FlowFailed:
    reason = "failed" if record.error is None else str(record.error)
    return FlowFailed(chor.name, _correlation(chor, record), step, reason)


def step_due(
    chor: ChoreographySpec, spec: SagaSpec, record: SagaRecord, retry_at: float | None
) -> StepDue:
    """The :class:`StepDue` for the call the instance is at (a step, or while
    COMPENSATING the compensation), to the participant of that step."""
    compensating = record.status is _COMPENSATING
    i = record.undo[record.cursor] if compensating else record.cursor
    name = spec.steps[i].name
    who = next(r.participant for r in chor.roles if r.index == i)
    return StepDue(chor.name, _correlation(chor, record), name, who, compensating, retry_at)


def _hand(chor: ChoreographySpec, spec: SagaSpec, record: SagaRecord, now: float) -> bool:
    """What is due of a choreographed instance that a worker, ``resume_due`` or recovery
    resumes, done to the record (whether it changed). Never a call: those are the
    participants'. Its deadline passed: compensation begins, and a :class:`FlowFailed`
    tells the participants (the newest completed step's undoes it first, as after a
    step that failed); a retry came due that its participant did not make (it died in
    the backoff): a :class:`StepDue` redelivers it to that participant; its compensation
    deadline passed: the compensations not done fail (FAILED, an operator's); a
    COMPENSATING instance nobody told (an operator's cancel or retry): a FlowFailed."""
    status = record.status
    if status is _RUNNING:
        i = record.cursor
        s, sr = spec.steps[i], record.steps[i]
        retry_at = retry_at_of(record) if record.waiting == PARKED else record.wake_at
        if s.kind is not StepKind.RETRIABLE and record.deadline_at is not None and (
            now >= record.deadline_at
        ):
            reason = SagaDeadlineExceeded(spec.deadline or 0)
            record.waiting = None
            record.wake_at = retry_at
            if sr.status is StepStatus.RUNNING:  # waiting to retry, or cut off
                unknown = retry_at is None
                if unknown:
                    sr.timed_out = True
                step_failed(spec, record, now, reason, reason, unknown, keep_error=True)
            else:
                begin_compensation(spec, record, now, reason)
            if record.status is _COMPENSATING or record.status.is_terminal:
                record.events.append(flow_failed(chor, record, s.name))
            park(record)
            return True
        if retry_at is not None and now >= retry_at and sr.status is StepStatus.RUNNING:
            record.events.append(step_due(chor, spec, record, retry_at))
            record.wake_at = None
            park(record)  # due again at its deadline, if its participant is gone for good
            return True
        if record.waiting != PARKED:
            park(record)
            return True
        return False
    if status is _COMPENSATING:
        if record.waiting != PARKED:  # nobody told the participants yet
            record.events.append(flow_failed(chor, record, ""))
            park(record)
            return True
        retry_at = retry_at_of(record)
        limit = record.compensation_deadline_at
        if limit is not None and now >= limit:
            record.waiting = None
            record.wake_at = None
            while record.status is _COMPENSATING:
                undone = record.steps[record.undo[record.cursor]].compensation
                if undone is CompensationStatus.COMPENSATED:
                    next_undo(spec, record, now, "undone")
                else:
                    compensation_failed(spec, record, now, "compensation deadline passed")
            return True
        if retry_at is not None and now >= retry_at:
            record.events.append(step_due(chor, spec, record, retry_at))
            record.wake_at = None
            park(record)
            return True
    return False


def hand_off(
    chor: ChoreographySpec, rt: Runtime, spec: SagaSpec, record: SagaRecord, told: int = 0
) -> SagaResult:
    """What :func:`sagaflow.runner.drive` does with a choreographed instance (resumed
    by a worker, ``resume_due``, recovery, an operator's verb): what is due of it, saved
    (see :func:`_hand`), and its result; listeners hear its history from ``told`` on."""
    enter(rt, record)
    try:
        if _hand(chor, spec, record, rt.clock.now()) or len(record.history) > told:
            save_once(rt, spec, record, told, None, [])
    finally:
        leave(rt, record)
    return SagaResult.of(record)


async def ahand_off(
    chor: ChoreographySpec, rt: Runtime, spec: SagaSpec, record: SagaRecord, told: int = 0
) -> SagaResult:
    """:func:`hand_off`, in the awaiting task."""
    enter(rt, record)
    try:
        if _hand(chor, spec, record, rt.clock.now()) or len(record.history) > told:
            await asave_once(rt, spec, record, told, None, [])
    finally:
        leave(rt, record)
    return SagaResult.of(record)

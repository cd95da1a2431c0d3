"""The two questions a driver asks: what next (:func:`next_command`), and here is how
a call ended (:func:`settle`)."""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from typing import Any

from ..errors import (
    CodecError,
    SagaDeadlineExceeded,
    SagaflowError,
    SagaRejected,
    StepTimeout,
    _describe,
)
from ..machine import compensation_state
from ..records import (
    SagaRecord,
    StepStatus,
)
from ..spec import SagaSpec
from ._blocks import (
    compensation_block,
    forward_block,
    settle_slot,
)
from ._moves import (
    C_COMPENSATED,
    COMPENSATING,
    FORWARD,
    IDLE,
    PAST_DEADLINE,
    RETRIABLE,
    RETRY,
    RUNNING,
    S_RUNNING,
    S_WAITING,
    Batch,
    Call,
    Park,
    Sleep,
    advance,
    begin_compensation,
    compensated,
    compensation_failed,
    completed,
    corrupt,
    failure_of,
    next_undo,
    rejected,
    retry_later,
    start_step,
    start_undo,
    step_failed,
    wanted,
)
from ._waits import (
    at_wait,
)

__all__ = [
    "next_command",
    "settle",
    "unstorable",
]


def next_command(
    spec: SagaSpec, record: SagaRecord, now: float, running: Collection[int] = IDLE
) -> Call | Batch | Sleep | Park | None:
    """What the driver must do next; ``None`` once the run is over.

    Starting a call marks the attempt started in the record, so the driver saves the
    record before performing the call (write-ahead). ``running``: at a parallel group
    or a fan-out, the slots (positions in ``record.steps``) of the calls the driver
    has in flight; a started one not among them was cut off (by a crash).
    """
    while True:
        status = record.status
        if status is RUNNING:
            i = record.cursor
            if i.__class__ is not int or not 0 <= i < len(spec.steps) or (
                len(record.steps) < len(spec.steps)
            ):
                raise corrupt(record, f"its step cursor {i!r} is not a step of {spec.name!r}")
            s = spec.steps[i]
            if s.group is not None or s.each is not None:
                batch = forward_block(spec, record, s, now, running)
                if batch is None:
                    continue  # the record left the block (or moved past a fan-out)
                return batch
            if record.state is not s.name and record.state != s.name:
                raise corrupt(
                    record, f"it is RUNNING at step {s.name!r} but its state is "
                    f"{record.state!r}"
                )
            sr = record.steps[i]
            guarded = s.kind is not RETRIABLE and record.deadline_at is not None
            if guarded and now >= record.deadline_at:  # type: ignore[operator]
                reason = SagaDeadlineExceeded(spec.deadline or 0)
                if sr.status is S_RUNNING:  # waiting to retry, or cut off by a crash
                    unknown = record.wake_at is None
                    if unknown:
                        sr.timed_out = True
                    step_failed(spec, record, now, reason, reason, unknown, keep_error=True)
                else:
                    if sr.status is S_WAITING:  # parked at a wait: it waits no more
                        sr.status = StepStatus.FAILED
                        sr.finished_at = now
                        sr.error = str(reason)
                    begin_compensation(spec, record, now, reason)
                continue
            if s.wait is not None and sr.status is not S_RUNNING:
                parked = at_wait(spec, record, s, sr, now)
                if parked is None:
                    continue  # it moved on (skipped, expired, failed)
                if parked.__class__ is Park:
                    return parked
            elif record.wake_at is not None:
                if now < record.wake_at:
                    return Sleep(record.wake_at)
                record.wake_at = None
            elif sr.status is S_RUNNING:
                # Started and never settled: the process died during the attempt, which
                # may have taken effect. If the step fails for good, it is undone too.
                sr.timed_out = True
            elif sr.attempts == 0 and s.when is not None and not wanted(spec, record, s, now):
                continue
            return start_step(spec, record, s, sr, now, guarded, None)

        if status is COMPENSATING:
            if record.wake_at is not None:
                if now < record.wake_at:
                    return Sleep(record.wake_at)
                record.wake_at = None
            position = record.cursor
            if position.__class__ is not int or not 0 <= position < len(record.undo):
                raise corrupt(record, f"its undo cursor {position!r} is out of its undo list")
            i = record.undo[position]
            if i.__class__ is not int or not 0 <= i < len(spec.steps) or (
                len(record.steps) < len(spec.steps)
            ):
                raise corrupt(record, f"its undo list names step {i!r}, not a step")
            s = spec.steps[i]
            if s.group is not None or s.each is not None:
                batch = compensation_block(spec, record, s, now, running)
                if batch is None:
                    continue
                return batch
            if record.state != compensation_state(s.name):
                raise corrupt(
                    record, f"it is COMPENSATING step {s.name!r} but its state is "
                    f"{record.state!r}"
                )
            sr = record.steps[i]
            if sr.compensation is C_COMPENSATED:  # undone before an operator's retry
                next_undo(spec, record, now, "undone")
                continue
            limit = record.compensation_deadline_at
            if limit is not None and now >= limit:
                compensation_failed(spec, record, now, "compensation deadline passed")
                continue
            return start_undo(spec, record, s, sr, now)
        return None


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
        settle_slot(spec, record, call, now, error, timed_out, emitted, rand)
        return
    i = call.index
    s = spec.steps[i]
    sr = record.steps[i]
    if call.direction is FORWARD:
        if error is None and not timed_out:
            completed(spec, record, sr, now, call.attempt, emitted)
            advance(spec, record, now, "advance")
            return
        if isinstance(error, SagaRejected):
            rejected(spec, record, now, error)
            return
        if timed_out:
            sr.timed_out = True
            if call.deadline_bound:
                reason: SagaflowError = SagaDeadlineExceeded(spec.deadline or 0, s.name)
                step_failed(spec, record, now, reason, reason, True)
                return
            error = StepTimeout(i, s.name, call.timeout or 0)
        assert error is not None
        limit = None if s.kind is RETRIABLE else record.deadline_at
        later = retry_later(spec, record, call, s.retry, error, limit, now, rand)
        if later is RETRY:
            sr.error = _describe(error)
            return
        failure = failure_of(spec, later, error, i, s.name)
        step_failed(spec, record, now, failure, error, timed_out)
        return

    # a compensation
    if error is None and not timed_out:
        compensated(spec, record, sr, now, call.attempt, emitted)
        next_undo(spec, record, now, "undone")
        return
    if timed_out:
        if call.deadline_bound:
            compensation_failed(spec, record, now, "compensation deadline passed")
            return
        error = StepTimeout(i, s.compensation_name or s.name, call.timeout or 0)
    assert error is not None
    later = retry_later(
        spec, record, call, s.compensation_retry, error, record.compensation_deadline_at,
        now, rand,
    )
    if later is RETRY:
        sr.compensation_error = _describe(error)
        return
    text = _describe(error)
    if later is PAST_DEADLINE:
        text += " (no retry: the compensation deadline would pass first)"
    compensation_failed(spec, record, now, text)


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

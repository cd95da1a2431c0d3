"""Parallel groups and fan-outs: many calls at once, each settled on its own record."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from .. import events as ev
from ..errors import (
    SagaCancelled,
    SagaDeadlineExceeded,
    SagaflowError,
    SagaRejected,
    StepError,
    StepTimeout,
    _describe,
)
from ..machine import FAILED, compensation_state
from ..records import (
    CompensationStatus,
    SagaRecord,
    SagaStatus,
    StepRecord,
    StepStatus,
)
from ..spec import CompensationOrder, SagaSpec, StepSpec
from ._moves import (
    C_COMPENSATED,
    C_RUNNING,
    FORWARD,
    NO_RETRY,
    PAST_DEADLINE,
    RETRIABLE,
    RETRY,
    S_COMPLETED,
    S_RUNNING,
    S_SKIPPED,
    Batch,
    Call,
    advance,
    begin_compensation,
    compensated,
    completed,
    corrupt,
    did,
    failure_of,
    finish,
    items_of,
    next_undo,
    retry_later,
    start_step,
    start_undo,
    step_failed,
    transition,
    wanted,
)

__all__ = [
    "FINISHED",
    "abandon",
    "at_block",
    "compensation_block",
    "forward_block",
    "in_block",
    "settle_slot",
]


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

FINISHED = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED})
_C_DONE = frozenset({CompensationStatus.COMPENSATED, CompensationStatus.FAILED})
_REVERSE = CompensationOrder.REVERSE


def forward_block(
    spec: SagaSpec, record: SagaRecord, s: StepSpec, now: float, running: Collection[int]
) -> Batch | None:
    """The record is at a parallel group or a fan-out: what to start, or ``None`` once
    it left the block (all done, or failed and nothing in flight)."""
    unit = spec.state_of(s.index)
    if record.state != unit:
        raise corrupt(record, f"it is RUNNING at {unit!r} but its state is {record.state!r}")
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
        after_pivot = s.kind is RETRIABLE
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
        if status is S_RUNNING:
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
        if steps[slot].status not in FINISHED:  # cannot be: every slot is settled
            raise corrupt(record, f"its {steps[slot].name!r} is {steps[slot].status.value}"
                           f" at {unit!r}")
    if s.each is not None:
        sr = steps[s.index]
        sr.status = S_COMPLETED
        sr.finished_at = now
        record.history.append(ev.StepCompleted(record.saga_id, spec.name, now, s.name, 1))
        advance(spec, record, now, "advance")
    else:
        record.cursor = spec.groups[s.group].last  # type: ignore[index]
        advance(spec, record, now, "advance")
    return None


def _fan_out(
    spec: SagaSpec, record: SagaRecord, s: StepSpec, sr: StepRecord, now: float
) -> bool:
    """Fan-out ``s`` is reached: its items' records are made (each named by its key),
    or it is skipped or fails; whether its items are to run."""
    if s.when is not None and not wanted(spec, record, s, now):
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
        step_failed(spec, record, now, StepError(s.index, s.name, exc), exc, False)
        return False
    sr.status = S_RUNNING
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
        raise corrupt(
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
    m.status = S_SKIPPED
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
    item, payload = _item_at(record, s, m, slot, items)
    return start_step(spec, record, s, m, now, guarded, payload, item, slot)


def _item_at(
    record: SagaRecord, s: StepSpec, m: StepRecord, slot: int, items: Sequence[Any]
) -> tuple[int, Any]:
    """A fan-out's call: the position and the value of the item in ``slot`` (checked to
    be the one its record was made for); ``(-1, None)`` for a group member."""
    if s.each is None:
        return -1, None
    item = slot - record.steps[s.index].first_item
    payload = items[item]
    _check_item(record, s, m, item, payload)
    return item, payload


def _check_item(record: SagaRecord, s: StepSpec, m: StepRecord, k: int, item: Any) -> None:
    """Item ``k`` is still the one its record was made for (same key), or nothing runs."""
    try:
        name = _item_name(s, k, item)
    except Exception as exc:
        raise corrupt(record, f"the key of item #{k} of its fan-out {s.name!r} broke: "
                       f"{_describe(exc)}") from exc
    if name != m.name:
        raise corrupt(
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


def settle_slot(
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
            completed(spec, record, m, now, call.attempt, emitted)
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
        later = NO_RETRY
        if record.error is None:  # a failing group retries nothing
            limit = None if s.kind is RETRIABLE else record.deadline_at
            later = retry_later(spec, record, call, s.retry, error, limit, now, rand, m)
        if later is RETRY:
            m.error = _describe(error)
            return
        failure = failure_of(spec, later, error, call.index, m.name)
        if failure is not error:
            failure.__cause__ = error
        _slot_failed(spec, record, m, now, _describe(error), timed_out, failure)
        return

    if error is None and not timed_out:
        compensated(spec, record, m, now, call.attempt, emitted)
        return
    if timed_out:
        if call.deadline_bound:
            _slot_undo_failed(spec, record, m, now, "compensation deadline passed")
            return
        error = StepTimeout(call.index, s.compensation_name or s.name, call.timeout or 0)
    assert error is not None
    later = retry_later(
        spec, record, call, s.compensation_retry, error, record.compensation_deadline_at,
        now, rand, m,
    )
    if later is RETRY:
        m.compensation_error = _describe(error)
        return
    text = _describe(error)
    if later is PAST_DEADLINE:
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
        items = items_of(record, sr)
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
        finish(spec, record, now, SagaStatus.FAILED, reason)
    else:
        begin_compensation(spec, record, now, reason)


def compensation_block(
    spec: SagaSpec, record: SagaRecord, s: StepSpec, now: float, running: Collection[int]
) -> Batch | None:
    """The record compensates a group's members (the run of them at the undo cursor)
    or a fan-out's items: what to start, or ``None`` once they are all settled."""
    unit = spec.state_of(s.index)
    if record.state != compensation_state(unit):
        raise corrupt(record, f"it is COMPENSATING {unit!r} but its state is {record.state!r}")
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
        slots = [sr.first_item + k for k, it in enumerate(items_of(record, sr)) if did(it)]
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
        if c is C_RUNNING:
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
        elif c is C_RUNNING:  # due to retry, or cut off by a crash: again
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
        sr.compensation = CompensationStatus.FAILED if failed else C_COMPENSATED
        sr.compensation_finished_at = now
    record.cursor = end - 1
    next_undo(spec, record, now, "undo_failed" if failed else "undone")
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
    item, payload = _item_at(record, s, m, slot, items)
    return start_undo(spec, record, s, m, now, payload, item, slot)


def abandon(spec: SagaSpec, record: SagaRecord, call: Call, now: float, why: str) -> None:
    """A member's (or an item's) call in flight was cancelled by the driver (the group
    failed, or the run was cancelled): its outcome is unknown, so it is undone too."""
    m = record.steps[call.slot]
    if call.direction is FORWARD:
        _slot_failed(spec, record, m, now, why, True, SagaCancelled(m.name))
    else:
        _slot_undo_failed(spec, record, m, now, why)


def at_block(spec: SagaSpec, record: SagaRecord) -> StepSpec | None:
    """The group member or fan-out the record's cursor is at, if it is at one."""
    s = spec.steps[record.cursor]
    return s if s.group is not None or s.each is not None else None


def in_block(spec: SagaSpec, record: SagaRecord) -> bool:
    """Whether the running record is inside a group or a fan-out that started."""
    s = at_block(spec, record)
    return s is not None and (s.each is None or record.steps[s.index].status is S_RUNNING)

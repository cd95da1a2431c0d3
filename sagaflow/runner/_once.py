"""One call and no more: :func:`step_once` / :func:`astep_once`, how a choreography's
participant moves an instance by exactly the call an event triggers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._copy import shallow_copy
from ..context import Direction, StepContext
from ..engine import (
    Call,
    Sleep,
    next_command,
    settle,
)
from ..errors import CodecError, SagaflowError
from ..gather import restore
from ..records import CompensationStatus, SagaRecord, StepStatus

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..spec import SagaSpec

from ._common import (
    COMPENSATING,
    FORWARD,
    RUNNING,
    context_of,
    enter,
    leave,
)

__all__ = [
    "BeforeSave",
    "Check",
    "Expect",
    "asave_once",
    "astep_once",
    "save_once",
    "step_once",
]



#: Which call a :func:`step_once` is for: (step index, direction).
Expect = tuple[int, Direction]
#: Called on the record before each save :func:`step_once` makes.
BeforeSave = Callable[[SagaRecord], None]
#: Called after a call returned, before it settles: an error fails the call.
Check = Callable[[Call, StepContext], "BaseException | None"]


def _once_command(
    spec: SagaSpec, record: SagaRecord, now: float, expect: Expect
) -> Call | Sleep | None:
    """The engine's next command if it is the ``expect``-ed call (or the backoff before
    its retry); ``None`` if the engine wants anything else (then nothing is saved)."""
    command = next_command(spec, record, now)
    if isinstance(command, Sleep):
        return command
    if isinstance(command, Call) and command.slot < 0 and (
        (command.index, command.direction) == expect
    ):
        return command
    return None


def _once_pending(record: SagaRecord, call: Call) -> bool:
    """Whether ``call``'s step (or compensation) waits for another attempt (a retry)."""
    sr = record.steps[call.index]
    if call.direction is FORWARD:
        return (
            record.status is RUNNING and record.cursor == call.index
            and sr.status is StepStatus.RUNNING
        )
    return (
        record.status is COMPENSATING and record.undo[record.cursor] == call.index
        and sr.compensation is CompensationStatus.RUNNING
    )


def _once_fn(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, call: Call, ctx: StepContext, now: float
) -> Any:
    """The function ``call`` calls (as the telemetry wraps it), with ``ctx`` describing
    the call."""
    i = call.index
    forward = call.direction is FORWARD
    ctx.rebind(spec.steps[i].name, call.direction, call.attempt, call.timeout,
               record.deadline_at if forward else record.compensation_deadline_at, now)
    fn = spec.forward[i] if forward else spec.compensations[i]
    if rt.telemetry is None or fn is None:
        return fn
    s = spec.steps[i]
    return rt.traced(fn, s.is_async if forward else s.compensation_is_async, spec, record, call)


def save_once(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, told: int, before_save: BeforeSave | None,
    calls: list[Call],
) -> int:
    """Save ``record`` (``before_save`` first) and tell listeners its history from
    ``told`` on; how much of it they have heard now. A save that cannot encode the
    fields ``calls`` left goes back to the stored record (see :func:`~sagaflow.gather.
    restore`)."""
    if before_save is not None:
        before_save(record)
    record.updated_at = rt.clock.now()
    try:
        rt.store.save(record)
    except CodecError as exc:
        restore(rt, spec, record, rt.store.load(record.saga_id), calls, exc)
        if before_save is not None:
            before_save(record)
        rt.store.save(record)
    if len(record.history) > told:
        rt.listeners.notify(record.history, told)
    return len(record.history)


async def asave_once(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, told: int, before_save: BeforeSave | None,
    calls: list[Call],
) -> int:
    """:func:`save_once`, in the awaiting task."""
    if before_save is not None:
        before_save(record)
    record.updated_at = rt.clock.now()
    try:
        await rt.store.asave(record)
    except CodecError as exc:
        restore(rt, spec, record, await rt.store.aload(record.saga_id), calls, exc)
        if before_save is not None:
            before_save(record)
        await rt.store.asave(record)
    if len(record.history) > told:
        await rt.listeners.anotify(record.history, told)
    return len(record.history)


def step_once(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, expect: Expect,
    check: Check | None = None, before_save: BeforeSave | None = None,
) -> Call | None:
    """Perform ONE call of ``record``, the one ``expect`` names (a step or a
    compensation, with its retries and timeout), and save; the call, or ``None`` when
    the engine wants something else next (then nothing is saved, and ``record`` is to
    be dropped: it may have been changed in memory).

    The record is saved before each attempt (write-ahead) and after the call settles;
    listeners hear what happened. ``check(call, ctx)``, after the call returned, may
    fail it (an error) or add to what it emitted; ``before_save(record)`` touches the
    record before every save (a choreography parks it between its events). A
    choreography's participant runs its steps with this (:mod:`sagaflow.choreography`).
    """
    if spec.steps[expect[0]].is_async if expect[1] is FORWARD else (
        spec.steps[expect[0]].compensation_is_async
    ):
        raise SagaflowError(
            f"step {spec.steps[expect[0]].name!r} of {spec.name} is async: use astep_once"
        )
    enter(rt, record, spec)
    failed: BaseException | None = None  # what the run ends by, raised out of it
    try:
        clock = rt.clock
        told = len(record.history)
        ctx = context_of(spec, record, rt)
        while True:
            now = clock.now()
            command = _once_command(spec, record, now, expect)
            if command is None:
                return None
            if command.__class__ is Sleep:
                clock.sleep(max(0.0, command.until - now))
                continue
            call: Call = command  # type: ignore[assignment]
            told = save_once(rt, spec, record, told, before_save, [])
            fn = _once_fn(rt, spec, record, call, ctx, now)
            error, timed_out = _call_once(rt, record, call, fn, ctx)
            if error is None and not timed_out and check is not None:
                error = check(call, ctx)
            settle(spec, record, call, clock.now(), error, timed_out,
                   None if error is not None or timed_out else ctx.emitted, rt.rand)
            told = save_once(rt, spec, record, told, before_save, [call])
            if not _once_pending(record, call):
                return call
    except BaseException as exc:  # the store failed, an interrupt: the telemetry says so
        failed = exc
        raise
    finally:
        leave(rt, record, spec, failed)


def _call_once(
    rt: Runtime, record: SagaRecord, call: Call, fn: Any, ctx: StepContext
) -> tuple[BaseException | None, bool]:
    """``(error, timed_out)`` of a plain call, on this thread, or on a call thread
    watched for its timeout (one that overruns is abandoned with the saga's instance;
    the run goes on with the fields as they were)."""
    if call.timeout is None:
        try:
            fn(record.data, ctx)
        except Exception as exc:
            return exc, False
        return None, False
    before = shallow_copy(record.data)
    thread = rt.threads.take()
    thread.start(fn, (record.data, ctx), None)
    if not thread.poll(call.timeout):
        if not thread.give_up():
            record.data = before
            return None, True
        thread.poll(0)  # it ended just now: take its signal
    rt.threads.put(thread)
    error = thread.result
    if error is not None and not isinstance(error, Exception):
        raise error
    return error, False


async def astep_once(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, expect: Expect,
    check: Check | None = None, before_save: BeforeSave | None = None,
) -> Call | None:
    """:func:`step_once`, in the awaiting task (async steps too)."""
    enter(rt, record, spec)
    failed: BaseException | None = None  # what the run ends by, raised out of it
    try:
        clock = rt.clock
        told = len(record.history)
        ctx = context_of(spec, record, rt)
        while True:
            now = clock.now()
            command = _once_command(spec, record, now, expect)
            if command is None:
                return None
            if command.__class__ is Sleep:
                await clock.asleep(max(0.0, command.until - now))
                continue
            call: Call = command  # type: ignore[assignment]
            told = await asave_once(rt, spec, record, told, before_save, [])
            fn = _once_fn(rt, spec, record, call, ctx, now)
            s = spec.steps[call.index]
            error: BaseException | None = None
            timed_out = False
            if not (s.is_async if call.direction is FORWARD else s.compensation_is_async):
                before = shallow_copy(record.data) if call.timeout is not None else None
                error, finished = await rt.threads.acall(fn, (record.data, ctx), call.timeout)
                if not finished:
                    record.data = before
                    error, timed_out = None, True
                elif error is not None and not isinstance(error, Exception):
                    raise error
            else:
                limit = asyncio.timeout(call.timeout)
                try:
                    async with limit:
                        await fn(record.data, ctx)
                except TimeoutError as exc:
                    if limit.expired():
                        timed_out = True
                    else:
                        error = exc
                except Exception as exc:
                    error = exc
            if error is None and not timed_out and check is not None:
                error = check(call, ctx)
            settle(spec, record, call, clock.now(), error, timed_out,
                   None if error is not None or timed_out else ctx.emitted, rt.rand)
            told = await asave_once(rt, spec, record, told, before_save, [call])
            if not _once_pending(record, call):
                return call
    except BaseException as exc:  # the store failed, an interrupt: the telemetry says so
        failed = exc
        raise
    finally:
        leave(rt, record, spec, failed)

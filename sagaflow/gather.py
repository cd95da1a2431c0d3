"""Driving a parallel group or a fan-out: many calls in flight, one checkpoint per turn.

The engine decides (:class:`~sagaflow.engine.Batch`: what to start, what to wait for);
these loops perform. A turn settles every call that ended, asks the engine again with
the calls still in flight, and saves the record once for all of it: the outcomes just
settled and the calls about to start (write-ahead) go in one commit, which is what
makes a group of ten cost about one checkpoint rather than ten.

- sync (:func:`run_block`): each call runs on a call thread of the runtime's pool and
  tells the driving thread when it ends; a call past its timeout is abandoned (Python
  cannot stop a thread: it finishes on its own and what it returns is dropped). When the
  group fails, the calls in flight are let finish and settled as they end.
- async (:func:`arun_block`): coroutine calls are tasks, plain ``def`` calls run on call
  threads; when the group fails the coroutines in flight are cancelled (their outcome is
  unknown, so they are undone too) and the calls on threads, which cannot be stopped,
  are let finish and counted, as under the sync driver.

Members share the saga instance: each writes its own fields (two members assigning one
field: the later one wins), and a member abandoned past its timeout may still write to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from .context import Direction, StepContext
from .engine import Batch, Call, Park, Sleep, abandon, cancel, next_command, settle, unstorable
from .errors import CodecError
from .records import SagaRecord, SagaStatus
from .runtime import CallThread
from .stores.base import AsyncStoreMixin

if TYPE_CHECKING:
    from .runtime import Runtime
    from .spec import SagaSpec

__all__ = ["Command", "arun_block", "restore", "run_block"]

Command = Call | Batch | Sleep | Park | None
FORWARD = Direction.FORWARD
_RUNNING = SagaStatus.RUNNING
_monotonic = time.monotonic


def restore(
    rt: Runtime,
    spec: SagaSpec,
    record: SagaRecord,
    saved: SagaRecord | None,
    calls: list[Call],
    error: CodecError,
) -> None:
    """A save failed on what ``calls`` left in the saga's fields: put back what the store
    holds of ``record`` (the fields as before them) and record each call's outcome as
    unknown, so the saga moves on (compensating them too) rather than stick. No call to
    blame: ``error`` stands."""
    if not calls or saved is None:
        raise error
    for field in attrs.fields(SagaRecord):
        setattr(record, field.name, getattr(saved, field.name))
    now = rt.clock.now()
    for call in calls:
        unstorable(spec, record, call, now, error, rt.rand)


def _context(rt: Runtime, spec: SagaSpec, record: SagaRecord, call: Call) -> StepContext:
    forward = call.direction is FORWARD
    return StepContext(
        record.saga_id, spec.name, record.steps[call.slot].name, call.direction,
        call.attempt, call.timeout,
        record.deadline_at if forward else record.compensation_deadline_at,
        rt.clock.now(), rt.clock.now,
    )


def _target(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, call: Call, ctx: StepContext
) -> tuple[Callable[..., Any], tuple[Any, ...], bool]:
    """The function ``call`` runs (wrapped by the runtime's telemetry, if any: each
    member or item then runs in its own context), its arguments, and whether it is a
    coroutine function."""
    i = call.index
    s = spec.steps[i]
    fn: Callable[..., Any] | None
    if call.direction is FORWARD:
        fn, is_async = spec.forward[i], s.is_async
    else:
        fn, is_async = spec.compensations[i], s.compensation_is_async
    assert fn is not None
    fn = rt.traced(fn, is_async, spec, record, call)
    args = (record.data, ctx) if call.item < 0 else (record.data, call.payload, ctx)
    return fn, args, is_async


def _why(spec: SagaSpec, record: SagaRecord) -> str:
    return f"cancelled while running: {spec.state_of(record.cursor)!r} failed"


# --- sync ------------------------------------------------------------------------------


@attrs.define(slots=True)
class _Member:
    call: Call
    ctx: StepContext
    thread: CallThread
    deadline: float | None  # time.monotonic()


def run_block(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, batch: Batch, told: int,
    settled: list[Call],
) -> tuple[Command, list[Call], int]:
    """Drive the block ``batch`` is from until the engine asks for anything else.

    ``settled``: calls whose outcome the record holds and the store does not yet. Returns
    that next command, the calls settled since the last save, and how many history
    events the listeners heard.
    """
    store = rt.store
    clock = rt.clock
    sid = record.saga_id
    ended: queue.SimpleQueue[int] = queue.SimpleQueue()
    flying: dict[int, _Member] = {}
    try:
        while True:
            if batch.calls or settled:
                record.updated_at = clock.now()
                try:
                    store.save(record)
                except CodecError as exc:
                    restore(rt, spec, record, store.load(sid), settled, exc)
                    settled = []
                    command = next_command(spec, record, clock.now(), flying)
                    if command.__class__ is not Batch:
                        return command, [], told
                    batch = command
                    continue
                settled = []
                if len(record.history) > told:
                    rt.listeners.notify(record.history, told)
                    told = len(record.history)
            for call in batch.calls:
                ctx = _context(rt, spec, record, call)
                fn, args, _ = _target(rt, spec, record, call, ctx)
                thread = rt.threads.take()
                flying[call.slot] = _Member(
                    call, ctx, thread,
                    None if call.timeout is None else _monotonic() + call.timeout,
                )
                thread.start(fn, args, _teller(ended, call.slot))
            if flying:
                settled = _collect(rt, spec, record, flying, ended, batch.until)
            elif batch.until is not None:
                clock.sleep(max(0.0, batch.until - clock.now()))
            now = clock.now()
            if rt.cancels and sid in rt.cancels and record.status is _RUNNING:
                cancel(spec, record, now, rt.cancels.pop(sid))
            command = next_command(spec, record, now, flying)
            if command.__class__ is not Batch:
                return command, settled, told
            batch = command
    except BaseException:
        for member in flying.values():
            member.thread.give_up()
        raise


def _teller(ended: queue.SimpleQueue[int], slot: int) -> Callable[[], None]:
    """What a call thread runs when its call ended: it tells the driving thread."""
    return lambda: ended.put(slot)


def _collect(
    rt: Runtime,
    spec: SagaSpec,
    record: SagaRecord,
    flying: dict[int, _Member],
    ended: queue.SimpleQueue[int],
    until: float | None,
) -> list[Call]:
    """Wait until a call in flight ends (or overruns, or ``until``); settle every one
    that did; the calls settled."""
    deadlines = [m.deadline for m in flying.values() if m.deadline is not None]
    wait = None if not deadlines else max(0.0, min(deadlines) - _monotonic())
    if until is not None:
        left = max(0.0, until - rt.clock.now())
        wait = left if wait is None else min(wait, left)
    slots = []
    with contextlib.suppress(queue.Empty):
        slots.append(ended.get(timeout=wait))
    while True:  # every call that ended meanwhile: settled and saved together
        try:
            slots.append(ended.get_nowait())
        except queue.Empty:
            break
    now = rt.clock.now()
    done = []
    for slot in slots:
        member = flying.pop(slot)
        error = member.thread.result
        if error is not None and not isinstance(error, Exception):
            raise error  # KeyboardInterrupt, SystemExit: never swallowed
        rt.threads.put(member.thread)
        settle(spec, record, member.call, now, error, False,
               None if error is not None else member.ctx.emitted, rt.rand)
        done.append(member.call)
    mono = _monotonic()
    for slot, member in list(flying.items()):
        if member.deadline is not None and mono >= member.deadline:
            if member.thread.give_up():
                continue  # it ended just now: its slot is in the queue
            del flying[slot]
            settle(spec, record, member.call, now, None, True, None, rt.rand)
            done.append(member.call)
    return done


# --- async -----------------------------------------------------------------------------


async def arun_block(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, batch: Batch, told: int,
    settled: list[Call], forward_only: bool,
) -> tuple[Command, list[Call], int]:
    """:func:`run_block` in the awaiting task: the calls are tasks of this loop.

    A coroutine call is the task itself (no wrapper), and its timeout is watched here,
    in the wait for the next call to end: no timer per call. ``forward_only``: return
    as soon as the saga compensates (the engine's command for that is returned, for the
    shielded task that compensates to perform)."""
    store = rt.store
    blocks = not isinstance(store, AsyncStoreMixin)
    clock = rt.clock
    sid = record.saga_id
    loop = asyncio.get_running_loop()
    flying: dict[asyncio.Task[Any], _Flying] = {}
    slots: set[int] = set()
    cancelling = False
    try:
        while True:
            if batch.cancel and not cancelling:
                # The group failed: coroutines stop here. A call on a thread cannot be
                # stopped: it is let finish and counted (undoing it while it still runs
                # could let its effect land after its undo).
                cancelling = True
                for task, f in flying.items():
                    if not f.wrapped:
                        task.cancel()
            if batch.calls or settled:
                record.updated_at = clock.now()
                try:
                    if blocks:
                        await store.asave(record)
                    else:
                        store.save(record)
                except CodecError as exc:
                    restore(rt, spec, record, await store.aload(sid), settled, exc)
                    settled = []
                    command = next_command(spec, record, clock.now(), slots)
                    if command.__class__ is not Batch:
                        return command, [], told
                    batch = command
                    continue
                settled = []
                if len(record.history) > told:
                    if rt.listeners.async_:
                        await rt.listeners.anotify(record.history, told)
                    else:
                        rt.listeners.notify(record.history, told)
                    told = len(record.history)
            for call in batch.calls:
                ctx = _context(rt, spec, record, call)
                fn, args, is_async = _target(rt, spec, record, call, ctx)
                if is_async:
                    due = None if call.timeout is None else loop.time() + call.timeout
                    flying[loop.create_task(fn(*args))] = _Flying(call, ctx, due, False)
                else:
                    task = loop.create_task(_adef(rt, fn, args, call.timeout))
                    flying[task] = _Flying(call, ctx, None, True)
                slots.add(call.slot)
            if flying:
                wait = None if batch.until is None else max(0.0, batch.until - clock.now())
                first = min(
                    (f.due for f in flying.values() if f.due is not None and not f.overran),
                    default=None,
                )
                if first is not None:
                    left = max(0.0, first - loop.time())
                    wait = left if wait is None else min(wait, left)
                finished, _ = await asyncio.wait(
                    flying, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                settled = _asettle(rt, spec, record, flying, slots, finished)
                if first is not None:
                    _overrun(flying, loop.time())
            elif batch.until is not None:
                await clock.asleep(max(0.0, batch.until - clock.now()))
            now = clock.now()
            if rt.cancels and sid in rt.cancels and record.status is _RUNNING:
                cancel(spec, record, now, rt.cancels.pop(sid))
            command = next_command(spec, record, now, slots)
            if command.__class__ is not Batch or (
                forward_only and record.status is not _RUNNING
            ):
                return command, settled, told
            batch = command
    except asyncio.CancelledError:
        # The run is cancelled: so are its calls, whose outcome is then unknown.
        for task in flying:
            task.cancel()
        if flying:
            await asyncio.wait(flying)
        _asettle(rt, spec, record, flying, slots, set(flying))
        raise


@attrs.define(slots=True)
class _Flying:
    call: Call
    ctx: StepContext
    due: float | None  # a coroutine call's timeout (loop time)
    wrapped: bool  # a plain def call: the task gives (error, timed out)
    overran: bool = False  # cancelled here for running past ``due``


def _overrun(flying: dict[asyncio.Task[Any], _Flying], now: float) -> None:
    """Cancel the coroutine calls past their timeout (they end at the next turn)."""
    for task, f in flying.items():
        if f.due is not None and not f.overran and now >= f.due and not task.done():
            f.overran = True
            task.cancel()


def _asettle(
    rt: Runtime,
    spec: SagaSpec,
    record: SagaRecord,
    flying: dict[asyncio.Task[Any], _Flying],
    slots: set[int],
    finished: set[asyncio.Task[Any]],
) -> list[Call]:
    now = rt.clock.now()
    done = []
    # In the order the calls started, not the set's (which follows where the tasks sit
    # in memory): calls that end at one moment are recorded alike in every run.
    for task in [t for t in flying if t in finished]:
        f = flying.pop(task)
        call = f.call
        slots.discard(call.slot)
        if task.cancelled():
            if f.overran:
                settle(spec, record, call, now, None, True, None, rt.rand)
            else:
                abandon(spec, record, call, now, _why(spec, record))
        else:
            if f.wrapped:
                error, timed_out = task.result()
            else:
                error, timed_out = task.exception(), False
                if error is not None and not isinstance(error, Exception):
                    raise error  # KeyboardInterrupt, SystemExit: never swallowed
            settle(spec, record, call, now, error, timed_out,
                   None if error is not None or timed_out else f.ctx.emitted, rt.rand)
        done.append(call)
    return done


async def _adef(
    rt: Runtime, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None
) -> tuple[BaseException | None, bool]:
    """``(error, timed_out)`` of a plain ``def`` call run on a call thread (one that
    overruns is abandoned: it finishes on its own)."""
    error, finished = await rt.threads.acall(fn, args, timeout)
    if not finished:
        return None, True
    if error is not None and not isinstance(error, Exception):
        raise error
    return error, False

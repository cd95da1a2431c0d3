"""The async driver: :func:`adrive` runs a record to its end in the awaiting task; a
coroutine call that overruns is cancelled (one timer handle per loop for every run's
limit); compensation is shielded from the awaiting task's cancellation."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .._choreodefs import CHOREOGRAPHY_ATTRIBUTE
from .._copy import shallow_copy
from ..context import StepContext
from ..engine import (
    Batch,
    Call,
    Park,
    Sleep,
    cancel,
    interrupt,
    next_command,
    settle,
)
from ..errors import CodecError
from ..gather import arun_block, restore
from ..records import SagaRecord, SagaResult
from ..stores.base import AsyncStoreMixin

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..spec import SagaSpec

from ._common import (
    COMPENSATING,
    FORWARD,
    RUNNING,
    context_of,
    enter,
    handover,
    leave,
)
from ._handoff import ahand_off

__all__ = [
    "adrive",
]




def adrive(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, told: int = 0
) -> Coroutine[Any, Any, SagaResult]:
    """Drive ``record`` to a terminal state in the awaiting task (listeners hear its
    history from event ``told`` on); await what this returns: its result.

    Cancelling the task makes the saga compensate, shielded from the cancellation,
    after which the cancellation propagates. (A plain function that returns the loop's
    coroutine: one frame less for every saga in flight.)
    """
    chor = spec.cls.__dict__.get(CHOREOGRAPHY_ATTRIBUTE)
    if chor is not None:  # choreographed: its participants make the calls, not a driver
        return ahand_off(chor, rt, spec, record, told)
    return _arun(rt, spec, record, told, False)


async def _arun(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, told: int, shielded: bool,
    pending: Any = None, settled: list[Call] | None = None,
) -> SagaResult:
    """The async loop; the record's result. Unshielded (the awaiting task), it marks the
    saga live, runs the forward steps and hands compensation to a shielded task of its
    own; shielded (that task), it runs to the end.
    """
    # Every local here is kept by every saga in flight: few of them.
    store = rt.store
    if not shielded:
        enter(rt, record, spec)
    # A store whose async methods only call its sync ones (it never blocks): call those.
    blocks = not isinstance(store, AsyncStoreMixin)
    clock = rt.clock
    ctx = context_of(spec, record, rt)
    limit: _Limit | None = None
    call: Call | None = None  # the call in flight
    done: Call | None = None  # the call whose outcome the next save records
    if settled is None:
        settled = []  # or, after a group, the calls whose outcomes it records
    elif settled:
        done = settled[-1]
    failed: BaseException | None = None  # what the run ends by, raised out of it
    try:
        try:
            while True:
                now = clock.now()
                if rt.cancels and record.status is RUNNING and record.saga_id in rt.cancels:
                    cancel(spec, record, now, rt.cancels.pop(record.saga_id))
                if not shielded and record.status is COMPENSATING:
                    break
                if pending is None:
                    command = next_command(spec, record, now)
                else:  # what the unshielded run asked for, handed over with the run
                    command, pending = pending[0], None
                if command.__class__ is Batch:
                    command, settled, told = await arun_block(
                        rt, spec, record, command, told,
                        settled or ([] if done is None else [done]), not shielded,
                    )
                    done = settled[-1] if settled else None
                    now = clock.now()
                    if not shielded and record.status is COMPENSATING:
                        # The group failed: its compensation (and the save of its
                        # outcomes) runs where the awaiting task's cancel cannot reach.
                        pending = (command,)
                        break
                record.updated_at = now
                if command.__class__ is not Park or command.entered or done is not None:
                    try:
                        if blocks:
                            await store.asave(record)
                        else:
                            store.save(record)
                    except CodecError as exc:
                        restore(
                            rt, spec, record, await store.aload(record.saga_id),
                            settled or ([done] if done else []), exc,
                        )
                        done = None
                        settled = []
                        continue
                    done = None
                    settled = []
                    if len(record.history) > told:
                        if rt.listeners.async_:
                            await rt.listeners.anotify(record.history, told)
                        else:
                            rt.listeners.notify(record.history, told)
                        told = len(record.history)
                if command is None:
                    return SagaResult.of(record)
                if command.__class__ is Sleep:
                    await clock.asleep(max(0.0, command.until - now))
                    continue
                if command.__class__ is Park:
                    park: Park = command
                    found = None
                    if park.signal is not None:
                        found = await rt.store.anext_signal(
                            record.saga_id, park.signal, record.signal_marks.get(park.signal, 0)
                        )
                    handed = handover(rt, spec, record, park, found, now)
                    if handed is None:
                        if park.expires or not rt.let_go(record):
                            continue  # it expired, or a signal came while it parked
                        return SagaResult.of(record)
                    command, refused = handed
                    if refused is not None:  # its payload no longer fits its class
                        settle(spec, record, command, now, refused, False, None, rt.rand)
                        done = command
                        continue
                    ctx.signal = command.payload
                if TYPE_CHECKING:
                    assert isinstance(command, Call)
                call = command
                i = command.index
                forward = command.direction is FORWARD
                timeout = command.timeout
                ctx.rebind(
                    spec.steps[i].name, command.direction, command.attempt, timeout,
                    record.deadline_at if forward else record.compensation_deadline_at, now,
                )
                error: BaseException | None = None
                timed_out = False
                fn: Any = spec.forward[i] if forward else spec.compensations[i]
                is_async = spec.steps[i].is_async if forward else (
                    spec.steps[i].compensation_is_async
                )
                if rt.telemetry is not None:
                    fn = rt.traced(fn, is_async, spec, record, command)
                if not is_async:
                    error, timed_out = await _acall_def(rt, record, call, fn, ctx)
                    if timed_out:
                        ctx = context_of(spec, record, rt)  # the abandoned call keeps its context
                elif timeout is None:
                    try:
                        await fn(record.data, ctx)
                    except Exception as exc:
                        error = exc
                else:
                    if limit is None:
                        limit = _limit()
                    base = limit.arm(timeout)
                    try:
                        await fn(record.data, ctx)
                    except asyncio.CancelledError:
                        if not limit.expired(base):
                            raise
                        timed_out = True
                    except Exception as exc:  # a step's own TimeoutError is an ordinary error
                        error = exc
                    finally:
                        limit.disarm()
                call = None
                settle(spec, record, command, clock.now(), error, timed_out,
                       None if error is not None or timed_out else ctx.emitted, rt.rand)
                done = command
        except asyncio.CancelledError:
            if shielded:
                raise
            await _cancelled(rt, spec, record, call, told)
            raise
        finally:
            if limit is not None:
                limit.close()
        # Compensating: the rest runs where the awaiting task's cancel cannot reach it.
        if await _compensate_shielded(rt, spec, record, told, pending, settled):
            raise asyncio.CancelledError
        return SagaResult.of(record)
    except BaseException as exc:  # the store failed, a cancel: the telemetry says so
        failed = exc
        raise
    finally:
        if not shielded:
            leave(rt, record, spec, failed)


async def _cancelled(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, call: Call | None, told: int
) -> None:
    """The awaiting task was cancelled (``call`` in flight, if any): compensate,
    shielded; the caller re-raises the cancellation."""
    if record.status is RUNNING:
        interrupt(spec, record, call, rt.clock.now())
    if not record.status.is_terminal:
        await _compensate_shielded(rt, spec, record, told)
    else:
        record.updated_at = rt.clock.now()
        await rt.store.asave(record)
        await rt.listeners.anotify(record.history, told)


async def _acall_def(
    rt: Runtime, record: SagaRecord, call: Call, fn: Any, ctx: StepContext
) -> tuple[BaseException | None, bool]:
    """``(error, timed_out)`` of a plain ``def`` call (``fn``) under the async driver,
    run on a call thread; one that overruns is abandoned with the instance it was given."""
    before = shallow_copy(record.data) if call.timeout is not None else None
    error, finished = await rt.threads.acall(fn, (record.data, ctx), call.timeout)
    if not finished:
        record.data = before  # the run goes on with the fields as they were
        return None, True
    if error is not None and not isinstance(error, Exception):
        raise error  # KeyboardInterrupt, SystemExit: never swallowed
    return error, False


async def _compensate_shielded(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, told: int,
    pending: Any = None, settled: list[Call] | None = None,
) -> bool:
    """Run the rest of the saga (its compensation) in a task nobody's cancel reaches.

    Returns whether the awaiting task was cancelled meanwhile; the caller re-raises
    the cancellation once compensation is over. ``pending``: a 1-tuple of the command
    the engine already gave (after a group failed), with the calls ``settled`` since
    the last save.
    """
    task = asyncio.get_running_loop().create_task(
        _arun(rt, spec, record, told, True, pending, settled)
    )
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
    task.result()
    return cancelled


class _Limit:
    """The limit on the call in flight of one run (one task): its deadline, watched by
    the loop's :class:`_Deadlines`. A call only records its deadline; the run's entry in
    the loop's heap moves only when a call needs it sooner. A call that overruns is
    cancelled, and ``expired`` tells that cancellation from any other."""

    __slots__ = ("deadline", "fired", "owner", "queued", "task")

    def __init__(self, owner: _Deadlines, task: asyncio.Task[Any]) -> None:
        self.owner = owner
        self.task: asyncio.Task[Any] | None = task
        self.deadline: float | None = None  # of the call in flight (loop time)
        self.queued: float | None = None  # where this run sits in the loop's heap
        self.fired = False

    def arm(self, timeout: float) -> int:
        """Start limiting the call about to be awaited; returns the task's cancel count."""
        deadline = self.owner.loop.time() + timeout
        self.deadline = deadline
        self.fired = False
        if self.queued is None or deadline < self.queued:
            self.owner.queue(self, deadline)
        assert self.task is not None
        return self.task.cancelling()

    def disarm(self) -> None:
        self.deadline = None

    def expired(self, base: int) -> bool:
        """After a CancelledError: whether it was this limit's (then it is absorbed)."""
        if not self.fired:
            return False
        self.fired = False
        assert self.task is not None
        # Another cancel that arrived too must still propagate.
        return self.task.uncancel() <= base

    def close(self) -> None:
        """The run is over: its entry in the heap is dropped when met."""
        self.deadline = None
        self.task = None
        self.owner.drop(self)


class _Deadlines:
    """The limits of every run on one event loop, under one timer handle.

    ``asyncio.timeout`` schedules a timer handle per call, and a loop's heap of handles
    compares them in Python: costly per call and per saga in flight. Here each run has
    one entry in a heap of ``(time, n, limit)`` tuples and the loop one handle, armed at
    the earliest entry; when it fires, overrun calls are cancelled and runs whose call
    has a later deadline are queued again. Entries left behind (a run queued sooner,
    or over) are skipped when met, and swept out when they are half of the heap.
    """

    __slots__ = ("_at", "_count", "_handle", "_heap", "_stale", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int, _Limit]] = []
        self._count = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0
        self._stale = 0

    def limit(self) -> _Limit:
        """The limit of the run in the current task."""
        task = asyncio.current_task(self.loop)
        assert task is not None
        return _Limit(self, task)

    def queue(self, limit: _Limit, at: float) -> None:
        if limit.queued is not None:
            self._stale += 1  # its older entry
        limit.queued = at
        heapq.heappush(self._heap, (at, next(self._count), limit))
        if self._handle is None or at < self._at:
            if self._handle is not None:
                self._handle.cancel()
            self._at = at
            self._handle = self.loop.call_at(at, self._check)

    def drop(self, limit: _Limit) -> None:
        if limit.queued is None:
            return
        limit.queued = None
        self._stale += 1
        heap = self._heap
        if self._stale > 64 and 2 * self._stale > len(heap):
            heap[:] = [entry for entry in heap if entry[2].queued == entry[0]]
            heapq.heapify(heap)
            self._stale = 0
            if not heap and self._handle is not None:
                self._handle.cancel()
                self._handle = None

    def _check(self) -> None:
        self._handle = None
        heap = self._heap
        now = self.loop.time()
        while heap and heap[0][0] <= now:
            at, _, limit = heapq.heappop(heap)
            if limit.queued != at:
                self._stale -= 1
                continue
            limit.queued = None
            deadline = limit.deadline
            if deadline is None:
                continue  # nothing in flight: its next call queues it again
            if deadline <= now:
                limit.fired = True
                assert limit.task is not None
                limit.task.cancel()
            else:
                limit.queued = deadline
                heapq.heappush(heap, (deadline, next(self._count), limit))
        if heap:
            self._at = heap[0][0]
            self._handle = self.loop.call_at(self._at, self._check)


_deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = (
    weakref.WeakKeyDictionary()
)


def _limit() -> _Limit:
    """A limit for the run in the current task, watched by its loop's deadlines."""
    loop = asyncio.get_running_loop()
    deadlines = _deadlines.get(loop)
    if deadlines is None:
        deadlines = _deadlines[loop] = _Deadlines(loop)
    return deadlines.limit()

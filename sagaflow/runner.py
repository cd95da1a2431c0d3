"""The sync and async drivers: perform what the engine decides, save, notify.

:func:`drive` and :func:`adrive` take a :class:`~sagaflow.runtime.Runtime` and a record
and run it to a terminal state. Both loops are the same few lines around
:mod:`sagaflow.engine`: ask for the next command, save the record (write-ahead), tell
the listeners, perform the command and report its outcome. Only how a call is made
differs:

- sync: when any call has a limit, the run happens on a call thread while the
  caller watches the clock. Python cannot kill a thread, so a call that overruns is
  *abandoned*: the watcher records the timeout and moves the run on (compensating) on
  a fresh thread; the abandoned thread finishes its call on its own, and whatever it
  returns or emits late is dropped. A saga with no limits at all runs on the caller's
  thread.
- async: a coroutine step is cancelled when it overruns; a plain ``def`` step runs on
  a call thread so it cannot block the loop (and, overrunning, is abandoned like a sync
  one). Compensation is shielded from cancellation of the task that awaits the run.

A save that cannot encode what a call left in the saga's fields (a field that cannot be
stored) does not leave the saga stuck: the record goes back to what the store holds
(the fields as they were before the call), the call's outcome is taken as unknown, and
the saga moves on (compensating the step too).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ._copy import shallow_copy
from .context import Direction, StepContext
from .engine import (
    Batch,
    Call,
    Park,
    Sleep,
    cancel,
    deliver,
    expire,
    in_time,
    interrupt,
    next_command,
    settle,
)
from .errors import AlreadyExecuting, CodecError, SagaflowError
from .gather import arun_block, restore, run_block
from .records import CompensationStatus, SagaRecord, SagaResult, SagaStatus, Signal, StepStatus
from .stores.base import AsyncStoreMixin

if TYPE_CHECKING:
    from .clock import Clock
    from .runtime import Runtime
    from .spec import SagaSpec

__all__ = ["adrive", "astep_once", "drive", "handover", "step_once", "stored_result"]

FORWARD = Direction.FORWARD
_monotonic = time.monotonic
_RUNNING = SagaStatus.RUNNING
_COMPENSATING = SagaStatus.COMPENSATING
_NO_LIMIT_WAIT = 3600.0  # how long a watcher sleeps when no call can overrun sooner


def _enter(rt: Runtime, record: SagaRecord) -> None:
    """Mark ``record`` as driven here; a second driver of the same saga is refused."""
    if rt.live.setdefault(record.saga_id, record) is not record:
        raise AlreadyExecuting(record.saga_id)


def _leave(rt: Runtime, record: SagaRecord) -> None:
    saga_id = record.saga_id
    if rt.live.get(saga_id) is record:  # a parked saga may be driven by another by now
        del rt.live[saga_id]
        if rt.pokes:
            rt.pokes.discard(saga_id)
    if rt.cancels:
        rt.cancels.pop(saga_id, None)


def _context(spec: SagaSpec, record: SagaRecord, rt: Runtime) -> StepContext:
    return StepContext(
        record.saga_id, spec.name, "", FORWARD, 0, None, None, 0.0, rt.clock.now
    )


# --- sync ------------------------------------------------------------------------------


_NOTHING: dict[str, Any] = {}  # no call in flight (never written to)


class _Watch:
    """What the thread running a saga shares with the thread watching its timeouts.

    ``inflight`` describes the call in flight that has a limit: ``{"call": the call,
    "at": its deadline (time.monotonic)}``. Whoever pops ``"call"`` from it owns the
    call's outcome: the runner when the call returns, the watcher when it overruns
    (popping is atomic, so exactly one of them gets it; no lock per call). ``before``
    is the saga's fields as they were before that call. ``taken_over``: the run is
    not the runner's any more (it stops before its next call). ``told`` is how many of
    the record's history events the listeners heard, carried across takeovers.
    """

    __slots__ = ("before", "error", "inflight", "taken_over", "told")

    def __init__(self, told: int) -> None:
        self.inflight: dict[str, Any] = _NOTHING
        self.taken_over = False
        self.error: BaseException | None = None
        self.before: Any = None
        self.told = told


def handover(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, park: Park, signal: Signal | None,
    now: float,
) -> tuple[Call, CodecError | None] | None:
    """The call of the handler ``signal`` goes to (the saga is parked at its wait), and
    the error if its payload no longer decodes to the declared class; ``None`` if no
    signal came (in time): the saga stays parked, or, if the wait's time has come, the
    wait has expired (:func:`~sagaflow.engine.expire`) and the engine is asked again.
    Written once for both drivers: only the store's read differs."""
    signal = in_time(park, signal)
    if signal is None:
        if park.expires:
            expire(spec, record, now)
        return None
    cls = spec.steps[record.cursor].wait.payload  # type: ignore[union-attr]
    payload: Any = None
    refused: CodecError | None = None
    if cls is not None:
        try:
            payload = rt.codec.load_payload(signal.payload, cls)
        except CodecError as exc:
            refused = exc
    return deliver(spec, record, signal, payload, now), refused


def stored_result(spec: SagaSpec, existing: SagaRecord) -> SagaResult:
    """What starting ``spec``'s saga under an id the store has already gives: the
    stored result once it finished, :class:`~sagaflow.AlreadyExecuting` while it runs;
    an id of another saga type is refused."""
    if existing.saga_name != spec.name:
        raise SagaflowError(
            f"saga id {existing.saga_id!r} belongs to a {existing.saga_name!r} saga, not "
            f"{spec.name!r}: saga ids must be unique across saga types"
        )
    if not existing.status.is_terminal:
        raise AlreadyExecuting(existing.saga_id, existing.status.value)
    return SagaResult.of(existing)


def drive(rt: Runtime, spec: SagaSpec, record: SagaRecord, told: int = 0) -> SagaResult:
    """Drive ``record`` to a terminal state; returns its result when it is there.

    Listeners hear the record's history from event ``told`` on. With no limit on any
    call, the run happens on this thread. Otherwise it happens on a call thread while
    this one watches: it sleeps until the earliest moment a call could overrun, and
    when one does it takes the run over (the timed-out call is abandoned) and hands it
    to a fresh thread. One thread handoff per run, not per call.
    """
    _enter(rt, record)
    try:
        if spec.shortest_limit is None and spec.deadline is None and (
            spec.compensation_deadline is None
        ):
            _run_sync(rt, spec, record, told, None)
        else:
            _watch(rt, spec, record, told)
    finally:
        _leave(rt, record)
    return SagaResult.of(record)


def _run_sync(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, told: int, watch: _Watch | None
) -> None:
    store = rt.store
    listeners = rt.listeners
    clock = rt.clock
    rand = rt.rand
    cancels = rt.cancels
    forward_fns = spec.forward
    compensations = spec.compensations
    names = [s.name for s in spec.steps]
    history = record.history
    sid = record.saga_id
    ctx = _context(spec, record, rt)
    done: Call | None = None  # the call whose outcome the next save records
    settled: list[Call] = []  # or, after a group, the calls whose outcomes it records
    while True:
        now = clock.now()
        if cancels and sid in cancels and record.status is _RUNNING:
            cancel(spec, record, now, cancels.pop(sid))
        command = next_command(spec, record, now)
        if command.__class__ is Batch:
            command, settled, told = run_block(
                rt, spec, record, command, told, settled or ([] if done is None else [done])
            )
            if watch is not None:
                watch.told = told
            done = settled[-1] if settled else None
            now = clock.now()
        record.updated_at = now
        if command.__class__ is not Park or command.entered or done is not None:
            try:
                store.save(record)
            except CodecError as exc:
                restore(rt, spec, record, store.load(sid), settled or ([done] if done else []), exc)
                done = None
                settled = []
                continue
            done = None
            settled = []
            if len(history) > told:
                start = told
                told = len(history)
                if watch is not None:
                    watch.told = told
                listeners.notify(history, start)
        if command is None:
            return
        if command.__class__ is Sleep:
            clock.sleep(max(0.0, command.until - now))
            continue
        if command.__class__ is Park:
            park: Park = command
            found = None
            if park.signal is not None:
                found = rt.store.next_signal(
                    sid, park.signal, record.signal_marks.get(park.signal, 0)
                )
            handed = handover(rt, spec, record, park, found, now)
            if handed is None:
                if park.expires or not rt.let_go(record):
                    continue  # it expired, or a signal came while it parked
                return
            command, refused = handed
            if refused is not None:  # its payload no longer fits its class: a failure
                settle(spec, record, command, now, refused, False, None, rand)
                done = command
                continue
            ctx.signal = command.payload
        if TYPE_CHECKING:
            assert isinstance(command, Call)
        call = command
        i = call.index
        fn: Callable[..., Any] | None
        if call.direction is FORWARD:
            fn = forward_fns[i]
            ctx.rebind(names[i], FORWARD, call.attempt, call.timeout, record.deadline_at, now)
        else:
            fn = compensations[i]
            ctx.rebind(names[i], call.direction, call.attempt, call.timeout,
                       record.compensation_deadline_at, now)
        assert fn is not None
        if watch is not None and call.timeout is not None:
            # If this call is abandoned it keeps the instance; the run goes on with the
            # fields as they were, untouched by what it writes late.
            if watch.taken_over:
                return
            watch.before = shallow_copy(record.data)
            inflight = {"call": call, "at": _monotonic() + call.timeout}
            watch.inflight = inflight
            try:
                fn(record.data, ctx)
                error = None
            except Exception as exc:
                error = exc
            if inflight.pop("call", None) is None:
                return  # the watcher gave up on this call: the record is not ours
            watch.inflight = _NOTHING
        else:
            try:
                fn(record.data, ctx)
                error = None
            except Exception as exc:
                error = exc
        settle(spec, record, call, clock.now(), error, False,
               None if error is not None else ctx.emitted, rand)
        done = call


def _watched(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, watch: _Watch
) -> None:
    try:
        _run_sync(rt, spec, record, watch.told, watch)
    except BaseException as exc:  # re-raised by the watching thread
        watch.error = exc


def _watch(rt: Runtime, spec: SagaSpec, record: SagaRecord, told: int) -> None:
    """Run ``record`` on call threads while this thread watches for overrunning calls."""
    limits = [x for x in (spec.shortest_limit, spec.compensation_deadline) if x is not None]
    # No call that starts from now on can overrun sooner than this, nor past a deadline.
    floor = min(limits, default=_NO_LIMIT_WAIT)
    clock = rt.clock
    threads = rt.threads
    while True:
        watch = _Watch(told)
        thread = threads.take()
        wait = _until_deadlines(floor, record, clock)
        # Nothing between waking the thread and waiting for it: the thread, woken on
        # another core, would find this one holding the GIL and wait a second time.
        thread.start(_watched, (rt, spec, record, watch), None)
        call: Call | None = None
        try:
            while not thread.poll(wait):
                inflight = watch.inflight
                deadline = inflight.get("at")
                now = _monotonic()
                if deadline is not None and now >= deadline:
                    call = inflight.pop("call", None)
                    if call is not None:  # overran: the call is abandoned, the run is ours
                        watch.taken_over = True
                        break
                    deadline = None  # it returned just now
                wait = floor if deadline is None else min(floor, deadline - now)
                wait = _until_deadlines(wait, record, clock)
            else:
                threads.put(thread)
                if watch.error is not None:
                    raise watch.error
                return
        except BaseException:
            watch.taken_over = True  # whatever the run does next, it does not write
            watch.inflight.pop("call", None)
            thread.give_up()
            raise
        thread.give_up()  # the thread ends when the abandoned call returns
        assert call is not None
        told = watch.told
        record.data = watch.before
        settle(spec, record, call, clock.now(), None, True, None, rt.rand)


def _until_deadlines(wait: float, record: SagaRecord, clock: Clock) -> float:
    """``wait``, cut short by the saga's deadlines still ahead (at least a millisecond)."""
    for limit in (record.deadline_at, record.compensation_deadline_at):
        if limit is not None:
            left = limit - clock.now()
            if 0 < left < wait:
                wait = left
    return max(wait, 0.001)


# --- async -----------------------------------------------------------------------------


def adrive(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, told: int = 0
) -> Coroutine[Any, Any, SagaResult]:
    """Drive ``record`` to a terminal state in the awaiting task (listeners hear its
    history from event ``told`` on); await what this returns: its result.

    Cancelling the task makes the saga compensate, shielded from the cancellation,
    after which the cancellation propagates. (A plain function that returns the loop's
    coroutine: one frame less for every saga in flight.)
    """
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
        _enter(rt, record)
    # A store whose async methods only call its sync ones (it never blocks): call those.
    blocks = not isinstance(store, AsyncStoreMixin)
    clock = rt.clock
    ctx = _context(spec, record, rt)
    limit: _Limit | None = None
    call: Call | None = None  # the call in flight
    done: Call | None = None  # the call whose outcome the next save records
    if settled is None:
        settled = []  # or, after a group, the calls whose outcomes it records
    elif settled:
        done = settled[-1]
    try:
        try:
            while True:
                now = clock.now()
                if rt.cancels and record.status is _RUNNING and record.saga_id in rt.cancels:
                    cancel(spec, record, now, rt.cancels.pop(record.saga_id))
                if not shielded and record.status is _COMPENSATING:
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
                    if not shielded and record.status is _COMPENSATING:
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
                if not (spec.steps[i].is_async if forward else spec.steps[i].compensation_is_async):
                    error, timed_out = await _acall_def(rt, spec, record, call, ctx)
                    if timed_out:
                        ctx = _context(spec, record, rt)  # the abandoned call keeps its context
                elif timeout is None:
                    try:
                        await (spec.forward[i] if forward else spec.compensations[i])(  # type: ignore[misc]
                            record.data, ctx
                        )
                    except Exception as exc:
                        error = exc
                else:
                    if limit is None:
                        limit = _limit()
                    base = limit.arm(timeout)
                    try:
                        await (spec.forward[i] if forward else spec.compensations[i])(  # type: ignore[misc]
                            record.data, ctx
                        )
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
    finally:
        if not shielded:
            _leave(rt, record)


async def _cancelled(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, call: Call | None, told: int
) -> None:
    """The awaiting task was cancelled (``call`` in flight, if any): compensate,
    shielded; the caller re-raises the cancellation."""
    if record.status is _RUNNING:
        interrupt(spec, record, call, rt.clock.now())
    if not record.status.is_terminal:
        await _compensate_shielded(rt, spec, record, told)
    else:
        record.updated_at = rt.clock.now()
        await rt.store.asave(record)
        await rt.listeners.anotify(record.history, told)


async def _acall_def(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, call: Call, ctx: StepContext
) -> tuple[BaseException | None, bool]:
    """``(error, timed_out)`` of a plain ``def`` call under the async driver, run on a
    call thread; one that overruns is abandoned with the instance it was given."""
    i = call.index
    fn = spec.forward[i] if call.direction is FORWARD else spec.compensations[i]
    assert fn is not None
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


# --- one call: a choreography's participant --------------------------------------------

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
            record.status is _RUNNING and record.cursor == call.index
            and sr.status is StepStatus.RUNNING
        )
    return (
        record.status is _COMPENSATING and record.undo[record.cursor] == call.index
        and sr.compensation is CompensationStatus.RUNNING
    )


def _once_fn(spec: SagaSpec, record: SagaRecord, call: Call, ctx: StepContext, now: float) -> Any:
    """The function ``call`` calls, with ``ctx`` describing the call."""
    i = call.index
    forward = call.direction is FORWARD
    ctx.rebind(spec.steps[i].name, call.direction, call.attempt, call.timeout,
               record.deadline_at if forward else record.compensation_deadline_at, now)
    return spec.forward[i] if forward else spec.compensations[i]


def _save_once(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, told: int, before_save: BeforeSave | None,
    calls: list[Call],
) -> int:
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


async def _asave_once(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, told: int, before_save: BeforeSave | None,
    calls: list[Call],
) -> int:
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
    _enter(rt, record)
    try:
        clock = rt.clock
        told = len(record.history)
        ctx = _context(spec, record, rt)
        while True:
            now = clock.now()
            command = _once_command(spec, record, now, expect)
            if command is None:
                return None
            if command.__class__ is Sleep:
                clock.sleep(max(0.0, command.until - now))
                continue
            call: Call = command  # type: ignore[assignment]
            told = _save_once(rt, spec, record, told, before_save, [])
            fn = _once_fn(spec, record, call, ctx, now)
            error, timed_out = _call_once(rt, record, call, fn, ctx)
            if error is None and not timed_out and check is not None:
                error = check(call, ctx)
            settle(spec, record, call, clock.now(), error, timed_out,
                   None if error is not None or timed_out else ctx.emitted, rt.rand)
            told = _save_once(rt, spec, record, told, before_save, [call])
            if not _once_pending(record, call):
                return call
    finally:
        _leave(rt, record)


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
    _enter(rt, record)
    try:
        clock = rt.clock
        told = len(record.history)
        ctx = _context(spec, record, rt)
        while True:
            now = clock.now()
            command = _once_command(spec, record, now, expect)
            if command is None:
                return None
            if command.__class__ is Sleep:
                await clock.asleep(max(0.0, command.until - now))
                continue
            call: Call = command  # type: ignore[assignment]
            told = await _asave_once(rt, spec, record, told, before_save, [])
            fn = _once_fn(spec, record, call, ctx, now)
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
            told = await _asave_once(rt, spec, record, told, before_save, [call])
            if not _once_pending(record, call):
                return call
    finally:
        _leave(rt, record)

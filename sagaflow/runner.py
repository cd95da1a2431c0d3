"""The sync and async drivers: perform what the engine decides, save, notify.

Both loops are the same four lines around :mod:`sagaflow.engine`: ask for the next
command, save the record (write-ahead), tell the listeners, perform the command and
report its outcome. Only how a call is made differs:

- sync: when any call has a limit, the run happens on a worker thread while the
  caller watches the clock. Python cannot kill a thread, so a call that overruns is
  *abandoned*: the watcher records the timeout and moves the run on (compensating) on
  a fresh worker; the abandoned thread finishes its call on its own, and whatever it
  returns or emits late is dropped. A saga with no limits at all runs on the caller's
  thread.
- async: a coroutine step runs under ``asyncio.timeout`` and is cancelled when it
  overruns; a plain ``def`` step runs on a worker thread so it cannot block the loop
  (and, overrunning, is abandoned like a sync one). Compensation is shielded from
  cancellation of the task that awaits the run.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._copy import shallow_copy
from .context import Direction, StepContext
from .engine import Call, Sleep, cancel, interrupt, next_command, settle
from .records import SagaRecord, SagaStatus

if TYPE_CHECKING:
    from .definition import SagaSpec
    from .orchestrator import Orchestrator

__all__ = ["RunHandle", "run_async", "run_sync"]

FORWARD = Direction.FORWARD
_allocate = threading.Lock
_monotonic = time.monotonic
_COMPENSATING = SagaStatus.COMPENSATING


class _Worker:
    """A daemon thread that performs one plain ``def`` call at a time.

    The caller waits for the call at most its timeout. Giving up *abandons* the worker:
    the call finishes on its own, its result is dropped and the thread ends. Daemon
    threads, so that an abandoned call never holds up the interpreter's exit.
    """

    __slots__ = ("_delivered", "_done", "_go", "_guard", "_job", "_result", "abandoned")

    def __init__(self) -> None:
        self._go = _allocate()
        self._go.acquire()
        self._done = _allocate()
        self._done.acquire()
        self._guard = _allocate()
        self._job: tuple[Any, ...] | None = None
        self._result: BaseException | None = None
        self._delivered = False
        self.abandoned = False
        threading.Thread(target=self._serve, name="sagaflow-call", daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._go.acquire()
            job = self._job
            if job is None:
                return
            fn, args, context, notify = job
            self._job = None
            try:
                context.run(fn, *args)
                result: BaseException | None = None
            except BaseException as exc:  # handed to the caller, which re-raises non-Exceptions
                result = exc
            with self._guard:
                if self.abandoned:
                    return  # nobody waits for this late result: drop it, end the thread
                self._result = result
                self._delivered = True
                if notify is None:
                    self._done.release()
                else:
                    notify()

    def start(
        self, fn: Callable[..., Any], args: tuple[Any, ...], notify: Callable[[], Any] | None
    ) -> None:
        """Begin ``fn(*args)``; its end is told by ``notify()`` (run on the worker
        thread) or, without one, seen by :meth:`poll`."""
        self._delivered = False
        self._job = (fn, args, contextvars.copy_context(), notify)
        self._go.release()

    def poll(self, timeout: float) -> bool:
        """Whether the call ended within ``timeout`` seconds (without giving up)."""
        return self._done.acquire(timeout=max(timeout, 0.0))

    def give_up(self) -> bool:
        """Stop waiting for the call; True if its result had already been delivered."""
        with self._guard:
            if self._delivered:
                return True
            self.abandoned = True
            return False

    @property
    def result(self) -> BaseException | None:
        return self._result

    def stop(self) -> None:
        self._job = None
        self._go.release()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class WorkerPool:
    """Idle worker threads kept for reuse; an abandoned worker is never reused."""

    def __init__(self) -> None:
        self._idle: list[_Worker] = []

    def take(self) -> _Worker:
        """An idle worker, or a new one."""
        try:
            return self._idle.pop()
        except IndexError:
            return _Worker()

    def put(self, worker: _Worker) -> None:
        """Return a worker whose call ended."""
        self._idle.append(worker)

    async def acall(
        self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None
    ) -> tuple[BaseException | None, bool]:
        """``(error, finished)`` of ``fn(*args)`` run on a worker thread within
        ``timeout``: a plain ``def`` step under ``arun`` never blocks the event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        worker = self.take()
        worker.start(fn, args, lambda: loop.call_soon_threadsafe(_wake, future))
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            if not worker.give_up():
                return None, False
        except BaseException:
            worker.give_up()
            raise
        self._idle.append(worker)
        return worker.result, True

    def close(self) -> None:
        while self._idle:
            self._idle.pop().stop()


class RunHandle:
    """A run in progress in this process; an operator's cancel reaches it through here."""

    __slots__ = ("cancel_note", "cancel_requested", "told")

    def __init__(self, told: int = 0) -> None:
        self.cancel_requested = False
        self.cancel_note: str | None = None
        #: how many of the record's history events the listeners were told already
        self.told = told

    def request_cancel(self, note: str | None) -> None:
        self.cancel_note = note
        self.cancel_requested = True


def _cancel_if_asked(
    handle: RunHandle, spec: SagaSpec, record: SagaRecord, now: float
) -> None:
    """Between two calls: turn an operator's cancel into compensation."""
    handle.cancel_requested = False
    if record.status is SagaStatus.RUNNING:
        cancel(spec, record, now, handle.cancel_note)


def _context(orch: Orchestrator, spec: SagaSpec, record: SagaRecord, call: Call, now: float) -> (
    StepContext
):
    s = spec.steps[call.index]
    forward = call.direction is FORWARD
    deadline = record.deadline_at if forward else record.compensation_deadline_at
    return StepContext(
        record.saga_id,
        spec.name,
        s.name,
        call.direction,
        call.attempt,
        call.timeout,
        deadline,
        now,
        orch.clock.now,
    )


def _call_sync(
    orch: Orchestrator, spec: SagaSpec, record: SagaRecord, call: Call, now: float
) -> tuple[BaseException | None, list[Any] | None]:
    fn = spec.forward[call.index] if call.direction is FORWARD else spec.compensations[call.index]
    assert fn is not None
    ctx = _context(orch, spec, record, call, now)
    try:
        fn(record.data, ctx)
    except Exception as exc:
        return exc, None
    return None, ctx._pending


class _Watch:
    """What the thread running a saga shows the thread watching its timeouts.

    ``deadline`` (``time.monotonic``) is set while a call with a limit is in flight.
    The watcher takes the run over when a call overruns; the runner checks
    ``taken_over`` after every call and, if so, leaves the record alone.
    """

    __slots__ = ("before", "call", "deadline", "error", "guard", "taken_over")

    def __init__(self) -> None:
        self.guard = _allocate()
        self.deadline: float | None = None
        self.call: Call | None = None
        self.taken_over = False
        self.error: BaseException | None = None
        self.before: Any = None


def _drive_sync(
    orch: Orchestrator,
    spec: SagaSpec,
    record: SagaRecord,
    handle: RunHandle,
    watch: _Watch | None,
) -> None:
    store = orch.store
    listeners = orch.listeners
    clock = orch.clock
    rand = orch.rand
    history = record.history
    while True:
        now = clock.now()
        if handle.cancel_requested:
            _cancel_if_asked(handle, spec, record, now)
        command = next_command(spec, record, now)
        record.updated_at = now
        store.save(record)
        if len(history) > handle.told:
            start = handle.told
            handle.told = len(history)
            listeners.notify(history, start)
        if command is None:
            return
        if isinstance(command, Sleep):
            clock.sleep(max(0.0, command.until - now))
            continue
        if watch is None:
            error, emitted = _call_sync(orch, spec, record, command, now)
        else:
            with watch.guard:
                if watch.taken_over:
                    return
                watch.call = command
                if command.timeout is not None:
                    watch.deadline = _monotonic() + command.timeout
                    # If this call is abandoned it keeps the instance; the run goes on
                    # with the fields as they were, untouched by what it writes late.
                    watch.before = shallow_copy(record.data)
            error, emitted = _call_sync(orch, spec, record, command, now)
            with watch.guard:
                if watch.taken_over:
                    return  # the watcher gave up on this call: the record is not ours
                watch.deadline = None
        settle(spec, record, command, clock.now(), error, False, emitted, rand)


def _watched(
    orch: Orchestrator,
    spec: SagaSpec,
    record: SagaRecord,
    handle: RunHandle,
    watch: _Watch,
) -> None:
    try:
        _drive_sync(orch, spec, record, handle, watch)
    except BaseException as exc:  # re-raised by the watching thread
        watch.error = exc


def run_sync(
    orch: Orchestrator, spec: SagaSpec, record: SagaRecord, handle: RunHandle | None = None
) -> None:
    """Drive ``record`` to a terminal state; returns when it is there.

    With no limit on any call, the run happens on this thread. Otherwise it happens on
    a worker thread while this one watches: it sleeps until the earliest moment a call
    could overrun, and when one does it takes the run over (the timed-out call is
    abandoned) and hands it to a fresh worker. One thread handoff per run, not per call.
    """
    if handle is None:
        handle = RunHandle()
    limits = [x for x in (spec.shortest_limit, spec.compensation_deadline) if x is not None]
    if not limits and spec.deadline is None:
        _drive_sync(orch, spec, record, handle, None)
        return
    # No call that starts from now on can overrun sooner than this, nor past the deadline.
    floor = min(limits, default=3600.0)
    clock = orch.clock
    while True:
        watch = _Watch()
        worker = orch._workers.take()
        worker.start(_watched, (orch, spec, record, handle, watch), None)
        call: Call | None = None
        try:
            while True:
                with watch.guard:
                    deadline = watch.deadline
                    now = _monotonic()
                    if deadline is not None and now >= deadline:
                        watch.taken_over = True
                        call = watch.call
                        break
                if deadline is not None:
                    wait = deadline - now
                else:
                    wait = floor
                    if record.deadline_at is not None:
                        left = record.deadline_at - clock.now()
                        if left > 0:
                            wait = min(wait, left)
                if worker.poll(max(wait, 0.001)):
                    orch._workers.put(worker)
                    if watch.error is not None:
                        raise watch.error
                    return
        except BaseException:
            watch.taken_over = True
            worker.give_up()
            raise
        worker.give_up()  # the thread ends when the abandoned call returns
        assert call is not None
        record.data = watch.before
        settle(spec, record, call, clock.now(), None, True, None, orch.rand)


async def _call_async(
    orch: Orchestrator,
    spec: SagaSpec,
    record: SagaRecord,
    call: Call,
    now: float,
    timer: _Timer,
) -> tuple[BaseException | None, bool, list[Any] | None]:
    s = spec.steps[call.index]
    forward = call.direction is FORWARD
    fn = spec.forward[call.index] if forward else spec.compensations[call.index]
    assert fn is not None
    ctx = _context(orch, spec, record, call, now)
    if not (s.is_async if forward else s.compensation_is_async):
        before = shallow_copy(record.data) if call.timeout is not None else None
        error, finished = await orch._workers.acall(fn, (record.data, ctx), call.timeout)
        if not finished:
            record.data = before  # the abandoned call keeps the instance it was given
            return None, True, None
        if error is not None and not isinstance(error, Exception):
            raise error  # KeyboardInterrupt, SystemExit: never swallowed
        return error, False, None if error is not None else ctx._pending
    if call.timeout is None:
        try:
            await fn(record.data, ctx)
        except Exception as exc:
            return exc, False, None
        return None, False, ctx._pending
    base = timer.arm(call.timeout)
    try:
        await fn(record.data, ctx)
    except asyncio.CancelledError:
        if not timer.expired(base):
            raise
        return None, True, None
    except Exception as exc:
        return exc, False, None  # a step's own TimeoutError is an ordinary error, too
    finally:
        timer.disarm()
    return None, False, ctx._pending


class _Timer:
    """Per-call timeouts for one task with one timer handle, not one per call.

    ``asyncio.timeout`` schedules and cancels a timer handle per call. Here a call only
    records its deadline; the handle, armed at the earliest deadline still possible, is
    moved only when a call needs it sooner, and when it fires after the call it was
    armed for ended, it re-arms for the call in flight (if any). A call that overruns is
    cancelled, and ``expired`` tells that cancellation from any other.
    """

    __slots__ = ("_at", "_deadline", "_fired", "_handle", "_loop", "_task")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._deadline: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0
        self._fired = False

    def arm(self, timeout: float) -> int:
        """Start limiting the call about to be awaited; returns the task's cancel count."""
        deadline = self._loop.time() + timeout
        self._deadline = deadline
        self._fired = False
        if self._handle is None or deadline < self._at:
            if self._handle is not None:
                self._handle.cancel()
            self._at = deadline
            self._handle = self._loop.call_at(deadline, self._check)
        assert self._task is not None
        return self._task.cancelling()

    def disarm(self) -> None:
        self._deadline = None

    def expired(self, base: int) -> bool:
        """After a CancelledError: whether it was this timer's (then it is absorbed)."""
        if not self._fired:
            return False
        self._fired = False
        assert self._task is not None
        # Another cancel that arrived too must still propagate.
        return self._task.uncancel() <= base

    def _check(self) -> None:
        self._handle = None
        deadline = self._deadline
        if deadline is None:
            return  # nothing in flight: the next call arms a new handle
        if self._loop.time() >= deadline:
            self._fired = True
            assert self._task is not None
            self._task.cancel()
        else:
            self._at = deadline
            self._handle = self._loop.call_at(deadline, self._check)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _Progress:
    __slots__ = ("call", "seen")

    def __init__(self) -> None:
        self.seen = 0
        self.call: Call | None = None


async def _loop(
    orch: Orchestrator,
    spec: SagaSpec,
    record: SagaRecord,
    progress: _Progress,
    forward_only: bool,
    handle: RunHandle,
) -> None:
    store = orch.store
    listeners = orch.listeners
    clock = orch.clock
    rand = orch.rand
    history = record.history
    timer = _Timer()
    try:
        while True:
            now = clock.now()
            if handle.cancel_requested:
                _cancel_if_asked(handle, spec, record, now)
            if forward_only and record.status is _COMPENSATING:
                return
            command = next_command(spec, record, now)
            record.updated_at = now
            await store.asave(record)
            if len(history) > progress.seen:
                start = progress.seen
                progress.seen = len(history)
                await listeners.anotify(history, start)
            if command is None:
                return
            if isinstance(command, Sleep):
                await clock.asleep(max(0.0, command.until - now))
                continue
            progress.call = command
            error, timed_out, emitted = await _call_async(
                orch, spec, record, command, now, timer
            )
            progress.call = None
            settle(spec, record, command, clock.now(), error, timed_out, emitted, rand)
    finally:
        timer.close()


async def _compensate_shielded(
    orch: Orchestrator,
    spec: SagaSpec,
    record: SagaRecord,
    progress: _Progress,
    handle: RunHandle,
) -> bool:
    """Run the rest of the saga (its compensation) in a task nobody's cancel reaches.

    Returns whether the awaiting task was cancelled meanwhile; the caller re-raises
    the cancellation once compensation is over.
    """
    task = asyncio.get_running_loop().create_task(
        _loop(orch, spec, record, progress, False, handle)
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


async def run_async(
    orch: Orchestrator, spec: SagaSpec, record: SagaRecord, handle: RunHandle | None = None
) -> None:
    """Drive ``record`` to a terminal state in this task."""
    if handle is None:
        handle = RunHandle()
    progress = _Progress()
    progress.seen = handle.told
    try:
        await _loop(orch, spec, record, progress, True, handle)
    except asyncio.CancelledError:
        if record.status is SagaStatus.RUNNING:
            interrupt(spec, record, progress.call, orch.clock.now())
        if not record.status.is_terminal:
            await _compensate_shielded(orch, spec, record, progress, handle)
        else:
            record.updated_at = orch.clock.now()
            await orch.store.asave(record)
            await orch.listeners.anotify(record.history, progress.seen)
        raise
    if not record.status.is_terminal and await _compensate_shielded(
        orch, spec, record, progress, handle
    ):
        raise asyncio.CancelledError

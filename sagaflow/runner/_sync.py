"""The sync driver: :func:`drive` runs a record to its end on this thread, or, when any
call has a limit, on a call thread while this one watches the clock (a call that
overruns is abandoned: Python cannot kill a thread)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._choreodefs import CHOREOGRAPHY_ATTRIBUTE
from .._copy import shallow_copy
from ..engine import (
    Batch,
    Call,
    Park,
    Sleep,
    cancel,
    next_command,
    settle,
)
from ..errors import CodecError
from ..gather import restore, run_block
from ..records import SagaRecord, SagaResult

if TYPE_CHECKING:
    from ..clock import Clock
    from ..runtime import Runtime
    from ..spec import SagaSpec

from ._common import (
    FORWARD,
    RUNNING,
    context_of,
    enter,
    handover,
    leave,
    monotonic,
)
from ._handoff import hand_off

__all__ = [
    "drive",
]
_NO_LIMIT_WAIT = 3600.0  # how long a watcher sleeps when no call can overrun sooner




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


def drive(rt: Runtime, spec: SagaSpec, record: SagaRecord, told: int = 0) -> SagaResult:
    """Drive ``record`` to a terminal state; returns its result when it is there.

    Listeners hear the record's history from event ``told`` on. With no limit on any
    call, the run happens on this thread. Otherwise it happens on a call thread while
    this one watches: it sleeps until the earliest moment a call could overrun, and
    when one does it takes the run over (the timed-out call is abandoned) and hands it
    to a fresh thread. One thread handoff per run, not per call.
    """
    chor = spec.cls.__dict__.get(CHOREOGRAPHY_ATTRIBUTE)
    if chor is not None:  # choreographed: its participants make the calls, not a driver
        return hand_off(chor, rt, spec, record, told)
    enter(rt, record, spec)
    failed: BaseException | None = None  # what the run ends by, raised out of it
    try:
        if spec.shortest_limit is None and spec.deadline is None and (
            spec.compensation_deadline is None
        ):
            _run_sync(rt, spec, record, told, None)
        else:
            _watch(rt, spec, record, told)
    except BaseException as exc:  # the store failed, an interrupt: the telemetry says so
        failed = exc
        raise
    finally:
        leave(rt, record, spec, failed)
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
    ctx = context_of(spec, record, rt)
    done: Call | None = None  # the call whose outcome the next save records
    settled: list[Call] = []  # or, after a group, the calls whose outcomes it records
    while True:
        now = clock.now()
        if cancels and sid in cancels and record.status is RUNNING:
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
        if rt.telemetry is not None:
            fn = rt.traced(fn, False, spec, record, call)
        if watch is not None and call.timeout is not None:
            # If this call is abandoned it keeps the instance; the run goes on with the
            # fields as they were, untouched by what it writes late.
            if watch.taken_over:
                return
            watch.before = shallow_copy(record.data)
            inflight = {"call": call, "at": monotonic() + call.timeout}
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
                now = monotonic()
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

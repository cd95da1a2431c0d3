"""Run a saga instance under a :class:`~sagaflow.testing.FailurePlan`, on a virtual clock.

The user's saga code is never changed. Faults are injected around the user's own
functions, and the run is recorded call by call (step, direction, attempt, idempotency
key, what was injected, what the user's function did) for
:func:`~sagaflow.testing.check_invariants`.

Three drivers:

- ``"engine"`` (the default, and the fast one): this module's own loop around the
  sans-IO core, :func:`sagaflow.engine.next_command` / :func:`~sagaflow.engine.settle`
  / :func:`~sagaflow.engine.interrupt`: the same few lines as the real drivers, with
  no threads. A timeout is *reported* (the virtual clock advances by the call's
  timeout) rather than waited for, so thousands of plans run in seconds.
- ``"sync"`` and ``"async"``: the real drivers (:func:`sagaflow.runner.drive`,
  :func:`~sagaflow.runner.adrive`) with an :class:`~sagaflow.Orchestrator` on a
  memory store, on a *shadow* spec whose dispatch tables wrap the user's functions.
  A planned timeout really overruns there. Sagas made only of coroutines run on a
  virtual-time event loop (:class:`~sagaflow.testing.loop.VirtualTimeLoop`), where
  overrunning costs nothing; otherwise the shadow spec gives each step the plan makes
  time out a short real timeout (:data:`REAL_TIMEOUT`, on all its attempts: a step
  that takes real time itself belongs with the engine driver). A cancellation raises
  ``CancelledError`` inside the call, which only the async driver turns into one.

The saga's deadline passes where the plan says: the virtual clock jumps when the
orchestrator next reads it at that step.

Waits: the run sends each wait's signal as the plan's :class:`~sagaflow.testing.SignalPlan`
says, through the real ``signal()`` path (checked, refused or stored, delivered in
arrival order), and when no signal is there the virtual clock jumps to the wait's
time (a timer fires, a wait times out). Signals a plan sends after a delivery (the same
id again, another one, one that comes late) go when the saga next parks or ends. The
real drivers park for real: the harness signals the :class:`~sagaflow.Orchestrator`
(``signal``/``asignal``) or moves the clock and calls ``resume_due``; with ``store=``
(an :class:`~sagaflow.stores.SQLiteStore`, say) the parked saga and its signals go
through that store.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import random
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import attrs

from .. import signals as _signals
from ..context import Direction, StepContext
from ..engine import (
    Batch,
    Call,
    Park,
    Sleep,
    abandon,
    interrupt,
    new_record,
    next_command,
    settle,
)
from ..errors import SagaRejected, SignalRefused
from ..orchestrator import Orchestrator
from ..records import SagaRecord, SagaResult, SagaStatus, Signal, StepStatus
from ..runner import handover
from ..runtime import Runtime
from ..spec import OnTimeout, SagaSpec, StepKind, StepSpec, spec_of
from ..stores import MemoryStore
from ..stores.base import Store
from .clock import VirtualClock
from .invariants import check_invariants
from .loop import VirtualTimeLoop, all_coroutines
from .plan import (
    Arrival,
    DeadlinePass,
    FailurePlan,
    Fault,
    InjectedFault,
    SagaCase,
    SignalPlan,
    unit_of,
)
from .trace import SUCCEED, CallRecord, Outcome, ParkSeen, SentSignal, Trace

__all__ = [
    "DRIVERS",
    "REAL_TIMEOUT",
    "CallRecord",
    "Harness",
    "Outcome",
    "PlanRun",
    "arun_plan",
    "run_plan",
]

Driver = Literal["engine", "sync", "async"]
DRIVERS: tuple[Driver, ...] = ("engine", "sync", "async")
FORWARD = Direction.FORWARD
COMPENSATE = Direction.COMPENSATE

#: Real seconds a planned timeout takes under the real drivers (which wait in real time).
REAL_TIMEOUT = 0.02
#: How long an injected overrun blocks under the real drivers: well past any timeout.
_OVERRUN = 0.25
#: How far before the deadline the clock jumps when the deadline passes *during* a step.
DEADLINE_MARGIN = 0.001

_ids = itertools.count(1)

#: What a planned refusal sends: no payload class has this field (nor takes one at all).
UNFIT_PAYLOAD: dict[str, Any] = {"sagaflow_testing_unfit": "a payload that does not fit"}


@attrs.frozen
class _Send:
    """A signal the harness is to send (see :class:`~sagaflow.testing.trace.SentSignal`)."""

    name: str
    payload: Any
    signal_id: str
    why: str
    step: str | None = None
    fits: bool = True
    rejects: bool = False


@attrs.frozen(eq=False)
class PlanRun(Trace):
    """One run of a saga under a plan (a :class:`~sagaflow.testing.trace.Trace`) that
    checks itself: ``run_plan(case, plan).check()``."""

    def check(self, **options: Any) -> PlanRun:
        """:func:`~sagaflow.testing.check_invariants` on this run; returns the run."""
        check_invariants(self, **options)
        return self


_FINISHED = (StepStatus.COMPLETED, StepStatus.SKIPPED)


def _passed_by(s: StepSpec) -> bool:
    """Whether the engine may move past ``s`` without reading the clock again."""
    w = s.wait
    return s.when is not None or (
        w is not None and w.signal is not None and w.on_timeout is OnTimeout.CONTINUE
    )


class Harness:
    """One run driven one call at a time through the engine, on a virtual clock.

    :meth:`next_call` performs sleeps (virtually) and returns the next
    :class:`~sagaflow.engine.Call`, or ``None`` once the run is over; at a wait it sends
    what the plan says or moves the clock to the wait's time. :meth:`poll` stops at a
    wait instead (returning the :class:`~sagaflow.engine.Park`) when no signal is there;
    :meth:`send` sends one. :meth:`begin` / :meth:`finish` perform a call with a chosen
    :class:`Outcome`. :func:`run_plan` chooses outcomes from a plan; the stateful test
    chooses them by rule.
    """

    def __init__(
        self,
        saga: Any,
        *,
        plan: FailurePlan[Any] | None = None,
        saga_id: str | None = None,
        clock: VirtualClock | None = None,
        rand: float = 0.5,
        driver: str = "engine",
        spec: SagaSpec | None = None,
    ) -> None:
        self.spec = spec_of(saga) if spec is None else spec
        self.plan = plan
        self.clock = VirtualClock() if clock is None else clock
        self.rand = rand
        self.driver = driver
        self.saga_id = saga_id or f"run-{next(_ids)}"
        self.calls: list[CallRecord] = []
        self.cancelled = False
        self.allow_step_errors = False
        self.deadline_fired: tuple[str, float] | None = None
        self._cut_next = False
        self._sleeps_from = len(self.clock.sleeps)
        self._record: SagaRecord | None = None
        self._live: dict[str, SagaRecord] | None = None  # a real driver's runs in flight
        self.sent: list[SentSignal] = []
        self.parks: list[ParkSeen] = []
        self._payloads: dict[int, Any] = {}  # what each wait's handler was handed
        # A group's (or a fan-out's) calls the engine started, performed one at a time
        self._queued: list[Call] = []
        self._flying: set[int] = set()
        self._batches = 0
        self._crashed: set[str] = set()  # cut names whose crash happened
        self.crashes = 0
        # sent once the saga moved on (its history grew past the mark) and parks or ends
        self._later: list[tuple[_Send, int]] = []
        self._planned: set[str] = set()  # waits whose planned signals went (or are queued)
        if plan is not None and plan.deadline is not None:
            self._deadline: DeadlinePass | None = plan.deadline
            index = self.spec.index.get(plan.deadline.step, len(self.spec.steps))
            # The drivers read the clock before each step, but not between a step they
            # pass by (skipped, or a wait whose time ran out and that goes on) and the
            # next: the deadline passes as the run reaches those just before the planned
            # one (if they run, they are stopped instead).
            while index > 0 and _passed_by(self.spec.steps[index - 1]):
                index -= 1
            # A group's members start at once: a deadline at one passes as the group
            # starts. The engine leaves a group or a fan-out for the next step without
            # reading the clock again: a deadline there passes as the last member or
            # item finishes (_block_done).
            group = self.spec.steps[index].group if index < len(self.spec.steps) else None
            if group is not None:
                index = self.spec.groups[group].first
            self._deadline_index = index
            self.clock.on_now = self._watch_deadline
        else:
            self._deadline = None
        self.started_at = self.clock.now()
        self.record = new_record(self.spec, saga, self.saga_id, self.started_at)
        self._record = self.record
        # The engine driver keeps the record and its signals in a memory store, so that
        # signals go through the real checks: signal() refuses or stores, as in production.
        self.runtime = Runtime(MemoryStore(), clock=self.clock, rand=self._rand)
        self.runtime.store.create(self.record)

    def _current(self) -> SagaRecord:
        """The record being driven (a real driver's own, while it runs one)."""
        if self._live is not None:
            live = self._live.get(self.saga_id)
            if live is not None:
                return live
        return self.record

    # -- the deadline, passing where the plan says ----------------------------------

    def _watch_deadline(self) -> None:
        record = self._current() if self._record is not None else None
        d = self._deadline
        if d is None or record is None or record.deadline_at is None:
            return
        if record.status is SagaStatus.RUNNING and (
            record.cursor >= self._deadline_index or self._block_done(record)
        ):
            self._deadline = None
            self.clock.on_now = None
            self.pass_deadline(during=d.during)

    def _block_done(self, record: SagaRecord) -> bool:
        """Whether the group or fan-out just before the planned step has every member
        or item finished (fanned out, for a fan-out)."""
        i = self._deadline_index - 1
        if i < 0:
            return False
        s = self.spec.steps[i]
        if s.group is not None:
            slots = self.spec.groups[s.group].members
        elif s.each is not None and record.steps[i].status is not StepStatus.PENDING:
            sr = record.steps[i]
            slots = range(sr.first_item, sr.first_item + sr.items)
        else:
            return False
        return all(record.steps[m].status in _FINISHED for m in slots)

    def pass_deadline(self, during: bool = False) -> None:
        """Move the clock to the saga's deadline (``during``: just short of it, so that
        the next forward call is the one the deadline cuts short)."""
        record = self._current()
        if record.deadline_at is None:
            raise ValueError(f"saga {self.spec.name!r} has no deadline to pass")
        target = record.deadline_at - (DEADLINE_MARGIN if during else 0.0)
        self.clock.advance_to(target)
        self._cut_next = during
        self.deadline_fired = (self.spec.steps[min(record.cursor, len(self.spec.steps) - 1)].name,
                               self.clock.time)

    # -- deciding outcomes from the plan ---------------------------------------------

    def decide(self, index: int, direction: Direction, attempt: int, bound: bool,
               name: str | None = None) -> Outcome:
        """The outcome the plan gives this call (``name``: the record it settles, a
        member's or an item's)."""
        plan = self.plan
        name = self.spec.steps[index].name if name is None else name
        if direction is FORWARD:
            if self._cut_next and (bound or self.spec.steps[index].wait is None):
                # the next call the deadline bounds is cut (a wait's handler has no limit)
                self._cut_next = False
                if bound:
                    d = plan.deadline if plan is not None else None
                    effect = d.effect if d is not None else False
                    return Outcome(Fault.TIMES_OUT, effect, "the deadline passes during the call")
            if plan is None:
                return SUCCEED
            n = plan.transient_failures(name)
            if attempt <= n:
                return Outcome(plan.transient_fault, plan.transient_effect,
                               f"transient failure {attempt} of {n}")
            fault = plan.fault_of(name)
            if fault is not None:
                effect = plan.effect and fault in (Fault.TIMES_OUT, Fault.CANCELLED)
                return Outcome(fault, effect, "the plan's failure")
            return SUCCEED
        if plan is None:
            return SUCCEED
        if plan.compensation_always_fails(name):
            return Outcome(Fault.RAISES, plan.compensation_effect,
                           "the plan's compensation failure")
        m = plan.compensation_failures(name)
        if attempt <= m:
            return Outcome(Fault.RAISES, plan.compensation_effect,
                           f"transient failure {attempt} of {m}")
        return SUCCEED

    # -- the engine loop, one call at a time -----------------------------------------

    def poll(self) -> Call | Park | None:
        """The next call the engine asks for (sleeping through backoff, delivering a
        signal that is there), the :class:`Park` of a wait with no signal there, or
        ``None`` once the run is over. Signals queued for later go first."""
        spec, record, clock = self.spec, self.record, self.clock
        while True:
            if self._queued:
                queued = self._queued.pop(0)
                if self._cuts(queued):
                    continue
                return queued
            now = clock.now()
            command = next_command(spec, record, now, self._flying)
            record.updated_at = now
            if isinstance(command, Batch):
                if command.calls:
                    self._flying.update(c.slot for c in command.calls)
                    self._queued = self._ordered(command.calls)
                    continue
                assert command.until is not None, "a batch with nothing to do or wait for"
                clock.sleep(max(0.0, command.until - now))
                continue
            if isinstance(command, Sleep):
                clock.sleep(max(0.0, command.until - now))
                continue
            if isinstance(command, Park):
                if self.flush(self.send):
                    continue
                found = None
                if command.signal is not None:
                    found = self.runtime.store.next_signal(
                        self.saga_id, command.signal, record.signal_marks.get(command.signal, 0)
                    )
                if found is None and not command.expires:
                    self.seen_parked(record, command.until)
                    return command
                # A signal, or the wait's time came (a signal stored by then, or it expires)
                call = self._handed(command, found, now)
                if call is None:
                    continue
                return call
            if command is None and self.flush(self.send):
                continue
            return command

    def _ordered(self, calls: tuple[Call, ...]) -> list[Call]:
        """A batch's calls in the order the plan performs them."""
        self._batches += 1
        out = list(calls)
        order = 0 if self.plan is None else self.plan.order
        if order and len(out) > 1:
            random.Random(f"{order}:{self._batches}").shuffle(out)
        return out

    def record_name(self, call: Call) -> str:
        """The name of the record ``call`` settles (a member's or an item's)."""
        if call.slot >= 0:
            return self.record.steps[call.slot].name
        return self.spec.steps[call.index].name

    def _cuts(self, call: Call) -> bool:
        """Whether the plan's crash cuts off ``call`` (forward, first reached): then the
        run crashes with ``call`` and the rest of its batch started and unsettled (the
        cut call took effect first if the plan says so); recovery drives the record on,
        with nothing in flight, so the engine runs exactly those again."""
        plan = self.plan
        if plan is None or call.direction is not FORWARD or call.slot < 0:
            return False
        name = self.record_name(call)
        if name in self._crashed or (name not in plan.cut and unit_of(name) not in plan.cut):
            return False
        self._crashed.add(name)
        self.crashes += 1
        rec, ctx = self.begin(call, Outcome(None, plan.cut_effect, "cut off by a crash"))
        if plan.cut_effect:
            rec.ran_user = True
            try:
                value = self.function(call)(*self._arguments(call, ctx))
                if inspect.isawaitable(value):
                    _drain(value)
            except Exception as exc:
                rec.user_error = exc
        rec.reported, rec.ended = "cut", self.clock.now()
        for other in self._queued:  # started too (the engine said so), never called
            left, _ = self.begin(other, Outcome(None, False, "cut off by a crash"))
            left.reported, left.ended = "cut", rec.ended
        self._queued.clear()
        self._flying.clear()
        return True

    def _handed(self, park: Park, found: Signal | None, now: float) -> Call | None:
        """Deliver ``found``: the handler's call, or ``None`` if its payload no longer
        decodes (the handler fails without running, as under the real drivers) or the
        wait expired without a signal in time."""
        handed = handover(self.runtime, self.spec, self.record, park, found, now)
        if handed is None:
            return None
        call, refused = handed
        self._payloads[call.index] = call.payload
        if refused is None:
            return call
        rec, ctx = self.begin(call, SUCCEED)
        rec.user_error = refused
        self.finish(call, rec, ctx)
        return None

    def next_call(self) -> Call | None:
        """The next call the engine asks for (sleeping through backoff), or ``None``.

        At a wait with no signal there, the plan decides: its signal is sent now, or the
        clock moves to the wait's time (a timer fires, a wait times out)."""
        while True:
            command = self.poll()
            if not isinstance(command, Park):
                return command
            sends = self.at_park(command.index)
            if sends:
                for send in sends:
                    self.send(send)
                continue
            if command.until is None:
                raise ValueError(
                    f"wait {self.spec.steps[command.index].name!r} has no time limit and no "
                    "signal comes in this run: it would wait for ever"
                )
            self.clock.advance_to(command.until)

    # -- signals --------------------------------------------------------------------

    def seen_parked(self, record: SagaRecord, until: float | None) -> None:
        """Note the saga as seen parked (for the invariant on waiting sagas)."""
        s = self.spec.steps[min(record.cursor, len(self.spec.steps) - 1)]
        w = s.wait
        self.parks.append(ParkSeen(
            self.clock.time, s.name, None if w is None else w.signal, until, record.status,
            record.steps[s.index].status, record.state, record.waiting, record.wake_at,
        ))

    def early(self) -> list[_Send]:
        """The signals the plan sends before the run starts (in the order of the waits)."""
        out: list[_Send] = []
        plan = self.plan
        if plan is None:
            return out
        for s in self.spec.steps:
            p = plan.signal_plan(s.name)
            if p is not None and p.arrives is Arrival.EARLY:
                self._planned.add(s.name)
                out += self._sends(p)
        return out

    def at_park(self, index: int) -> list[_Send]:
        """What the plan sends now that the saga parked at wait ``index`` with no signal
        there; nothing (``[]``): the clock is to move to the wait's time. A late signal
        is queued to go once the saga moved on."""
        s = self.spec.steps[index]
        plan = self.plan
        if plan is None or s.name in self._planned:
            return []
        p = plan.signal_plan(s.name)
        if p is None or p.arrives is Arrival.NEVER:
            if p is not None and p.refused:
                self._planned.add(s.name)
                return self._sends(p)
            return []
        self._planned.add(s.name)
        sends = self._sends(p)
        mark = len(self.record.history)
        if p.arrives is Arrival.LATE:
            self._later += [(item, mark) for item in sends]
            return []
        first = 2 if p.refused else 1  # the refusal, then the signal; the rest after it
        self._later += [(item, mark) for item in sends[first:]]
        return sends[:first]

    def _sends(self, p: SignalPlan) -> list[_Send]:
        w = self.spec.step(p.step).wait
        assert w is not None and w.signal is not None
        name = w.signal
        out: list[_Send] = []
        if p.refused:
            out.append(_Send(name, UNFIT_PAYLOAD, f"{p.step}:unfit", "a payload that does not "
                             "fit", p.step, fits=False))
        if not p.sends:
            return out
        sid = f"{p.step}:1"
        when = p.arrives.value.replace("_", " ")
        out.append(_Send(name, p.payload, sid, f"for {p.step}, {when}", p.step,
                         rejects=p.rejects))
        if p.twice:
            out.append(_Send(name, p.payload, sid, "the same again", p.step, rejects=p.rejects))
        if p.another:
            out.append(_Send(name, p.payload, f"{p.step}:2", "another one", p.step,
                             rejects=p.rejects))
        return out

    def flush(self, send: Callable[[_Send], object]) -> bool:
        """Send what waited for the saga to move on and park or end (call it then);
        whether anything went."""
        if not self._later:
            return False
        moved = len(self.record.history)
        due = [item for item, mark in self._later if moved > mark]
        if not due:
            return False
        self._later = [(item, mark) for item, mark in self._later if moved <= mark]
        for item in due:
            send(item)
        return True

    def sending(self, item: _Send, kept: int, finished: bool) -> SentSignal:
        """Note ``item`` as sent now (the store held ``kept`` signals for the saga)."""
        rec = SentSignal(
            seq=len(self.sent) + 1, at=self.clock.time, name=item.name,
            signal_id=item.signal_id, payload=item.payload, why=item.why, step=item.step,
            fits=item.fits, finished=finished, rejects=item.rejects, kept_before=kept,
        )
        self.sent.append(rec)
        return rec

    @staticmethod
    def sent_as(rec: SentSignal, kept: int, error: BaseException | None) -> None:
        """Note what came of ``rec``: refused (``error``), stored or ignored."""
        rec.kept_after = kept
        if error is not None:
            rec.outcome, rec.error = "refused", error
        else:
            rec.outcome = "stored" if kept > rec.kept_before else "ignored"

    def send(self, item: _Send) -> SentSignal:
        """Send ``item`` through the real checks (engine driver): refused or stored."""
        kept = self.runtime.store
        rec = self.sending(item, len(kept.signals(self.saga_id)),
                           self.record.status.is_terminal)
        error: BaseException | None = None
        try:
            _signals.accept(self.runtime, self._spec_for, self.saga_id, item.name,
                            item.payload, item.signal_id)
        except SignalRefused as exc:
            error = exc
        self.sent_as(rec, len(kept.signals(self.saga_id)), error)
        return rec

    def _spec_for(self, record: SagaRecord) -> SagaSpec:
        return self.spec

    def context(self, call: Call) -> StepContext:
        s = self.spec.steps[call.index]
        record = self.record
        forward = call.direction is FORWARD
        ctx = StepContext(
            record.saga_id,
            self.spec.name,
            self.record_name(call),
            call.direction,
            call.attempt,
            call.timeout,
            record.deadline_at if forward else record.compensation_deadline_at,
            self.clock.now(),
            self.clock.now,
        )
        if forward and s.wait is not None:
            ctx.signal = self._payloads.get(call.index)
        return ctx

    def function(self, call: Call) -> Callable[..., Any]:
        fn = (self.spec.forward if call.direction is FORWARD else self.spec.compensations)[
            call.index
        ]
        assert fn is not None
        return fn

    def begin(self, call: Call, outcome: Outcome | None = None) -> tuple[CallRecord, StepContext]:
        """Record the start of ``call`` with ``outcome`` (default: the plan's)."""
        name = self.record_name(call)
        if outcome is None:
            outcome = self.decide(call.index, call.direction, call.attempt, call.deadline_bound,
                                  name)
        s = self.spec.steps[call.index]
        if outcome.fault is Fault.CANCELLED and call.direction is COMPENSATE:
            raise ValueError(
                "a compensation cannot be cancelled: the drivers shield compensation"
            )
        if outcome.fault is Fault.TIMES_OUT and call.timeout is None:
            raise ValueError(
                f"call {s.name!r} ({call.direction.value}) has no timeout and no deadline: "
                "it cannot time out"
            )
        if outcome.fault is Fault.REJECTS and call.direction is COMPENSATE:
            raise ValueError("a compensation cannot reject the saga: only forward calls do")
        ctx = self.context(call)
        rec = CallRecord(
            seq=len(self.calls) + 1,
            step=s.name,
            index=call.index,
            direction=call.direction,
            attempt=call.attempt,
            key=ctx.idempotency_key,
            at=self.clock.time,
            timeout=call.timeout,
            injected=outcome,
            payload=ctx.signal,
            name=name,
        )
        self.calls.append(rec)
        return rec, ctx

    def _arguments(self, call: Call, ctx: StepContext) -> tuple[Any, ...]:
        """What the user's function of ``call`` is given: a fan-out's item too."""
        if call.item < 0:
            return (self.record.data, ctx)
        return (self.record.data, call.payload, ctx)

    def finish(self, call: Call, rec: CallRecord, ctx: StepContext) -> None:
        """Report ``rec``'s outcome to the engine (after the user's function, if it ran)."""
        spec, record, clock = self.spec, self.record, self.clock
        self._flying.discard(call.slot)
        fault = rec.injected.fault
        error: BaseException | None = None
        timed_out = False
        if rec.user_error is not None:
            rec.reported, rec.error = "error", rec.user_error
            error = rec.user_error
        elif fault is None:
            rec.reported = "ok"
            rec.emitted = tuple(ctx._pending)
        elif fault is Fault.RAISES:
            error = InjectedFault(_fault_message(rec))
            rec.reported, rec.error = "error", error
        elif fault is Fault.REJECTS:
            error = SagaRejected(_fault_message(rec))
            rec.reported, rec.error = "error", error
        elif fault is Fault.TIMES_OUT:
            assert call.timeout is not None
            clock.advance(call.timeout)
            rec.reported = "timeout"
            timed_out = True
        else:
            rec.reported = "cancelled"
            rec.ended = clock.now()
            self.cancelled = True
            if call.slot >= 0:  # the driver cancels the block's calls in flight
                abandon(spec, record, call, rec.ended, "cancelled while running")
            self.cancel_queued(rec.ended)
            interrupt(spec, record, call, rec.ended)
            return
        rec.ended = now = clock.now()
        emitted = list(rec.emitted) if rec.reported == "ok" else None
        settle(spec, record, call, now, error, timed_out, emitted, self._rand)

    def cancel_queued(self, now: float) -> None:
        """The run is cancelled: the calls of a batch started and not yet performed are
        cancelled in flight (recorded, their outcome unknown; the user's function never
        ran). Call :func:`~sagaflow.engine.interrupt` next."""
        for other in self._queued:
            left, _ = self.begin(other, Outcome(Fault.CANCELLED, False, "cancelled with the run"))
            left.reported, left.ended = "cancelled", now
            abandon(self.spec, self.record, other, now, "cancelled while running")
        self._queued.clear()
        self._flying.clear()

    def _rand(self) -> float:
        return self.rand

    def perform(self, call: Call, outcome: Outcome | None = None,
                loop: asyncio.AbstractEventLoop | None = None) -> CallRecord:
        """Make ``call`` with ``outcome`` (default: the plan's), synchronously."""
        rec, ctx = self.begin(call, outcome)
        if rec.injected.calls_user:
            rec.ran_user = True
            try:
                value = self.function(call)(*self._arguments(call, ctx))
                if inspect.isawaitable(value):
                    if loop is None:
                        raise RuntimeError("an async step needs an event loop")
                    loop.run_until_complete(_await(value))
            except Exception as exc:
                rec.user_error = exc
        self.finish(call, rec, ctx)
        return rec

    async def aperform(self, call: Call, outcome: Outcome | None = None) -> CallRecord:
        """:meth:`perform`, awaiting coroutine steps in the running loop."""
        rec, ctx = self.begin(call, outcome)
        if rec.injected.calls_user:
            rec.ran_user = True
            try:
                value = self.function(call)(*self._arguments(call, ctx))
                if inspect.isawaitable(value):
                    await value
            except Exception as exc:
                rec.user_error = exc
        self.finish(call, rec, ctx)
        return rec

    def outcome_run(self, *, before: Any = None, after: Any = None, snapshotted: bool = False,
                    complete: bool = True, kept: Store | None = None) -> PlanRun:
        """The :class:`PlanRun` of this harness so far (``kept``: the store that holds
        its signals, if not the engine's own)."""
        store = self.runtime.store if kept is None else kept
        return PlanRun(
            spec=self.spec,
            saga_id=self.saga_id,
            plan=self.plan,
            driver=self.driver,
            result=SagaResult.of(self.record),
            calls=tuple(self.calls),
            sleeps=tuple(self.clock.sleeps[self._sleeps_from:]),
            rand=self.rand,
            started_at=self.started_at,
            deadline_at=self.record.deadline_at,
            deadline_fired=self.deadline_fired,
            cancelled=self.cancelled,
            final_state=self.record.state,
            compensation_deadline_at=self.record.compensation_deadline_at,
            before=before,
            after=after,
            snapshotted=snapshotted,
            complete=complete,
            allow_step_errors=self.allow_step_errors,
            sent=tuple(self.sent),
            kept=tuple(store.signals(self.saga_id)),
            signal_marks=tuple(sorted(self.record.signal_marks.items())),
            parks=tuple(self.parks),
        )


async def _await(value: Any) -> Any:
    return await value


def _drain(value: Any) -> None:
    """Run a coroutine step cut off by a crash to its end, on a loop of its own (on a
    thread of its own under :func:`arun_plan`, whose loop is running in this one)."""

    def drain() -> None:
        loop = VirtualTimeLoop()
        try:
            loop.run_until_complete(_await(value))
        finally:
            loop.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        drain()
        return
    failed: list[BaseException] = []

    def on_thread() -> None:
        try:
            drain()
        except BaseException as exc:  # re-raised in the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=on_thread, name="sagaflow-cut-drain")
    worker.start()
    worker.join()
    if failed:
        raise failed[0]


def _fault_message(rec: CallRecord) -> str:
    what = rec.step if rec.direction is FORWARD else f"compensation of {rec.step}"
    return f"injected: {what}, attempt {rec.attempt} ({rec.injected.cause})"


# -- the real drivers, with the user's functions wrapped --------------------------------


class _Injector:
    """Wraps a spec's dispatch tables so that each call follows the plan."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness

    def _begin(self, index: int, direction: Direction, ctx: StepContext) -> CallRecord:
        h = self.h
        s = h.spec.steps[index]
        record = h.record
        bound = (
            direction is FORWARD
            and s.kind is not StepKind.RETRIABLE
            and record.deadline_at is not None
            and ctx.call_deadline is not None
            and ctx.call_deadline >= record.deadline_at - 1e-6
        )
        outcome = h.decide(index, direction, ctx.attempt, bound, ctx.step)
        if outcome.fault is Fault.REJECTS and direction is COMPENSATE:
            raise ValueError("a compensation cannot reject the saga: only forward calls do")
        if outcome.fault is Fault.CANCELLED and h.driver != "async":
            raise ValueError(
                "Fault.CANCELLED needs the async driver (driver='async' or 'engine'): "
                "a sync run cannot be cancelled"
            )
        rec = CallRecord(
            seq=len(h.calls) + 1,
            step=s.name,
            index=index,
            direction=direction,
            attempt=ctx.attempt,
            key=ctx.idempotency_key,
            at=h.clock.time,
            timeout=ctx.timeout,
            injected=outcome,
            payload=ctx.signal if direction is FORWARD and s.wait is not None else None,
            name=ctx.step,
        )
        h.calls.append(rec)
        return rec

    def _after_user(self, rec: CallRecord, ctx: StepContext) -> None:
        """The injected failure, once the user's function (if it ran) returned."""
        fault = rec.injected.fault
        rec.ended = self.h.clock.time
        if fault is None:
            rec.reported = "ok"
            rec.emitted = tuple(ctx._pending)
        elif fault is Fault.RAISES:
            rec.error = InjectedFault(_fault_message(rec))
            rec.reported = "error"
            raise rec.error
        elif fault is Fault.REJECTS:
            rec.error = SagaRejected(_fault_message(rec))
            rec.reported = "error"
            raise rec.error
        elif fault is Fault.CANCELLED:
            rec.reported = "cancelled"
            self.h.cancelled = True
            raise asyncio.CancelledError(_fault_message(rec))

    def wrap(self, index: int, direction: Direction, fn: Callable[..., Any],
             is_async: bool) -> Callable[..., Any]:
        if is_async:

            async def acall(saga: Any, *args: Any) -> None:
                ctx: StepContext = args[-1]  # a fan-out's call: (saga, item, ctx)
                rec = self._begin(index, direction, ctx)
                if rec.injected.calls_user:
                    rec.ran_user = True
                    try:
                        await fn(saga, *args)
                    except Exception as exc:
                        rec.user_error, rec.error, rec.reported = exc, exc, "error"
                        rec.ended = self.h.clock.time
                        raise
                    except asyncio.CancelledError:
                        # the driver's timer cut the user's coroutine short (the call
                        # was planned to overrun): its outcome is unknown, a timeout
                        rec.reported, rec.ended = "timeout", self.h.clock.time
                        raise
                if rec.injected.fault is Fault.TIMES_OUT:
                    rec.reported, rec.ended = "timeout", self.h.clock.time
                    # overrun: the driver's timer cancels this (at once on virtual time)
                    await asyncio.sleep((ctx.timeout or 0.0) + _OVERRUN)
                    return
                self._after_user(rec, ctx)

            return acall

        def call(saga: Any, *args: Any) -> None:
            ctx: StepContext = args[-1]  # a fan-out's call: (saga, item, ctx)
            rec = self._begin(index, direction, ctx)
            if rec.injected.calls_user:
                rec.ran_user = True
                try:
                    fn(saga, *args)
                except Exception as exc:
                    rec.user_error, rec.error, rec.reported = exc, exc, "error"
                    rec.ended = self.h.clock.time
                    raise
            if rec.injected.fault is Fault.TIMES_OUT:
                rec.reported, rec.ended = "timeout", self.h.clock.time
                time.sleep(_OVERRUN)  # overrun: the driver abandons this worker thread
                return
            self._after_user(rec, ctx)

        return call

    def shadow(self, real_time: bool) -> SagaSpec:
        """The spec with wrapped dispatch tables; with ``real_time`` (timeouts are waited
        for in real time), short real timeouts where the plan makes a step time out."""
        spec = self.h.spec
        plan = self.h.plan
        overrun: set[str] = set()
        if plan is not None and real_time:
            if plan.step is not None and plan.fault is Fault.TIMES_OUT:
                overrun.add(unit_of(plan.step))
            overrun.update(unit_of(n) for n, f in plan.faults if f is Fault.TIMES_OUT)
            if plan.transient_fault is Fault.TIMES_OUT:
                overrun.update(unit_of(name) for name, _ in plan.transient)
        steps = []
        for s in spec.steps:
            forward = self.wrap(s.index, FORWARD, s.fn, s.is_async)
            comp = None
            if s.compensation is not None:
                comp = self.wrap(s.index, COMPENSATE, s.compensation, s.compensation_is_async)
            timeout = REAL_TIMEOUT if s.name in overrun else s.timeout
            steps.append(attrs.evolve(s, fn=forward, compensation=comp, timeout=timeout))
        changes: dict[str, Any] = {
            "steps": tuple(steps),
            "forward": tuple(s.fn for s in steps),
            "compensations": tuple(s.compensation for s in steps),
        }
        limit = getattr(spec, "shortest_limit", None)
        cut = plan is not None and plan.deadline is not None and plan.deadline.during
        if (overrun or (cut and real_time)) and "shortest_limit" in attrs.fields_dict(
            type(spec)
        ):
            # the sync driver's watchdog never sleeps past the shortest limit of any call
            # (nor past a call the deadline, jumping on the virtual clock, cuts short)
            changes["shortest_limit"] = min(REAL_TIMEOUT, limit or REAL_TIMEOUT)
        return attrs.evolve(spec, **changes)


# -- running a plan ------------------------------------------------------------------


def _unpack(
    saga: Any, setup: Callable[[], Any] | None, snapshot: Callable[[], Any] | None
) -> tuple[Any, Callable[[], Any] | None, Callable[[], Any] | None, bool]:
    if isinstance(saga, SagaCase):
        return saga.saga, setup or saga.setup, snapshot or saga.snapshot, saga.allow_step_errors
    return saga, setup, snapshot, False


def _check_driver(driver: str) -> None:
    if driver not in DRIVERS:
        raise ValueError(f"driver must be one of {', '.join(DRIVERS)}; got {driver!r}")


def run_plan(
    saga: Any,
    plan: FailurePlan[Any] | None = None,
    *,
    driver: Driver = "engine",
    saga_id: str | None = None,
    clock: VirtualClock | None = None,
    rand: float = 0.5,
    setup: Callable[[], Any] | None = None,
    snapshot: Callable[[], Any] | None = None,
    store: Store | None = None,
) -> PlanRun:
    """Run ``saga`` (an instance, or a :class:`SagaCase`) under ``plan``, to its end.

    ``driver``: ``"engine"`` (fast, no threads), ``"sync"`` or ``"async"`` (the real
    drivers through an :class:`~sagaflow.Orchestrator`). ``rand`` is the jitter draw
    every backoff uses, so delays are exact. ``setup`` runs first; ``snapshot`` is taken
    before and after. ``store``: where the real drivers keep the saga and its signals
    (default: a fresh memory store; an ``SQLiteStore`` runs waits through the durable
    path). Returns a :class:`PlanRun` for :func:`check_invariants`.
    """
    _check_driver(driver)
    _check_store(driver, store)
    if driver == "async":
        instance = saga.saga if isinstance(saga, SagaCase) else saga
        virtual = all_coroutines(spec_of(instance))
        with asyncio.Runner(loop_factory=VirtualTimeLoop if virtual else None) as runner:
            return runner.run(
                arun_plan(saga, plan, driver=driver, saga_id=saga_id, clock=clock, rand=rand,
                          setup=setup, snapshot=snapshot, store=store)
            )
    instance, setup, snapshot, lenient = _unpack(saga, setup, snapshot)
    h, before = _prepare(instance, plan, driver, saga_id, clock, rand, setup, snapshot)
    h.allow_step_errors = lenient
    if driver == "engine":
        loop = VirtualTimeLoop() if h.spec.is_async else None
        try:
            for item in h.early():
                h.send(item)
            while (call := h.next_call()) is not None:
                h.perform(call, loop=loop)
        finally:
            if loop is not None:
                loop.close()
        return _done(h, before, snapshot)
    if h.spec.is_async:
        raise TypeError(
            f"saga {h.spec.name!r} has async steps: use driver='async' or 'engine'"
        )
    orchestrator, shadow = _orchestrate(h, store)
    try:
        _drive_sync(h, orchestrator, shadow)
        return _done(h, before, snapshot, orchestrator)
    finally:
        orchestrator.close()


async def arun_plan(
    saga: Any,
    plan: FailurePlan[Any] | None = None,
    *,
    driver: Driver = "engine",
    saga_id: str | None = None,
    clock: VirtualClock | None = None,
    rand: float = 0.5,
    setup: Callable[[], Any] | None = None,
    snapshot: Callable[[], Any] | None = None,
    store: Store | None = None,
) -> PlanRun:
    """:func:`run_plan` in a running event loop (``driver``: ``"engine"`` or ``"async"``)."""
    _check_driver(driver)
    if driver == "sync":
        raise ValueError("arun_plan runs the engine or the async driver; use run_plan for sync")
    _check_store(driver, store)
    instance, setup, snapshot, lenient = _unpack(saga, setup, snapshot)
    h, before = _prepare(instance, plan, driver, saga_id, clock, rand, setup, snapshot)
    h.allow_step_errors = lenient
    if driver == "engine":
        for item in h.early():
            h.send(item)
        while (call := h.next_call()) is not None:
            await h.aperform(call)
        return _done(h, before, snapshot)
    orchestrator, shadow = _orchestrate(h, store)
    try:
        await _drive_async(h, orchestrator, shadow)
        return _done(h, before, snapshot, orchestrator)
    finally:
        orchestrator.close()


def _check_store(driver: str, store: Store | None) -> None:
    if store is not None and driver == "engine":
        raise ValueError(
            "store= is for the real drivers (driver='sync' or 'async'); the engine driver "
            "keeps the saga and its signals in memory"
        )


def _prepare(
    saga: Any,
    plan: FailurePlan[Any] | None,
    driver: str,
    saga_id: str | None,
    clock: VirtualClock | None,
    rand: float,
    setup: Callable[[], Any] | None,
    snapshot: Callable[[], Any] | None,
) -> tuple[Harness, Any]:
    spec = spec_of(saga)
    if plan is not None:
        if not isinstance(plan, FailurePlan):
            raise TypeError(f"plan must be a FailurePlan or None, got {plan!r}")
        plan.validate(spec)
        if driver == "sync" and plan.step is not None and plan.fault is Fault.CANCELLED:
            raise ValueError(
                f"{plan!r} cancels the run, which needs driver='async' or 'engine': "
                "a sync run cannot be cancelled"
            )
    if setup is not None:
        setup()
    before = snapshot() if snapshot is not None else None
    h = Harness(saga, plan=plan, saga_id=saga_id, clock=clock, rand=rand, driver=driver,
                spec=spec)
    return h, before


class _PlanOrchestrator(Orchestrator):
    """An orchestrator that runs, and resumes, the saga on the harness's shadow spec."""

    def __init__(self, store: Store, shadow: SagaSpec, clock: VirtualClock,
                 rand: Callable[[], float]) -> None:
        super().__init__(store, clock=clock, rand=rand)
        self.shadow = shadow

    def spec_for(self, record: SagaRecord) -> SagaSpec:
        if record.saga_name == self.shadow.name:
            return self.shadow
        return super().spec_for(record)


def _orchestrate(h: Harness, store: Store | None = None) -> tuple[_PlanOrchestrator, SagaSpec]:
    try:
        virtual = isinstance(asyncio.get_running_loop(), VirtualTimeLoop)
    except RuntimeError:  # the sync driver: no loop
        virtual = False
    shadow = _Injector(h).shadow(real_time=not virtual)
    rand = h.rand
    orchestrator = _PlanOrchestrator(MemoryStore() if store is None else store, shadow,
                                     h.clock, lambda: rand)
    orchestrator.register(type(h.record.data))
    orchestrator.store.create(h.record)
    h._live = orchestrator.runtime.live
    return orchestrator, shadow


def _kept(orchestrator: Orchestrator) -> Store:
    return orchestrator.store


def _reload(h: Harness, orchestrator: Orchestrator) -> SagaRecord:
    record = orchestrator.store.load(h.saga_id)
    assert record is not None
    h.record = record
    return record


def _sending(h: Harness, orchestrator: Orchestrator, item: _Send) -> SentSignal:
    record = orchestrator.store.load(h.saga_id)
    finished = record is not None and record.status.is_terminal
    return h.sending(item, len(_kept(orchestrator).signals(h.saga_id)), finished)


def _send_sync(h: Harness, orchestrator: Orchestrator, item: _Send) -> None:
    rec = _sending(h, orchestrator, item)
    error: BaseException | None = None
    try:
        orchestrator.signal(h.saga_id, item.name, item.payload, signal_id=item.signal_id)
    except SignalRefused as exc:
        error = exc
    h.sent_as(rec, len(_kept(orchestrator).signals(h.saga_id)), error)


async def _send_async(h: Harness, orchestrator: Orchestrator, item: _Send) -> None:
    rec = _sending(h, orchestrator, item)
    error: BaseException | None = None
    try:
        await _planned(h, orchestrator.asignal(h.saga_id, item.name, item.payload,
                                               signal_id=item.signal_id))
    except SignalRefused as exc:
        error = exc
    h.sent_as(rec, len(_kept(orchestrator).signals(h.saga_id)), error)


async def _planned(h: Harness, run: Coroutine[Any, Any, Any]) -> None:
    """Await ``run``; a cancellation the plan injected ends it (the saga compensated)."""
    try:
        await run
    except asyncio.CancelledError:
        if not h.cancelled:
            raise  # a real cancellation of the caller, not the plan's


def _parked(h: Harness, orchestrator: Orchestrator) -> SagaRecord | None:
    """The stored record if the saga is parked (noted as seen); ``None`` once it ended."""
    record = _reload(h, orchestrator)
    if record.status.is_terminal:
        return None
    if record.waiting is None or record.status is not SagaStatus.RUNNING:
        raise RuntimeError(
            f"the driver let go of saga {h.saga_id!r}, which is {record.status.value} and "
            "neither parked nor finished"
        )
    h.seen_parked(record, record.wake_at)
    return record


def _time_runs_out(h: Harness, record: SagaRecord) -> None:
    if record.wake_at is None:
        raise ValueError(
            f"wait {h.spec.steps[record.cursor].name!r} has no time limit and no signal "
            "comes in this run: it would wait for ever"
        )
    h.clock.advance_to(record.wake_at)


def _resumed(h: Harness, orchestrator: Orchestrator, resumed: dict[str, SagaStatus]) -> None:
    if h.saga_id not in resumed:
        held = [q for q in orchestrator.store.quarantined() if q.saga_id == h.saga_id]
        why = f": quarantined ({held[0].reason})" if held else ""
        raise RuntimeError(f"resume_due() did not resume saga {h.saga_id!r}, due now{why}")


def _drive_sync(h: Harness, orchestrator: _PlanOrchestrator, shadow: SagaSpec) -> None:
    """The sync driver: run, and at each wait signal the saga or let its time run out."""

    def send(item: _Send) -> None:
        _send_sync(h, orchestrator, item)

    for item in h.early():
        send(item)
    orchestrator.drive(shadow, h.record)
    while True:
        _reload(h, orchestrator)
        if h.flush(send):
            continue
        record = _parked(h, orchestrator)
        if record is None:
            return
        sends = h.at_park(record.cursor)
        for item in sends:
            send(item)
        if not sends:
            _time_runs_out(h, record)
            _resumed(h, orchestrator, orchestrator.resume_due())


async def _drive_async(h: Harness, orchestrator: _PlanOrchestrator, shadow: SagaSpec) -> None:
    """:func:`_drive_sync`, awaiting the async driver."""
    for item in h.early():
        await _send_async(h, orchestrator, item)
    await _planned(h, orchestrator.adrive(shadow, h.record))
    while True:
        _reload(h, orchestrator)
        due: list[_Send] = []
        if h.flush(due.append):
            for item in due:
                await _send_async(h, orchestrator, item)
            continue
        record = _parked(h, orchestrator)
        if record is None:
            return
        sends = h.at_park(record.cursor)
        for item in sends:
            await _send_async(h, orchestrator, item)
        if not sends:
            _time_runs_out(h, record)
            resumed: dict[str, SagaStatus] = {}
            await _planned(h, _resume_due(orchestrator, resumed))
            if not h.cancelled:
                _resumed(h, orchestrator, resumed)


async def _resume_due(orchestrator: Orchestrator, into: dict[str, SagaStatus]) -> None:
    into.update(await orchestrator.aresume_due())


def _done(h: Harness, before: Any, snapshot: Callable[[], Any] | None,
          orchestrator: Orchestrator | None = None) -> PlanRun:
    h.clock.on_now = None
    h._live = None
    kept = None
    if orchestrator is not None:
        _reload(h, orchestrator)
        kept = _kept(orchestrator)
    after = snapshot() if snapshot is not None else None
    return h.outcome_run(before=before, after=after, snapshotted=snapshot is not None,
                         kept=kept)

"""A hypothesis state machine that drives saga runs call by call, failures as rules.

``saga_state_machine(MySaga)`` returns a ``RuleBasedStateMachine`` class: each rule
decides the outcome of the run's next call (it succeeds, raises, times out, is
cancelled, rejects the saga), cancels the run while a retry or a wait waits, sends a
signal (any name the saga waits for, a payload from the user's strategies or one that
does not fit, an id that may repeat), or moves time (a stall, a wait's time running
out, the deadline passing); after every rule the run so far must keep the invariants,
and every finished run is checked in full. Where
``failure_plans`` draws one plan per run, the state machine can put any outcome on any
attempt, and hypothesis shrinks the sequence of rules.

Use it as a test::

    TestMySaga = saga_state_machine(MySaga).TestCase
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ..context import Direction
from ..engine import Call, Park, interrupt
from ..records import SagaStatus
from ..spec import StepKind, spec_of
from .harness import UNFIT_PAYLOAD, Harness, PlanRun, _Send
from .invariants import check_invariants
from .loop import VirtualTimeLoop
from .plan import Fault, SagaCase
from .strategies import payloads_for, saga_cases
from .trace import SUCCEED, Outcome

__all__ = ["saga_state_machine"]

_LIVE = (SagaStatus.RUNNING, SagaStatus.COMPENSATING)


def saga_state_machine(
    saga_class: type,
    *,
    sagas: st.SearchStrategy[Any] | None = None,
    extra: Iterable[Callable[[PlanRun], object]] = (),
    allow_step_errors: bool | None = None,
    payloads: Mapping[str, st.SearchStrategy[Any]] | None = None,
    rejections: Mapping[str, st.SearchStrategy[Any]] | None = None,
    resume_at_once: bool = True,
) -> type[RuleBasedStateMachine]:
    """A ``RuleBasedStateMachine`` class that runs ``saga_class`` rule by rule.

    ``sagas``: a strategy of instances (or :class:`SagaCase`) to run; default
    :func:`saga_cases` (the module's ``example_sagas()`` or ``st.builds``). ``extra``
    and ``allow_step_errors`` go to :func:`check_invariants` for every finished run.
    ``payloads`` / ``rejections``: strategies of each signal's payloads, and of payloads
    its handler must reject, as for :func:`~sagaflow.testing.failure_plans`.
    ``resume_at_once``: a signal that comes while the saga is parked resumes it at once,
    as ``signal()`` does in the process that runs it; ``False``: the parked saga is
    resumed later (time may pass first), as a worker polling for due sagas does.
    """
    spec = spec_of(saga_class)
    cases = saga_cases(saga_class) if sagas is None else sagas
    extras = tuple(extra)
    stall_max = 2.0 * (spec.deadline or 60.0)
    carried = payloads_for(saga_class, payloads)
    rejecting = payloads_for(saga_class, rejections, "rejections") if rejections else {}
    options: list[st.SearchStrategy[tuple[str, Any, bool, bool]]] = []
    for name, strategy in carried.items():
        # (name, payload, fits, rejects)
        options.append(st.tuples(st.just(name), strategy, st.just(True), st.just(False)))
        options.append(st.just((name, UNFIT_PAYLOAD, False, False)))
        if rejections and name in rejections:
            options.append(st.tuples(st.just(name), rejecting[name], st.just(True),
                                     st.just(True)))
    signal_choice = st.one_of(options) if options else st.nothing()

    class SagaMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.h: Harness | None = None
            self.case: SagaCase | None = None
            self.before: Any = None
            self.call: Call | None = None
            self.parked: Park | None = None
            self.fetched = False
            self.loop: asyncio.AbstractEventLoop | None = None
            self.runs = 0
            self.checked: Harness | None = None
            self.failed = False

        # -- helpers --------------------------------------------------------------

        def _start(self, case: Any) -> None:
            self.case = case if isinstance(case, SagaCase) else SagaCase(case)
            if self.case.setup is not None:
                self.case.setup()
            snap = self.case.snapshot
            self.before = snap() if snap is not None else None
            self.h = Harness(self.case.saga, driver="stateful")
            self.h.allow_step_errors = self.case.allow_step_errors
            self.call, self.parked, self.fetched = None, None, False
            self.runs += 1

        def _harness(self) -> Harness:
            assert self.h is not None
            return self.h

        def _live(self) -> bool:
            return self.h is not None and self.h.record.status in _LIVE

        def _between(self) -> bool:
            return self._live() and not self.fetched

        def _parked(self) -> bool:
            """Whether the run is parked at a wait with no signal there."""
            return self._live() and self.fetched and self.parked is not None

        def _fetch(self) -> Call | None:
            if not self.fetched:
                command = self._harness().poll()
                self.call, self.parked = (None, command) if isinstance(command, Park) else (
                    command, None
                )
                self.fetched = True
            return self.call

        def _moved(self) -> None:
            """Something changed while parked: look again (a signal, the time)."""
            if self.parked is not None:
                self.parked, self.fetched = None, False

        def _do(self, outcome: Outcome) -> None:
            call = self._fetch()
            if call is None:
                return
            h = self._harness()
            if h.spec.is_async and self.loop is None:
                self.loop = VirtualTimeLoop()
            h.perform(call, outcome, loop=self.loop)
            self.call, self.fetched = None, False

        def _run(self) -> PlanRun:
            h = self._harness()
            done = h.record.status.is_terminal
            snap = self.case.snapshot if self.case is not None else None
            after = snap() if snap is not None and done else None
            return h.outcome_run(before=self.before, after=after,
                                 snapshotted=snap is not None and done, complete=done)

        def _check(self, run: PlanRun, **options: Any) -> None:
            # Checked once: a run that broke an invariant is not checked again by
            # teardown (hypothesis would take that for a second, distinct failure).
            try:
                check_invariants(run, allow_step_errors=allow_step_errors, **options)
            except AssertionError:
                self.failed = True
                raise

        def _check_finished(self) -> None:
            if self.checked is not self.h:
                self.checked = self.h
                self._check(self._run(), extra=extras)

        # -- rules ----------------------------------------------------------------

        @initialize(case=cases)
        def start(self, case: Any) -> None:
            self._start(case)

        @precondition(lambda self: self.h is not None and not self._live())
        @rule(case=cases)
        def next_run(self, case: Any) -> None:
            """The run is over: check it in full and start another."""
            self._check_finished()
            self._start(case)

        @precondition(lambda self: self._live() and not self._parked())
        @rule()
        def succeed(self) -> None:
            self._do(SUCCEED)

        @precondition(lambda self: self._live() and not self._parked())
        @rule(effect=st.booleans())
        def raise_error(self, effect: bool) -> None:
            """The call raises; a compensation may have taken effect first."""
            call = self._fetch()
            if call is not None:
                effect = effect and call.direction is Direction.COMPENSATE
                self._do(Outcome(Fault.RAISES, effect, "rule raise_error"))

        @precondition(lambda self: self._live() and not self._parked())
        @rule()
        def reject(self) -> None:
            """A forward call rejects the saga (a business "no"; compensations cannot)."""
            call = self._fetch()
            if call is not None and call.direction is Direction.FORWARD:
                self._do(Outcome(Fault.REJECTS, False, "rule reject"))

        @precondition(lambda self: self._live() and not self._parked())
        @rule(effect=st.booleans())
        def time_out(self, effect: bool) -> None:
            """The call overruns its time limit (if it has one: else it stays pending)."""
            call = self._fetch()
            if call is not None and call.timeout is not None:
                self._do(Outcome(Fault.TIMES_OUT, effect, "rule time_out"))

        @precondition(lambda self: self._live() and not self._parked()
                      and self._harness().record.status is SagaStatus.RUNNING)
        @rule(effect=st.booleans())
        def cancel(self, effect: bool) -> None:
            """The task running the saga is cancelled during a forward call."""
            call = self._fetch()
            if call is not None and call.direction is Direction.FORWARD:
                self._do(Outcome(Fault.CANCELLED, effect, "rule cancel"))

        @precondition(lambda self: (self._between() or self._parked())
                      and self._harness().record.status is SagaStatus.RUNNING
                      and self._harness().record.wake_at is not None)
        @rule()
        def cancel_while_waiting(self) -> None:
            """The task running the saga is cancelled while a step waits to retry, or
            while the saga is parked at a wait."""
            h = self._harness()
            h.cancel_queued(h.clock.now())  # a group's calls started and not yet made
            interrupt(h.spec, h.record, None, h.clock.now())
            h.cancelled = True
            self._moved()

        @precondition(lambda self: self._between() or self._parked())
        @rule(seconds=st.floats(0.0, stall_max, allow_nan=False))
        def stall(self, seconds: float) -> None:
            """Time passes between two calls (a slow store, a busy process), or while
            the saga waits."""
            self._harness().clock.advance(seconds)
            self._moved()

        @precondition(lambda self: self._live() and not (self.fetched and self.call)
                      and self._harness().record.waiting is not None)
        @rule()
        def time_runs_out(self) -> None:
            """The virtual clock runs to the parked wait's time: a timer fires, a wait
            times out (or the deadline wakes the saga)."""
            wake = self._harness().record.wake_at
            if wake is not None:
                self._harness().clock.advance_to(wake)
            self._moved()

        if options:  # the saga waits for signals

            @precondition(lambda self: self.h is not None)
            @rule(signal=signal_choice, repeat=st.sampled_from(["s1", "s2", "s3"]))
            def send_signal(self, signal: tuple[str, Any, bool, bool], repeat: str) -> None:
                """A signal comes: any name the saga waits for, its payload drawn from the
                user's strategies (or one that does not fit), its id one of a few (so
                that duplicates come too), at any moment (early, while a step runs, while
                parked, after the end). A parked saga is resumed at once, unless
                ``resume_at_once=False``."""
                name, payload, fits, rejects = signal
                why = "rule send_signal" + ("" if fits else " (unfit payload)")
                self._harness().send(_Send(name, payload, f"{name}:{repeat}", why,
                                           fits=fits, rejects=rejects))
                if self.parked is not None:
                    self._moved()
                    if resume_at_once:
                        self._fetch()

        @precondition(lambda self: spec.deadline is not None
                      and (self._between() or self._parked())
                      and self._harness().record.status is SagaStatus.RUNNING)
        @rule(during=st.booleans(), effect=st.booleans())
        def pass_deadline(self, during: bool, effect: bool) -> None:
            """The saga's deadline passes, before the next step or while it runs."""
            h = self._harness()
            self._moved()
            h.pass_deadline(during=during)
            if not during:
                return
            call = self._fetch()
            h._cut_next = False
            if call is not None and call.direction is Direction.FORWARD and call.deadline_bound:
                kind = spec.steps[call.index].kind
                assert kind is not StepKind.RETRIABLE
                self._do(Outcome(Fault.TIMES_OUT, effect, "the deadline passes during the call"))

        # -- invariants -----------------------------------------------------------

        @precondition(lambda self: self.h is not None and (
            not self.fetched or self.parked is not None
        ))
        @invariant()
        def run_so_far_is_sound(self) -> None:
            run = self._run()
            if run.complete:
                self._check_finished()
            else:
                self._check(run)

        def teardown(self) -> None:
            try:
                if self.h is not None and not self.failed:
                    while self._live():
                        self._fetch()
                        if self.parked is not None:
                            self.time_runs_out()
                        else:
                            self._do(SUCCEED)
                    self._check_finished()
            finally:
                if self.loop is not None:
                    self.loop.close()

    SagaMachine.__name__ = SagaMachine.__qualname__ = f"{saga_class.__name__}StateMachine"
    return SagaMachine

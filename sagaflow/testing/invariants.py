"""The invariants every saga run must keep, checked on its :class:`~sagaflow.testing.trace.Trace`.

:func:`check_invariants` reads the run three ways (the calls the injector saw, the
lifecycle history, the result: a :class:`~sagaflow.testing.reading.Reading`) and checks
each against the others, against the saga's spec and against the plan. A broken
invariant raises :class:`InvariantViolation`, an ``AssertionError`` whose message names
each broken invariant (number and name), says what was expected and what was seen, and
shows the trace of calls.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import attrs

from .. import events as ev
from ..context import Direction, idempotency_key
from ..errors import CompensationError, SagaRejected, WaitTimedOut
from ..machine import COMPENSATED, COMPLETED, FAILED, NOT_STARTED, compensation_state
from ..policy import Retry, backoff_delay
from ..records import CompensationStatus, SagaStatus, StepStatus
from ..spec import StepKind, StepSpec
from .reading import Reading
from .trace import CallRecord, Trace, diff, error_text, format_signals, format_trace

__all__ = ["INVARIANTS", "InvariantViolation", "Violation", "check_invariants"]

FORWARD = Direction.FORWARD
COMPENSATE = Direction.COMPENSATE

#: Every invariant by number: what :func:`check_invariants` checks.
INVARIANTS: dict[int, str] = {
    1: "the run ends in a terminal status that matches its plan and its calls' outcomes",
    2: "a plan with no permanent failure completes, compensating nothing",
    3: "compensations run in exact reverse order of the completed (and timed-out) steps",
    4: "each compensation succeeds at most once, and only for a step that may have taken "
    "effect",
    5: "retries stay within their budgets and back off as the policy says",
    6: "after the pivot completed, nothing is compensated",
    7: "the run's state changes are a path in the saga's state machine",
    8: "the lifecycle history is consistent with the result",
    9: "idempotency keys are the same on every attempt of a step and direction",
    10: "steps and compensations fail only where the plan says",
    11: "a compensated run leaves the participants as it found them",
    12: "each signal is stored once and delivered at most once, in arrival order per name, "
    "its handler run once per delivery",
    13: "a wait ends as its signal or its time says: delivered, or timed out (compensating, "
    "going on or failing as declared) only when no signal had come",
    14: "a rejection ends the saga with SagaRejected, compensating exactly what was done "
    "(FAILED after the pivot); a payload that must be rejected is",
    15: "a signal is refused exactly when it must be (a finished saga, unless it repeats a "
    "stored id; a payload that does not fit), and a refused signal stores nothing",
    16: "a waiting saga is RUNNING, its step WAITING, parked for its signal until its time",
    17: "at a parallel group or a fan-out, exactly the members (items) that completed or whose "
    "outcome is unknown are compensated, each once; none that failed before taking effect "
    "or never started",
    18: "no member (item) starts after its group (fan-out) failed; those in flight finish",
    19: "a group's (fan-out's) compensations all come before those of the steps before it, "
    "and the group's forward calls before all of them",
}
USER = 20  # user-supplied invariants are numbered from here
RunT = TypeVar("RunT", bound=Trace)

_TERMINAL_EVENT = {
    SagaStatus.COMPLETED: ev.SagaCompleted,
    SagaStatus.COMPENSATED: ev.SagaCompensated,
    SagaStatus.FAILED: ev.SagaFailed,
}
_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


@attrs.frozen
class Violation:
    """One broken invariant: its number, its name and what was seen."""

    number: int
    name: str
    detail: str

    def __str__(self) -> str:
        body = "\n".join("    " + line for line in self.detail.splitlines())
        return f"[{self.number}] {self.name}:\n{body}"


class InvariantViolation(AssertionError):
    """A saga run broke one or more invariants; ``violations`` lists them."""

    def __init__(self, run: Trace, violations: Sequence[Violation]) -> None:
        self.run = run
        self.violations = tuple(violations)
        super().__init__(_report(run, self.violations))

    @property
    def numbers(self) -> list[int]:
        """The numbers of the broken invariants."""
        return sorted({v.number for v in self.violations})


def check_invariants(
    run: RunT,
    *,
    extra: Iterable[Callable[[RunT], object]] = (),
    allow_step_errors: bool | None = None,
    strict_pivot: bool = False,
    only: Iterable[int] | None = None,
) -> None:
    """Raise :class:`InvariantViolation` unless ``run`` keeps every invariant.

    ``extra``: your own invariants, each a callable of the run (the
    :class:`~sagaflow.testing.PlanRun`) that raises
    ``AssertionError`` (or returns ``False``) when broken; say, "a compensated
    subscription has no approval left". ``allow_step_errors``: forward steps may raise
    on their own (a business rule refusing the input); otherwise any failure the plan
    did not inject is reported, since under a plan the participants are fakes that
    only fail when told to (default: what the run's :class:`SagaCase` says).
    ``strict_pivot``: hold invariant 11 even when the pivot timed out (or was
    cancelled) after taking effect; by default such runs are exempt, since nothing in
    the saga can undo a pivot (see the README). ``only``: check just these invariant
    numbers.
    """
    wanted = None if only is None else set(only)
    lenient = run.allow_step_errors if allow_step_errors is None else allow_step_errors
    found = _Checker(run, lenient, strict_pivot).check(wanted)
    for i, fn in enumerate(extra):
        number = USER + i
        if wanted is not None and number not in wanted:
            continue
        name = getattr(fn, "__qualname__", None) or repr(fn)
        doc = (getattr(fn, "__doc__", None) or "").strip().splitlines()
        title = f"{name}: {doc[0]}" if doc else name
        try:
            verdict = fn(run)
        except AssertionError as exc:
            found.append(Violation(number, title, str(exc) or "assertion failed"))
            continue
        if verdict is False:
            found.append(Violation(number, title, "returned False"))
    if found:
        raise InvariantViolation(run, found)


class _Checker(Reading):
    """The invariants, each a method: a :class:`Reading` of the run that also judges it."""

    def __init__(self, run: Trace, allow_step_errors: bool, strict_pivot: bool) -> None:
        super().__init__(run)
        self.strict_pivot = strict_pivot
        self.allow_step_errors = allow_step_errors
        self.found: list[Violation] = []

    def fail(self, number: int, detail: str) -> None:
        self.found.append(Violation(number, INVARIANTS[number], detail))

    # -- the invariants -------------------------------------------------------------

    def check(self, wanted: set[int] | None) -> list[Violation]:
        checks: list[tuple[int, Callable[[], None]]] = [
            (1, self.i1_status),
            (2, self.i2_quiet_plan_completes),
            (3, self.i3_reverse_order),
            (4, self.i4_compensation_once),
            (5, self.i5_budgets),
            (6, self.i6_pivot),
            (7, self.i7_machine_path),
            (8, self.i8_history),
            (9, self.i9_keys),
            (10, self.i10_only_planned_failures),
            (11, self.i11_snapshot),
            (12, self.i12_signals_once),
            (13, self.i13_waits_end),
            (14, self.i14_rejection),
            (15, self.i15_refusals),
            (16, self.i16_waiting),
            (17, self.i17_block_undo_exact),
            (18, self.i18_no_start_after_failure),
            (19, self.i19_block_undo_order),
        ]
        for number, check in checks:
            if wanted is None or number in wanted:
                check()
        return self.found

    def i1_status(self) -> None:
        run, result = self.run, self.run.result
        status = result.status
        if not run.complete:
            if status.is_terminal:
                self.fail(1, f"the run is not over yet, but its status is {status.value}")
            return
        if not status.is_terminal:
            self.fail(1, f"the run is over but its status is {status.value}, not terminal")
            return
        if run.final_state != status.value.lower():
            self.fail(1, f"status {status.value} but the machine is in state "
                         f"{run.final_state!r}")
        if self.forward_done:
            expected, why = SagaStatus.COMPLETED, "every step completed or was skipped"
        else:
            assert self.stop is not None
            if self.stop.kind is StepKind.RETRIABLE:
                expected = SagaStatus.FAILED
                why = f"retriable step {self.stop.name!r} (after the pivot) failed for good"
            elif self.stopped_at_unknown_pivot:
                expected = SagaStatus.FAILED
                why = f"the pivot {self.stop.name!r} timed out: its outcome is unknown"
            elif self.stopped_by_failing_wait:
                expected = SagaStatus.FAILED
                why = f"wait {self.stop.name!r} timed out and declares on_timeout='fail'"
            else:
                gave_up = [
                    name for name in self.expected_undo()
                    if not (self.comp[name] and self.comp[name][-1].ok) or any(
                        not calls[-1].ok for r in self.block_records(self.spec.step(name))
                        if (calls := self.comp_of.get(r))
                    )
                ]
                if gave_up:
                    expected = SagaStatus.FAILED
                    why = (f"{self.stop.name!r} stopped the saga and the compensation of "
                           f"{', '.join(map(repr, gave_up))} did not succeed")
                else:
                    expected = SagaStatus.COMPENSATED
                    why = (f"{self.stop.name!r} stopped the saga and every compensation "
                           "needed succeeded")
        if status is not expected:
            self.fail(1, f"expected {expected.value} ({why}); seen {status.value}")
        self._matches_plan()

    def _matches_plan(self) -> None:
        planned = self.planned_stop()
        if planned is None:
            return
        index, why = planned
        if self.forward_done:
            self.fail(1, f"{why}, but every step completed")
        elif self.stop is not None and self.stop.index > index and (
            self.unit(self.stop.name) != self.unit(self.spec.steps[index].name)
        ):  # (a group's members fail in any order)
            self.fail(1, f"{why}, but the saga went on to {self.stop.name!r}")

    def i2_quiet_plan_completes(self) -> None:
        run = self.run
        plan = run.plan
        if plan is None or not run.complete or plan.has_permanent_failure(self.spec):
            return
        if self.user_errors or self.deadline_cut():
            return  # explained elsewhere: a step's own error, or retries out of time
        comps = [c for c in run.calls if c.direction is COMPENSATE]
        if run.result.status is not SagaStatus.COMPLETED or comps:
            undone = ", ".join(sorted({c.step for c in comps})) or "nothing"
            self.fail(2, f"{plan!r} has no permanent failure; expected COMPLETED with no "
                         f"compensation; seen {run.result.status.value}, compensated: "
                         f"{undone}")

    def _units(self, names: Iterable[str]) -> list[str]:
        """``names`` by their units (a group's members, a fan-out's items: one), merged
        where consecutive."""
        out: list[str] = []
        for name in names:
            unit = self.unit(name)
            if not out or out[-1] != unit:
                out.append(unit)
        return out

    def i3_reverse_order(self) -> None:
        seen = self._units(self.seen_undo())
        calls_order = self._units(c.step for c in self.run.calls if c.direction is COMPENSATE)
        if len(set(calls_order)) != len(calls_order):
            self.fail(3, "a compensation resumed after another one ran: "
                         + " > ".join(calls_order))
        if not self.compensating:
            return
        expected = self._units(self.expected_undo())
        if not self.run.complete:
            expected = expected[: len(seen)]
        if seen != expected:
            assert self.stop is not None
            took = sorted(self.completed | self.unknown, key=self.spec.index.__getitem__)
            self.fail(3, f"the saga stopped at {self.stop.name!r}; steps that took (or may "
                         f"have taken) effect: {', '.join(took) or 'none'}\n"
                         f"expected: {' > '.join(expected) or '(nothing to undo)'}\n"
                         f"seen:     {' > '.join(seen) or '(nothing undone)'}")

    def i4_compensation_once(self) -> None:
        for s in self.spec.steps:
            if s.each is not None:
                continue  # its items, each by its record: invariant 17
            calls = self.comp[s.name]
            succeeded = [c for c in calls if c.ok]
            if len(succeeded) > 1:
                attempts = ", ".join(str(c.attempt) for c in succeeded)
                self.fail(4, f"the compensation of {s.name!r} succeeded {len(succeeded)} "
                             f"times (attempts {attempts})")
            done = [e for e in self.history
                    if isinstance(e, ev.CompensationCompleted) and e.step == s.name]
            if len(done) > 1:
                self.fail(4, f"CompensationCompleted for {s.name!r} {len(done)} times")
            if not calls and not any(
                isinstance(e, ev.CompensationStarted) and e.step == s.name for e in self.history
            ):
                continue
            why = None
            if s.compensation is None:
                why = f"it is {s.kind.value}: there is nothing to undo"
            elif s.name in self.skipped:
                why = "it was skipped (its condition was false)"
            elif not self.fwd[s.name]:
                why = "it never started"
            elif s.name not in self.completed and s.name not in self.unknown:
                why = "every attempt failed by raising, so it took no effect"
            if why:
                self.fail(4, f"{s.name!r} was compensated, but {why}")

    # -- groups and fan-outs (17-19) ---------------------------------------------------

    def _block_undone(self, unit: str) -> bool:
        """Whether the run's outcome calls for undoing block ``unit`` (the stop is in it or
        after it, and compensation runs)."""
        if not self.compensating or not self.run.complete:
            return False
        assert self.stop is not None
        first = min(i for i, s in enumerate(self.spec.steps)
                    if self.spec.state_of(i) == unit)
        return self.unit_end(self.stop) >= first and not (
            self.stopped_at_unknown_pivot or self.stopped_by_failing_wait
        )

    def i17_block_undo_exact(self) -> None:
        took = self.completed_records | self.unknown_records
        for unit, records in _block_records(self).items():
            due = self._block_undone(unit)
            for name in records:
                calls = self.comp_of.get(name, [])
                ok = [c for c in calls if c.ok]
                if len(ok) > 1:
                    self.fail(17, f"{name!r} was compensated {len(ok)} times (attempts "
                                  f"{', '.join(str(c.attempt) for c in ok)})")
                if calls and name not in took:
                    why = ("it never started" if not self.fwd_of.get(name)
                           else "every attempt failed before taking effect")
                    self.fail(17, f"{name!r} (in {unit!r}) was compensated, but {why}")
                if due and name in took and not calls:
                    how = "completed" if name in self.completed_records else (
                        "may have taken effect (its outcome is unknown)")
                    self.fail(17, f"{name!r} (in {unit!r}) {how}, yet it was not "
                                  "compensated")

    def i18_no_start_after_failure(self) -> None:
        for unit, records in _block_records(self).items():
            mine = set(records)
            failed_at: ev.LifecycleEvent | None = None
            for e in self.history:
                if e.step not in mine:
                    continue
                if isinstance(e, (ev.StepFailed, ev.StepRejected)) and failed_at is None:
                    failed_at = e
                elif isinstance(e, ev.StepStarted) and failed_at is not None:
                    self.fail(18, f"{e.describe()} after {failed_at.describe()}: "
                                  f"{unit!r} had failed")

    def i19_block_undo_order(self) -> None:
        calls = self.run.calls
        for unit, records in _block_records(self).items():
            mine = set(records)
            first = min(i for i, _ in enumerate(self.spec.steps)
                        if self.spec.state_of(i) == unit)
            undo = [c.seq for c in calls if c.direction is COMPENSATE and c.record_name in mine]
            if not undo:
                continue
            forward = [c.seq for c in calls if c.direction is FORWARD and c.record_name in mine]
            if forward and max(forward) > min(undo):
                self.fail(19, f"{unit!r}: a forward call (#{max(forward)}) came after its "
                              f"compensation began (#{min(undo)})")
            before = [c for c in calls if c.direction is COMPENSATE
                      and self.spec.index.get(c.step, first) < first]
            if before and before[0].seq < max(undo):
                self.fail(19, f"{unit!r}: the compensation of {before[0].step!r} (#"
                              f"{before[0].seq}), a step before it, came before its own "
                              f"ended (#{max(undo)})")

    def i5_budgets(self) -> None:
        spec, run = self.spec, self.run
        for s in spec.steps:
            if s.each is not None:
                self._item_budgets(s)
                continue
            for direction, calls, policy in (
                (FORWARD, self.fwd[s.name], s.retry),
                (COMPENSATE, self.comp[s.name], s.compensation_retry),
            ):
                what = s.name if direction is FORWARD else f"the compensation of {s.name!r}"
                attempts = [c.attempt for c in calls]
                if attempts != list(range(1, len(calls) + 1)):
                    self.fail(5, f"{what}: attempts numbered {attempts}, not 1..{len(calls)}")
                tries = len([c for c in calls if c.reported != "cut"])  # a crash's: no try
                if tries > policy.attempts:
                    self.fail(5, f"{what} was tried {tries} times; its policy allows "
                                 f"{policy.attempts} ({_policy(policy)})")
                for prev in calls[:-1]:
                    if prev.ok:
                        self.fail(5, f"{what} was tried again after attempt {prev.attempt} "
                                     "succeeded")
                    elif prev.reported == "error" and prev.error is not None and (
                        not policy.is_retryable(prev.error)
                    ):
                        self.fail(5, f"{what} was retried after {error_text(prev.error)}, which "
                                     f"its policy does not retry ({_policy(policy)})")
                if not run.complete or not calls or calls[-1].ok:
                    continue
                if calls[-1].reported == "cancelled" or (
                    direction is FORWARD and self.block_failed(s.name)
                ):
                    continue
                if self.reason_to_give_up(s, direction) is None:
                    last = calls[-1]
                    self.fail(5, f"{what} gave up after attempt {last.attempt} of "
                                 f"{policy.attempts} though its error "
                                 f"({error_text(last.error) if last.error else last.reported}) "
                                 "is retryable and no deadline was near")
        self._delays()

    def _item_budgets(self, s: StepSpec) -> None:
        """Invariant 5 for a fan-out's items, each by its record."""
        for name in self.block_records(s):
            for direction, calls, policy in (
                (FORWARD, self.fwd_of.get(name, []), s.retry),
                (COMPENSATE, self.comp_of.get(name, []), s.compensation_retry),
            ):
                what = name if direction is FORWARD else f"the compensation of {name!r}"
                attempts = [c.attempt for c in calls]
                if attempts != list(range(1, len(calls) + 1)):
                    self.fail(5, f"{what}: attempts numbered {attempts}, not 1..{len(calls)}")
                # a call cut off by a crash is no attempt the policy counts
                tries = len([c for c in calls if c.reported != "cut"])
                if tries > policy.attempts:
                    self.fail(5, f"{what} was tried {tries} times; its policy allows "
                                 f"{policy.attempts} ({_policy(policy)})")
                for prev in calls[:-1]:
                    if prev.ok:
                        self.fail(5, f"{what} was tried again after attempt {prev.attempt} "
                                     "succeeded")

    def _delays(self) -> None:
        delays: list[float] = []
        for e in self.history:
            if isinstance(e, (ev.StepRetrying, ev.CompensationRetrying)):
                assert e.step is not None
                s = self.spec.step(self.unit_step(e.step))
                forward = isinstance(e, ev.StepRetrying)
                policy = s.retry if forward else s.compensation_retry
                what = e.step if forward else f"the compensation of {e.step!r}"
                delays.append(e.delay)
                if self.run.rand is not None:
                    want = backoff_delay(policy, e.attempt, self.run.rand)
                    if not math.isclose(e.delay, want, rel_tol=1e-9, abs_tol=1e-9):
                        self.fail(5, f"{what}: the delay before retry {e.attempt} is "
                                     f"{e.delay:g}s; the policy gives {want:g}s "
                                     f"({_policy(policy)})")
                else:
                    low = backoff_delay(policy, e.attempt, 0.0)
                    high = backoff_delay(policy, e.attempt, 1.0)
                    if not low - 1e-9 <= e.delay <= high + 1e-9:
                        self.fail(5, f"{what}: the delay before retry {e.attempt} is "
                                     f"{e.delay:g}s, outside the policy's [{low:g}, {high:g}]")
        history = self.history
        for i, e in enumerate(history):
            if not isinstance(e, (ev.StepRetrying, ev.CompensationRetrying)):
                continue
            started = ev.StepStarted if isinstance(e, ev.StepRetrying) else ev.CompensationStarted
            nxt = next((x for x in history[i + 1:] if isinstance(x, started)
                        and x.step == e.step), None)
            if nxt is not None and nxt.at < e.at + e.delay - 1e-6:
                self.fail(5, f"{e.step!r} attempt {nxt.attempt} started {nxt.at - e.at:g}s "
                             f"after attempt {e.attempt} failed; its backoff is {e.delay:g}s")
        if self.run.driver == "stateful" or self.has_blocks:
            # (at a group, a retry's backoff overlaps the other members' calls)
            return  # time also passes between calls there (stalls), shortening the sleeps
        sleeps = list(self.run.sleeps)
        if self.run.complete and (
            len(sleeps) != len(delays)
            or not all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
                       for a, b in zip(sleeps, delays, strict=False))
        ):
            self.fail(5, f"the run slept {_floats(sleeps)}; its retries asked for "
                         f"{_floats(delays)}")

    def i6_pivot(self) -> None:
        pivot = self.spec.pivot_index
        done_at = None
        for i, e in enumerate(self.history):
            if isinstance(e, ev.StepCompleted) and pivot is not None and (
                e.step == self.spec.steps[pivot].name
            ):
                done_at = i
            if isinstance(e, ev.StepCompleted) and self.spec.step(
                self.unit_step(e.step or "")
            ).kind is StepKind.RETRIABLE and done_at is None:
                done_at = i
        if done_at is None:
            return
        later = [e for e in self.history[done_at + 1:]
                 if isinstance(e, (ev.CompensationStarted, ev.CompensationFailed))]
        if later:
            steps = ", ".join(dict.fromkeys(str(e.step) for e in later))
            name = self.spec.steps[pivot].name if pivot is not None else "a retriable step"
            self.fail(6, f"{name!r} completed, yet the saga compensated {steps}")
        if self.run.result.status is SagaStatus.COMPENSATED:
            self.fail(6, "the pivot completed, yet the saga ended COMPENSATED")

    def i7_machine_path(self) -> None:
        if self.has_blocks:
            self._block_path()
            return
        spec = self.spec
        allowed = spec.transitions
        state = NOT_STARTED
        path = [state]
        edges: list[tuple[str, str, str]] = []
        last_undo: dict[str, str] = {}
        names = [s.name for s in spec.steps]

        def after(step: str) -> str:
            i = spec.index[step]
            return names[i + 1] if i + 1 < len(names) else COMPLETED

        def move(trigger: str, dest: str, why: str) -> bool:
            nonlocal state
            if (state, trigger, dest) not in allowed:
                options = sorted(f"{t} -> {d}" for s, t, d in allowed if s == state)
                self.fail(7, f"{why}: {state!r} --{trigger}--> {dest!r} is not a transition "
                             f"of the machine (from {state!r}: {', '.join(options) or 'none'})"
                             f"\npath so far: {' > '.join(path)}")
                state = dest
                return False
            edges.append((state, trigger, dest))
            state = dest
            path.append(dest)
            return True

        def leave_for(dest: str, why: str) -> bool:
            if state.startswith("compensating_"):
                step = state[len("compensating_"):]
                return move(last_undo.get(step, "undone"), dest, why)
            trigger = "fail" if dest == FAILED and state in names else "compensate"
            return move(trigger, dest, why)

        def at(expected: str, e: ev.LifecycleEvent) -> bool:
            if state != expected:
                self.fail(7, f"{e.describe()} happened in state {state!r}, not {expected!r}"
                             f"\npath so far: {' > '.join(path)}")
                return False
            return True

        history = self.history
        for n, e in enumerate(history):
            step = e.step or ""
            ok = True
            if isinstance(e, ev.SagaStarted):
                ok = move("start", names[0], "SagaStarted")
            elif isinstance(e, (ev.StepStarted, ev.StepRetrying, ev.StepFailed, ev.StepRejected,
                                ev.WaitStarted, ev.SignalDelivered)):
                ok = at(step, e)
            elif isinstance(e, ev.WaitExpired):
                ok = at(step, e) and move("timeout", _after_timeout(e, history[n + 1:], after),
                                          e.describe())
            elif isinstance(e, ev.StepCompleted):
                ok = at(step, e) and move("advance", after(step), e.describe())
            elif isinstance(e, ev.StepSkipped):
                ok = at(step, e) and move("skip", after(step), e.describe())
            elif isinstance(e, (ev.CompensationStarted, ev.CompensationFailed)):
                target = compensation_state(step)
                if state != target:
                    ok = leave_for(target, e.describe())
                if isinstance(e, ev.CompensationFailed):
                    last_undo[step] = "undo_failed"
            elif isinstance(e, (ev.CompensationRetrying, ev.CompensationCompleted)):
                ok = at(compensation_state(step), e)
                if isinstance(e, ev.CompensationCompleted):
                    last_undo[step] = "undone"
            elif isinstance(e, ev.SagaCompleted):
                ok = at(COMPLETED, e)
            elif isinstance(e, (ev.SagaCompensated, ev.SagaFailed)):
                target = COMPENSATED if isinstance(e, ev.SagaCompensated) else FAILED
                if state != target:
                    ok = leave_for(target, e.describe())
            if not ok:
                return
        final = self.run.final_state
        if not self.run.complete and any(
            (src, dst) == (state, final) for src, _, dst in allowed
        ):
            return  # a run still going may have moved on before its next event
        if state != final:
            self.fail(7, f"the history leads to state {state!r}, but the run is in "
                         f"{self.run.final_state!r}\npath: {' > '.join(path)}")
        elif self.run.complete and list(self.run.result.path) != edges:
            self.fail(7, "the path the run recorded is not the one its history took:\n"
                         f"recorded: {_edges(self.run.result.path)}\n"
                         f"history:  {_edges(edges)}")

    def _block_path(self) -> None:
        """Invariant 7 for a saga with groups or fan-outs: the path the run recorded is a
        chain of the machine's edges from ``not_started`` to the state it is in."""
        allowed = self.spec.transitions
        state = NOT_STARTED
        for edge in self.run.result.path:
            src, trigger, dest = edge
            if src != state or edge not in allowed:
                self.fail(7, f"{src!r} --{trigger}--> {dest!r} does not follow state "
                             f"{state!r} by an edge of the machine\npath: "
                             f"{_edges(self.run.result.path)}")
                return
            state = dest
        if state != self.run.final_state:
            self.fail(7, f"the recorded path leads to {state!r}, but the run is in "
                         f"{self.run.final_state!r}")

    def i8_history(self) -> None:
        run, history, result = self.run, self.history, self.run.result
        if not history or not isinstance(history[0], ev.SagaStarted):
            self.fail(8, "the history does not begin with SagaStarted")
        starts = sum(isinstance(e, ev.SagaStarted) for e in history)
        if starts != 1:
            self.fail(8, f"SagaStarted appears {starts} times")
        finals = [e for e in history if isinstance(e, tuple(_TERMINAL_EVENT.values()))]
        if run.complete:
            want = _TERMINAL_EVENT.get(result.status)
            if len(finals) != 1 or history[-1] is not finals[0] or (
                want is not None and not isinstance(finals[0], want)
            ):
                names = ", ".join(type(e).__name__ for e in finals) or "none"
                self.fail(8, f"status {result.status.value}: expected one final "
                             f"{want.__name__ if want else '?'}, last; seen {names}")
        elif finals:
            self.fail(8, "a run still going has a final event")
        if self.has_blocks:
            self._record_brackets()
            self._record_counts()
        else:
            self._brackets()
            self._counts()
        emitted = [x for c in run.calls if c.ok for x in c.emitted]
        if list(result.events) != emitted:
            self.fail(8, f"domain events {_short.repr(list(result.events))}; the successful "
                         f"calls emitted {_short.repr(emitted)}")
        if run.complete and (result.status is SagaStatus.COMPLETED) != (result.error is None):
            self.fail(8, f"status {result.status.value} with error {result.error!r}")

    def _brackets(self) -> None:
        open_: tuple[str, str, int] | None = None
        last_closed: dict[str, type] = {}
        for e in self.history:
            step = e.step or ""
            if isinstance(e, (ev.StepStarted, ev.CompensationStarted)):
                kind = "step" if isinstance(e, ev.StepStarted) else "comp"
                if open_ is not None:
                    self.fail(8, f"{e.describe()} while {open_[1]!r} attempt {open_[2]} "
                                 "was still open")
                open_ = (kind, step, e.attempt)
            elif isinstance(e, (ev.StepCompleted, ev.StepRetrying, ev.StepFailed,
                                ev.StepRejected)):
                before = last_closed.get(step)
                last_closed[step] = type(e)
                if open_ == ("step", step, e.attempt):
                    open_ = None
                elif not (isinstance(e, ev.StepFailed) and open_ is None and (
                    step in self.guard_failed or before is ev.StepRetrying
                )):  # a guard that raised; a deadline that overtook a waiting retry
                    self.fail(8, f"{e.describe()} closes no StepStarted "
                                 f"(open: {open_ or 'nothing'})")
            elif isinstance(e, (ev.CompensationCompleted, ev.CompensationRetrying,
                                ev.CompensationFailed)):
                if open_ == ("comp", step, e.attempt):
                    open_ = None
                elif not (isinstance(e, ev.CompensationFailed) and open_ is None
                          and "deadline" in (e.error or "")):
                    self.fail(8, f"{e.describe()} closes no CompensationStarted "
                                 f"(open: {open_ or 'nothing'})")
            elif open_ is not None:
                self.fail(8, f"{e.describe()} while {open_[1]!r} attempt {open_[2]} was open")
        if open_ is not None:
            self.fail(8, f"{open_[1]!r} attempt {open_[2]} started and never ended")

    def _counts(self) -> None:
        result, history = self.run.result, self.history
        for s, sr in zip(self.spec.steps, result.steps, strict=True):
            started = sum(isinstance(e, ev.StepStarted) and e.step == s.name for e in history)
            calls = len(self.fwd[s.name])
            guard = 1 if s.name in self.guard_failed else 0
            if not started == calls == sr.attempts - guard:
                self.fail(8, f"{s.name!r}: {started} StepStarted, {calls} calls, record says "
                             f"{sr.attempts} attempts")
            cstarted = sum(isinstance(e, ev.CompensationStarted) and e.step == s.name
                           for e in history)
            ccalls = len(self.comp[s.name])
            if not cstarted == ccalls == sr.compensation_attempts:
                self.fail(8, f"the compensation of {s.name!r}: {cstarted} CompensationStarted,"
                             f" {ccalls} calls, record says {sr.compensation_attempts} attempts")
            kinds = {type(e) for e in history if e.step == s.name}
            woken = ev.WaitStarted in kinds and ev.StepStarted not in kinds  # deadline, cancel
            expect = {
                StepStatus.COMPLETED: ev.StepCompleted in kinds,
                StepStatus.SKIPPED: ev.StepSkipped in kinds,
                StepStatus.FAILED: ev.StepFailed in kinds or woken,
                StepStatus.TIMED_OUT: ev.StepFailed in kinds,
                StepStatus.PENDING: ev.StepStarted not in kinds and ev.StepFailed not in kinds
                and ev.WaitStarted not in kinds,
                StepStatus.RUNNING: not self.run.complete,
                StepStatus.WAITING: not self.run.complete and ev.WaitStarted in kinds,
                StepStatus.REJECTED: ev.StepRejected in kinds,
                StepStatus.EXPIRED: ev.WaitExpired in kinds,
            }
            if not expect[sr.status]:
                seen = ", ".join(sorted(k.__name__ for k in kinds)) or "no events"
                self.fail(8, f"{s.name!r} is {sr.status.value} but its events are: {seen}")
            timed_out = any(c.reported in ("timeout", "cancelled") for c in self.fwd[s.name])
            if sr.timed_out != timed_out:
                self.fail(8, f"{s.name!r}: record timed_out={sr.timed_out}, calls say "
                             f"{timed_out}")
            cexpect = {
                CompensationStatus.COMPENSATED: ev.CompensationCompleted in kinds,
                CompensationStatus.FAILED: ev.CompensationFailed in kinds,
                CompensationStatus.NOT_NEEDED: ev.CompensationStarted not in kinds,
                CompensationStatus.PENDING: not self.run.complete,
                CompensationStatus.RUNNING: not self.run.complete,
            }
            if not cexpect[sr.compensation]:
                self.fail(8, f"the compensation of {s.name!r} is {sr.compensation.value} but "
                             "the history disagrees")

    def _record_brackets(self) -> None:
        """Each record's (member's, item's) starts and ends alternate (calls overlap)."""
        open_: dict[tuple[str, str], int] = {}
        for e in self.history:
            step = e.step or ""
            if isinstance(e, (ev.StepStarted, ev.CompensationStarted)):
                kind = "step" if isinstance(e, ev.StepStarted) else "comp"
                if (kind, step) in open_ and not (
                    kind == "step" and self.spec.index.get(step) is not None
                    and self.spec.step(step).each is not None
                ) and not any(c.reported == "cut" for c in self.fwd_of.get(step, [])):
                    self.fail(8, f"{e.describe()} while attempt {open_[(kind, step)]} of it "
                                 "was still open")
                open_[(kind, step)] = e.attempt
            elif isinstance(e, (ev.StepCompleted, ev.StepRetrying, ev.StepFailed,
                                ev.StepRejected)):
                if open_.pop(("step", step), None) is None and not isinstance(e, ev.StepFailed):
                    self.fail(8, f"{e.describe()} closes no StepStarted")
            elif isinstance(e, (ev.CompensationCompleted, ev.CompensationRetrying)) and (
                open_.pop(("comp", step), None) is None
            ):
                self.fail(8, f"{e.describe()} closes no CompensationStarted")
            elif isinstance(e, ev.CompensationFailed):
                open_.pop(("comp", step), None)
        if self.run.complete and open_:
            left = ", ".join(f"{k} {n!r}" for k, n in open_)
            self.fail(8, f"started and never ended: {left}")

    def _record_counts(self) -> None:
        """Each record's attempts: as many calls as StepStarted events (a call cut off by
        a crash counts as a start), as the record says."""
        history = self.history
        for sr in self.run.result.steps:
            name = sr.name
            s = self.spec.steps[self.spec.index[self.unit_step(name)]]
            if s.each is not None and name == s.name:
                continue  # the fan-out's own record aggregates its items'
            started = sum(isinstance(e, ev.StepStarted) and e.step == name for e in history)
            calls = len(self.fwd_of.get(name, []))
            in_flight = not self.run.complete and sr.status is StepStatus.RUNNING
            if s.wait is None and not started == calls == sr.attempts and not (
                name in self.guard_failed or (in_flight and started == sr.attempts)
            ):
                self.fail(8, f"{name!r}: {started} StepStarted, {calls} calls, record says "
                             f"{sr.attempts} attempts")
            cstarted = sum(isinstance(e, ev.CompensationStarted) and e.step == name
                           for e in history)
            ccalls = len(self.comp_of.get(name, []))
            undoing = not self.run.complete and sr.compensation is CompensationStatus.RUNNING
            if not cstarted == ccalls == sr.compensation_attempts and not (
                undoing and cstarted == sr.compensation_attempts
            ):
                self.fail(8, f"the compensation of {name!r}: {cstarted} CompensationStarted, "
                             f"{ccalls} calls, record says {sr.compensation_attempts} attempts")
            timed_out = name in self.unknown_records
            if s.wait is None and sr.timed_out != timed_out:
                self.fail(8, f"{name!r}: record timed_out={sr.timed_out}, calls say {timed_out}")

    def i9_keys(self) -> None:
        run = self.run
        keys: dict[tuple[str, Direction], set[str]] = {}
        for c in run.calls:
            keys.setdefault((c.record_name, c.direction), set()).add(c.key)
        owners: dict[str, tuple[str, Direction]] = {}
        for (step, direction), seen in keys.items():
            want = idempotency_key(run.saga_id, step, direction)
            if seen != {want}:
                self.fail(9, f"{step} {direction.value}: keys {sorted(seen)}; expected "
                             f"{want!r} on every attempt")
            for key in seen:
                other = owners.setdefault(key, (step, direction))
                if other != (step, direction):
                    self.fail(9, f"key {key!r} is shared by {other[0]} {other[1].value} and "
                                 f"{step} {direction.value}")

    def i10_only_planned_failures(self) -> None:
        grouped: dict[tuple[str, Direction, str], list[int]] = {}
        for c in self.user_errors:
            if c.direction is FORWARD and (self.allow_step_errors or c.rejected):
                continue  # a rejection is the saga's own business "no", not a bug
            key = (c.step, c.direction, error_text(c.user_error))
            grouped.setdefault(key, []).append(c.attempt)
        for (step, direction, err), attempts in grouped.items():
            noun = "attempt" if len(attempts) == 1 else "attempts"
            at = f"{noun} {', '.join(map(str, attempts))}"
            if direction is FORWARD:
                self.fail(10, f"step {step!r} raised {err} by itself at {at} (nothing was "
                              "injected there): if the inputs make it fail, pass "
                              "allow_step_errors=True")
            else:
                self.fail(10, f"the compensation of {step!r} raised {err} by itself at {at}."
                              f" {self.undo_context(step)} A compensation must succeed, "
                              "and tolerate \"nothing to undo\"")

    def i11_snapshot(self) -> None:
        run = self.run
        if not run.snapshotted or run.result.status is not SagaStatus.COMPENSATED:
            return
        pivot = self.spec.pivot_index
        if pivot is not None and not self.strict_pivot:
            name = self.spec.steps[pivot].name
            if any(c.reported in ("timeout", "cancelled") and c.ran_user and c.user_error is None
                   for c in self.fwd[name]):
                return  # the pivot may have taken effect, and no compensation can undo it
        if run.before != run.after:
            self.fail(11, "the saga ended COMPENSATED but the participants changed:\n"
                          + diff(run.before, run.after))


    # -- waits and signals ------------------------------------------------------------

    def _deliveries(self, s: StepSpec) -> list[tuple[ev.SignalDelivered, CallRecord | None]]:
        """Each signal delivered to wait ``s``, with the handler call it started."""
        got = [e for e in self.history if isinstance(e, ev.SignalDelivered) and e.step == s.name]
        calls = self.fwd[s.name]
        return [(e, calls[i] if i < len(calls) else None) for i, e in enumerate(got)]

    def i12_signals_once(self) -> None:
        run = self.run
        kept = run.kept
        ids = [k.signal_id for k in kept]
        for sid in sorted({i for i in ids if ids.count(i) > 1}):
            self.fail(12, f"the store holds {ids.count(sid)} signals with id {sid!r}")
        seqs = [k.seq for k in kept]
        if seqs != sorted(set(seqs)):
            self.fail(12, f"the stored signals' seq {seqs} do not grow with arrival")
        by_seq = {k.seq: k for k in kept}
        delivered: dict[str, list[int]] = {}
        for e in self.history:
            if not isinstance(e, ev.SignalDelivered):
                continue
            k = by_seq.get(e.seq)
            if k is None or k.signal_id != e.signal_id or k.name != e.signal:
                self.fail(12, f"{e.describe()} (seq {e.seq}): the store holds no such signal")
                continue
            seen = delivered.setdefault(e.signal, [])
            if e.seq in seen:
                self.fail(12, f"signal {e.signal!r} id {e.signal_id!r} was delivered again "
                              f"(to {e.step!r})")
            seen.append(e.seq)
        for name, seen in delivered.items():
            arrived = [k.seq for k in kept if k.name == name]
            if seen != arrived[: len(seen)]:
                self.fail(12, f"signals {name!r} were delivered as seq {seen}, but they "
                              f"arrived as seq {arrived}: each in arrival order, none passed "
                              "over")
        marks = dict(run.signal_marks)
        want = {name: seen[-1] for name, seen in delivered.items()}
        if marks != want:
            self.fail(12, f"the record's signal marks are {marks}; the deliveries say {want}")
        stored_ids = {k.signal_id for k in kept}
        sent_ids = {x.signal_id for x in run.sent if x.outcome == "stored"}
        for sid in sorted(stored_ids - sent_ids):
            self.fail(12, f"the store holds signal id {sid!r}, which no accepted signal() sent")
        for sid in sorted(sent_ids - stored_ids):
            self.fail(12, f"signal id {sid!r} was accepted, but the store does not hold it")
        for s in self.spec.steps:
            if s.wait is None or s.wait.signal is None:
                continue
            pairs = self._deliveries(s)
            calls = self.fwd[s.name]
            if len(calls) != len(pairs):
                self.fail(12, f"wait {s.name!r}: {len(pairs)} signals delivered, but its "
                              f"handler ran {len(calls)} times: once per delivery")

    def i13_waits_end(self) -> None:
        run, history = self.run, self.history
        eps = 1e-6
        for s in self.spec.steps:
            w = s.wait
            if w is None:
                continue
            marks: dict[str, int] = {}
            started: ev.WaitStarted | None = None
            for n, e in enumerate(history):
                if isinstance(e, ev.SignalDelivered):
                    marks[e.signal] = e.seq
                if e.step != s.name:
                    continue
                if isinstance(e, ev.WaitStarted):
                    started = e
                elif isinstance(e, ev.WaitExpired) and started is not None:
                    self._expired_well(s, e, started, marks, history[n + 1:])
                    started = None
                elif isinstance(e, ev.SignalDelivered) and started is not None:
                    if w.signal is None or e.signal != w.signal:
                        self.fail(13, f"{e.describe()}, but {s.name!r} waits for "
                                      f"{w.signal!r}")
                    if started.until is not None and e.at > started.until + eps:
                        # Resumed late (a worker's poll), it is still delivered if it
                        # was stored by the time the wait ran out.
                        kept = next((k for k in run.kept if k.signal_id == e.signal_id
                                     and k.name == e.signal), None)
                        if kept is None or kept.at > started.until + eps:
                            came = "" if kept is None else (
                                f" (it came at {kept.at - run.started_at:g}s)")
                            self.fail(13, f"{e.describe()} at {e.at - run.started_at:g}s, "
                                          "after its time ran out at "
                                          f"{started.until - run.started_at:g}s{came}")
                    started = None
                elif isinstance(e, ev.StepStarted) and started is not None:
                    if w.signal is not None:
                        self.fail(13, f"the handler of {s.name!r} ran with no signal delivered")
                    elif started.until is not None and e.at < started.until - eps:
                        self.fail(13, f"timer {s.name!r} fired at {e.at - run.started_at:g}s, "
                                      f"before its time ({started.until - run.started_at:g}s)")
                    started = None
            for e, call in self._deliveries(s):
                sent = next((x for x in run.sent
                             if x.signal_id == e.signal_id and x.outcome == "stored"), None)
                if call is None or sent is None or w.payload is None:
                    continue
                if type(sent.payload) is w.payload and call.payload != sent.payload:
                    self.fail(13, f"the handler of {s.name!r} was handed {call.payload!r}; "
                                  f"signal {e.signal_id!r} carried {sent.payload!r}")
        error = run.result.error
        reason = error.reason if isinstance(error, CompensationError) else error
        if isinstance(reason, WaitTimedOut) and self.expired.get(reason.step) not in (
            "compensate", "fail"
        ):
            self.fail(13, f"the saga ended on {reason!r}, but no wait {reason.step!r} timed "
                          "out to compensate or fail")

    def _expired_well(self, s: StepSpec, e: ev.WaitExpired, started: ev.WaitStarted,
                      marks: dict[str, int], rest: Sequence[ev.LifecycleEvent]) -> None:
        run, w = self.run, s.wait
        assert w is not None
        t0 = run.started_at
        if started.until is not None and e.at < started.until - 1e-6:
            self.fail(13, f"{e.describe()} at {e.at - t0:g}s, before its time "
                          f"({started.until - t0:g}s)")
        if e.on_timeout != w.on_timeout.value:
            self.fail(13, f"{e.describe()}: it declares on_timeout={w.on_timeout.value!r}")
        if w.signal is not None and started.until is not None:
            in_time = [k for k in run.kept if k.name == w.signal and k.at < started.until
                       and k.seq > marks.get(w.signal, 0)]
            if in_time:
                k = in_time[0]
                self.fail(13, f"wait {s.name!r} timed out at {e.at - t0:g}s, though signal "
                              f"{k.name!r} id {k.signal_id!r} had arrived in time, at "
                              f"{k.at - t0:g}s (its time ran out at {started.until - t0:g}s)")
        if not run.complete:
            return
        error = run.result.error
        reason = error.reason if isinstance(error, CompensationError) else error
        if w.on_timeout.value == "continue":
            if self.stop is not None and self.stop.name == s.name:
                self.fail(13, f"wait {s.name!r} timed out and declares on_timeout='continue', "
                              "yet the saga stopped there")
            return
        if not (isinstance(reason, WaitTimedOut) and reason.step == s.name):
            self.fail(13, f"wait {s.name!r} timed out ({w.on_timeout.value}); the saga's "
                          f"error is {error!r}, not its WaitTimedOut")
        if w.on_timeout.value == "fail":
            undone = [x for x in rest if isinstance(x, ev.CompensationStarted)]
            if run.result.status is not SagaStatus.FAILED or undone:
                self.fail(13, f"wait {s.name!r} timed out and declares on_timeout='fail': "
                              f"expected FAILED with nothing compensated; seen "
                              f"{run.result.status.value}, compensated "
                              f"{', '.join(str(x.step) for x in undone) or 'nothing'}")

    def i14_rejection(self) -> None:
        run = self.run
        rejecting = [c for c in run.calls if c.direction is FORWARD and c.rejected]
        told = [e for e in self.history if isinstance(e, ev.StepRejected)]
        # sorted: members of one batch that reject together settle in any order
        if sorted((c.record_name, c.attempt) for c in rejecting) != sorted(
            (e.step, e.attempt) for e in told
        ):
            self.fail(14, "the calls that rejected the saga ("
                          + (", ".join(f"{c.record_name} #{c.attempt}" for c in rejecting)
                             or "none")
                          + ") are not the StepRejected events ("
                          + (", ".join(f"{e.step} #{e.attempt}" for e in told) or "none") + ")")
        for s in self.spec.steps:
            if s.wait is None or s.wait.signal is None:
                continue
            for e, call in self._deliveries(s):
                sent = next((x for x in run.sent if x.signal_id == e.signal_id), None)
                if sent is None or not sent.rejects or call is None:
                    continue
                if call.injected.fault is None and not call.rejected:
                    what = "accepted it" if call.ok else f"raised {error_text(call.error)}"
                    self.fail(14, f"the handler of {s.name!r} was handed "
                                  f"{_short.repr(call.payload)}, a payload it must reject "
                                  f"(drawn from rejections=), and {what}")
        if not rejecting or not run.complete:
            return
        c = rejecting[-1]
        error = run.result.error
        reason = error.reason if isinstance(error, CompensationError) else error
        unit = self.unit(c.record_name)
        first = next((e for e in self.history if isinstance(e, (ev.StepFailed, ev.StepRejected))
                      and e.step is not None and self.unit(e.step) == unit), None)
        if unit != c.record_name and first is not None and first.step != c.record_name:
            return  # its group had failed already: that failure is the saga's outcome
        if not (isinstance(reason, SagaRejected) and reason.step == c.record_name):
            self.fail(14, f"{c.record_name!r} rejected the saga, but its outcome is {error!r}, "
                          f"not SagaRejected at {c.record_name!r}")
        elif reason.reason != getattr(c.error, "reason", reason.reason):
            self.fail(14, f"{c.step!r} rejected with {c.error!r}; the outcome says "
                          f"{reason.reason!r}")
        status = run.result.status
        sr = run.result.step(c.record_name)
        if sr.status is not StepStatus.REJECTED:
            self.fail(14, f"{c.step!r} rejected the saga but its status is {sr.status.value}")
        if self.stop is None or self.stop.name != c.step:
            return
        if self.stop.kind is StepKind.RETRIABLE or self.stopped_at_unknown_pivot:
            if status is not SagaStatus.FAILED or self.seen_undo():
                self.fail(14, f"{c.step!r} rejected after the pivot: expected FAILED with "
                              f"nothing compensated; seen {status.value}, compensated "
                              f"{', '.join(self.seen_undo()) or 'nothing'}")
            return
        expected = set(self.expected_undo())
        undone = {self.unit_step(x.step or "") for x in self.history
                  if isinstance(x, ev.CompensationCompleted)}
        failed = {self.unit_step(x.step or "") for x in self.history
                  if isinstance(x, ev.CompensationFailed)}
        if undone | failed != expected:
            self.fail(14, f"{c.step!r} rejected the saga: expected to compensate "
                          f"{', '.join(sorted(expected)) or 'nothing'}; compensated "
                          f"{', '.join(sorted(map(str, undone | failed))) or 'nothing'}")
        want = SagaStatus.FAILED if failed else SagaStatus.COMPENSATED
        if status is not want:
            self.fail(14, f"{c.step!r} rejected the saga and "
                          + ("a compensation failed" if failed else "every compensation "
                             "succeeded") + f": expected {want.value}, seen {status.value}")

    def i15_refusals(self) -> None:
        stored: set[str] = set()
        for x in self.run.sent:
            what = f"signal {x.name!r} id {x.signal_id!r} ({x.why})"
            if x.outcome == "refused":
                if x.kept_after != x.kept_before:
                    self.fail(15, f"{what} was refused, yet the store went from "
                                  f"{x.kept_before} to {x.kept_after} signals")
                if x.fits and not x.finished:
                    self.fail(15, f"{what} was refused though the saga had not finished and "
                                  f"its payload {_short.repr(x.payload)} fits: {x.error}")
                continue
            if not x.fits:
                self.fail(15, f"{what} carried a payload that does not fit, yet was "
                              f"{x.outcome}, not refused")
            if x.finished and not (x.outcome == "ignored" and x.signal_id in stored):
                self.fail(15, f"{what} went to a finished saga, yet was {x.outcome}, "
                              "not refused (only a duplicate of a stored one is ignored)")
            if x.outcome == "stored":
                if x.signal_id in stored:
                    self.fail(15, f"{what}: a second signal with that id was stored")
                if x.kept_after != x.kept_before + 1:
                    self.fail(15, f"{what} was stored, but the store went from "
                                  f"{x.kept_before} to {x.kept_after} signals")
                stored.add(x.signal_id)
            elif x.outcome == "ignored" and x.signal_id not in stored:
                self.fail(15, f"{what} was ignored as a duplicate, but no signal with its id "
                              "was stored before")

    def i16_waiting(self) -> None:
        run = self.run
        for p in run.parks:
            s = self.spec.step(p.step)
            where = f"parked at {p.step!r} at {p.at - run.started_at:g}s"
            if s.wait is None:
                self.fail(16, f"{where}, which is not a wait")
                continue
            if p.status is not SagaStatus.RUNNING or p.step_status is not StepStatus.WAITING:
                self.fail(16, f"{where}: the saga is {p.status.value} and its step "
                              f"{p.step_status.value}; expected RUNNING and WAITING")
            if p.state != p.step:
                self.fail(16, f"{where}: its machine is in state {p.state!r}")
            want = "" if s.wait.signal is None else s.wait.signal
            if p.waiting != want:
                self.fail(16, f"{where}: it waits for {p.waiting!r}, not {want!r}")
            started = [e for e in self.history if isinstance(e, ev.WaitStarted)
                       and e.step == p.step and e.at <= p.at]
            if not started:
                self.fail(16, f"{where}, with no WaitStarted")
                continue
            wake = started[-1].until
            if s.kind is not StepKind.RETRIABLE and run.deadline_at is not None:
                wake = run.deadline_at if wake is None else min(wake, run.deadline_at)
            if p.wake_at != wake and not (
                p.wake_at is not None and wake is not None
                and math.isclose(p.wake_at, wake, rel_tol=0.0, abs_tol=1e-6)
            ):
                self.fail(16, f"{where}: it wakes at {p.wake_at}, not at its time {wake}")


# -- formatting -----------------------------------------------------------------------


def _block_records(checker: _Checker) -> dict[str, list[str]]:
    """Each parallel group's / fan-out's unit name -> the records of its calls."""
    out: dict[str, list[str]] = {}
    for s in checker.spec.steps:
        if s.group is not None or s.each is not None:
            out.setdefault(checker.spec.state_of(s.index), []).extend(checker.block_records(s))
    return out


def _after_timeout(e: ev.WaitExpired, rest: Sequence[ev.LifecycleEvent],
                   after: Callable[[str], str]) -> str:
    """Where a wait's timing out leads, as its ``on_timeout`` says (the compensation
    chain starts at the first compensation that follows)."""
    if e.on_timeout == "continue":
        return after(e.step or "")
    if e.on_timeout == "fail":
        return FAILED
    for x in rest:
        if isinstance(x, (ev.CompensationStarted, ev.CompensationFailed)) and x.step:
            return compensation_state(x.step)
    return COMPENSATED


def _policy(p: Retry) -> str:
    return (f"Retry(attempts={p.attempts}, backoff={p.backoff:g}, multiplier={p.multiplier:g}, "
            f"max_delay={p.max_delay:g}, jitter={p.jitter:g})")


def _edges(edges: Iterable[tuple[str, str, str]]) -> str:
    return " > ".join(f"{src} -{trigger}-> {dest}" for src, trigger, dest in edges) or "none"


def _floats(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _history(run: Trace) -> str:
    t0 = run.started_at
    return "\n".join(f"  {e.at - t0:>8g}  {e.describe()}" for e in run.result.history)


def _report(run: Trace, violations: Sequence[Violation]) -> str:
    n = len({v.number for v in violations})
    noun = "invariant" if n == 1 else "invariants"
    lines = [f"saga {run.spec.name!r} broke {n} {noun} (run {run.saga_id!r}, driver "
             f"{run.driver!r})"]
    if run.plan is not None:
        lines.append(f"plan: {run.plan!r}")
        lines.append(f"      {run.plan.describe()}")
    err = f" ({run.result.error})" if run.result.error is not None else ""
    lines.append(f"status: {run.result.status.value}{err}")
    if run.deadline_fired is not None:
        lines.append(f"the deadline was made to pass at {run.deadline_fired[0]!r}")
    lines.append("")
    lines.extend(str(v) for v in violations)
    lines += ["", "calls (t in virtual seconds from the start):", format_trace(run)]
    if run.sent:
        lines += ["", "signals sent:", format_signals(run)]
    lines += ["", "lifecycle history:", _history(run)]
    return "\n".join(lines)


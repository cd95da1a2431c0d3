"""check_invariants: each invariant catches its own kind of broken run, and says so clearly.

The broken runs are made by tampering with sound ones (the engine makes none of these
mistakes), so every invariant is shown to bite.
"""

from __future__ import annotations

import attrs
import pytest
from testing_sagas import Shop, reset_world, world

from sagaflow import Retry, SagaStatus, events, saga, step
from sagaflow.engine import interrupt
from sagaflow.testing import (
    INVARIANTS,
    FailurePlan,
    Fault,
    Harness,
    InvariantViolation,
    Outcome,
    PlanRun,
    SagaCase,
    check_invariants,
    run_plan,
)


def shop_run(plan: FailurePlan, quantity: int = 1) -> PlanRun:
    run = run_plan(SagaCase(Shop("ann", quantity), reset_world, world), plan)
    run.check()
    return run


def tampered(run: PlanRun, *, history=None, status=None, **changes) -> PlanRun:
    result = run.result
    if history is not None:
        result = attrs.evolve(result, history=tuple(history))
    if status is not None:
        result = attrs.evolve(result, status=status)
    return attrs.evolve(run, result=result, **changes)


def broken(run: PlanRun, number: int) -> str:
    with pytest.raises(InvariantViolation) as caught:
        check_invariants(run, only=[number])
    assert caught.value.numbers == [number]
    text = str(caught.value)
    assert f"[{number}] {INVARIANTS[number]}:" in text
    assert "calls (t in virtual seconds from the start):" in text
    assert "lifecycle history:" in text
    return text


def test_nineteen_invariants_are_named() -> None:
    assert sorted(INVARIANTS) == list(range(1, 20))


def test_1_a_status_the_outcomes_do_not_imply() -> None:
    run = shop_run(FailurePlan(step="ship"))
    text = broken(tampered(run, status=SagaStatus.COMPLETED, final_state="completed"), 1)
    assert "expected COMPENSATED ('ship' stopped the saga and every compensation needed " \
           "succeeded); seen COMPLETED" in text
    assert "is over but its status is RUNNING" in broken(
        tampered(run, status=SagaStatus.RUNNING), 1)


def test_1_a_run_that_goes_past_the_plan_s_failure() -> None:
    run = shop_run(FailurePlan())
    text = broken(attrs.evolve(run, plan=FailurePlan(step="charge")), 1)
    assert "the plan fails 'charge' for good, but every step completed" in text


def test_2_a_quiet_plan_that_compensates() -> None:
    run = shop_run(FailurePlan(step="ship"))
    text = broken(attrs.evolve(run, plan=FailurePlan(transient={"reserve": 1})), 2)
    assert "expected COMPLETED with no compensation; seen COMPENSATED, compensated: " \
           "charge, reserve" in text


def test_3_compensations_out_of_order() -> None:
    run = shop_run(FailurePlan(step="ship"))
    history = list(run.result.history)
    starts = [i for i, e in enumerate(history) if isinstance(e, events.CompensationStarted)]
    a, b = starts
    block_a, block_b = history[a:a + 2], history[b:b + 2]
    history[a:a + 2], history[b:b + 2] = block_b, block_a
    text = broken(tampered(run, history=history), 3)
    assert "expected: charge > reserve\n    seen:     reserve > charge" in text


def test_4_a_compensation_that_succeeds_twice_or_undoes_a_readonly_step() -> None:
    run = shop_run(FailurePlan(step="ship"))
    last = run.calls[-1]
    twice = attrs.evolve(last, attempt=2, seq=last.seq + 1)
    text = broken(attrs.evolve(run, calls=(*run.calls, twice)), 4)
    assert "the compensation of 'reserve' succeeded 2 times (attempts 1, 2)" in text
    check = next(c for c in run.calls if c.step == "check")
    undo_check = attrs.evolve(check, direction=last.direction)
    text = broken(attrs.evolve(run, calls=(*run.calls, undo_check)), 4)
    assert "'check' was compensated, but it is readonly: there is nothing to undo" in text


def test_5_retries_beyond_the_budget_or_off_the_policy() -> None:
    run = shop_run(FailurePlan(step="charge"))
    charges = [c for c in run.calls if c.label == "charge"]
    extra = attrs.evolve(charges[-1], attempt=3)
    text = broken(attrs.evolve(run, calls=(*run.calls, extra)), 5)
    assert "charge was tried 3 times; its policy allows 2" in text
    history = [
        attrs.evolve(e, delay=9.0) if isinstance(e, events.StepRetrying) else e
        for e in run.result.history
    ]
    text = broken(tampered(run, history=history), 5)
    assert "charge: the delay before retry 1 is 9s; the policy gives 1s" in text


def test_5_giving_up_with_retries_left() -> None:
    run = shop_run(FailurePlan(step="charge"))
    calls = tuple(c for c in run.calls if not (c.label == "charge" and c.attempt == 2))
    text = broken(attrs.evolve(run, calls=calls), 5)
    assert "charge gave up after attempt 1 of 2 though its error" in text


def test_6_compensating_after_the_pivot() -> None:
    run = shop_run(FailurePlan(step="notify"))
    assert run.status is SagaStatus.FAILED
    history = list(run.result.history)
    history.insert(-1, events.CompensationStarted(run.saga_id, "shop", 0.0, "charge", 1))
    text = broken(tampered(run, history=history), 6)
    assert "'ship' completed, yet the saga compensated charge" in text


def test_7_a_state_change_the_machine_does_not_have() -> None:
    run = shop_run(FailurePlan())
    history = [e for e in run.result.history if not (
        isinstance(e, events.StepCompleted) and e.step == "check")]
    text = broken(tampered(run, history=history), 7)
    assert "StepSkipped 'approve' happened in state 'check', not 'approve'" in text
    assert "path so far: not_started > reserve > check" in text


def test_7_a_recorded_path_the_history_did_not_take() -> None:
    run = shop_run(FailurePlan(step="ship"))
    path = list(run.result.path)
    assert path[0] == ("not_started", "start", "reserve")
    dropped = tuple(path[1:])  # the engine "forgot" the start
    text = broken(attrs.evolve(run, result=attrs.evolve(run.result, path=dropped)), 7)
    assert "the path the run recorded is not the one its history took" in text
    assert "history:  not_started -start-> reserve > " in text


def test_8_an_unclosed_attempt_and_miscounted_history() -> None:
    run = shop_run(FailurePlan())
    history = [e for e in run.result.history if not (
        isinstance(e, events.StepCompleted) and e.step == "notify")]
    text = broken(tampered(run, history=history), 8)
    assert "StepStarted 'notify' was still open" in text or "while 'notify'" in text
    text = broken(tampered(run, history=run.result.history[:-1]), 8)
    assert "expected one final SagaCompleted, last; seen none" in text


def test_9_idempotency_keys_that_change_between_attempts() -> None:
    run = shop_run(FailurePlan(transient={"reserve": 1}))
    calls = tuple(
        attrs.evolve(c, key=c.key + "-2") if c.label == "reserve" and c.attempt == 2 else c
        for c in run.calls
    )
    text = broken(attrs.evolve(run, calls=calls), 9)
    assert f"reserve forward: keys ['{run.saga_id}:reserve:forward', " in text
    assert "expected " in text and "on every attempt" in text


def test_only_and_user_invariants_are_numbered_after_the_builtin_ones() -> None:
    run = shop_run(FailurePlan())

    def never(_: PlanRun) -> bool:
        return False

    with pytest.raises(InvariantViolation) as caught:
        check_invariants(run, extra=[never])
    assert caught.value.numbers == [20] and "[20] " in str(caught.value)
    check_invariants(run, extra=[never], only=[1, 2, 3])


@saga(name="patient", deadline=60.0)
class Patient:
    @step(retry=Retry(attempts=3, backoff=5.0))
    def a(self, ctx) -> None: ...

    @a.compensate
    def undo_a(self, ctx) -> None: ...

    @step(readonly=True)
    def b(self, ctx) -> None: ...


def test_a_deadline_overtaking_a_waiting_retry_fails_the_step() -> None:
    """The state machine found this one: a step waiting to retry when the deadline
    passed (a slow store, a restart after the deadline) was left RUNNING; the engine now
    fails it, and the run keeps every invariant."""
    h = Harness(Patient(), driver="stateful")  # driven by hand, call by call
    h.perform(h.next_call(), Outcome(Fault.TIMES_OUT))  # attempt 1 times out: retry in ~5s
    h.clock.advance(100)  # the process stalls past the deadline while the retry waits
    while (call := h.next_call()) is not None:
        h.perform(call)
    run = h.outcome_run()
    assert run.status is SagaStatus.COMPENSATED
    assert run.result.step("a").status.value != "RUNNING"
    check_invariants(run)


def test_a_cancellation_during_a_backoff_fails_the_waiting_step() -> None:
    """Found next to the one above: cancelling a run while a step waits to retry (the
    async driver's backoff sleep, an operator's cancel) left the step RUNNING; the
    engine now fails it, and the run keeps every invariant."""
    h = Harness(Patient(), driver="stateful")
    h.perform(h.next_call(), Outcome(Fault.RAISES))  # attempt 1 fails: retry in ~5s
    interrupt(h.spec, h.record, None, h.clock.now())  # the task is cancelled meanwhile
    while (call := h.next_call()) is not None:
        h.perform(call)
    run = h.outcome_run()
    assert run.status is SagaStatus.COMPENSATED
    assert run.result.step("a").status.value != "RUNNING"
    check_invariants(run)

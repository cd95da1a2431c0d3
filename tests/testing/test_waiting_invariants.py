"""The invariants on waits and signals (12-16, and what 1, 7, 8 and 10 say of waits):
each catches its own kind of broken run, made by tampering with a sound one."""

from __future__ import annotations

import attrs
import pytest
from testing_sagas import reset_world, world
from waiting_sagas import Decision, OrderApproval

from sagaflow import SagaStatus, events
from sagaflow.errors import SagaRejected
from sagaflow.records import Signal, StepStatus
from sagaflow.testing import (
    INVARIANTS,
    Arrival,
    FailurePlan,
    InvariantViolation,
    PlanRun,
    SagaCase,
    SignalPlan,
    check_invariants,
    run_plan,
)

YES = Decision(True, "ann")
NO = Decision(False, "bob")
IN_TIME = FailurePlan(signals=[SignalPlan("approval", YES, twice=True, another=True),
                               SignalPlan("second_opinion", arrives=Arrival.NEVER),
                               SignalPlan("arrival")])


def order_run(plan: FailurePlan) -> PlanRun:
    run = run_plan(SagaCase(OrderApproval(), reset_world, world), plan)
    run.check()
    return run


def tampered(run: PlanRun, *, history=None, status=None, error=None, **changes) -> PlanRun:
    result = run.result
    if history is not None:
        result = attrs.evolve(result, history=tuple(history))
    if status is not None:
        result = attrs.evolve(result, status=status)
    if error is not None:
        result = attrs.evolve(result, error=error)
    return attrs.evolve(run, result=result, **changes)


def broken(run: PlanRun, number: int) -> str:
    with pytest.raises(InvariantViolation) as caught:
        check_invariants(run, only=[number])
    assert caught.value.numbers == [number]
    text = str(caught.value)
    assert f"[{number}] {INVARIANTS[number]}:" in text
    assert "signals sent:" in text or not run.sent
    return text


def replaced(run: PlanRun, kind: type, **changes) -> list:
    return [attrs.evolve(e, **changes) if isinstance(e, kind) else e for e in run.result.history]


def test_12_a_signal_stored_twice_delivered_twice_or_passed_over() -> None:
    run = order_run(IN_TIME)
    assert "the store holds 2 signals with id 'approval:1'" in broken(
        attrs.evolve(run, kept=(*run.kept, attrs.evolve(run.kept[0], seq=99))), 12)
    history = list(run.result.history)
    first = next(i for i, e in enumerate(history) if isinstance(e, events.SignalDelivered))
    again = attrs.evolve(history[first], step="second_opinion")
    text = broken(tampered(run, history=[*history[:first + 1], again, *history[first + 1:]]), 12)
    assert "signal 'decision' id 'approval:1' was delivered again (to 'second_opinion')" in text
    # the second opinion took the third signal, passing over the second one
    skip = replaced(run, events.SignalDelivered)
    for i, e in enumerate(skip):
        if isinstance(e, events.SignalDelivered) and e.step == "second_opinion":
            skip[i] = attrs.evolve(e, seq=run.kept[2].seq, signal_id=run.kept[2].signal_id)
    run3 = attrs.evolve(run, kept=(*run.kept[:2], attrs.evolve(run.kept[2], name="decision")))
    assert "none passed over" in broken(tampered(run3, history=skip), 12)
    assert "the record's signal marks are {}" in broken(attrs.evolve(run, signal_marks=()), 12)


def test_12_a_handler_run_twice_for_one_delivery() -> None:
    run = order_run(IN_TIME)
    handler = next(c for c in run.calls if c.step == "approval")
    text = broken(attrs.evolve(run, calls=(*run.calls, attrs.evolve(handler, attempt=2))), 12)
    assert "wait 'approval': 1 signals delivered, but its handler ran 2 times" in text


def test_12_a_stored_signal_nobody_sent() -> None:
    run = order_run(IN_TIME)
    ghost = Signal(run.saga_id, 99, "decision", "ghost", "{}", run.started_at)
    assert "the store holds signal id 'ghost', which no accepted signal() sent" in broken(
        attrs.evolve(run, kept=(*run.kept, ghost)), 12)


def test_13_a_wait_that_times_out_though_its_signal_had_come() -> None:
    run = order_run(FailurePlan(signals=[SignalPlan("approval", arrives=Arrival.NEVER)]))
    came = Signal(run.saga_id, 1, "decision", "in-time", "{}", run.started_at + 60)
    text = broken(attrs.evolve(run, kept=(came,)), 13)
    assert "wait 'approval' timed out at 259200s, though signal 'decision' id 'in-time' " \
           "had arrived in time, at 60s (its time ran out at 259200s)" in text
    text = broken(tampered(run, history=replaced(run, events.WaitExpired,
                                                 on_timeout="continue")), 13)
    assert "it declares on_timeout='compensate'" in text


def test_13_a_handler_handed_another_payload_or_run_with_no_signal() -> None:
    run = order_run(IN_TIME)
    calls = tuple(attrs.evolve(c, payload=NO) if c.step == "approval" else c
                  for c in run.calls)
    assert "the handler of 'approval' was handed Decision(approved=False, by='bob', " \
           "reason=''); signal 'approval:1' carried Decision(approved=True, by='ann', " \
           "reason='')" in broken(attrs.evolve(run, calls=calls), 13)
    history = [e for e in run.result.history
               if not (isinstance(e, events.SignalDelivered) and e.step == "approval")]
    assert "the handler of 'approval' ran with no signal delivered" in broken(
        tampered(run, history=history), 13)


def test_13_a_timer_that_fires_early() -> None:
    run = order_run(IN_TIME)
    history = [attrs.evolve(e, until=e.until + 10) if isinstance(e, events.WaitStarted)
               and e.step == "cooling_off" else e for e in run.result.history]
    assert "timer 'cooling_off' fired at " in broken(tampered(run, history=history), 13)


def test_14_a_rejection_with_another_outcome_or_the_wrong_compensations() -> None:
    run = order_run(FailurePlan(signals=[SignalPlan("approval", NO)]))
    assert run.status is SagaStatus.COMPENSATED
    text = broken(tampered(run, error=SagaRejected("no", "reserve")), 14)
    assert "'approval' rejected the saga, but its outcome is" in text
    text = broken(tampered(run, status=SagaStatus.FAILED), 14)
    assert "every compensation succeeded: expected COMPENSATED, seen FAILED" in text
    history = [e for e in run.result.history if not isinstance(
        e, (events.CompensationStarted, events.CompensationCompleted))]
    assert "expected to compensate reserve; compensated nothing" in broken(
        tampered(run, history=history), 14)
    assert "the calls that rejected the saga (approval #1) are not the StepRejected events " \
           "(none)" in broken(tampered(run, history=[
               e for e in run.result.history if not isinstance(e, events.StepRejected)]), 14)


def test_14_a_payload_that_must_be_rejected_is_accepted() -> None:
    run = order_run(IN_TIME)
    sent = tuple(attrs.evolve(s, rejects=True) for s in run.sent)
    text = broken(attrs.evolve(run, sent=sent), 14)
    assert "the handler of 'approval' was handed Decision(approved=True, by='ann', " \
           "reason=''), a payload it must reject (drawn from rejections=), and accepted it" in text


def test_15_refusals_that_store_or_signals_that_should_have_been_refused() -> None:
    run = order_run(FailurePlan(signals=[SignalPlan("approval", YES, refused=True),
                                         SignalPlan("arrival")]))
    unfit, first = run.sent[0], run.sent[1]
    assert unfit.outcome == "refused" and first.outcome == "stored"
    cases = [
        (attrs.evolve(unfit, kept_after=1), "was refused, yet the store went from 0 to 1"),
        (attrs.evolve(unfit, fits=True), "was refused though the saga had not finished"),
        (attrs.evolve(first, fits=False), "carried a payload that does not fit, yet was "
                                          "stored, not refused"),
        (attrs.evolve(first, finished=True), "went to a finished saga, yet was stored"),
        (attrs.evolve(first, outcome="ignored"), "was ignored as a duplicate, but no signal "
                                                 "with its id was stored before"),
    ]
    for changed, message in cases:
        sent = tuple(changed if s.seq == changed.seq else s for s in run.sent)
        assert message in broken(attrs.evolve(run, sent=sent), 15)
    stored_twice = (*run.sent, attrs.evolve(first, seq=9, kept_before=3, kept_after=4))
    assert "a second signal with that id was stored" in broken(
        attrs.evolve(run, sent=stored_twice), 15)


def test_16_a_parked_saga_that_is_not_waiting() -> None:
    run = order_run(IN_TIME)
    park = run.parks[0]
    cases = [
        (attrs.evolve(park, step_status=StepStatus.RUNNING),
         "the saga is RUNNING and its step RUNNING; expected RUNNING and WAITING"),
        (attrs.evolve(park, state="reserve"), "its machine is in state 'reserve'"),
        (attrs.evolve(park, waiting="delivered"), "it waits for 'delivered', not 'decision'"),
        (attrs.evolve(park, wake_at=park.wake_at + 1), "it wakes at"),
        (attrs.evolve(park, step="charge"), "parked at 'charge' at 0s, which is not a wait"),
    ]
    for changed, message in cases:
        assert message in broken(attrs.evolve(run, parks=(changed, *run.parks[1:])), 16)


def test_7_and_8_a_timeout_that_leads_elsewhere_or_leaves_no_trace() -> None:
    run = order_run(FailurePlan(signals=[SignalPlan("approval", arrives=Arrival.NEVER)]))
    text = broken(tampered(run, history=replaced(run, events.WaitExpired,
                                                 on_timeout="continue")), 7)
    assert "'approval' --timeout--> 'second_opinion' is not a transition" in text
    history = [e for e in run.result.history if not isinstance(e, events.WaitExpired)]
    assert "'approval' is EXPIRED but its events are" in broken(
        tampered(run, history=history), 8)


def test_1_a_wait_that_fails_for_an_operator_must_end_failed() -> None:
    run = order_run(FailurePlan(signals=[SignalPlan("approval", YES)]))
    assert run.status is SagaStatus.FAILED  # the delivery never came: on_timeout='fail'
    text = broken(tampered(run, status=SagaStatus.COMPENSATED, final_state="compensated"), 1)
    assert "expected FAILED (retriable step 'arrival' (after the pivot) failed for good)" in text

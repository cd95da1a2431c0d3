"""Failure plans for waits: what each wait receives, run on every driver and on SQLite.

Each case runs the same plan through the engine driver, the real sync and async drivers
on a memory store, and the real drivers on an SQLite file (the durable path: signals
stored in the database, the parked saga's row resumed), and every run keeps every
invariant.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from testing_sagas import PAYMENTS, STOCK, Shop
from waiting_sagas import DAY, DECISIONS, REFUSALS, Decision, OrderApproval, order_cases

from sagaflow import SagaRejected, SagaStatus, StepStatus, WaitTimedOut, events, spec_of
from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.testing import (
    Arrival,
    FailurePlan,
    Fault,
    PlanRun,
    SagaCase,
    SignalPlan,
    failure_plans,
    run_plan,
)
from sagaflow.testing.plan import SignalPlan as PlanModuleSignalPlan

YES = Decision(True, "ann")
NO = Decision(False, "bob", "too much")
RUNS = ["engine", "sync", "async", "sync+sqlite", "async+sqlite"]


@pytest.fixture(params=RUNS)
def run(request: pytest.FixtureRequest, tmp_path) -> Iterator:
    """Run a plan on one driver (and store); the run must keep every invariant."""
    driver, _, kind = request.param.partition("+")
    store = SQLiteStore(tmp_path / "plans.db") if kind == "sqlite" else None

    def go(plan: FailurePlan, amount: int = 500) -> PlanRun:
        from testing_sagas import reset_world, world

        case = SagaCase(OrderApproval("o-1", amount), reset_world, world)
        return run_plan(case, plan, driver=driver, store=store).check()  # type: ignore[arg-type]

    yield go
    if store is not None:
        store.close()


def signals(*plans: SignalPlan) -> FailurePlan:
    return FailurePlan(signals=plans)


def kinds(run: PlanRun) -> list[str]:
    return [type(e).__name__ for e in run.result.history]


def outcomes(run: PlanRun) -> list[tuple[str, str]]:
    return [(s.signal_id, s.outcome) for s in run.sent]


ALL_IN_TIME = (SignalPlan("approval", YES), SignalPlan("second_opinion", YES),
               SignalPlan("arrival"))


def test_signals_that_come_while_their_waits_wait(run) -> None:
    done = run(signals(*ALL_IN_TIME))
    assert done.status is SagaStatus.COMPLETED
    assert (done.result.data.approved_by, done.result.data.seconded_by) == ("ann", "ann")
    assert done.result.data.delivered
    # parked at each wait (and the timer), each time RUNNING with the wait's step WAITING
    assert [p.step for p in done.parks] == ["approval", "second_opinion", "cooling_off",
                                            "arrival"]
    assert {(p.status, p.step_status) for p in done.parks} == {
        (SagaStatus.RUNNING, StepStatus.WAITING)
    }
    assert outcomes(done) == [("approval:1", "stored"), ("second_opinion:1", "stored"),
                              ("arrival:1", "stored")]
    assert [c.payload for c in done.calls if c.step in ("approval", "second_opinion")] == [
        YES, YES
    ]
    assert dict(done.signal_marks) == {"decision": done.kept[1].seq,
                                       "delivered": done.kept[2].seq}


def test_a_signal_that_comes_early_is_kept_for_its_wait(run) -> None:
    done = run(signals(SignalPlan("approval", YES, arrives=Arrival.EARLY),
                       SignalPlan("arrival")))
    assert done.status is SagaStatus.COMPLETED and done.result.data.approved_by == "ann"
    assert done.sent[0].at == done.started_at  # before the saga's first step
    assert "approval" not in [p.step for p in done.parks]  # it never had to wait
    assert kinds(done)[:6] == ["SagaStarted", "StepStarted", "StepCompleted", "WaitStarted",
                               "SignalDelivered", "StepStarted"]
    # nothing came for the second opinion: it went on when its day was over
    assert done.result.step("second_opinion").status is StepStatus.EXPIRED


def test_a_signal_twice_is_ignored_and_another_is_kept_for_the_next_wait_of_its_name(
    run,
) -> None:
    done = run(signals(SignalPlan("approval", YES, twice=True, another=True),
                       SignalPlan("second_opinion", arrives=Arrival.NEVER),
                       SignalPlan("arrival")))
    assert done.status is SagaStatus.COMPLETED
    # sent once the saga moved on: the same id again is ignored, another one is kept
    assert outcomes(done) == [("approval:1", "stored"), ("approval:1", "ignored"),
                              ("approval:2", "stored"), ("arrival:1", "stored")]
    delivered = [(e.step, e.signal_id) for e in done.result.history
                 if isinstance(e, events.SignalDelivered)]
    assert delivered == [("approval", "approval:1"), ("second_opinion", "approval:2"),
                         ("arrival", "arrival:1")]
    assert done.result.data.seconded_by == "ann"


def test_a_signal_that_never_comes_compensates_on_the_virtual_clock(run) -> None:
    done = run(signals(SignalPlan("approval", arrives=Arrival.NEVER)))
    assert done.status is SagaStatus.COMPENSATED
    assert isinstance(done.result.error, WaitTimedOut)
    assert done.result.step("approval").status is StepStatus.EXPIRED
    assert [c.label for c in done.calls] == ["reserve", "undo reserve"]
    assert done.calls[-1].at - done.started_at == pytest.approx(3 * DAY)
    assert done.before == done.after


def test_a_late_signal_is_refused_once_the_saga_finished_or_left_unconsumed(run) -> None:
    done = run(signals(SignalPlan("approval", YES, arrives=Arrival.LATE)))
    assert done.status is SagaStatus.COMPENSATED
    assert outcomes(done) == [("approval:1", "refused")]
    assert "a finished saga takes no signals" in str(done.sent[0].error)
    assert done.kept == ()

    done = run(signals(SignalPlan("approval", YES),
                       SignalPlan("second_opinion", NO, arrives=Arrival.LATE),
                       SignalPlan("arrival")))
    assert done.status is SagaStatus.COMPLETED  # the second opinion's "no" came too late
    assert done.result.step("second_opinion").status is StepStatus.EXPIRED
    late = next(k for k in done.kept if k.signal_id == "second_opinion:1")
    assert late.seq > dict(done.signal_marks)["decision"]  # kept, never delivered


def test_a_payload_that_must_be_rejected_compensates_what_was_done(run) -> None:
    done = run(signals(SignalPlan("approval", NO, rejects=True)))
    assert done.status is SagaStatus.COMPENSATED
    error = done.result.error
    assert isinstance(error, SagaRejected) and error.step == "approval"
    assert error.reason == "refused by bob: too much"
    assert done.result.step("approval").status is StepStatus.REJECTED
    assert [c.label for c in done.calls] == ["reserve", "approval", "undo reserve"]
    assert STOCK.snapshot() == {} and PAYMENTS.snapshot() == {}


def test_a_step_that_rejects_is_not_retried_and_not_compensated(run) -> None:
    done = run(FailurePlan(step="charge", fault=Fault.REJECTS,
                           signals=[SignalPlan("approval", YES)]))
    assert done.status is SagaStatus.COMPENSATED
    assert isinstance(done.result.error, SagaRejected)
    assert [c.label for c in done.calls if c.step == "charge"] == ["charge"]  # once
    assert [c.label for c in done.calls][-1:] == ["undo reserve"]


def test_after_the_pivot_a_rejection_or_a_timeout_fails_for_an_operator(run) -> None:
    done = run(FailurePlan(step="arrival", fault=Fault.REJECTS,
                           signals=[SignalPlan("approval", YES), SignalPlan("arrival")]))
    assert done.status is SagaStatus.FAILED
    assert isinstance(done.result.error, SagaRejected)
    assert not done.compensation_calls()
    done = run(signals(SignalPlan("approval", YES)))  # nothing is ever delivered
    assert done.status is SagaStatus.FAILED
    assert isinstance(done.result.error, WaitTimedOut) and done.result.error.step == "arrival"
    assert not done.compensation_calls()


def test_a_refused_signal_stores_nothing(run) -> None:
    done = run(signals(SignalPlan("approval", YES, refused=True), SignalPlan("arrival")))
    assert done.status is SagaStatus.COMPLETED
    refused = done.sent[0]
    assert (refused.outcome, refused.kept_before, refused.kept_after) == ("refused", 0, 0)
    assert "its payload does not fit" in str(refused.error)
    assert "approval:unfit" not in {k.signal_id for k in done.kept}


def test_a_wait_whose_condition_is_false_takes_no_signal(run) -> None:
    done = run(signals(SignalPlan("approval", YES, arrives=Arrival.EARLY),
                       SignalPlan("arrival")), amount=50)
    assert done.result.step("approval").status is StepStatus.SKIPPED
    # the early "yes" meant for the skipped approval goes to the next wait of its name
    delivered = [e.step for e in done.result.history if isinstance(e, events.SignalDelivered)]
    assert delivered == ["second_opinion", "arrival"]


def test_the_drivers_agree_call_for_call_on_waits(tmp_path) -> None:
    from testing_sagas import reset_world, world

    plans = [
        signals(*ALL_IN_TIME),
        signals(SignalPlan("approval", YES, arrives=Arrival.EARLY, twice=True, another=True,
                           refused=True), SignalPlan("arrival", arrives=Arrival.LATE)),
        FailurePlan(step="second_opinion", signals=[SignalPlan("approval", YES),
                                                    SignalPlan("second_opinion", NO)]),
        signals(SignalPlan("approval", NO, rejects=True, twice=True)),
    ]
    for n, plan in enumerate(plans):
        runs = []
        for spec in RUNS:
            driver, _, kind = spec.partition("+")
            store = SQLiteStore(tmp_path / f"{n}-{driver}.db") if kind else None
            case = SagaCase(OrderApproval(), reset_world, world)
            runs.append(run_plan(case, plan, driver=driver, saga_id="same",  # type: ignore[arg-type]
                                 store=store).check())
            if store is not None:
                store.close()
        assert len({tuple((c.label, c.attempt, c.reported) for c in r.calls) for r in runs}) == 1
        assert len({tuple(kinds(r)) for r in runs}) == 1, plan
        assert len({tuple(outcomes(r)) for r in runs}) == 1, plan


# -- the plans themselves -------------------------------------------------------------


def test_a_signal_plan_is_a_value_with_a_repr_that_evaluates_back() -> None:
    plan = FailurePlan(step="charge", fault=Fault.REJECTS, signals=[
        SignalPlan("second_opinion", NO, arrives=Arrival.LATE, twice=True),
        SignalPlan("approval", YES, another=True, refused=True),
    ])
    text = repr(plan)
    assert text == (
        "FailurePlan(step='charge', fault=Fault.REJECTS, signals=["
        "SignalPlan('approval', Decision(approved=True, by='ann', reason=''), another=True, "
        "refused=True), SignalPlan('second_opinion', Decision(approved=False, by='bob', "
        "reason='too much'), arrives=Arrival.LATE, twice=True)])"
    )
    assert eval(text) == plan and hash(eval(text)) == hash(plan)
    assert plan.signal_plan("approval") == SignalPlan("approval", YES, another=True,
                                                      refused=True)
    assert plan.signal_plan("arrival") is None
    assert plan.describe() == (
        "charge rejects the saga; its signal comes to approval after a refused one, while "
        "it waits, then another one; its signal comes to second_opinion after its time ran "
        "out, then again (same id)"
    )
    assert SignalPlan is PlanModuleSignalPlan


def test_whether_a_plan_stops_the_saga_counts_its_waits() -> None:
    spec = spec_of(OrderApproval)
    assert FailurePlan().has_permanent_failure(spec)  # no approval comes: compensate
    assert not signals(*ALL_IN_TIME).has_permanent_failure(spec)
    # the second opinion may not come: the saga goes on
    assert not signals(SignalPlan("approval", YES),
                       SignalPlan("arrival")).has_permanent_failure(spec)
    assert signals(SignalPlan("approval", NO, rejects=True), SignalPlan("second_opinion"),
                   SignalPlan("arrival")).has_permanent_failure(spec)
    assert not FailurePlan().has_permanent_failure(spec_of(Shop))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SignalPlan("a", YES, arrives=Arrival.NEVER), "has no payload: drop it"),
        (lambda: SignalPlan("a", arrives=Arrival.NEVER, twice=True, rejects=True),
         "has no twice, rejects: drop them"),
        (lambda: SignalPlan("a", YES, arrives=Arrival.LATE, rejects=True),
         "needs a signal that reaches its wait"),
        (lambda: SignalPlan("a", arrives="never"), "arrives must be an Arrival"),
        (lambda: FailurePlan(signals=[SignalPlan("a"), SignalPlan("a")]),
         "plans wait 'a' twice"),
        (lambda: FailurePlan(signals=["a"]), "signals holds SignalPlan values"),
        (lambda: FailurePlan(step="a", fault=Fault.REJECTS, effect=True),
         "a step that rejects is taken not to have taken effect"),
        (lambda: FailurePlan(transient={"a": 1}, transient_fault=Fault.REJECTS),
         "a rejection is never retried"),
    ],
)
def test_bad_signal_plans_are_refused_with_the_fix(make, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_validate_says_how_a_signal_plan_does_not_fit_the_saga() -> None:
    plan = FailurePlan(step="approval", signals=[
        SignalPlan("charge", YES), SignalPlan("cooling_off"), SignalPlan("nope"),
        SignalPlan("second_opinion"), SignalPlan("arrival", YES),
    ])
    with pytest.raises(ValueError) as caught:
        plan.validate(spec_of(OrderApproval))
    text = str(caught.value)
    assert "step names wait 'approval', whose handler never runs" in text
    assert "a SignalPlan names 'charge', which is a compensatable step, not a wait for a " \
           "signal (waits: 'approval', 'second_opinion', 'arrival')" in text
    assert "'cooling_off', which is a timer" in text
    assert "a SignalPlan names step 'nope', which saga 'order_approval' does not have" in text
    assert "SignalPlan('second_opinion') sends signal 'decision' with no payload, but it " \
           "carries a Decision: give payload=" in text
    assert "SignalPlan('arrival') gives a payload, but signal 'delivered' carries none" in text
    with pytest.raises(ValueError, match="a wait's handler runs with no limit"):
        FailurePlan(step="approval", fault=Fault.TIMES_OUT,
                    signals=[SignalPlan("approval", YES)]).validate(spec_of(OrderApproval))


# -- the strategies -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(plan=failure_plans(OrderApproval, payloads=DECISIONS, rejections=REFUSALS))
def test_drawn_plans_fit_the_saga_and_plan_each_wait_for_a_signal(plan: FailurePlan) -> None:
    plan.validate(spec_of(OrderApproval))
    assert [p.step for p in plan.signals] == ["approval", "arrival", "second_opinion"]
    for p in plan.signals:
        if p.rejects:
            assert isinstance(p.payload, Decision) and not p.payload.approved
    if plan.step in ("approval", "second_opinion", "arrival"):  # the signal waits
        assert plan.signal_plan(plan.step).arrives.delivers  # type: ignore[union-attr, arg-type]
    if plan.fault is Fault.REJECTS:
        assert not plan.effect


def test_drawn_plans_shrink_toward_every_signal_coming_in_time() -> None:
    from random import Random

    from hypothesis import find

    plan = find(failure_plans(OrderApproval),
                lambda p: p.signal_plan("approval").arrives is Arrival.NEVER,  # type: ignore[union-attr]
                settings=settings(database=None), random=Random(0))
    assert plan == signals(SignalPlan("approval", arrives=Arrival.NEVER),
                           SignalPlan("second_opinion", Decision(False, "")),
                           SignalPlan("arrival"))


def test_without_signals_no_wait_receives_anything() -> None:
    from hypothesis import find

    plan = find(failure_plans(OrderApproval, signals=False), lambda p: p.step is not None,
                settings=settings(database=None))
    assert plan.signals == () and plan.step == "reserve"


def test_payload_strategies_must_name_the_saga_s_signals() -> None:
    with pytest.raises(InvalidArgument, match=r"names signals \['nope'\], which saga "
                                              r"'order_approval' does not wait for"):
        failure_plans(OrderApproval, payloads={"nope": st.none()})
    with pytest.raises(InvalidArgument, match=r"rejections\['decision'\] must be a hypothesis "
                                              "strategy"):
        failure_plans(OrderApproval, rejections={"decision": NO})


@settings(max_examples=25, deadline=None)
@given(case=order_cases(), plan=failure_plans(OrderApproval, payloads=DECISIONS,
                                              rejections=REFUSALS))
def test_run_plan_keeps_every_invariant_under_drawn_wait_plans(case: SagaCase, plan) -> None:
    run_plan(case, plan).check()

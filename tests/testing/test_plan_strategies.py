"""failure_plans(): plans drawn from the saga's own spec, shrinking toward no failure."""

from __future__ import annotations

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from testing_sagas import Shop, Trip

from sagaflow import StepKind, spec_of
from sagaflow.testing import DeadlinePass, FailurePlan, Fault, failure_plans, register_strategies
from sagaflow.testing.plan import sample_error

QUICK = settings(max_examples=200, deadline=None, database=None)


@QUICK
@given(plan=failure_plans(Shop))
def test_shop_plans_fit_the_spec(plan: FailurePlan) -> None:
    spec = spec_of(Shop)
    plan.validate(spec)
    assert plan.deadline is None  # the shop has no deadline
    for name, count in plan.transient:
        s = spec.step(name)
        assert 0 < count < s.retry.attempts
        assert s.retry.is_retryable(sample_error(s, plan.transient_fault))
    if plan.step == "ship":
        assert plan.fault is not Fault.TIMES_OUT  # no timeout, no deadline
    for name, count in plan.compensation_transient:
        assert count < spec.step(name).compensation_retry.attempts
        assert name not in plan.compensation_fails
    assert not plan.has_permanent_failure(spec) or plan.step is not None


@QUICK
@given(plan=failure_plans(Trip))
def test_trip_plans_keep_transient_failures_within_the_deadline(plan: FailurePlan) -> None:
    spec = spec_of(Trip)
    plan.validate(spec)
    if plan.deadline is not None:
        assert spec.step(plan.deadline.step).kind is not StepKind.RETRIABLE
    assert plan.transient_failures("flight") <= 2


def test_plans_shrink_to_no_failure_then_to_the_first_step() -> None:
    assert find(failure_plans(Shop), lambda p: True) == FailurePlan()
    assert find(failure_plans(Shop), lambda p: p.step is not None) == FailurePlan(step="reserve")
    assert find(failure_plans(Shop), lambda p: p.fault is Fault.TIMES_OUT) == FailurePlan(
        step="reserve", fault=Fault.TIMES_OUT
    )
    assert find(failure_plans(Shop), lambda p: bool(p.compensation_fails)) == FailurePlan(
        compensation_fails={"reserve"}
    )
    assert find(failure_plans(Trip), lambda p: p.deadline is not None) == FailurePlan(
        deadline=DeadlinePass("flight")
    )


@QUICK
@given(plan=failure_plans(Shop, faults=[Fault.RAISES], compensation_failures=False,
                          transient=False))
def test_options_narrow_the_plans(plan: FailurePlan) -> None:
    assert plan.fault is Fault.RAISES and not plan.effect
    assert not plan.transient and not plan.compensation_transient
    assert not plan.compensation_fails


def test_from_type_gives_the_saga_s_plans_once_registered() -> None:
    register_strategies()  # what the ``hypothesis`` entry point runs
    names = {s.name for s in spec_of(Shop).steps}
    seen: list[FailurePlan] = []

    @settings(max_examples=50, deadline=None, database=None)
    @given(st.from_type(FailurePlan[Shop]))
    def collect(plan: FailurePlan) -> None:
        assert isinstance(plan, FailurePlan)
        assert plan.step is None or plan.step in names
        plan.validate(spec_of(Shop))
        seen.append(plan)

    collect()
    assert any(p.step is not None for p in seen)
    with pytest.raises(InvalidArgument, match=r"st.from_type\(FailurePlan\[MySaga\]\)"):
        find(st.from_type(FailurePlan), lambda p: True)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="takes a saga class"):
        failure_plans(object)
    with pytest.raises(InvalidArgument, match="max_transient"):
        failure_plans(Shop, max_transient=-1)

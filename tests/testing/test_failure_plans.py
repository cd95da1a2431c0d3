"""FailurePlan: a frozen value with a readable repr, checked against a saga's spec."""

from __future__ import annotations

import re

import pytest
from testing_sagas import Shop, Trip

from sagaflow import spec_of
from sagaflow.testing import DeadlinePass, FailurePlan, Fault


def test_default_plan_is_quiet_and_its_repr_is_short() -> None:
    plan = FailurePlan()
    assert plan.is_quiet and repr(plan) == "FailurePlan()"
    assert plan.describe() == "nothing goes wrong"
    assert not plan.has_permanent_failure(spec_of(Shop))


def test_repr_shows_only_what_differs_and_evaluates_back() -> None:
    plan = FailurePlan(
        step="charge",
        fault=Fault.TIMES_OUT,
        effect=True,
        transient={"reserve": 2, "check": 0},
        compensation_transient={"reserve": 1},
        compensation_fails={"charge"},
        compensation_effect=True,
        deadline=DeadlinePass("charge", during=True),
    )
    text = repr(plan)
    assert text == (
        "FailurePlan(step='charge', fault=Fault.TIMES_OUT, effect=True, "
        "transient={'reserve': 2}, compensation_transient={'reserve': 1}, "
        "compensation_fails={'charge'}, compensation_effect=True, "
        "deadline=DeadlinePass('charge', during=True))"
    )
    assert eval(text) == plan
    assert hash(plan) == hash(eval(text))
    assert plan.describe() == (
        "reserve raises 2 times then succeeds; charge times out after taking effect for "
        "good; the deadline passes at charge (while it runs); reserve's compensation "
        "raises after taking effect once then succeeds; charge's compensation always "
        "raises after taking effect"
    )


def test_plans_are_frozen_and_compare_by_value() -> None:
    a = FailurePlan(transient={"b": 1, "a": 2})
    b = FailurePlan(transient=[("a", 2), ("b", 1)])
    assert a == b and a.transient_failures("a") == 2 and a.transient_failures("zzz") == 0
    with pytest.raises(AttributeError):
        a.step = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": "a", "effect": True}, "effect=True needs fault=Fault.TIMES_OUT"),
        ({"effect": True, "fault": Fault.TIMES_OUT}, "effect=True needs a failing step"),
        ({"transient_fault": Fault.CANCELLED}, "transient_fault cannot be Fault.CANCELLED"),
        ({"transient_effect": True}, "transient_effect=True needs transient_fault"),
        ({"transient": {"a": -1}}, "must be a whole number >= 0"),
        ({"transient": {"a": True}}, "must be a whole number >= 0"),
        ({"compensation_fails": "a"}, "write {'a'}"),
        ({"deadline": "a"}, "write deadline=DeadlinePass('a')"),
        ({"fault": "raises"}, "fault must be a Fault"),
    ],
)
def test_bad_plans_are_refused_with_the_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        FailurePlan(**kwargs)


def test_deadline_pass_effect_needs_during() -> None:
    with pytest.raises(ValueError, match="needs during=True"):
        DeadlinePass("a", effect=True)


def test_validate_lists_every_misfit_against_the_spec() -> None:
    plan = FailurePlan(
        step="nope",
        transient={"ship": 1},
        transient_fault=Fault.TIMES_OUT,
        compensation_fails={"check"},
        deadline=DeadlinePass("charge"),
    )
    with pytest.raises(ValueError) as caught:
        plan.validate(spec_of(Shop))
    text = str(caught.value)
    assert "step names step 'nope', which saga 'shop' does not have" in text
    assert "transient timeouts of step 'ship' are impossible: it has timeout=None" in text
    assert "step 'check' is readonly and has no compensation to fail" in text
    assert "saga 'shop' has none: set @saga(deadline=...)" in text
    with pytest.raises(ValueError, match="cannot time out"):
        FailurePlan(step="ship", fault=Fault.TIMES_OUT).validate(spec_of(Shop))
    FailurePlan(step="flight", fault=Fault.TIMES_OUT, deadline=DeadlinePass("hotel")).validate(
        spec_of(Trip)
    )


def test_permanent_failure_counts_transients_beyond_the_budget() -> None:
    spec = spec_of(Shop)
    assert not FailurePlan(transient={"reserve": 2}).has_permanent_failure(spec)
    assert FailurePlan(transient={"reserve": 3}).has_permanent_failure(spec)  # 3 attempts
    assert FailurePlan(transient={"check": 1}).has_permanent_failure(spec)  # no retry
    # charge retries ConnectionError only; a timeout is not one
    assert FailurePlan(
        transient={"charge": 1}, transient_fault=Fault.TIMES_OUT
    ).has_permanent_failure(spec)
    assert FailurePlan(step="notify").has_permanent_failure(spec)

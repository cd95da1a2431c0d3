"""Deliberately broken sagas: the toolkit finds each bug and shrinks it to a minimal plan."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import find, settings
from testing_sagas import (
    SUBSCRIPTIONS,
    DoubleRelease,
    ForgetfulUnbundle,
    FragileHotel,
    hotel_case,
    reset_world,
    unbundle_case,
    world,
)

from sagaflow.testing import (
    FailurePlan,
    Fault,
    InvariantViolation,
    PlanRun,
    SagaCase,
    assert_compensations_idempotent,
    assert_compensations_tolerate_nothing_to_undo,
    check_invariants,
    failure_plans,
    run_plan,
)

SEARCH = settings(database=None, max_examples=2000)


def violation(case: SagaCase, plan: FailurePlan, **options) -> InvariantViolation | None:
    try:
        check_invariants(run_plan(case, plan), **options)
    except InvariantViolation as exc:
        return exc
    return None


def shrunk(saga_class: type, make_case, **options) -> tuple[FailurePlan, InvariantViolation]:
    """The minimal plan under which the saga breaks an invariant, and how it breaks."""
    plan = find(
        failure_plans(saga_class),
        lambda p: violation(make_case(), p, **options) is not None,
        settings=SEARCH,
        random=Random(0),
    )
    found = violation(make_case(), plan, **options)
    assert found is not None
    return plan, found


def double_release() -> SagaCase:
    return SagaCase(DoubleRelease(), reset_world, world)


def test_a_compensation_that_is_not_idempotent_is_caught_directly() -> None:
    with pytest.raises(AssertionError) as caught:
        assert_compensations_idempotent(double_release())
    text = str(caught.value)
    assert "release (undoes 'reserve') is not idempotent" in text
    assert "'stock': before {}, after {'sku': 1}" in text


def test_a_compensation_that_is_not_idempotent_is_found_by_a_minimal_plan() -> None:
    plan, found = shrunk(DoubleRelease, double_release)
    # the step after it fails; its compensation takes effect, loses its reply, is retried
    assert plan == FailurePlan(
        step="confirm", compensation_transient={"reserve": 1}, compensation_effect=True
    )
    assert found.numbers == [11]
    text = str(found)
    assert "[11] a compensated run leaves the participants as it found them" in text
    assert "'stock': before {}, after {'sku': 1}" in text
    assert "undo reserve  1    raises+effect" in text  # the trace shows the lost reply


def test_a_compensation_that_crashes_with_nothing_to_undo_is_found() -> None:
    plan, found = shrunk(FragileHotel, hotel_case)
    # the step timed out before taking effect: its compensation has nothing to undo
    assert plan == FailurePlan(step="book", fault=Fault.TIMES_OUT)
    assert 10 in found.numbers
    text = str(found)
    assert "the compensation of 'book' raised KeyError('b-ann') by itself" in text
    assert "timed out before taking effect: there was nothing to undo" in text
    with pytest.raises(AssertionError, match="raised with nothing to undo: KeyError"):
        assert_compensations_tolerate_nothing_to_undo(hotel_case())


def test_a_compensation_that_forgets_a_field_is_found_by_the_snapshot() -> None:
    plan, found = shrunk(ForgetfulUnbundle, unbundle_case)
    assert plan == FailurePlan(step="notify")
    assert found.numbers == [11]
    assert "'sub-1': before {'price': 100, 'approval_id': None}, after {'price': 100, " \
           "'approval_id': 'appr-" in str(found)


def no_approval_left(run: PlanRun) -> None:
    """a compensated unbundling leaves no approval behind"""
    if run.status.value == "COMPENSATED":
        approval = SUBSCRIPTIONS["sub-1"]["approval_id"]
        assert approval is None, f"approval {approval!r} is still on the subscription"


def test_a_user_invariant_catches_the_forgotten_field_too() -> None:
    def case() -> SagaCase:  # no snapshot: only the user's own invariant can tell
        return SagaCase(ForgetfulUnbundle(), unbundle_case().setup)

    plan, found = shrunk(ForgetfulUnbundle, case, extra=[no_approval_left])
    assert plan == FailurePlan(step="notify")
    assert found.numbers == [20]
    assert ("[20] no_approval_left: a compensated unbundling leaves no approval behind"
            in str(found))
    assert "approval 'appr-run-" in str(found)


def test_sound_sagas_pass_the_direct_checks() -> None:
    from testing_sagas import Shop

    case = SagaCase(Shop("ann", 7), reset_world, world)
    assert_compensations_idempotent(case)
    assert_compensations_tolerate_nothing_to_undo(case)

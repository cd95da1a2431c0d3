"""Deliberately broken waiting sagas: the toolkit finds each bug and shrinks it to the
minimal plan of what the wait receives."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import Phase, find, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test
from testing_sagas import reset_world, world
from waiting_sagas import (
    REFUSALS,
    CarelessApproval,
    Decision,
    FeeOnTimer,
    ImpatientApproval,
    LeakyHold,
    OrderApproval,
    broken_case,
)

from sagaflow.testing import (
    Arrival,
    FailurePlan,
    InvariantViolation,
    SagaCase,
    SignalPlan,
    assert_compensations_idempotent,
    assert_compensations_tolerate_nothing_to_undo,
    check_invariants,
    failure_plans,
    run_plan,
    saga_state_machine,
)

SEARCH = settings(database=None, max_examples=2000)


def violation(saga_class: type, plan: FailurePlan) -> InvariantViolation | None:
    try:
        check_invariants(run_plan(broken_case(saga_class), plan))
    except InvariantViolation as exc:
        return exc
    return None


def shrunk(saga_class: type, **options) -> tuple[FailurePlan, InvariantViolation]:
    """The minimal plan under which the saga breaks an invariant, and how it breaks."""
    plan = find(
        failure_plans(saga_class, **options),
        lambda p: violation(saga_class, p) is not None,
        settings=SEARCH,
        random=Random(0),
    )
    found = violation(saga_class, plan)
    assert found is not None
    return plan, found


def test_a_step_before_the_wait_with_no_compensation_is_found_by_a_rejection() -> None:
    plan, found = shrunk(LeakyHold)
    # the simplest answer, a "no", compensates: and the held stock stays held
    assert plan == FailurePlan(signals=[SignalPlan("approval", Decision(False, ""))])
    assert found.numbers == [11]
    text = str(found)
    assert "'stock': before {}, after {'o-1': -1}" in text
    assert "signals sent:" in text and "Decision(approved=False, by='', reason='')" in text


def test_a_step_before_the_wait_with_no_compensation_is_found_by_a_timeout() -> None:
    # approvers only ever say yes: then the approval that never comes shows the bug
    plan, found = shrunk(LeakyHold,
                         payloads={"decision": st.builds(Decision, st.just(True), st.just("a"))})
    assert plan == FailurePlan(signals=[SignalPlan("approval", arrives=Arrival.NEVER)])
    assert found.numbers == [11]
    assert "status: COMPENSATED (wait 'approval' timed out after 3d without signal " \
           "'decision')" in str(found)


def test_a_handler_that_lets_a_no_through_is_found_by_the_rejections_strategy() -> None:
    plan, found = shrunk(CarelessApproval, rejections=REFUSALS)
    assert plan == FailurePlan(signals=[
        SignalPlan("approval", Decision(False, "ann", "too much"), rejects=True)
    ])
    assert found.numbers == [14]
    assert ("the handler of 'approval' was handed Decision(approved=False, by='ann', "
            "reason='too much'), a payload it must reject (drawn from rejections=), and "
            "accepted it") in str(found)


def test_a_saga_that_counts_on_a_handler_a_timeout_skips_is_found() -> None:
    plan, found = shrunk(ImpatientApproval)
    assert plan == FailurePlan(signals=[SignalPlan("approval", arrives=Arrival.NEVER)])
    assert found.numbers == [10]
    text = str(found)
    assert "step 'ship' raised AttributeError(\"'NoneType' object has no attribute " \
           "'upper'\") by itself" in text
    assert "WaitExpired 'approval': no 'decision', continue" in text


def test_a_timer_that_takes_an_effect_is_found_when_the_saga_is_compensated_after_it() -> None:
    plan, found = shrunk(FeeOnTimer)
    # the first step after the timer failing is enough: the fee it charged stays
    assert plan == FailurePlan(step="charge")
    assert found.numbers == [11]
    text = str(found)
    assert "'payments': before {}, after {'o-1': -5}" in text
    assert "86400  cooling_off   1" in text  # the timer fired on the virtual clock, a day on


def test_the_state_machine_finds_the_missing_compensation_too() -> None:
    machine = saga_state_machine(LeakyHold, sagas=st.builds(lambda: broken_case(LeakyHold)))
    with pytest.raises(InvariantViolation) as caught:
        run_state_machine_as_test(
            machine,
            settings=settings(max_examples=1000, stateful_step_count=15, database=None,
                              deadline=None, phases=[Phase.generate]),
        )
    assert caught.value.numbers == [11]
    assert "'stock': before {}, after {'o-1': -1}" in str(caught.value)


def test_the_direct_checks_pass_waits_by_or_hand_them_a_payload() -> None:
    case = SagaCase(OrderApproval(), reset_world, world)
    assert_compensations_idempotent(case)  # the approval's handler is passed by
    assert_compensations_tolerate_nothing_to_undo(case)
    assert_compensations_idempotent(case, payloads={"decision": Decision(True, "ann")})
    with pytest.raises(AssertionError, match="step 'approval' raised SagaRejected"):
        assert_compensations_idempotent(case, payloads={"decision": Decision(False, "bob")})

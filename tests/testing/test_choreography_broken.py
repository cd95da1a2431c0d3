"""Deliberately broken choreographies: the toolkit finds each bug and shrinks it to the
plan that shows it; the careful twin keeps every invariant under the same plans."""

from __future__ import annotations

import os
from random import Random

from choreo_sagas import (
    CarefulBooking,
    CarelessHold,
    CarelessRefund,
    office_case,
)
from hypothesis import HealthCheck, find, given, settings

from sagaflow.testing import (
    ChoreographyViolation,
    DeliveryPlan,
    choreography_plans,
    run_choreography,
)

SEARCH = settings(database=None, max_examples=2000)
DEEP = os.environ.get("SAGAFLOW_PROFILE") == "deep"


def violation(flow: type, plan: DeliveryPlan) -> ChoreographyViolation | None:
    try:
        run_choreography(office_case(flow), plan, store="memory").check()
    except ChoreographyViolation as exc:
        return exc
    return None


def shrunk(flow: type, **narrow: bool) -> tuple[DeliveryPlan, ChoreographyViolation]:
    """The minimal plan under which ``flow`` breaks an invariant, and how (on SQLite).

    ``narrow`` leaves kinds of fault out of the search (the default profile stays in
    seconds); the deep profile searches every kind."""
    if DEEP:
        narrow = {}
    plans = choreography_plans(flow, **narrow)
    plan = find(plans, lambda p: violation(flow, p) is not None, settings=SEARCH,
                random=Random(0))
    try:
        run_choreography(office_case(flow), plan).check()
    except ChoreographyViolation as exc:
        return plan, exc
    raise AssertionError(f"{plan!r} broke {flow.__name__} in memory, not on SQLite")


def test_a_participant_that_doubles_its_effect_on_redelivery_is_found() -> None:
    plan, found = shrunk(CarelessHold, deliveries=False, republish=False,
                         compensation_faults=False)
    # the seating service dies after holding the seats: BookingMade comes again
    if not DEEP:
        assert plan == DeliveryPlan(crash={"hold": True})
    assert found.numbers == [4]
    if not DEEP:  # the deep search draws every kind of fault: its plan may differ
        assert "b-1 COMPLETED with effects (8, 50, True); the quiet run leaves (9, 50, True)" \
            in str(found)
        assert "hold #1 [crash+effect] died +effect" in str(found)


def test_a_compensation_that_is_not_idempotent_is_found() -> None:
    plan, found = shrunk(CarelessRefund, crashes=False, deliveries=False, republish=False)
    # the ticket cannot be issued; the payments service dies after refunding, before
    # its checkpoint: FlowFailed comes to it again, and it refunds again
    if not DEEP:
        assert plan == DeliveryPlan(fails="issue", compensation_crash={"pay"})
    assert found.numbers == [4]
    assert "b-1 COMPENSATED but its effects went from (10, 0, False) to (10, -50, False)" \
        in str(found)
    if not DEEP:
        assert "undo pay #1 [crash+effect] died +effect" in str(found)
    # and a lost reply, retried in the same handling, shows it the same way
    lost = violation(CarelessRefund, DeliveryPlan(fails="issue",
                                                  compensation_transient={"pay": 1}))
    assert lost is not None and lost.numbers == [4]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(choreography_plans(CarefulBooking))
def test_the_careful_booking_keeps_every_invariant(plan: DeliveryPlan) -> None:
    run_choreography(office_case(CarefulBooking), plan, store="memory").check()

"""The toolkit on sagas with a parallel group and a fan-out: plans address members and
items (faults, crashes, the order a batch's calls run in); every run keeps the invariants."""

from __future__ import annotations

import attrs
from group_sagas import Booking, Picking, booking_cases, picking_cases
from hypothesis import given, settings

from sagaflow.testing import FailurePlan, Fault, SagaCase, failure_plans, run_plan

MANY = settings(max_examples=max(300, settings.default.max_examples), deadline=None)
SAMPLE = settings(max_examples=20, deadline=None)


@MANY
@given(case=booking_cases(), plan=failure_plans(Booking))
def test_a_group_saga_keeps_every_invariant(case: SagaCase, plan: FailurePlan) -> None:
    run_plan(case, plan).check()


@MANY
@given(case=picking_cases(), plan=failure_plans(Picking, items={"pick": "abcd"}))
def test_a_fan_out_saga_keeps_every_invariant(case: SagaCase, plan: FailurePlan) -> None:
    run_plan(case, plan).check()


@SAMPLE
@given(case=booking_cases(),
       plan=failure_plans(Booking, faults=[Fault.RAISES, Fault.TIMES_OUT, Fault.REJECTS]))
def test_a_group_saga_under_the_sync_driver(case: SagaCase, plan: FailurePlan) -> None:
    # crashes and batch orders are the engine driver's (the real drivers run at once)
    run_plan(case, attrs.evolve(plan, cut=(), cut_effect=False), driver="sync").check()


@SAMPLE
@given(case=picking_cases(),
       plan=failure_plans(Picking, faults=[Fault.RAISES, Fault.TIMES_OUT, Fault.REJECTS]))
def test_a_fan_out_saga_under_the_sync_driver(case: SagaCase, plan: FailurePlan) -> None:
    run_plan(case, attrs.evolve(plan, cut=(), cut_effect=False), driver="sync").check()


def test_plans_for_a_group_saga_reach_its_members() -> None:
    seen: set[str] = set()

    @settings(max_examples=200, database=None)
    @given(failure_plans(Booking))
    def collect(plan: FailurePlan) -> None:
        seen.update(name for name, _ in plan.faults)
        seen.update(plan.cut)

    collect()
    assert {"stock", "payment", "shipping"} <= seen

"""The toolkit on sagas with a parallel group and a fan-out: plans address members and
items (faults, crashes, the order a batch's calls run in); every run keeps the invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from group_sagas import Booking, Picking, booking_cases, picking_cases

from sagaflow.testing import Fault, SagaCase, failure_plans, run_plan

MANY = settings(max_examples=max(300, settings.default.max_examples), deadline=None)
SAMPLE = settings(max_examples=20, deadline=None)


@MANY
@given(case=booking_cases(), plan=failure_plans(Booking))
def test_a_group_saga_keeps_every_invariant(case: SagaCase, plan) -> None:
    run_plan(case, plan).check()


@MANY
@given(case=picking_cases(), plan=failure_plans(Picking, items={"pick": "abcd"}))
def test_a_fan_out_saga_keeps_every_invariant(case: SagaCase, plan) -> None:
    run_plan(case, plan).check()


@SAMPLE
@given(case=booking_cases(),
       plan=failure_plans(Booking, faults=[Fault.RAISES, Fault.TIMES_OUT, Fault.REJECTS]))
def test_a_group_saga_under_the_sync_driver(case: SagaCase, plan) -> None:
    plan = plan.__class__(**{**_fields(plan), "cut": frozenset()})  # crashes: engine only
    run_plan(case, plan, driver="sync").check()


def _fields(plan) -> dict:
    import attrs

    return attrs.asdict(plan, recurse=False)


def test_plans_for_a_group_saga_reach_its_members() -> None:
    seen: set[str] = set()

    @settings(max_examples=200, database=None)
    @given(failure_plans(Booking))
    def collect(plan) -> None:
        seen.update(name for name, _ in plan.faults)
        seen.update(plan.cut)

    collect()
    assert {"stock", "payment", "shipping"} <= seen


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_failure_plans_fit_the_group_and_fan_out_sagas(data) -> None:
    failure_plans(Booking).example  # noqa: B018 (the strategy builds)
    plan = data.draw(failure_plans(Picking, items={"pick": "ab"}))
    plan.validate(Picking.__sagaflow_spec__ if hasattr(Picking, "__sagaflow_spec__")
                  else __import__("sagaflow").spec_of(Picking))

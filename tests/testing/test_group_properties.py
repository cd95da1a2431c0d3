"""The toolkit on sagas with a parallel group and a fan-out: plans address members and
items (faults, crashes, the order a batch's calls run in); every run keeps the invariants,
under the engine driver, the sync driver and (``arun_plan``) the async one."""

from __future__ import annotations

import asyncio
from typing import Literal

import attrs
from group_sagas import (
    AsyncBooking,
    Booking,
    Picking,
    async_booking_cases,
    booking_cases,
    picking_cases,
)
from hypothesis import given, settings

from sagaflow import spec_of
from sagaflow.testing import (
    FailurePlan,
    Fault,
    PlanRun,
    SagaCase,
    arun_plan,
    failure_plans,
    run_plan,
)
from sagaflow.testing.loop import VirtualTimeLoop, all_coroutines

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


def arun(case: SagaCase, plan: FailurePlan,
         driver: Literal["engine", "async"] = "async") -> PlanRun:
    """``arun_plan`` in a loop of the test's own (virtual time when every call is a
    coroutine, as ``run_plan`` picks it); crashes and batch orders are the engine's."""
    if driver == "async":
        plan = attrs.evolve(plan, cut=(), cut_effect=False)
    virtual = all_coroutines(spec_of(case.saga))
    with asyncio.Runner(loop_factory=VirtualTimeLoop if virtual else None) as runner:
        return runner.run(arun_plan(case, plan, driver=driver))


def test_arun_plan_s_engine_runs_a_coroutine_member_cut_off_after_taking_effect() -> None:
    # it used to start a second event loop inside the caller's running one
    from group_sagas import STOCK, async_booking_case

    run = arun(async_booking_case(), FailurePlan(cut={"stock"}, cut_effect=True), "engine")
    run.check()
    stock = [c for c in run.calls if c.label == "stock"]
    assert [(c.reported, c.ran_user, c.user_error) for c in stock] == [
        ("cut", True, None), ("ok", True, None)
    ]
    assert STOCK.balances == {"sku": -1}  # once: the retry after recovery is the same key


def untimed(plan: FailurePlan) -> bool:
    """No planned timeout: under a real driver a planned timeout is a short real one
    (``REAL_TIMEOUT``), which a member's thread that the OS has not yet scheduled (a
    loaded machine) misses before the harness sees the call start."""
    return Fault.TIMES_OUT not in (
        plan.fault if plan.step is not None else None,
        plan.transient_fault if plan.transient else None,
        *(f for _, f in plan.faults),
    )


@SAMPLE
@given(case=booking_cases(), plan=failure_plans(Booking).filter(untimed))
def test_a_group_saga_under_the_async_driver(case: SagaCase, plan: FailurePlan) -> None:
    # sync members run on the driver's threads; a cancelled run cuts them off
    arun(case, plan).check()


@SAMPLE
@given(case=async_booking_cases(), plan=failure_plans(AsyncBooking))
def test_a_group_of_coroutines_under_the_async_driver(
    case: SagaCase, plan: FailurePlan
) -> None:
    # coroutine members are tasks: a member failing for good cancels its siblings
    arun(case, plan).check()


@MANY
@given(case=async_booking_cases(), plan=failure_plans(AsyncBooking))
def test_a_group_of_coroutines_under_arun_plan_s_engine(
    case: SagaCase, plan: FailurePlan
) -> None:
    arun(case, plan, driver="engine").check()


@SAMPLE
@given(case=picking_cases(),
       plan=failure_plans(Picking, items={"pick": "abcd"}).filter(untimed))
def test_a_fan_out_saga_under_the_async_driver(case: SagaCase, plan: FailurePlan) -> None:
    arun(case, plan).check()


def test_plans_for_a_group_saga_reach_its_members() -> None:
    seen: set[str] = set()

    @settings(max_examples=200, database=None)
    @given(failure_plans(Booking))
    def collect(plan: FailurePlan) -> None:
        seen.update(name for name, _ in plan.faults)
        seen.update(plan.cut)

    collect()
    assert {"stock", "payment", "shipping"} <= seen

"""A saga's deadline planned to pass at a parallel group's member, or at the step just
after a group or a fan-out (found by the cases of examples/checkout and
examples/payouts: the run completed anyway).

The engine starts a group's members at once and moves from a group or a fan-out to the
next step without reading the clock again, so the harness passes such a deadline as the
group starts, or as the last member or item finishes."""

from __future__ import annotations

import attrs
import pytest

from sagaflow import SagaStatus, StepContext, parallel, saga, step
from sagaflow.testing import DeadlinePass, FailurePlan, run_plan

DONE: list[str] = []


@saga(name="group_then_pivot", deadline=60.0)
class GroupThenPivot:
    """validate; a group of two compensatable members; a pivot; a last step."""

    book = parallel()

    @step(readonly=True)
    async def validate(self, ctx: StepContext) -> None:
        pass

    @book.step(timeout=5)
    async def reserve(self, ctx: StepContext) -> None:
        DONE.append(ctx.step)

    @reserve.compensate
    async def release(self, ctx: StepContext) -> None:
        if "reserve" in DONE:
            DONE.remove("reserve")

    @book.step(timeout=5)
    async def charge(self, ctx: StepContext) -> None:
        DONE.append(ctx.step)

    @charge.compensate
    async def refund(self, ctx: StepContext) -> None:
        if "charge" in DONE:
            DONE.remove("charge")

    @step(pivot=True, timeout=5)
    async def confirm(self, ctx: StepContext) -> None:
        DONE.append(ctx.step)


@pytest.mark.parametrize("where", ["reserve", "charge", "confirm"])
def test_a_deadline_passing_at_a_member_or_just_after_the_group_stops_the_saga(
    where: str,
) -> None:
    DONE.clear()
    run = run_plan(GroupThenPivot(), FailurePlan(deadline=DeadlinePass(where)))

    assert run.status is SagaStatus.COMPENSATED
    assert "confirm" not in [c.name for c in run.calls]
    assert DONE == []
    run.check()


@saga(name="fan_out_then_pivot", deadline=60.0)
@attrs.define
class FanOutThenPivot:
    """A fan-out of compensatable items; a pivot."""

    items: list[str] = attrs.Factory(lambda: ["a", "b", "c"])

    @step(each="items", key=lambda item: item, limit=2, timeout=5)
    async def pay(self, item: str, ctx: StepContext) -> None:
        DONE.append(item)

    @pay.compensate
    async def reverse(self, item: str, ctx: StepContext) -> None:
        if item in DONE:
            DONE.remove(item)

    @step(pivot=True, timeout=5)
    async def close(self, ctx: StepContext) -> None:
        DONE.append(ctx.step)


@pytest.mark.parametrize("where", ["pay", "close"])
def test_a_deadline_passing_at_a_fan_out_or_just_after_it_stops_the_saga(where: str) -> None:
    DONE.clear()
    run = run_plan(FanOutThenPivot(), FailurePlan(deadline=DeadlinePass(where)))

    assert run.status is SagaStatus.COMPENSATED
    assert "close" not in [c.name for c in run.calls]
    assert DONE == []
    run.check()

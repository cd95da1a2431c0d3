"""A saga's deadline planned to pass at a parallel group's member, or at the step just
after the group (found by examples/checkout's cases: the run completed anyway).

The engine starts a group's members at once and moves from the group to the next step
without reading the clock again, so the harness passes such a deadline as the group
starts, or as its last member finishes."""

from __future__ import annotations

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

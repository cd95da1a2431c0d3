"""The direct compensation checks on a fan-out: each item's function gets its item and
its own key (``pick[a]``). They called ``pick(saga, ctx)`` without the item, so a saga
with a fan-out failed both gates of ``sagaflow verify`` with a TypeError (found by the
payout batch's example cases)."""

from __future__ import annotations

import pytest

from sagaflow import StepContext, saga, step
from sagaflow.testing import (
    SagaCase,
    assert_compensations_idempotent,
    assert_compensations_tolerate_nothing_to_undo,
)

picked: dict[str, str] = {}  # the participant: key -> line


@saga(name="direct_fan_out")
class Pick:
    lines: list[str] = ["a", "b"]  # noqa: RUF012 (never mutated)
    careless: bool = False

    @step(each="lines", timeout=5)
    def pick(self, line: str, ctx: StepContext) -> None:
        picked[ctx.idempotency_key] = line

    @pick.compensate
    def put_back(self, line: str, ctx: StepContext) -> None:
        forward = f"{ctx.saga_id}:{ctx.step}:forward"
        if self.careless:  # puts back by line, whatever the key: a second run raises
            del picked[next(k for k, v in picked.items() if v == line)]
        else:
            picked.pop(forward, None)

    @step(pivot=True, timeout=5)
    def ship(self, ctx: StepContext) -> None:
        pass


def case(careless: bool = False) -> SagaCase:
    return SagaCase(Pick(careless=careless), picked.clear, lambda: dict(picked))


def test_each_item_is_checked_under_its_own_key() -> None:
    assert_compensations_idempotent(case())
    assert_compensations_tolerate_nothing_to_undo(case())


def test_an_item_compensation_that_is_not_idempotent_is_caught() -> None:
    with pytest.raises(AssertionError, match=r"put_back \(undoes 'pick'\) raised on its second "
                       r"run: StopIteration"):
        assert_compensations_idempotent(case(careless=True))

"""A payout batch: a fan-out over the batch's list, each payout its own record and key."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from example_fixtures import Captured

from examples._support import run_virtual
from examples.payouts import demo as scenarios
from examples.payouts import services
from examples.payouts.saga import InvalidBatch, PayoutBatchSaga, PayoutReversed, PayoutSent
from examples.payouts.services import bank, treasury
from sagaflow import CompensationStatus, SagaStatus, StepError, StepStatus, spec_of

START = Decimal("100000.00")


@pytest.fixture(autouse=True)
def fresh_services() -> Iterator[None]:
    services.reset()
    yield
    services.reset()


def test_the_pay_step_is_a_fan_out_over_the_payouts_three_at_a_time() -> None:
    pay = spec_of(PayoutBatchSaga).step("pay")
    assert pay.each is not None
    assert (pay.each.field, pay.each.limit) == ("payouts", 3)


def test_every_payout_is_paid_under_its_own_key_three_at_a_time(stored: Captured) -> None:
    result = run_virtual(scenarios.all_paid(stored))

    assert result.status is SagaStatus.COMPLETED
    items = [f"pay[P-{i}]" for i in range(1, 7)]
    assert [s.name for s in result.steps] == [
        "validate", "reserve_funds", "pay", "close_batch", *items]
    assert all(result.step(name).status is StepStatus.COMPLETED for name in items)
    assert set(bank.paid) == {f"batch-1:{name}:forward" for name in items}
    assert bank.most_at_once == 3
    assert [type(e) for e in result.events] == [PayoutSent] * 6
    paid = scenarios.batch()
    assert treasury.balance == START - sum((x.amount for x in paid), Decimal(0))
    assert "step 3/4 pay[P-1] ✓" in stored.text and "step 3/4 pay ✓ every item" in stored.text


def test_a_closed_account_reverses_the_paid_and_unknown_items_with_their_own_keys(
    stored: Captured,
) -> None:
    result = run_virtual(scenarios.one_account_closed(stored))

    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepError)
    assert result.step("pay[P-5]").status is StepStatus.FAILED
    # P-1..P-3 were paid; P-4 and P-6 were running when P-5 failed: cancelled, unknown
    assert [result.step(f"pay[P-{i}]").status for i in (1, 2, 3)] == [StepStatus.COMPLETED] * 3
    assert result.step("pay[P-4]").timed_out and result.step("pay[P-6]").timed_out
    undone = {s.name for s in result.steps if s.compensation is CompensationStatus.COMPENSATED}
    assert undone == {"pay[P-1]", "pay[P-2]", "pay[P-3]", "pay[P-4]", "pay[P-6]",
                      "reserve_funds", "pay"}  # the fan-out's own record aggregates its items
    # no new start after the failure: P-7 and P-8 never ran, so nothing to undo there
    for name in ("pay[P-7]", "pay[P-8]"):
        assert result.step(name).attempts == 0
        assert result.step(name).compensation is CompensationStatus.NOT_NEEDED
    assert sorted(bank.reversed) == [f"batch-2:pay[P-{i}]:forward" for i in (1, 2, 3)]
    # each reversal under its own item's key; the unknown ones voided their transfer
    assert bank.keys.applied("batch-2:pay[P-4]:compensate")
    assert "batch-2:pay[P-4]:forward" in bank.keys.voided
    assert [type(e) for e in result.events].count(PayoutReversed) == 3
    assert bank.paid == {} and treasury.balance == START and treasury.held == {}
    assert ("↩ rolling back 6 step(s), newest first: [pay[P-1] ‖ pay[P-2] ‖ pay[P-3] ‖ "
            "pay[P-4] ‖ pay[P-6]] → reserve_funds") in stored.text


def test_an_unavailable_bank_retries_that_one_transfer(demo: Captured) -> None:
    result = run_virtual(scenarios.bank_flaky(demo))

    assert result.status is SagaStatus.COMPLETED
    assert [result.step(f"pay[P-{i}]").attempts for i in (1, 2, 3)] == [1, 2, 1]
    assert len(bank.paid) == 3


def test_a_batch_breaking_the_rules_pays_nothing(demo: Captured) -> None:
    twice = scenarios.batch(2) + scenarios.batch(1)

    async def run() -> object:
        return await demo.arun(demo.async_orchestrator(), PayoutBatchSaga("batch-0", twice),
                               "batch-0")

    result = run_virtual(run())
    assert isinstance(result.error, StepError)  # type: ignore[attr-defined]
    assert isinstance(result.error.cause, InvalidBatch)  # type: ignore[attr-defined]
    assert "payout P-1 appears twice" in str(result.error.cause)  # type: ignore[attr-defined]
    assert bank.paid == {} and treasury.balance == START

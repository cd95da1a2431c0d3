"""The payout batch's rules, alone: fees to the cent, what a batch may hold."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from examples.payouts.rules import MAX_PAYOUTS, MIN_FEE, Payout, fee, net, problems, total


def p(payout_id: str, amount: str) -> Payout:
    return Payout(payout_id, f"acct-{payout_id}", Decimal(amount))


@pytest.mark.parametrize(("amount", "expected"), [
    ("100.00", "1.00"),
    ("62.50", "0.62"),  # 0.625: the tie goes to the even cent
    ("63.50", "0.64"),  # 0.635: up to the even cent
    ("12.50", "0.25"),  # 0.125 is below the minimum fee
])
def test_the_fee_is_one_percent_to_the_even_cent_at_least_the_minimum(
    amount: str, expected: str
) -> None:
    assert fee(p("1", amount)) == Decimal(expected)


@given(st.decimals(min_value=Decimal("0.26"), max_value=Decimal("10000"), places=2))
def test_the_payee_gets_the_amount_less_the_fee_and_the_fee_is_in_cents(
    amount: Decimal,
) -> None:
    payout = p("1", str(amount))
    assert net(payout) + fee(payout) == amount
    assert fee(payout) >= MIN_FEE and fee(payout) == fee(payout).quantize(Decimal("0.01"))


def test_the_total_is_every_amount() -> None:
    assert total([p("1", "100.00"), p("2", "0.50")]) == Decimal("100.50")


def test_a_good_batch_has_no_problem() -> None:
    assert problems([p("1", "100.00"), p("2", "200.00")]) == []


def test_every_problem_is_named() -> None:
    assert problems([]) == ["the batch is empty"]
    assert problems([p("1", "1.00"), p("1", "2.00")]) == ["payout 1 appears twice"]
    assert problems([p("1", "0")]) == ["payout 1: 0 is not in (0, 10000.00]"]
    assert problems([p("1", "10000.01")]) == ["payout 1: 10000.01 is not in (0, 10000.00]"]
    assert problems([p("1", "1.005")]) == ["payout 1: 1.005 is not a payable amount in cents"]
    assert problems([p("1", "0.25")]) == ["payout 1: 0.25 is not a payable amount in cents"]
    many = [p(str(i), "1.00") for i in range(MAX_PAYOUTS + 1)]
    assert problems(many) == [f"{MAX_PAYOUTS + 1} payouts, at most {MAX_PAYOUTS}"]

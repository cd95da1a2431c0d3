"""A payout batch: reserve the batch's total, pay each payee (a fan-out over the list,
three transfers at a time), then close the batch (the pivot).

``@step(each="payouts", key=...)`` calls ``pay`` once per item with the item; each
transfer has its own record (``pay[P-1]``...), outcome and idempotency key
(``{batch}:pay[P-1]:forward``). One payee failing for good stops new transfers, and every
transfer that completed (or whose outcome is unknown) is reversed with its own item and
key, concurrently; then the reservation is released. The rules (validation, fees) are in
``rules.py``, pure.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from sagaflow import Retry, StepContext, saga, step

from . import rules, services
from .rules import Payout
from .services import BankUnavailable, bank, treasury

__all__ = [
    "CLOSED",
    "InvalidBatch",
    "PayoutBatchSaga",
    "PayoutReversed",
    "PayoutSent",
    "example_case",
    "example_sagas",
    "reset_case_services",
]


class InvalidBatch(ValueError):
    """The batch breaks the rules; nothing was paid."""


@attrs.frozen
class PayoutSent:
    payout_id: str
    account: str
    net: Decimal


@attrs.frozen
class PayoutReversed:
    payout_id: str


@saga(deadline=300.0)
@attrs.define
class PayoutBatchSaga:
    batch_id: str
    payouts: list[Payout]
    hold: str | None = None

    @step(readonly=True)
    async def validate(self, ctx: StepContext) -> None:
        found = rules.problems(self.payouts)
        if found:
            raise InvalidBatch("; ".join(found))

    @step(timeout=5.0)
    async def reserve_funds(self, ctx: StepContext) -> None:
        self.hold = await treasury.reserve(
            ctx.idempotency_key, self.batch_id, rules.total(self.payouts))

    @reserve_funds.compensate
    async def release_funds(self, ctx: StepContext) -> None:
        await treasury.release(ctx.idempotency_key, ctx.forward_key, self.batch_id)

    @step(each="payouts", key=lambda payout: payout.payout_id, limit=3,
          timeout=10.0, retry=Retry(attempts=3, backoff=1.0, retry_on=BankUnavailable))
    async def pay(self, payout: Payout, ctx: StepContext) -> None:
        await bank.transfer(ctx.idempotency_key, payout.account, rules.net(payout))
        ctx.emit(PayoutSent(payout.payout_id, payout.account, rules.net(payout)))

    @pay.compensate
    async def reverse(self, payout: Payout, ctx: StepContext) -> None:
        if await bank.reverse(ctx.idempotency_key, ctx.forward_key):
            ctx.emit(PayoutReversed(payout.payout_id))

    @step(pivot=True, timeout=5.0)
    async def close_batch(self, ctx: StepContext) -> None:
        await treasury.settle(ctx.idempotency_key, self.batch_id)


# --- the example cases: the property tests and `sagaflow verify` -------------------------

#: The account the example cases' bank has closed: a batch paying it fails at ``pay``.
CLOSED = "acct-closed"


def reset_case_services() -> None:
    """The cases' ``setup``: the treasury and the bank afresh, kept in a file
    (:data:`~examples.payouts.services.STATE`: the crash gate's recovery, in another
    process, finds what the killed one did), the bank refusing to pay :data:`CLOSED`,
    answering at once (the crash gate runs them on real time)."""
    services.reset(closed=(CLOSED,), latency=0.0, filed=True)


def example_case(payouts: list[Payout], batch_id: str = "batch-1") -> Any:
    """A :class:`~sagaflow.testing.SagaCase`: a batch paying ``payouts`` from fresh
    services, whose balances, holds and standing transfers are the snapshot. A batch the
    rules refuse, or paying the closed account, may fail a step (``allow_step_errors``);
    any other may not fail on its own."""
    from sagaflow.testing import SagaCase

    refused = bool(rules.problems(payouts)) or any(p.account == CLOSED for p in payouts)
    return SagaCase(PayoutBatchSaga(batch_id, payouts), reset_case_services, services.state,
                    allow_step_errors=refused)


def example_sagas() -> Any:
    """Payout batches for the property tests and ``sagaflow verify``: 1 to 6 payouts of
    0.26 to 10,000.00 (each to its own account), some that the rules refuse (an empty
    batch, a payout id twice, an amount out of range or not in cents) and some paying
    the bank's closed account (paid transfers reversed, the hold released)."""
    from hypothesis import strategies as st

    amounts = st.integers(26, 1_000_000).map(lambda cents: (Decimal(cents) / 100).quantize(
        rules.CENT))
    batches = st.lists(amounts, min_size=1, max_size=6).map(
        lambda paid: [Payout(f"P-{i}", f"acct-{i}", a) for i, a in enumerate(paid, 1)])
    wrong = st.sampled_from([Decimal(0), Decimal("10000.01"), Decimal("10.005")])
    refusals = st.one_of(
        st.just([]),
        batches.map(lambda b: [*b, b[0]]),
        st.tuples(batches, wrong).map(lambda bw: [*bw[0], Payout("P-x", "acct-x", bw[1])]),
        batches.map(lambda b: [*b, Payout("P-closed", CLOSED, Decimal("50.00"))]),
    )
    return st.one_of(batches, refusals).map(example_case)

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

import attrs

from sagaflow import Retry, StepContext, saga, step

from . import rules
from .rules import Payout
from .services import BankUnavailable, bank, treasury

__all__ = ["InvalidBatch", "PayoutBatchSaga", "PayoutReversed", "PayoutSent"]


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

"""Seed 002's order, with its commands "dispatched in parallel": after validating the
order, reserve the stock, charge the card and book the courier *at once* (a
``parallel()`` group: three tasks), each with its own compensation, timeout and retry
policy; then confirm the order (the pivot); then send the receipt and tell the warehouse,
again at once (a group of retriable members after the pivot).

If a member fails for good, no new member starts, the running ones are cancelled (their
outcome is unknown), and every member that completed or may have is compensated,
concurrently: each compensation asks its participant, by the forward call's key, whether
there is anything to undo.
"""

from __future__ import annotations

from decimal import Decimal

import attrs

from sagaflow import Retry, StepContext, parallel, saga, step

from .services import CourierBusy, GatewayUnavailable, services

__all__ = ["CheckoutSaga", "InvalidOrder"]


class InvalidOrder(ValueError):
    """The order cannot be booked as it is."""


@saga(deadline=60.0)
@attrs.define
class CheckoutSaga:
    order_id: str
    customer: str
    sku: str
    quantity: int
    amount: Decimal
    address: str
    reservation: str | None = None
    charge: str | None = None
    courier: str | None = None

    book = parallel(limit=3, compensate="concurrent")
    tell = parallel()

    @step(readonly=True)
    async def validate(self, ctx: StepContext) -> None:
        if self.quantity < 1 or self.amount <= 0 or not self.address:
            raise InvalidOrder(f"order {self.order_id}: quantity, amount and address needed")

    @book.step(timeout=5.0)
    async def reserve_stock(self, ctx: StepContext) -> None:
        self.reservation = await services().reserve(ctx.idempotency_key, self.sku, self.quantity)

    @reserve_stock.compensate
    async def release_stock(self, ctx: StepContext) -> None:
        await services().undo(ctx.idempotency_key, ctx.forward_key)

    @book.step(timeout=10.0, retry=Retry(attempts=3, backoff=1.0, retry_on=GatewayUnavailable))
    async def charge_card(self, ctx: StepContext) -> None:
        self.charge = await services().charge(ctx.idempotency_key, self.customer, self.amount)

    @charge_card.compensate
    async def refund(self, ctx: StepContext) -> None:
        await services().undo(ctx.idempotency_key, ctx.forward_key)

    @book.step(timeout=5.0, retry=Retry(attempts=2, backoff=0.5, retry_on=CourierBusy))
    async def book_courier(self, ctx: StepContext) -> None:
        self.courier = await services().book(ctx.idempotency_key, self.address)

    @book_courier.compensate
    async def cancel_courier(self, ctx: StepContext) -> None:
        await services().undo(ctx.idempotency_key, ctx.forward_key)

    @step(pivot=True, timeout=5.0)
    async def confirm(self, ctx: StepContext) -> None:
        await services().notify(ctx.idempotency_key, "confirm", f"confirmed {self.order_id}")

    @tell.step(retriable=True, retry=Retry(attempts=5, backoff=1.0))
    async def send_receipt(self, ctx: StepContext) -> None:
        await services().notify(ctx.idempotency_key, "receipt", f"receipt to {self.customer}")

    @tell.step(retriable=True, retry=Retry(attempts=5, backoff=1.0))
    async def tell_warehouse(self, ctx: StepContext) -> None:
        await services().notify(ctx.idempotency_key, "warehouse", f"pick {self.order_id}")

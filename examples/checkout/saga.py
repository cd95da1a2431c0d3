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
from pathlib import Path
from typing import Any

import attrs

from sagaflow import Retry, StepContext, parallel, saga, step

from .._support import case_folder
from . import services as participants
from .services import CourierBusy, GatewayUnavailable, services

__all__ = ["CheckoutSaga", "InvalidOrder", "example_sagas"]


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


def example_sagas() -> Any:
    """Checkouts for the property tests and ``sagaflow verify``: valid orders, and some
    the rules refuse (no address or nothing ordered: invalid; more lamps than the 10 in
    stock; mallory's card is declined), each on participants with no latency and an
    empty ledger. The ledger is a file, so ``--crash`` compares what a killed process
    and its recovery did; the snapshot is every forward effect that stands."""
    from hypothesis import strategies as st

    from sagaflow.testing import SagaCase

    def setup() -> None:
        checkout = participants.reset(_cases_ledger(), latency=0)
        # a SIGKILL loses no committed write without fsync (only a power cut would)
        checkout.ledger.conn.execute("PRAGMA synchronous=OFF")
        checkout.ledger.conn.executescript("DELETE FROM applied; DELETE FROM voided;")
        checkout.declined.add("mallory")

    def snapshot() -> list[tuple[str, str | None]]:
        return services().ledger.standing()

    def case(customer: str, quantity: int, amount: Decimal, address: str) -> SagaCase:
        order = CheckoutSaga("A-1", customer, "lamp", quantity, amount, address)
        return SagaCase(order, setup, snapshot, allow_step_errors=True)

    return st.builds(case, st.sampled_from(["ann", "bob", "mallory"]),
                     st.integers(min_value=0, max_value=12),
                     st.decimals(min_value=0, max_value=500, places=2),
                     st.sampled_from(["1 Main St", "2 High St", ""]))


def _cases_ledger() -> Path:
    """This process's ledger file for the cases."""
    return case_folder("checkout-cases") / "participants.db"

"""Seed 003's order saga: reserve inventory, process the payment, confirm the order.

Every step is compensatable, as the seed's quality gate asks ("all steps have
compensations"): release the reservation, refund, cancel. The steps are coroutines, so
many orders run concurrently on one event loop (``arun``), and a step that overruns its
timeout is cancelled. A timed-out step's outcome is unknown, so its own compensation
runs too; each compensation asks its participant, by the forward call's key, whether
there is anything to undo.

The payment step retries when the gateway is unavailable (the charge was not made, and
the call is idempotent by its key anyway); a declined card or a timeout is not retried:
the saga compensates. The whole order has a 30 s deadline.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from sagaflow import Retry, StepContext, saga, step

from .._support import forward_key
from . import services
from .services import GatewayUnavailable, inventory, orders, payments

__all__ = [
    "InventoryReleased",
    "InventoryReserved",
    "OrderCancelled",
    "OrderConfirmed",
    "OrderSaga",
    "PaymentProcessed",
    "PaymentRefunded",
    "example_sagas",
]


@attrs.frozen
class InventoryReserved:
    order_id: str
    sku: str
    quantity: int


@attrs.frozen
class InventoryReleased:
    order_id: str
    sku: str
    quantity: int


@attrs.frozen
class PaymentProcessed:
    order_id: str
    amount: Decimal


@attrs.frozen
class PaymentRefunded:
    order_id: str
    amount: Decimal


@attrs.frozen
class OrderConfirmed:
    order_id: str


@attrs.frozen
class OrderCancelled:
    order_id: str


@saga(deadline=30.0)
@attrs.define
class OrderSaga:
    order_id: str
    customer: str
    sku: str
    quantity: int
    amount: Decimal
    reservation_id: str | None = None
    charge_id: str | None = None

    @step(timeout=5.0)
    async def reserve_inventory(self, ctx: StepContext) -> None:
        self.reservation_id = await inventory.reserve(
            ctx.idempotency_key, self.order_id, self.sku, self.quantity
        )
        ctx.emit(InventoryReserved(self.order_id, self.sku, self.quantity))

    @reserve_inventory.compensate
    async def release_reservation(self, ctx: StepContext) -> None:
        if await inventory.release(ctx.idempotency_key, forward_key(ctx)):
            ctx.emit(InventoryReleased(self.order_id, self.sku, self.quantity))

    @step(timeout=10.0, retry=Retry(attempts=3, backoff=1.0, retry_on=GatewayUnavailable))
    async def process_payment(self, ctx: StepContext) -> None:
        self.charge_id = await payments.charge(ctx.idempotency_key, self.customer, self.amount)
        ctx.emit(PaymentProcessed(self.order_id, self.amount))

    @process_payment.compensate
    async def refund(self, ctx: StepContext) -> None:
        if await payments.refund(ctx.idempotency_key, forward_key(ctx)):
            ctx.emit(PaymentRefunded(self.order_id, self.amount))

    @step(timeout=5.0)
    async def confirm_order(self, ctx: StepContext) -> None:
        await orders.confirm(ctx.idempotency_key, self.order_id, self.customer)
        ctx.emit(OrderConfirmed(self.order_id))

    @confirm_order.compensate
    async def cancel(self, ctx: StepContext) -> None:
        if await orders.cancel(ctx.idempotency_key, forward_key(ctx)):
            ctx.emit(OrderCancelled(self.order_id))


def example_sagas() -> Any:
    """Orders for the property tests and ``sagaflow verify``, each on fresh services with
    no latency (the demo's 50-200 ms per call would only slow the checks down): 5
    keyboards in stock, and mallory's card declined, so that an order for more than the
    stock or by her is refused (a step error the saga compensates). The services' state
    is filed (``services.STATE``), so that ``--crash`` compares what a killed process and
    its recovery did. The snapshot is their net state: stock, units held, net charged per
    customer, confirmed orders (a compensated order must leave it as found)."""
    from hypothesis import strategies as st

    from sagaflow.testing import SagaCase

    def setup() -> None:
        services.reset(latency=0)
        inventory.stock("keyboard", 5)
        payments.declined.add("mallory")
        services.STATE.use()

    def snapshot() -> dict[str, object]:
        with services.STATE.held():
            return net()

    def net() -> dict[str, object]:
        customers = {c.customer for c in payments.charges.values()}
        return {
            "available": dict(inventory.available),
            "held": {sku: inventory.held(sku) for sku in inventory.available},
            "charged": {c: payments.net_charged(c) for c in sorted(customers)
                        if payments.net_charged(c)},
            "confirmed": sorted(o.order_id for o in orders.orders.values()
                                if o.status == "CONFIRMED"),
        }

    def case(customer: str, quantity: int, amount: Decimal) -> SagaCase:
        order = OrderSaga("order-1", customer, "keyboard", quantity, amount)
        return SagaCase(order, setup, snapshot, allow_step_errors=True)

    return st.builds(case, st.sampled_from(["alice", "bob", "mallory"]),
                     st.integers(min_value=1, max_value=7),
                     st.decimals(min_value=Decimal("0.01"), max_value=500, places=2))

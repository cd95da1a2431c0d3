"""Seeds 002/003's order, written twice: ``OrderOrchestration`` (orchestrated: one process runs
the steps in order) and ``OrderFlow`` (choreographed: each participant reacts to the
event before its step and publishes its own; sagaflow keeps the map and tracks every
instance). Both call the same services.

order created -> stock reserved -> payment processed -> order confirmed; a payment that
fails releases the stock (StockReleased), and the order is rejected.
"""

from __future__ import annotations

from decimal import Decimal

import attrs

from sagaflow import Retry, saga, step
from sagaflow.choreography import choreography
from sagaflow.choreography import step as reacts

# --- the events ---------------------------------------------------------------------


@attrs.frozen
class OrderCreated:
    order_id: str
    amount: Decimal


@attrs.frozen
class StockReserved:
    order_id: str


@attrs.frozen
class StockReleased:
    order_id: str


@attrs.frozen
class PaymentProcessed:
    order_id: str
    charge_id: str


@attrs.frozen
class PaymentRefunded:
    order_id: str


@attrs.frozen
class OrderConfirmed:
    order_id: str


# --- the services (in memory: what the participants call) ----------------------------


class PaymentDeclined(Exception):
    """The card was declined: the order cannot go on."""


@attrs.define
class Services:
    """The inventory, payments and orders services, in memory. ``limit``: a payment
    above it is declined; ``flaky``: how many payment calls fail before one works."""

    limit: Decimal = Decimal("1000")
    flaky: int = 0
    reserved: set[str] = attrs.field(factory=set)
    charged: dict[str, Decimal] = attrs.field(factory=dict)
    confirmed: set[str] = attrs.field(factory=set)
    calls: list[str] = attrs.field(factory=list)

    def reserve(self, order_id: str) -> None:
        self.calls.append(f"reserve {order_id}")
        self.reserved.add(order_id)

    def release(self, order_id: str) -> None:
        self.calls.append(f"release {order_id}")
        self.reserved.discard(order_id)

    def charge(self, order_id: str, amount: Decimal) -> str:
        self.calls.append(f"charge {order_id}")
        if self.flaky > 0:
            self.flaky -= 1
            raise ConnectionError("payments: connection reset")
        if amount > self.limit:
            raise PaymentDeclined(f"{amount} is over the card's limit")
        self.charged[order_id] = amount
        return f"ch-{order_id}"

    def refund(self, order_id: str) -> None:
        self.calls.append(f"refund {order_id}")
        self.charged.pop(order_id, None)

    def confirm(self, order_id: str) -> None:
        self.calls.append(f"confirm {order_id}")
        self.confirmed.add(order_id)


#: What the steps call (a test or the demo resets it).
services = Services()


# --- choreographed -------------------------------------------------------------------


@choreography(start=OrderCreated, correlation="order_id", deadline=600)
@attrs.define
class OrderFlow:
    """Each step is one participant's reaction to the event before it."""

    order_id: str
    amount: Decimal
    charge_id: str | None = None

    @reacts(emits=StockReserved, participant="inventory")  # reacts to OrderCreated
    def reserve_stock(self, ctx):
        services.reserve(self.order_id)  # StockReserved is built: only order_id

    @reserve_stock.compensate(emits=StockReleased)
    def release_stock(self, ctx):
        services.release(self.order_id)

    @reacts(emits=PaymentProcessed, participant="payments", timeout=5,
            retry=Retry(3, backoff=0.01, retry_on=(ConnectionError,)))
    def charge(self, ctx):  # reacts to StockReserved
        self.charge_id = services.charge(self.order_id, self.amount)
        ctx.emit(PaymentProcessed(self.order_id, self.charge_id))

    @charge.compensate(emits=PaymentRefunded)
    def refund(self, ctx):
        services.refund(self.order_id)

    @reacts(pivot=True, emits=OrderConfirmed, participant="orders")
    def confirm(self, ctx):  # reacts to PaymentProcessed
        services.confirm(self.order_id)


# --- orchestrated ----------------------------------------------------------------------


@saga(deadline=600)
@attrs.define
class OrderOrchestration:
    """The same order, one process calling each service in turn."""

    order_id: str
    amount: Decimal
    charge_id: str | None = None

    @step
    def reserve_stock(self, ctx):
        services.reserve(self.order_id)

    @reserve_stock.compensate
    def release_stock(self, ctx):
        services.release(self.order_id)

    @step(timeout=5, retry=Retry(3, backoff=0.01, retry_on=(ConnectionError,)))
    def charge(self, ctx):
        self.charge_id = services.charge(self.order_id, self.amount)

    @charge.compensate
    def refund(self, ctx):
        services.refund(self.order_id)

    @step(pivot=True)
    def confirm(self, ctx):
        services.confirm(self.order_id)

"""Seeds 002/003's order, written twice: ``OrderOrchestration`` (orchestrated: one process runs
the steps in order) and ``OrderFlow`` (choreographed: each participant reacts to the
event before its step and publishes its own; sagaflow keeps the map and tracks every
instance). Both call the same services.

order created -> stock reserved -> payment processed -> order confirmed; a payment that
fails releases the stock (StockReleased), and the order is rejected.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from sagaflow import Retry, saga, step
from sagaflow.choreography import choreography
from sagaflow.choreography import step as reacts

from .._filed import StateFile, filed

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
    #: where the state is kept when it must outlive a process (example_sagas())
    state_file: StateFile | None = attrs.field(default=None, eq=False, repr=False)

    @filed
    def reserve(self, order_id: str) -> None:
        self.calls.append(f"reserve {order_id}")
        self.reserved.add(order_id)

    @filed
    def release(self, order_id: str) -> None:
        self.calls.append(f"release {order_id}")
        self.reserved.discard(order_id)

    @filed
    def charge(self, order_id: str, amount: Decimal) -> str:
        self.calls.append(f"charge {order_id}")
        if self.flaky > 0:
            self.flaky -= 1
            raise ConnectionError("payments: connection reset")
        if amount > self.limit:
            raise PaymentDeclined(f"{amount} is over the card's limit")
        self.charged[order_id] = amount
        return f"ch-{order_id}"

    @filed
    def refund(self, order_id: str) -> None:
        self.calls.append(f"refund {order_id}")
        self.charged.pop(order_id, None)

    @filed
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


# --- the cases the property tests and `sagaflow verify` run ----------------------------

#: The services' state file for example_sagas()' cases (pointed at each fresh Services).
STATE = StateFile("choreography")


def example_sagas() -> Any:
    """Orders, both ways, for the property tests and ``sagaflow verify``: each on fresh
    services kept in a file (so that a crash check's killed process leaves its effects
    behind, as real services would); an amount over the card's limit is declined (a step
    error: the stock is released). The snapshot: what is reserved, charged, confirmed."""
    from hypothesis import strategies as st

    from sagaflow.testing import SagaCase

    def setup() -> None:
        global services
        services = Services()
        STATE.services = {"services": services}
        STATE.use()

    def snapshot() -> dict[str, Any]:
        with STATE.held():
            return {"reserved": sorted(services.reserved),
                    "charged": sorted(services.charged.items()),
                    "confirmed": sorted(services.confirmed)}

    def case(flow: type, order_id: str, amount: Decimal) -> SagaCase:
        return SagaCase(flow(order_id, amount), setup, snapshot, allow_step_errors=True)

    return st.builds(case, st.sampled_from([OrderOrchestration, OrderFlow]),
                     st.sampled_from(["o-1", "o-2"]),
                     st.decimals(min_value=1, max_value=1500, places=2))

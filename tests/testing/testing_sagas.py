"""Sample sagas for the testing toolkit's tests: sound ones, and deliberately broken ones.

The participants are in-process ledgers (``verify_sagas.ledger``'s, shared with the verify
sagas) that do what real ones should: apply each idempotency key once, and undo a forward
call by its key only if it took effect.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import strategies as st
from verify_sagas.ledger import Ledger, forward_key

from sagaflow import Retry, StepContext, saga, step
from sagaflow.testing import SagaCase

STOCK = Ledger()
PAYMENTS = Ledger()
APPROVALS = Ledger()
SHIPPING = Ledger()
MAIL = Ledger()
WORLD = (STOCK, PAYMENTS, APPROVALS, SHIPPING, MAIL)


def reset_world() -> None:
    for ledger in WORLD:
        ledger.reset()


def world() -> dict[str, Any]:
    return {
        "stock": STOCK.snapshot(),
        "payments": PAYMENTS.snapshot(),
        "approvals": APPROVALS.snapshot(),
        "shipping": SHIPPING.snapshot(),
        "mail": MAIL.snapshot(),
    }


@saga(name="shop")
class Shop:
    """Every kind of step: compensatable (with retries), readonly, conditional, pivot,
    retriable."""

    customer: str = "ann"
    quantity: int = 1

    @step(retry=Retry(attempts=3, backoff=0.5))
    def reserve(self, ctx: StepContext) -> None:
        STOCK.apply(ctx.idempotency_key, "sku", -self.quantity)

    @reserve.compensate
    def release(self, ctx: StepContext) -> None:
        STOCK.undo(ctx.idempotency_key, forward_key(ctx))

    @step(readonly=True)
    def check(self, ctx: StepContext) -> None:
        assert STOCK.balances.get("sku", 0) <= 0

    @step(when=lambda s: s.quantity > 5)
    def approve(self, ctx: StepContext) -> None:
        APPROVALS.apply(ctx.idempotency_key, self.customer, 1)

    @approve.compensate
    def withdraw(self, ctx: StepContext) -> None:
        APPROVALS.undo(ctx.idempotency_key, forward_key(ctx))

    @step(retry=Retry(attempts=2, backoff=1.0, retry_on=ConnectionError))
    def charge(self, ctx: StepContext) -> None:
        PAYMENTS.apply(ctx.idempotency_key, self.customer, -10 * self.quantity)
        ctx.emit(("charged", self.customer))

    @charge.compensate(retry=Retry(attempts=4, backoff=0.25, jitter=0.0))
    def refund(self, ctx: StepContext) -> None:
        PAYMENTS.undo(ctx.idempotency_key, forward_key(ctx))
        ctx.emit(("refunded", self.customer))

    @step(pivot=True, timeout=None)
    def ship(self, ctx: StepContext) -> None:
        SHIPPING.apply(ctx.idempotency_key, self.customer, 1)

    @step(retriable=True, retry=Retry(attempts=3, backoff=1.0, jitter=0.0))
    def notify(self, ctx: StepContext) -> None:
        MAIL.apply(ctx.idempotency_key, self.customer, 1)


def shop_cases() -> st.SearchStrategy[SagaCase]:
    return st.builds(
        lambda customer, quantity: SagaCase(Shop(customer, quantity), reset_world, world),
        st.sampled_from(["ann", "bob"]),
        st.integers(1, 9),
    )


@saga(name="trip", deadline=120.0, compensation_deadline=60.0)
class Trip:
    """Coroutine steps, a saga deadline and a compensation deadline."""

    traveller: str = "ann"

    @step(timeout=10.0, retry=Retry(attempts=3, backoff=2.0))
    async def flight(self, ctx: StepContext) -> None:
        await asyncio.sleep(0.05)  # latency: free on the virtual-time loop
        PAYMENTS.apply(ctx.idempotency_key, "flight", 300)

    @flight.compensate(retry=Retry(attempts=3, backoff=5.0))
    async def cancel_flight(self, ctx: StepContext) -> None:
        PAYMENTS.undo(ctx.idempotency_key, forward_key(ctx))

    @step(timeout=10.0)
    async def hotel(self, ctx: StepContext) -> None:
        PAYMENTS.apply(ctx.idempotency_key, "hotel", 200)

    @hotel.compensate
    async def cancel_hotel(self, ctx: StepContext) -> None:
        PAYMENTS.undo(ctx.idempotency_key, forward_key(ctx))

    @step(readonly=True, timeout=5.0)
    async def confirm(self, ctx: StepContext) -> None:
        await asyncio.sleep(0)


def trip_cases() -> st.SearchStrategy[SagaCase]:
    return st.builds(lambda: SagaCase(Trip(), reset_world, world))


# -- deliberately broken sagas -----------------------------------------------------------


@saga(name="double_release")
class DoubleRelease:
    """Its compensation checks that there is something to undo, but not its own key:
    run twice (a lost reply, a retry), it puts the stock back twice (seed 000's gap)."""

    quantity: int = 1

    @step
    def reserve(self, ctx: StepContext) -> None:
        STOCK.apply(ctx.idempotency_key, "sku", -self.quantity)

    @reserve.compensate
    def release(self, ctx: StepContext) -> None:
        if forward_key(ctx) in STOCK.applied:
            STOCK.balances["sku"] += self.quantity  # BUG: not idempotent

    @step(pivot=True, timeout=None)
    def confirm(self, ctx: StepContext) -> None:
        SHIPPING.apply(ctx.idempotency_key, "order", 1)


HOTEL: dict[str, str] = {}


@saga(name="fragile_hotel")
class FragileHotel:
    """Its compensation assumes the booking exists: with nothing to undo it crashes."""

    guest: str = "ann"
    booking: str | None = None

    @step
    def book(self, ctx: StepContext) -> None:
        self.booking = f"b-{self.guest}"
        HOTEL[self.booking] = self.guest

    @book.compensate
    def cancel(self, ctx: StepContext) -> None:
        del HOTEL[f"b-{self.guest}"]  # BUG: KeyError when the booking never happened

    @step(pivot=True, timeout=None)
    def pay(self, ctx: StepContext) -> None:
        pass


def hotel_case() -> SagaCase:
    return SagaCase(FragileHotel(), HOTEL.clear, lambda: dict(HOTEL))


SUBSCRIPTIONS: dict[str, dict[str, Any]] = {}


def reset_subscriptions() -> None:
    SUBSCRIPTIONS.clear()
    SUBSCRIPTIONS["sub-1"] = {"price": 100, "approval_id": None}


def subscriptions() -> dict[str, dict[str, Any]]:
    return {k: dict(v) for k, v in SUBSCRIPTIONS.items()}


@saga(name="forgetful_unbundle")
class ForgetfulUnbundle:
    """Its compensation restores the price but forgets the approval it recorded."""

    subscription: str = "sub-1"
    new_price: int = 60
    original_price: int | None = None  # kept only for the compensation

    @step
    def modify(self, ctx: StepContext) -> None:
        row = SUBSCRIPTIONS[self.subscription]
        if self.original_price is None:
            self.original_price = row["price"]
        row["price"] = self.new_price
        row["approval_id"] = f"appr-{ctx.saga_id}"

    @modify.compensate
    def revert(self, ctx: StepContext) -> None:
        if self.original_price is not None:
            SUBSCRIPTIONS[self.subscription]["price"] = self.original_price
        # BUG: forgets SUBSCRIPTIONS[...]["approval_id"]

    @step(pivot=True, timeout=None)
    def notify(self, ctx: StepContext) -> None:
        pass


def unbundle_case() -> SagaCase:
    return SagaCase(ForgetfulUnbundle(), reset_subscriptions, subscriptions)

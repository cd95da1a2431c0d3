"""Waiting sagas for the testing toolkit's tests: a sound one, and deliberately broken ones.

The participants are the ledgers of :mod:`testing_sagas` (each idempotency key applies
once; a compensation undoes its forward call's key only if it took effect).
"""

from __future__ import annotations

import asyncio

import attrs
from hypothesis import strategies as st
from testing_sagas import MAIL, PAYMENTS, SHIPPING, STOCK, forward_key, reset_world, world

from sagaflow import Retry, SagaRejected, StepContext, saga, step, timer, wait
from sagaflow.testing import SagaCase

HOUR = 3600.0
DAY = 24 * HOUR


@attrs.frozen
class Decision:
    """What an approver answers."""

    approved: bool
    by: str
    reason: str = ""


def needs_approval(s: OrderApproval) -> bool:
    return s.amount > 100


@saga(name="order_approval", deadline=10 * DAY)
class OrderApproval:
    """Every kind of wait: a conditional approval that may reject (before the pivot, so a
    timeout compensates), a second decision of the same name that may not come
    (``on_timeout='continue'``), a timer, and a wait after the pivot (a timeout fails for
    an operator)."""

    order: str = "o-1"
    amount: int = 500
    approved_by: str | None = None
    seconded_by: str | None = None
    delivered: bool = False

    @step(retry=Retry(attempts=3, backoff=1.0))
    def reserve(self, ctx: StepContext) -> None:
        STOCK.apply(ctx.idempotency_key, self.order, -1)

    @reserve.compensate
    def release(self, ctx: StepContext) -> None:
        STOCK.undo(ctx.idempotency_key, forward_key(ctx))

    @wait("decision", payload=Decision, timeout=3 * DAY, when=needs_approval)
    def approval(self, decision: Decision, ctx: StepContext) -> None:
        if not decision.approved:
            raise SagaRejected(f"refused by {decision.by}: {decision.reason}")
        self.approved_by = decision.by

    @wait("decision", payload=Decision, timeout=DAY, on_timeout="continue")
    def second_opinion(self, decision: Decision, ctx: StepContext) -> None:
        if not decision.approved:
            raise SagaRejected(f"vetoed by {decision.by}")
        self.seconded_by = decision.by

    @step(retry=Retry(attempts=2, backoff=1.0, retry_on=ConnectionError))
    def charge(self, ctx: StepContext) -> None:
        PAYMENTS.apply(ctx.idempotency_key, self.order, -self.amount)

    @charge.compensate
    def refund(self, ctx: StepContext) -> None:
        PAYMENTS.undo(ctx.idempotency_key, forward_key(ctx))

    @timer(after=HOUR)
    def cooling_off(self, ctx: StepContext) -> None:
        pass

    @step(pivot=True)
    def ship(self, ctx: StepContext) -> None:
        SHIPPING.apply(ctx.idempotency_key, self.order, 1)

    @wait("delivered", timeout=7 * DAY)
    def arrival(self, ctx: StepContext) -> None:
        self.delivered = True

    @step(retriable=True, retry=Retry(attempts=3, backoff=1.0, jitter=0.0))
    def notify(self, ctx: StepContext) -> None:
        MAIL.apply(ctx.idempotency_key, self.order, 1)


names = st.sampled_from(["ann", "bob"])
#: what approvers answer: yes or no
DECISIONS = {"decision": st.builds(Decision, st.booleans(), names)}
#: answers the handlers must reject
REFUSALS = {"decision": st.builds(Decision, st.just(False), names, st.just("too much"))}


def order_cases() -> st.SearchStrategy[SagaCase]:
    return st.builds(
        lambda amount: SagaCase(OrderApproval("o-1", amount), reset_world, world),
        st.sampled_from([50, 500]),
    )


@saga(name="async_booking", deadline=2 * DAY)
class AsyncBooking:
    """Coroutine steps and a coroutine handler, a deadline over the wait."""

    guest: str = "ann"
    confirmed_by: str | None = None

    @step(timeout=10.0, retry=Retry(attempts=2, backoff=1.0))
    async def hold_room(self, ctx: StepContext) -> None:
        await asyncio.sleep(0.01)  # latency: free on the virtual-time loop
        PAYMENTS.apply(ctx.idempotency_key, "room", 100)

    @hold_room.compensate
    async def free_room(self, ctx: StepContext) -> None:
        PAYMENTS.undo(ctx.idempotency_key, forward_key(ctx))

    @wait("confirmation", payload=Decision, timeout=DAY)
    async def confirmation(self, decision: Decision, ctx: StepContext) -> None:
        await asyncio.sleep(0)
        if not decision.approved:
            raise SagaRejected(f"{decision.by} cancelled")
        self.confirmed_by = decision.by

    @step(pivot=True, timeout=5.0)
    async def pay(self, ctx: StepContext) -> None:
        PAYMENTS.apply(ctx.idempotency_key, "paid", 1)


def booking_cases() -> st.SearchStrategy[SagaCase]:
    return st.builds(lambda: SagaCase(AsyncBooking(), reset_world, world))


#: what guests answer
CONFIRMATIONS = {"confirmation": st.builds(Decision, st.booleans(), names)}


# -- deliberately broken waiting sagas ---------------------------------------------------


@saga(name="leaky_hold")
class LeakyHold:
    """It holds stock in a step it declares readonly, so nothing gives the stock back
    when the approval says no, or never comes."""

    order: str = "o-1"

    @step(readonly=True)  # BUG: it changes the world: it needs a compensation
    def hold(self, ctx: StepContext) -> None:
        STOCK.apply(ctx.idempotency_key, self.order, -1)

    @wait("decision", payload=Decision, timeout=3 * DAY)
    def approval(self, decision: Decision, ctx: StepContext) -> None:
        if not decision.approved:
            raise SagaRejected(f"refused by {decision.by}")

    @step(pivot=True)
    def ship(self, ctx: StepContext) -> None:
        SHIPPING.apply(ctx.idempotency_key, self.order, 1)


@saga(name="careless_approval")
class CarelessApproval:
    """Its handler records who answered and never looks at the answer."""

    order: str = "o-1"
    approved_by: str | None = None

    @step
    def reserve(self, ctx: StepContext) -> None:
        STOCK.apply(ctx.idempotency_key, self.order, -1)

    @reserve.compensate
    def release(self, ctx: StepContext) -> None:
        STOCK.undo(ctx.idempotency_key, forward_key(ctx))

    @wait("decision", payload=Decision, timeout=3 * DAY)
    def approval(self, decision: Decision, ctx: StepContext) -> None:
        self.approved_by = decision.by  # BUG: a "no" goes through

    @step(pivot=True)
    def ship(self, ctx: StepContext) -> None:
        SHIPPING.apply(ctx.idempotency_key, self.order, 1)


@saga(name="impatient_approval")
class ImpatientApproval:
    """Its approval may time out and the saga go on, but a later step counts on the
    handler having run."""

    order: str = "o-1"
    approved_by: str | None = None

    @wait("decision", payload=Decision, timeout=DAY, on_timeout="continue")
    def approval(self, decision: Decision, ctx: StepContext) -> None:
        self.approved_by = decision.by

    @step(pivot=True)
    def ship(self, ctx: StepContext) -> None:
        label = self.approved_by.upper()  # type: ignore[union-attr]  # BUG: None on a timeout
        SHIPPING.apply(ctx.idempotency_key, label, 1)


@saga(name="fee_on_timer", deadline=2 * DAY)
class FeeOnTimer:
    """Its cooling-off timer charges a late fee when it fires: a timer is readonly (it
    has no compensation), so a saga compensated after it keeps the fee."""

    order: str = "o-1"

    @step
    def reserve(self, ctx: StepContext) -> None:
        STOCK.apply(ctx.idempotency_key, self.order, -1)

    @reserve.compensate
    def release(self, ctx: StepContext) -> None:
        STOCK.undo(ctx.idempotency_key, forward_key(ctx))

    @timer(after=DAY)
    def cooling_off(self, ctx: StepContext) -> None:
        PAYMENTS.apply(ctx.idempotency_key, self.order, -5)  # BUG: an effect in a timer

    @step
    def charge(self, ctx: StepContext) -> None:
        PAYMENTS.apply(ctx.idempotency_key, self.order, -100)

    @charge.compensate
    def refund(self, ctx: StepContext) -> None:
        PAYMENTS.undo(ctx.idempotency_key, forward_key(ctx))

    @step(pivot=True)
    def ship(self, ctx: StepContext) -> None:
        SHIPPING.apply(ctx.idempotency_key, self.order, 1)


def broken_case(saga_class: type) -> SagaCase:
    return SagaCase(saga_class(), reset_world, world)

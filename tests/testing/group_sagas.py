"""Sample sagas with a parallel group and a fan-out, for the toolkit's tests: sound ones,
and deliberately broken ones. Participants are the ledgers of ``testing_sagas``."""

from __future__ import annotations

import asyncio

from hypothesis import strategies as st
from testing_sagas import MAIL, PAYMENTS, SHIPPING, STOCK, reset_world, world

from sagaflow import Retry, StepContext, parallel, saga, step
from sagaflow.testing import SagaCase


def forward_key(ctx: StepContext) -> str:
    return f"{ctx.saga_id}:{ctx.step}:forward"


@saga(name="booking")
class Booking:
    """validate; a group of three compensatable members (retries, timeouts); a pivot."""

    customer: str = "ann"

    book = parallel(limit=2)

    @step(timeout=5)
    def hold(self, ctx: StepContext) -> None:
        MAIL.apply(ctx.idempotency_key, self.customer, 1)

    @hold.compensate
    def unhold(self, ctx: StepContext) -> None:
        MAIL.undo(ctx.idempotency_key, forward_key(ctx))

    @book.step(timeout=5, retry=Retry(attempts=3, backoff=0.5))
    def stock(self, ctx: StepContext) -> None:
        STOCK.apply(ctx.idempotency_key, "sku", -1)

    @stock.compensate
    def release(self, ctx: StepContext) -> None:
        STOCK.undo(ctx.idempotency_key, forward_key(ctx))

    @book.step(timeout=5)
    def payment(self, ctx: StepContext) -> None:
        PAYMENTS.apply(ctx.idempotency_key, self.customer, -10)

    @payment.compensate(retry=Retry(attempts=4, backoff=0.25, jitter=0.0))
    def refund(self, ctx: StepContext) -> None:
        PAYMENTS.undo(ctx.idempotency_key, forward_key(ctx))

    @book.step(timeout=5)
    def shipping(self, ctx: StepContext) -> None:
        SHIPPING.apply(ctx.idempotency_key, self.customer, 1)

    @shipping.compensate
    def unship(self, ctx: StepContext) -> None:
        SHIPPING.undo(ctx.idempotency_key, forward_key(ctx))

    @step(pivot=True, timeout=5)
    def confirm(self, ctx: StepContext) -> None:
        pass


@saga(name="picking")
class Picking:
    """A fan-out over ``lines`` (keyed by sku), between a compensatable step and a pivot."""

    lines: list[str] = ["a", "b", "c"]  # noqa: RUF012 (attrs copies nothing: never mutated)

    @step(timeout=5)
    def hold(self, ctx: StepContext) -> None:
        MAIL.apply(ctx.idempotency_key, "picker", 1)

    @hold.compensate
    def unhold(self, ctx: StepContext) -> None:
        MAIL.undo(ctx.idempotency_key, forward_key(ctx))

    @step(each="lines", key=lambda line: line, limit=2, timeout=5,
          retry=Retry(attempts=2, backoff=0.5))
    def pick(self, line: str, ctx: StepContext) -> None:
        STOCK.apply(ctx.idempotency_key, line, -1)

    @pick.compensate
    def unpick(self, line: str, ctx: StepContext) -> None:
        STOCK.undo(ctx.idempotency_key, forward_key(ctx))

    @step(pivot=True, timeout=5)
    def confirm(self, ctx: StepContext) -> None:
        pass


@saga(name="sloppy_picking")
class SloppyPicking:
    """BROKEN: its compensation undoes the item's line by the line name, not by the
    item's forward key: an item that never took effect is 'undone' all the same."""

    lines: list[str] = ["a", "b"]  # noqa: RUF012

    @step(each="lines", key=lambda line: line, timeout=5)
    def pick(self, line: str, ctx: StepContext) -> None:
        STOCK.apply(ctx.idempotency_key, line, -1)

    @pick.compensate
    def unpick(self, line: str, ctx: StepContext) -> None:
        STOCK.balances[line] = STOCK.balances.get(line, 0) + 1  # whether or not it was picked

    @step(pivot=True, timeout=5)
    def confirm(self, ctx: StepContext) -> None:
        pass


@saga(name="async_booking")
class AsyncBooking:
    """Booking with coroutine members: under the async driver they are tasks, cancelled
    (their outcome unknown) when a sibling fails for good."""

    customer: str = "ann"

    book = parallel(limit=2, compensate="reverse")

    @step(timeout=5)
    async def hold(self, ctx: StepContext) -> None:
        MAIL.apply(ctx.idempotency_key, self.customer, 1)

    @hold.compensate
    async def unhold(self, ctx: StepContext) -> None:
        MAIL.undo(ctx.idempotency_key, forward_key(ctx))

    @book.step(timeout=5, retry=Retry(attempts=3, backoff=0.5))
    async def stock(self, ctx: StepContext) -> None:
        await asyncio.sleep(0.05)  # latency: free on the virtual-time loop
        STOCK.apply(ctx.idempotency_key, "sku", -1)

    @stock.compensate
    async def release(self, ctx: StepContext) -> None:
        STOCK.undo(ctx.idempotency_key, forward_key(ctx))

    @book.step(timeout=5)
    async def payment(self, ctx: StepContext) -> None:
        await asyncio.sleep(0.02)
        PAYMENTS.apply(ctx.idempotency_key, self.customer, -10)

    @payment.compensate(retry=Retry(attempts=4, backoff=0.25, jitter=0.0))
    async def refund(self, ctx: StepContext) -> None:
        PAYMENTS.undo(ctx.idempotency_key, forward_key(ctx))

    @book.step(timeout=5)
    async def shipping(self, ctx: StepContext) -> None:
        SHIPPING.apply(ctx.idempotency_key, self.customer, 1)

    @shipping.compensate
    async def unship(self, ctx: StepContext) -> None:
        SHIPPING.undo(ctx.idempotency_key, forward_key(ctx))

    @step(pivot=True, timeout=5)
    async def confirm(self, ctx: StepContext) -> None:
        await asyncio.sleep(0)


@saga(name="careless_booking")
class CarelessBooking:
    """BROKEN: the payment member's compensation refunds the customer by account, not
    by the member's forward key: a payment that never took effect (it timed out first,
    or a crash cut it off) is refunded all the same, and the customer is paid."""

    customer: str = "ann"

    book = parallel()

    @book.step(timeout=5)
    def stock(self, ctx: StepContext) -> None:
        STOCK.apply(ctx.idempotency_key, "sku", -1)

    @stock.compensate
    def release(self, ctx: StepContext) -> None:
        STOCK.undo(ctx.idempotency_key, forward_key(ctx))

    @book.step(timeout=5)
    def payment(self, ctx: StepContext) -> None:
        PAYMENTS.apply(ctx.idempotency_key, self.customer, -10)

    @payment.compensate
    def refund(self, ctx: StepContext) -> None:
        PAYMENTS.balances[self.customer] = PAYMENTS.balances.get(self.customer, 0) + 10

    @step(pivot=True, timeout=5)
    def confirm(self, ctx: StepContext) -> None:
        pass


def booking_case() -> SagaCase:
    return SagaCase(Booking(), reset_world, world)


def picking_case() -> SagaCase:
    return SagaCase(Picking(), reset_world, world)


def async_booking_case() -> SagaCase:
    return SagaCase(AsyncBooking(), reset_world, world)


def careless_case() -> SagaCase:
    return SagaCase(CarelessBooking(), reset_world, world)


def sloppy_case() -> SagaCase:
    return SagaCase(SloppyPicking(), reset_world, world)


def booking_cases() -> st.SearchStrategy[SagaCase]:
    return st.builds(booking_case)


def async_booking_cases() -> st.SearchStrategy[SagaCase]:
    return st.builds(async_booking_case)


def picking_cases() -> st.SearchStrategy[SagaCase]:
    return st.builds(
        lambda lines: SagaCase(Picking(lines=lines), reset_world, world),
        st.lists(st.sampled_from("abcd"), max_size=4, unique=True),
    )

"""Sound sagas (a sequential one with every kind of step, a parallel group of coroutine
members): every gate of ``sagaflow verify`` passes."""

from __future__ import annotations

from typing import Any

from sagaflow import Retry, StepContext, parallel, saga, step

from .ledger import LEDGER, cases, forward_key


@saga(name="good_order")
class GoodOrder:
    customer: str = "ann"
    amount: int = 10

    @step(readonly=True, timeout=5)
    def validate(self, ctx: StepContext) -> None:
        if self.amount <= 0:
            raise ValueError("the amount must be positive")

    @step(timeout=5, retry=Retry(attempts=3, backoff=0.5))
    def charge(self, ctx: StepContext) -> None:
        LEDGER.apply(ctx.idempotency_key, self.customer, -self.amount)

    @charge.compensate
    def refund(self, ctx: StepContext) -> None:
        LEDGER.undo(ctx.idempotency_key, forward_key(ctx))

    @step(pivot=True, timeout=5)
    def confirm(self, ctx: StepContext) -> None:
        pass

    @step(retriable=True, retry=Retry(attempts=5, backoff=1.0), timeout=5)
    def notify(self, ctx: StepContext) -> None:
        pass


@saga(name="good_booking")
class GoodBooking:
    customer: str = "bob"

    book = parallel(limit=2)

    @book.step(timeout=5)
    async def seat(self, ctx: StepContext) -> None:
        LEDGER.apply(ctx.idempotency_key, "seats", -1)

    @seat.compensate
    async def free_seat(self, ctx: StepContext) -> None:
        LEDGER.undo(ctx.idempotency_key, forward_key(ctx))

    @book.step(timeout=5, retry=Retry(attempts=2, backoff=0.1))
    async def meal(self, ctx: StepContext) -> None:
        LEDGER.apply(ctx.idempotency_key, "meals", -1)

    @meal.compensate
    async def cancel_meal(self, ctx: StepContext) -> None:
        LEDGER.undo(ctx.idempotency_key, forward_key(ctx))


def example_sagas() -> Any:
    from hypothesis import strategies as st

    return cases(st.builds(GoodOrder, st.sampled_from(["ann", "cy"]), st.integers(1, 50)),
                 GoodBooking)

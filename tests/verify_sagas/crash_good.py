"""A sound saga whose participant outlives the process: it passes the crash points."""

from __future__ import annotations

from typing import Any

from sagaflow import StepContext, saga, step

from . import filed
from .ledger import cases, forward_key


@saga(name="durable_order")
class DurableOrder:
    @step(timeout=5)
    def reserve(self, ctx: StepContext) -> None:
        filed.apply(ctx.idempotency_key, "stock", -1)

    @reserve.compensate
    def release(self, ctx: StepContext) -> None:
        filed.undo(ctx.idempotency_key, forward_key(ctx))

    @step(timeout=5)
    def charge(self, ctx: StepContext) -> None:
        filed.apply(ctx.idempotency_key, "card", -30)

    @charge.compensate
    def refund(self, ctx: StepContext) -> None:
        filed.undo(ctx.idempotency_key, forward_key(ctx))

    @step(pivot=True, timeout=5)
    def ship(self, ctx: StepContext) -> None:
        pass


def example_sagas() -> Any:
    return cases(DurableOrder, setup=filed.reset, snapshot=filed.snapshot)

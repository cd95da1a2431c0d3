"""BROKEN (timeouts gate): a step and a compensation that may hang forever."""

from __future__ import annotations

from typing import Any

from sagaflow import StepContext, saga, step

from .ledger import LEDGER, cases, forward_key


@saga(name="unbounded")
class Unbounded:
    @step(timeout=None)
    def charge(self, ctx: StepContext) -> None:
        LEDGER.apply(ctx.idempotency_key, "ann", -1)

    @charge.compensate(timeout=None)
    def refund(self, ctx: StepContext) -> None:
        LEDGER.undo(ctx.idempotency_key, forward_key(ctx))


def example_sagas() -> Any:
    return cases(Unbounded)

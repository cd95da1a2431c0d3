"""BROKEN (idempotency gate): the refund checks that the charge took effect but not
its own key, so run twice it refunds twice. It is never retried (one attempt), so no
generated plan runs it twice: only the direct check catches it."""

from __future__ import annotations

from typing import Any

from sagaflow import Retry, StepContext, saga, step

from .ledger import LEDGER, cases, forward_key


@saga(name="double_refund")
class DoubleRefund:
    @step(timeout=5)
    def charge(self, ctx: StepContext) -> None:
        LEDGER.apply(ctx.idempotency_key, "ann", -10)

    @charge.compensate(retry=Retry(attempts=1))
    def refund(self, ctx: StepContext) -> None:
        if forward_key(ctx) in LEDGER.applied:  # but not whether this key refunded already
            LEDGER.balances["ann"] += 10

    @step(pivot=True, timeout=5)
    def confirm(self, ctx: StepContext) -> None:
        pass


def example_sagas() -> Any:
    return cases(DoubleRefund)

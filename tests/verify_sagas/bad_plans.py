"""BROKEN (plans gate): the charge applies itself again when it is retried (it ignores
its idempotency key), so a timed-out attempt that took effect charges twice; its
compensation undoes one charge. Compensations are sound: only the plans catch it."""

from __future__ import annotations

from typing import Any

from sagaflow import Retry, StepContext, saga, step

from .ledger import LEDGER, cases, forward_key


@saga(name="double_charge")
class DoubleCharge:
    @step(timeout=5, retry=Retry(attempts=3, backoff=0.5))
    def charge(self, ctx: StepContext) -> None:
        LEDGER.balances["ann"] = LEDGER.balances.get("ann", 0) - 10  # every attempt
        LEDGER.applied.setdefault(ctx.idempotency_key, ("ann", -10))

    @charge.compensate
    def refund(self, ctx: StepContext) -> None:
        LEDGER.undo(ctx.idempotency_key, forward_key(ctx))

    @step(pivot=True, timeout=5)
    def confirm(self, ctx: StepContext) -> None:
        pass


def example_sagas() -> Any:
    return cases(DoubleCharge)

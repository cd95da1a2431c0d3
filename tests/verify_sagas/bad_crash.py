"""BROKEN (crash points gate): the charge ignores its idempotency key. It is never
retried, so no generated plan runs it twice; a crash between its effect and the
checkpoint that records it does (recovery runs it again): only the crash points catch it."""

from __future__ import annotations

from typing import Any

from sagaflow import StepContext, saga, step

from . import filed
from .ledger import cases, forward_key


@saga(name="crash_double_charge")
class CrashDoubleCharge:
    @step(timeout=5)
    def charge(self, ctx: StepContext) -> None:
        filed.apply(ctx.idempotency_key, "card", -30, once=False)

    @charge.compensate
    def refund(self, ctx: StepContext) -> None:
        filed.undo(ctx.idempotency_key, forward_key(ctx))

    @step(pivot=True, timeout=5)
    def ship(self, ctx: StepContext) -> None:
        pass


def example_sagas() -> Any:
    return cases(CrashDoubleCharge, setup=filed.reset, snapshot=filed.snapshot)

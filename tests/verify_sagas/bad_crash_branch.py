"""BROKEN (crash points gate), on one branch only: the charge after an approval ignores
its idempotency key. The simplest approval a strategy draws is a refusal (``False``),
which never charges; only a crashed run sent an approval reaches the bug, so verify must
crash the saga on every path its drawn payloads take it on, not only the simplest."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs

from sagaflow import StepContext, saga, step, wait

from . import filed
from .ledger import cases, forward_key


@attrs.frozen
class Decision:
    approved: bool


@saga(name="crash_approved_charge")
@attrs.define
class ApprovedCharge:
    approved: bool = False

    @step(timeout=5)
    def reserve(self, ctx: StepContext) -> None:
        filed.apply(ctx.idempotency_key, "stock", -1)

    @reserve.compensate
    def release(self, ctx: StepContext) -> None:
        filed.undo(ctx.idempotency_key, forward_key(ctx))

    @wait("decision", payload=Decision, timeout=timedelta(days=1))
    def decide(self, decision: Decision, ctx: StepContext) -> None:
        self.approved = decision.approved

    @step(pivot=True, timeout=5)
    def charge(self, ctx: StepContext) -> None:
        if self.approved:
            filed.apply(ctx.idempotency_key, "card", -30, once=False)  # BUG: no key


def example_sagas() -> Any:
    return cases(ApprovedCharge, setup=filed.reset, snapshot=filed.snapshot)

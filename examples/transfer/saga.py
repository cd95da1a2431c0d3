"""Seed 004's transfer, as a sagaflow saga: debit, then credit, with AccountEvent events.

The seed's ``SagaOrchestrator`` version needed a ``DebitStep`` and a ``CreditStep``
struct, a ``SagaStep`` impl each and a builder (~15 lines to assemble, against 60-80 by
hand). Here the saga is one class: each step next to its compensation.

Both steps are compensatable. ``credit`` is last, so its compensation runs only when it
timed out: its outcome is then unknown (the money may have arrived), and ``debit_back``
takes it back if it did. Making ``credit`` a pivot instead would leave that case to an
operator, and the balances' total could drift. Both steps retry a lost connection:
postings are idempotent by key, so a retry after an answer was lost moves nothing twice.

The events are what each successful call reported. An attempt that timed out reports
nothing, even when its posting landed: then the reversal's event appears without the
posting's (the ledger's balances, not the events, are the truth for such a run).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from sagaflow import Retry, StepContext, saga, step

from .._support import forward_key
from .services import ledger

__all__ = ["AccountEvent", "Credited", "Debited", "TransferMoneySaga", "example_sagas"]


@attrs.frozen
class AccountEvent:
    """What happened to an account (seed 004's ``AccountEvent`` enum)."""

    account: str
    amount: Decimal


@attrs.frozen
class Debited(AccountEvent):
    pass


@attrs.frozen
class Credited(AccountEvent):
    pass


RECONNECT = Retry(attempts=3, backoff=0.1, retry_on=ConnectionError)


@saga
@attrs.define
class TransferMoneySaga:
    source: str
    target: str
    amount: Decimal

    @step(timeout=5.0, retry=RECONNECT)
    async def debit(self, ctx: StepContext) -> None:
        await ledger.post(ctx.idempotency_key, self.source, -self.amount)
        ctx.emit(Debited(self.source, self.amount))

    @debit.compensate
    async def credit_back(self, ctx: StepContext) -> None:
        if await ledger.reverse(ctx.idempotency_key, forward_key(ctx)):
            ctx.emit(Credited(self.source, self.amount))

    @step(timeout=5.0, retry=RECONNECT)
    async def credit(self, ctx: StepContext) -> None:
        await ledger.post(ctx.idempotency_key, self.target, self.amount)
        ctx.emit(Credited(self.target, self.amount))

    @credit.compensate
    async def debit_back(self, ctx: StepContext) -> None:
        if await ledger.reverse(ctx.idempotency_key, forward_key(ctx)):
            ctx.emit(Debited(self.target, self.amount))


def example_sagas() -> Any:
    """Transfers for the property tests and ``sagaflow verify``: alice pays bob on a
    ledger opened afresh (alice 100, bob 0), whose balances are the snapshot; an amount
    above alice's balance is refused by the ledger (a step error the saga compensates)."""
    from hypothesis import strategies as st

    from sagaflow.testing import SagaCase

    def setup() -> None:
        ledger.reset(alice=Decimal(100), bob=Decimal(0))

    def snapshot() -> dict[str, Decimal]:
        return dict(ledger.balances)

    amounts = st.decimals(min_value=1, max_value=150, places=2)
    return amounts.map(lambda amount: SagaCase(TransferMoneySaga("alice", "bob", amount),
                                               setup, snapshot, allow_step_errors=True))

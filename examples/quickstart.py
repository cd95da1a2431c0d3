"""The README's minimal saga: move money between two accounts of an in-process bank."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from sagaflow import Orchestrator, Retry, StepContext, saga, step


class Bank:
    """A tiny participant: balances, and a ledger of applied idempotency keys."""

    def __init__(self, **balances: Decimal) -> None:
        self.balances = dict(balances)
        self.applied: set[str] = set()
        self.down = False

    def move(self, key: str, account: str, delta: Decimal) -> None:
        if self.down:
            raise ConnectionError("bank is down")
        if key in self.applied:  # idempotent: a retried call changes nothing
            return
        if self.balances[account] + delta < 0:
            raise ValueError(f"insufficient funds in {account}")
        self.balances[account] += delta
        self.applied.add(key)


BANK = Bank(alice=Decimal("100"), bob=Decimal("0"))


@saga
@attrs.define
class TransferSaga:
    source: str
    target: str
    amount: Decimal

    @step(timeout=5.0, retry=Retry(attempts=3, backoff=0.01))
    def debit(self, ctx: StepContext) -> None:
        BANK.move(ctx.idempotency_key, self.source, -self.amount)

    @debit.compensate
    def credit_back(self, ctx: StepContext) -> None:
        if f"{ctx.saga_id}:debit:forward" in BANK.applied:
            BANK.move(ctx.idempotency_key, self.source, self.amount)

    @step(pivot=True)
    def credit(self, ctx: StepContext) -> None:
        BANK.move(ctx.idempotency_key, self.target, self.amount)


def example_sagas() -> Any:
    """Transfers for the property tests and ``sagaflow verify``: each on a fresh bank,
    whose balances are the snapshot (a compensated transfer must leave them as found)."""
    from hypothesis import strategies as st

    from sagaflow.testing import SagaCase

    def setup() -> None:
        BANK.balances = {"alice": Decimal(100), "bob": Decimal(0)}
        BANK.applied = set()
        BANK.down = False

    def snapshot() -> dict[str, Decimal]:
        return dict(BANK.balances)

    amounts = st.decimals(min_value=1, max_value=100, places=2)
    return amounts.map(lambda amount: SagaCase(TransferSaga("alice", "bob", amount), setup,
                                               snapshot))


def main() -> None:
    orchestrator = Orchestrator(listeners=[lambda e: print("   ", e.describe())])
    print("transfer 30 from alice to bob:")
    print("  ->", orchestrator.run(TransferSaga("alice", "bob", Decimal("30"))).status.value)
    print("transfer 30 from alice to a missing account:")
    print("  ->", orchestrator.run(TransferSaga("alice", "carol", Decimal("30"))).status.value)
    print("balances:", {k: str(v) for k, v in BANK.balances.items()})


if __name__ == "__main__":
    main()

"""`assert_compensations_tolerate_nothing_to_undo` runs each step's check under a saga id
of its own: without a ``setup``, a participant that refuses a key it saw undone (the
check of the step before ran that step's compensation under the same id) no longer stops
the next step's run forward."""

from __future__ import annotations

import attrs

from sagaflow import StepContext, saga, step
from sagaflow.testing import SagaCase, assert_compensations_tolerate_nothing_to_undo


@attrs.define
class Ledger:
    """A participant keyed by idempotency key: a forward key whose undo came first is
    refused for good (its late arrival must not take effect)."""

    applied: dict[str, int] = attrs.field(factory=dict)
    voided: set[str] = attrs.field(factory=set)

    def apply(self, key: str, amount: int) -> None:
        if key in self.voided:
            raise RuntimeError(f"{key} was compensated before it arrived; refusing it")
        self.applied.setdefault(key, amount)

    def undo(self, forward_key: str) -> None:
        self.applied.pop(forward_key, None)
        self.voided.add(forward_key)


LEDGER = Ledger()


def forward_key(ctx: StepContext) -> str:
    return f"{ctx.saga_id}:{ctx.step}:forward"


@saga(name="ids_transfer")
class Transfer:
    amount: int = 5

    @step
    def debit(self, ctx):
        LEDGER.apply(ctx.idempotency_key, -self.amount)

    @debit.compensate
    def refund(self, ctx):
        LEDGER.undo(forward_key(ctx))

    @step
    def credit(self, ctx):
        LEDGER.apply(ctx.idempotency_key, self.amount)

    @credit.compensate
    def take_back(self, ctx):
        LEDGER.undo(forward_key(ctx))


def test_each_step_is_checked_under_a_saga_id_of_its_own_without_a_setup() -> None:
    # no setup: the ledger keeps what the check of 'debit' left (its key voided)
    case = SagaCase(Transfer(), snapshot=lambda: dict(LEDGER.applied))
    assert_compensations_tolerate_nothing_to_undo(case)
    assert LEDGER.voided == {
        "nothing-to-undo-check-debit:debit:forward",
        "nothing-to-undo-check-credit:credit:forward",
    }
    assert LEDGER.applied == {"nothing-to-undo-check-credit:debit:forward": -5}

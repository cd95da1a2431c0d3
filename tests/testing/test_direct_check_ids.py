"""The direct checks (`assert_compensations_idempotent`,
`assert_compensations_tolerate_nothing_to_undo`) run each step's check under a saga id of
its own, as a fresh run would have: without a ``setup``, a participant that refuses a key
it saw undone (the check of the step before ran that step's compensation under the same
id) no longer stops the next step's run forward, and a participant that dedupes by key
no longer drops the earlier steps' effects that the next step's compensation needs."""

from __future__ import annotations

import attrs
import pytest

from sagaflow import StepContext, saga, step
from sagaflow.testing import (
    SagaCase,
    assert_compensations_idempotent,
    assert_compensations_tolerate_nothing_to_undo,
)


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


def fresh_ledger() -> None:
    """A clean ledger before each test (the checks under test are run without a setup)."""
    global LEDGER
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
    fresh_ledger()
    # no setup: the ledger keeps what the check of 'debit' left (its key voided)
    case = SagaCase(Transfer(), snapshot=lambda: dict(LEDGER.applied))
    assert_compensations_tolerate_nothing_to_undo(case)
    assert LEDGER.voided == {
        "nothing-to-undo-check-debit:debit:forward",
        "nothing-to-undo-check-credit:credit:forward",
    }
    assert LEDGER.applied == {"nothing-to-undo-check-credit:debit:forward": -5}


def test_idempotency_checks_each_step_under_a_saga_id_of_its_own_without_a_setup() -> None:
    # Under one id, the check of 'credit' ran 'debit' forward again with the key the
    # check of 'debit' had voided: the ledger rightly refused it, and the check reported
    # "could not bring saga 'ids_transfer' to step 'credit'" of a sound saga.
    fresh_ledger()
    case = SagaCase(Transfer(), snapshot=lambda: dict(LEDGER.applied))
    assert_compensations_idempotent(case)
    assert LEDGER.voided == {
        "idempotency-check-debit:debit:forward",
        "idempotency-check-credit:credit:forward",
    }
    assert LEDGER.applied == {"idempotency-check-credit:debit:forward": -5}


@attrs.define
class Bar:
    """A participant that dedupes by key (a key seen once is a no-op for good): tabs
    opened by key, and what is on each open tab; a charge to a closed tab is dropped."""

    seen: set[str] = attrs.field(factory=set)
    tabs: dict[str, int] = attrs.field(factory=dict)


BAR = Bar()


@saga(name="ids_bar")
class Round:
    guest: str = "ann"

    @step
    def open_tab(self, ctx):
        if ctx.idempotency_key not in BAR.seen:
            BAR.seen.add(ctx.idempotency_key)
            BAR.tabs[self.guest] = 0

    @open_tab.compensate
    def close_tab(self, ctx):
        if ctx.idempotency_key not in BAR.seen:
            BAR.seen.add(ctx.idempotency_key)
            BAR.tabs.pop(self.guest, None)

    @step
    def pour(self, ctx):
        if self.guest in BAR.tabs and ctx.idempotency_key not in BAR.seen:
            BAR.seen.add(ctx.idempotency_key)
            BAR.tabs[self.guest] += 7

    @pour.compensate
    def take_off(self, ctx):
        if self.guest in BAR.tabs:
            BAR.tabs[self.guest] -= 7  # BUG: not keyed: a retried undo takes it off twice


def test_idempotency_check_finds_a_bug_that_needs_the_earlier_steps_effects() -> None:
    # Under one id, the check of 'pour' ran 'open_tab' forward with the key the check of
    # 'open_tab' had used: deduped, the tab stayed closed, 'take_off' found nothing to
    # take off twice, and the check passed the buggy saga.
    global BAR
    BAR = Bar()
    case = SagaCase(Round(), snapshot=lambda: dict(BAR.tabs))
    with pytest.raises(AssertionError) as caught:
        assert_compensations_idempotent(case)
    assert str(caught.value) == (
        "saga 'ids_bar': 1 compensation(s) not idempotent:\n"
        "- take_off (undoes 'pour') is not idempotent: its second run (same key "
        "idempotency-check-pour:pour:compensate) changed:\n"
        "    'ann': before 0, after -7"
    )

"""The payout batch's example cases (``example_sagas()``): what the property tests and
``sagaflow verify`` run it on.

The cases keep the treasury's and the bank's state in a file (``services.reset(
filed=True)``), as real services keep theirs outside the saga's process: so the crash
gate's recovery, in another process, finds what the killed one did, and compares it
(real child processes killed with SIGKILL).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from example_fixtures import crash_verified
from hypothesis import given, settings

from examples.payouts import services
from examples.payouts.rules import Payout
from examples.payouts.saga import (
    CLOSED,
    PayoutBatchSaga,
    example_case,
    example_sagas,
    reset_case_services,
)
from sagaflow import SagaStatus
from sagaflow.testing import SagaCase, check_crash_points, run_plan

SOUND_TRANSFER = services.Bank.transfer  # forgetful_case's setup replaces it
FRESH = {"balance": Decimal("100000.00"), "held": {}, "paid": {}}


def two() -> list[Payout]:
    return [Payout("P-1", "acct-1", Decimal("100.00")), Payout("P-2", "acct-2", Decimal("50.00"))]


def test_setup_keeps_fresh_services_in_a_file_and_the_demo_in_memory() -> None:
    reset_case_services()
    assert services.state() == FRESH
    assert run_plan(example_case(two())).status is SagaStatus.COMPLETED
    assert services.state()["balance"] == Decimal("99850.00")
    services.bank.paid.clear()  # this process's copy forgets; the file does not
    assert len(services.state()["paid"]) == 2
    reset_case_services()
    assert services.state() == FRESH
    assert services.bank.closed == {CLOSED}
    services.reset()  # as the demo and the other tests do: in memory again
    assert services.treasury.state_file is None and services.bank.state_file is None


@settings(max_examples=40, deadline=None, database=None)
@given(case=example_sagas())
def test_valid_batches_are_paid_and_refused_ones_leave_nothing(case: SagaCase) -> None:
    batch: PayoutBatchSaga = case.saga
    run = run_plan(case)
    if case.allow_step_errors:
        assert run.status is SagaStatus.COMPENSATED, run.table()
        assert services.state() == FRESH
    else:
        assert run.status is SagaStatus.COMPLETED, run.table()
        assert len(services.state()["paid"]) == len(batch.payouts)
        assert services.state()["held"] == {}


def test_crash_points_of_a_batch_paying_a_closed_account_compare_the_services() -> None:
    payouts = [*two(), Payout("P-3", CLOSED, Decimal("10.00"))]
    report = check_crash_points("examples.payouts.saga:example_case",
                                kwargs={"payouts": payouts})
    report.assert_ok()
    assert report.effects_checked
    assert report.references == ("COMPENSATED", "COMPENSATED")
    names = {r.point.name for r in report.points}
    assert "after pay[P-1]:compensate took effect, before its checkpoint" in names
    assert "after reserve_funds:compensate took effect, before its checkpoint" in names


def forgetful_case() -> SagaCase:
    """A batch whose bank forgets transfer keys (pays again on a repeat)."""
    case = example_case(two()[:1])

    async def again(bank: services.Bank, key: str, account: str, amount: Decimal) -> Any:
        with services.STATE.held():
            paid = len(bank.paid)
        return await SOUND_TRANSFER(bank, f"{key}#{paid}", account, amount)

    def setup() -> None:  # in the crash points' child process only: its own Bank class
        reset_case_services()
        services.Bank.transfer = again  # type: ignore[method-assign]

    return SagaCase(case.saga, setup, services.state)


def test_crash_points_see_a_transfer_paid_twice_in_another_process() -> None:
    report = check_crash_points(forgetful_case, fail_fast=True)
    assert not report.ok
    first = report.first_failure
    assert first is not None
    assert first.point.name == "after pay[P-1]:forward took effect, before its checkpoint"
    assert "'paid'" in "\n".join(first.problems)


def test_verify_runs_every_gate_on_the_payout_batch_effects_compared() -> None:
    gates = crash_verified("examples.payouts")
    assert gates["idempotency"][1] == "2 compensations run twice: no change"

"""The payout batch's scenarios, on virtual time; each returns its result for the tests."""

from __future__ import annotations

from decimal import Decimal

from sagaflow import SagaResult

from .._support import run_virtual
from ..console import Demo, fmt
from . import services
from .rules import Payout
from .saga import PayoutBatchSaga
from .services import BankUnavailable, bank, treasury

__all__ = ["SCENARIOS", "all_paid", "bank_flaky", "batch", "demo", "one_account_closed"]


def batch(n: int = 6) -> list[Payout]:
    """``n`` payouts: P-1 to acct-1 for 100.00, P-2 to acct-2 for 200.00..."""
    return [Payout(f"P-{i}", f"acct-{i}", Decimal(100 * i)) for i in range(1, n + 1)]


async def _run(d: Demo, batch_id: str, payouts: list[Payout]) -> SagaResult:
    return await d.arun(d.async_orchestrator(), PayoutBatchSaga(batch_id, payouts), batch_id)


def _money(d: Demo) -> None:
    d.note(f"bank: {len(bank.paid)} transfer(s) standing, {fmt(bank.total_paid())} paid; "
           f"at most {bank.most_at_once} at once; treasury holds "
           f"{fmt(sum(treasury.held.values(), Decimal(0)))}")


async def all_paid(d: Demo) -> SagaResult:
    d.scenario("1. six payouts, three at a time, each under its own key: all paid")
    result = await _run(d, "batch-1", batch())
    _money(d)
    return result


async def one_account_closed(d: Demo) -> SagaResult:
    d.scenario("2. acct-5 is closed: no new transfer starts, the running ones are cancelled, "
               "the paid and the unknown ones are reversed (each with its own payout and key), "
               "the reservation released")
    bank.closed.add("acct-5")
    result = await _run(d, "batch-2", batch(8))
    d.note("reversed: " + ", ".join(bank.reversed))
    never = [s.name for s in result.steps if "[" in s.name and s.attempts == 0]
    d.note(f"never started: {', '.join(never)}")
    _money(d)
    return result


async def bank_flaky(d: Demo) -> SagaResult:
    d.scenario("3. the bank is unavailable once: that one transfer retries after 1s")
    bank.faults.fail("transfer", BankUnavailable("bank unavailable"), skip=1)
    result = await _run(d, "batch-3", batch(3))
    _money(d)
    return result


SCENARIOS = (all_paid, one_account_closed, bank_flaky)


async def _all(d: Demo) -> None:
    for scenario in SCENARIOS:
        services.reset()
        await scenario(d)


def demo(d: Demo) -> None:
    d.section(
        "payouts (a batch): a fan-out over the batch's list",
        "validate → reserve_funds → pay for each payout (3 at a time) → close_batch (pivot); "
        "undo: reverse (per payout), release_funds",
    )
    run_virtual(_all(d))
    services.reset()

"""Seed 004's transfer scenarios, on virtual time; each returns its result for the tests.

After each one the demo prints the balances and their total, which never changes.
"""

from __future__ import annotations

from decimal import Decimal

from sagaflow import SagaResult

from .._support import run_virtual
from ..console import Demo, fmt
from .saga import TransferMoneySaga
from .services import ledger

__all__ = [
    "SCENARIOS",
    "credit_answer_lost",
    "credit_times_out",
    "demo",
    "happy_path",
    "insufficient_funds",
    "open_accounts",
    "reversal_retried",
    "unknown_target",
]

TOTAL = Decimal("300.00")


def open_accounts() -> None:
    ledger.reset(A=Decimal("200.00"), B=Decimal("100.00"))


async def _transfer(d: Demo, n: int, source: str, target: str, amount: str) -> SagaResult:
    saga = TransferMoneySaga(source, target, Decimal(amount))
    result = await d.arun(d.async_orchestrator(), saga, f"transfer-{n}")
    balances = ", ".join(f"{k}={fmt(v)}" for k, v in sorted(ledger.balances.items()))
    d.note(f"balances: {balances}; total {fmt(ledger.total())}")
    return result


async def happy_path(d: Demo) -> SagaResult:
    d.scenario("1. transfer 100 from A to B (seed 004's transfer-100)")
    return await _transfer(d, 1, "A", "B", "100.00")


async def insufficient_funds(d: Demo) -> SagaResult:
    d.scenario("2. A cannot pay 500: the debit fails, nothing to undo")
    return await _transfer(d, 2, "A", "B", "500.00")


async def unknown_target(d: Demo) -> SagaResult:
    d.scenario("3. the target account does not exist: credit A back")
    return await _transfer(d, 3, "A", "Z", "25.00")


async def credit_times_out(d: Demo) -> SagaResult:
    d.scenario("4. the credit lands but its answer takes 60s (timeout 5s): undo both")
    ledger.faults.hang("credit", 60, at="after")
    result = await _transfer(d, 4, "B", "A", "40.00")
    d.note("(no Credited(A): sagaflow keeps a step's events only from an attempt that")
    d.note(" succeeded, and this one timed out; the ledger's balances are the truth)")
    return result


async def credit_answer_lost(d: Demo) -> SagaResult:
    d.scenario("5. the credit's answer is lost once: the retry moves nothing twice")
    ledger.faults.fail("credit", ConnectionResetError("connection reset"), at="after")
    return await _transfer(d, 5, "A", "B", "10.00")


async def reversal_retried(d: Demo) -> SagaResult:
    d.scenario("6. the ledger is busy twice while crediting A back: retried with backoff")
    ledger.faults.fail("reverse", ConnectionError("ledger busy"), times=2)
    return await _transfer(d, 6, "A", "nobody", "5.00")


SCENARIOS = (
    happy_path,
    insufficient_funds,
    unknown_target,
    credit_times_out,
    credit_answer_lost,
    reversal_retried,
)


async def _all(d: Demo) -> None:
    for scenario in SCENARIOS:
        await scenario(d)


def demo(d: Demo) -> None:
    d.section(
        "transfer (seed 004): debit → credit with AccountEvent events, async",
        "the balances' total stays 300.00 whatever happens",
    )
    open_accounts()
    run_virtual(_all(d))

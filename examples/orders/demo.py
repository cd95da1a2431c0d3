"""Seed 003's order scenarios, on virtual time; each returns its result for the tests.

Run them under :func:`examples._support.run_virtual`: a payment that hangs for 30 s
against a 10 s timeout then costs no real time, and concurrent orders interleave the
same way every run.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sagaflow import CompensationStatus, SagaResult, StepError

from .._support import run_virtual
from ..console import Demo, fmt
from . import services
from .saga import OrderSaga
from .services import GatewayUnavailable, inventory, payments

__all__ = [
    "SCENARIOS",
    "charge_arrives_late",
    "concurrent_last_units",
    "deadline_passes",
    "declined_card",
    "demo",
    "gateway_flaky",
    "happy_path",
    "payment_times_out",
    "stock",
]

PRICE = Decimal("49.90")


def stock() -> None:
    """The warehouse: plenty of keyboards, the last 3 limited editions."""
    inventory.stock("keyboard", 100)
    inventory.stock("limited-edition", 3)


async def _order(d: Demo, n: int, customer: str, quantity: int = 1,
                 sku: str = "keyboard") -> SagaResult:
    saga = OrderSaga(f"order-{n}", customer, sku, quantity, PRICE * quantity)
    return await d.arun(d.async_orchestrator(), saga, f"order-{n}")


async def happy_path(d: Demo) -> SagaResult:
    d.scenario("1. happy path: reserve, pay, confirm")
    return await _order(d, 1, "alice", 2)


async def declined_card(d: Demo) -> SagaResult:
    d.scenario("2. the card is declined: release the reservation")
    payments.declined.add("bob")
    return await _order(d, 2, "bob")


async def gateway_flaky(d: Demo) -> SagaResult:
    d.scenario("3. the gateway is unavailable once: the payment is retried after 1s")
    payments.faults.fail("charge", GatewayUnavailable("gateway unavailable"))
    return await _order(d, 3, "carol")


async def payment_times_out(d: Demo) -> SagaResult:
    d.scenario("4. timeout: the gateway charges, but its answer takes 30s (timeout 10s)")
    payments.faults.hang("charge", 30, at="after")
    result = await _order(d, 4, "dave")
    d.note(f"dave's card, net: ${fmt(payments.net_charged('dave'))} (charged, then refunded)")
    return result


async def charge_arrives_late(d: Demo) -> SagaResult:
    d.scenario("5. timeout: the charge itself reaches the gateway after 30s")
    payments.faults.hang("charge", 30, at="gateway")
    result = await _order(d, 5, "erin")
    await payments.drain()  # let the late charge arrive
    for line in payments.late:
        d.note(line)
    d.note(f"erin's card, net: ${fmt(payments.net_charged('erin'))}")
    return result


async def deadline_passes(d: Demo) -> SagaResult:
    d.scenario("6. the gateway stalls 9s then fails, again and again: the 30s deadline passes")
    payments.faults.fail("charge", GatewayUnavailable("gateway unavailable"), times=None,
                         stall=9.0)
    try:
        return await _order(d, 6, "frank")
    finally:
        payments.faults.clear()


CUSTOMERS = ("gina", "hal", "ivy", "jon", "kim", "lou", "max", "nia")
DECLINED = ("hal", "kim")


async def concurrent_last_units(d: Demo) -> list[SagaResult]:
    """Eight orders for the last three limited editions, arriving 100 ms apart while the
    earlier ones are still running; two cards are declined."""
    d.scenario(
        f"7. {len(CUSTOMERS)} concurrent orders, 100 ms apart, for the last "
        f"{inventory.available['limited-edition']} limited editions "
        f"({' and '.join(DECLINED)}'s cards are declined)"
    )
    payments.declined.update(DECLINED)
    services.reseed(0)  # the latencies of this story: a released unit is sold again

    async def arrive(i: int, customer: str) -> SagaResult:
        await asyncio.sleep(i * 0.1)
        return await _order(d, 10 + i, customer, sku="limited-edition")

    with d.quiet():
        results = await asyncio.gather(*(arrive(i, c) for i, c in enumerate(CUSTOMERS)))
    for r in results:
        why = ""
        if isinstance(r.error, StepError):
            why = f": {r.error.cause}"
        undone = [s.name for s in r.steps if s.compensation is CompensationStatus.COMPENSATED]
        if undone:
            why += f" (undone: {', '.join(undone)})"
        d.note(f"{r.saga_id:<9} {r.data.customer:<5} {r.status.value}{why}")
    sold = sum(1 for r in results if r.ok)
    d.note(
        f"confirmed {sold} (units reserved for them: {inventory.held('limited-edition')}), "
        f"back in stock {inventory.available['limited-edition']}: nothing oversold"
    )
    return list(results)


SCENARIOS = (
    happy_path,
    declined_card,
    gateway_flaky,
    payment_times_out,
    charge_arrives_late,
    deadline_passes,
)


async def _all(d: Demo) -> None:
    for scenario in SCENARIOS:
        await scenario(d)
    await concurrent_last_units(d)


def demo(d: Demo) -> None:
    d.section(
        "orders (seed 003): async steps on virtual time",
        "reserve_inventory → process_payment → confirm_order; "
        "undo: release_reservation, refund, cancel",
    )
    services.reset()
    stock()
    run_virtual(_all(d))

"""The checkout's scenarios, on virtual time; each returns its result for the tests.

A parallel group runs its members as tasks: the first scenario prints when each call ran
(virtual seconds), so the overlap shows. The last one runs the saga in a child process
that is killed (SIGKILL) inside the group, then recovers it from the demo's SQLite store.
"""

from __future__ import annotations

import sys
import time
from decimal import Decimal
from pathlib import Path

from sagaflow import CompensationStatus, Orchestrator, SagaResult
from sagaflow.stores.sqlite import SQLiteStore

from .._support import BlockingStore, LoopClock, killed_child, run_virtual
from ..console import Demo
from . import services as participants
from .saga import CheckoutSaga
from .services import services

__all__ = [
    "SCENARIOS",
    "all_at_once",
    "courier_times_out",
    "crash_mid_group",
    "declined_card",
    "demo",
    "gateway_flaky",
]

PRICE = Decimal("30.00")
CRASH_ID = "checkout-crash"


def _order(n: int, customer: str) -> CheckoutSaga:
    return CheckoutSaga(f"A-{n}", customer, "lamp", 1, PRICE, f"{n} Main St")


async def _run(d: Demo, n: int, customer: str) -> SagaResult:
    return await d.arun(d.async_orchestrator(), _order(n, customer), f"checkout-{n}")


def _undone(d: Demo, result: SagaResult) -> None:
    undone = [s.name for s in result.steps if s.compensation is CompensationStatus.COMPENSATED]
    d.note(f"compensated: {', '.join(undone) or 'nothing'}; standing effects: "
           f"{', '.join(services().standing(result.saga_id)) or 'none'}")


async def all_at_once(d: Demo) -> SagaResult:
    d.scenario("1. stock, payment and courier booked at once, then confirmed, then the "
               "receipt and the warehouse told at once")
    services().spans.clear()
    result = await _run(d, 1, "ann")
    start = services().spans[0][1]
    d.note("when each call ran (virtual seconds): " + ", ".join(
        f"{op} {a - start:.2f}→{b - start:.2f}" for op, a, b in services().spans))
    return result


async def declined_card(d: Demo) -> SagaResult:
    d.scenario("2. the card is declined: the reserved stock and the booked courier are "
               "compensated, concurrently")
    services().declined.add("bob")
    result = await _run(d, 2, "bob")
    _undone(d, result)
    return result


async def gateway_flaky(d: Demo) -> SagaResult:
    d.scenario("3. the gateway is unavailable once: only charge_card retries, after 1s")
    services().faults.fail("charge", participants.GatewayUnavailable("gateway unavailable"))
    return await _run(d, 3, "cid")


async def courier_times_out(d: Demo) -> SagaResult:
    d.scenario("4. the courier books, but its answer takes 30s (timeout 5s): outcome "
               "unknown, so it is cancelled too")
    services().faults.hang("book", 30, at="after")
    result = await _run(d, 4, "dee")
    _undone(d, result)
    return result


SCENARIOS = (all_at_once, declined_card, gateway_flaky, courier_times_out)


async def _all(d: Demo) -> None:
    for scenario in SCENARIOS:
        await scenario(d)


def crash_mid_group(d: Demo, out: Path) -> SagaResult:
    """A child process runs the checkout on the demo's store and is killed when the charge
    took effect (stock reserved, courier still booking); this process recovers it."""
    store = d.store
    if not isinstance(store, SQLiteStore):
        raise TypeError("the crash scenario needs the demo's SQLite store (python -m examples)")
    ledger = out / "checkout.db"
    for stale in (ledger, ledger.with_name("checkout.db-wal"),
                  ledger.with_name("checkout.db-shm")):
        stale.unlink(missing_ok=True)
    d.scenario("5. a child process is killed (SIGKILL) inside the group, then recovered here")
    started = time.perf_counter()
    killed_child(d, "examples.checkout.demo", store.path, str(ledger))

    participants.reset(ledger)
    store.register(CheckoutSaga)
    stored = store.load(CRASH_ID)
    assert stored is not None
    d.note(f"the store: {stored.status.value} at {stored.state}: " + ", ".join(
        f"{s.name} {s.status.value}" for s in stored.steps[1:4]))
    d.note("the participants already hold: " + ", ".join(services().standing(CRASH_ID)))

    orch = Orchestrator(BlockingStore(store), [d.console], sagas=[CheckoutSaga],
                        clock=LoopClock(), rand=lambda: 0.5)
    d.console.orchestrators.append(orch)
    report = run_virtual(orch.arecover())
    for note in services().ledger.notes:
        d.note(f"participant: {note}")
    d.note("recovered: " + report.describe().splitlines()[0])
    result = orch.get(CRASH_ID)
    assert result is not None
    d.show(result, time.perf_counter() - started)
    d.note("standing effects: " + ", ".join(services().standing(CRASH_ID)))
    return result


def demo(d: Demo, out: Path) -> None:
    d.section(
        "checkout (seed 002, in parallel): a parallel group of async members",
        "validate → [reserve_stock ‖ charge_card ‖ book_courier] → confirm (pivot) → "
        "[send_receipt ‖ tell_warehouse]",
    )
    participants.reset()
    run_virtual(_all(d))
    crash_mid_group(d, out)
    participants.reset()


def _child(store_path: str, ledger: str) -> None:
    """The child process: run the checkout until the charge's participant kills it."""
    participants.reset(ledger).crash_after = "charge"
    with SQLiteStore(store_path, synchronous="NORMAL") as store:
        d = Demo(lambda line: print(line, flush=True), store)

        async def main() -> SagaResult:
            return await d.arun(d.async_orchestrator(), _order(9, "eve"), CRASH_ID)

        run_virtual(main())


if __name__ == "__main__":
    # Through the package, so the stored class path is examples.checkout.saga:CheckoutSaga.
    from examples.checkout.demo import _child as child

    child(sys.argv[1], sys.argv[2])

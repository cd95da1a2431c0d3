"""Seed 003's order saga: async steps, timeouts with unknown outcomes, concurrent orders.

Everything runs on a virtual-time event loop (``run_virtual``): hangs of 30 s against
10 s timeouts take no real time, and concurrent runs interleave deterministically.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from decimal import Decimal

import attrs
import pytest
from example_fixtures import Captured, compensation_order, crash_verified, make_ctx
from hypothesis import find, given, settings
from hypothesis import strategies as st

from examples._support import run_virtual
from examples.orders import demo as scenarios
from examples.orders import services
from examples.orders.saga import (
    InventoryReleased,
    InventoryReserved,
    OrderConfirmed,
    OrderSaga,
    PaymentProcessed,
    PaymentRefunded,
    example_sagas,
)
from examples.orders.services import CardDeclined, OutOfStock, inventory, orders, payments
from sagaflow import (
    CompensationStatus,
    SagaDeadlineExceeded,
    SagaResult,
    SagaStatus,
    StepError,
    StepStatus,
    StepTimeout,
)
from sagaflow.testing import SagaCase, run_plan
from sagaflow.testing._crashchild import fork


@pytest.fixture(autouse=True)
def fresh_services() -> Iterator[None]:
    services.reset()
    scenarios.stock()
    yield
    services.reset()


def test_happy_path(demo: Captured) -> None:
    result = run_virtual(scenarios.happy_path(demo))

    assert result.status is SagaStatus.COMPLETED
    assert [type(e) for e in result.events] == [
        InventoryReserved, PaymentProcessed, OrderConfirmed,
    ]
    assert inventory.available["keyboard"] == 98
    assert payments.net_charged("alice") == Decimal("99.80")
    assert orders.orders["order-1"].status == "CONFIRMED"


def test_a_declined_card_releases_the_reservation(demo: Captured) -> None:
    result = run_virtual(scenarios.declined_card(demo))

    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepError) and result.error.step == "process_payment"
    assert compensation_order(result) == ["reserve_inventory"]
    assert inventory.available["keyboard"] == 100
    assert inventory.held("keyboard") == 0
    assert payments.charges == {}


def test_an_unavailable_gateway_is_retried(demo: Captured) -> None:
    result = run_virtual(scenarios.gateway_flaky(demo))

    assert result.status is SagaStatus.COMPLETED
    assert result.step("process_payment").attempts == 2
    assert payments.net_charged("carol") == scenarios.PRICE
    assert "retrying in 1s" in demo.text


def test_a_payment_that_times_out_after_charging_is_refunded(demo: Captured) -> None:
    result = run_virtual(scenarios.payment_times_out(demo))

    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepTimeout)
    assert result.step("process_payment").status is StepStatus.TIMED_OUT
    # its outcome was unknown, so its own compensation ran, newest first
    assert compensation_order(result) == ["process_payment", "reserve_inventory"]
    assert [type(e) for e in result.events] == [
        InventoryReserved, PaymentRefunded, InventoryReleased,
    ]
    assert len(payments.charges) == 1  # the charge did happen...
    assert payments.net_charged("dave") == 0  # ...and was refunded
    assert inventory.available["keyboard"] == 100
    assert 10.0 <= result.duration < 11.0  # type: ignore[operator]  # virtual seconds


def test_a_charge_that_arrives_after_its_refund_is_refused(demo: Captured) -> None:
    result = run_virtual(scenarios.charge_arrives_late(demo))

    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepTimeout)
    # the refund found nothing to refund, so it emitted nothing, and voided the charge
    assert [type(e) for e in result.events] == [InventoryReserved, InventoryReleased]
    assert payments.charges == {}
    assert payments.late == [
        "a late charge (order-5:process_payment:forward) arrived after its refund: refused"
    ]
    assert payments.net_charged("erin") == 0


def test_the_saga_deadline_bounds_the_retries(demo: Captured) -> None:
    result = run_virtual(scenarios.deadline_passes(demo))

    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, SagaDeadlineExceeded)
    assert result.step("process_payment").attempts == 3
    assert compensation_order(result) == ["process_payment", "reserve_inventory"]
    assert inventory.held("keyboard") == 0
    assert 30.0 <= result.duration < 31.0  # type: ignore[operator]


def test_out_of_stock_fails_the_first_step_with_nothing_to_undo(demo: Captured) -> None:
    saga = OrderSaga("o", "zed", "limited-edition", 4, Decimal("1.00"))
    result = run_virtual(demo.async_orchestrator().arun(saga))

    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepError) and isinstance(result.error.cause, OutOfStock)
    assert compensation_order(result) == []
    assert inventory.available["limited-edition"] == 3


def test_a_confirmation_that_times_out_is_cancelled_with_everything_before(
    demo: Captured,
) -> None:
    orders.faults.hang("confirm", 60, at="after")
    saga = OrderSaga("o", "amy", "keyboard", 1, Decimal("5.00"))
    result = run_virtual(demo.async_orchestrator().arun(saga))

    assert result.status is SagaStatus.COMPENSATED
    assert compensation_order(result) == ["confirm_order", "process_payment", "reserve_inventory"]
    assert orders.orders["o"].status == "CANCELLED"
    assert payments.net_charged("amy") == 0
    assert inventory.available["keyboard"] == 100


def test_compensations_run_twice_leave_the_same_state(demo: Captured) -> None:
    result = run_virtual(scenarios.payment_times_out(demo))
    saga: OrderSaga = result.data
    before = (dict(inventory.available), {k: c.refunded for k, c in payments.charges.items()})

    async def undo_twice() -> None:
        for name, undo in (("process_payment", saga.refund),
                           ("reserve_inventory", saga.release_reservation)):
            ctx = make_ctx(saga, result.saga_id, name)
            await undo(ctx)
            await undo(ctx)

    run_virtual(undo_twice())
    after = (dict(inventory.available), {k: c.refunded for k, c in payments.charges.items()})
    assert after == before


def test_the_concurrent_demo_sells_exactly_the_last_units(demo: Captured) -> None:
    results = run_virtual(scenarios.concurrent_last_units(demo))

    assert sum(r.ok for r in results) == 3
    assert {r.data.customer for r in results if r.ok} == {"gina", "ivy", "lou"}
    assert inventory.available["limited-edition"] == 0
    check_invariants(results, initial=3, sku="limited-edition")


def check_invariants(results: list[SagaResult], initial: int, sku: str) -> None:
    """No overselling, and every failed order gave back its units and its money."""
    assert inventory.available[sku] >= 0
    assert inventory.available[sku] + inventory.held(sku) == initial
    sold = sum(r.data.quantity for r in results if r.ok)
    assert inventory.held(sku) == sold <= initial
    for r in results:
        held = [x for x in inventory.reservations.values()
                if x.order_id == r.data.order_id and x.status == "HELD"]
        if r.ok:
            assert orders.orders[r.data.order_id].status == "CONFIRMED"
            assert sum(x.quantity for x in held) == r.data.quantity
        else:
            assert r.status is SagaStatus.COMPENSATED, r.error
            assert held == []
            assert orders.orders.get(r.data.order_id, "never confirmed") != "CONFIRMED"
            if r.data.order_id in orders.orders:  # its confirmation timed out, then undone
                assert orders.orders[r.data.order_id].status == "CANCELLED"
            assert all(
                s.compensation in (CompensationStatus.NOT_NEEDED, CompensationStatus.COMPENSATED)
                for s in r.steps
            )
    for customer in {r.data.customer for r in results}:
        paid = sum((r.data.amount for r in results if r.ok and r.data.customer == customer),
                   Decimal(0))
        assert payments.net_charged(customer) == paid


orders_strategy = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=3),  # quantity
        st.booleans(),  # declined card
        st.sampled_from([None, "reserve", "charge", "confirm"]),  # where it times out
        st.floats(min_value=0, max_value=0.5),  # arrival
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None)
@given(stock=st.integers(min_value=0, max_value=6), wanted=orders_strategy,
       seed=st.integers(min_value=0, max_value=1000))
def test_concurrent_orders_never_oversell(
    stock: int, wanted: list[tuple[int, bool, str | None, float]], seed: int
) -> None:
    services.reset()
    services.reseed(seed)
    inventory.stock("widget", stock)
    hangs = {"reserve": (inventory, "after"), "charge": (payments, "gateway"),
             "confirm": (orders, "after")}

    async def run_all() -> list[SagaResult]:
        orch = Captured().async_orchestrator()

        async def one(i: int, quantity: int, declined: bool, hang: str | None,
                      arrival: float) -> SagaResult:
            customer = f"c{i}"
            if declined:
                payments.declined.add(customer)
            await asyncio.sleep(arrival)
            if hang is not None:  # strikes whichever order calls it next
                service, at = hangs[hang]
                service.faults.hang(hang, 20, at=at)
            saga = OrderSaga(f"o{i}", customer, "widget", quantity, Decimal("10.00") * quantity)
            return await orch.arun(saga, saga_id=f"o{i}")

        results = await asyncio.gather(*(one(i, *w) for i, w in enumerate(wanted)))
        await payments.drain()
        await asyncio.sleep(60)  # every abandoned call has landed (or been refused)
        return list(results)

    check_invariants(run_virtual(run_all()), initial=stock, sku="widget")


# -- example_sagas(): the cases the property tests and `sagaflow verify` run ---------------

LATENCIES = (0.05, 0.2, 0.05)  # inventory, payments, orders: what the demo's story uses


def latencies() -> tuple[float, ...]:
    return tuple(s.latency for s in (inventory, payments, orders))


@settings(max_examples=30, deadline=None)
@given(case=example_sagas())
def test_the_example_cases_run_forward_or_are_refused_with_no_latency(case: SagaCase) -> None:
    run = run_plan(case)

    assert latencies() == (0, 0, 0)
    assert run.status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)
    if run.status is SagaStatus.COMPENSATED:  # out of stock or declined: nothing stands
        assert run.after == run.before
        assert isinstance(run.result.error, StepError)
        assert isinstance(run.result.error.cause, (OutOfStock, CardDeclined))
    run.check()


def test_a_reset_gives_the_services_their_latency_back() -> None:
    case = first_case()
    case.setup()
    assert latencies() == (0, 0, 0)

    services.reset()

    assert latencies() == LATENCIES


def test_the_snapshot_is_the_net_state_a_compensated_order_leaves_as_found() -> None:
    case = first_case()
    case.setup()
    before = case.snapshot()
    order = attrs.evolve(case.saga, customer="mallory")  # her card is declined

    run = run_plan(attrs.evolve(case, saga=order))

    assert run.status is SagaStatus.COMPENSATED
    assert inventory.reservations  # a reservation was made, and released
    assert case.snapshot() == before


def test_sagaflow_verify_runs_the_idempotency_nothing_to_undo_and_crash_gates() -> None:
    gates = crash_verified("examples.orders.saga")
    assert gates["idempotency"][1] == "3 compensations run twice: no change"
    assert gates["nothing to undo"][1] == "3 compensations run with nothing to undo"


def first_case() -> SagaCase:
    found = find(example_sagas(), lambda c: c.saga.customer == "alice")
    assert isinstance(found, SagaCase)
    return found


def test_the_cases_file_the_services_so_a_killed_process_s_effects_are_in_the_snapshot(
) -> None:
    case = first_case()
    case.setup()
    before = case.snapshot()

    def reserve_and_die() -> None:  # a process that dies with its reservation made
        asyncio.run(inventory.reserve("k:reserve_inventory:forward", "o-1", "keyboard", 2))
        os.kill(os.getpid(), signal.SIGKILL)

    _, code = fork(reserve_and_die, 30)

    assert code == -signal.SIGKILL
    assert case.snapshot() == {**before, "available": {"keyboard": 3}, "held": {"keyboard": 2}}
    case.setup()
    assert case.snapshot() == before  # each case starts afresh
    services.reset()
    assert inventory.state_file is None  # the demo and the other tests: in memory

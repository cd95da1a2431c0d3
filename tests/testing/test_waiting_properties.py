"""Waiting sagas, property-tested: every drawn plan of what their waits receive keeps
every invariant, on the engine driver (the bulk), the real sync and async drivers on a
memory store, and the real drivers on an SQLite file (signals stored in the database,
parked rows resumed); and the state machine sends signals and moves the clock rule by
rule."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from waiting_sagas import (
    CONFIRMATIONS,
    DECISIONS,
    REFUSALS,
    AsyncBooking,
    OrderApproval,
    booking_cases,
    order_cases,
)

from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.testing import Fault, SagaCase, failure_plans, run_plan, saga_state_machine

MANY = settings(max_examples=max(500, settings.default.max_examples), deadline=None)
SAMPLE = settings(max_examples=25, deadline=None)
SYNC_FAULTS = [Fault.RAISES, Fault.TIMES_OUT, Fault.REJECTS]  # a sync run cannot be cancelled

orders = failure_plans(OrderApproval, payloads=DECISIONS, rejections=REFUSALS)
sync_orders = failure_plans(OrderApproval, payloads=DECISIONS, rejections=REFUSALS,
                            faults=SYNC_FAULTS)
bookings = failure_plans(AsyncBooking, payloads=CONFIRMATIONS)


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteStore]:
    """One database for the module: every run has its own saga id."""
    store = SQLiteStore(tmp_path_factory.mktemp("waits") / "plans.db")
    yield store
    store.close()


@MANY
@given(case=order_cases(), plan=orders)
def test_order_approval_keeps_every_invariant(case: SagaCase, plan) -> None:
    run_plan(case, plan).check()


@MANY
@given(case=booking_cases(), plan=bookings)
def test_async_booking_keeps_every_invariant(case: SagaCase, plan) -> None:
    run_plan(case, plan).check()


@SAMPLE
@given(case=order_cases(), plan=sync_orders)
def test_order_approval_under_the_sync_driver(case: SagaCase, plan) -> None:
    run_plan(case, plan, driver="sync").check()


@SAMPLE
@given(case=order_cases(), plan=orders)
def test_order_approval_under_the_async_driver(case: SagaCase, plan) -> None:
    run_plan(case, plan, driver="async").check()


@SAMPLE
@given(case=booking_cases(), plan=bookings)
def test_async_booking_under_the_async_driver(case: SagaCase, plan) -> None:
    run_plan(case, plan, driver="async").check()


@SAMPLE
@given(case=order_cases(), plan=sync_orders)
def test_order_approval_on_sqlite_under_the_sync_driver(sqlite: SQLiteStore, case: SagaCase,
                                                        plan) -> None:
    run_plan(case, plan, driver="sync", store=sqlite).check()


@SAMPLE
@given(case=booking_cases(), plan=bookings)
def test_async_booking_on_sqlite_under_the_async_driver(sqlite: SQLiteStore, case: SagaCase,
                                                        plan) -> None:
    run_plan(case, plan, driver="async", store=sqlite).check()


STEPS = settings(max_examples=100, stateful_step_count=40, deadline=None)

TestOrderApprovalMachine = saga_state_machine(
    OrderApproval, sagas=order_cases(), payloads=DECISIONS, rejections=REFUSALS
).TestCase
TestOrderApprovalMachine.settings = STEPS

TestAsyncBookingMachine = saga_state_machine(
    AsyncBooking, sagas=booking_cases(), payloads=CONFIRMATIONS
).TestCase
TestAsyncBookingMachine.settings = STEPS

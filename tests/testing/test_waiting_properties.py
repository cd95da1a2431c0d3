"""Waiting sagas, property-tested: every drawn plan of what their waits receive keeps
every invariant, on the engine driver (the bulk), the real sync and async drivers on a
memory store, and the real drivers on an SQLite file (signals stored in the database,
parked rows resumed); and the state machine sends signals and moves the clock rule by
rule."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from testing_sagas import reset_world, world
from waiting_sagas import (
    CONFIRMATIONS,
    DECISIONS,
    REFUSALS,
    AsyncBooking,
    Decision,
    OrderApproval,
    booking_cases,
    order_cases,
)

from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.testing import (
    Fault,
    SagaCase,
    failure_plans,
    run_plan,
    saga_state_machine,
)

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


def late_resume(resume_at_once: bool) -> None:
    """The rules, by hand: parked at the approval, a "yes" comes, then time passes
    before the saga is looked at again."""
    machine = saga_state_machine(OrderApproval, payloads=DECISIONS,
                                 resume_at_once=resume_at_once)()
    machine.start(SagaCase(OrderApproval("o-1", 500), reset_world, world))
    machine.succeed()  # reserve
    machine.succeed()  # the run reaches the approval and parks there
    assert machine.parked is not None
    machine.send_signal(("decision", Decision(True, "ann"), True, False), "s1")
    machine.time_runs_out()
    machine.succeed()
    machine.run_so_far_is_sound()
    machine.teardown()


def test_a_signal_resumes_a_parked_saga_at_once_by_default() -> None:
    late_resume(resume_at_once=True)


def test_a_signal_that_came_in_time_is_delivered_when_the_saga_is_resumed_late() -> None:
    """Across processes a parked saga is resumed when a worker polls, so time may pass
    between a signal and the resume, even past the wait's timeout: a signal stored in
    time is still delivered (this machine found the engine letting the wait time out
    instead; invariant 13 caught it)."""
    late_resume(resume_at_once=False)

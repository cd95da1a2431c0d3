"""Seed 002's order booked at once: a parallel group of async members, on virtual time.

Stock, payment and courier run as tasks at once; a member failing stops the group, the
running ones are cancelled (unknown) and everything done or unknown is undone
concurrently; a process killed inside the group is recovered from its SQLite file with
only the unfinished members re-run, under the same keys.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from example_fixtures import Captured, crash_verified
from hypothesis import find, given, settings

from examples._support import run_virtual
from examples.checkout import demo as scenarios
from examples.checkout import services as participants
from examples.checkout.saga import CheckoutSaga, InvalidOrder, example_sagas
from examples.checkout.services import CardDeclined, OutOfStock, services
from sagaflow import (
    CompensationStatus,
    SagaStatus,
    StepError,
    StepStatus,
    StepTimeout,
    events,
    spec_of,
)
from sagaflow.spec import CompensationOrder
from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.testing import SagaCase, run_plan
from sagaflow.testing._crashchild import fork

BOOK = ("reserve_stock", "charge_card", "book_courier")


@pytest.fixture(autouse=True)
def fresh_services() -> Iterator[None]:
    participants.reset()
    yield
    participants.reset()


def test_the_saga_declares_a_group_before_the_pivot_and_one_after() -> None:
    spec = spec_of(CheckoutSaga)
    book, tell = spec.groups
    assert [spec.steps[i].name for i in book.members] == list(BOOK)
    assert (book.limit, book.compensation, book.after_pivot) == (
        3, CompensationOrder.CONCURRENT, False)
    assert [spec.steps[i].name for i in tell.members] == ["send_receipt", "tell_warehouse"]
    assert tell.after_pivot
    assert spec.step("charge_card").retry.attempts == 3
    assert spec.step("book_courier").timeout == 5.0


def test_the_members_run_at_once_then_the_pivot_then_the_second_group(demo: Captured) -> None:
    result = run_virtual(scenarios.all_at_once(demo))

    assert result.status is SagaStatus.COMPLETED
    spans = {op: (a, b) for op, a, b in services().spans}
    # all three booked at the same instant, each taking its own time: they overlap
    assert spans["reserve"][0] == spans["charge"][0] == spans["book"][0]
    assert spans["reserve"][1] < spans["charge"][1] < spans["book"][1]
    assert spans["confirm"][0] >= spans["book"][1]  # the join: confirm waits for all
    assert spans["receipt"][0] >= spans["confirm"][1]
    assert [result.step(name).started_at for name in BOOK] == [
        result.step("reserve_stock").started_at] * 3
    assert result.duration is not None and result.duration < 0.5  # 0.3 + 0.05 + 0.05, not 0.6
    assert services().standing("checkout-1") == [
        "charged ann 30.00", "confirmed A-1", "courier to 1 Main St", "pick A-1",
        "receipt to ann", "reserved 1 x lamp",
    ]
    assert "when each call ran (virtual seconds): reserve 0.00→0.05, charge 0.00→0.20, " \
        "book 0.00→0.30" in demo.text


def test_a_declined_card_undoes_the_stock_and_the_courier_concurrently(demo: Captured) -> None:
    result = run_virtual(scenarios.declined_card(demo))

    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepError) and result.error.step == "charge_card"
    assert result.step("charge_card").status is StepStatus.FAILED
    assert result.step("charge_card").compensation is CompensationStatus.NOT_NEEDED
    # the courier was still booking: cancelled, its outcome unknown, so it is undone too
    assert result.step("book_courier").timed_out
    for name in ("reserve_stock", "book_courier"):
        assert result.step(name).compensation is CompensationStatus.COMPENSATED
    # concurrently: both compensations started before either completed
    kinds = [type(e) for e in result.history
             if isinstance(e, events.CompensationStarted | events.CompensationCompleted)]
    assert kinds[:2] == [events.CompensationStarted] * 2
    assert services().standing("checkout-2") == []
    assert "[book_courier ‖ reserve_stock]" in demo.text


def test_an_unavailable_gateway_retries_only_its_member(demo: Captured) -> None:
    result = run_virtual(scenarios.gateway_flaky(demo))

    assert result.status is SagaStatus.COMPLETED
    assert [result.step(name).attempts for name in BOOK] == [1, 2, 1]
    assert "charge_card ✗ attempt 1/3: GatewayUnavailable: gateway unavailable; retrying in 1s" \
        in demo.text


def test_a_courier_that_times_out_is_unknown_and_undone_with_the_others(demo: Captured) -> None:
    result = run_virtual(scenarios.courier_times_out(demo))

    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepTimeout)
    assert result.step("book_courier").status is StepStatus.TIMED_OUT
    assert {s.name for s in result.steps if s.compensation is CompensationStatus.COMPENSATED} \
        == set(BOOK)
    assert services().standing("checkout-4") == []  # the courier booked, and was cancelled
    assert 5.0 <= result.duration < 6.0  # type: ignore[operator]  # virtual seconds


def test_an_invalid_order_is_refused_before_anything_is_booked(demo: Captured) -> None:
    saga = CheckoutSaga("A-0", "zed", "lamp", 0, Decimal("30"), "")

    async def run() -> object:
        return await demo.arun(demo.async_orchestrator(), saga, "checkout-0")

    result = run_virtual(run())
    assert isinstance(result.error, StepError)  # type: ignore[attr-defined]
    assert isinstance(result.error.cause, InvalidOrder)  # type: ignore[attr-defined]
    assert services().spans == []


def test_a_process_killed_inside_the_group_recovers_only_the_unfinished_members(
    tmp_path: Path,
) -> None:
    with SQLiteStore(tmp_path / "sagas.db") as store:
        d = Captured(store)
        result = scenarios.crash_mid_group(d, tmp_path)

        assert result.status is SagaStatus.COMPLETED
        text = d.text
        assert "✝ charge took effect (checkout-crash:charge_card:forward)" in text
        assert "process killed (SIGKILL): exit status -9" in text
        assert ("the store: RUNNING at book: reserve_stock COMPLETED, charge_card RUNNING, "
                "book_courier RUNNING") in text
        assert ("participant: key checkout-crash:charge_card:forward seen before: returns "
                "charged eve 30.00, changes nothing") in text
        record = store.load(scenarios.CRASH_ID)
    assert record is not None
    started = [(e.step, e.attempt) for e in record.history if isinstance(e, events.StepStarted)]
    # the stock had finished: not run again; the two cut off run again under their keys
    assert started[:4] == [("validate", 1), ("reserve_stock", 1), ("charge_card", 1),
                           ("book_courier", 1)]
    assert sorted(started[4:6]) == [("book_courier", 2), ("charge_card", 2)]
    assert [s for s, _ in started[6:]] == ["confirm", "send_receipt", "tell_warehouse"]
    charges = [w for w in services().standing(scenarios.CRASH_ID) if w.startswith("charged")]
    assert charges == ["charged eve 30.00"]  # exactly once


# -- example_sagas(): the cases the property tests and `sagaflow verify` run ---------------


@settings(max_examples=30, deadline=None)
@given(case=example_sagas())
def test_the_example_cases_run_forward_or_are_refused_with_no_latency(case: SagaCase) -> None:
    run = run_plan(case)

    assert set(services().latency.values()) == {0}
    assert run.status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)
    if run.status is SagaStatus.COMPENSATED:  # invalid, out of stock or declined
        assert run.after == run.before == []
        assert isinstance(run.result.error, StepError)
        assert isinstance(run.result.error.cause, InvalidOrder | OutOfStock | CardDeclined)
    else:
        assert len(run.after) == 6  # reserved, charged, courier, confirmed, receipt, pick
    run.check()


def test_a_reset_gives_the_services_their_latency_back() -> None:
    first_case().setup()
    participants.reset()

    assert services().latency == participants.LATENCY


def test_the_cases_ledger_is_a_file_so_a_killed_process_s_effects_are_in_the_snapshot(
) -> None:
    case = first_case()
    case.setup()

    def charge_and_die() -> None:  # a process that dies with its effect committed
        asyncio.run(services().charge("k:charge_card:forward", "ann", Decimal(30)))
        os.kill(os.getpid(), signal.SIGKILL)

    _, code = fork(charge_and_die, 30)

    assert code == -signal.SIGKILL
    assert case.snapshot() == [("charged ann 30.00", "30")]
    case.setup()
    assert case.snapshot() == []  # each case starts from an empty ledger


def test_sagaflow_verify_runs_the_idempotency_nothing_to_undo_and_crash_gates() -> None:
    gates = crash_verified("examples.checkout.saga")
    assert gates["idempotency"][1] == "3 compensations run twice: no change"
    assert gates["nothing to undo"][1] == "3 compensations run with nothing to undo"


def first_case() -> SagaCase:
    found = find(example_sagas(), lambda c: c.saga.customer == "ann")
    assert isinstance(found, SagaCase)
    return found

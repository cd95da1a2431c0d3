"""Choreographed instances as recovery, workers and stall checks see them: parked
between their events while COMPENSATING too; a deadline and a retry whose participant
died in the backoff (a real process, SIGKILL) handed to the participants, never run
in the process that resumes them; ignored events noted in the instance's history.

Real components: SQLite files, the relay and in-process Handlers, a child process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner
from test_choreography import Bus

import examples.choreography.saga as order
from examples.choreography.saga import (
    OrderCreated,
    OrderFlow,
    Services,
    StockReserved,
)
from sagaflow import FlowFailed, Orchestrator, Participant, Retry, SagaStatus
from sagaflow.choreography import StepDue, choreography, message_for
from sagaflow.choreography import step as reacts
from sagaflow.cli import main
from sagaflow.events import EventIgnored
from sagaflow.outbox import Handlers, Relay
from sagaflow.testing.clock import VirtualClock

ROOT = Path(__file__).resolve().parent.parent
START = 1_700_000_000.0


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch) -> Services:
    fresh = Services()
    monkeypatch.setattr(order, "services", fresh)
    return fresh


def declined_between_events(url: str, clock: VirtualClock) -> Bus:
    """An order whose payment was declined: COMPENSATING, its FlowFailed in the outbox,
    nobody has undone the stock yet. The bus returned runs inventory only."""
    inventory = Bus(url, names=("inventory",), clock=clock)
    inventory.start("o-1", amount="5000")
    inventory.flush()  # the stock is reserved; nobody of inventory's takes StockReserved
    payments = Bus(url, names=("payments",), clock=clock)
    handled = payments.participants["payments"].handle(message_for(StockReserved("o-1")))
    assert handled.status is SagaStatus.COMPENSATING
    return inventory


def check_compensating_instance_is_left_to_its_participants(
    url: str, services: Services
) -> None:
    """What the SQLite and PostgreSQL tests both check."""
    clock = VirtualClock(START)
    inventory = declined_between_events(url, clock)
    record = inventory.record("o-1")
    assert record.status is SagaStatus.COMPENSATING
    assert record.waiting == "choreography"  # parked, like a RUNNING instance between events
    other = Orchestrator(url, sagas=[OrderFlow], clock=clock)
    report = other.recover()
    assert "OrderFlow:o-1" not in report.resumed and "OrderFlow:o-1" not in report.skipped
    clock.advance(3600)
    # quiet for an hour with no wake time (no compensation deadline): stalled, for an
    # operator to look at (were its FlowFailed lost, nothing would ever wake it); not
    # before its threshold
    assert other.check_stalled(after=7200) == []
    assert [i.saga_id for i in other.check_stalled(after=60)] == ["OrderFlow:o-1"]
    assert other.resume_due() == {}
    assert services.calls == ["reserve o-1", "charge o-1"]  # nothing undone in-process
    inventory.flush()  # FlowFailed reaches inventory: it releases the stock
    assert inventory.record("o-1").status is SagaStatus.COMPENSATED
    assert services.calls == ["reserve o-1", "charge o-1", "release o-1"]
    other.close()


def test_a_compensating_instance_between_events_is_parked(
    tmp_path: Path, services: Services
) -> None:
    check_compensating_instance_is_left_to_its_participants(
        f"sqlite:///{tmp_path / 'sagas.db'}", services
    )


# --- a participant dies in a retry's backoff ----------------------------------------


class _DyingClock(VirtualClock):
    """The child's clock: the participant dies (SIGKILL) when it sleeps out a backoff."""

    def sleep(self, seconds: float) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def _child(url: str) -> None:
    """In a child process: payments handles StockReserved; the card service is down
    once, so the charge waits to retry, and the process is killed in that wait."""
    order.services = Services(flaky=1)
    orch = Orchestrator(url, clock=_DyingClock(START))
    Participant(orch, OrderFlow, "payments").handle(message_for(StockReserved("o-2")))
    raise SystemExit("the participant should have died in the backoff")


def test_a_retry_whose_participant_died_is_redelivered_to_it(
    tmp_path: Path, services: Services
) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    clock = VirtualClock(START)
    bus = Bus(url, clock=clock)
    bus.participants["inventory"].handle(message_for(OrderCreated("o-2", Decimal(10))))
    bus.orch.store.relayed([m.id for m in bus.orch.store.outbox(100)])  # handed to payments:
    code = (f"import sys; sys.path[:0] = [{str(ROOT / 'tests')!r}, {str(ROOT)!r}]; "
            f"import test_choreography_recovery as t; t._child({url!r})")
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    record = bus.record("o-2")
    retry_at = record.wake_at
    assert record.status is SagaStatus.RUNNING and record.waiting == "choreography"
    assert record.steps[1].attempts == 1 and START < retry_at < record.deadline_at
    assert bus.orch.resume_due() == {}  # not due yet
    clock.advance_to(retry_at)
    # Due: whoever resumes it tells payments (StepDue); it runs nothing itself.
    assert bus.orch.resume_due() == {"OrderFlow:o-2": SagaStatus.RUNNING}
    assert services.calls == ["reserve o-2"]
    assert bus.orch.resume_due() == {}  # parked again, due at its deadline
    bus.flush()
    record = bus.record("o-2")
    assert record.status is SagaStatus.COMPLETED
    assert services.calls == ["reserve o-2", "charge o-2", "confirm o-2"]
    assert record.steps[1].attempts == 2 and not record.steps[1].timed_out  # a retry
    due = [e for e in bus.published if isinstance(e, StepDue)]
    assert due == [StepDue("OrderFlow", "o-2", "charge", "payments", False, retry_at)]
    assert not any(isinstance(e, FlowFailed) for e in bus.published)


# --- ignored events --------------------------------------------------------------------


def test_an_ignored_event_is_noted_in_the_history(tmp_path: Path, services: Services) -> None:
    db = tmp_path / "sagas.db"
    bus = Bus(db)
    bus.start("o-3", id="m-1")
    bus.flush()
    bus.start("o-3", id="m-1")  # redelivered
    late = message_for(StockReserved("o-3"), id="m-late")
    assert bus.participants["payments"].handle(late).outcome == "ignored"
    history = bus.record("o-3").history
    noted = [e for e in history if isinstance(e, EventIgnored)]
    assert [(e.event_id, e.event_type, e.participant, e.reason) for e in noted] == [
        ("m-1", "OrderCreated", "inventory", "the instance is COMPLETED"),
        ("m-late", "StockReserved", "payments", "the instance is COMPLETED"),
    ]
    shown = CliRunner().invoke(
        main, ["sagas", "show", "OrderFlow:o-3", "--store", f"sqlite:///{db}",
               "--import", "examples.choreography.saga"], catch_exceptions=False,
    ).output
    assert "EventIgnored OrderCreated (id m-1) by inventory: the instance is COMPLETED" in shown
    assert "(id m-late) by payments" in shown


def test_an_event_out_of_order_is_noted_with_where_the_instance_is(
    tmp_path: Path, services: Services
) -> None:
    bus = Bus(tmp_path / "sagas.db", names=("inventory",))
    bus.start("o-4")
    bus.flush()
    orders = Participant(bus.orch, OrderFlow, "orders")
    orders.handle(message_for(order.PaymentProcessed("o-4", "x"), id="m-early"))
    noted = [e for e in bus.record("o-4").history if isinstance(e, EventIgnored)]
    assert [(e.event_id, e.reason) for e in noted] == [
        ("m-early", "the instance is at step 'charge', not 'confirm'")
    ]
    assert bus.record("o-4").waiting == "choreography"  # still parked after the note


def test_an_operator_s_cancel_is_compensated_by_the_participants(
    tmp_path: Path, services: Services
) -> None:
    bus = Bus(tmp_path / "sagas.db", names=("inventory",))
    bus.start("o-5")
    bus.flush()
    cancelled = bus.orch.cancel("OrderFlow:o-5", note="customer called")
    assert cancelled.status is SagaStatus.COMPENSATING
    assert services.calls == ["reserve o-5"]  # nothing undone by the operator's process
    assert bus.record("o-5").waiting == "choreography"
    bus.flush()
    assert bus.record("o-5").status is SagaStatus.COMPENSATED
    assert services.calls == ["reserve o-5", "release o-5"]
    assert [e.step for e in bus.published if isinstance(e, FlowFailed)] == [""]


# --- a compensation that fails for good ---------------------------------------------

LOG: list[str] = []


@attrs.frozen
class Begun:
    key: str


@attrs.frozen
class ADone:
    key: str


@attrs.frozen
class AUndone:
    key: str


@attrs.frozen
class BDone:
    key: str


@attrs.frozen
class BUndone:
    key: str


@attrs.frozen
class CDone:
    key: str


@choreography(start=Begun, correlation="key")
@attrs.define
class Chain:
    key: str

    @reacts(emits=ADone, participant="a")
    def a(self, ctx):
        LOG.append("a")

    @a.compensate(emits=AUndone)
    def undo_a(self, ctx):
        LOG.append("undo a")

    @reacts(emits=BDone, participant="b")
    def b(self, ctx):
        LOG.append("b")

    @b.compensate(emits=BUndone, retry=Retry(1))
    def undo_b(self, ctx):
        LOG.append("undo b")
        raise RuntimeError("b cannot be undone")

    @reacts(pivot=True, emits=CDone, participant="c")
    def c(self, ctx):
        LOG.append("c")
        raise RuntimeError("c fails")


def test_a_compensation_failing_for_good_tells_the_next_participant(tmp_path: Path) -> None:
    LOG.clear()
    orch = Orchestrator(f"sqlite:///{tmp_path / 'sagas.db'}")
    handlers = Handlers()
    published: list[object] = []
    handlers.on(object, lambda event, message: published.append(event))
    for participant in [Participant(orch, Chain, name) for name in ("a", "b", "c")]:
        handlers.on(object, lambda event, message, p=participant: p.handle(message))
    handlers.publish([message_for(Begun("k"))])
    relay = Relay(orch.store, handlers)
    while relay.relay_once():
        pass
    record = orch.store.load("Chain:k")
    assert LOG == ["a", "b", "c", "undo b", "undo a"]
    assert record.status is SagaStatus.FAILED  # b could not be undone: an operator's
    assert StepDue("Chain", "k", "a", "a", True, None) in published

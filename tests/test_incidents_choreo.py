"""A parked COMPENSATING saga with no wake time (a choreography whose compensation event
was lost, no compensation deadline: nothing will ever wake it) and no checkpoint for
``after`` seconds is stalled, and its incident says why; a RUNNING saga parked at a
signal wait with no timeout, or a parked RUNNING instance, is not. Real SQLite files, a
real choreographed instance, a real worker."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
from test_choreography import Bus, services  # noqa: F401  (the fixture)
from wait_sagas import serving, until

from examples.choreography.saga import (
    OrderConfirmed,
    OrderCreated,
    OrderFlow,
    Services,
    StockReleased,
    StockReserved,
)
from sagaflow import Orchestrator, Participant, SagaStatus, saga, step, wait
from sagaflow.choreography import choreography, message_for
from sagaflow.choreography import step as reacts
from sagaflow.incidents import STALLED, Incident, open_incidents
from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.testing.clock import VirtualClock
from sagaflow.worker import Worker


@saga(name="inc-approval")
class Approval:
    """Waits days for a decision at a signal wait: quiet, and not stalled."""

    @step(readonly=True)
    def ask(self, ctx: Any) -> None:
        pass

    @wait("decision", timeout=timedelta(days=30))
    def decide(self, ctx: Any) -> None:
        pass


@choreography(start=OrderCreated, correlation="order_id")
@attrs.define
class Patient:
    """A choreography with no deadline: RUNNING between its events with no wake time, it
    waits for its next event for ever, and is not stalled."""

    order_id: str
    amount: Decimal

    @reacts(emits=StockReserved, participant="inventory")
    def reserve(self, ctx: Any) -> None:
        pass

    @reserve.compensate(emits=StockReleased)
    def release(self, ctx: Any) -> None:
        pass

    @reacts(pivot=True, emits=OrderConfirmed, participant="orders")
    def confirm(self, ctx: Any) -> None:
        pass


def lost_compensation_event(db: Path, clock: VirtualClock | None = None) -> Bus:
    """OrderFlow:o-1 COMPENSATING, parked, no wake time: inventory reserved, payments
    declined, and the FlowFailed meant for inventory is lost (inventory is down)."""
    first = Bus(db, names=("inventory",), clock=clock)
    first.start("o-1", amount="5000")
    first.relay.relay_once()  # OrderCreated: inventory reserves
    later = Bus(db, names=("payments",), clock=clock)
    later.handlers.publish([message_for(StockReserved("o-1"))])
    later.flush()  # payments declines; FlowFailed reaches payments only
    record = later.record("o-1")
    assert record.status is SagaStatus.COMPENSATING and record.waiting == "choreography"
    assert record.wake_at is None  # OrderFlow has no compensation deadline
    return later


def test_a_compensating_instance_nothing_will_wake_is_stalled(
    tmp_path: Path, services: Services,  # noqa: F811
) -> None:
    db = tmp_path / "sagas.db"
    clock = VirtualClock()
    bus = lost_compensation_event(db, clock)
    waiting = Orchestrator(bus.orch.store, clock=clock)
    waiting.run(Approval(), "a-1")  # parked at its signal wait, no wake time
    assert waiting.store.load("a-1").waiting == "decision"
    Bus(db, names=("inventory",), clock=clock).start("o-2")  # parked RUNNING, deadline
    patient = Participant(waiting, Patient, "inventory")
    patient.handle(message_for(OrderCreated("p-1", Decimal(1))))
    parked = waiting.store.load("Patient:p-1")
    assert parked.status is SagaStatus.RUNNING and parked.waiting == "choreography"
    assert parked.wake_at is None  # no deadline: only its next event moves it
    heard: list[Incident] = []
    orch = Orchestrator(bus.orch.store, clock=clock, on_incident=heard.append)
    assert orch.check_stalled(after=600) == []  # quiet, but not for long enough
    clock.advance(601)
    found = orch.check_stalled(after=600)
    assert [(i.kind, i.saga_id) for i in found] == [(STALLED, "OrderFlow:o-1")]
    assert heard == found
    reason = found[0].reason
    assert reason.startswith("COMPENSATING, parked with no wake time and no checkpoint for")
    assert "may have been lost and no compensation deadline will wake it" in reason
    assert open_incidents(bus.orch.store, stalled_after=600, now=clock.now()) == found


def test_the_worker_pages_it(tmp_path: Path, services: Services) -> None:  # noqa: F811
    db = tmp_path / "sagas.db"
    lost_compensation_event(db)
    heard: list[Incident] = []
    worker = Worker(SQLiteStore(db), [OrderFlow, Approval], stalled_after=0.2,
                    stalled_every=0.02, on_incident=heard.append)
    with serving(worker, grace=0):
        until(lambda: len(heard) >= 1, what="the stalled incident")
        looked = worker.stall_checks
        until(lambda: worker.stall_checks >= looked + 3, what="three more looks")
    assert [(i.kind, i.saga_id) for i in heard] == [(STALLED, "OrderFlow:o-1")]
    assert "no compensation deadline" in heard[0].reason

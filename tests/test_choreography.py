"""Choreography with a map: the declaration, participants handling events, tracking.

Real components: a SQLite file store, its outbox, the relay and in-process Handlers.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import attrs
import pytest

import examples.choreography.saga as order
from examples.choreography.saga import (
    OrderConfirmed,
    OrderCreated,
    OrderFlow,
    PaymentProcessed,
    Services,
    StockReleased,
    StockReserved,
)
from sagaflow import (
    FlowFailed,
    Orchestrator,
    Participant,
    SagaDefinitionError,
    SagaStatus,
    UnknownCorrelation,
    spec_of,
)
from sagaflow import step as plain_step
from sagaflow.choreography import (
    UnknownInstance,
    choreography,
    choreography_of,
    message_for,
    step,
)
from sagaflow.events import EventIgnored
from sagaflow.outbox import Handlers, Relay
from sagaflow.testing.clock import VirtualClock

PARTICIPANTS = ("inventory", "payments", "orders")


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch) -> Services:
    fresh = Services()
    monkeypatch.setattr(order, "services", fresh)
    return fresh


class Bus:
    """An orchestrator on a SQLite file (or a store URL), its relay, and participants
    on Handlers."""

    def __init__(self, path: Path | str, names: tuple[str, ...] = PARTICIPANTS,
                 clock: VirtualClock | None = None) -> None:
        url = path if isinstance(path, str) else f"sqlite:///{path}"
        self.orch = Orchestrator(url, clock=clock)
        self.handlers = Handlers()
        self.published: list[object] = []
        self.handled: list[object] = []
        self.handlers.on(object, lambda event, message: self.published.append(event))
        self.participants = {n: Participant(self.orch, OrderFlow, n) for n in names}
        for p in self.participants.values():
            self.handlers.on(object, self._deliver_to(p))
        self.relay = Relay(self.orch.store, self.handlers)

    def _deliver_to(self, p: Participant):  # type: ignore[no-untyped-def]
        def deliver(event: object, message: object) -> None:
            self.handled.append((p.name, p.handle(message)))  # type: ignore[arg-type]
        return deliver

    def start(self, order_id: str, amount: str = "10", id: str | None = None) -> None:
        self.handlers.publish([message_for(OrderCreated(order_id, Decimal(amount)), id)])

    def flush(self) -> None:
        while self.relay.relay_once():
            pass

    def record(self, order_id: str):  # type: ignore[no-untyped-def]
        return self.orch.store.load(f"OrderFlow:{order_id}")


# --- the declaration ------------------------------------------------------------------


def test_the_flow_is_a_saga_with_a_choreography_beside_it() -> None:
    spec = spec_of(OrderFlow)
    chor = choreography_of(OrderFlow)
    assert [s.name for s in spec.steps] == ["reserve_stock", "charge", "confirm"]
    assert spec.key == "order_id" and spec.deadline == 600
    assert chor.participants == ("inventory", "payments", "orders")
    assert [r.trigger for r in chor.roles] == [OrderCreated, StockReserved, PaymentProcessed]
    assert [r.emits for r in chor.roles] == [StockReserved, PaymentProcessed, OrderConfirmed]
    assert chor.roles[0].compensation_emits is StockReleased
    assert chor.saga_id("o-1") == "OrderFlow:o-1"
    assert ("reserve_stock", "advance", "charge") in spec.transitions


@attrs.frozen
class Started:
    key: str


@attrs.frozen
class Done:
    key: str


@attrs.frozen
class NoKey:
    other: str


def _problems(build) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(SagaDefinitionError) as caught:
        build()
    return str(caught.value)


def test_a_step_without_emits_is_refused_with_the_fix() -> None:
    def build() -> None:
        @choreography(start=Started, correlation="key")
        class Flow:
            key: str

            @plain_step(pivot=True)
            def go(self, ctx): ...

    text = _problems(build)
    assert "step 'go' has no emits" in text
    assert "sagaflow.choreography.step(emits=EventClass, participant='name')" in text


def test_an_event_without_the_correlation_field_is_refused() -> None:
    def build() -> None:
        @choreography(start=NoKey, correlation="key")
        class Flow:
            key: str

            @step(pivot=True, emits=NoKey, participant="a")
            def go(self, ctx): ...

    text = _problems(build)
    assert "the start event NoKey has no field 'key'" in text
    assert "step 'go': emits= NoKey has no field 'key'" in text


def test_two_steps_emitting_one_event_type_are_refused() -> None:
    def build() -> None:
        @choreography(start=Started, correlation="key")
        class Flow:
            key: str

            @step(emits=Done, participant="a")
            def one(self, ctx): ...

            @one.compensate(emits=Started)
            def undo_one(self, ctx): ...

            @step(pivot=True, emits=Done, participant="b")
            def two(self, ctx): ...

    text = _problems(build)
    assert "step 'two' emits Done, as step 'one' does" in text
    assert "the compensation of step 'one' emits Started, as the start event does" in text


def test_a_compensation_without_emits_and_saga_problems_are_reported_together() -> None:
    def build() -> None:
        @choreography(start=Started, correlation="missing")
        class Flow:
            key: str

            @step(emits=Done, participant="a")
            def one(self, ctx): ...

    text = _problems(build)
    assert "correlation='missing' must name one of the class's fields (key)" in text
    assert "@saga(key='missing') must name one of the saga's fields" in text

    def build2() -> None:
        @choreography(start=Started, correlation="key")
        class Flow:
            key: str

            @step(emits=Done, participant="")
            def one(self, ctx): ...

            @one.compensate
            def undo(self, ctx): ...

    text = _problems(build2)
    assert "compensation 'undo' of step 'one' has no emits" in text
    assert "participant must name the service that runs it" in text


def test_when_is_refused_with_the_fix() -> None:
    def build() -> None:
        @choreography(start=Started, correlation="key")
        class Flow:
            key: str

            @step(pivot=True, emits=Done, participant="a", when=lambda s: s.key != "x")
            def go(self, ctx): ...

    text = _problems(build)
    assert "step 'go': when= is not supported in a choreography" in text
    assert "drop when= and test the condition in the step itself" in text


# --- participants -----------------------------------------------------------------------


def test_the_order_runs_participant_by_participant(tmp_path: Path, services: Services) -> None:
    bus = Bus(tmp_path / "sagas.db")
    bus.start("o-1")
    bus.flush()
    record = bus.record("o-1")
    assert record.status is SagaStatus.COMPLETED
    assert record.waiting is None
    assert services.calls == ["reserve o-1", "charge o-1", "confirm o-1"]
    assert bus.published == [
        OrderCreated("o-1", Decimal(10)), StockReserved("o-1"),
        PaymentProcessed("o-1", "ch-o-1"), OrderConfirmed("o-1"),
    ]
    ran = [(name, h.step) for name, h in bus.handled if h.outcome == "ran"]
    assert ran == [("inventory", "reserve_stock"), ("payments", "charge"), ("orders", "confirm")]
    assert record.data.charge_id == "ch-o-1"


def test_between_its_events_an_instance_is_parked_and_recovery_leaves_it(
    tmp_path: Path, services: Services
) -> None:
    bus = Bus(tmp_path / "sagas.db", names=("inventory",))  # nobody takes payments yet
    bus.start("o-2")
    bus.flush()
    record = bus.record("o-2")
    assert record.status is SagaStatus.RUNNING and record.cursor == 1
    assert record.waiting == "choreography"
    assert record.wake_at == record.deadline_at
    report = Orchestrator(f"sqlite:///{tmp_path / 'sagas.db'}", sagas=[OrderFlow]).recover()
    assert "OrderFlow:o-2" not in report.resumed
    assert services.calls == ["reserve o-2"]
    # payments comes up later: the instance goes on from where it is
    later = Bus(tmp_path / "sagas.db")
    later.handlers.publish([message_for(StockReserved("o-2"))])
    later.flush()
    assert later.record("o-2").status is SagaStatus.COMPLETED
    assert services.calls == ["reserve o-2", "charge o-2", "confirm o-2"]


def test_a_declined_payment_compensates_through_events(tmp_path: Path, services: Services) -> None:
    bus = Bus(tmp_path / "sagas.db")
    bus.start("o-3", amount="5000")
    bus.flush()
    record = bus.record("o-3")
    assert record.status is SagaStatus.COMPENSATED
    assert services.calls == ["reserve o-3", "charge o-3", "release o-3"]
    assert services.reserved == set()
    failed = [e for e in bus.published if isinstance(e, FlowFailed)]
    assert len(failed) == 1 and failed[0].step == "charge" and failed[0].correlation == "o-3"
    assert "over the card's limit" in failed[0].reason
    assert bus.published[-1] == StockReleased("o-3")
    undone = [(n, h.step) for n, h in bus.handled if h.outcome == "ran" and h.compensation]
    assert undone == [("inventory", "reserve_stock")]
    # FlowFailed and StockReleased reached payments too, which had nothing of its own to
    # undo: compensation events go to every participant with compensations, so those it
    # ignores are not noted in the history (only events meant for it are).
    assert [h.reason for n, h in bus.handled if n == "payments" and h.outcome == "ignored"]
    assert not [e for e in record.history if isinstance(e, EventIgnored)]


def test_a_step_is_retried_within_its_handling(tmp_path: Path, services: Services) -> None:
    services.flaky = 2
    bus = Bus(tmp_path / "sagas.db")
    bus.start("o-4")
    bus.flush()
    assert bus.record("o-4").status is SagaStatus.COMPLETED
    assert services.calls.count("charge o-4") == 3
    assert bus.record("o-4").steps[1].attempts == 3


def test_a_redelivered_start_event_and_a_duplicate_trigger_are_ignored(
    tmp_path: Path, services: Services
) -> None:
    bus = Bus(tmp_path / "sagas.db")
    bus.start("o-5", id="m-1")
    bus.flush()
    bus.handled.clear()
    bus.start("o-5", id="m-1")
    bus.handlers.publish([message_for(StockReserved("o-5"))])
    assert services.calls == ["reserve o-5", "charge o-5", "confirm o-5"]
    mine = [h for _, h in bus.handled if h.outcome != "not-mine"]
    assert [h.outcome for h in mine] == ["ignored", "ignored"]
    assert [h.reason for h in mine] == ["the instance is COMPLETED"] * 2


def test_a_late_trigger_is_ignored_with_where_the_instance_is(
    tmp_path: Path, services: Services
) -> None:
    bus = Bus(tmp_path / "sagas.db", names=("inventory", "orders"))
    bus.start("o-6")
    bus.flush()
    orders = bus.participants["orders"]
    handled = orders.handle(message_for(PaymentProcessed("o-6", "x")))
    assert handled.outcome == "ignored"
    assert handled.reason == "the instance is at step 'charge', not 'confirm'"
    assert services.calls == ["reserve o-6"]


def test_an_event_for_an_unknown_correlation_raises(tmp_path: Path, services: Services) -> None:
    bus = Bus(tmp_path / "sagas.db")
    with pytest.raises(UnknownInstance, match="no OrderFlow instance 'OrderFlow:nope'") as e:
        bus.participants["payments"].handle(message_for(StockReserved("nope")))
    assert isinstance(e.value, UnknownCorrelation)  # routing's: a DeadLetter
    assert bus.participants["payments"].handle(message_for(OrderCreated("x", Decimal(1)))) \
        .outcome == "not-mine"
    with pytest.raises(ValueError, match="no participant 'shipping'"):
        Participant(bus.orch, OrderFlow, "shipping")


def test_a_stalled_instance_is_compensated_at_its_deadline_by_its_participants(
    tmp_path: Path, services: Services
) -> None:
    clock = VirtualClock()
    bus = Bus(tmp_path / "sagas.db", names=("inventory",), clock=clock)
    bus.start("o-7")
    bus.flush()
    assert bus.orch.resume_due() == {}
    clock.advance(601)
    # The worker's side: the deadline begins compensation and tells the participants;
    # it runs no compensation itself.
    assert bus.orch.resume_due() == {"OrderFlow:o-7": SagaStatus.COMPENSATING}
    assert services.calls == ["reserve o-7"]
    record = bus.record("o-7")
    assert "deadline" in str(record.error)
    assert record.waiting == "choreography"  # parked: the participants' now
    assert bus.orch.resume_due() == {}
    bus.flush()  # FlowFailed reaches inventory, which releases the stock
    record = bus.record("o-7")
    assert record.status is SagaStatus.COMPENSATED
    assert services.calls == ["reserve o-7", "release o-7"]
    failed = [e for e in bus.published if isinstance(e, FlowFailed)]
    assert [(f.step, "deadline" in f.reason) for f in failed] == [("charge", True)]
    undone = [(n, h.step) for n, h in bus.handled if h.outcome == "ran" and h.compensation]
    assert undone == [("inventory", "reserve_stock")]


def test_instances_are_listed_like_any_saga(tmp_path: Path, services: Services) -> None:
    bus = Bus(tmp_path / "sagas.db", names=("inventory",))
    bus.start("o-8")
    bus.flush()
    running = bus.orch.running("OrderFlow")
    assert [r.saga_id for r in running] == ["OrderFlow:o-8"]
    assert bus.orch.find("o-8", OrderFlow) == "OrderFlow:o-8"


@attrs.frozen
class Shipped:
    key: str
    carrier: str


@choreography(start=Started, correlation="key")
@attrs.define
class ShipFlow:
    key: str

    @step(pivot=True, emits=Shipped, participant="shipping")
    def ship(self, ctx):  # forgets to emit Shipped, which sagaflow cannot build
        pass


def test_a_step_that_does_not_emit_what_it_declares_fails(tmp_path: Path) -> None:
    orch = Orchestrator(f"sqlite:///{tmp_path / 'sagas.db'}")
    handled = Participant(orch, ShipFlow, "shipping").handle(message_for(Started("k")))
    assert handled.outcome == "ran" and handled.status is SagaStatus.COMPENSATED
    record = orch.store.load("ShipFlow:k")
    assert "ship must emit a Shipped" in str(record.error)
    assert "(key, carrier)" in str(record.error)


def test_async_participants(tmp_path: Path, services: Services) -> None:
    orch = Orchestrator(f"sqlite:///{tmp_path / 'sagas.db'}")
    parts = [Participant(orch, OrderFlow, n) for n in PARTICIPANTS]

    async def main() -> None:
        pending = [message_for(OrderCreated("o-9", Decimal(3)))]
        while pending:
            message = pending.pop(0)
            for p in parts:
                await p.ahandle(message)
            pending.extend(orch.store.outbox(100))
            orch.store.relayed([m.id for m in pending])

    asyncio.run(main())
    assert orch.store.load("OrderFlow:o-9").status is SagaStatus.COMPLETED
    assert services.calls == ["reserve o-9", "charge o-9", "confirm o-9"]


def test_message_for_tags_the_event_as_the_outbox_does() -> None:
    message = message_for(StockReserved("o-1"), id="m-7")
    assert message.id == "m-7"
    body = json.loads(message.body)
    assert body["value"] == {"order_id": "o-1"}
    assert message.type == body["$type"] == "examples.choreography.saga:StockReserved"


# --- the map ------------------------------------------------------------------------------


def test_the_diagram_edges_carry_the_events_and_the_nodes_the_participants() -> None:
    from examples.choreography.saga import OrderOrchestration
    from sagaflow.diagram import to_dot, to_mermaid

    text = to_mermaid(OrderFlow)
    assert "not_started --> reserve_stock : start (OrderCreated)" in text
    assert "reserve_stock --> charge : advance (StockReserved)" in text
    assert "charge --> compensating_charge : compensate (FlowFailed)" in text
    assert "compensating_charge --> compensating_reserve_stock : undone (PaymentRefunded)" in text
    assert "charge : by payments" in text
    assert "PaymentProcessed" in to_dot(OrderFlow)
    twin = to_mermaid(OrderOrchestration)  # orchestrated: no events, no participants
    assert "reserve_stock --> charge : advance\n" in twin
    assert "by payments" not in twin and "FlowFailed" not in twin


def test_an_instance_is_drawn_with_its_position(tmp_path: Path, services: Services) -> None:
    from sagaflow.diagram import to_mermaid

    bus = Bus(tmp_path / "sagas.db", names=("inventory",))
    bus.start("o-10")
    bus.flush()
    text = to_mermaid(bus.record("o-10"))
    assert "OrderFlow:o-10" in text
    assert "class charge ranRunning" in text  # where it is: waiting for StockReserved's handler
    assert "reserve_stock --> charge : advance (StockReserved)" in text

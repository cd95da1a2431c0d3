"""The choreographed order over a real redis-server: each participant is its own consumer
group of the stream, with its own orchestrator on the shared SQLite file store; the relay
publishes every instance's outbox to the stream."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

import examples.choreography.saga as order
from examples.choreography.saga import OrderCreated, OrderFlow, Services, StockReserved
from sagaflow import Orchestrator, Participant, SagaStatus
from sagaflow.brokers.redis import RedisConsumer, RedisStreams
from sagaflow.choreography import message_for
from sagaflow.outbox import Relay

NAMES = ("inventory", "payments", "orders")


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch) -> Services:
    fresh = Services()
    monkeypatch.setattr(order, "services", fresh)
    return fresh


class Town:
    def __init__(self, url: str, stream: str, db: Path) -> None:
        self.streams = RedisStreams(url, stream)
        self.orch = Orchestrator(f"sqlite:///{db}")
        self.relay = Relay(self.orch.store, self.streams)
        self.services: list[tuple[Participant, RedisConsumer]] = []
        for name in NAMES:
            own = Orchestrator(f"sqlite:///{db}")  # each service its own connection
            participant = Participant(own, OrderFlow, name)
            consumer = self.streams.consumer(name, claim_after=0, max_deliveries=2)
            self.services.append((participant, consumer))

    def run(self) -> None:
        """Relay and consume until nothing moves."""
        while True:
            moved = self.relay.relay_once()
            for participant, consumer in self.services:
                moved += consumer.consume_once(participant.handle)
            if not moved:
                return

    def close(self) -> None:
        for _, consumer in self.services:
            consumer.close()
        self.streams.close()


@pytest.fixture
def town(redis_url: str, stream: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    t = Town(redis_url, stream, tmp_path / "sagas.db")
    yield t
    t.close()


def test_the_order_flows_over_redis(town: Town, services: Services) -> None:
    town.streams.publish([message_for(OrderCreated("r-1", Decimal(5)), "start-r-1")])
    town.run()
    assert town.orch.get("OrderFlow:r-1").status is SagaStatus.COMPLETED  # type: ignore[union-attr]
    assert services.calls == ["reserve r-1", "charge r-1", "confirm r-1"]


def test_a_declined_payment_compensates_over_redis(town: Town, services: Services) -> None:
    town.streams.publish([message_for(OrderCreated("r-2", Decimal(5000)), "start-r-2")])
    town.run()
    assert town.orch.get("OrderFlow:r-2").status is SagaStatus.COMPENSATED  # type: ignore[union-attr]
    assert services.calls == ["reserve r-2", "charge r-2", "release r-2"]


def test_redelivered_events_change_nothing(town: Town, services: Services) -> None:
    start = message_for(OrderCreated("r-3", Decimal(5)), "start-r-3")
    town.streams.publish([start])
    town.run()
    town.streams.publish([start, message_for(StockReserved("r-3"))])  # again
    town.run()
    assert services.calls == ["reserve r-3", "charge r-3", "confirm r-3"]
    for _, consumer in town.services:
        assert consumer.dead_letters() == []


def test_an_unknown_correlation_ends_in_the_dead_letters(town: Town, services: Services) -> None:
    town.streams.publish([message_for(StockReserved("ghost"), "m-ghost")])
    town.run()  # dead-lettered at once: no delivery again
    payments = town.services[1][1]
    (dead,) = payments.dead_letters()
    assert dead["id"] == "m-ghost"
    assert dead["reason"].startswith("handler: no OrderFlow instance 'OrderFlow:ghost'")
    assert services.calls == []

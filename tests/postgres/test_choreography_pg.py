"""Choreographed instances on PostgreSQL: a COMPENSATING one between its events is a
parked row (recovery, ``resume_due`` and the stall check leave it to its participants),
and its deadline is handed to the participants, never compensated in-process."""

from __future__ import annotations

import time

import pytest
from test_choreography import Bus
from test_choreography_recovery import (
    START,
    check_compensating_instance_is_left_to_its_participants,
)
from wait_sagas import serving, until

import examples.choreography.saga as order
from examples.choreography.saga import Services
from sagaflow import FlowFailed, SagaStatus
from sagaflow.testing.clock import VirtualClock
from sagaflow.worker import Worker


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch) -> Services:
    fresh = Services()
    monkeypatch.setattr(order, "services", fresh)
    return fresh


def test_a_compensating_instance_between_events_is_parked(
    store_url: str, services: Services
) -> None:
    check_compensating_instance_is_left_to_its_participants(store_url, services)


def test_the_deadline_is_handed_to_the_participants(store_url: str, services: Services) -> None:
    clock = VirtualClock(START)
    bus = Bus(store_url, names=("inventory",), clock=clock)
    bus.start("o-5")
    bus.flush()
    clock.advance(601)
    assert bus.orch.resume_due() == {"OrderFlow:o-5": SagaStatus.COMPENSATING}
    assert services.calls == ["reserve o-5"]
    assert bus.orch.recover().resumed == {}
    bus.flush()
    assert bus.record("o-5").status is SagaStatus.COMPENSATED
    assert services.calls == ["reserve o-5", "release o-5"]
    assert [e.step for e in bus.published if isinstance(e, FlowFailed)] == ["charge"]


def test_a_worker_hands_a_past_deadline_to_the_participants(
    store_url: str, services: Services
) -> None:
    # Started "an hour ago" by the participants' clock: the worker, on the real clock,
    # finds its 600 s deadline past at once.
    clock = VirtualClock(time.time() - 3600)
    bus = Bus(store_url, names=("inventory",), clock=clock)
    bus.start("o-6")
    bus.flush()

    def told() -> bool:
        bus.flush()
        return bus.record("o-6").status is SagaStatus.COMPENSATED

    with serving(Worker(store_url, [order.OrderFlow], poll=0.02)):
        until(told, what="the worker's FlowFailed, undone by inventory")
    assert services.calls == ["reserve o-6", "release o-6"]
    assert [e.step for e in bus.published if isinstance(e, FlowFailed)] == ["charge"]
    undone = [(n, h.step) for n, h in bus.handled if h.outcome == "ran" and h.compensation]
    assert undone == [("inventory", "reserve_stock")]  # by its participant, not the worker

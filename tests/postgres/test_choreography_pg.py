"""Choreographed instances on PostgreSQL: a COMPENSATING one between its events is a
parked row (recovery, ``resume_due`` and the stall check leave it to its participants),
and its deadline is handed to the participants, never compensated in-process."""

from __future__ import annotations

import pytest
from test_choreography import Bus
from test_choreography_recovery import (
    START,
    check_compensating_instance_is_left_to_its_participants,
)

import examples.choreography.saga as order
from examples.choreography.saga import Services
from sagaflow import FlowFailed, SagaStatus
from sagaflow.testing.clock import VirtualClock


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

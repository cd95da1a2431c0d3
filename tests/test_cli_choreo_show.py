"""`sagaflow sagas show` of a parked choreographed instance says what it waits for (the
next event for its step's participant, or the compensation events) and until when, not
"waiting for signal 'choreography'"."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from test_choreography import Bus, services  # noqa: F401  (the fixture)

from examples.choreography.saga import Services, StockReserved
from sagaflow import SagaStatus
from sagaflow.choreography import message_for
from sagaflow.cli import main
from sagaflow.cli.text import utc


def show(path: Path, saga_id: str) -> str:
    result = CliRunner().invoke(
        main, ["sagas", "show", saga_id, "--store", f"sqlite:///{path}",
               "--import", "examples.choreography.saga"], catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_a_parked_instance_waits_for_the_next_event_of_its_participant(
    tmp_path: Path, services: Services,  # noqa: F811
) -> None:
    bus = Bus(tmp_path / "sagas.db", names=("inventory",))  # nobody takes payments yet
    bus.start("o-1")
    bus.flush()
    record = bus.record("o-1")
    assert record.status is SagaStatus.RUNNING and record.waiting == "choreography"
    out = show(tmp_path / "sagas.db", "OrderFlow:o-1")
    assert "signal 'choreography'" not in out
    assert ("  waiting     for event StockReserved for participant 'payments' "
            "(step 'charge') (choreography)\n"
            f"              until its deadline {utc(record.deadline_at)}\n") in out


def test_a_compensating_instance_waits_for_compensation_events(
    tmp_path: Path, services: Services,  # noqa: F811
) -> None:
    # inventory reserved; payments declines; the FlowFailed meant for inventory is lost
    # (inventory is not running): no compensation deadline wakes it
    first = Bus(tmp_path / "sagas.db", names=("inventory",))
    first.start("o-2", amount="5000")
    first.relay.relay_once()  # OrderCreated: inventory reserves; StockReserved stays
    later = Bus(tmp_path / "sagas.db", names=("payments",))
    later.handlers.publish([message_for(StockReserved("o-2"))])
    later.flush()
    record = later.record("o-2")
    assert record.status is SagaStatus.COMPENSATING and record.waiting == "choreography"
    out = show(tmp_path / "sagas.db", "OrderFlow:o-2")
    assert ("  waiting     for compensation events (FlowFailed, StockReleased, "
            "PaymentRefunded): "
            "participant 'inventory' undoes step 'reserve_stock' (choreography)\n"
            "              no compensation deadline: nothing wakes it but those "
            "events\n") in out

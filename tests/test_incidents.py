"""Incidents: FAILED sagas no one resolved, quarantined ones and stalled ones open an
incident (what could not be undone, why, since when); a hook hears of each; resolving,
lifting the quarantine or finishing the saga closes it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from click.testing import CliRunner

from sagaflow import Orchestrator, Retry, SagaStatus, saga, spec_of, step
from sagaflow.cli.app import main
from sagaflow.engine import new_record, next_command
from sagaflow.incidents import FAILED, QUARANTINED, STALLED, Incident, open_incidents
from sagaflow.stores import MemoryStore
from sagaflow.stores.sqlite import SQLiteStore

BROKEN: set[str] = set()


@saga(name="incident-transfer")
class Transfer:
    amount: int

    @step
    def debit(self, ctx):
        pass

    @debit.compensate(retry=Retry(attempts=1))
    def credit_back(self, ctx):
        if "credit_back" in BROKEN:
            raise ConnectionError("the ledger is down")

    @step(readonly=True)
    def check(self, ctx):
        if self.amount > 100:
            raise ValueError("over the limit")


@saga(name="incident-notify")
class Notify:
    n: int

    @step(pivot=True)
    def commit(self, ctx):
        pass

    @step(retriable=True, retry=Retry(attempts=1))
    def email(self, ctx):
        raise ConnectionError("smtp down")


def test_a_failed_saga_opens_an_incident_the_hook_hears_and_resolving_closes_it() -> None:
    BROKEN.add("credit_back")
    heard: list[Incident] = []
    try:
        orchestrator = Orchestrator(MemoryStore(), on_incident=heard.append)
        result = orchestrator.run(Transfer(500), "t-1")
    finally:
        BROKEN.clear()
    assert result.status is SagaStatus.FAILED
    (incident,) = heard
    assert incident.kind == FAILED and incident.saga_id == "t-1"
    assert incident.not_undone == ("debit",)
    assert "ledger is down" in incident.reason and "over the limit" in incident.reason
    assert orchestrator.incidents() == [incident]
    orchestrator.resolve("t-1", "credited by hand")
    assert orchestrator.incidents() == []


def test_a_step_after_the_pivot_failing_is_what_was_not_done() -> None:
    heard: list[Incident] = []
    orchestrator = Orchestrator(MemoryStore(), on_incident=heard.append)
    assert orchestrator.run(Notify(1), "n-1").status is SagaStatus.FAILED
    assert [i.not_undone for i in heard] == [("email",)]


def test_a_saga_that_ends_well_opens_none_and_a_broken_hook_never_breaks_a_saga() -> None:
    def hook(incident: Incident) -> None:
        raise RuntimeError("the pager is down")

    orchestrator = Orchestrator(MemoryStore(), on_incident=hook)
    assert orchestrator.run(Transfer(5)).ok
    assert orchestrator.run(Notify(1), "n-2").status is SagaStatus.FAILED  # hook raised
    assert [i.saga_id for i in orchestrator.incidents()] == ["n-2"]


def test_a_quarantined_saga_is_an_incident_until_its_quarantine_is_lifted(
    tmp_path: Path,
) -> None:
    heard: list[Incident] = []
    store = SQLiteStore(tmp_path / "sagas.db")
    orchestrator = Orchestrator(store, sagas=[Transfer], on_incident=heard.append)
    spec = spec_of(Transfer)
    record = new_record(spec, Transfer(5), "q-1", time.time())
    next_command(spec, record, time.time())
    store.create(record)
    with sqlite3.connect(tmp_path / "sagas.db") as db:  # its state damaged: undrivable
        db.execute("UPDATE sagaflow_sagas SET state = 'nowhere' WHERE saga_id = 'q-1'")
    report = orchestrator.recover()
    assert "q-1" in report.quarantined
    assert [(i.kind, i.saga_id) for i in heard] == [(QUARANTINED, "q-1")]
    assert [i.kind for i in orchestrator.incidents()] == [QUARANTINED]
    orchestrator.unquarantine("q-1")
    assert [i.kind for i in orchestrator.incidents()] == []
    store.close()


def test_a_saga_with_no_checkpoint_for_too_long_is_stalled(tmp_path: Path) -> None:
    heard: list[Incident] = []
    store = SQLiteStore(tmp_path / "sagas.db")
    orchestrator = Orchestrator(store, sagas=[Transfer], on_incident=heard.append)
    spec = spec_of(Transfer)
    long_ago = time.time() - 3600
    record = new_record(spec, Transfer(5), "s-1", long_ago)
    next_command(spec, record, long_ago)  # debit started, then its process died
    record.updated_at = long_ago
    store.create(record)
    fresh = new_record(spec, Transfer(5), "s-2", time.time())
    fresh.updated_at = time.time()
    store.create(fresh)
    assert orchestrator.incidents() == []  # without a threshold: no stall looked for
    found = orchestrator.check_stalled(after=600)
    assert [(i.kind, i.saga_id) for i in found] == [(STALLED, "s-1")]
    assert heard == found
    assert "no checkpoint for 3600s" in found[0].reason
    assert orchestrator.recover().resumed["s-1"] is SagaStatus.COMPLETED
    assert open_incidents(store, stalled_after=600) == []
    store.close()


def test_the_command_lists_the_incidents(tmp_path: Path) -> None:
    db = tmp_path / "sagas.db"
    with SQLiteStore(db) as store:
        Orchestrator(store).run(Notify(1), "n-9")
    result = CliRunner().invoke(
        main, ["sagas", "list", "--store", f"sqlite:///{db}", "--incidents"]
    )
    assert result.exit_code == 0, result.output
    assert "n-9/failed/" in result.output and "email" in result.output
    assert "1 incident(s)" in result.output
    lone = CliRunner().invoke(
        main, ["sagas", "list", "--store", f"sqlite:///{db}", "--stalled-after", "5"]
    )
    assert lone.exit_code != 0 and "--stalled-after goes with --incidents" in lone.output

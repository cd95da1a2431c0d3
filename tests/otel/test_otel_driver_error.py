"""A run that ends by an exception out of the driver (the store raises on a save) ends
its saga span with that exception recorded, status ERROR and outcome ``error``: not
``running`` and no error, as if it had parked."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Otel
from opentelemetry.trace import StatusCode

from sagaflow import Orchestrator, SagaStatus, saga, step
from sagaflow.stores.sqlite import SQLiteStore

LOCKS: list[sqlite3.Connection] = []  # another writer holding the saga's database


@saga(name="LockedOut")
class LockedOut:
    path: str

    @step(readonly=True)
    def lock(self, ctx):
        # Another process's writer takes the database: the checkpoint after this step
        # cannot be written (the store's busy timeout is 0).
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")
        LOCKS.append(conn)

    @step(readonly=True)
    def after(self, ctx):
        pass


@pytest.fixture(autouse=True)
def _unlock() -> Iterator[None]:
    yield
    while LOCKS:
        LOCKS.pop().close()


def test_a_run_ended_by_the_store_raising_is_an_error_span(
    otel: Otel, drive, tmp_path: Path,
) -> None:
    path = tmp_path / "sagas.db"
    store = SQLiteStore(path, busy_timeout=0)
    orch = Orchestrator(store, telemetry=otel.telemetry)
    with pytest.raises(Exception, match="locked") as raised:
        drive(orch, LockedOut(str(path)), "l1")
    run = otel.one("saga LockedOut")
    assert run.attributes["sagaflow.status"] == "RUNNING"  # recovery resumes it
    assert run.attributes["sagaflow.outcome"] == "error"
    assert run.attributes["error.type"].endswith(type(raised.value).__qualname__)
    assert run.status.status_code is StatusCode.ERROR
    [event] = [e for e in run.events if e.name == "exception"]
    assert "locked" in event.attributes["exception.message"]
    while LOCKS:
        LOCKS.pop().close()
    assert store.load("l1").status is SagaStatus.RUNNING

"""Incident claims: a stalled incident is paged by whoever claims it first in the store
(``claim_incident``), once across every worker sharing the store, and again only once
the saga moved on and stalled anew (a later ``since``). A claim is a row of its own:
the saga's record is never written (its driver may be alive and must not lose its
next save).

Each store: memory, SQLite (two stores on one file) and PostgreSQL (two stores on one
schema, and threads claiming at once)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_cluster import cluster_url, drop_schema, fresh_schema
from store_sagas import Other, record_of

from sagaflow import SagaStatus
from sagaflow.errors import StoreError
from sagaflow.incidents import STALLED, Incident
from sagaflow.stores import MemoryStore
from sagaflow.stores.sqlite import SQLiteStore

NOW = 1_700_000_000.0

Opener = Callable[[], Any]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a store on the test's data: each call a store of its own (memory: the
    same one, as it lives in one process only)."""
    opened: list[Any] = []
    schema = None
    if request.param == "memory":
        memory = MemoryStore()

        def open_store() -> Any:
            return memory
    elif request.param == "sqlite":

        def open_store() -> Any:
            opened.append(SQLiteStore(tmp_path / "sagas.db"))
            return opened[-1]
    else:
        from sagaflow.stores.postgres import PostgresStore

        url = cluster_url(request.config)
        schema = fresh_schema()

        def open_store() -> Any:
            opened.append(PostgresStore(url, schema=schema))
            return opened[-1]
    yield open_store
    for store in opened:
        store.close()
    if schema is not None:
        drop_schema(url, schema)


def stalled(saga_id: str, since: float) -> Incident:
    return Incident.of(saga_id, "other", STALLED, "no checkpoint", since)


def running(store: Any, saga_id: str) -> None:
    record = record_of(Other(), saga_id, NOW)
    store.create(record)
    record.status = SagaStatus.RUNNING
    store.save(record)


def test_an_incident_is_claimed_once_across_stores(opener: Opener) -> None:
    first, second = opener(), opener()
    running(first, "s1")
    before = first.load("s1")
    incident = stalled("s1", NOW)
    assert first.claim_incident(incident, "worker-a") is True
    assert first.claim_incident(incident, "worker-a") is False
    assert second.claim_incident(incident, "worker-b") is False
    # another saga's incident is its own
    assert second.claim_incident(stalled("s2", NOW), "worker-b") is True
    # the claim never wrote the saga's record: a driver's next save still goes through
    after = first.load("s1")
    assert (after.version, after.updated_at) == (before.version, before.updated_at)
    first.save(after)


def test_a_saga_that_stalls_anew_is_claimed_again_once(opener: Opener) -> None:
    first, second = opener(), opener()
    assert first.claim_incident(stalled("s1", NOW), "worker-a")
    anew = stalled("s1", NOW + 30)  # it checkpointed, then stalled again
    assert second.claim_incident(anew, "worker-b") is True
    assert first.claim_incident(anew, "worker-a") is False
    # a worker whose look was older than the other's does not page the old one again
    assert first.claim_incident(stalled("s1", NOW), "worker-a") is False
    assert first.claim_incident(stalled("s1", NOW + 60), "worker-a") is True


def test_claims_at_once_give_the_incident_to_one(opener: Opener) -> None:
    stores = [opener() for _ in range(2)]
    won: list[bool] = []
    for round_ in range(5):
        incident = stalled("s1", NOW + round_)
        start = threading.Barrier(8)

        def claim(k: int, incident: Incident = incident, start: threading.Barrier = start) -> None:
            start.wait()
            won.append(stores[k % 2].claim_incident(incident, f"worker-{k}"))

        threads = [threading.Thread(target=claim, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert won.count(True) == 1, won
        won.clear()


def test_a_read_only_store_refuses_to_claim(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "sagas.db").close()
    with SQLiteStore(tmp_path / "sagas.db", readonly=True) as reader, pytest.raises(
        StoreError, match="read-only"
    ):
        reader.claim_incident(stalled("s1", NOW), "worker-a")


def test_a_version_6_sqlite_database_is_migrated_to_claims(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    with SQLiteStore(path) as store:
        running(store, "s1")
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE sagaflow_incident_claims")
    conn.execute("DROP INDEX sagaflow_sagas_open_failed")
    conn.execute("UPDATE sagaflow_meta SET value = '6' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with SQLiteStore(path, readonly=True) as reader:
        assert reader.schema_version == 6 and len(reader) == 1
    with SQLiteStore(path) as store:
        assert store.schema_version == 7
        assert store.claim_incident(stalled("s1", NOW), "worker-a") is True


def test_a_version_6_postgres_schema_is_migrated_to_claims(request: pytest.FixtureRequest) -> None:
    from sagaflow.stores.postgres import PostgresStore

    url = cluster_url(request.config)
    schema = fresh_schema()
    try:
        with PostgresStore(url, schema=schema) as store:
            running(store, "s1")
            store._execute("DROP TABLE sagaflow_incident_claims")
            store._execute("DROP INDEX sagaflow_sagas_open_failed")
            store._execute("UPDATE sagaflow_meta SET value = '6'")
        with PostgresStore(url, schema=schema) as store:
            assert store.schema_version == 7
            assert store.claim_incident(stalled("s1", NOW), "worker-a") is True
    finally:
        drop_schema(url, schema)

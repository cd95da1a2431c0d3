"""Stalled detection from a PostgreSQL worker: a saga whose call hangs (the lease kept
alive by the heartbeat, no checkpoint) is paged once, not at every look."""

from __future__ import annotations

from test_worker_stalled import Hang, gate
from wait_sagas import serving, until

from sagaflow import SagaStatus
from sagaflow.incidents import STALLED, Incident
from sagaflow.stores.postgres import PostgresStore
from sagaflow.worker import Worker, enqueue


def test_a_postgres_worker_pages_a_stalled_saga_once(pg_store: PostgresStore) -> None:
    gate.clear()
    enqueue(pg_store, Hang(), "h1")
    heard: list[Incident] = []
    worker = Worker(pg_store, [Hang], stalled_after=0.2, stalled_every=0.02, lease=5,
                    on_incident=heard.append)
    try:
        with serving(worker, grace=0):
            until(lambda: len(heard) >= 1, what="the stalled incident")
            looked = worker.stall_checks
            until(lambda: worker.stall_checks >= looked + 5, what="five more looks")
            assert [(i.kind, i.saga_id) for i in heard] == [(STALLED, "h1")]
            gate.set()
            until(lambda: pg_store.load_raw("h1").status == SagaStatus.COMPLETED.value,
                  what="the end")
    finally:
        gate.set()
    assert len(heard) == 1

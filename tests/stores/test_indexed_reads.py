"""What the durable stores read for ``due`` and for recovery: from indexes, never the
whole table nor every parked saga, whatever their number (asked of the databases'
planners: SQLite's EXPLAIN QUERY PLAN of the statements the store runs, PostgreSQL's
EXPLAIN of the same statements); and the PostgreSQL race a signal and a park save run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_cluster import cluster_url, drop_schema, fresh_schema
from store_sagas import Other, record_of

from sagaflow import SagaStatus
from sagaflow.stores._sql import _ACTIVE, _ADD_SIGNAL, _DUE, _FLAG, _SIGNAL_SEQ, Select
from sagaflow.stores.sqlite import SQLiteStore

NOW = 1_700_000_000.0
ACTIVE = (SagaStatus.NOT_STARTED, SagaStatus.RUNNING, SagaStatus.COMPENSATING)


def fill(store: Any, n: int = 30) -> None:
    """``n`` sagas of each kind: parked (some signalled, some due by time), running,
    not started, finished."""
    for k in range(n):
        for kind in ("parked", "running", "new", "done"):
            record = record_of(Other(), f"{kind}-{k:03}", NOW)
            store.create(record)
            if kind == "new":
                continue
            record.status = SagaStatus.RUNNING
            if kind == "parked":
                record.waiting = "approval"
                record.wake_at = NOW + (k - n // 2)
            elif kind == "done":
                record.status, record.finished_at = SagaStatus.COMPLETED, NOW
            store.save(record)
        if k % 5 == 0:
            store.add_signal(f"parked-{k:03}", "approval", "a", "{}", NOW)


# -- SQLite ---------------------------------------------------------------------------


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[SQLiteStore, list[str]]]:
    """A filled SQLite store, and the statements its reads run (with their values)."""
    store = SQLiteStore(tmp_path / "plans.db")
    fill(store)
    seen: list[str] = []
    store._read_conn.set_trace_callback(seen.append)
    yield store, seen
    store.close()


def plan(store: SQLiteStore, statement: str) -> list[str]:
    rows = store._read_conn.execute("EXPLAIN QUERY PLAN " + statement).fetchall()
    return [row[3] for row in rows]


def sagas_read(lines: list[str]) -> list[str]:
    """How each read of the saga table (aliased s) is done."""
    return [line for line in lines if line.startswith(("SCAN s", "SEARCH s"))]


def test_sqlite_due_reads_the_parked_and_signalled_sagas_indexes_only(
    traced: tuple[SQLiteStore, list[str]],
) -> None:
    store, seen = traced
    due = store.due(NOW, 10)
    assert due[:3] == ["parked-000", "parked-001", "parked-002"] and len(due) == 10
    [statement] = [s for s in seen if "sagaflow_sagas" in s]
    lines = plan(store, statement)
    # The parked sagas by wake time, as far as the limit (no sort: the index is in that
    # order); the flagged ones (a few). What is sorted after is at most twice the limit.
    assert sagas_read(lines) == [
        "SEARCH s USING INDEX sagaflow_sagas_parked (wake_at<?)",
        "SCAN s USING INDEX sagaflow_sagas_signalled",
    ]
    parked_branch = lines[lines.index(sagas_read(lines)[0]) : lines.index("SCAN t")]
    assert not any("TEMP B-TREE" in line for line in parked_branch)


def test_sqlite_recovery_pages_through_the_unparked_sagas_index_without_sorting(
    traced: tuple[SQLiteStore, list[str]],
) -> None:
    store, seen = traced
    found = [s.saga_id for s in store.scan(status=ACTIVE, parked=False, batch=7)]
    assert found == sorted(f"{kind}-{k:03}" for kind in ("new", "running") for k in range(30))
    pages = [s for s in seen if "FROM sagaflow_sagas s" in s]
    assert len(pages) == 9  # 60 sagas, 7 a page: not one parked or finished saga read
    for statement in pages:
        lines = plan(store, statement)
        [read] = sagas_read(lines)
        assert read.split(" (")[0] in (
            "SCAN s USING INDEX sagaflow_sagas_unparked",  # the first page
            "SEARCH s USING INDEX sagaflow_sagas_unparked",  # from a saga id on
        ), lines
        assert not any("TEMP B-TREE" in line for line in lines), lines
    # The parked ones, asked for, are the others.
    assert [s.saga_id for s in store.scan(status=ACTIVE, parked=True)] == [
        f"parked-{k:03}" for k in range(30)
    ]


# -- PostgreSQL -----------------------------------------------------------------------


@pytest.fixture
def pg(request: pytest.FixtureRequest) -> Iterator[Any]:
    from sagaflow.stores.postgres import PostgresStore

    url = cluster_url(request.config)
    schema = fresh_schema()
    store = PostgresStore(url, schema=schema)
    yield store
    store.close()
    drop_schema(url, schema)


def explain(store: Any, statement: str, params: Any) -> str:
    """PostgreSQL's plan of ``statement``, with sequential scans and sorts priced out:
    what remains of either is what no index can do."""
    with store._pool.connection() as conn, conn.transaction():
        conn.execute("ANALYZE sagaflow_sagas")
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SET LOCAL enable_sort = off")
        rows = conn.execute("EXPLAIN " + statement, params).fetchall()
    return "\n".join(row[0] for row in rows)


def test_postgres_due_reads_the_parked_and_signalled_sagas_indexes_only(pg: Any) -> None:
    fill(pg)
    assert len(pg.due(NOW, 10)) == 10
    statement = _DUE.format(parked="", signalled="").replace("?", "%s")
    text = explain(pg, statement, (NOW, 10, NOW, NOW, 10, 10))
    assert "sagaflow_sagas_parked" in text and "sagaflow_sagas_signalled" in text, text
    assert "Seq Scan on sagaflow_sagas" not in text and "by_status" not in text, text


def test_postgres_recovery_pages_through_the_unparked_sagas_index_without_sorting(
    pg: Any,
) -> None:
    fill(pg)
    found = [s.saga_id for s in pg.scan(status=ACTIVE, parked=False, batch=7)]
    assert len(found) == 60 and found == sorted(found)
    where, params = Select(_ACTIVE, None, None, ("new-010",), False, 7, False).render("%s")
    text = explain(pg, pg._select + where, params)
    assert "sagaflow_sagas_unparked" in text, text
    assert "Sort" not in text and "Seq Scan on sagaflow_sagas" not in text, text


def test_postgres_a_signal_committed_while_a_park_save_waits_for_the_row_makes_it_due(
    pg: Any,
) -> None:
    """A signal's transaction locks the saga's row (the row still says it is not
    parked), and commits while the driver's park save waits for that lock: the save
    runs on with the snapshot it began with, which does not show the signal. Its
    saga is due all the same (the flag the signal set, newer than what it saw, stays)."""
    record = record_of(Other(), "racing", NOW)
    pg.create(record)
    record.status = SagaStatus.RUNNING
    pg.save(record)
    record.waiting, record.wake_at = "approval", NOW + 3600
    with pg._pool.connection() as conn, conn.transaction():
        mark = "%s"
        conn.execute(
            "SELECT status FROM sagaflow_sagas WHERE saga_id = %s" + pg.LOCK_ROW, ("racing",)
        )
        saving = threading.Thread(target=pg.save, args=(record,))
        saving.start()
        waiting_for_the_row(conn)
        conn.execute(_ADD_SIGNAL.replace("?", mark), ("racing", "approval", "a", "{}", NOW))
        [(seq,)] = conn.execute(_SIGNAL_SEQ.replace("?", mark), ("racing", "a")).fetchall()
        conn.execute(_FLAG.replace("?", mark), (seq, "racing"))
    saving.join(30)
    assert not saving.is_alive()
    assert pg.load("racing").waiting == "approval"
    assert pg.due(NOW) == ["racing"]


def waiting_for_the_row(conn: Any) -> None:
    """Until another backend waits for a lock this transaction holds."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND %s = ANY(pg_blocking_pids(pid))",
            (conn.info.backend_pid,),
        ).fetchone()
        if found[0]:
            return
        time.sleep(0.01)
    raise AssertionError("the save never waited for the saga's row")


def test_recovery_reads_the_unparked_sagas_and_reports_a_parked_one_set_aside(
    tmp_path: Path,
) -> None:
    from sagaflow import Orchestrator
    from sagaflow.testing import VirtualClock

    store = SQLiteStore(tmp_path / "recover.db")
    fill(store, 5)
    store.quarantine("parked-003", "set aside by hand")
    seen: list[str] = []
    store._read_conn.set_trace_callback(seen.append)
    orch = Orchestrator(store=store, sagas=[Other], clock=VirtualClock(NOW))
    report = orch.recover()
    pages = [s for s in seen if "FROM sagaflow_sagas s" in s and "status IN" in s]
    assert pages and all("INDEXED BY sagaflow_sagas_unparked" in s for s in pages)
    # The unparked unfinished sagas resumed; the parked ones due (their signal came, or
    # their time) too; the one set aside reported, as before.
    resumed = {f"{kind}-{k:03}" for kind in ("new", "running") for k in range(5)}
    resumed |= {"parked-000", "parked-001", "parked-002"}
    assert set(report.resumed) == resumed
    assert report.quarantined == {"parked-003": "set aside by hand"}
    assert set(report.skipped) == {"parked-003"}
    store.close()

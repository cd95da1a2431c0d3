"""What only the SQL stores do with issue 11's waits, in SQLite and PostgreSQL alike: a
signal is committed when ``add_signal`` returns (another process sees it), read-only
stores refuse it, the async twin leaves the event loop free while the database makes
it wait, and a checkpoint of a saga that never waits leaves the wait columns alone."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from store_sagas import ORDER_SPEC
from test_signals_contract import NOW, open_signal_store, parked, running

from sagaflow import StoreError
from sagaflow.engine import Call, next_command, settle
from sagaflow.stores.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "postgres"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each SQL store in turn, empty."""
    store, cleanup = open_signal_store(request.param, request, tmp_path)
    yield store
    store.close()
    if cleanup is not None:
        cleanup()


def another(store: Any, **options: Any) -> Any:
    """A second store on the same database: what another process opens."""
    if isinstance(store, SQLiteStore):
        return SQLiteStore(store.path, **options)
    from sagaflow.stores.postgres import PostgresStore

    return PostgresStore(store.conninfo, schema=store.schema, **options)


def hold_the_saga(store: Any, saga_id: str) -> Callable[[], None]:
    """Another connection that holds what ``add_signal`` on ``saga_id`` must wait for
    (SQLite: the write lock; PostgreSQL: the saga's row); the function lets go."""
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")

        def release_sqlite() -> None:
            conn.execute("COMMIT")
            conn.close()

        return release_sqlite
    import psycopg
    from psycopg import sql

    pg = psycopg.connect(store.conninfo)
    pg.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(store.schema)))
    pg.execute("SELECT 1 FROM sagaflow_sagas WHERE saga_id = %s FOR UPDATE", (saga_id,))

    def release_pg() -> None:
        pg.commit()
        pg.close()

    return release_pg


def test_a_signal_is_committed_when_add_signal_returns(sql_store: Any) -> None:
    running(sql_store, "s-1")
    added = sql_store.add_signal("s-1", "approval", "a", '{"by": "ann"}', NOW)
    with another(sql_store) as other:
        assert other.signals("s-1") == [added]
        assert other.next_signal("s-1", "approval", 0) == added


def test_a_read_only_store_refuses_signals_and_reads_them(sql_store: Any) -> None:
    parked(sql_store, "p-1", "approval", key="k")
    added = sql_store.add_signal("p-1", "approval", "a", "{}", NOW)
    with another(sql_store, readonly=True) as reader:
        with pytest.raises(StoreError, match="read-only"):
            reader.add_signal("p-1", "approval", "b", "{}", NOW)

        async def refused() -> None:
            await reader.aadd_signal("p-1", "approval", "b", "{}", NOW)

        with pytest.raises(StoreError, match="read-only"):
            asyncio.run(refused())
        assert reader.signals("p-1") == [added]
        assert reader.due(NOW) == ["p-1"] and reader.by_key("k") == ["p-1"]
    assert sql_store.signals("p-1") == [added]


def test_aadd_signal_leaves_the_loop_free_while_the_database_makes_it_wait(
    sql_store: Any,
) -> None:
    running(sql_store, "s-1")
    release = hold_the_saga(sql_store, "s-1")

    async def main() -> tuple[Any, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        asyncio.get_running_loop().call_later(0.3, release)
        added = await sql_store.aadd_signal("s-1", "approval", "a", "{}", NOW)
        ticker.cancel()
        return added, ticks

    added, ticks = asyncio.run(main())
    assert added is not None and ticks >= 10
    assert sql_store.signals("s-1") == [added]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "soon"])
def test_a_signal_time_must_be_a_time(sql_store: Any, value: Any) -> None:
    running(sql_store, "s-1")
    with pytest.raises((TypeError, ValueError), match="time"):
        sql_store.add_signal("s-1", "approval", "a", "{}", value)
    assert sql_store.signals("s-1") == []


@pytest.mark.parametrize(
    ("name", "signal_id", "payload"),
    [("", "a", "{}"), ("approval", "", "{}"), (3, "a", "{}"), ("approval", "a", {"x": 1})],
)
def test_a_signal_needs_a_name_an_id_and_json_text(
    sql_store: Any, name: Any, signal_id: Any, payload: Any
) -> None:
    running(sql_store, "s-1")
    with pytest.raises((TypeError, ValueError)):
        sql_store.add_signal("s-1", name, signal_id, payload, NOW)
    assert sql_store.signals("s-1") == []


# --- what a checkpoint writes (SQLite: the statement itself) -------------------------------


def checkpoints(store: SQLiteStore, run: Callable[[], None]) -> list[str]:
    """The UPDATEs of the saga row that ``run`` made."""
    seen: list[str] = []
    conn = store._commit.lanes[0].conn
    conn.set_trace_callback(seen.append)
    try:
        run()
    finally:
        conn.set_trace_callback(None)
    # A statement that fires a trigger (the counts per status, schema 6) is traced again
    # as the trigger's program starts: once is what ran.
    seen = [s for k, s in enumerate(seen) if k == 0 or s != seen[k - 1]]
    return [s for s in seen if s.startswith("UPDATE sagaflow_sagas")]


def test_a_checkpoint_of_a_saga_that_never_waits_leaves_the_wait_columns_out(
    tmp_path: Path,
) -> None:
    with SQLiteStore(tmp_path / "narrow.db") as store:
        record = running(store, "s-1", key="order-1")

        def go_on() -> None:
            call = next_command(ORDER_SPEC, record, NOW + 5)
            assert isinstance(call, Call)
            settle(ORDER_SPEC, record, call, NOW + 5, None, False, [])
            store.save(record)

        [update] = checkpoints(store, go_on)
        for column in ("waiting", "signal_marks", "business_key"):
            assert column not in update, update
        # Parking changes them: the checkpoint names them, and they are stored.
        record.waiting, record.signal_marks = "approval", {"approval": 4}
        [update] = checkpoints(store, lambda: store.save(record))
        assert "waiting" in update and "signal_marks" in update
        row = sqlite3.connect(store.path).execute(
            "SELECT waiting, waiting_after, signal_marks, business_key FROM sagaflow_sagas"
        ).fetchone()
        assert row == ("approval", 4, '{"approval":4}', "order-1")
        # And the next checkpoint, the wait unchanged, leaves them out again.
        record.updated_at = NOW + 6
        [update] = checkpoints(store, lambda: store.save(record))
        assert "waiting" not in update

"""A damaged saga row (a hand edit, a bug, a disk) is refused when it is decoded, before
any step can run: CorruptRecord names the saga, the column and what it holds. Every
column of the saga row, in SQLite and in PostgreSQL; the row is left byte-identical,
and quarantining the saga leaves it so too."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from postgres_cluster import cluster_url, drop_schema, fresh_schema
from store_sagas import ORDER_SPEC, Order, assert_same, record_of

from sagaflow import CorruptRecord, UnknownSagaClass
from sagaflow.engine import Call, next_command, settle
from sagaflow.stores.sqlite import SQLiteStore

NOW = 1_700_000_000.0


@attrs.frozen
class Db:
    kind: str
    store: Any
    execute: Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Db]:
    """A SQLite store, and a connection of another process to its tables."""
    store = SQLiteStore(tmp_path / "damaged.db")

    def execute(statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(store.path, isolation_level=None)
        try:
            return conn.execute(statement, params).fetchall()
        finally:
            conn.close()

    yield Db("sqlite", store, execute)
    store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, sqlite_db: Db) -> Iterator[Db]:
    """Each durable store, and a connection of another process to its tables."""
    if request.param == "sqlite":
        yield sqlite_db
        return
    import psycopg
    from psycopg import sql

    from sagaflow.stores.postgres import PostgresStore

    url = cluster_url(request.config)
    schema = fresh_schema()
    pg = PostgresStore(url, schema=schema)

    def pg_execute(statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            cur = conn.execute(statement.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    yield Db("postgres", pg, pg_execute)
    pg.close()
    drop_schema(url, schema)


def a_running_saga(store: Any) -> Any:
    """A saga at its second step: history, an event and a path of two edges stored."""
    record = record_of(Order(), "d-1")
    store.create(record)
    for t in (NOW + 1, NOW + 2):
        call = next_command(ORDER_SPEC, record, t)
        store.save(record)
        assert isinstance(call, Call)
        if t == NOW + 1:
            settle(ORDER_SPEC, record, call, t, None, False, [("did", 0)])
    assert (record.state, record.cursor, len(record.path)) == ("charge", 1, 2)
    return record


def raw_row(db: Db, saga_id: str) -> str:
    """The saga's row as another connection reads it, values and their types."""
    rows = db.execute("SELECT * FROM sagaflow_sagas WHERE saga_id = ?", (saga_id,))
    assert len(rows) == 1
    return repr([(type(v).__name__, v) for v in rows[0]])


# (column, its damaged value as SQL, the column CorruptRecord names); both dialects.
DAMAGES = [
    ("saga_id", "''", "saga_id"),
    ("saga_name", "'someone-else'", "saga_name"),
    ("fingerprint", "''", "fingerprint"),
    ("data_type", "''", "data_type"),
    ("status", "'BOGUS'", "status"),
    ("status", "'COMPLETED'", "state"),  # a status its machine state does not agree with
    ("state", "'nowhere'", "state"),
    ("state", "'ship'", "state"),  # a state of the machine, not the one at this cursor
    ("version", "-1", "version"),
    ("cursor", "7", "cursor"),
    ("cursor", "-1", "cursor"),
    ("undo", "'[9]'", "undo"),
    ("undo", "'[0, 1]'", "undo"),  # oldest first
    ("undo", "'{\"a\": 1}'", "undo"),
    ("created_at", "'NaN'", "created_at"),
    ("updated_at", "'Infinity'", "updated_at"),
    ("finished_at", "'NaN'", "finished_at"),
    ("wake_at", "'-Infinity'", "wake_at"),
    ("deadline_at", "'Infinity'", "deadline_at"),
    ("compensation_deadline_at", "'NaN'", "compensation_deadline_at"),
    ("steps", "'[]'", "steps"),
    ("steps", "'[{\"name\": \"reserve\"}, {\"name\": \"charge\", \"status\": \"NOPE\"}, "
     "{\"name\": \"ship\"}]'", "steps"),
    ("steps", "'[{\"name\": \"ship\"}, {\"name\": \"charge\"}, {\"name\": \"reserve\"}]'",
     "steps"),
    ("data", "'{garbage'", "data"),
    ("data", "'{\"amount\": \"many\"}'", "data"),
    ("error", "'{\"no type\": 1}'", "error"),
    ("failures", "'[\"not\", \"a map\"]'", "failures"),
    ("failures", "'{\"nowhere\": \"boom\"}'", "failures"),
    ("resolution", "'fixed by hand'", "resolution"),  # only a FAILED saga is resolved
    ("history", "'{\"not\": \"a list\"}'", "history"),
    ("history", "'[[\"NoSuchEvent\", 1.0, null, 0], [1], [2], [3]]'", "history"),
    ("history_count", "999", "history_count"),
    ("events", "'\"text\"'", "events"),
    ("events_count", "-1", "events_count"),
    ("path", "'{}'", "path"),
    ("path", "'[[\"not_started\", \"start\", \"reserve\"], [\"reserve\", \"jump\", \"ship\"]]'",
     "path"),
    ("path_count", "5", "path_count"),
    ("waiting", "''", "waiting"),  # a timer wait with no wake time: it would never wake
    ("waiting_after", "3", "waiting_after"),  # it waits for nothing: 0
    ("signal_marks", "'{garbage'", "signal_marks"),
    ("signal_marks", "'[[\"approval\", 1]]'", "signal_marks"),
    ("signal_marks", "'{\"approval\": -1}'", "signal_marks"),
    ("signal_marks", "'{\"approval\": \"one\"}'", "signal_marks"),
    ("business_key", "''", "business_key"),
]
# SQLite keeps what it is given in a column of another type: damage of that kind too.
SQLITE_DAMAGES = [
    ("cursor", "'abc'", "cursor"),
    ("version", "1.5", "version"),
    ("created_at", "'yesterday'", "created_at"),
    ("history_count", "'x'", "history_count"),
    ("path_count", "2.5", "path_count"),
    ("waiting", "x'617070726f76616c'", "waiting"),  # bytes: TEXT affinity keeps a blob
    ("waiting_after", "'x'", "waiting_after"),
    ("signal_marks", "7", "signal_marks"),
    ("business_key", "x'6b'", "business_key"),
]
# The wait columns of a saga parked for "approval" (two delivered), and of a finished one.
PARKED_DAMAGES = [
    ("waiting_after", "0", "waiting_after"),  # not the mark of what it waits for
    ("signal_marks", "'{}'", "waiting_after"),  # the mark it waits after is gone
    ("signal_marks", "'{\"approval\": 2, \"\": 1}'", "signal_marks"),  # a nameless one
]
FINISHED_DAMAGES = [
    ("waiting", "'approval'", "waiting"),  # only a RUNNING saga waits
    ("waiting", "''", "waiting"),
]


def test_every_column_of_the_saga_row_is_covered() -> None:
    from sagaflow.stores._rows import COLUMNS

    assert {column for column, _, _ in DAMAGES} == set(COLUMNS)


@pytest.mark.parametrize(("column", "value", "named"), DAMAGES)
def test_a_damaged_column_is_named_and_the_row_left_as_it_is(
    db: Db, column: str, value: str, named: str
) -> None:
    damaged(db, column, value, named)


@pytest.mark.parametrize(("column", "value", "named"), SQLITE_DAMAGES)
def test_a_value_of_another_type_in_a_sqlite_column_is_named_too(
    sqlite_db: Db, column: str, value: str, named: str
) -> None:
    damaged(sqlite_db, column, value, named)


@pytest.mark.parametrize(("column", "value", "named"), PARKED_DAMAGES)
def test_a_damaged_wait_column_of_a_parked_saga_is_named(
    db: Db, column: str, value: str, named: str
) -> None:
    damaged(db, column, value, named, a_parked_saga)


@pytest.mark.parametrize(("column", "value", "named"), FINISHED_DAMAGES)
def test_a_finished_saga_that_says_it_waits_is_named(
    db: Db, column: str, value: str, named: str
) -> None:
    damaged(db, column, value, named, a_finished_saga)


def a_parked_saga(store: Any) -> Any:
    """A saga at its second step, parked for "approval" after two were delivered."""
    record = a_running_saga(store)
    record.waiting, record.wake_at = "approval", NOW + 3600
    record.signal_marks = {"approval": 2, "cancel": 1}
    record.business_key = "order-7"
    store.save(record)
    return record


def a_finished_saga(store: Any) -> Any:
    record = a_running_saga(store)
    t = NOW + 3
    while not record.status.is_terminal:
        call = next_command(ORDER_SPEC, record, t)
        if isinstance(call, Call):
            settle(ORDER_SPEC, record, call, t, None, False, [])
        t += 1
    store.save(record)
    return record


def test_the_undamaged_parked_saga_decodes(db: Db) -> None:
    record = a_parked_saga(db.store)
    [stored] = list(db.store.scan())
    assert_same(db.store.decode(stored, Order), record)


def damaged(
    db: Db, column: str, value: str, named: str, make: Callable[[Any], Any] = a_running_saga
) -> None:
    make(db.store)
    db.execute(f"UPDATE sagaflow_sagas SET {column} = {value} WHERE saga_id = 'd-1'")
    [stored] = list(db.store.scan())  # listing never decodes: it never fails
    sid = stored.saga_id
    before = raw_row(db, sid)
    with pytest.raises(CorruptRecord) as caught:
        db.store.decode(stored, Order)
    error = caught.value
    assert (error.saga_id, error.column) == (sid, named), str(error)
    assert error.found is not None and str(error).startswith(
        f"saga {sid!r}: the stored record cannot be read: column {named!r} holds "
    )
    # Without the class, by the name stored: a renamed saga is one it cannot find.
    with pytest.raises(UnknownSagaClass if column == "saga_name" else CorruptRecord):
        db.store.load(sid)
    assert raw_row(db, sid) == before
    # Set aside, saying why: the row is still byte-identical.
    db.store.quarantine(sid, str(error))
    assert raw_row(db, sid) == before
    [again] = list(db.store.scan())
    assert again.quarantined == str(error)


def test_an_unknown_name_without_a_class_is_an_unknown_saga(db: Db) -> None:
    a_running_saga(db.store)
    db.execute("UPDATE sagaflow_sagas SET saga_name = 'gone', data_type = 'nowhere:Gone'")
    [stored] = list(db.store.scan())
    with pytest.raises(UnknownSagaClass):
        db.store.decode(stored)


def test_the_undamaged_saga_decodes_and_goes_on(db: Db) -> None:
    record = a_running_saga(db.store)
    [stored] = list(db.store.scan())
    loaded = db.store.decode(stored, Order)
    assert_same(loaded, record)

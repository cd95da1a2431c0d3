"""``Store.browse``, the dashboard's list: every filter (status, class, outcome, business
key, id text, start time) in the store's query, newest started first, keyset pages; the
same sagas on the memory, SQLite and PostgreSQL stores as the undecoded sagas' own
``outcome``/``business_key`` say. On SQLite and PostgreSQL each filter's page is read
from an index (EXPLAIN), never the whole table nor a sort of it; schema 5 is migrated."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_cluster import cluster_url, drop_schema, fresh_schema
from store_sagas import Order, Other, record_of

from sagaflow import SagaStatus
from sagaflow.errors import (
    SagaCancelled,
    SagaDeadlineExceeded,
    SagaRejected,
    StepError,
    WaitTimedOut,
)
from sagaflow.records import OUTCOMES
from sagaflow.stores._rows import COLUMNS
from sagaflow.stores._sql import Select
from sagaflow.stores.memory import MemoryStore
from sagaflow.stores.sqlite import SQLiteStore

NOW = 1_700_000_000.0
NAME = record_of(Other(), "x").saga_name
#: (status, error, parked) of each kind of saga the fill makes, by the outcome it has.
KINDS: dict[str, tuple[SagaStatus, BaseException | None, bool]] = {
    "not-started": (SagaStatus.NOT_STARTED, None, False),
    "running": (SagaStatus.RUNNING, None, False),
    "waiting": (SagaStatus.RUNNING, None, True),
    "compensating": (SagaStatus.COMPENSATING, None, False),
    "completed": (SagaStatus.COMPLETED, None, False),
    "compensated": (SagaStatus.COMPENSATED, StepError(0, "reserve", "no stock"), False),
    "rejected": (SagaStatus.COMPENSATED, SagaRejected("no credit", "charge"), False),
    "timed-out": (SagaStatus.COMPENSATED, WaitTimedOut("approve", "ok", 5.0), False),
    "cancelled": (SagaStatus.COMPENSATED, SagaCancelled("charge"), False),
    "deadline": (SagaStatus.COMPENSATED, SagaDeadlineExceeded(NOW, "charge"), False),
    "failed": (SagaStatus.FAILED, StepError(1, "charge", "refund refused"), False),
}


def fill(store: Any, rounds: int = 3) -> None:
    """``rounds`` sagas of every outcome, each started a second after the one before;
    every other one with a business key, and a rejection after the pivot (FAILED)."""
    at = NOW
    for k in range(rounds):
        for kind, (status, error, parked) in KINDS.items():
            at += 1
            record = record_of(Other(), f"{kind}-{k:02}", at)
            record.business_key = f"key-{k}" if k % 2 == 0 else None
            if status is SagaStatus.NOT_STARTED:  # as stored; never decoded here
                record.status = status
                store.create(record)
                continue
            store.create(record)
            record.status, record.error = status, error
            record.updated_at = NOW - at  # never the order: newest *started* first
            if parked:
                record.waiting, record.wake_at = "approval", at + 3600
            if status.is_terminal:
                record.finished_at = at
            store.save(record)
    late = record_of(Other(), "rejected-late", at + 1)
    store.create(late)
    late.status, late.error = SagaStatus.FAILED, SagaRejected("after the pivot", "ship")
    store.save(late)


def everything(store: Any) -> list[Any]:
    """Every saga of ``store``, newest started first (what the filters are checked on)."""
    found = list(store.scan())
    found.sort(key=lambda s: (created(s), s.saga_id), reverse=True)
    return found


def created(stored: Any) -> float:
    return float(stored.created_at)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    yield from _opened(request, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The SQL stores only: what their queries do that the memory store has no need of."""
    yield from _opened(request, tmp_path)


def _opened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        with SQLiteStore(tmp_path / "browse.db") as db:
            yield db
    else:
        from sagaflow.stores.postgres import PostgresStore

        url = cluster_url(request.config)
        schema = fresh_schema()
        pg = PostgresStore(url, schema=schema)
        yield pg
        pg.close()
        drop_schema(url, schema)


def ids(found: list[Any]) -> list[str]:
    return [s.saga_id for s in found]


def test_browse_keeps_exactly_the_sagas_of_each_filter_newest_started_first(
    store: Any,
) -> None:
    fill(store)
    every = everything(store)
    assert ids(store.browse(limit=1000)) == ids(every)
    for outcome in OUTCOMES:
        expected = [s for s in every if s.outcome == outcome]
        assert expected, outcome
        assert ids(store.browse(outcome=outcome, limit=1000)) == ids(expected), outcome
    assert ids(store.browse(outcome="rejected", limit=9)) == ["rejected-late", "rejected-02",
                                                              "rejected-01", "rejected-00"]
    for status in SagaStatus:
        expected = [s for s in every if s.status == status.value]
        assert ids(store.browse(status=[status], limit=1000)) == ids(expected)
    both = [SagaStatus.FAILED, SagaStatus.COMPLETED]
    assert ids(store.browse(status=both, limit=1000)) == ids(
        [s for s in every if s.status in ("FAILED", "COMPLETED")])
    assert store.browse(status=[], limit=1000) == []
    assert ids(store.browse(name=NAME, limit=1000)) == ids(every)
    assert store.browse(name="Nobody", limit=1000) == []
    assert ids(store.browse(key="key-2", limit=1000)) == ids(
        [s for s in every if s.business_key == "key-2"])
    # The id text: anywhere in the id, whatever the case; LIKE's own characters are text.
    assert ids(store.browse(text="ED-0", limit=1000)) == ids(
        [s for s in every if "ed-0" in s.saga_id])
    assert store.browse(text="%", limit=1000) == [] and store.browse(text="_", limit=9) == []
    # Started at or after ``newer``, before ``older``.
    window = store.browse(newer=NOW + 5, older=NOW + 9, limit=1000)
    assert [created(s) for s in window] == [NOW + 8, NOW + 7, NOW + 6, NOW + 5]
    # Filters together.
    assert ids(store.browse(outcome="completed", key="key-2", text="COMPLETED", limit=9)) == [
        "completed-02"]


def test_browse_pages_on_from_the_last_saga_of_the_page_before(store: Any) -> None:
    fill(store)
    for filters in ({}, {"status": [SagaStatus.COMPENSATED]}, {"outcome": "compensated"}):
        seen: list[str] = []
        after = None
        while True:
            found = store.browse(limit=4, after=after, **filters)
            seen += ids(found)
            if len(found) < 4:
                break
            after = (created(found[-1]), found[-1].saga_id)
        assert seen == ids(store.browse(limit=1000, **filters)), filters
    # Sagas started at the same instant page by id, none lost nor twice.
    same = MemoryStore() if isinstance(store, MemoryStore) else store
    for k in range(5):
        same.create(record_of(Other(), f"tie-{k}", NOW + 999))
    first = same.browse(text="tie", limit=2)
    second = same.browse(text="tie", limit=10, after=(NOW + 999, first[-1].saga_id))
    assert ids(first) + ids(second) == [f"tie-{k}" for k in (4, 3, 2, 1, 0)]


# -- the plans: every filter from an index ---------------------------------------------

#: Each filter of the list as browse() takes it, and the index its page is read from
#: (the class: every saga here is of one class, so the start index, filtered, is as good).
FILTERS: list[tuple[dict[str, Any], str]] = [
    ({}, "sagaflow_sagas_by_start"),
    ({"status": [SagaStatus.FAILED]}, "sagaflow_sagas_by_status_start"),
    ({"name": NAME}, "sagaflow_sagas_by_name_start|sagaflow_sagas_by_start"),
    ({"outcome": "rejected"}, "sagaflow_sagas_by_error"),
    ({"outcome": "cancelled"}, "sagaflow_sagas_by_error"),
    ({"outcome": "running"}, "sagaflow_sagas_by_status_start"),
    ({"key": "key-0"}, "sagaflow_sagas_by_key"),
    ({"text": "ed-0"}, "sagaflow_sagas_by_start"),
    ({"newer": NOW + 5}, "sagaflow_sagas_by_start"),
    ({"older": NOW + 5, "after": (NOW + 3, "x")}, "sagaflow_sagas_by_start"),
]


def statement(store: Any, mark: str, **filters: Any) -> tuple[str, list[Any]]:
    """The statement browse() runs for ``filters`` (as it builds it)."""
    status = filters.pop("status", None)
    values = None if status is None else tuple(s.value for s in status)
    after = filters.pop("after", None)
    select = Select(values, filters.pop("name", None), None, after, False, 50, None,
                    filters.pop("outcome", None), filters.pop("key", None),
                    filters.pop("text", None), filters.pop("newer", None),
                    filters.pop("older", None), True, True)
    assert not filters
    return select.render(mark, store.error_type("s.error"))


@pytest.mark.parametrize(("filters", "index"), FILTERS, ids=[str(f) for f, _ in FILTERS])
def test_sqlite_reads_each_filters_page_from_an_index(
    tmp_path: Path, filters: dict[str, Any], index: str
) -> None:
    with SQLiteStore(tmp_path / "plans.db") as db:
        fill(db)
        where, params = statement(db, "?", **dict(filters))
        head = db._head
        lines = [row[3] for row in db._read_conn.execute(
            "EXPLAIN QUERY PLAN " + head + where, params).fetchall()]
        reads = [line for line in lines if line.startswith(("SCAN s", "SEARCH s"))]
        assert len(reads) == 1, lines
        assert any(f"USING INDEX {i} " in reads[0] + " " for i in index.split("|")), lines
        if "key" not in filters:  # a business key's few sagas are sorted; the rest not
            assert not any("TEMP B-TREE" in line for line in lines), lines
        memory = MemoryStore()
        fill(memory)
        assert ids(db.browse(**filters)) == ids(memory.browse(**filters))


@pytest.mark.parametrize(("filters", "index"), FILTERS, ids=[str(f) for f, _ in FILTERS])
def test_postgres_reads_each_filters_page_from_an_index(
    request: pytest.FixtureRequest, filters: dict[str, Any], index: str
) -> None:
    from sagaflow.stores.postgres import PostgresStore

    url = cluster_url(request.config)
    schema = fresh_schema()
    pg = PostgresStore(url, schema=schema)
    try:
        fill(pg, rounds=10)
        # And 5,000 older finished sagas (copies of one, for speed): the filters' sagas
        # a few among many, as in a store that has run a while.
        columns = ", ".join(COLUMNS)
        copied = columns.replace("saga_id", "'old-' || g").replace(
            "created_at", "created_at - 1000 - g").replace("business_key", "NULL")
        pg._execute(f"INSERT INTO sagaflow_sagas ({columns}) SELECT {copied} FROM"
                    " sagaflow_sagas, generate_series(1, 5000) g"
                    " WHERE saga_id = 'completed-01'")
        where, params = statement(pg, "%s", **dict(filters))
        with pg._pool.connection() as conn, conn.transaction():
            conn.execute("ANALYZE sagaflow_sagas")
            # Scans of the table and sorts priced out (10 sagas a status: a planner
            # rightly sorts so few): what remains of either is what no index can do.
            conn.execute("SET LOCAL enable_seqscan = off")
            if "key" not in filters:  # a business key's few sagas: sorted, rightly
                conn.execute("SET LOCAL enable_sort = off")
            rows = conn.execute("EXPLAIN " + pg._select + where, params).fetchall()
        text = "\n".join(row[0] for row in rows)
        assert "Seq Scan on sagaflow_sagas" not in text, text
        assert any(f" {i} " in text for i in index.split("|")), text
        if "key" not in filters:
            # No sort of the sagas: the index is in the list's order.
            assert "Sort Key: s.created_at" not in text, text
        assert pg.browse(**filters)  # (what it finds: the tests above)
    finally:
        pg.close()
        drop_schema(url, schema)


# -- schema 6: the indexes of a version 5 database --------------------------------------


def test_a_version_5_database_is_migrated_to_the_lists_indexes(tmp_path: Path) -> None:
    path = tmp_path / "v5.db"
    with SQLiteStore(path) as db:
        fill(db, rounds=1)
    back_to_version_5(path)
    with SQLiteStore(path, readonly=True) as reader:  # read-only: the same, unindexed
        assert reader.schema_version == 5
        assert ids(reader.browse(outcome="rejected")) == ["rejected-late", "rejected-00"]
    with SQLiteStore(path) as db:
        assert db.schema_version == 7
        indexes = {r[0] for r in db._read_conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()}
        assert {"sagaflow_sagas_by_start", "sagaflow_sagas_by_error"} <= indexes
        assert ids(db.browse(outcome="rejected")) == ["rejected-late", "rejected-00"]
        # The counts, kept from now on, start from the sagas already there.
        assert db.counts() == {"NOT_STARTED": 1, "RUNNING": 2, "COMPENSATING": 1,
                               "COMPLETED": 1, "COMPENSATED": 5, "FAILED": 2}
        tables = {r[0] for r in db._read_conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
        assert "sagaflow_counts" in tables


def back_to_version_5(path: Path) -> None:
    """Take what schemas 6 and 7 add away from the SQLite file at ``path``."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE sagaflow_incident_claims")
    conn.execute("DROP INDEX sagaflow_sagas_open_failed")
    for name in ("by_start", "by_status_start", "by_name_start", "by_error"):
        conn.execute(f"DROP INDEX sagaflow_sagas_{name}")
    for name in ("insert", "update", "delete"):
        conn.execute(f"DROP TRIGGER sagaflow_counts_{name}")
    conn.execute("DROP TABLE sagaflow_counts")
    conn.execute("UPDATE sagaflow_meta SET value = '5' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


def counted(store: Any) -> dict[str, int]:
    """The counts per status, counted from the sagas themselves."""
    found = dict.fromkeys((s.value for s in SagaStatus), 0)
    for stored in store.scan():
        found[stored.status] += 1
    return found


def test_the_counts_per_status_are_kept_as_sagas_start_move_and_go(store: Any) -> None:
    fill(store, rounds=2)
    assert store.counts() == counted(store) and sum(store.counts().values()) == 23
    # Moved on by a save (the status changes), a checkpoint that leaves it, a new one.
    record = store.load("running-00")
    record.status, record.finished_at = SagaStatus.COMPLETED, NOW
    store.save(record)
    again = store.load("running-01")
    store.save(again)
    store.create(record_of(Other(), "late", NOW))
    assert store.counts() == counted(store)
    assert store.counts()["RUNNING"] == 4 and store.counts()["COMPLETED"] == 3
    if isinstance(store, MemoryStore):
        return
    # Rows deleted (by hand: sagaflow keeps its sagas) leave the counts too.
    if isinstance(store, SQLiteStore):
        store._execute("DELETE FROM sagaflow_sagas WHERE status = 'FAILED'", write=True)
    else:
        store._execute("DELETE FROM sagaflow_sagas WHERE status = 'FAILED'")
    assert store.counts() == counted(store) and store.counts()["FAILED"] == 0


def test_postgres_counts_stay_right_through_many_writers_and_their_folds(
    request: pytest.FixtureRequest,
) -> None:
    """Many concurrent writers (each its own store): nobody waits on a counter, and the
    rows of changes, folded now and then by whoever writes, always sum right."""
    import threading

    from sagaflow.stores.postgres import PostgresStore

    url = cluster_url(request.config)
    schema = fresh_schema()
    stores = [PostgresStore(url, schema=schema) for _ in range(4)]
    try:
        def work(k: int) -> None:
            mine = stores[k]
            for i in range(150):
                record = record_of(Other(), f"w{k}-{i}", NOW + i)
                mine.create(record)
                record.status = SagaStatus.COMPLETED if i % 3 else SagaStatus.COMPENSATED
                record.finished_at = NOW + i
                mine.save(record)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        counts = stores[0].counts()
        assert counts == counted(stores[0])
        assert counts["COMPLETED"] == 400 and counts["COMPENSATED"] == 200
        rows = stores[0]._execute("SELECT count(*) FROM sagaflow_counts")[0][0]
        assert rows < 2400 + 10  # folded now and then (1,200 sagas, two changes each)
    finally:
        for one in stores:
            one.close()
        drop_schema(url, schema)


def test_a_damaged_error_column_is_no_outcome_and_does_not_fail_the_write(
    sql_store: Any,
) -> None:
    """The error types' index reads the error's JSON: a column that is not JSON (or
    whose type is not first) must neither fail a write nor match an outcome it names.
    (The memory store holds the error object, not its JSON.)"""
    store = sql_store
    fill(store, rounds=1)
    update = "UPDATE sagaflow_sagas SET error = ? WHERE saga_id = ?"
    if isinstance(store, SQLiteStore):
        store._execute(update, ("{not json", "rejected-00"), write=True)
    else:
        store._execute(update, ("{not json", "rejected-00"))
    assert ids(store.browse(outcome="rejected")) == ["rejected-late"]
    assert "rejected-00" in ids(store.browse(outcome="compensated"))


def test_a_text_few_ids_hold_looks_through_a_bounded_window_and_says_how_far(
    sql_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of an id text looks through TEXT_REACH sagas at most (else a text that
    few ids hold reads back through every saga): fewer found, it says where it stopped,
    and paging on from there finds the rest, each saga once. (The memory store looks at
    every saga anyway.)"""
    store = sql_store
    monkeypatch.setattr(type(store), "TEXT_REACH", 5)
    fill(store)  # 34 sagas; three hold "-02" (and rejected-late does not)
    every = everything(store)
    first = store.browse(text="ED-02", limit=10)
    assert ids(first) == [s.saga_id for s in every[:5] if "ed-02" in s.saga_id]
    assert first.searched_to == (created(every[4]), every[4].saga_id)
    seen, after, pages = ids(first), first.searched_to, 1
    while after is not None:
        page = store.browse(text="ED-02", limit=10, after=after)
        seen += ids(page)
        pages += 1
        after = page.searched_to
    assert pages == 7  # 34 sagas, 5 a window
    assert seen == [s.saga_id for s in every if "ed-02" in s.saga_id] and len(seen) == 6
    # A full page says nothing: the next one starts after its last saga.
    full = store.browse(text="-0", limit=2)
    assert len(full) == 2 and full.searched_to is None
    # Without a text, no window.
    assert len(store.browse(limit=100)) == 34


# -- counts of one class (a saga class's page) -----------------------------------------


def counted_of(store: Any, name: str) -> dict[str, int]:
    """The counts per status of the class ``name``, counted from the sagas themselves."""
    found = dict.fromkeys((s.value for s in SagaStatus), 0)
    for stored in store.scan(name=name):
        found[stored.status] += 1
    return found


def test_the_counts_of_one_class_are_its_sagas_only(store: Any) -> None:
    fill(store, rounds=2)
    other = record_of(Order(), "order-1", NOW + 100)
    store.create(other)
    other.status = SagaStatus.RUNNING
    store.save(other)
    mine = store.counts(NAME)
    assert mine == counted_of(store, NAME) and sum(mine.values()) == 23
    assert store.counts(other.saga_name) == {
        **dict.fromkeys((s.value for s in SagaStatus), 0), "RUNNING": 1}
    assert sum(store.counts("NoSuchSaga").values()) == 0
    assert sum(store.counts().values()) == 24


def test_sqlite_counts_one_class_from_the_status_index_alone(tmp_path: Path) -> None:
    """The class's count never reads the sagas' rows: a class of 100,000 sagas is counted
    from the (status, saga_name) index, which holds all the query needs."""
    with SQLiteStore(tmp_path / "counts.db") as db:
        fill(db)
        traced: list[str] = []
        db._read_conn.set_trace_callback(traced.append)
        try:
            db.counts(NAME)
        finally:
            db._read_conn.set_trace_callback(None)
        (query,) = [q for q in traced if "count(*)" in q]
        lines = [row[3] for row in db._read_conn.execute("EXPLAIN QUERY PLAN " + query)]
        assert any("USING COVERING INDEX sagaflow_sagas_by_status" in line
                   for line in lines), lines

"""``browse(incidents=...)``: the dashboard's "only with an incident" view as a store
query, newest started first, keyset pages, with the list's other filters and the kind
of incident (failed, quarantined, stalled) kept: the same sagas as ``open_incidents``
finds, on the memory, SQLite and PostgreSQL stores; on the SQL stores each kind's page
is read from an index (EXPLAIN), never the whole table nor a sort of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from store_sagas import Other, record_of
from test_scan_browse import _opened

from sagaflow import SagaStatus
from sagaflow.errors import StepError
from sagaflow.incidents import FAILED, QUARANTINED, STALLED, open_incidents
from sagaflow.stores._rows import COLUMNS
from sagaflow.stores._sql import incident_selects
from sagaflow.stores.sqlite import SQLiteStore

NOW = 1_700_000_000.0
AFTER = 600.0  #: the stalled threshold: no checkpoint for 10 minutes
KINDS = (FAILED, QUARANTINED, STALLED)
#: what each saga the fill makes is: its status, waiting at a wait, wake time, seconds
#: since its last checkpoint, resolved, quarantined; and the incident it has (or "")
SAGAS: dict[str, tuple[SagaStatus, bool, float | None, float, bool, bool, str]] = {
    "failed": (SagaStatus.FAILED, False, None, 5, False, False, FAILED),
    "resolved": (SagaStatus.FAILED, False, None, 5, True, False, ""),
    "failed-aside": (SagaStatus.FAILED, False, None, 5, False, True, QUARANTINED),
    "done-aside": (SagaStatus.COMPLETED, False, None, 5, False, True, QUARANTINED),
    "hung": (SagaStatus.RUNNING, False, None, 3600, False, False, STALLED),
    "busy": (SagaStatus.RUNNING, False, None, 5, False, False, ""),
    "waiting": (SagaStatus.RUNNING, True, None, 3600, False, False, ""),
    "undoing-hung": (SagaStatus.COMPENSATING, False, None, 3600, False, False, STALLED),
    "undoing": (SagaStatus.COMPENSATING, False, None, 5, False, False, ""),
    "lost-event": (SagaStatus.COMPENSATING, True, None, 3600, False, False, STALLED),
    "deadline-set": (SagaStatus.COMPENSATING, True, NOW + 99, 3600, False, False, ""),
    "hung-aside": (SagaStatus.RUNNING, False, None, 3600, False, True, QUARANTINED),
    "done": (SagaStatus.COMPLETED, False, None, 3600, False, False, ""),
    "compensated": (SagaStatus.COMPENSATED, False, None, 3600, False, False, ""),
}


def fill(store: Any, rounds: int = 2) -> dict[str, str]:
    """``rounds`` sagas of each kind, each started a second after the one before; the
    incident kind of each saga id ("" for none)."""
    expected: dict[str, str] = {}
    at = NOW
    for k in range(rounds):
        for kind, (status, waits, wake, quiet, resolved, aside, incident) in SAGAS.items():
            at += 1
            sid = f"{kind}-{k:02}"
            record = record_of(Other(), sid, at)
            store.create(record)
            record.status = status
            if status is SagaStatus.FAILED:
                record.error = StepError(1, "charge", "refund refused")
                record.failures = {"reserve": "release down"}
            if waits:
                record.waiting, record.wake_at = "approval", wake
            if status.is_terminal:
                record.finished_at = NOW + 7200 - quiet
            record.resolution = "handled by hand" if resolved else None
            record.updated_at = NOW + 7200 - quiet
            store.save(record)
            if aside:
                store.quarantine(sid, "the disk lied")
            expected[sid] = incident
    return expected


def the_now() -> float:
    return NOW + 7200


def browse(store: Any, **filters: Any) -> list[Any]:
    filters.setdefault("incidents", KINDS)
    filters.setdefault("stalled_before", the_now() - AFTER)
    return store.browse(**filters)


def ids(found: list[Any]) -> list[str]:
    return [s.saga_id for s in found]


def newest_first(expected: dict[str, str], store: Any, kinds: tuple[str, ...] = KINDS) -> list[str]:
    rows = [store.load_raw(sid) for sid, kind in expected.items() if kind in kinds and kind]
    rows.sort(key=lambda s: (float(s.created_at), s.saga_id), reverse=True)
    return ids(rows)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    yield from _opened(request, tmp_path)


def test_the_sagas_with_an_open_incident_newest_started_first(store: Any) -> None:
    expected = fill(store)
    found = browse(store, limit=1000)
    assert ids(found) == newest_first(expected, store)
    # the very sagas open_incidents finds, each of the kind it finds
    opened = {i.saga_id: i.kind for i in open_incidents(store, stalled_after=AFTER,
                                                        now=the_now())}
    assert {s.saga_id for s in found} == set(opened)
    assert {sid: k for sid, k in expected.items() if k} == opened
    # without a threshold, no saga is stalled
    assert ids(browse(store, stalled_before=None, limit=1000)) == newest_first(
        expected, store, (FAILED, QUARANTINED))


def test_each_kind_alone_and_with_the_lists_other_filters(store: Any) -> None:
    expected = fill(store)
    for kinds in ((FAILED,), (QUARANTINED,), (STALLED,), (FAILED, STALLED)):
        assert ids(browse(store, incidents=kinds, limit=1000)) == newest_first(
            expected, store, kinds), kinds
    assert ids(browse(store, status=[SagaStatus.FAILED])) == [
        "failed-aside-01", "failed-01", "failed-aside-00", "failed-00"]
    assert ids(browse(store, status=[SagaStatus.COMPENSATING], incidents=(STALLED,))) == [
        "lost-event-01", "undoing-hung-01", "lost-event-00", "undoing-hung-00"]
    assert ids(browse(store, text="hung-0")) == [
        "undoing-hung-01", "hung-01", "undoing-hung-00", "hung-00"]
    assert ids(browse(store, newer=NOW + len(SAGAS) + 1)) == newest_first(
        {s: k for s, k in expected.items() if s.endswith("-01")}, store)
    assert browse(store, name="no-such-class") == []
    with pytest.raises(ValueError, match="'lost' is not a kind of incident"):
        browse(store, incidents=("lost",))


def test_incident_pages_follow_each_other_without_repeats_or_gaps(store: Any) -> None:
    expected = fill(store, rounds=3)
    seen: list[str] = []
    after = None
    while True:
        found = browse(store, limit=4, after=after)
        seen += ids(found)
        if len(found) < 4:
            break
        after = (float(found[-1].created_at), found[-1].saga_id)
    assert seen == newest_first(expected, store)


# -- the plans: each kind of incident from an index --------------------------------------

#: The index each kind's page is read from (the quarantined: the ids the quarantine
#: holds, a few, each read by its saga id and sorted).
INDEXES = {
    "failed": "sagaflow_sagas_open_failed",
    "quarantined": "sqlite_autoindex_sagaflow_sagas_1|sagaflow_sagas_pkey",
    "stalled RUNNING": "sagaflow_sagas_by_status_start",
    "stalled COMPENSATING": "sagaflow_sagas_by_status_start",
}


def parts(store: Any, mark: str) -> dict[str, tuple[str, list[Any]]]:
    """Each kind's statement, as browse() runs it."""
    from sagaflow.stores._sql import Select

    select = Select(limit=50, by_start=True)
    found = {}
    aside = [q.saga_id for q in store.quarantined()]
    for label, part in incident_selects(select, KINDS, the_now() - AFTER, store.layout, aside):
        found[label] = (*part.render(mark, store.error_type("s.error")), part.index)
    assert set(found) == set(INDEXES)
    return found


def test_sqlite_reads_each_kinds_page_from_an_index(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "plans.db") as db:
        fill(db)
        for label, (where, params, index) in parts(db, "?").items():
            head = db._head
            if index is not None:
                head = head.replace("FROM sagaflow_sagas s", "FROM sagaflow_sagas s"
                                    + db.indexed(index), 1)
            lines = [row[3] for row in db._read_conn.execute(
                "EXPLAIN QUERY PLAN " + head + where, params).fetchall()]
            reads = [line for line in lines if line.startswith(("SCAN s", "SEARCH s"))]
            assert len(reads) == 1, (label, lines)
            assert any(f"USING INDEX {i} " in reads[0] + " "
                       for i in INDEXES[label].split("|")), (label, lines)
            if label != "quarantined":  # the quarantine's few sagas are sorted; no other
                assert not any("TEMP B-TREE" in line for line in lines), (label, lines)


@pytest.fixture(params=["postgres"])
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    yield from _opened(request, tmp_path)


def test_postgres_reads_each_kinds_page_from_an_index(pg: Any) -> None:
    fill(pg, rounds=10)
    # And 5,000 older finished sagas: the incidents a few among many.
    columns = ", ".join(COLUMNS)
    copied = columns.replace("saga_id", "'old-' || g").replace(
        "created_at", "created_at - 1000 - g")
    pg._execute(f"INSERT INTO sagaflow_sagas ({columns}) SELECT {copied} FROM"
                " sagaflow_sagas, generate_series(1, 5000) g WHERE saga_id = 'done-01'")
    for label, (where, params, _) in parts(pg, "%s").items():
        with pg._pool.connection() as conn, conn.transaction():
            conn.execute("ANALYZE sagaflow_sagas")
            conn.execute("SET LOCAL enable_seqscan = off")
            if label != "quarantined":
                conn.execute("SET LOCAL enable_sort = off")
            rows = conn.execute("EXPLAIN " + pg._select + where, params).fetchall()
        text = "\n".join(row[0] for row in rows)
        assert "Seq Scan on sagaflow_sagas" not in text, (label, text)
        assert any(f" {i} " in text for i in INDEXES[label].split("|")), (label, text)
        if label != "quarantined":
            assert "Sort Key: s.created_at" not in text, (label, text)
    assert len(browse(pg, limit=1000)) == 10 * 7


def test_a_read_only_version_1_database_lists_its_incidents(tmp_path: Path) -> None:
    from test_sqlite_store import old_database

    with SQLiteStore(old_database(tmp_path, 1), readonly=True) as reader:
        assert reader.layout == 1  # no quarantine, no waits, no index of its own
        found = reader.browse(incidents=KINDS, stalled_before=1_700_000_100.0)
        assert ids(found) == ["v1-running"]  # no checkpoint since 1_700_000_039
        assert reader.browse(incidents=KINDS, stalled_before=None) == []

"""What the PostgreSQL store does beyond the store contract (tests/stores): its schema,
URLs, long sagas, several processes' stores on one database, the queue primitives
(claim, renew, release, fenced saves), and failures of values and connections."""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest
from pg_sagas import AHello, Hello
from psycopg import sql

from sagaflow import (
    ConcurrentModification,
    LeaseLost,
    Orchestrator,
    SagaRecord,
    SagaStatus,
    StoreError,
)
from sagaflow.definition import spec_of
from sagaflow.engine import new_record
from sagaflow.events import StepStarted
from sagaflow.stores import PostgresStore, open_store
from sagaflow.stores.postgres import SCHEMA_VERSION

NOW = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[2]


def record_of(saga_obj: object, saga_id: str, now: float = NOW) -> SagaRecord:
    return new_record(spec_of(saga_obj), saga_obj, saga_id, now)


def execute(url: str, schema: str, statement: str, params: tuple[object, ...] = ()) -> list:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


# --- schema and URLs ----------------------------------------------------------------


def test_the_schema_is_created_once_and_versioned(
    pg_url: str, schema: str, pg_store: PostgresStore
) -> None:
    assert pg_store.schema_version == SCHEMA_VERSION
    tables = {r[0] for r in execute(
        pg_url, schema, "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
    )}
    assert tables == {"sagaflow_meta", "sagaflow_sagas", "sagaflow_history", "sagaflow_events",
                      "sagaflow_path", "sagaflow_quarantine", "sagaflow_signals", "sagaflow_outbox",
                      "sagaflow_counts", "sagaflow_incident_claims"}
    # A second store (another process, say) finds the tables and shares the sagas.
    pg_store.create(record_of(Hello(), "h-1"))
    with PostgresStore(pg_url, schema=schema) as other:
        assert other.schema_version == SCHEMA_VERSION
        other.register(Hello)
        assert other.load("h-1").data == Hello()
        assert len(other) == 1


def test_a_version_1_schema_is_migrated_and_its_sagas_get_an_empty_path(
    pg_url: str, schema: str, pg_store: PostgresStore
) -> None:
    """Version 1 is version 2 without the path and the quarantine: take them away (what
    sagaflow 0.1 wrote), then open the store again."""
    record = record_of(Hello(), "old")
    pg_store.create(record)
    pg_store.close()
    back_to_version_2(pg_url, schema)
    execute(pg_url, schema, "DROP TABLE sagaflow_path, sagaflow_quarantine")
    execute(pg_url, schema, "ALTER TABLE sagaflow_sagas DROP COLUMN path, DROP COLUMN path_count")
    execute(pg_url, schema, "UPDATE sagaflow_meta SET value = '1'")
    with PostgresStore(pg_url, schema=schema) as store:
        assert store.schema_version == SCHEMA_VERSION == 7
        store.register(Hello)
        old = store.load("old")
        assert old.path == [] and old.data == Hello()
        old.path.append(("not_started", "start", "greet"))
        store.save(old)
        assert store.load("old").path == [("not_started", "start", "greet")]
    with PostgresStore(pg_url, schema=schema) as again:
        assert again.schema_version == 7 and len(again) == 1


def back_to_version_6(url: str, schema: str) -> None:
    """Take version 7's incident claims and index away: a schema as 6 left it."""
    execute(url, schema, "DROP TABLE sagaflow_incident_claims")
    execute(url, schema, "DROP INDEX sagaflow_sagas_open_failed")
    execute(url, schema, "UPDATE sagaflow_meta SET value = '6'")


def back_to_version_5(url: str, schema: str) -> None:
    """Take version 6's indexes of the dashboard's list away: a schema as 5 left it."""
    back_to_version_6(url, schema)
    execute(url, schema, "DROP INDEX sagaflow_sagas_by_start, sagaflow_sagas_by_status_start,"
            " sagaflow_sagas_by_name_start, sagaflow_sagas_by_error")
    execute(url, schema, "DROP TABLE sagaflow_counts")
    execute(url, schema, "DROP FUNCTION sagaflow_count() CASCADE")
    execute(url, schema, "UPDATE sagaflow_meta SET value = '5'")


def back_to_version_4(url: str, schema: str) -> None:
    """Take version 5's outbox away: a schema as version 4 left it."""
    back_to_version_5(url, schema)
    execute(url, schema, "DROP TABLE sagaflow_outbox")
    execute(url, schema, "UPDATE sagaflow_meta SET value = '4'")


def back_to_version_3(url: str, schema: str) -> None:
    """Take version 4's flag and indexes away: a schema as version 3 left it."""
    back_to_version_4(url, schema)
    execute(url, schema, "DROP INDEX sagaflow_sagas_unparked, sagaflow_sagas_parked")
    execute(url, schema, "ALTER TABLE sagaflow_sagas DROP COLUMN signalled")
    execute(url, schema, "CREATE INDEX sagaflow_sagas_parked ON sagaflow_sagas (wake_at)"
            " WHERE waiting IS NOT NULL")
    execute(url, schema, "UPDATE sagaflow_meta SET value = '3'")


def back_to_version_2(url: str, schema: str) -> None:
    """Take version 3's waits and signals away: a schema as version 2 left it."""
    back_to_version_3(url, schema)
    execute(url, schema, "DROP TABLE sagaflow_signals")
    execute(url, schema, "ALTER TABLE sagaflow_sagas DROP COLUMN waiting, DROP COLUMN"
            " waiting_after, DROP COLUMN signal_marks, DROP COLUMN business_key")
    execute(url, schema, "UPDATE sagaflow_meta SET value = '2'")


def test_a_version_2_schema_is_migrated_and_its_sagas_wait_for_nothing(
    pg_url: str, schema: str, pg_store: PostgresStore
) -> None:
    pg_store.create(record_of(Hello(), "old"))
    pg_store.quarantine("old", "set aside")
    pg_store.close()
    back_to_version_2(pg_url, schema)
    with PostgresStore(pg_url, schema=schema, readonly=True) as reader:
        reader.register(Hello)
        assert reader.schema_version == 2
        assert reader.load("old").waiting is None and reader.signals("old") == []
        assert reader.due(NOW + 10**6) == [] and reader.by_key("k") == []
        assert reader.next_signal("old", "approval", 0) is None
    with PostgresStore(pg_url, schema=schema) as store:
        assert store.schema_version == 7
        store.register(Hello)
        old = store.load("old")
        assert (old.waiting, old.signal_marks, old.business_key) == (None, {}, None)
        assert [q.saga_id for q in store.quarantined()] == ["old"]
        added = store.add_signal("old", "approval", "a", "{}", NOW)
        assert store.signals("old") == [added]
        indexes = {r[0] for r in execute(
            pg_url, schema, "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)
        )}
        assert {"sagaflow_sagas_parked", "sagaflow_sagas_by_key",
                "sagaflow_signals_by_name"} <= indexes
    with PostgresStore(pg_url, schema=schema) as again:
        assert again.schema_version == 7 and len(again) == 1


def test_a_read_only_store_reads_and_never_writes(
    pg_url: str, schema: str, pg_store: PostgresStore
) -> None:
    pg_store.create(record_of(Hello(), "ro-1"))
    with open_store(f"{pg_url}&schema={schema}", readonly=True) as reader:
        assert isinstance(reader, PostgresStore) and reader.readonly
        reader.register(Hello)
        record = reader.load("ro-1")
        assert record is not None and [s.saga_id for s in reader.scan()] == ["ro-1"]
        for write in (
            lambda: reader.save(record),
            lambda: reader.create(record_of(Hello(), "ro-2")),
            lambda: reader.quarantine("ro-1", "no"),
            lambda: reader.claim("w", 1, lease=1, now=NOW, names=["pg-hello"], fingerprints=[]),
        ):
            with pytest.raises(StoreError, match="read-only"):
                write()
    # Its connections are read-only too: the server refuses any write.
    with (
        PostgresStore(pg_url, schema=schema, readonly=True) as reader,
        pytest.raises(StoreError, match="read-only transaction"),
    ):
        reader._query("DELETE FROM sagaflow_sagas")
    assert len(pg_store) == 1


def test_a_read_only_store_on_a_database_without_sagaflow_says_so(
    pg_url: str, schema: str
) -> None:
    execute(pg_url, "public", f"CREATE SCHEMA {schema}")
    execute(pg_url, schema, "CREATE TABLE orders (id int)")
    with pytest.raises(StoreError, match="has no sagaflow schema"):
        PostgresStore(pg_url, schema=schema, readonly=True)
    tables = execute(pg_url, schema, "SELECT tablename FROM pg_tables WHERE schemaname = %s",
                     (schema,))
    assert tables == [("orders",)]  # nothing created


def test_a_read_only_store_reads_a_version_1_schema_without_migrating_it(
    pg_url: str, schema: str, pg_store: PostgresStore
) -> None:
    pg_store.create(record_of(Hello(), "old"))
    pg_store.close()
    back_to_version_2(pg_url, schema)
    execute(pg_url, schema, "DROP TABLE sagaflow_path, sagaflow_quarantine")
    execute(pg_url, schema, "ALTER TABLE sagaflow_sagas DROP COLUMN path, DROP COLUMN path_count")
    execute(pg_url, schema, "UPDATE sagaflow_meta SET value = '1'")
    with PostgresStore(pg_url, schema=schema, readonly=True) as reader:
        reader.register(Hello)
        assert reader.schema_version == 1
        assert reader.load("old").path == [] and reader.quarantined() == []
        assert [s.quarantined for s in reader.scan()] == [None]
    assert execute(pg_url, schema, "SELECT value FROM sagaflow_meta") == [("1",)]


def test_opening_stores_at_once_creates_the_schema_once(pg_url: str, schema: str) -> None:
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PostgresStore(pg_url, schema=schema, pool_size=1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in opened:
        s.close()
    assert errors == [] and len(opened) == 6


def test_a_newer_or_unreadable_schema_version_is_refused(
    pg_url: str, schema: str, pg_store: PostgresStore
) -> None:
    pg_store.close()
    execute(pg_url, schema, "UPDATE sagaflow_meta SET value = %s", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match="newer than this sagaflow understands"):
        PostgresStore(pg_url, schema=schema)
    execute(pg_url, schema, "UPDATE sagaflow_meta SET value = 'x'")
    with pytest.raises(StoreError, match="not a number"):
        PostgresStore(pg_url, schema=schema)


def test_urls_open_a_postgres_store_with_sagaflow_options(pg_url: str, schema: str) -> None:
    for scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        url = pg_url.replace("postgresql", scheme, 1) + f"&schema={schema}&pool_size=2"
        store = open_store(url)
        try:
            assert isinstance(store, PostgresStore)
            assert store.schema == schema
            assert store.schema_version == SCHEMA_VERSION
        finally:
            store.close()


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        ("&pool_size=many", "option pool_size='many' is not valid"),
        ("&color=blue", "invalid URI query parameter"),
    ],
)
def test_bad_url_options_are_named(pg_url: str, suffix: str, message: str) -> None:
    with pytest.raises((ValueError, StoreError), match=message):
        open_store(pg_url + suffix)


def test_a_server_that_is_not_there_fails_at_once_with_libpq_s_reason(tmp_path: Path) -> None:
    url = f"postgresql:///db?host={tmp_path}&port=5"
    with pytest.raises(StoreError, match=r"cannot connect .*No such file or directory"):
        PostgresStore(url, connect_timeout=2)


def test_sagaflow_imports_without_psycopg_and_says_how_to_get_it() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None\n"
        "import sagaflow, sagaflow.stores\n"
        "from sagaflow.stores import open_store\n"
        "try:\n"
        "    open_store('postgresql://u@h/db')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "import sagaflow.worker\n"  # it serves SQLite too
        "try:\n"
        "    sagaflow.worker.Worker('postgresql://u@h/db')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.count("pip install 'sagaflow[postgres]'") == 2, done.stdout


# --- records ------------------------------------------------------------------------


def test_a_long_saga_spills_its_events_and_loads_back_whole(
    pg_url: str, schema: str, pg_store: PostgresStore
) -> None:
    record = record_of(Hello(), "long")
    pg_store.create(record)
    for i in range(100):  # far past the 32 events a row keeps inline
        record.history.append(step_started(record, i))
        record.events.append({"n": i})
        record.updated_at = NOW + i
        pg_store.save(record)
    loaded = pg_store.load("long")
    assert loaded.history == record.history and loaded.events == record.events
    assert execute(pg_url, schema, "SELECT count(*) FROM sagaflow_history")[0][0] == 96
    assert execute(pg_url, schema, "SELECT count(*) FROM sagaflow_events")[0][0] == 96
    # Another store loads it, and saves it on: the spilled events are not written twice.
    with PostgresStore(pg_url, schema=schema) as other:
        other.register(Hello)
        copy = other.load("long")
        copy.events.append({"n": "last"})
        other.save(copy)
        assert other.load("long").events[-1] == {"n": "last"}
    assert pg_store.load("long").events == [*record.events, {"n": "last"}]


def step_started(record: SagaRecord, i: int) -> StepStarted:
    return StepStarted(record.saga_id, record.saga_name, NOW + i, "greet", i + 1)


def test_two_stores_on_one_database_see_each_other_s_writes(
    pg_url: str, schema: str, pg_store: PostgresStore
) -> None:
    record = record_of(Hello(), "shared")
    pg_store.create(record)
    with PostgresStore(pg_url, schema=schema) as other:
        other.register(Hello)
        theirs = other.load("shared")
        theirs.updated_at = NOW + 1
        other.save(theirs)
        record.updated_at = NOW + 2
        with pytest.raises(ConcurrentModification, match="version 0, the store has version 1"):
            pg_store.save(record)
    assert pg_store.load("shared").updated_at == NOW + 1


def test_scan_pages_through_every_saga_by_id(pg_store: PostgresStore) -> None:
    for i in range(10):
        pg_store.create(record_of(Hello(), f"s-{i:02d}"))
    ids = [s.saga_id for s in pg_store.scan(batch=3)]
    assert ids == [f"s-{i:02d}" for i in range(10)]
    assert [s.saga_id for s in pg_store.scan(status=[SagaStatus.COMPLETED])] == []
    assert pg_store.status_of("s-03") is SagaStatus.RUNNING
    assert pg_store.status_of("nope") is None
    stored = pg_store.load_raw("s-03")
    assert stored is not None and not stored.queued and stored.owner is None


def test_a_value_the_server_refuses_fails_only_its_own_save(pg_store: PostgresStore) -> None:
    """PostgreSQL text cannot hold NUL: that save fails alone, the batch's others land."""

    async def main() -> list[BaseException | None]:
        records = [record_of(AHello(), f"v-{i}") for i in range(20)]
        for r in records:
            await pg_store.acreate(r)
        for i, r in enumerate(records):
            r.updated_at = NOW + 1
            r.status, r.state = SagaStatus.FAILED, "failed"  # resolved by an operator
            r.resolution = "bad\x00note" if i == 7 else f"note {i}"
        outcomes = await asyncio.gather(
            *(pg_store.asave(r) for r in records), return_exceptions=True
        )
        return list(outcomes)

    outcomes = asyncio.run(main())
    assert [i for i, o in enumerate(outcomes) if o is not None] == [7]
    assert isinstance(outcomes[7], StoreError) and "refused the write" in str(outcomes[7])
    assert pg_store.load("v-7").resolution is None and pg_store.load("v-7").version == 0
    assert pg_store.load("v-8").resolution == "note 8"


def test_a_lost_connection_fails_that_write_and_the_next_reconnects(
    pg_url: str, pg_store: PostgresStore
) -> None:
    record = record_of(Hello(), "conn")
    pg_store.create(record)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database()"
        )
    record.updated_at = NOW + 1
    with pytest.raises(StoreError, match="may or may not have been committed"):
        pg_store.save(record)
    pg_store.save(record)  # a fresh connection
    assert pg_store.load("conn").version == 1


def test_an_orchestrator_runs_on_a_url(store_url: str) -> None:
    with Orchestrator(store_url) as orch:
        result = orch.run(Hello())
        assert result.ok and orch.get(result.saga_id).status is SagaStatus.COMPLETED


# --- the queue ----------------------------------------------------------------------


def test_claims_take_due_sagas_once_and_fence_them(pg_store: PostgresStore) -> None:
    records = [record_of(Hello(), f"q-{i}") for i in range(5)]
    pg_store.enqueue_many(records, run_at=NOW)
    late = record_of(Hello(), "q-late")
    pg_store.enqueue(late, run_at=NOW + 60)
    spec = spec_of(Hello)
    kinds = {"names": [spec.name], "fingerprints": [spec.fingerprint]}
    first = pg_store.claim("a", 3, lease=30, now=NOW, **kinds)
    second = pg_store.claim("b", 10, lease=30, now=NOW, **kinds)
    assert len(first) == 3 and len(second) == 2  # the late one is not due yet
    assert {s.saga_id for s in first}.isdisjoint(s.saga_id for s in second)
    assert all(s.owner == "a" and s.fence == 1 and s.queued for s in first)
    assert pg_store.claim("c", 10, lease=30, now=NOW, **kinds) == []  # held under leases
    assert [s.saga_id for s in pg_store.claim("c", 10, lease=30, now=NOW + 61, **kinds)] == [
        "q-late"
    ]
    other = {"names": ["someone-else"], "fingerprints": [spec.fingerprint]}
    pg_store.enqueue(record_of(Hello(), "q-new"), run_at=NOW)
    assert pg_store.claim("d", 10, lease=30, now=NOW, **other) == []  # not a saga it runs


def test_concurrent_claims_never_take_the_same_saga(pg_url: str, schema: str) -> None:
    with PostgresStore(pg_url, schema=schema, pool_size=8) as store:
        store.enqueue_many([record_of(Hello(), f"c-{i:03d}") for i in range(300)], run_at=NOW)
        spec = spec_of(Hello)
        taken: dict[str, list[str]] = {}

        def claimer(name: str) -> None:
            mine = taken.setdefault(name, [])
            while True:
                got = store.claim(name, 7, lease=30, now=NOW, names=[spec.name],
                                  fingerprints=[spec.fingerprint])
                if not got:
                    return
                mine.extend(s.saga_id for s in got)

        threads = [threading.Thread(target=claimer, args=(f"w{k}",)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    every = [sid for ids in taken.values() for sid in ids]
    assert sorted(every) == [f"c-{i:03d}" for i in range(300)]  # each exactly once


def test_a_fenced_save_fails_once_the_saga_is_claimed_again(
    pg_url: str, schema: str, pg_store: PostgresStore
) -> None:
    spec = spec_of(Hello)
    kinds = {"names": [spec.name], "fingerprints": [spec.fingerprint]}
    pg_store.enqueue(record_of(Hello(), "f-1"), run_at=NOW)
    [held] = pg_store.claim("zombie", 1, lease=30, now=NOW, **kinds)
    zombie = pg_store.decode(held, Hello)
    assert pg_store.claim("new", 1, lease=30, now=NOW + 31, **kinds) == []  # held
    # The zombie stalls past its lease (the database's clock says so).
    execute(pg_url, schema, "UPDATE sagaflow_sagas SET lease_until = now() - interval '1s'")
    [taken] = pg_store.claim("new", 1, lease=30, now=NOW + 31, **kinds)
    assert taken.fence == held.fence + 1
    owner = pg_store.decode(taken, Hello)
    owner.updated_at = NOW + 5
    pg_store.save(owner, fence=taken.fence)
    zombie.updated_at = NOW + 9
    with pytest.raises(LeaseLost, match="taken over by another worker") as caught:
        pg_store.fenced({"f-1": held.fence}).save(zombie)
    assert (caught.value.fence, caught.value.current) == (held.fence, taken.fence)
    again = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(again, LeaseLost) and str(again) == str(caught.value)
    assert pg_store.load("f-1").updated_at == NOW + 5  # the owner's record, untouched
    # Even at a version the zombie could match, its token is refused.
    zombie.version = pg_store.load("f-1").version
    with pytest.raises(LeaseLost):
        pg_store.save(zombie, fence=held.fence)
    assert not pg_store.release("f-1", held.fence, NOW)  # nor can it release the saga
    assert pg_store.renew("zombie", ["f-1"], lease=30, now=NOW) == {}
    assert pg_store.renew("new", ["f-1"], lease=30, now=NOW) == {"f-1": taken.fence}
    assert pg_store.release("f-1", taken.fence, NOW + 1)
    back = pg_store.load_raw("f-1")
    assert back is not None and back.owner is None and back.run_at == NOW + 1
    assert back.fence == taken.fence + 1


def test_claims_never_take_a_quarantined_saga(pg_store: PostgresStore) -> None:
    spec = spec_of(Hello)
    kinds = {"names": [spec.name], "fingerprints": [spec.fingerprint]}
    pg_store.enqueue_many([record_of(Hello(), f"qz-{i}") for i in range(3)], run_at=NOW)
    pg_store.quarantine("qz-1", "cannot be decoded")
    assert sorted(s.saga_id for s in pg_store.claim("a", 10, lease=30, now=NOW, **kinds)) == [
        "qz-0", "qz-2"]
    # Nor once its lease is over, nor by a worker that takes everything due.
    assert pg_store.claim("b", 10, lease=30, now=NOW + 3600, **kinds) == []
    assert pg_store.unquarantine("qz-1")
    [lifted] = pg_store.claim("b", 10, lease=30, now=NOW, **kinds)
    assert lifted.saga_id == "qz-1" and lifted.quarantined is None
    assert pg_store.fenced({}).quarantined() == []


def test_finishing_a_queued_saga_takes_it_off_the_queue(pg_store: PostgresStore) -> None:
    spec = spec_of(Hello)
    pg_store.enqueue(record_of(Hello(), "done"), run_at=NOW)
    [held] = pg_store.claim("w", 1, lease=30, now=NOW, names=[spec.name],
                            fingerprints=[spec.fingerprint])
    record = pg_store.decode(held, Hello)
    record.status = SagaStatus.COMPLETED
    record.state = "completed"
    record.finished_at = NOW + 1
    pg_store.save(record, fence=held.fence)
    stored = pg_store.load_raw("done")
    assert stored is not None
    assert (stored.run_at, stored.owner, stored.lease_until) == (None, None, None)


def test_enqueue_of_an_existing_id_returns_the_stored_saga(pg_store: PostgresStore) -> None:
    assert pg_store.enqueue(record_of(Hello(who="first"), "dup")) is None
    existing = pg_store.enqueue(record_of(Hello(who="second"), "dup"))
    assert existing is not None and existing.data.who == "first"


def test_the_environment_is_a_throwaway_cluster(pg_url: str) -> None:
    """The cluster the tests use listens on a private socket directory, not on TCP."""
    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    assert str(info["host"]).startswith("/") and os.path.isdir(str(info["host"]))

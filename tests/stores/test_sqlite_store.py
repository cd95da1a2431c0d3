"""What only the durable SQLite store does: schema, concurrency, corruption, group commit."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from store_sagas import ORDER_SPEC, Order, Other, assert_same, record_of

from sagaflow import Orchestrator, SagaStatus, events, saga, step
from sagaflow.codec import Codec, CorruptRecord
from sagaflow.engine import Call, next_command, settle
from sagaflow.errors import SignalRefused, UnknownSaga
from sagaflow.stores import open_store
from sagaflow.stores.sqlite import (
    INLINE,
    SCHEMA_VERSION,
    ConcurrentModification,
    SQLiteStore,
    StoreError,
    UnknownSagaClass,
)
from sagaflow.testing import VirtualClock

NOW = 1_700_000_000.0
DATA = Path(__file__).parent / "data"
ACTIVE = (SagaStatus.NOT_STARTED, SagaStatus.RUNNING, SagaStatus.COMPENSATING)


def raw(path: Path | str) -> sqlite3.Connection:
    """A second, independent connection: what another process would see."""
    return sqlite3.connect(path, isolation_level=None)


def stored_version(path: Path | str, saga_id: str) -> int | None:
    with raw(path) as conn:
        row = conn.execute(
            "SELECT version FROM sagaflow_sagas WHERE saga_id = ?", (saga_id,)
        ).fetchone()
    return None if row is None else row[0]


def step_once(record, now: float) -> None:
    """Start the next call and settle it successfully (what a driver does between saves)."""
    call = next_command(ORDER_SPEC, record, now)
    if isinstance(call, Call):
        settle(ORDER_SPEC, record, call, now, None, False, [("ok", call.index)])


# -- schema ----------------------------------------------------------------------


def test_the_schema_is_created_on_first_use_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with SQLiteStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 7
        assert store.journal_mode == "wal"
    with raw(path) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )}
        assert tables == {"sagaflow_meta", "sagaflow_sagas", "sagaflow_history",
                          "sagaflow_events", "sagaflow_path", "sagaflow_quarantine",
                          "sagaflow_signals", "sagaflow_outbox", "sagaflow_counts",
                          "sagaflow_incident_claims"}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with SQLiteStore(path) as again:  # opening an existing store changes nothing
        assert again.schema_version == 7 and len(again) == 0


def test_a_version_1_database_is_migrated_and_its_sagas_keep_everything_but_a_path(
    tmp_path: Path,
) -> None:
    """data/sqlite-v1.sql is a database written by sagaflow 0.1 (schema version 1): a
    finished saga, a compensated one, one running with its history partly spilled."""
    path = old_database(tmp_path, 1)
    with SQLiteStore(path) as store:
        assert store.schema_version == 7
        done, compensated, running = (
            store.load(f"v1-{s}") for s in ("done", "compensated", "running")
        )
        assert done.status is SagaStatus.COMPLETED and done.events
        assert compensated.status is SagaStatus.COMPENSATED
        assert "card declined" in str(compensated.error)
        assert len(running.history) == 41  # 32 of them from sagaflow_history
        assert done.path == compensated.path == running.path == []
        # A migrated saga goes on: its path starts from here.
        step_once(running, NOW + 1)
        store.save(running)
        assert len(running.path) == 1 and store.load("v1-running").path == running.path
    with raw(path) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(sagaflow_sagas)")]
        assert columns[-7:] == ["path", "path_count", "waiting", "waiting_after",
                                "signal_marks", "business_key", "signalled"]
    with SQLiteStore(path) as again:  # once migrated, opening changes nothing
        assert again.schema_version == 7 and len(again) == 3


def test_a_version_2_database_is_migrated_and_its_sagas_wait_for_nothing(
    tmp_path: Path,
) -> None:
    """data/sqlite-v2.sql is a database written by schema version 2: a finished saga, a
    running one, a quarantined one. Version 3 adds the wait columns and the signals."""
    path = old_database(tmp_path, 2)
    with SQLiteStore(path) as store:
        assert store.schema_version == 7
        done, running = store.load("v2-done"), store.load("v2-running")
        assert done.status is SagaStatus.COMPLETED and running.status is SagaStatus.RUNNING
        for record in (done, running):
            assert (record.waiting, record.signal_marks, record.business_key) == (None, {}, None)
        assert [q.saga_id for q in store.quarantined()] == ["v2-quarantined"]
        assert store.due(NOW + 10**6) == [] and store.by_key("k") == []
        # A migrated saga takes signals, and parks.
        added = store.add_signal("v2-running", "approval", "a", "{}", NOW + 5)
        assert store.signals("v2-running") == [added]
        running.waiting = "approval"
        store.save(running)
        assert store.due(NOW + 5) == ["v2-running"]
        with pytest.raises(SignalRefused):
            store.add_signal("v2-done", "approval", "a", "{}", NOW + 5)
    with raw(path) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"sagaflow_sagas_parked", "sagaflow_sagas_by_key",
                "sagaflow_signals_by_name"} <= indexes
    with SQLiteStore(path) as again:  # once migrated, opening changes nothing
        assert again.schema_version == 7 and len(again) == 3


def test_a_read_only_store_reads_a_version_2_database_without_migrating_it(
    tmp_path: Path,
) -> None:
    path = old_database(tmp_path, 2)
    before = digest(path)
    with SQLiteStore(path, readonly=True) as reader:
        assert reader.schema_version == 2
        assert reader.load("v2-running").waiting is None
        assert reader.signals("v2-running") == [] and reader.due(NOW + 10**6) == []
        assert reader.next_signal("v2-running", "approval", 0) is None
        assert reader.by_key("k") == []
    assert digest(path) == before


def test_a_version_3_database_is_migrated_and_its_parked_sagas_stay_due(
    tmp_path: Path,
) -> None:
    """data/sqlite-v3.sql is a database written by schema version 3: sagas parked for
    "approval" (one with that signal stored, one with a signal of another name and a
    timer, one with nothing), a running one with a signal stored, a finished one.
    Version 4 flags the parked sagas a signal wakes and indexes what due() and recovery
    read: the same sagas are due, and recovery's scan finds the same ones."""
    path = old_database(tmp_path, 3)
    with SQLiteStore(path, readonly=True) as reader:
        assert reader.schema_version == 3
        assert reader.due(NOW + 10**6) == ["v3-timer", "v3-signalled"]
        assert reader.due(NOW) == ["v3-signalled"]
        assert [s.saga_id for s in reader.scan(status=ACTIVE, parked=False)] == ["v3-running"]
    with SQLiteStore(path) as store:
        assert store.schema_version == 7
        assert store.due(NOW) == ["v3-signalled"]
        assert store.due(NOW + 10**6) == ["v3-timer", "v3-signalled"]
        assert [s.saga_id for s in store.scan(status=ACTIVE, parked=False)] == ["v3-running"]
        assert [s.saga_id for s in store.scan(status=ACTIVE, parked=True)] == [
            "v3-parked", "v3-signalled", "v3-timer"
        ]
        # The running saga parks for the signal stored before: due.
        running = store.load("v3-running")
        running.waiting = "approval"
        store.save(running)
        assert store.due(NOW) == ["v3-running", "v3-signalled"]
        store.add_signal("v3-parked", "approval", "p", "{}", NOW)
        assert store.due(NOW) == ["v3-parked", "v3-running", "v3-signalled"]
    with raw(path) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"sagaflow_sagas_parked", "sagaflow_sagas_signalled",
                "sagaflow_sagas_unparked"} <= indexes
        flagged = conn.execute("SELECT saga_id FROM sagaflow_sagas WHERE signalled IS NOT NULL"
                               " ORDER BY saga_id").fetchall()
        assert flagged == [("v3-parked",), ("v3-running",), ("v3-signalled",)]
    with SQLiteStore(path) as again:  # once migrated, opening changes nothing
        assert again.schema_version == 7 and len(again) == 5


def old_database(tmp_path: Path, version: int) -> Path:
    """A database as schema ``version`` left it: data/sqlite-v{version}.sql."""
    path = tmp_path / f"v{version}.db"
    conn = raw(path)
    conn.executescript((DATA / f"sqlite-v{version}.sql").read_text())
    conn.close()
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_read_only_store_reads_and_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    with SQLiteStore(path) as writer:
        record = record_of(Order(), "ro-1")
        writer.create(record)
        step_once(record, NOW + 1)
        writer.save(record)
    before = digest(path)
    with open_store(f"sqlite:///{path}", readonly=True) as reader:
        assert isinstance(reader, SQLiteStore) and reader.readonly
        assert_same(reader.load("ro-1"), record)
        assert [s.saga_id for s in reader.scan()] == ["ro-1"] and reader.quarantined() == []
        for write in (
            lambda: reader.save(record),
            lambda: reader.create(record_of(Order(), "ro-2")),
            lambda: reader.quarantine("ro-1", "no"),
            lambda: reader.unquarantine("ro-1"),
        ):
            with pytest.raises(StoreError, match="opened read-only"):
                write()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader._read_conn.execute("DELETE FROM sagaflow_sagas")
    assert digest(path) == before


def test_a_read_only_store_on_a_database_without_sagaflow_says_so(tmp_path: Path) -> None:
    path = tmp_path / "someone-elses.db"
    with raw(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    conn.close()
    before = digest(path)
    with pytest.raises(StoreError, match=r"has no sagaflow schema .* not a sagaflow store"):
        open_store(f"sqlite:///{path}", readonly=True)
    assert digest(path) == before  # no sagaflow table was created
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="cannot open the sagaflow store"):
        SQLiteStore(missing, readonly=True)
    assert not missing.exists()


def test_a_read_only_store_reads_a_version_1_database_without_migrating_it(
    tmp_path: Path,
) -> None:
    path = old_database(tmp_path, 1)
    before = digest(path)
    with SQLiteStore(path, readonly=True) as reader:
        assert reader.schema_version == 1
        done = reader.load("v1-done")
        assert done.status is SagaStatus.COMPLETED and done.path == []
        assert len(reader.load("v1-running").history) == 41
        assert [s.quarantined for s in reader.scan()] == [None] * 3
        assert reader.quarantined() == []
    assert digest(path) == before


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    SQLiteStore(path).close()
    with raw(path) as conn:
        conn.execute("UPDATE sagaflow_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=r"schema version 99, newer .* upgrade sagaflow"):
        SQLiteStore(path)
    with raw(path) as conn:
        conn.execute("UPDATE sagaflow_meta SET value = 'x' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="not a number"):
        SQLiteStore(path)


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"cannot open the sagaflow store at .*notes\.txt"):
        SQLiteStore(path)


def test_synchronous_is_checked_and_applied(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="OFF, NORMAL, FULL, EXTRA"):
        SQLiteStore(tmp_path / "x.db", synchronous="SOMETIMES")
    for mode, level in (("FULL", 2), ("normal", 1)):
        with SQLiteStore(tmp_path / f"{mode}.db", synchronous=mode) as store:
            assert store._commit.lanes[0].conn.execute("PRAGMA synchronous").fetchone()[0] == level


def test_an_in_memory_database_works_on_one_connection() -> None:
    with SQLiteStore(":memory:") as store:
        record = record_of(Order(), "m-1")
        store.create(record)
        step_once(record, NOW + 1)
        store.save(record)
        assert_same(store.load("m-1"), record)


# -- write-ahead and optimistic concurrency --------------------------------------


def test_a_save_is_committed_when_it_returns(durable: SQLiteStore) -> None:
    record = record_of(Order(), "w-1")
    durable.create(record)
    assert stored_version(durable.path, "w-1") == 0
    for n in range(1, 5):
        step_once(record, NOW + n)
        durable.save(record)
        assert stored_version(durable.path, "w-1") == n  # another connection sees it


def test_a_stale_copy_cannot_overwrite_a_newer_one(durable: SQLiteStore) -> None:
    record = record_of(Order(), "cc-1")
    durable.create(record)
    durable.save(record)
    mine = durable.load("cc-1")
    with SQLiteStore(durable.path) as other_process:
        theirs = other_process.load("cc-1")
        step_once(theirs, NOW + 1)
        other_process.save(theirs)
    step_once(mine, NOW + 2)
    with pytest.raises(ConcurrentModification) as caught:
        durable.save(mine)
    assert (caught.value.saga_id, caught.value.expected, caught.value.found) == ("cc-1", 1, 2)
    assert "load it again" in str(caught.value)
    assert mine.version == 1  # unchanged: nothing was written
    loaded = durable.load("cc-1")
    assert_same(loaded, theirs)  # the newer copy stands
    step_once(loaded, NOW + 3)
    durable.save(loaded)  # reloading and redoing the change works
    assert durable.load("cc-1").version == 3


def test_an_async_save_that_loses_the_race_raises_and_keeps_the_version(
    durable: SQLiteStore,
) -> None:
    record = record_of(Order(), "cc-2")
    durable.create(record)
    copy = durable.load("cc-2")
    durable.save(record)

    async def main() -> None:
        with pytest.raises(ConcurrentModification):
            await durable.asave(copy)

    asyncio.run(main())
    assert copy.version == 0 and durable.load("cc-2").version == 1


def test_a_saga_deleted_under_a_running_copy_is_reported(durable: SQLiteStore) -> None:
    record = record_of(Order(), "gone-1")
    durable.create(record)
    with raw(durable.path) as conn:
        conn.execute("DELETE FROM sagaflow_sagas WHERE saga_id = 'gone-1'")
    with pytest.raises(ConcurrentModification, match="no longer in the store"):
        durable.save(record)


def test_a_long_history_spills_to_the_append_only_tables_in_chunks(
    durable: SQLiteStore,
) -> None:
    """The recent events stay in the saga's row; every INLINE of them move out, so a
    checkpoint's write stays the same size however long the saga runs."""
    record = record_of(Order(), "long-1")
    durable.create(record)
    t = NOW
    for n in range(1, 40):  # a saga that retries a lot: 3 lifecycle events per save
        t += 1
        for _ in range(3):
            record.history.append(
                events.StepRetrying("long-1", "store-order", t, "charge", n, "busy", delay=1.0)
            )
        record.events.append(("tick", n))
        durable.save(record)
        h, e = len(record.history), len(record.events)
        with raw(durable.path) as conn:
            inline_h, inline_e, count_h = conn.execute(
                "SELECT json_array_length(history), json_array_length(events), history_count "
                "FROM sagaflow_sagas WHERE saga_id = 'long-1'"
            ).fetchone()
            seqs = [r[0] for r in conn.execute(
                "SELECT seq FROM sagaflow_history WHERE saga_id = 'long-1' ORDER BY seq")]
            n_events = conn.execute(
                "SELECT count(*) FROM sagaflow_events WHERE saga_id = 'long-1'").fetchone()[0]
        assert count_h == h and inline_h == h % INLINE and inline_e == e % INLINE
        assert seqs == list(range(h - h % INLINE)) and n_events == e - e % INLINE
    assert len(record.history) > 3 * INLINE
    assert_same(durable.load("long-1"), record)
    with raw(durable.path) as conn:
        kinds = {r[0] for r in conn.execute(
            "SELECT type FROM sagaflow_history WHERE saga_id = 'long-1'")}
    assert kinds == {"SagaStarted", "StepRetrying"}  # spilled rows keep their columns
    # The path spills alike: a checkpoint appends its new edges, it never rewrites them.
    retry = ("failed", "retry", "compensating_reserve")
    undo_failed = ("compensating_reserve", "undo_failed", "failed")
    for n in range(INLINE + 3):
        record.path.append(undo_failed if n % 2 else retry)
        durable.save(record)
    with raw(durable.path) as conn:
        edges = conn.execute(
            "SELECT seq, source, trigger, destination FROM sagaflow_path "
            "WHERE saga_id = 'long-1' ORDER BY seq"
        ).fetchall()
        inline, count = conn.execute(
            "SELECT json_array_length(path), path_count FROM sagaflow_sagas "
            "WHERE saga_id = 'long-1'"
        ).fetchone()
    assert edges == [(k, *record.path[k]) for k in range(INLINE)]
    assert (inline, count) == (len(record.path) - INLINE, len(record.path))
    # Another process continues it: its first save re-sends the spilled events, which
    # are already stored and skipped.
    with SQLiteStore(durable.path) as other:
        copy = other.load("long-1")
        copy.history.append(events.StepCompleted("long-1", "store-order", t + 1, "charge", 40))
        other.save(copy)
        assert_same(other.load("long-1"), copy)


def test_another_store_instance_continues_a_saga_where_it_stands(durable: SQLiteStore) -> None:
    """Recovery's path: a new process loads a running saga and saves its progress."""
    record = record_of(Order(), "rc-1")
    durable.create(record)
    step_once(record, NOW + 1)
    durable.save(record)
    with SQLiteStore(durable.path) as recovered:
        again = recovered.load("rc-1")  # a module-level class: found by its import path
        assert_same(again, record)
        for n in range(2, 5):
            step_once(again, NOW + n)
            recovered.save(again)
        assert again.status is SagaStatus.COMPLETED
    final = durable.load("rc-1")
    assert_same(final, again)
    assert [type(e).__name__ for e in final.history].count("StepCompleted") == 3


def test_saving_a_record_that_was_never_created_inserts_it(durable: SQLiteStore) -> None:
    record = record_of(Order(), "ins-1")
    step_once(record, NOW + 1)
    durable.save(record)
    assert_same(durable.load("ins-1"), record)


# -- recovery's view: raw rows, corruption, unknown classes ----------------------


def test_scan_yields_every_match_in_batches_by_id(durable: SQLiteStore) -> None:
    for i in range(10):
        record = record_of(Order() if i % 3 else Other(n=i), f"s-{i:02}")
        durable.create(record)
        if i >= 7:
            record.status = SagaStatus.COMPLETED
            durable.save(record)
    everything = list(durable.scan(batch=3))
    assert [s.saga_id for s in everything] == [f"s-{i:02}" for i in range(10)]
    active = list(durable.scan(status=ACTIVE, batch=3))
    assert [s.saga_id for s in active] == [f"s-{i:02}" for i in range(7)]
    assert not any(s.is_terminal for s in active)
    others = list(durable.scan(status=ACTIVE, name="store-other", batch=2))
    assert [s.saga_id for s in others] == ["s-00", "s-03", "s-06"]
    assert {s.fingerprint for s in others} == {Other.__sagaflow_spec__.fingerprint}


def test_a_corrupted_record_is_reported_by_id_and_the_others_load(durable: SQLiteStore) -> None:
    for i in range(5):
        durable.create(record_of(Order(), f"k-{i}"))
    with raw(durable.path) as conn:
        conn.execute("UPDATE sagaflow_sagas SET data = '{garbage' WHERE saga_id = 'k-1'")
        conn.execute(
            "UPDATE sagaflow_sagas SET steps = '[{\"name\": 1, \"status\": \"NOPE\"}]' "
            "WHERE saga_id = 'k-2'"
        )
        conn.execute("UPDATE sagaflow_sagas SET status = 'BOGUS' WHERE saga_id = 'k-3'")
        conn.execute(
            "UPDATE sagaflow_sagas SET history_count = history_count + 1 "
            "WHERE saga_id = 'k-4'"
        )
    good, bad = [], {}
    for stored in durable.scan():
        try:
            good.append(durable.decode(stored).saga_id)
        except CorruptRecord as exc:
            bad[exc.saga_id] = exc
    assert good == ["k-0"]
    assert sorted(bad) == ["k-1", "k-2", "k-3", "k-4"]
    assert all(str(exc).startswith(f"saga '{sid}': the stored record cannot be read")
               for sid, exc in bad.items())
    assert {sid: exc.column for sid, exc in bad.items()} == {
        "k-1": "data", "k-2": "steps", "k-3": "status", "k-4": "history_count"}
    assert bad["k-3"].found == "'BOGUS'" and "'BOGUS'" in str(bad["k-3"])
    with pytest.raises(CorruptRecord, match="'k-1'"):
        durable.load("k-1")


@saga(name="store-local")
class _Placeholder:
    @step(readonly=True)
    def look(self, ctx): ...


def test_a_saga_whose_class_cannot_be_found_is_a_clear_error(durable: SQLiteStore) -> None:
    def make():
        @saga(name="store-local")
        class Local:
            n: int = 3

            @step(readonly=True)
            def look(self, ctx): ...

        return Local

    durable.create(record_of(make()(), "loc-1"))
    with SQLiteStore(durable.path) as fresh:
        with pytest.raises(UnknownSagaClass) as caught:
            fresh.load("loc-1")
        assert isinstance(caught.value, UnknownSaga)
        assert "inside a function" in str(caught.value) and "store.register" in str(caught.value)
        stored = fresh.load_raw("loc-1")
        assert fresh.decode(stored, raw_data=True).data == {"n": 3}  # an operator's view
        fresh.register(make())
        assert fresh.load("loc-1").data.n == 3


# -- group commit ----------------------------------------------------------------


def test_concurrent_async_saves_share_one_transaction_and_each_is_durable_on_return(
    durable: SQLiteStore,
) -> None:
    n = 100
    records = [record_of(Order(), f"g-{i:03}") for i in range(n)]
    for r in records:
        durable.create(r)
        step_once(r, NOW + 1)
    commits = durable.commits

    async def save_one(record) -> None:
        await durable.asave(record)
        # Write-ahead: when asave returns, this saga's row is on disk for everyone.
        assert stored_version(durable.path, record.saga_id) == 1

    async def main() -> None:
        durable._commit.lanes[0].lock.acquire()  # hold the writer so that all 100 queue up
        try:
            tasks = [asyncio.create_task(save_one(r)) for r in records]
            while len(durable._commit.pending) < n:
                await asyncio.sleep(0)
            assert all(stored_version(durable.path, r.saga_id) == 0 for r in records[:5])
        finally:
            durable._commit.lanes[0].lock.release()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert durable.commits == commits + 1  # one transaction, one sync to disk
    assert all(r.version == 1 for r in records)
    assert all(durable.load(r.saga_id).version == 1 for r in records)


def test_concurrent_sync_saves_from_threads_are_grouped_too(durable: SQLiteStore) -> None:
    records = [record_of(Order(), f"t-{i}") for i in range(8)]
    for r in records:
        durable.create(r)
    commits = durable.commits
    durable._commit.lanes[0].lock.acquire()
    threads = [threading.Thread(target=durable.save, args=(r,)) for r in records]
    for t in threads:
        t.start()
    while len(durable._commit.pending) < len(records):
        time.sleep(0.001)
    durable._commit.lanes[0].lock.release()
    for t in threads:
        t.join()
    assert durable.commits == commits + 1
    assert [stored_version(durable.path, r.saga_id) for r in records] == [1] * 8


def test_one_refused_write_fails_alone_and_a_lost_race_is_reported_to_its_waiter(
    durable: SQLiteStore,
) -> None:
    good = [record_of(Order(), f"e-{i}") for i in range(3)]
    for r in good:
        durable.create(r)
    stale = durable.load("e-0")
    durable.save(good[0])
    huge = record_of(Order(), "e-huge")
    durable.create(huge)
    # SQLite integers are 64-bit: this row cannot be bound. Only its saga fails.
    huge.cursor = 2**70

    async def main() -> list[object]:
        durable._commit.lanes[0].lock.acquire()
        try:
            tasks = [asyncio.create_task(durable.asave(r))
                     for r in (good[1], stale, huge, good[2])]
            while len(durable._commit.pending) < 4:
                await asyncio.sleep(0)
        finally:
            durable._commit.lanes[0].lock.release()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert outcomes[0] is None and outcomes[3] is None
    assert isinstance(outcomes[1], ConcurrentModification)
    assert isinstance(outcomes[2], OverflowError)
    assert [stored_version(durable.path, s) for s in ("e-1", "e-2", "e-huge")] == [1, 1, 0]
    assert huge.version == 0 and stale.version == 0


def test_when_the_database_is_locked_every_waiter_gets_the_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    with SQLiteStore(path, busy_timeout=0.05) as store:
        records = [record_of(Order(), f"l-{i}") for i in range(3)]
        for r in records:
            store.create(r)
        blocker = raw(path)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock

        async def main() -> list[object]:
            return await asyncio.gather(*(store.asave(r) for r in records),
                                        return_exceptions=True)

        outcomes = asyncio.run(main())
        assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes)
        assert all("locked" in str(o) for o in outcomes)
        assert all(r.version == 0 for r in records)
        blocker.execute("ROLLBACK")
        blocker.close()
        asyncio.run(main())  # the same records save fine once the lock is gone
        assert [stored_version(path, r.saga_id) for r in records] == [1, 1, 1]


def test_a_cancelled_waiter_still_has_its_write_and_the_saga_goes_on(
    durable: SQLiteStore,
) -> None:
    record = record_of(Order(), "cx-1")
    durable.create(record)

    async def main() -> None:
        durable._commit.lanes[0].lock.acquire()
        try:
            task = asyncio.create_task(durable.asave(record))
            while not durable._commit.pending:
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            durable._commit.lanes[0].lock.release()
        # The saga's next checkpoint follows on from the cancelled one.
        step_once(record, NOW + 1)
        await durable.asave(record)

    asyncio.run(main())
    assert stored_version(durable.path, "cx-1") == 2 and record.version == 2
    assert_same(durable.load("cx-1"), record)


# Python 3.12 warns about fork() in a process with threads; the child only checks and exits.
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_store_refuses_to_be_used_across_a_fork(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "fork.db")
    store.create(record_of(Order(), "f-1"))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the inherited store must refuse, not share the connection
        try:
            store.load("f-1")
            os.write(write, b"used")
        except StoreError as exc:
            os.write(write, b"refused" if "open a new SQLiteStore" in str(exc) else b"?")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 100) == b"refused"
    os.close(read)
    os.close(write)
    assert store.load("f-1") is not None  # the parent's store still works
    store.close()


def test_close_finishes_pending_writes_then_refuses_more(tmp_path: Path) -> None:
    path = tmp_path / "close.db"
    store = SQLiteStore(path)
    record = record_of(Order(), "cl-1")

    async def main() -> None:
        await store.acreate(record)
        await store.asave(record)

    asyncio.run(main())
    store.close()
    store.close()  # idempotent
    assert stored_version(path, "cl-1") == 1
    with pytest.raises(StoreError, match="closed"):
        store.save(record)
    with pytest.raises(StoreError, match="closed"):
        store.load("cl-1")


# -- end to end ------------------------------------------------------------------


@pytest.mark.parametrize("note", [None, "flaky", "decline"])
def test_a_run_reloads_whole_from_a_fresh_store_on_the_same_file(
    durable: SQLiteStore, drive, note: str | None
) -> None:
    orch = Orchestrator(store=durable, clock=VirtualClock())
    result = drive(orch, Order(note=note), "e2e")
    with SQLiteStore(durable.path) as fresh:
        loaded = fresh.load("e2e")
    assert loaded.status is result.status
    assert tuple(loaded.steps) == result.steps
    assert tuple(loaded.history) == result.history
    assert tuple(loaded.events) == result.events
    assert loaded.data == result.data
    assert (type(loaded.error), str(loaded.error)) == (type(result.error), str(result.error))
    assert loaded.finished_at == result.finished_at
    if note == "flaky":
        kinds = [type(e).__name__ for e in loaded.history]
        assert "StepRetrying" in kinds
        assert loaded.history[kinds.index("StepRetrying")].delay == 0.5


# -- what a checkpoint costs -------------------------------------------------------


def test_a_lone_async_saga_writes_at_once_and_many_share_commits(tmp_path: Path) -> None:
    """A saga alone writes its checkpoints at once, on the loop's thread. Without a sync
    to disk per commit (NORMAL), many at once are group-committed on the loop too; with
    one (FULL), by a writer thread, so that the loop does not wait on a sync."""
    store = SQLiteStore(tmp_path / "normal.db", synchronous="NORMAL")

    async def one(i: int) -> None:
        record = record_of(Order(), f"n-{i}")
        await store.acreate(record)
        for n in range(1, 5):
            step_once(record, NOW + n)
            await store.asave(record)
            assert stored_version(store.path, record.saga_id) == n  # committed on return
        assert record.status is SagaStatus.COMPLETED

    async def main() -> None:
        await one(0)
        assert store.commits == store.writes == 5  # alone: one commit per checkpoint
        commits = store.commits
        await asyncio.gather(*(one(i) for i in range(1, 51)))
        assert store.writes - 5 == 250 and store.commits - commits < 50

    asyncio.run(main())
    assert store._commit._threads == []  # no writer thread was needed
    store.close()
    with SQLiteStore(tmp_path / "full.db") as full:

        async def saved(i: int) -> None:
            record = record_of(Order(), f"f-{i}")
            await full.acreate(record)
            await full.asave(record)

        asyncio.run(saved(0))
        assert full._commit._threads == [] and full.commits == 2  # alone: on its loop

        async def many() -> None:
            await asyncio.gather(*(saved(i) for i in range(1, 11)))

        asyncio.run(many())
        assert len(full._commit._threads) == 1  # many: the loop does not wait on a sync
        assert full.writes == 22 and full.commits <= 6


class CountingCodec(Codec):
    """The default codec, counting the lifecycle events it encodes (as a row of the
    history table, or as an item of the row's tail)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0
        row, item = self.history_row, self.history_item

        def count(encode):  # type: ignore[no-untyped-def]
            def counted(event):  # type: ignore[no-untyped-def]
                self.rows += 1
                return encode(event)

            return counted

        self.history_row, self.history_item = count(row), count(item)  # type: ignore[method-assign]


def test_a_record_read_back_is_saved_by_encoding_only_what_changed(tmp_path: Path) -> None:
    """Recovery's first save of each saga: the store knows the row it just read, so the
    saga's events are not encoded again (nor its spilled ones written again)."""
    path = tmp_path / "known.db"
    with SQLiteStore(path) as first:
        record = record_of(Order(), "k-1")
        first.create(record)
        for n in range(40):  # past INLINE: some spilled
            record.history.append(
                events.StepRetrying("k-1", "store-order", NOW + n, "charge", n, "busy", delay=1.0)
            )
        first.save(record)
    codec = CountingCodec()
    with SQLiteStore(path, codec=codec) as again:
        loaded = again.load("k-1")
        loaded.history.append(events.StepCompleted("k-1", "store-order", NOW + 50, "charge", 41))
        codec.rows = 0
        again.save(loaded)
        assert codec.rows == 1  # the new event only
        copy = again.load("k-1")
        assert_same(copy, loaded)
        again.save(loaded)  # saved again from the same object: still known
        assert codec.rows == 1
        copy.version = loaded.version - 1  # a stale copy is not trusted: encoded whole
        with pytest.raises(ConcurrentModification):
            again.save(copy)
        assert codec.rows == 1 + len(copy.history)


@pytest.mark.filterwarnings(
    "ignore::RuntimeWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)
def test_a_loop_closed_before_its_drain_ran_holds_up_no_other_loop(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "loops.db", synchronous="NORMAL")
    stranded, other = record_of(Order(), "l-1"), record_of(Order(), "l-2")
    store.create(stranded)
    store.create(other)
    dead = asyncio.new_event_loop()
    task = dead.create_task(store.asave(stranded))  # queues its write, schedules a drain...
    dead.call_soon(dead.stop)
    dead.run_forever()  # ...which never runs: the loop stops, then closes
    dead.close()
    assert not task.done()

    async def save() -> None:
        await asyncio.wait_for(store.asave(other), 5)

    asyncio.run(save())  # another loop's write goes through, and takes the stranded one
    assert stored_version(store.path, "l-2") == 1 and stored_version(store.path, "l-1") == 1
    store.close()

"""The store contract: what every store (memory, SQLite, later PostgreSQL) must do alike."""

from __future__ import annotations

import asyncio
import decimal
import threading
import time
import uuid

import pytest
from store_sagas import ORDER_SPEC, Address, Item, Order, Other, assert_same, record_of

from sagaflow import Orchestrator, SagaNotFound, SagaStatus, StepError, StepStatus
from sagaflow.engine import Call, next_command, settle
from sagaflow.stores import MemoryStore, Store
from sagaflow.testing import VirtualClock

NOW = 1_700_000_000.0


def an_order(**fields: object) -> Order:
    base: dict[str, object] = {
        "order_id": uuid.uuid4(),
        "amount": decimal.Decimal("12.50"),
        "address": Address("Rue 1", "75001"),
        "items": [Item("sku-1", 2, decimal.Decimal("6.25"))],
    }
    base.update(fields)
    return Order(**base)


def advance(record, now: float, error: BaseException | None = None) -> Call | None:
    """One checkpoint as a driver makes it: decide, (save is the caller's), perform."""
    command = next_command(ORDER_SPEC, record, now)
    record.updated_at = now
    if isinstance(command, Call):
        emitted = [("did", command.index)] if error is None else None
        settle(ORDER_SPEC, record, command, now + 0.5, error, False, emitted)
    return command if isinstance(command, Call) else None


def test_create_inserts_once_then_reports_the_stored_saga(store: Store) -> None:
    first = record_of(an_order(), "o-1")
    assert store.create(first) is None
    again = record_of(an_order(note="other"), "o-1")
    existing = store.create(again)
    assert existing is not None
    assert_same(existing, first)
    assert existing.data.note is None  # the stored one, not the newcomer


def test_load_of_an_unknown_id_is_none(store: Store) -> None:
    assert store.load("nope") is None


def test_every_checkpoint_loads_back_whole(store: Store) -> None:
    record = record_of(an_order(), "o-2")
    assert store.create(record) is None
    assert_same(store.load("o-2"), record)
    t = NOW
    for _ in range(10):
        t += 1
        call = next_command(ORDER_SPEC, record, t)
        record.updated_at = t
        store.save(record)
        assert_same(store.load("o-2"), record)
        if call is None:
            break
        assert isinstance(call, Call)
        settle(ORDER_SPEC, record, call, t + 0.5, None, False, [("done", call.index)])
    assert record.status is SagaStatus.COMPLETED
    loaded = store.load("o-2")
    assert loaded.status is SagaStatus.COMPLETED
    assert loaded.events == [("done", 0), ("done", 1), ("done", 2)]
    assert [type(e).__name__ for e in loaded.history][-1] == "SagaCompleted"


def test_the_path_round_trips_however_long_it_grows(store: Store) -> None:
    """The run's path (every state change) loads back whole, in order: a short one in
    the saga's row, a long one (operator retries, past what a row keeps) in part from
    the append-only table."""
    record = record_of(an_order(), "p-1")
    store.create(record)
    t = NOW
    while not record.status.is_terminal:  # charge fails for good: compensated
        t += 1
        call = next_command(ORDER_SPEC, record, t)
        record.updated_at = t
        store.save(record)
        if isinstance(call, Call):
            forward = call.direction.value == "forward"
            error = ValueError("no") if call.index == 1 and forward else None
            settle(ORDER_SPEC, record, call, t, error, False, None)
    store.save(record)
    assert record.path[0] == ("not_started", "start", "reserve")
    assert_same(store.load("p-1"), record)
    retry = ("failed", "retry", "compensating_reserve")
    undo_failed = ("compensating_reserve", "undo_failed", "failed")
    for n in range(100):  # an operator retrying a failed undo, again and again
        record.path.append(undo_failed if n % 2 else retry)
        record.updated_at = t + n
        store.save(record)
        loaded = store.load("p-1")
        assert loaded.path == record.path
    assert len(record.path) > 3 * 32
    assert set(record.path) <= ORDER_SPEC.transitions


def test_a_failed_saga_keeps_its_error_and_compensation_state(store: Store) -> None:
    record = record_of(an_order(note="decline"), "o-3")
    store.create(record)
    t = NOW
    failures = {1: ValueError("card declined")}
    while not record.status.is_terminal:
        t += 1
        call = next_command(ORDER_SPEC, record, t)
        record.updated_at = t
        store.save(record)
        if call is None:
            break
        if isinstance(call, Call):
            error = failures.get(call.index) if call.direction.value == "forward" else None
            settle(ORDER_SPEC, record, call, t, error, False, None)
    store.save(record)
    loaded = store.load("o-3")
    assert_same(loaded, record)
    assert loaded.status is SagaStatus.COMPENSATED
    assert isinstance(loaded.error, StepError) and loaded.error.step == "charge"
    assert str(loaded.error) == "step 2 'charge' failed: ValueError: card declined"
    assert loaded.steps[1].status is StepStatus.FAILED


def test_each_save_bumps_the_version(store: Store) -> None:
    record = record_of(an_order(), "o-4")
    store.create(record)
    assert record.version == 0
    for n in range(1, 4):
        record.updated_at = NOW + n
        store.save(record)
        assert record.version == n
        assert store.load("o-4").version == n


def test_query_filters_by_status_and_name_newest_first(store: Store) -> None:
    for i in range(6):
        saga_obj = an_order() if i % 2 == 0 else Other(n=i)
        record = record_of(saga_obj, f"q-{i}", now=NOW + i)
        store.create(record)
        if i >= 4:
            record.status = SagaStatus.COMPLETED
            record.state = "completed"
            record.finished_at = NOW + 10 + i
        record.updated_at = NOW + 10 + i
        store.save(record)
    ids = lambda records: [r.saga_id for r in records]  # noqa: E731
    assert ids(store.query()) == ["q-5", "q-4", "q-3", "q-2", "q-1", "q-0"]
    assert ids(store.query(status=[SagaStatus.RUNNING])) == ["q-3", "q-2", "q-1", "q-0"]
    assert ids(store.query(name="store-other")) == ["q-5", "q-3", "q-1"]
    assert ids(store.query(status=[SagaStatus.COMPLETED], name="store-order")) == ["q-4"]
    assert ids(store.query(limit=2)) == ["q-5", "q-4"]
    assert store.query(status=[]) == []
    assert store.query(name="nothing") == []


def test_create_if_absent_under_threads(store: Store) -> None:
    """Many threads start the same saga id: exactly one creates it."""
    n = 16
    barrier = threading.Barrier(n)
    outcomes: list[object] = [None] * n

    def start(i: int) -> None:
        record = record_of(an_order(note=f"t{i}"), "same")
        barrier.wait()
        outcomes[i] = store.create(record)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = [i for i, o in enumerate(outcomes) if o is None]
    assert len(created) == 1
    winner = f"t{created[0]}"
    assert all(o.data.note == winner for o in outcomes if o is not None)
    assert store.load("same").data.note == winner


def test_saves_from_many_threads_all_land(store: Store) -> None:
    """Threads each drive their own saga; every checkpoint is kept."""

    def drive(i: int) -> None:
        record = record_of(an_order(), f"th-{i}")
        store.create(record)
        t = NOW
        while True:
            t += 1
            call = advance(record, t)
            store.save(record)
            if call is None and record.status.is_terminal:
                return

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = store.query(status=[SagaStatus.COMPLETED])
    assert sorted(r.saga_id for r in done) == [f"th-{i}" for i in range(8)]
    assert all(len(r.history) == 8 and len(r.events) == 3 for r in done)


def test_the_async_api_behaves_like_the_sync_one(store: Store) -> None:
    async def main() -> None:
        record = record_of(an_order(), "a-1")
        assert await store.acreate(record) is None
        existing = await store.acreate(record_of(an_order(), "a-1"))
        assert existing is not None and existing.saga_id == "a-1"
        t = NOW
        while True:
            t += 1
            call = advance(record, t)
            await store.asave(record)
            assert_same(await store.aload("a-1"), record)
            if call is None and record.status.is_terminal:
                break
        assert await store.aload("missing") is None

    asyncio.run(main())


def test_many_concurrent_async_sagas_all_land(store: Store) -> None:
    async def one(i: int) -> None:
        record = record_of(an_order(), f"c-{i}")
        assert await store.acreate(record) is None
        t = NOW
        while True:
            t += 1
            call = advance(record, t)
            await store.asave(record)
            if call is None and record.status.is_terminal:
                return

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(50)))

    asyncio.run(main())
    done = store.query(status=[SagaStatus.COMPLETED])
    assert len(done) == 50
    assert all(r.version == 4 and len(r.history) == 8 for r in done)


@pytest.mark.parametrize("note", [None, "flaky", "decline"])
def test_orchestrator_runs_on_the_store(store: Store, drive, note: str | None) -> None:
    clock = VirtualClock()
    orch = Orchestrator(store=store, clock=clock)
    result = drive(orch, an_order(note=note), "run-1")
    expected = SagaStatus.COMPENSATED if note == "decline" else SagaStatus.COMPLETED
    assert result.status is expected
    stored = orch.get("run-1")
    assert stored is not None
    assert stored.status is result.status
    assert stored.steps == result.steps
    assert stored.history == result.history
    assert stored.events == result.events
    assert stored.data == result.data
    assert (type(stored.error), str(stored.error)) == (type(result.error), str(result.error))
    # Starting the finished id again returns the stored result and runs nothing.
    again = drive(orch, an_order(note=note), "run-1")
    assert again.history == result.history
    assert [r.saga_id for r in orch.history()] == ["run-1"]


def test_a_quarantined_saga_is_set_aside_with_its_record_untouched(store: Store) -> None:
    record = record_of(an_order(), "qu-1")
    store.create(record)
    store.create(record_of(an_order(), "qu-2"))
    advance(record, NOW + 1)
    store.save(record)
    before = store.load("qu-1")
    t0 = time.time()
    store.quarantine("qu-1", "cannot be decoded: column 'cursor' holds 7")
    assert_same(store.load("qu-1"), before)  # the record is as it was
    [held] = store.quarantined()
    assert (held.saga_id, held.saga_name) == ("qu-1", "store-order")
    assert held.reason == "cannot be decoded: column 'cursor' holds 7"
    assert t0 - 1 <= held.at <= time.time() + 1
    assert store.load_raw("qu-1").quarantined == held.reason
    assert {s.saga_id: s.quarantined for s in store.scan()} == {"qu-1": held.reason, "qu-2": None}
    store.quarantine("qu-1", "still broken")  # a new reason replaces the old one
    assert [q.reason for q in store.quarantined()] == ["still broken"]
    assert store.unquarantine("qu-1") is True
    assert store.unquarantine("qu-1") is False
    assert store.quarantined() == [] and store.load_raw("qu-1").quarantined is None
    with pytest.raises(SagaNotFound):
        store.quarantine("nope", "why not")
    with pytest.raises(ValueError, match="needs a reason"):
        store.quarantine("qu-2", "  ")


def test_scan_pages_by_id_or_newest_first_up_to_a_limit(store: Store) -> None:
    for i in range(7):
        record = record_of(an_order(), f"sc-{i}", now=NOW)
        store.create(record)
        record.updated_at = NOW + (i * 3) % 7  # updated in another order than the ids
        store.save(record)
    by_id = [s.saga_id for s in store.scan()]
    assert by_id == [f"sc-{i}" for i in range(7)]
    newest = [s.saga_id for s in store.scan(newest_first=True)]
    assert newest == [f"sc-{i}" for i in (2, 4, 6, 1, 3, 5, 0)]
    assert [s.saga_id for s in store.scan(newest_first=True, limit=3)] == newest[:3]
    assert [s.saga_id for s in store.scan(limit=2)] == by_id[:2]
    assert list(store.scan(limit=0)) == []
    if not isinstance(store, MemoryStore):  # durable stores read in batches: in order too
        assert [s.saga_id for s in store.scan(newest_first=True, batch=2)] == newest
        assert [s.saga_id for s in store.scan(newest_first=True, limit=5, batch=2)] == newest[:5]

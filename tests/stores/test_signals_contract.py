"""The store contract of issue 11's waits: signals (add, next, list), the sagas due to wake
(``due``), sagas by business key (``by_key``), and the record's wait fields kept whole.

Every test runs against each store of :func:`signal_stores`: SQLite and PostgreSQL today.
A store that learns signals (the memory store) joins by adding its kind to
:data:`SIGNAL_STORES` and a branch to :func:`open_signal_store`: the tests only use the
store API of PLAN11 (and ``create``/``save``/``load``/``quarantine``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_cluster import cluster_url, drop_schema, fresh_schema
from store_sagas import ORDER_SPEC, Order, Other, assert_same, record_of

from sagaflow import SagaNotFound, SagaStatus
from sagaflow.engine import Call, next_command, settle
from sagaflow.errors import SignalRefused
from sagaflow.records import SagaRecord, Signal

NOW = 1_700_000_000.0

#: The stores the signal contract runs against (extend with "memory" once it has them).
SIGNAL_STORES = ["memory", "sqlite", "postgres"]


def open_signal_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """An empty store of ``kind``, and what to clean up after it."""
    if kind == "memory":
        from sagaflow.stores.memory import MemoryStore

        return MemoryStore(), None
    if kind == "sqlite":
        from sagaflow.stores.sqlite import SQLiteStore

        return SQLiteStore(tmp_path / "signals.db"), None
    if kind == "postgres":
        from sagaflow.stores.postgres import PostgresStore

        url = cluster_url(request.config)
        schema = fresh_schema()
        return PostgresStore(url, schema=schema), lambda: drop_schema(url, schema)
    raise ValueError(kind)


@pytest.fixture(params=SIGNAL_STORES)
def signal_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each store that keeps signals, in turn, empty."""
    store, cleanup = open_signal_store(request.param, request, tmp_path)
    yield store
    close = getattr(store, "close", None)
    if close is not None:
        close()
    if cleanup is not None:
        cleanup()


# --- building records by hand -------------------------------------------------------------


def running(store: Any, saga_id: str, *, at: float = NOW, key: str | None = None,
            saga: object | None = None) -> SagaRecord:
    """A saga created and started (RUNNING at its first step), as a driver leaves it."""
    record = record_of(saga if saga is not None else Order(), saga_id, at)
    record.business_key = key
    assert store.create(record) is None
    call = next_command(record_spec(record), record, at + 1)
    assert isinstance(call, Call)
    record.updated_at = at + 1
    store.save(record)
    assert record.status is SagaStatus.RUNNING
    return record


def record_spec(record: SagaRecord) -> Any:
    from sagaflow import spec_of

    return spec_of(record.data)


def parked(store: Any, saga_id: str, waiting: str, *, wake_at: float | None = None,
           marks: dict[str, int] | None = None, key: str | None = None) -> SagaRecord:
    """A running saga parked at a wait: for signal ``waiting`` (``""``: a timer), until
    ``wake_at``, having been delivered the signals up to ``marks``; saved."""
    record = running(store, saga_id, key=key)
    record.waiting = waiting
    record.wake_at = wake_at
    record.signal_marks = dict(marks or {})
    record.updated_at = NOW + 2
    store.save(record)
    return record


def finished(store: Any, saga_id: str, status: SagaStatus = SagaStatus.COMPLETED,
             key: str | None = None) -> SagaRecord:
    """A saga run to COMPLETED (or, by hand, set COMPENSATED or FAILED); saved."""
    record = running(store, saga_id, key=key)
    t = NOW + 2
    while record.status is SagaStatus.RUNNING:
        call = next_command(ORDER_SPEC, record, t)
        if isinstance(call, Call):
            settle(ORDER_SPEC, record, call, t, None, False, [])
        t += 1
    if status is not SagaStatus.COMPLETED:
        record.status = status
    record.updated_at = t
    store.save(record)
    assert record.status is status
    return record


# --- add_signal, next_signal, signals -----------------------------------------------------


def test_a_signal_is_stored_and_returned_with_its_arrival_number(signal_stores: Any) -> None:
    store = signal_stores
    running(store, "s-1")
    added = store.add_signal("s-1", "approval", "sig-a", '{"ok": true}', NOW + 5)
    assert isinstance(added, Signal)
    assert (added.saga_id, added.name, added.signal_id, added.payload, added.at) == (
        "s-1", "approval", "sig-a", '{"ok": true}', NOW + 5
    )
    assert isinstance(added.seq, int)
    assert store.signals("s-1") == [added]
    assert store.next_signal("s-1", "approval", 0) == added


def test_signals_are_numbered_in_arrival_order_and_listed_by_it(signal_stores: Any) -> None:
    store = signal_stores
    running(store, "s-1")
    running(store, "s-2")
    first = store.add_signal("s-1", "approval", "a", "1", NOW + 1)
    other = store.add_signal("s-2", "approval", "a", "2", NOW + 2)  # same id, other saga
    second = store.add_signal("s-1", "cancel", "b", "3", NOW + 3)
    third = store.add_signal("s-1", "approval", "c", "4", NOW + 4)
    assert other is not None and other.saga_id == "s-2"
    assert first.seq < second.seq < third.seq
    assert store.signals("s-1") == [first, second, third]
    assert store.signals("s-2") == [other]
    assert store.signals("nobody") == []


def test_next_signal_is_the_first_of_that_name_after_the_mark(signal_stores: Any) -> None:
    store = signal_stores
    running(store, "s-1")
    a1 = store.add_signal("s-1", "approval", "a1", "1", NOW)
    c1 = store.add_signal("s-1", "cancel", "c1", "2", NOW)
    a2 = store.add_signal("s-1", "approval", "a2", "3", NOW)
    assert store.next_signal("s-1", "approval", 0) == a1
    assert store.next_signal("s-1", "approval", a1.seq) == a2
    assert store.next_signal("s-1", "approval", a2.seq) is None
    assert store.next_signal("s-1", "cancel", 0) == c1
    assert store.next_signal("s-1", "cancel", c1.seq) is None
    assert store.next_signal("s-1", "nothing", 0) is None
    assert store.next_signal("nobody", "approval", 0) is None


def test_a_second_signal_with_the_same_id_changes_nothing(signal_stores: Any) -> None:
    store = signal_stores
    running(store, "s-1")
    first = store.add_signal("s-1", "approval", "once", '"first"', NOW)
    assert store.add_signal("s-1", "approval", "once", '"second"', NOW + 1) is None
    assert store.add_signal("s-1", "cancel", "once", '"third"', NOW + 2) is None
    assert store.signals("s-1") == [first]
    assert store.next_signal("s-1", "cancel", 0) is None


def test_a_signal_to_no_saga_is_not_found_and_stores_nothing(signal_stores: Any) -> None:
    store = signal_stores
    with pytest.raises(SagaNotFound) as caught:
        store.add_signal("ghost", "approval", "x", "{}", NOW)
    assert caught.value.saga_id == "ghost"
    running(store, "ghost")
    assert store.signals("ghost") == []
    assert store.add_signal("ghost", "approval", "x", "{}", NOW) is not None  # now it can


@pytest.mark.parametrize(
    "status", [SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED]
)
def test_a_finished_saga_refuses_signals_saying_its_status(
    signal_stores: Any, status: SagaStatus
) -> None:
    store = signal_stores
    finished(store, "done", status)
    with pytest.raises(SignalRefused) as caught:
        store.add_signal("done", "approval", "late", "{}", NOW)
    error = caught.value
    assert (error.saga_id, error.signal) == ("done", "approval")
    assert error.reason == f"it is {status.value}: a finished saga takes no signals"
    assert store.signals("done") == []


def test_a_finished_saga_ignores_a_signal_it_has_already(signal_stores: Any) -> None:
    """Sent again after it finished the saga (its sender died before signal() returned),
    a signal is a duplicate, ignored: refusing it would tell the sender it was never
    taken. Any other signal to the finished saga is refused."""
    store = signal_stores
    record = running(store, "s-1")
    store.add_signal("s-1", "approval", "a", "{}", NOW)
    record.status = SagaStatus.COMPLETED
    store.save(record)
    assert store.add_signal("s-1", "approval", "a", "{}", NOW) is None
    with pytest.raises(SignalRefused):
        store.add_signal("s-1", "approval", "b", "{}", NOW)
    assert len(store.signals("s-1")) == 1


def test_a_not_started_or_compensating_saga_takes_signals(signal_stores: Any) -> None:
    store = signal_stores
    store.create(record_of(Order(), "new"))
    assert store.add_signal("new", "approval", "a", "{}", NOW) is not None
    record = running(store, "undoing")
    record.status = SagaStatus.COMPENSATING
    store.save(record)
    assert store.add_signal("undoing", "approval", "a", "{}", NOW) is not None


def test_concurrent_signals_with_one_id_store_one(signal_stores: Any) -> None:
    store = signal_stores
    running(store, "s-1")
    results: list[Signal | None] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def send(k: int) -> None:
        barrier.wait()
        try:
            results.append(store.add_signal("s-1", "approval", "same", f"{k}", NOW + k))
            results.append(store.add_signal("s-1", "approval", f"own-{k}", f"{k}", NOW + k))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stored = store.signals("s-1")
    assert len([r for r in results if r is not None]) == len(stored) == 7
    assert [s.signal_id for s in stored].count("same") == 1
    seqs = [s.seq for s in stored]
    assert seqs == sorted(seqs) and len(set(seqs)) == 7


def test_the_async_twins_answer_like_the_sync_methods(signal_stores: Any) -> None:
    store = signal_stores
    running(store, "s-1")

    async def main() -> None:
        added = await store.aadd_signal("s-1", "approval", "a", '"yes"', NOW)
        assert added is not None and added.payload == '"yes"'
        assert await store.aadd_signal("s-1", "approval", "a", '"yes"', NOW) is None
        assert await store.anext_signal("s-1", "approval", 0) == added
        assert await store.anext_signal("s-1", "approval", added.seq) is None
        with pytest.raises(SagaNotFound):
            await store.aadd_signal("ghost", "approval", "a", "{}", NOW)

    asyncio.run(main())


# --- the record's wait fields -------------------------------------------------------------


def test_the_wait_fields_round_trip_through_every_read(signal_stores: Any) -> None:
    store = signal_stores
    record = parked(store, "p-1", "approval", wake_at=NOW + 60,
                    marks={"approval": 3, "cancel": 1}, key="order-42")
    for loaded in (store.load("p-1"), store.decode(store.load_raw("p-1")),
                   store.decode(next(iter(store.scan())))):
        assert loaded.waiting == "approval" and loaded.wake_at == NOW + 60
        assert loaded.signal_marks == {"approval": 3, "cancel": 1}
        assert loaded.business_key == "order-42"
        assert_same(loaded, record)
    # Delivered, and on: a later checkpoint of the loaded copy moves them.
    loaded = store.load("p-1")
    loaded.waiting, loaded.wake_at = None, None
    loaded.signal_marks["approval"] = 5
    store.save(loaded)
    again = store.load("p-1")
    assert (again.waiting, again.signal_marks) == (None, {"approval": 5, "cancel": 1})
    assert again.business_key == "order-42"
    # A timer wait: "" and a wake time.
    loaded.waiting, loaded.wake_at = "", NOW + 90
    store.save(loaded)
    assert (store.load("p-1").waiting, store.load("p-1").wake_at) == ("", NOW + 90)


def test_a_saga_that_never_waits_has_empty_wait_fields(signal_stores: Any) -> None:
    store = signal_stores
    record = finished(store, "plain")
    loaded = store.load("plain")
    assert (loaded.waiting, loaded.signal_marks, loaded.business_key) == (None, {}, None)
    assert_same(loaded, record)


# --- due ------------------------------------------------------------------------------------


def test_a_parked_saga_is_due_once_its_wake_time_has_come(signal_stores: Any) -> None:
    store = signal_stores
    parked(store, "past", "approval", wake_at=NOW - 10)
    parked(store, "timer", "", wake_at=NOW)
    parked(store, "future", "approval", wake_at=NOW + 10)
    assert store.due(NOW) == ["past", "timer"]
    assert store.due(NOW + 10) == ["past", "timer", "future"]
    assert store.due(NOW - 100) == []


def test_a_parked_saga_is_due_when_the_signal_it_waits_for_arrives(signal_stores: Any) -> None:
    store = signal_stores
    parked(store, "p-1", "approval", wake_at=NOW + 3600)
    parked(store, "p-2", "approval")  # no timeout: only a signal wakes it
    assert store.due(NOW) == []
    store.add_signal("p-1", "cancel", "c", "{}", NOW)  # not the one it waits for
    assert store.due(NOW) == []
    store.add_signal("p-2", "approval", "a", "{}", NOW)
    assert store.due(NOW) == ["p-2"]
    store.add_signal("p-1", "approval", "a", "{}", NOW)
    # By wake time: one that has none (only a signal wakes it) is due now.
    assert store.due(NOW) == ["p-2", "p-1"]
    assert store.due(NOW + 7200) == ["p-1", "p-2"]


def test_a_signal_already_delivered_does_not_make_a_saga_due(signal_stores: Any) -> None:
    store = signal_stores
    record = running(store, "p-1")
    first = store.add_signal("p-1", "approval", "a1", "{}", NOW)
    # It took that one (the mark moved past it) and parked again for the next.
    record.waiting = "approval"
    record.signal_marks = {"approval": first.seq}
    store.save(record)
    assert store.due(NOW) == []
    second = store.add_signal("p-1", "approval", "a2", "{}", NOW)
    assert store.due(NOW) == ["p-1"]
    # Delivered too: parked at a mark at or past it, it is not due.
    record.signal_marks = {"approval": second.seq}
    store.save(record)
    assert store.due(NOW) == []


def test_a_signal_that_arrived_before_the_saga_parked_makes_it_due(signal_stores: Any) -> None:
    """The race a parking saga and a signal may run: the signal is stored first, the
    saga (which did not see it) parks after; ``due`` finds it at once."""
    store = signal_stores
    record = running(store, "p-1")
    store.add_signal("p-1", "approval", "early", "{}", NOW)
    record.waiting, record.wake_at = "approval", NOW + 3600
    store.save(record)
    assert store.due(NOW) == ["p-1"]


def test_a_signal_stored_while_the_row_says_another_wait_makes_the_parked_saga_due(
    signal_stores: Any,
) -> None:
    """The race again, as a resumed saga runs it: its row still says the wait it left
    (a driver took the saga on from there) when the signal for its next wait is stored;
    then it parks for that one. ``due`` finds it."""
    store = signal_stores
    first = parked(store, "p-1", "approval", wake_at=NOW + 3600)
    taken = store.add_signal("p-1", "approval", "a", "{}", NOW)
    assert store.due(NOW) == ["p-1"]
    # The driver delivers "approval", looks for "shipment" (none), and, before its park
    # is saved, "shipment" is stored.
    store.add_signal("p-1", "shipment", "s", "{}", NOW)
    first.waiting, first.wake_at = "shipment", None
    first.signal_marks = {"approval": taken.seq}
    store.save(first)
    assert store.due(NOW) == ["p-1"]


def test_a_signal_for_another_wait_leaves_a_parked_saga_not_due(signal_stores: Any) -> None:
    store = signal_stores
    record = running(store, "p-1")
    store.add_signal("p-1", "cancel", "c", "{}", NOW)
    record.waiting, record.wake_at = "approval", NOW + 3600
    store.save(record)
    store.add_signal("p-1", "other", "o", "{}", NOW)
    assert store.due(NOW) == []
    assert store.due(NOW + 3600) == ["p-1"]
    # Woken by its timer, it moves on (not parked): due no more, nor when it parks again
    # for what it has had already.
    record.waiting, record.wake_at = None, None
    store.save(record)
    assert store.due(NOW + 3600) == []
    record.waiting = "approval"
    store.save(record)
    assert store.due(NOW) == []


def test_a_due_saga_that_takes_its_signal_and_parks_again_is_not_due(
    signal_stores: Any,
) -> None:
    store = signal_stores
    record = parked(store, "p-1", "approval")
    signal = store.add_signal("p-1", "approval", "a", "{}", NOW)
    assert store.due(NOW) == ["p-1"]
    record.signal_marks = {"approval": signal.seq}  # delivered; it waits for the next
    store.save(record)
    assert store.due(NOW) == []
    store.add_signal("p-1", "approval", "b", "{}", NOW)
    assert store.due(NOW) == ["p-1"]


def test_due_takes_the_limit_from_the_timers_and_the_signalled_together(
    signal_stores: Any,
) -> None:
    store = signal_stores
    for k in range(4):
        parked(store, f"t-{k}", "approval", wake_at=NOW - 10 + k)
        parked(store, f"s-{k}", "approval", wake_at=NOW + 100 + k)
        store.add_signal(f"s-{k}", "approval", "a", "{}", NOW)
    parked(store, "s-none", "approval")
    store.add_signal("s-none", "approval", "a", "{}", NOW)
    assert store.due(NOW, 3) == ["t-0", "t-1", "t-2"]
    assert store.due(NOW, 6) == ["t-0", "t-1", "t-2", "t-3", "s-none", "s-0"]
    assert store.due(NOW + 101, 7) == ["t-0", "t-1", "t-2", "t-3", "s-0", "s-1", "s-none"]


def test_a_saga_not_parked_is_never_due(signal_stores: Any) -> None:
    store = signal_stores
    record = running(store, "busy")  # running a step, or sleeping before a retry
    record.wake_at = NOW - 100
    store.save(record)
    store.add_signal("busy", "approval", "a", "{}", NOW)
    assert store.due(NOW) == []


def test_a_quarantined_or_finished_saga_is_never_due(signal_stores: Any) -> None:
    store = signal_stores
    parked(store, "set-aside", "approval", wake_at=NOW - 10)
    store.add_signal("set-aside", "approval", "a", "{}", NOW)
    store.quarantine("set-aside", "an operator looks into it")
    # A finished saga whose row still says it waits (a crash between decisions, a hand
    # edit): not RUNNING, not due.
    gone = parked(store, "gone", "approval", wake_at=NOW - 10)
    store.add_signal("gone", "approval", "a", "{}", NOW)
    gone.status = SagaStatus.COMPENSATED
    store.save(gone)
    assert store.due(NOW) == []
    store.unquarantine("set-aside")
    assert store.due(NOW) == ["set-aside"]


def test_due_takes_at_most_limit_earliest_first(signal_stores: Any) -> None:
    store = signal_stores
    wakes = [7, 3, 9, 1, 5, 8, 2]
    for k, w in enumerate(wakes):
        parked(store, f"p-{k}", "approval", wake_at=NOW + w)
    parked(store, "by-signal", "approval")
    store.add_signal("by-signal", "approval", "a", "{}", NOW)
    by_wake = [f"p-{k}" for k in sorted(range(len(wakes)), key=lambda k: wakes[k])]
    assert store.due(NOW + 100) == [*by_wake, "by-signal"]
    assert store.due(NOW + 100, limit=3) == by_wake[:3]
    assert store.due(NOW + 6, limit=100) == [*by_wake[:4], "by-signal"]
    assert store.due(NOW + 100, limit=1) == ["p-3"]


def test_due_orders_equal_wake_times_by_saga_id(signal_stores: Any) -> None:
    store = signal_stores
    for sid in ("c", "a", "b"):
        parked(store, sid, "", wake_at=NOW)
    assert store.due(NOW) == ["a", "b", "c"]


# --- by_key ---------------------------------------------------------------------------------


def test_by_key_finds_the_unfinished_sagas_of_a_key_newest_first(signal_stores: Any) -> None:
    store = signal_stores
    running(store, "old", at=NOW, key="order-1")
    running(store, "new", at=NOW + 10, key="order-1")
    running(store, "other-key", at=NOW + 20, key="order-2")
    running(store, "no-key", at=NOW + 30)
    finished(store, "done", key="order-1")
    running(store, "other-saga", at=NOW + 5, key="order-1", saga=Other())
    assert store.by_key("order-1") == ["new", "other-saga", "old"]
    assert store.by_key("order-1", "store-order") == ["new", "old"]
    assert store.by_key("order-1", "store-other") == ["other-saga"]
    assert store.by_key("order-1", "nothing") == []
    assert store.by_key("order-2") == ["other-key"]
    assert store.by_key("order-3") == []

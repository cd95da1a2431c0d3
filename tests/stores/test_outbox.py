"""The outbox, on every store: a saga's domain events are written by the checkpoint that
records them, relayed in order with stable ids, marked once published, retried when the
publisher fails; a failed attempt's events never get there; a saga that emits nothing
costs the checkpoint nothing more."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from decimal import Decimal
from pathlib import Path

import attrs
from store_sagas import Charged, Order, record_of

from sagaflow import Orchestrator, Retry, SagaStatus, saga, step
from sagaflow.messages import Message
from sagaflow.outbox import Handlers, Relay
from sagaflow.stores import OutboxStore, Store
from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.testing import VirtualClock


@attrs.frozen
class Shipped:
    order: str
    parcel: int


FLAKY: dict[str, int] = {}


@saga(name="outbox-emitter")
class Emitter:
    order: str = "o-1"
    events: int = 3
    fail_first: bool = False

    @step
    def reserve(self, ctx):
        ctx.emit(("reserved", self.order))

    @reserve.compensate
    def release(self, ctx):
        ctx.emit(("released", self.order))

    @step(retry=Retry(attempts=3, backoff=0.0, jitter=0.0))
    def ship(self, ctx):
        for k in range(self.events):
            ctx.emit(Shipped(self.order, k))
        if self.fail_first and ctx.attempt < 2:
            ctx.emit(Shipped(self.order, -1))  # of an attempt that fails: never published
            raise ConnectionError("carrier busy")

    @ship.compensate
    def recall(self, ctx):
        pass


@saga(name="outbox-silent")
class Silent:
    n: int = 0

    @step
    def one(self, ctx):
        self.n += 1

    @one.compensate
    def undo_one(self, ctx):
        self.n -= 1

    @step
    def two(self, ctx):
        self.n += 1

    @two.compensate
    def undo_two(self, ctx):
        self.n -= 1


class Collect:
    """A publisher that keeps what it is given, or fails while ``fail`` is set."""

    def __init__(self) -> None:
        self.got: list[Message] = []
        self.fail: Exception | None = None

    def publish(self, messages):
        if self.fail is not None:
            raise self.fail
        self.got.extend(messages)


def run(store: Store, saga_obj: object, saga_id: str):
    orch = Orchestrator(store=store, clock=VirtualClock())
    return orch.run(saga_obj, saga_id=saga_id)


def test_every_store_has_an_outbox(store: Store) -> None:
    assert isinstance(store, OutboxStore)
    assert store.outbox() == []
    assert store.outbox_stats().pending == 0


def test_a_sagas_events_are_in_the_outbox_in_order_with_stable_ids(store: Store) -> None:
    result = run(store, Emitter("o-1"), "s-1")
    assert result.status is SagaStatus.COMPLETED
    messages = store.outbox()
    assert [m.id for m in messages] == [f"s-1:{i}" for i in range(4)]
    assert [m.seq for m in messages] == [0, 1, 2, 3]
    assert {(m.saga_id, m.saga_name) for m in messages} == {("s-1", "outbox-emitter")}
    assert messages[0].type == "tuple"
    assert messages[1].type.endswith("Shipped") and len({m.type for m in messages[1:]}) == 1
    events = [store_codec(store).load_event(m.body) for m in messages]
    assert events == list(result.events)
    assert events[1:] == [Shipped("o-1", k) for k in range(3)]
    assert all(m.at == messages[0].at or m.at > 0 for m in messages)


def store_codec(store: Store):
    return store.codec  # type: ignore[attr-defined]


def test_the_events_of_a_failed_attempt_never_reach_the_outbox(store: Store) -> None:
    result = run(store, Emitter("o-2", events=2, fail_first=True), "s-2")
    assert result.status is SagaStatus.COMPLETED
    events = [store_codec(store).load_event(m.body) for m in store.outbox()]
    assert events == [("reserved", "o-2"), Shipped("o-2", 0), Shipped("o-2", 1)]
    assert Shipped("o-2", -1) not in events


def test_relayed_messages_leave_the_outbox_failed_ones_stay_with_their_error(
    store: Store,
) -> None:
    run(store, Emitter("o-3", events=1), "s-3")
    first, second = store.outbox()
    store.outbox_failed([first.id, second.id], "broker down")
    store.outbox_failed([first.id], "broker still down")
    stats = store.outbox_stats()
    assert stats.pending == 2 and stats.oldest == first.at
    assert stats.failing == ((first.id, 2, "broker still down"), (second.id, 1, "broker down"))
    store.relayed([first.id])
    assert store.outbox() == [second]
    store.relayed([second.id])
    assert store.outbox() == [] and store.outbox_stats() == type(stats)(0, None, ())


def test_the_relay_publishes_in_order_and_retries_what_failed(store: Store) -> None:
    for k in range(3):
        run(store, Emitter(f"o-{k}", events=2), f"r-{k}")
    publisher = Collect()
    relay = Relay(store, publisher, batch=4)
    publisher.fail = ConnectionError("broker down")
    assert relay.relay_once() == 0
    assert relay.failures == 1 and isinstance(relay.last_error, ConnectionError)
    assert relay.delay() > 0
    assert [f[0] for f in store.outbox_stats().failing] == [m.id for m in store.outbox(4)]
    publisher.fail = None
    assert relay.drain() == 9
    assert relay.failures == 0 and relay.published == 9
    assert store.outbox() == []
    ids = [m.id for m in publisher.got]
    assert ids == [f"r-{k}:{i}" for k in range(3) for i in range(3)]
    assert relay.drain() == 0


def test_handlers_get_the_decoded_events_and_a_failing_one_has_them_again(
    store: Store,
) -> None:
    run(store, Emitter("o-h", events=2), "h-1")
    handlers = Handlers()
    seen: list[tuple[object, str]] = []
    plain: list[object] = []
    broken = [True]

    @handlers.on(Shipped)
    def shipped(event, message):
        if broken[0] and event.parcel == 1:
            raise RuntimeError("the handler failed")
        seen.append((event, message.id))

    handlers.on("tuple", lambda event, message: plain.append(event))
    relay = Relay(store, handlers)
    assert relay.relay_once() == 0 and "the handler failed" in str(relay.last_error)
    assert len(store.outbox()) == 3  # nothing of the batch is taken as delivered
    broken[0] = False
    assert relay.relay_once() == 3
    # The first message again, under the same id: a handler deduplicates by it.
    assert seen == [(Shipped("o-h", 0), "h-1:1"), (Shipped("o-h", 0), "h-1:1"),
                    (Shipped("o-h", 1), "h-1:2")]
    assert plain == [("reserved", "o-h"), ("reserved", "o-h")]


def test_a_saga_resumed_from_its_record_adds_only_its_new_events(store: Store) -> None:
    """A record loaded back (another process resuming it) saves only the events it adds;
    a save of a copy whose store did not know it writes none twice."""
    run(store, Emitter("o-r", events=1), "re-1")
    before = [m.id for m in store.outbox()]
    record = store.load("re-1")
    assert record is not None
    record.events.append(Shipped("o-r", 7))
    store.save(record)
    after = store.outbox()
    assert [m.id for m in after] == [*before, "re-1:2"]
    assert store_codec(store).load_event(after[-1].body) == Shipped("o-r", 7)


def test_a_saga_that_emits_nothing_writes_no_outbox_row(store: Store) -> None:
    run(store, Silent(), "quiet")
    assert store.outbox() == [] and store.outbox_stats().pending == 0


def test_a_checkpoint_without_events_costs_no_extra_statement(tmp_path: Path) -> None:
    """SQLite: each checkpoint of a saga that emits nothing is one statement, as before
    the outbox; the outbox's INSERT runs only for a checkpoint with new events."""
    store = SQLiteStore(tmp_path / "s.db")
    statements: list[str] = []
    store._commit.lanes[0].conn.set_trace_callback(statements.append)
    try:
        run(store, Silent(), "quiet")
        assert statements and not any("sagaflow_outbox" in s for s in statements)
        assert not any(s.startswith("BEGIN") for s in statements)
        statements.clear()
        run(store, Emitter("o-t", events=1), "loud")
        assert sum("INSERT INTO sagaflow_outbox" in s for s in statements) == 2
    finally:
        store.close()


def test_a_relay_wakes_on_a_commit_of_its_store_and_stops(store: Store) -> None:
    publisher = Collect()
    relay = Relay(store, publisher, poll=3600)  # no polling: only a wake-up finds them
    relay.start()
    try:
        run(store, Emitter("o-w", events=1), "w-1")
        wait_for(lambda: len(publisher.got) == 2)
    finally:
        relay.stop()
    assert [m.id for m in publisher.got] == ["w-1:0", "w-1:1"]


def test_arun_relays_on_an_event_loop(store: Store) -> None:
    publisher = Collect()
    relay = Relay(store, publisher, poll=3600)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(relay.arun(stop))
        orch = Orchestrator(store=store, clock=VirtualClock())
        await orch.arun(Emitter("o-a", events=2), saga_id="a-1")
        for _ in range(2000):
            if len(publisher.got) == 3:
                break
            await asyncio.sleep(0.005)
        stop.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(main())
    assert [m.id for m in publisher.got] == ["a-1:0", "a-1:1", "a-1:2"]


def test_many_sagas_on_threads_each_in_order(store: Store) -> None:
    threads = [
        threading.Thread(target=run, args=(store, Emitter(f"o-{k}", events=3), f"t-{k}"))
        for k in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    publisher = Collect()
    assert Relay(store, publisher, batch=5).drain() == 24
    by_saga: dict[str, list[int]] = {}
    for m in publisher.got:
        by_saga.setdefault(m.saga_id, []).append(m.seq)
    assert by_saga == {f"t-{k}": [0, 1, 2, 3] for k in range(6)}


def test_a_version_4_database_is_migrated_to_the_outbox(tmp_path: Path) -> None:
    """A database as schema 4 left it (what 5 adds taken away): opened, it gets the
    outbox; a running saga's earlier events are not published, its new ones are."""
    path = tmp_path / "v4.db"
    with SQLiteStore(path) as store:
        rec = record_of(Order(order_id=uuid.UUID(int=4), amount=Decimal("1")), "v4-run")
        rec.events.append(("old", 1))
        store.create(rec)
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE sagaflow_incident_claims")  # schema 7
    conn.execute("DROP INDEX sagaflow_sagas_open_failed")
    conn.execute("DROP TABLE sagaflow_outbox")
    for index in ("by_start", "by_status_start", "by_name_start", "by_error"):  # schema 6
        conn.execute(f"DROP INDEX sagaflow_sagas_{index}")
    for trigger in ("insert", "update", "delete"):
        conn.execute(f"DROP TRIGGER sagaflow_counts_{trigger}")
    conn.execute("DROP TABLE sagaflow_counts")
    conn.execute("UPDATE sagaflow_meta SET value = '4' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with SQLiteStore(path, readonly=True) as reader:
        assert reader.schema_version == 4 and reader.outbox() == []
        assert reader.outbox_stats().pending == 0
    with SQLiteStore(path) as store:
        assert store.schema_version == 7
        assert store.outbox() == []
        running = store.load("v4-run")
        assert running is not None
        running.events.append(Charged(uuid.UUID(int=4), Decimal("1")))
        store.save(running)
        assert [m.id for m in store.outbox()] == ["v4-run:1"]


def wait_for(condition, rounds: int = 3000) -> None:
    event = threading.Event()
    for _ in range(rounds):
        if condition():
            return
        event.wait(0.01)
    raise AssertionError("never happened")


def test_lifecycle_events_can_be_published_the_same_way(store: Store) -> None:
    from sagaflow import events as ev

    assert isinstance(store, OutboxStore)
    store.publish_lifecycle(ev.SagaStarted, ev.SagaCompleted, ev.SagaCompensated)
    result = run(store, Emitter("o-l", events=1), "l-1")
    assert result.status is SagaStatus.COMPLETED
    messages = store.outbox()
    done = next(i for i, e in enumerate(result.history) if isinstance(e, ev.SagaCompleted))
    # in the order the checkpoints recorded them: the start, the step's events, the end
    assert [m.id for m in messages] == ["l-1:h0", "l-1:0", "l-1:1", f"l-1:h{done}"]
    assert messages[0].type == "sagaflow.events:SagaStarted"
    assert messages[-1].type == "sagaflow.events:SagaCompleted"
    handlers = Handlers()
    ended: list[object] = []
    handlers.on(ev.SagaCompleted, lambda event, message: ended.append(event))
    handlers.on("tuple", lambda event, message: None)
    handlers.on(Shipped, lambda event, message: None)
    handlers.on(ev.SagaStarted, lambda event, message: None)
    assert Relay(store, handlers).drain() == 4
    assert ended == [result.history[done]]
    # a class that is not a lifecycle event is refused, naming the fix
    try:
        store.publish_lifecycle(Shipped)
    except TypeError as exc:
        assert "not a lifecycle event class" in str(exc)
    else:
        raise AssertionError("publish_lifecycle(Shipped) was accepted")

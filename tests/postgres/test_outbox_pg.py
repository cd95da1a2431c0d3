"""The PostgreSQL outbox: relays that run at once never publish one message twice nor a
saga's messages out of order (FOR UPDATE SKIP LOCKED); a commit in another process wakes
a listening relay (NOTIFY); a version 4 schema is migrated."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "stores"))

from store_sagas import record_of
from test_outbox import Collect, Emitter, Shipped, run, wait_for
from test_postgres_store import back_to_version_4

from sagaflow.outbox import Relay
from sagaflow.stores.postgres import PostgresStore


def execute(url: str, schema: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(statement)


class Holding(Collect):
    """A publisher that holds its first batch until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.release = threading.Event()

    def publish(self, messages):
        self.holding.set()
        assert self.release.wait(60)
        super().publish(messages)


def test_two_relays_never_publish_a_message_twice_nor_a_saga_out_of_order(
    pg_store: PostgresStore, pg_url: str, schema: str
) -> None:
    run(pg_store, Emitter("x", events=3), "x")  # x:0..x:3
    run(pg_store, Emitter("y", events=3), "y")  # y:0..y:3
    with PostgresStore(pg_url, schema=schema) as other:
        slow, fast = Holding(), Collect()
        first = threading.Thread(target=Relay(pg_store, slow, batch=2).relay_once)
        first.start()
        try:
            assert slow.holding.wait(60)
            # x:0 and x:1 are held by the first relay: the second skips them, and x's
            # later messages too (they come after them), and relays y's.
            assert Relay(other, fast).drain() == 4
            assert [m.id for m in fast.got] == ["y:0", "y:1", "y:2", "y:3"]
        finally:
            slow.release.set()
            first.join()
        assert [m.id for m in slow.got] == ["x:0", "x:1"]
        assert Relay(other, fast).drain() == 2
        assert [m.id for m in fast.got][4:] == ["x:2", "x:3"]
    assert pg_store.outbox() == []


def test_a_commit_in_another_process_wakes_a_listening_relay(
    pg_store: PostgresStore, pg_url: str, schema: str
) -> None:
    publisher = Collect()
    relay = Relay(pg_store, publisher, poll=3600)  # no polling: only NOTIFY finds them
    relay.start()
    try:
        wait_for(lambda: relay.published == 0 and _listening(relay))
        with PostgresStore(pg_url, schema=schema) as writer:  # not the relay's store
            run(writer, Emitter("n", events=1), "n-1")
        wait_for(lambda: len(publisher.got) == 2)
    finally:
        relay.stop()
    assert [m.id for m in publisher.got] == ["n-1:0", "n-1:1"]


def _listening(relay: Relay) -> bool:
    # The listener starts with the loop; give it a moment to LISTEN: it wakes the relay
    # once it does, which is all this needs (a message saved before would be found then).
    return relay._thread is not None and relay._thread.is_alive()


def test_a_version_4_schema_is_migrated_to_the_outbox(
    pg_store: PostgresStore, pg_url: str, schema: str
) -> None:
    record = record_of(Emitter("m"), "m-1")  # running: created, not yet driven
    record.events.extend([("old", 0), ("old", 1)])
    pg_store.create(record)  # (in the outbox, which version 4 had not)
    pg_store.close()
    back_to_version_4(pg_url, schema)
    with PostgresStore(pg_url, schema=schema, readonly=True) as reader:
        assert reader.schema_version == 4 and reader.outbox() == []
    with PostgresStore(pg_url, schema=schema) as store:
        assert store.schema_version == 7 and store.outbox() == []
        store.register(Emitter)
        record = store.load("m-1")
        assert record is not None
        record.events.append(Shipped("m", 9))
        store.save(record)
        assert [m.id for m in store.outbox()] == ["m-1:2"]

"""The outbox relayed to a real Redis: sagas' events reach the stream after their
checkpoints commit, in order per saga, under their ids; with the broker down the relay
waits and retries, and nothing is lost from the outbox meanwhile."""

from __future__ import annotations

import threading
from pathlib import Path

import attrs
import pytest

from sagaflow import Orchestrator, saga, step
from sagaflow.messages import Message
from sagaflow.outbox import Relay
from sagaflow.policy import Retry
from sagaflow.stores.sqlite import SQLiteStore

redis_module = pytest.importorskip("redis")
from sagaflow.brokers.redis import RedisConsumer, RedisStreams  # noqa: E402


@attrs.frozen
class Packed:
    order: str
    box: int


@saga(name="relay-redis-packer")
class Packer:
    order: str

    @step
    def pack(self, ctx):
        ctx.emit(Packed(self.order, 1))
        ctx.emit(Packed(self.order, 2))

    @pack.compensate
    def unpack(self, ctx):
        pass


def drain(consumer: RedisConsumer) -> list[Message]:
    got: list[Message] = []
    while consumer.consume_once(got.append):
        pass
    return got


def test_the_outbox_reaches_redis_in_order_per_saga(
    tmp_path: Path, redis_url: str, stream: str
) -> None:
    store = SQLiteStore(tmp_path / "sagas.db")
    orchestrator = Orchestrator(store)
    for k in range(5):
        orchestrator.run(Packer(f"o-{k}"), f"p-{k}")
    with RedisStreams(redis_url, stream) as streams:
        assert Relay(store, streams).drain() == 10
        with streams.consumer("shipping") as consumer:
            got = drain(consumer)
    assert [m.id for m in got] == [f"p-{k}:{i}" for k in range(5) for i in (0, 1)]
    assert all(m.type.endswith("Packed") for m in got)
    assert store.outbox() == []
    store.close()


def test_a_broker_that_is_down_makes_the_relay_wait_and_nothing_is_lost(
    tmp_path: Path, own_server: object, stream: str
) -> None:
    server = own_server
    store = SQLiteStore(tmp_path / "sagas.db")
    orchestrator = Orchestrator(store)
    streams = RedisStreams(server.url, stream)  # type: ignore[attr-defined]
    relay = Relay(store, streams, retry=Retry(attempts=1000, backoff=0.01, max_delay=0.05),
                  poll=0.02)
    server.stop()  # type: ignore[attr-defined]
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    try:
        for k in range(3):
            orchestrator.run(Packer(f"d-{k}"), f"d-{k}")
        # the relay tries, fails and backs off; the messages wait in the outbox
        for _ in range(500):
            if relay.last_error is not None:
                break
            threading.Event().wait(0.01)
        assert relay.last_error is not None
        assert len(store.outbox()) == 6
        server.start()  # type: ignore[attr-defined]
        for _ in range(1000):
            if not store.outbox():
                break
            threading.Event().wait(0.01)
        assert store.outbox() == []
    finally:
        stop.set()
        thread.join(10)
    with streams.consumer("shipping") as consumer:
        got = drain(consumer)
    # at least once: every message, in order per saga (a retried batch may repeat, same ids)
    ids = [m.id for m in got]
    assert set(ids) == {f"d-{k}:{i}" for k in range(3) for i in (0, 1)}
    for k in range(3):
        mine = [i for i in ids if i.startswith(f"d-{k}:")]
        assert mine == sorted(mine)
    streams.close()
    store.close()

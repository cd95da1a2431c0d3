"""Redis Streams: the publisher and the consumer, against a real redis-server the tests
start (tests/brokers/redis_server.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from sagaflow.brokers import Consumer, DeadLetter
from sagaflow.brokers.redis import RedisConsumer, RedisStreams, dead_stream
from sagaflow.messages import Message, Publisher

HERE = Path(__file__).resolve().parent


def message(saga: str, seq: int, type: str = "OrderPlaced", body: str = '{"n": 1}') -> Message:
    return Message(
        id=f"{saga}:{seq}", type=type, saga_id=saga, saga_name="order", seq=seq,
        body=body, at=1_700_000_000.25 + seq,
    )


def drain(consumer: RedisConsumer) -> list[Message]:
    """Everything the consumer is handed now (no waiting)."""
    got: list[Message] = []
    while consumer.consume_once(got.append):
        pass
    return got


def pending(url: str, stream: str, group: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.xpending(stream, group)["pending"])
    finally:
        client.close()


def test_the_adapters_fit_the_protocols(redis_url: str, stream: str) -> None:
    publisher: Publisher = RedisStreams(redis_url, stream)
    consumer: Consumer = RedisConsumer(redis_url, "g", stream=stream)
    assert publisher is not None and consumer is not None


def test_round_trip_in_order_with_the_ids_kept(redis_url: str, stream: str) -> None:
    sent = [message("s1", 1), message("s1", 2), message("s2", 1)]
    more = [message("s1", 3, type="OrderShipped", body='{"to": "caf\u00e9 \u2603"}')]
    with RedisStreams(redis_url, stream) as streams:
        streams.publish(sent)
        streams.publish(more)
        streams.publish([])
        with streams.consumer("billing", batch=2) as consumer:
            assert drain(consumer) == sent + more
            assert drain(consumer) == []
    assert pending(redis_url, stream, "billing") == 0


def test_each_group_gets_every_message_and_a_groups_consumers_share_them(
    redis_url: str, stream: str
) -> None:
    sent = [message("s", n) for n in range(1, 7)]
    with RedisStreams(redis_url, stream) as streams:
        streams.publish(sent)
        a = streams.consumer("shipping", "a", batch=2)
        b = streams.consumer("shipping", "b", batch=2)
        other = streams.consumer("audit")
        got_a: list[Message] = []
        got_b: list[Message] = []
        a.consume_once(got_a.append)
        b.consume_once(got_b.append)
        got_a += drain(a)
        assert sorted(got_a + got_b, key=lambda m: m.seq) == sent
        assert got_a and got_b
        assert drain(other) == sent


def test_a_message_is_acknowledged_only_after_the_handler_returns(
    redis_url: str, stream: str
) -> None:
    seen: list[int] = []

    def handler(m: Message) -> None:
        seen.append(pending(redis_url, stream, "g"))

    with RedisStreams(redis_url, stream) as streams:
        streams.publish([message("s", 1)])
        streams.consumer("g").consume_once(handler)
    assert seen == [1]  # pending while handled
    assert pending(redis_url, stream, "g") == 0


def test_a_killed_consumers_message_is_claimed_by_another_with_the_same_id(
    redis_url: str, stream: str
) -> None:
    with RedisStreams(redis_url, stream) as streams:
        streams.publish([message("s", 1), message("s", 2)])
    doomed = subprocess.Popen(
        [sys.executable, str(HERE / "killed_consumer.py"), redis_url, stream, "g", "doomed"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert doomed.stdout is not None
        assert doomed.stdout.readline().strip() == "s:1"
    finally:
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
        if doomed.stdout is not None:
            doomed.stdout.close()
    assert doomed.returncode == -signal.SIGKILL
    assert pending(redis_url, stream, "g") == 1

    # Not pending for long enough yet: another consumer leaves it alone.
    patient = RedisConsumer(redis_url, "g", "patient", stream=stream, claim_after=3600)
    got = drain(patient)
    assert got == [message("s", 2)]
    assert pending(redis_url, stream, "g") == 1

    # Past claim_after (0 here): taken over and handled, under the same id.
    heir = RedisConsumer(redis_url, "g", "heir", stream=stream, claim_after=0)
    assert drain(heir) == [message("s", 1)]
    assert pending(redis_url, stream, "g") == 0


def test_a_failing_handler_gets_it_again_then_it_is_dead_lettered_and_the_consumer_goes_on(
    redis_url: str, stream: str
) -> None:
    calls: list[str] = []

    def handler(m: Message) -> None:
        calls.append(m.id)
        if m.id == "s:1":
            raise RuntimeError("payment service said no")

    with RedisStreams(redis_url, stream) as streams:
        streams.publish([message("s", 1), message("s", 2)])
        consumer = streams.consumer("g", claim_after=0, max_deliveries=3)
        for _ in range(5):
            consumer.consume_once(handler)
    assert calls == ["s:1", "s:2", "s:1", "s:1"]  # 3 deliveries of s:1, then dead
    assert pending(redis_url, stream, "g") == 0
    (dead,) = consumer.dead_letters()
    assert dead["id"] == "s:1" and dead["type"] == "OrderPlaced" and dead["body"] == '{"n": 1}'
    assert dead["reason"] == (
        "delivered 4 times (max_deliveries=3); last error: RuntimeError: payment service said no"
    )
    assert dead["group"] == "g" and dead["stream"] == stream and dead["deliveries"] == "4"


def test_bad_messages_are_dead_lettered_with_the_reason(redis_url: str, stream: str) -> None:
    client = redis.Redis.from_url(redis_url)
    good = message("s", 1)
    fields = {"id": "x:1", "type": "OrderPlaced", "saga_id": "x", "saga_name": "order",
              "seq": "1", "body": "{}", "at": "1.5"}
    with RedisStreams(redis_url, stream) as streams:
        client.xadd(stream, {"hello": "world"})
        client.xadd(stream, {**fields, "body": b"\xff\xfe"})
        client.xadd(stream, {**fields, "seq": "one"})
        streams.publish([message("s", 9, type="Mystery")])
        streams.publish([message("s", 8, type="Poison")])
        streams.publish([good])
        consumer = streams.consumer("g", types={"OrderPlaced", "Poison"})

        def handler(m: Message) -> None:
            if m.type == "Poison":
                raise DeadLetter("no such order")

        got: list[Message] = []
        while consumer.consume_once(lambda m: (handler(m), got.append(m))):
            pass
    client.close()
    assert got == [good]
    assert pending(redis_url, stream, "g") == 0
    reasons = [d["reason"] for d in consumer.dead_letters()]
    assert reasons == [
        "does not decode: field 'id' is missing",
        "does not decode: field 'body' is not UTF-8: "
        "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
        "does not decode: field 'seq' is not an integer: 'one'",
        "unknown type 'Mystery'",
        "handler: no such order",
    ]
    raw = redis.Redis.from_url(redis_url)
    (_, undecodable), = raw.xrange(dead_stream(stream), count=2)[1:]
    assert undecodable[b"body"] == b"\xff\xfe"  # kept as it was
    raw.close()


def test_publish_raises_while_the_broker_is_down_and_works_after_it_restarts(
    own_server: object, stream: str
) -> None:
    from redis_server import RedisServer

    assert isinstance(own_server, RedisServer)
    server = own_server
    streams = RedisStreams(server.url, stream)
    streams.publish([message("s", 1)])
    server.stop()
    with pytest.raises(redis.ConnectionError):
        streams.publish([message("s", 2), message("s", 3)])
    server.start()
    streams.publish([message("s", 2), message("s", 3)])  # the relay's retry
    with streams.consumer("g") as consumer:
        assert drain(consumer) == [message("s", n) for n in (1, 2, 3)]
    streams.close()


def test_consume_runs_until_stopped(redis_url: str, stream: str) -> None:
    stop = threading.Event()
    got: list[Message] = []

    def handler(m: Message) -> None:
        got.append(m)
        if len(got) == 3:
            stop.set()

    with RedisStreams(redis_url, stream) as streams:
        streams.publish([message("s", n) for n in (1, 2, 3)])
        streams.consumer("g", block=0.05).consume(handler, stop)
    assert [m.seq for m in got] == [1, 2, 3]


def test_importing_sagaflow_does_not_import_redis() -> None:
    code = (
        "import sys, sagaflow, sagaflow.brokers, sagaflow.messages\n"
        "assert 'redis' not in sys.modules, sorted(m for m in sys.modules if 'redis' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

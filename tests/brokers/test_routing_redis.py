"""Sagas started by events and replies satisfying waits over a real redis-server: the
outbox relayed to Redis Streams (RedisStreams), consumed by a RedisConsumer whose handler
is a Router; duplicates, an unknown correlation dead-lettered with its reason."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from test_routing import (
    CALLS,
    Approved,
    Checkout,
    OrderPlaced,
    PaymentReply,
    router_for,
)

from sagaflow import Orchestrator, SagaStatus
from sagaflow.brokers.redis import AsyncRedisStreams, RedisConsumer, RedisStreams
from sagaflow.outbox import Relay
from sagaflow.routing import Router, message_of


@pytest.fixture(autouse=True)
def _calls() -> None:
    CALLS.clear()


@pytest.fixture
def orchestrator(tmp_path: Path) -> Any:
    with Orchestrator(f"sqlite:///{tmp_path / 'sagas.db'}") as o:
        yield o


def drain(consumer: RedisConsumer, router: Router) -> int:
    handled = 0
    while n := consumer.consume_once(router.handle):
        handled += n
    return handled


def calls_of(saga_id: str) -> list[str]:
    return [what for what, sid in CALLS if sid == saga_id]


def test_started_by_an_event_over_redis_replies_duplicates(
    orchestrator: Orchestrator, redis_url: str, stream: str
) -> None:
    router = router_for(orchestrator)
    with RedisStreams(redis_url, stream) as streams, \
            streams.consumer("fulfilment") as consumer:
        orchestrator.run(Checkout("o-1", 25), "c-1")
        assert Relay(orchestrator.store, streams).drain() == 1
        assert drain(consumer, router) == 1
        [fulfil] = orchestrator.running("rt-fulfil")
        assert fulfil.saga_id.startswith("rt-fulfil:c-1:")
        placed_id = fulfil.saga_id.removeprefix("rt-fulfil:")
        # Published again (the relay crashed before marking it relayed): the same id.
        again = message_of(OrderPlaced("o-1", 25), placed_id)
        streams.publish([again])
        assert drain(consumer, router_for(orchestrator)) == 1  # another router, too
        assert [r.saga_id for r in orchestrator.running("rt-fulfil")] == [fulfil.saga_id]
        # The replies: payment first (kept), twice; then the approval.
        reply = message_of(PaymentReply("o-1", True), "payments:1")
        streams.publish([reply, reply])
        streams.publish([message_of(Approved("o-1"), "approvals:1")])
        assert drain(consumer, router_for(orchestrator)) == 3
        done = orchestrator.get(fulfil.saga_id)
        assert done is not None and done.status is SagaStatus.COMPLETED
        assert calls_of(fulfil.saga_id) == ["reserve", "approved", "paid", "ship"]
        assert consumer.dead_letters() == []
        assert consumer.client.xpending(stream, "fulfilment")["pending"] == 0


def test_an_unknown_correlation_is_dead_lettered_with_its_reason(
    orchestrator: Orchestrator, redis_url: str, stream: str
) -> None:
    router = router_for(orchestrator)
    with RedisStreams(redis_url, stream) as streams, \
            streams.consumer("fulfilment") as consumer:
        streams.publish([message_of(PaymentReply("nobody", True), "payments:9"),
                         message_of(OrderPlaced("o-2", 1), "orders:2")])
        assert drain(consumer, router) == 2  # the consumer went on
        [dead] = consumer.dead_letters()
        assert dead["id"] == "payments:9"
        assert dead["reason"] == (
            "handler: unknown correlation: no unfinished saga of rt-fulfil has the business "
            "key 'nobody' (message 'payments:9', type 'test_routing:PaymentReply')"
        )
        assert dead["deliveries"] == "1"  # at once, not after max_deliveries
        assert orchestrator.get("rt-fulfil:orders:2") is not None
        assert consumer.client.xpending(stream, "fulfilment")["pending"] == 0


def test_a_store_that_is_down_is_delivered_again(
    tmp_path: Path, redis_url: str, stream: str
) -> None:
    down = Orchestrator(f"sqlite:///{tmp_path / 'down.db'}")
    router = router_for(down)
    down.close()
    with RedisStreams(redis_url, stream) as streams, \
            streams.consumer("fulfilment") as consumer:
        streams.publish([message_of(OrderPlaced("o-3", 1), "orders:3")])
        assert consumer.consume_once(router.handle) == 1
        assert consumer.dead_letters() == []
        assert consumer.client.xpending(stream, "fulfilment")["pending"] == 1


def test_async_consumer_and_router(
    orchestrator: Orchestrator, redis_url: str, stream: str
) -> None:
    router = router_for(orchestrator)

    async def go() -> None:
        async with AsyncRedisStreams(redis_url, stream) as streams:
            placed = message_of(OrderPlaced("o-4", 1), "orders:4")
            await streams.publish([placed, placed,
                                   message_of(Approved("o-4"), "approvals:4"),
                                   message_of(Approved("o-none"), "approvals:5")])
            async with streams.consumer("fulfilment") as consumer:
                while await consumer.consume_once(router.ahandle):
                    pass
                dead = await consumer.client.xrange(f"{stream}:dead")
                assert [f[b"id"] for _, f in dead] == [b"approvals:5"]

    asyncio.run(go())
    assert calls_of("rt-fulfil:orders:4") == ["reserve", "approved"]


def test_a_reply_redelivered_after_its_saga_finished_is_acknowledged(
    orchestrator: Orchestrator, redis_url: str, stream: str
) -> None:
    reply = message_of(PaymentReply("o-5", True), "payments:5")
    with RedisStreams(redis_url, stream) as streams, \
            streams.consumer("fulfilment") as consumer:
        streams.publish([message_of(OrderPlaced("o-5", 1), "orders:5"), reply,
                         message_of(Approved("o-5"), "approvals:5")])
        assert drain(consumer, router_for(orchestrator)) == 3
        assert orchestrator.get("rt-fulfil:orders:5").status is SagaStatus.COMPLETED
        streams.publish([reply])  # the payments service published it again
        assert drain(consumer, router_for(orchestrator)) == 1  # a router that did not see it
        assert consumer.dead_letters() == []
        assert consumer.client.xpending(stream, "fulfilment")["pending"] == 0
    assert calls_of("rt-fulfil:orders:5") == ["reserve", "approved", "paid", "ship"]

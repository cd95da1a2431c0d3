"""The asyncio side of the Redis Streams adapter (redis.asyncio), on the same server."""

from __future__ import annotations

import asyncio

import redis
from test_redis import message

from sagaflow.brokers import DeadLetter
from sagaflow.brokers.redis import AsyncRedisStreams, RedisStreams
from sagaflow.messages import Message


def test_async_round_trip_redelivery_and_dead_letters(redis_url: str, stream: str) -> None:
    async def main() -> tuple[list[str], list[str], int]:
        calls: list[str] = []

        async def handler(m: Message) -> None:
            calls.append(m.id)
            if m.id == "s:2":
                raise RuntimeError("later")
            if m.type == "Poison":
                raise DeadLetter("cannot be handled")

        async with AsyncRedisStreams(redis_url, stream) as streams:
            await streams.publish([message("s", 1), message("s", 2)])
            await streams.publish([message("s", 3, type="Poison"), message("s", 4)])
            async with streams.consumer("g", claim_after=0, max_deliveries=2) as consumer:
                while await consumer.consume_once(handler):
                    pass
            stop = asyncio.Event()
            got: list[Message] = []

            def collect(m: Message) -> None:
                got.append(m)
                stop.set()

            await streams.publish([message("s", 5)])
            async with streams.consumer("g", block=0.05) as other:
                await other.consume(collect, stop)
        assert got == [message("s", 5)]
        client = redis.Redis.from_url(redis_url)
        left = int(client.xpending(stream, "g")["pending"])
        client.close()
        dead = RedisStreams(redis_url, stream).consumer("g").dead_letters()
        return calls, [f"{d['id']} {d['reason']}" for d in dead], left

    calls, dead, left = asyncio.run(main())
    assert calls == ["s:1", "s:2", "s:3", "s:4", "s:2"]
    assert dead == [
        "s:3 handler: cannot be handled",
        "s:2 delivered 3 times (max_deliveries=2); last error: RuntimeError: later",
    ]
    assert left == 0

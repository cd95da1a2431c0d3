"""Sagas started by events and replies that satisfy waits (sagaflow.routing), in process:
the outbox's Relay and Handlers over a SQLite store. tests/brokers/test_routing_redis.py
runs the same sagas over a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from sagaflow import Orchestrator, SagaRejected, SagaStatus, saga, step, wait
from sagaflow.brokers import DeadLetter
from sagaflow.errors import StoreError
from sagaflow.messages import Message
from sagaflow.outbox import Handlers, Relay
from sagaflow.routing import (
    NoRoute,
    ReplyRefused,
    Router,
    Undecodable,
    UnknownCorrelation,
    Unroutable,
    message_of,
)

#: (what, saga id) of every step call, in order
CALLS: list[tuple[str, str]] = []


@attrs.frozen
class OrderPlaced:
    order_id: str
    amount: int


@attrs.frozen
class Approved:
    order_id: str


@attrs.frozen
class PaymentReply:
    order_id: str
    ok: bool


@attrs.frozen
class Unrelated:
    n: int


@saga(name="rt-checkout")
@attrs.define
class Checkout:
    """Places an order: emits OrderPlaced."""

    order_id: str
    amount: int = 10

    @step(pivot=True)
    def place(self, ctx: Any) -> None:
        CALLS.append(("place", ctx.saga_id))
        ctx.emit(OrderPlaced(self.order_id, self.amount))


@saga(name="rt-fulfil", key="order_id")
@attrs.define
class Fulfil:
    """Started by OrderPlaced: reserves, waits for an approval, then for the payment's
    reply, ships."""

    order_id: str
    amount: int = 0
    paid: bool = False

    @step
    def reserve(self, ctx: Any) -> None:
        CALLS.append(("reserve", ctx.saga_id))

    @reserve.compensate
    def release(self, ctx: Any) -> None:
        CALLS.append(("release", ctx.saga_id))

    @wait("approved", timeout=timedelta(days=3))
    def approve(self, ctx: Any) -> None:
        CALLS.append(("approved", ctx.saga_id))

    @wait("payment", payload=PaymentReply, timeout=timedelta(days=3))
    def pay(self, reply: PaymentReply, ctx: Any) -> None:
        CALLS.append(("paid", ctx.saga_id))
        if not reply.ok:
            raise SagaRejected("payment declined")
        self.paid = True

    @step(pivot=True)
    def ship(self, ctx: Any) -> None:
        CALLS.append(("ship", ctx.saga_id))


@saga(name="rt-afulfil")
@attrs.define
class AsyncFulfil:
    order_id: str
    amount: int = 0

    @step(pivot=True)
    async def ship(self, ctx: Any) -> None:
        await asyncio.sleep(0)
        CALLS.append(("aship", ctx.saga_id))


@saga(name="rt-await", key="order_id")
@attrs.define
class AsyncAwait:
    """Async steps and an async wait: routed by ahandle."""

    order_id: str
    amount: int = 0

    @step
    async def hold(self, ctx: Any) -> None:
        CALLS.append(("hold", ctx.saga_id))

    @hold.compensate
    async def unhold(self, ctx: Any) -> None:
        CALLS.append(("unhold", ctx.saga_id))

    @wait("payment", payload=PaymentReply, timeout=timedelta(days=3))
    async def pay(self, reply: PaymentReply, ctx: Any) -> None:
        await asyncio.sleep(0)
        CALLS.append(("apaid", ctx.saga_id))

    @step(pivot=True)
    async def ship(self, ctx: Any) -> None:
        CALLS.append(("aship", ctx.saga_id))


def router_for(orchestrator: Orchestrator, **options: Any) -> Router:
    router = Router(orchestrator, **options)
    router.start(OrderPlaced, Fulfil, build=lambda e: Fulfil(e.order_id, e.amount))
    router.signal(Approved, "approved", key=lambda e: e.order_id, saga=Fulfil)
    router.signal(PaymentReply, "payment", key=lambda e: e.order_id, saga=Fulfil)
    return router


class Tee:
    """A publisher that keeps what it is handed and passes it on."""

    def __init__(self, publisher: Any) -> None:
        self.publisher = publisher
        self.messages: list[Message] = []

    def publish(self, messages: Sequence[Message]) -> None:
        self.messages.extend(messages)
        self.publisher.publish(messages)


@pytest.fixture(autouse=True)
def _calls() -> None:
    CALLS.clear()


@pytest.fixture
def orchestrator(tmp_path: Path) -> Any:
    with Orchestrator(f"sqlite:///{tmp_path / 'sagas.db'}") as o:
        yield o


def calls_of(saga_id: str) -> list[str]:
    return [what for what, sid in CALLS if sid == saga_id]


def test_an_event_emitted_by_one_saga_starts_another(orchestrator: Orchestrator) -> None:
    router = router_for(orchestrator)
    tee = Tee(router)
    orchestrator.run(Checkout("o-1", 25), "c-1")
    assert Relay(orchestrator.store, tee).drain() == 1
    [placed] = tee.messages
    fulfil_id = f"rt-fulfil:{placed.id}"
    started = orchestrator.get(fulfil_id)
    assert started is not None and started.status is SagaStatus.RUNNING  # parked at its wait
    assert calls_of(fulfil_id) == ["reserve"]
    assert orchestrator.store.load(fulfil_id).data == Fulfil("o-1", 25)


def test_a_redelivered_start_event_does_not_start_a_second_saga(
    orchestrator: Orchestrator,
) -> None:
    router = router_for(orchestrator)
    tee = Tee(router)
    orchestrator.run(Checkout("o-2"), "c-2")
    Relay(orchestrator.store, tee).drain()
    [placed] = tee.messages
    assert router.handle(placed) is None  # the same router: a duplicate
    # Another router (another process): the saga id finds the saga, parked and running.
    assert router_for(orchestrator).handle(placed) is None
    assert [r.saga_id for r in orchestrator.running("rt-fulfil")] == [f"rt-fulfil:{placed.id}"]
    assert calls_of(f"rt-fulfil:{placed.id}") == ["reserve"]
    # Once it finished, a redelivery returns its stored result and runs nothing.
    fresh = router_for(orchestrator)
    fresh.handle(message_of(Approved("o-2"), "approvals:1"))
    fresh.handle(message_of(PaymentReply("o-2", True), "payments:1"))
    done = router_for(orchestrator).handle(placed)
    assert done is not None and done.status is SagaStatus.COMPLETED
    assert calls_of(f"rt-fulfil:{placed.id}") == ["reserve", "approved", "paid", "ship"]


def test_handlers_deliver_to_the_router(orchestrator: Orchestrator) -> None:
    router = router_for(orchestrator)
    handlers = Handlers()
    handlers.on(OrderPlaced, router.on_event)
    orchestrator.run(Checkout("o-3"), "c-3")
    Relay(orchestrator.store, handlers).drain()
    assert [r.data.order_id for r in orchestrator.running("rt-fulfil")] == ["o-3"]


def test_replies_satisfy_waits_early_ones_kept_duplicates_ignored(
    orchestrator: Orchestrator,
) -> None:
    router = router_for(orchestrator)
    fulfil = router.handle(message_of(OrderPlaced("o-4", 5), "orders:4"))
    assert fulfil is not None and fulfil.status is SagaStatus.RUNNING
    sid = fulfil.saga_id
    assert sid == "rt-fulfil:orders:4"
    # The payment's reply comes before the saga waits for it: kept.
    reply = message_of(PaymentReply("o-4", True), "payments:4")
    assert router.handle(reply) is not None
    # Redelivered, to another router: the signal id is the message id: ignored.
    router_for(orchestrator).handle(reply)
    assert orchestrator.store.load(sid).status is SagaStatus.RUNNING
    assert calls_of(sid) == ["reserve"]
    done = router.handle(message_of(Approved("o-4"), "approvals:4"))
    assert done is not None and done.status is SagaStatus.COMPLETED
    assert calls_of(sid) == ["reserve", "approved", "paid", "ship"]
    assert orchestrator.store.load(sid).data.paid is True
    # A late duplicate to the router that handled it: nothing, no error.
    assert router.handle(reply) is None


def test_a_reply_routed_by_saga_id(orchestrator: Orchestrator) -> None:
    router = Router(orchestrator)
    router.start(OrderPlaced, Fulfil)  # built from the event's fields
    router.signal(Approved, "approved", saga_id=lambda e: f"rt-fulfil:orders:{e.order_id}",
                  payload=lambda e: None)
    started = router.handle(message_of(OrderPlaced("5", 7), "orders:5"))
    assert started is not None and orchestrator.store.load(started.saga_id).data.amount == 7
    router.handle(message_of(Approved("5"), "approvals:5"))
    assert calls_of("rt-fulfil:orders:5") == ["reserve", "approved"]
    with pytest.raises(UnknownCorrelation, match="no saga 'rt-fulfil:orders:6'"):
        router.handle(message_of(Approved("6"), "approvals:6"))


def test_unroutable_messages_are_dead_letters_naming_why(orchestrator: Orchestrator) -> None:
    router = router_for(orchestrator)
    with pytest.raises(NoRoute, match="no route for Unrelated events") as no_route:
        router.handle(message_of(Unrelated(1), "u:1"))
    assert isinstance(no_route.value, DeadLetter)
    assert no_route.value.message.id == "u:1"
    bad = Message(id="b:1", type="OrderPlaced", saga_id="", saga_name="", seq=0,
                  body="{not json", at=0.0)
    with pytest.raises(Undecodable, match="does not decode"):
        router.handle(bad)
    with pytest.raises(UnknownCorrelation,
                       match="no unfinished saga of rt-fulfil has the business key 'o-x'"):
        router.handle(message_of(PaymentReply("o-x", True), "payments:x"))
    # A reply whose payload does not fit the wait: refused, never stored.
    router.handle(message_of(OrderPlaced("o-5", 1), "orders:5"))
    wrong = Router(orchestrator).signal(Unrelated, "payment", key=lambda e: "o-5",
                                        saga="rt-fulfil")
    with pytest.raises(ReplyRefused, match="signal 'payment' refused"):
        wrong.handle(message_of(Unrelated(3), "u:3"))
    assert not orchestrator.store.signals("rt-fulfil:orders:5")
    # ignore_unrouted: acknowledged and dropped.
    assert router_for(orchestrator, ignore_unrouted=True).handle(
        message_of(Unrelated(2), "u:2")) is None


def test_a_store_that_is_down_is_no_dead_letter(tmp_path: Path) -> None:
    orchestrator = Orchestrator(f"sqlite:///{tmp_path / 'gone.db'}")
    router = router_for(orchestrator)
    orchestrator.close()
    orchestrator.store.close()
    with pytest.raises(Exception) as raised:
        router.handle(message_of(OrderPlaced("o-6", 1), "orders:6"))
    assert not isinstance(raised.value, DeadLetter)
    assert isinstance(raised.value, StoreError)


def test_publish_skips_what_it_cannot_route(orchestrator: Orchestrator) -> None:
    router = router_for(orchestrator)
    router.publish([message_of(Unrelated(1), "u:1"),
                    message_of(PaymentReply("nobody", True), "p:1"),
                    message_of(OrderPlaced("o-7", 1), "orders:7")])
    assert [type(e) for e in router.unrouted] == [NoRoute, UnknownCorrelation]
    assert all(isinstance(e, Unroutable) for e in router.unrouted)
    assert orchestrator.get("rt-fulfil:orders:7") is not None


def test_routes_are_checked_when_declared(orchestrator: Orchestrator) -> None:
    router = Router(orchestrator)
    with pytest.raises(TypeError, match=r"key=\.\.\. .* or saga_id="):
        router.signal(Approved, "approved", saga=Fulfil)
    with pytest.raises(TypeError, match="declares no wait for signal 'nope'"):
        router.signal(Approved, "nope", key=lambda e: e.order_id, saga=Fulfil)
    with pytest.raises(TypeError, match="not a saga class"):
        router.start(OrderPlaced, OrderPlaced)


def test_ahandle_runs_async_sagas(orchestrator: Orchestrator) -> None:
    router = Router(orchestrator)
    router.start(OrderPlaced, AsyncFulfil)
    router.signal(Approved, "approved", key=lambda e: e.order_id, saga=Fulfil)
    router.start(OrderPlaced, Fulfil)

    async def go() -> None:
        placed = message_of(OrderPlaced("o-8", 1), "orders:8")
        await router.ahandle(placed)
        await Router(orchestrator).start(OrderPlaced, AsyncFulfil).ahandle(placed)
        await router.ahandle(message_of(Approved("o-8"), "approvals:8"))
        with pytest.raises(UnknownCorrelation):
            await router.ahandle(message_of(Approved("o-9"), "approvals:9"))

    asyncio.run(go())
    assert calls_of("rt-afulfil:orders:8") == ["aship"]
    assert calls_of("rt-fulfil:orders:8") == ["reserve", "approved"]


def test_a_duplicate_reply_after_its_saga_finished_is_a_duplicate_to_any_router(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    reply = message_of(PaymentReply("o-11", True), "payments:11")
    approved = message_of(Approved("o-11"), "approvals:11")
    with Orchestrator(url) as first:
        router = router_for(first)
        router.handle(message_of(OrderPlaced("o-11", 3), "orders:11"))
        router.handle(reply)
        done = router.handle(approved)
        assert done is not None and done.status is SagaStatus.COMPLETED
    sid = "rt-fulfil:orders:11"
    # Another process's router, which saw none of it: the finished saga's record has the
    # reply's signal id: a duplicate, acknowledged (not dead-lettered).
    with Orchestrator(url) as other:
        fresh = router_for(other)
        assert fresh.handle(reply) is None
        assert fresh.handle(approved) is None
        # Not a duplicate (another id) and no unfinished saga has the key: refused.
        with pytest.raises(UnknownCorrelation, match="no unfinished saga of rt-fulfil"):
            fresh.handle(message_of(PaymentReply("o-11", True), "payments:11b"))
    assert calls_of(sid) == ["reserve", "approved", "paid", "ship"]


def test_ahandle_routes_replies_to_async_sagas_and_knows_their_duplicates(
    orchestrator: Orchestrator,
) -> None:
    def router() -> Router:
        return Router(orchestrator).start(OrderPlaced, AsyncAwait).signal(
            PaymentReply, "payment", key=lambda e: e.order_id, saga=AsyncAwait)

    reply = message_of(PaymentReply("o-12", True), "payments:12")

    async def go() -> None:
        one = router()
        started = await one.ahandle(message_of(OrderPlaced("o-12", 1), "orders:12"))
        assert started is not None and started.status is SagaStatus.RUNNING  # parked
        done = await one.ahandle(reply)
        assert done is not None and done.status is SagaStatus.COMPLETED
        assert await router().ahandle(reply) is None  # a router that did not see it
        with pytest.raises(UnknownCorrelation):
            await router().ahandle(message_of(PaymentReply("o-13", True), "payments:13"))

    asyncio.run(go())
    assert calls_of("rt-await:orders:12") == ["hold", "apaid", "aship"]

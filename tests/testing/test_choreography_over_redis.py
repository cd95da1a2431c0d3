"""The choreography toolkit over a real redis-server (tests/brokers/redis_server.py):
each participant is a consumer group of the stream; a participant that dies in a step
dies inside the consumer's handler, before XACK, and its next consumer claims the
message (XAUTOCLAIM). The same invariants hold as in-process.

A few plans by default (seconds); ``SAGAFLOW_PROFILE=deep`` draws many more.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from choreo_sagas import order_case
from hypothesis import HealthCheck, given, settings

from examples.choreography.saga import OrderFlow
from sagaflow import SagaStatus
from sagaflow.testing import Delivery, DeliveryPlan, choreography_plans, run_choreography

sys.path.insert(0, str(Path(__file__).parents[1] / "brokers"))
from redis_server import RedisServer, fresh_stream, require

ON_REDIS = settings(deadline=None, suppress_health_check=list(HealthCheck),
                    max_examples=max(8, settings.default.max_examples // 50))


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisServer(require()).start()
    yield server.url
    server.remove()


def test_a_consumer_that_dies_before_xack_leaves_the_message_to_the_next(
    redis_url: str,
) -> None:
    run = run_choreography(order_case("25", "30"), DeliveryPlan(crash={"charge": True}),
                           redis_url=redis_url, stream=fresh_stream()).check()
    assert run.transport == "redis"
    for order in ("o-0", "o-1"):
        sid = f"OrderFlow:{order}"
        got = [d.outcome for d in run.deliveries
               if d.participant == "payments" and d.message_id == f"{sid}:0"]
        assert got == ["died", "ran"]  # the same message, claimed by the next consumer
        assert run.status(order) is SagaStatus.COMPLETED


@pytest.mark.parametrize("plan", [
    DeliveryPlan(),
    DeliveryPlan(fails="confirm", compensation_crash={"charge"}),
    DeliveryPlan(deliveries={"OrderCreated": Delivery.TWICE, "StockReserved": Delivery.LATE,
                             "PaymentProcessed": Delivery.OUT_OF_ORDER}),
    DeliveryPlan(deliveries={"PaymentProcessed": Delivery.NEVER}, republished={"StockReserved"}),
    DeliveryPlan(crash={"reserve_stock": True},
                 deliveries={"StockReserved": Delivery.AFTER_DEADLINE}),
], ids=repr)
def test_the_invariants_hold_over_redis(redis_url: str, plan: DeliveryPlan) -> None:
    run_choreography(order_case("25", "5000"), plan, redis_url=redis_url,
                     stream=fresh_stream()).check()


@ON_REDIS
@given(choreography_plans(OrderFlow))
def test_generated_plans_over_redis(redis_url: str, plan: DeliveryPlan) -> None:
    run_choreography(order_case("25", "40"), plan, redis_url=redis_url,
                     stream=fresh_stream()).check()

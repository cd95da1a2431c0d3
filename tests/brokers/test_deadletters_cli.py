"""``sagaflow sagas dead-letters``: listing a stream's dead letters with their reasons, and
replaying one onto its stream, against a real redis-server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from test_routing import CALLS, Approved, OrderPlaced, PaymentReply, router_for

from sagaflow import Orchestrator, SagaStatus
from sagaflow.brokers.redis import RedisConsumer, RedisStreams
from sagaflow.cli import main
from sagaflow.routing import Router, message_of


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, ["sagas", "dead-letters", *args], catch_exceptions=False)


def drain(consumer: RedisConsumer, router: Router) -> None:
    while consumer.consume_once(router.handle):
        pass


@pytest.fixture
def orchestrator(tmp_path: Path) -> Any:
    CALLS.clear()
    with Orchestrator(f"sqlite:///{tmp_path / 'sagas.db'}") as o:
        yield o


def test_list_and_replay_a_reply_that_came_before_its_saga(
    orchestrator: Orchestrator, redis_url: str, stream: str
) -> None:
    router = router_for(orchestrator)
    with RedisStreams(redis_url, stream) as streams, \
            streams.consumer("fulfilment") as consumer:
        assert cli("--broker", redis_url, "--stream", stream).output == "no dead letters\n"
        # The approval comes before the order that starts its saga: dead-lettered.
        streams.publish([message_of(Approved("o-1"), "approvals:1"),
                         message_of(PaymentReply("o-1", True), "payments:1")])
        drain(consumer, router)
        listed = cli("--broker", redis_url, "--stream", stream)
        assert listed.exit_code == 0, listed.output
        header, first, second = listed.output.splitlines()
        assert header.split()[:4] == ["DEAD", "ENTRY", "MESSAGE", "ID"]
        assert "approvals:1" in first and "fulfilment" in first
        assert first.endswith("handler: unknown correlation: no unfinished saga of rt-fulfil "
                              "has the business key 'o-1' (message 'approvals:1', type "
                              "'test_routing:Approved')")
        assert "payments:1" in second
        rows = [json.loads(line) for line in
                cli("--broker", redis_url, "--stream", stream, "--json").output.splitlines()]
        assert [r["id"] for r in rows] == ["approvals:1", "payments:1"]
        assert rows[0]["type"] == "test_routing:Approved"
        assert rows[0]["reason"].startswith("handler: unknown correlation")
        # The order arrives; the operator replays both replies (by message id, by entry).
        streams.publish([message_of(OrderPlaced("o-1", 3), "orders:1")])
        drain(consumer, router)
        replayed = cli("--broker", redis_url, "--stream", stream, "--replay", "approvals:1")
        assert replayed.exit_code == 0, replayed.output
        assert replayed.output.startswith(f"replayed {rows[0]['dead_entry']} (message "
                                          f"approvals:1) onto {stream} as ")
        out = cli("--broker", redis_url, "--stream", stream, "--replay",
                  rows[1]["dead_entry"], "--json")
        assert json.loads(out.output)["id"] == "payments:1"
        assert cli("--broker", redis_url, "--stream", stream).output == "no dead letters\n"
        drain(consumer, router)
        done = orchestrator.get("rt-fulfil:orders:1")
        assert done is not None and done.status is SagaStatus.COMPLETED
        assert consumer.dead_letters() == []


def test_mistakes_are_one_line_errors(redis_url: str, stream: str) -> None:
    missing = CliRunner().invoke(main, ["sagas", "dead-letters", "--broker", redis_url,
                                        "--stream", stream, "--replay", "nope"])
    assert missing.exit_code == 2
    assert f"no dead letter 'nope' in {stream}:dead" in missing.output
    wrong = CliRunner().invoke(main, ["sagas", "dead-letters", "--broker", "sqlite:///x.db"])
    assert wrong.exit_code == 2 and "give a redis:// URL" in wrong.output
    down = CliRunner().invoke(main, ["sagas", "dead-letters", "--broker",
                                     "redis://127.0.0.1:1/0"])
    assert down.exit_code == 2 and "--broker redis://127.0.0.1:1/0: ConnectionError" in (
        down.output)

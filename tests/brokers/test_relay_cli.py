"""``sagaflow relay``: a process that publishes a store's outbox to Redis until SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

from sagaflow import Orchestrator, saga, step
from sagaflow.cli.app import main
from sagaflow.stores.sqlite import SQLiteStore

redis = pytest.importorskip("redis")


@attrs.frozen
class Labelled:
    order: str


@saga(name="relay-cli-labeller")
class Labeller:
    order: str

    @step
    def label(self, ctx):
        ctx.emit(Labelled(self.order))

    @label.compensate
    def unlabel(self, ctx):
        pass


def test_the_relay_command_publishes_the_outbox_until_sigterm(
    tmp_path: Path, redis_url: str, stream: str
) -> None:
    db = tmp_path / "sagas.db"
    with SQLiteStore(db) as store:
        orchestrator = Orchestrator(store)
        for k in range(3):
            orchestrator.run(Labeller(f"o-{k}"), f"l-{k}")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sagaflow", "relay", "--store", f"sqlite:///{db}",
         "--broker", redis_url, "--stream", stream, "--poll", "0.05"],
        env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 30
        while client.xlen(stream) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        entries = client.xrange(stream)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        client.close()
    assert proc.returncode == 0, err
    assert [e[1][b"id"].decode() for e in entries] == ["l-0:0", "l-1:0", "l-2:0"]
    assert "relaying the outbox" in err
    with SQLiteStore(db) as store:
        assert store.outbox() == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--store", "sqlite:///x.db"], "no broker given"),
        (["--broker", "redis://localhost:1/0"], "no store given"),
        (["--store", "sqlite:///x.db", "--broker", "kafka://b:9092"], "not a broker"),
    ],
)
def test_the_relay_command_refuses_what_it_cannot_serve(
    args: list[str], says: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAGAFLOW_STORE", raising=False)
    monkeypatch.delenv("SAGAFLOW_BROKER", raising=False)
    result = CliRunner().invoke(main, ["relay", *args])
    assert result.exit_code != 0
    assert says in result.output

"""The outbox under SIGKILL: a process running sagas with a relay next to it dies right
after a checkpoint that wrote events commits (before the relay publishes them), in the
middle of a publish, or after a publish before the relay marks it; a fresh process
recovers and relays. Then every event of every saga in the store is published, none is
lost, a saga's come in order, and a message published twice is the same (id and body)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from outbox_child import Shipment
from postgres_cluster import cluster_url, drop_schema, fresh_schema

from sagaflow.stores import open_store

CHILD = str(Path(__file__).resolve().parent / "outbox_child.py")
SAGAS = 5


def child(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, CHILD, *map(str, args)], capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sagas.db'}"
        return
    url, schema = cluster_url(request.config), fresh_schema()
    yield f"{url}&schema={schema}"
    drop_schema(url, schema)


@pytest.mark.parametrize(("kill", "at"), [
    ("commit", 1), ("commit", 4), ("publishing", 1), ("publishing", 3),
    ("published", 1), ("published", 2), ("none", 0),
])  # fmt: skip
def test_every_event_is_published_after_a_kill(
    store_url: str, tmp_path: Path, kill: str, at: int
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ran = child("run", store_url, ledger, SAGAS, kill, at)
    if kill == "none":
        assert ran.returncode == 0, ran.stderr
    else:
        assert ran.returncode == -signal.SIGKILL, (ran.returncode, ran.stderr)
    back = child("recover", store_url, ledger)
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout.splitlines()[-1]) == {"pending": 0}
    check_ledger(store_url, ledger, killed=kill != "none")


def check_ledger(store_url: str, ledger: Path, killed: bool) -> None:
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    published = [json.loads(line) for line in lines]
    first: dict[str, dict] = {}
    order: dict[str, list[int]] = {}
    for m in published:
        seen = first.setdefault(m["id"], m)
        assert seen == m, f"{m['id']} published twice, differently"
        if seen is m:
            order.setdefault(m["saga_id"], []).append(m["seq"])
    store = open_store(store_url)
    try:
        store.register(Shipment)
        sagas = [store.load(s.saga_id) for s in store.scan()]
        assert sagas and (killed or len(sagas) == SAGAS)
        expected = {}
        for record in sagas:
            assert record is not None and record.status.is_terminal, record
            for i, event in enumerate(record.events):
                expected[f"{record.saga_id}:{i}"] = store.codec.dump_event(event, record, i)
            # In order per saga: the first delivery of each comes by seq.
            assert order.get(record.saga_id, []) == list(range(len(record.events)))
        assert {mid: m["body"] for mid, m in first.items()} == expected
    finally:
        store.close()

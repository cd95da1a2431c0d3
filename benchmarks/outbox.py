"""The outbox: what writing domain events with the checkpoints costs, and how fast a relay
publishes them, against baselines run in the same process.

``python -m benchmarks outbox [--quick] [--dir DIR]`` (``./run.sh bench outbox``). SQLite
with its default WAL + ``synchronous=FULL``; ``run()`` one saga after the other; a saga of
3 compensatable steps (default timeouts), each emitting ``EVENTS`` domain events.

- **checkpoints with the outbox**: sagas whose steps emit their events (each saved to the
  outbox in its step's checkpoint) against the same sagas emitting nothing (the same
  checkpoints without an outbox row): seconds per saga and the ratio. No target: what
  at-least-once publishing costs the writer.
- **relay throughput** (events/s): a :class:`~sagaflow.outbox.Relay` draining the
  outbox of those sagas to in-process :class:`~sagaflow.outbox.Handlers`, and to a real
  Redis stream (a ``redis-server`` this run starts on a free port, if Debian's is
  installed), against the events/s the same sagas wrote them at.
- **a choreographed saga's end-to-end latency over Redis**: the order of
  ``examples.choreography`` (created -> stock reserved -> payment processed ->
  confirmed), each participant its own consumer group, the relay publishing the outbox,
  one pump turning them (no poll interval measured), one saga at a time: median and p99
  against the same order orchestrated (``OrderOrchestration``) on the same store.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import attrs

from sagaflow import Orchestrator, SagaStatus, saga, step
from sagaflow.outbox import Handlers, Relay
from sagaflow.stores import SQLiteStore

from .rows import Row, show
from .waits import rounds_of

EVENTS = 2  # per step


@attrs.frozen
class Noted:
    saga: str
    step: int
    k: int


@saga(name="bench-outbox")
class Emitting:
    n: int
    emit: bool = True

    @step
    def one(self, ctx):
        self._emit(ctx, 1)

    @one.compensate
    def undo_one(self, ctx):
        pass

    @step
    def two(self, ctx):
        self._emit(ctx, 2)

    @two.compensate
    def undo_two(self, ctx):
        pass

    @step
    def three(self, ctx):
        self._emit(ctx, 3)

    @three.compensate
    def undo_three(self, ctx):
        pass

    def _emit(self, ctx: Any, step_no: int) -> None:
        if self.emit:
            for k in range(EVENTS):
                ctx.emit(Noted(ctx.saga_id, step_no, k))


def _writer(directory: str, name: str, emit: bool) -> tuple[Any, SQLiteStore]:
    path = os.path.join(directory, f"{name}.db")
    store = SQLiteStore(path)
    orchestrator = Orchestrator(store)
    counter = iter(range(10**9))

    def run(n: int) -> None:
        for _ in range(n):
            result = orchestrator.run(Emitting(next(counter), emit))
            assert result.status is SagaStatus.COMPLETED

    return run, store


def checkpoints(directory: str, n: int, rounds: int) -> tuple[list[Row], SQLiteStore]:
    with_outbox, store = _writer(directory, "with", True)
    without, other = _writer(directory, "without", False)
    found = rounds_of({"with": with_outbox, "without": without}, n, rounds)
    other.close()
    w = statistics.median(r["with"] for r in found)
    wo = statistics.median(r["without"] for r in found)
    per_event = 3 * EVENTS
    return [
        Row(f"sagas emitting {per_event} events (outbox rows)", w * 1e6, "µs/saga",
            w / wo, "the same, emitting none"),
        Row("  the same sagas emitting nothing", wo * 1e6, "µs/saga"),
        Row("  events written with their checkpoints", per_event / w, "events/s"),
    ], store


def _redis(directory: str) -> tuple[subprocess.Popen[bytes], str] | None:
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if binary is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(500):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, url
        time.sleep(0.01)
    proc.kill()
    return None


def relays(directory: str, store: SQLiteStore, written: float) -> list[Row]:
    """Drain copies of the written outbox to handlers and to Redis: events/s each."""
    rows: list[Row] = []
    source = store.path
    store.close()

    def copy(name: str) -> SQLiteStore:
        target = os.path.join(directory, f"{name}.db")
        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        return SQLiteStore(target)

    handled = 0

    def count(event: object, message: object) -> None:
        nonlocal handled
        handled += 1

    handlers = Handlers()
    handlers.on(Noted, count)
    opened = copy("handlers")
    pending = opened.outbox_stats().pending
    t0 = time.perf_counter()
    relayed = Relay(opened, handlers, batch=500).drain()
    took = time.perf_counter() - t0
    opened.close()
    assert relayed == pending == handled, (relayed, pending, handled)
    rows.append(Row(f"relay to in-process handlers ({relayed:,} events)", relayed / took,
                    "events/s", relayed / took / written, "events/s written"))
    server = _redis(directory)
    if server is None:
        print("  (no redis-server installed: the Redis figure is left out)")
        return rows
    proc, url = server
    try:
        from sagaflow.brokers.redis import RedisStreams

        opened = copy("redis")
        with RedisStreams(url, "bench:events") as streams:
            t0 = time.perf_counter()
            relayed = Relay(opened, streams, batch=500).drain()
            took = time.perf_counter() - t0
        opened.close()
        rows.append(Row(f"relay to a Redis stream ({relayed:,} events)", relayed / took,
                        "events/s", relayed / took / written, "events/s written"))
    finally:
        proc.terminate()
        proc.wait(10)
    return rows


def latency(directory: str, n: int) -> list[Row]:
    """End-to-end latency of the order saga choreographed over a real Redis (each
    participant its own consumer group and orchestrator; the relay publishing the
    outbox; one pump turning them all, so no poll interval is measured) against the same
    saga orchestrated, on the same SQLite file: from the start to COMPLETED."""
    server = _redis(directory)
    if server is None:
        print("  (no redis-server installed: the latency figure is left out)")
        return []
    proc, url = server
    from decimal import Decimal

    from examples.choreography.saga import OrderCreated, OrderFlow, OrderOrchestration
    from sagaflow import Participant
    from sagaflow.brokers.redis import RedisStreams
    from sagaflow.choreography import message_for

    db = os.path.join(directory, "order.db")
    streams = RedisStreams(url, "bench:orders")
    orch = Orchestrator(f"sqlite:///{db}")
    relay = Relay(orch.store, streams, batch=100)
    hosts = []
    for name in ("inventory", "payments", "orders"):
        own = Orchestrator(f"sqlite:///{db}")
        hosts.append((Participant(own, OrderFlow, name), streams.consumer(name)))
    choreographed: list[float] = []
    orchestrated: list[float] = []
    try:
        for k in range(n + n // 10):  # the first tenth warms up
            sid = f"c-{k}"
            t0 = time.perf_counter()
            streams.publish([message_for(OrderCreated(sid, Decimal(5)), f"start-{sid}")])
            while True:
                moved = relay.relay_once()
                for participant, consumer in hosts:
                    moved += consumer.consume_once(participant.handle)
                if not moved:
                    break
            took = time.perf_counter() - t0
            result = orch.get(f"OrderFlow:{sid}")
            assert result is not None and result.status is SagaStatus.COMPLETED, result
            t0 = time.perf_counter()
            done = orch.run(OrderOrchestration(f"o-{k}", Decimal(5)))
            took_o = time.perf_counter() - t0
            assert done.status is SagaStatus.COMPLETED
            if k >= n // 10:
                choreographed.append(took)
                orchestrated.append(took_o)
    finally:
        for _, consumer in hosts:
            consumer.close()
        streams.close()
        proc.terminate()
        proc.wait(10)
    rows = []
    for what, found in (("choreographed over Redis", choreographed),
                        ("orchestrated, same store", orchestrated)):
        found.sort()
        median = statistics.median(found)
        p99 = found[min(len(found) - 1, int(len(found) * 0.99))]
        rows.append((what, median, p99))
    (_, c_med, c_p99), (_, o_med, o_p99) = rows
    return [
        Row("choreographed over Redis: median", c_med * 1e3, "ms", c_med / o_med,
            "orchestrated median"),
        Row("  p99", c_p99 * 1e3, "ms", c_p99 / o_p99, "orchestrated p99"),
        Row("orchestrated (OrderOrchestration), same store: median", o_med * 1e3, "ms"),
        Row("  p99", o_p99 * 1e3, "ms"),
    ]


def report(quick: bool = False, directory: str | None = None) -> dict[str, list[Row]]:
    """Print every figure of the group; return them (for the summary)."""
    n, rounds = (100, 3) if quick else (500, 5)
    where = tempfile.mkdtemp(prefix="sagaflow-bench-outbox-", dir=directory)
    print(f"sagaflow outbox: python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, "
          f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, databases in {where}")
    try:
        print(f"\ncheckpoints with the outbox: a 3-step saga, {3 * EVENTS} domain events each, "
              f"run() one at a time on SQLite (WAL + FULL), medians of {rounds} rounds of {n}")
        rows, store = checkpoints(where, n, rounds)
        show(rows)
        written = rows[2].value
        print("\nthe relay: the outbox those sagas wrote, drained in batches of 500")
        relayed = relays(where, store, written)
        show(relayed)
        m = 30 if quick else 200
        print(f"\nthe order (created -> stock reserved -> payment processed -> confirmed), one "
              f"at a time, {m} of each: choreographed over Redis against orchestrated, on "
              "one SQLite file (WAL + FULL)")
        timed = latency(where, m)
        show(timed)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return {"outbox": [*rows, *relayed, *timed]}

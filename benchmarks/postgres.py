"""Sagas per second on PostgreSQL: 1, 2 and 4 worker processes against a raw,
hand-written durable saga, on the same throwaway cluster (every commit durable:
``fsync`` and ``synchronous_commit`` on).

``python -m benchmarks postgres [--quick]`` (``./run.sh bench``), or
``python -m benchmarks.postgres [--quick] [--sagas N] [--workers 1,2,4] [--rounds R]``.

- **raw**: the 5-step durable saga a careful programmer writes by hand with psycopg,
  one saga after another on one connection, making the commits sagaflow makes: the
  saga's row inserted; a checkpoint before each step and one at the end, each an
  UPDATE of the row (with an optimistic version check) and an INSERT into an event log,
  committed. 7 durable commits per saga. ``raw, N processes`` runs N of them at once.
- **raw, 5 commits**: the least a durable 5-step saga can do: one commit per step (the
  figure the issue quotes: about 610 sagas/s on its machine).
- **sagaflow, N workers**: the same five steps (async no-ops) as a ``@saga``, enqueued
  in one transaction and drained by N :class:`~sagaflow.worker.Worker` processes
  (claim, lease, heartbeat, a fenced durable checkpoint before each step and at the
  end): 7 writes per saga, group-committed.

Throughput is sagas finished per second of wall time: for sagaflow, from the commit of
the queue to the last saga's end (the workers are started and connected before); for
raw, from the first process's first saga to the last one's end. Each figure is the
median of ``rounds`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from sagaflow import saga, step

STEPS = 5
ROOT = Path(__file__).resolve().parents[1]


@saga(name="bench_pg")
@attrs.define
class PgBench:
    """Five steps, four compensatable and a pivot: the benchmark's saga."""

    n: int = 0

    @step
    async def s1(self, ctx: Any) -> None:
        self.n += 1

    @s1.compensate
    async def u1(self, ctx: Any) -> None:
        self.n -= 1

    @step
    async def s2(self, ctx: Any) -> None:
        self.n += 1

    @s2.compensate
    async def u2(self, ctx: Any) -> None:
        self.n -= 1

    @step
    async def s3(self, ctx: Any) -> None:
        self.n += 1

    @s3.compensate
    async def u3(self, ctx: Any) -> None:
        self.n -= 1

    @step
    async def s4(self, ctx: Any) -> None:
        self.n += 1

    @s4.compensate
    async def u4(self, ctx: Any) -> None:
        self.n -= 1

    @step(pivot=True)
    async def s5(self, ctx: Any) -> None:
        self.n += 1


# --- the raw baseline -----------------------------------------------------------------

RAW_TABLE = """CREATE TABLE IF NOT EXISTS raw_sagas (
    saga_id text PRIMARY KEY, status text NOT NULL, step integer NOT NULL,
    data text NOT NULL, version integer NOT NULL, updated_at double precision NOT NULL
)"""


RAW_LOG = """CREATE TABLE IF NOT EXISTS raw_log (
    saga_id text NOT NULL, seq integer NOT NULL, event text NOT NULL,
    PRIMARY KEY (saga_id, seq)
)"""


_RAW_EVENTS = {
    n: "INSERT INTO raw_log VALUES " + ", ".join(["(%s, %s, %s)"] * n) for n in (1, 2)
}


def raw_saga(conn: Any) -> None:
    """One hand-written durable saga, making sagaflow's commits (see the module doc)."""
    sid = os.urandom(16).hex()
    data: dict[str, Any] = {"n": 0}
    conn.execute(
        "INSERT INTO raw_sagas VALUES (%s, 'RUNNING', 0, %s, 0, %s)",
        (sid, json.dumps(data), time.time()),
    )
    conn.execute("INSERT INTO raw_log VALUES (%s, 0, 'started')", (sid,))
    conn.commit()
    seq = 1
    for k in range(1, STEPS + 2):
        status = "COMPLETED" if k > STEPS else "RUNNING"
        events = ["step completed"] if k > 1 else []
        events.append("saga completed" if k > STEPS else "step started")
        conn.execute(
            "UPDATE raw_sagas SET status = %s, step = %s, data = %s, version = %s, "
            "updated_at = %s WHERE saga_id = %s AND version = %s",
            (status, k, json.dumps(data), k, time.time(), sid, k - 1),
        )
        conn.execute(
            _RAW_EVENTS[len(events)],
            [v for j, e in enumerate(events) for v in (sid, seq + j, e)],
        )
        conn.commit()
        seq += len(events)
        if k <= STEPS:
            data["n"] += 1  # the step


def raw_saga_5(conn: Any) -> None:
    """The least a durable 5-step saga does: one commit per step."""
    sid = os.urandom(16).hex()
    data = {"n": 0}
    for k in range(1, STEPS + 1):
        data["n"] += 1  # the step
        status = "COMPLETED" if k == STEPS else "RUNNING"
        if k == 1:
            conn.execute(
                "INSERT INTO raw_sagas VALUES (%s, %s, %s, %s, 0, %s)",
                (sid, status, k, json.dumps(data), time.time()),
            )
        else:
            conn.execute(
                "UPDATE raw_sagas SET status = %s, step = %s, data = %s, updated_at = %s "
                "WHERE saga_id = %s",
                (status, k, json.dumps(data), time.time(), sid),
            )
        conn.commit()


def raw_worker(url: str, kind: str, n: int) -> None:
    """``n`` hand-written durable sagas, one after another on one connection; prints
    when the first started and the last ended."""
    import psycopg

    one = raw_saga if kind == "7" else raw_saga_5
    with psycopg.connect(url) as conn:
        conn.execute("SELECT 1")
        conn.commit()
        t0 = time.time()
        for _ in range(n):
            one(conn)
    print(t0, time.time(), flush=True)


def run_raw(url: str, processes: int, per_process: int, kind: str = "7") -> float:
    """Sagas per second of ``processes`` raw processes, ``per_process`` sagas each."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS raw_sagas, raw_log")
        conn.execute(RAW_TABLE)
        conn.execute(RAW_LOG)
    children = [
        _spawn("raw", url, kind, str(per_process), stdout=subprocess.PIPE)
        for _ in range(processes)
    ]
    spans = []
    for child in children:
        out = child.communicate()[0]
        if child.returncode != 0:
            raise RuntimeError("a raw benchmark process failed")
        start, end = (float(x) for x in out.split())
        spans.append((start, end))
    # From the first process's first saga to the last one's end (startup excluded).
    elapsed = max(e for _, e in spans) - min(s for s, _ in spans)
    return processes * per_process / elapsed


# --- sagaflow workers -----------------------------------------------------------------


def worker_main(url: str, concurrency: int) -> None:
    """A worker process: serve PgBench sagas until SIGTERM; print READY once connected."""
    from sagaflow.stores.postgres import PostgresStore
    from sagaflow.worker import Worker

    store = PostgresStore(url)
    worker = Worker(store, [PgBench], concurrency=concurrency, poll=0.02, lease=30.0)
    print("READY", flush=True)
    stats = worker.run()
    store.close()
    print(f"{stats.claimed} {store.commits} {store.writes}", flush=True)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of every CPU, from /proc/stat (Linux); else ``None``."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def run_workers(
    url: str, processes: int, n: int, concurrency: int
) -> tuple[float, float, float | None]:
    """(sagas per second, checkpoints per commit, share of the machine's CPU time busy)
    of ``processes`` workers draining ``n`` queued sagas."""
    import psycopg

    from sagaflow.stores.postgres import PostgresStore
    from sagaflow.worker import enqueue_many

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS sagaflow_sagas, sagaflow_history, sagaflow_events, "
                     "sagaflow_meta")
    store = PostgresStore(url)
    records = [PgBench() for _ in range(n)]
    children = [
        _spawn("worker", url, str(concurrency), stdout=subprocess.PIPE) for _ in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "READY":
                raise RuntimeError("a worker failed to start")
        # One transaction: no worker sees a saga before t0.
        t0 = time.time()
        enqueue_many(store, records)
        t0 = time.time()
        cpu0 = _cpu_times()
        while True:
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT count(*), max(finished_at) FROM sagaflow_sagas "
                    "WHERE status = 'COMPLETED'"
                ).fetchone()
            assert row is not None
            if row[0] >= n:
                t1 = float(row[1])
                cpu1 = _cpu_times()
                break
            time.sleep(0.05)
    finally:
        for child in children:
            child.terminate()
        outputs = [child.communicate()[0] for child in children]
        store.close()
    commits = writes = 0
    for out in outputs:
        fields = out.split()
        if len(fields) >= 3:
            commits += int(fields[-2])
            writes += int(fields[-1])
    busy = None
    if cpu0 is not None and cpu1 is not None and cpu1[1] > cpu0[1]:
        busy = (cpu1[0] - cpu0[0]) / (cpu1[1] - cpu0[1])
    return n / (t1 - t0), (writes / commits if commits else 0.0), busy


def _spawn(*args: str, stdout: Any = None) -> subprocess.Popen[str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.postgres", "--child", *args],
        cwd=ROOT, env=env, stdout=stdout, text=True,
    )


# --- the report -----------------------------------------------------------------------


def report(
    quick: bool = False,
    sagas: int | None = None,
    workers: tuple[int, ...] = (1, 2, 4),
    concurrency: int = 64,
    rounds: int | None = None,
) -> None:
    """Start a durable throwaway cluster and print the figures."""
    from sagaflow.testing.pgcluster import DURABLE, PgCluster, find_binaries

    if find_binaries() is None:
        print("postgres benchmark skipped: no PostgreSQL server binaries (see "
              "sagaflow.testing.pgcluster)")
        return
    n = sagas if sagas is not None else (2_000 if quick else 10_000)
    rounds = rounds if rounds is not None else (1 if quick else 3)
    raw_n = max(400, n // 4)

    def median(fn: Any) -> float:
        return statistics.median(fn() for _ in range(rounds))

    with PgCluster(settings=DURABLE) as cluster:
        url = cluster.create_database("bench")
        print(f"sagaflow on PostgreSQL ({STEPS}-step saga, {os.cpu_count()} CPUs, every commit "
              f"durable; {n} sagas per sagaflow run; medians of {rounds} round(s))")
        print(f"{'case':30} {'sagas/s':>9} {'x raw':>7}  per saga (CPU busy: all cores)")
        raw1 = median(lambda: run_raw(url, 1, raw_n))
        print(f"{'raw, 1 connection':30} {raw1:9.0f} {1:7.2f}  7 commits")
        for w in workers:
            if w > 1:
                rate = median(lambda w=w: run_raw(url, w, raw_n // w))
                print(f"{f'raw, {w} processes':30} {rate:9.0f} {rate / raw1:7.2f}  7 commits")
        raw5 = median(lambda: run_raw(url, 1, raw_n, kind="5"))
        print(f"{'raw, 5 commits, 1 connection':30} {raw5:9.0f} {raw5 / raw1:7.2f}  5 commits")
        for w in workers:
            results = [run_workers(url, w, n, concurrency) for _ in range(rounds)]
            rate = statistics.median(r for r, _, _ in results)
            batch = statistics.median(b for _, b, _ in results)
            busy = [c for _, _, c in results if c is not None]
            cpu = f" (CPU {statistics.median(busy):.0%})" if busy else ""
            label = f"sagaflow, {w} worker" + ("s" if w > 1 else "")
            print(f"{label:30} {rate:9.0f} {rate / raw1:7.2f}  7 writes, "
                  f"{batch:.0f} per commit{cpu}")
        print("  x raw: against the raw saga on one connection, in the same run")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postgres")
    parser.add_argument("--quick", action="store_true", help="fewer sagas: a smoke run")
    parser.add_argument("--sagas", type=int, help="sagas per sagaflow run")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, e.g. 1,2,4")
    parser.add_argument("--concurrency", type=int, default=64, help="sagas per worker at once")
    parser.add_argument("--rounds", type=int, help="runs per figure (median)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, url, *rest = args.child
        if kind == "raw":
            raw_worker(url, rest[0], int(rest[1]))
        else:
            worker_main(url, int(rest[0]))
        return
    report(
        quick=args.quick,
        sagas=args.sagas,
        workers=tuple(int(w) for w in args.workers.split(",")),
        concurrency=args.concurrency,
        rounds=args.rounds,
    )


if __name__ == "__main__":
    main()

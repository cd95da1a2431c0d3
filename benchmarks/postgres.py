"""Sagas per second on PostgreSQL: 1, 2 and 4 worker processes against a raw,
hand-written durable saga, on the same throwaway cluster (every commit durable:
``fsync`` and ``synchronous_commit`` on).

- **raw**: the saga a careful programmer writes by hand, on one connection: run a
  step, commit a checkpoint row (INSERT for the first, UPDATE after), five steps, five
  durable commits per saga, one saga after another. ``raw xN`` runs N such processes.
- **sagaflow**: the same five steps (async no-ops) as a ``@saga``; the sagas are
  enqueued in one transaction and N :class:`~sagaflow.worker.Worker` processes drain
  the queue (claim, lease, a durable checkpoint before each step and at the end).

Throughput is sagas finished per second of wall time, from the moment the queue is
committed to the last saga's end (the workers are started and connected before).

``python -m benchmarks.postgres [--quick] [--sagas N] [--workers 1,2,4]``
"""

from __future__ import annotations

import argparse
import os
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
    data text NOT NULL, log text NOT NULL, updated_at double precision NOT NULL
)"""


def raw_worker(url: str, prefix: str, n: int) -> None:
    """``n`` hand-written durable sagas, one after another on one connection."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("SELECT 1")
        conn.commit()
        t0 = time.time()
        for i in range(n):
            sid = f"{prefix}-{i}"
            data = {"n": 0}
            log: list[str] = []
            for k in range(1, STEPS + 1):
                data["n"] += 1  # the step
                log.append(f"s{k}")
                status = "COMPLETED" if k == STEPS else "RUNNING"
                if k == 1:
                    conn.execute(
                        "INSERT INTO raw_sagas VALUES (%s, %s, %s, %s, %s, %s)",
                        (sid, status, k, repr(data), ",".join(log), time.time()),
                    )
                else:
                    conn.execute(
                        "UPDATE raw_sagas SET status = %s, step = %s, data = %s, log = %s, "
                        "updated_at = %s WHERE saga_id = %s",
                        (status, k, repr(data), ",".join(log), time.time(), sid),
                    )
                conn.commit()
    print(t0, time.time(), flush=True)


def run_raw(url: str, processes: int, per_process: int) -> float:
    """Sagas per second of ``processes`` raw processes, ``per_process`` sagas each."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RAW_TABLE)
        conn.execute("TRUNCATE raw_sagas")
    prefix = f"r{time.monotonic_ns()}"
    children = [
        _spawn("raw", url, f"{prefix}.{k}", str(per_process), stdout=subprocess.PIPE)
        for k in range(processes)
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


def run_workers(url: str, processes: int, n: int, concurrency: int) -> tuple[float, float]:
    """(sagas per second, checkpoints per commit) of ``processes`` workers draining ``n``
    queued sagas."""
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
        while True:
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT count(*), max(finished_at) FROM sagaflow_sagas "
                    "WHERE status = 'COMPLETED'"
                ).fetchone()
            assert row is not None
            if row[0] >= n:
                t1 = float(row[1])
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
    return n / (t1 - t0), (writes / commits if commits else 0.0)


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
) -> None:
    """Start a durable throwaway cluster and print the figures."""
    from sagaflow.testing.pgcluster import DURABLE, PgCluster, find_binaries

    if find_binaries() is None:
        print("postgres benchmark skipped: no PostgreSQL server binaries (see "
              "sagaflow.testing.pgcluster)")
        return
    n = sagas if sagas is not None else (2_000 if quick else 10_000)
    raw_n = max(400, n // 4)
    with PgCluster(settings=DURABLE) as cluster:
        url = cluster.create_database("bench")
        print(f"sagaflow on PostgreSQL ({STEPS}-step saga, {os.cpu_count()} CPUs, durable "
              f"commits; {n} sagas per sagaflow run)")
        print(f"{'case':28} {'sagas/s':>9} {'commits/saga':>13} {'checkpoints/commit':>19}")
        raw1 = run_raw(url, 1, raw_n)
        print(f"{'raw, 1 connection':28} {raw1:9.0f} {STEPS:13d} {1:19d}")
        for w in workers:
            rate = run_raw(url, w, raw_n // w) if w > 1 else None
            if rate is not None:
                print(f"{f'raw, {w} processes':28} {rate:9.0f} {STEPS:13d} {1:19d}")
        for w in workers:
            rate, batch = run_workers(url, w, n, concurrency)
            print(f"{f'sagaflow, {w} worker' + ('s' if w > 1 else ''):28} {rate:9.0f} "
                  f"{'7 writes':>13} {batch:19.1f}")
        print("  sagaflow writes per saga: enqueue, a checkpoint before each of the 5 steps, "
              "the end (plus a share of the batched claim)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postgres")
    parser.add_argument("--quick", action="store_true", help="fewer sagas: a smoke run")
    parser.add_argument("--sagas", type=int, help="sagas per sagaflow run")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, e.g. 1,2,4")
    parser.add_argument("--concurrency", type=int, default=64, help="sagas per worker at once")
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
    )


if __name__ == "__main__":
    main()

"""Sagas per second on PostgreSQL, against a raw hand-written durable saga on the same
throwaway cluster (every commit durable: ``fsync`` and ``synchronous_commit`` on).

``python -m benchmarks postgres [--quick]`` (``./run.sh bench``), or
``python -m benchmarks.postgres [--quick] [--sagas N] [--workers 1,2,4] [--rounds R]``.

Two ways of running sagaflow are measured, each named as such:

- **one saga at a time**: ``Orchestrator.run`` (sync steps) and ``arun`` (async steps)
  in this process, one saga after the other, against the raw saga on one connection,
  in paired rounds (medians of the rounds' ratios); and the **round trips** each makes
  per saga, counted by a proxy between client and server (a round trip: the client
  sends, then waits for the server's answer);
- **workers, many in flight**: 1, 2 and 4 worker processes, each running up to 64
  sagas at once, draining a queue; sagas/s, and where the machine's cores went (the
  workers, the PostgreSQL server, the rest).

- **raw**: the 5-step durable saga a careful programmer writes by hand with psycopg,
  one saga after another on one connection, making the commits sagaflow makes: the
  saga's row inserted; a checkpoint before each step and one at the end, each an
  UPDATE of the row (with an optimistic version check) and an INSERT into an event log,
  committed. 7 durable commits per saga, each as lean as it goes: one statement (a CTE
  writes the row and the log together) on an autocommit connection, one round trip.
  ``raw, N processes`` runs N of them at once.
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
import asyncio
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from sagaflow import Orchestrator, SagaStatus, saga, step

from .rows import Row, show

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


@saga(name="bench_pg_sync")
@attrs.define
class PgBenchSync:
    """:class:`PgBench` with plain ``def`` steps (for ``Orchestrator.run``)."""

    n: int = 0

    @step(timeout=None)
    def s1(self, ctx: Any) -> None:
        self.n += 1

    @s1.compensate(timeout=None)
    def u1(self, ctx: Any) -> None:
        self.n -= 1

    @step(timeout=None)
    def s2(self, ctx: Any) -> None:
        self.n += 1

    @s2.compensate(timeout=None)
    def u2(self, ctx: Any) -> None:
        self.n -= 1

    @step(timeout=None)
    def s3(self, ctx: Any) -> None:
        self.n += 1

    @s3.compensate(timeout=None)
    def u3(self, ctx: Any) -> None:
        self.n -= 1

    @step(timeout=None)
    def s4(self, ctx: Any) -> None:
        self.n += 1

    @s4.compensate(timeout=None)
    def u4(self, ctx: Any) -> None:
        self.n -= 1

    @step(pivot=True, timeout=None)
    def s5(self, ctx: Any) -> None:
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
    """One hand-written durable saga, making sagaflow's 7 commits as lean as they go: on
    an autocommit connection, each commit is one statement (the saga row and its log rows
    written together by a CTE), so one round trip per commit, 7 per saga."""
    sid = os.urandom(16).hex()
    data: dict[str, Any] = {"n": 0}
    conn.execute(
        "WITH s AS (INSERT INTO raw_sagas VALUES (%s, 'RUNNING', 0, %s, 0, %s)) "
        "INSERT INTO raw_log VALUES (%s, 0, 'started')",
        (sid, json.dumps(data), time.time(), sid),
    )
    seq = 1
    for k in range(1, STEPS + 2):
        status = "COMPLETED" if k > STEPS else "RUNNING"
        events = ["step completed"] if k > 1 else []
        events.append("saga completed" if k > STEPS else "step started")
        conn.execute(
            "WITH u AS (UPDATE raw_sagas SET status = %s, step = %s, data = %s, "
            "version = %s, updated_at = %s WHERE saga_id = %s AND version = %s) "
            + _RAW_EVENTS[len(events)],
            [status, k, json.dumps(data), k, time.time(), sid, k - 1]
            + [v for j, e in enumerate(events) for v in (sid, seq + j, e)],
        )
        seq += len(events)
        if k <= STEPS:
            data["n"] += 1  # the step


def raw_saga_5(conn: Any) -> None:
    """The least a durable 5-step saga does: one commit per step (autocommit: one
    statement, one round trip each)."""
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


def raw_worker(url: str, kind: str, n: int) -> None:
    """``n`` hand-written durable sagas, one after another on one connection; prints
    when the first started and the last ended."""
    import psycopg

    one = raw_saga if kind == "7" else raw_saga_5
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT 1")
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


# --- one saga at a time, and its round trips ----------------------------------------


class RoundTrips:
    """A proxy in front of the cluster's Unix socket that counts round trips: each time
    a client sends after having been answered (or for the first time), one more.

    ``url(dbname_url)`` is that URL through the proxy. Used to count, never to time.
    """

    def __init__(self, target_dir: str, port: int) -> None:
        self.target = os.path.join(target_dir, f".s.PGSQL.{port}")
        self.dir = tempfile.mkdtemp(prefix="sgf-rt-", dir="/tmp")
        self.port = port
        self.turns = 0
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(os.path.join(self.dir, f".s.PGSQL.{port}"))
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        import psycopg

        info = psycopg.conninfo.conninfo_to_dict(url)
        info["host"] = self.dir
        return psycopg.conninfo.make_conninfo(**info)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        answered = True  # the next bytes from the client start a round trip
        with selectors.DefaultSelector() as sel:
            sel.register(client, selectors.EVENT_READ, upstream)
            sel.register(upstream, selectors.EVENT_READ, client)
            while True:
                for key, _ in sel.select():
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        client.close()
                        upstream.close()
                        return
                    if source is client:
                        if answered:
                            with self._lock:
                                self.turns += 1
                            answered = False
                    else:
                        answered = True
                    key.data.sendall(data)

    def close(self) -> None:
        self._server.close()


def one_at_a_time(url: str, n: int, rounds: int) -> list[tuple[str, float, float]]:
    """(case, sagas/s, x raw) of sagaflow one saga at a time, sync and async, in paired
    rounds against the raw saga on one connection."""
    import psycopg

    from sagaflow.stores.postgres import PostgresStore

    reset_tables(url)
    store = PostgresStore(url)
    orch = Orchestrator(store=store)
    conn = psycopg.connect(url, autocommit=True)

    def raw_n(k: int) -> None:
        for _ in range(k):
            raw_saga(conn)

    def sync_n(k: int) -> None:
        for _ in range(k):
            assert orch.run(PgBenchSync()).status is SagaStatus.COMPLETED

    def async_n(k: int) -> None:
        async def main() -> None:
            for _ in range(k):
                assert (await orch.arun(PgBench())).status is SagaStatus.COMPLETED

        asyncio.run(main())

    out = []
    try:
        raws = []
        for case, fn in (("run(), one at a time", sync_n), ("arun(), one at a time", async_n)):
            raw_rate, rate, ratio = _paired(raw_n, fn, n, rounds)
            raws.append(raw_rate)
            out.append((f"sagaflow {case}", rate, ratio))
        out.insert(0, ("raw, 1 connection (paired)", statistics.median(raws), 1.0))
    finally:
        conn.close()
        store.close()
    return out


def _paired(
    raw: Callable[[int], None], mine: Callable[[int], None], n: int, rounds: int
) -> tuple[float, float, float]:
    """(raw sagas/s, sagaflow sagas/s, their ratio): medians of paired rounds."""
    raw(max(1, n // 10))
    mine(max(1, n // 10))
    raws, mines, ratios = [], [], []
    for i in range(rounds):
        order = (mine, raw) if i % 2 else (raw, mine)
        took = {}
        for fn in order:
            t0 = time.perf_counter()
            fn(n)
            took[fn] = time.perf_counter() - t0
        raws.append(n / took[raw])
        mines.append(n / took[mine])
        ratios.append(took[raw] / took[mine])
    return statistics.median(raws), statistics.median(mines), statistics.median(ratios)


def round_trips(cluster: Any, url: str, n: int = 20) -> dict[str, float]:
    """Round trips per saga: the raw saga, sagaflow run() and arun(), one at a time."""
    import psycopg

    from sagaflow.stores.postgres import PostgresStore

    proxy = RoundTrips(str(cluster.socket_dir), cluster.port)
    through = proxy.url(url)
    out: dict[str, float] = {}
    try:
        with psycopg.connect(through) as conn:
            raw_saga(conn)  # connected and warm: count from here
            proxy.turns = 0
            for _ in range(n):
                raw_saga(conn)
            out["raw"] = proxy.turns / n
        store = PostgresStore(through, pool_size=1, writers=1)
        orch = Orchestrator(store=store)
        try:
            orch.run(PgBenchSync())
            proxy.turns = 0
            for _ in range(n):
                orch.run(PgBenchSync())
            out["run()"] = proxy.turns / n

            async def main() -> None:
                await orch.arun(PgBench())
                proxy.turns = 0
                for _ in range(n):
                    await orch.arun(PgBench())

            asyncio.run(main())
            out["arun()"] = proxy.turns / n
        finally:
            store.close()
    finally:
        proxy.close()
    return out


def reset_tables(url: str) -> None:
    """Drop sagaflow's tables (the next store creates them afresh)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "DROP TABLE IF EXISTS sagaflow_sagas, sagaflow_history, sagaflow_events, "
            "sagaflow_path, sagaflow_quarantine, sagaflow_meta"
        )
        conn.execute("DROP TABLE IF EXISTS raw_sagas, raw_log")
        conn.execute(RAW_TABLE)
        conn.execute(RAW_LOG)


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


def _process_jiffies(pids: list[int]) -> float:
    """CPU time (user + system, in jiffies) used so far by ``pids`` (gone ones: 0)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += float(fields[11]) + float(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return total


def _server_pids(postmaster: int | None) -> list[int]:
    """The PostgreSQL server's processes: its postmaster and the postmaster's children."""
    if postmaster is None:
        return []
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == postmaster:
                pids.append(int(entry))
    return pids


@attrs.frozen
class WorkerRun:
    """One run of N worker processes: sagas/s, checkpoints per commit, and the share of
    the machine's CPU time that was busy, spent by the workers, by the server."""

    rate: float
    per_commit: float
    busy: float | None
    workers: float | None
    server: float | None


def run_workers(
    url: str, processes: int, n: int, concurrency: int, postmaster: int | None = None
) -> WorkerRun:
    """``processes`` workers draining ``n`` queued sagas."""
    import psycopg

    from sagaflow.stores.postgres import PostgresStore
    from sagaflow.worker import enqueue_many

    reset_tables(url)
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
        server = _server_pids(postmaster)
        workers = [child.pid for child in children]
        cpu0 = _cpu_times()
        mine0 = _process_jiffies(workers), _process_jiffies(server)
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
                mine1 = _process_jiffies(workers), _process_jiffies(server)
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
    busy = spent_workers = spent_server = None
    if cpu0 is not None and cpu1 is not None and cpu1[1] > cpu0[1]:
        total = cpu1[1] - cpu0[1]
        busy = (cpu1[0] - cpu0[0]) / total
        spent_workers = (mine1[0] - mine0[0]) / total
        spent_server = (mine1[1] - mine0[1]) / total if server else None
    per_commit = writes / commits if commits else 0.0
    return WorkerRun(n / (t1 - t0), per_commit, busy, spent_workers, spent_server)


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
) -> dict[str, Any]:
    """Start a durable throwaway cluster, print the figures, return them."""
    from sagaflow.testing.pgcluster import DURABLE, PgCluster, find_binaries

    if find_binaries() is None:
        print("postgres benchmark skipped: no PostgreSQL server binaries (see "
              "sagaflow.testing.pgcluster)")
        return {}
    n = sagas if sagas is not None else (2_000 if quick else 10_000)
    rounds = rounds if rounds is not None else (1 if quick else 3)
    single_n, single_rounds = (100, 3) if quick else (300, 7)
    raw_n = max(400, n // 4)
    figures: dict[str, Any] = {}

    def median(fn: Callable[[], float]) -> float:
        return statistics.median(fn() for _ in range(rounds))

    with PgCluster(settings=DURABLE) as cluster:
        url = cluster.create_database("bench")
        print(f"sagaflow on PostgreSQL ({STEPS}-step saga, {os.cpu_count()} CPUs, every commit "
              "durable)")
        print(f"\none saga at a time, in this process ({single_n} sagas per round, medians of "
              f"{single_rounds} paired rounds); round trips counted by a proxy")
        reset_tables(url)
        trips = round_trips(cluster, url)
        rows = []
        for case, rate, ratio in one_at_a_time(url, single_n, single_rounds):
            if case.startswith("raw"):
                rows.append(Row(case, rate))
            else:
                rows.append(Row(case, rate, ratio=ratio, against="raw, 1 connection",
                                target=0.8))
        rows.append(Row("round trips per saga, raw", trips["raw"], unit="trips"))
        for key in ("run()", "arun()"):
            rows.append(Row(f"round trips per saga, sagaflow {key}", trips[key], unit="trips",
                            ratio=trips[key] / trips["raw"], against="raw's",
                            target_max=1.0))
        figures["PostgreSQL, x1"] = rows
        show(rows)

        print(f"\nworkers, many in flight ({concurrency} sagas at once per worker; {n} sagas "
              f"queued; medians of {rounds} round(s)); CPU: share of all cores")
        raw1 = median(lambda: run_raw(url, 1, raw_n))
        workers_rows = []
        print(f"  {'raw, 1 process':36} {raw1:8.0f} {1:6.2f}  7 commits per saga")
        for w in workers:
            if w > 1:
                rate = median(lambda w=w: run_raw(url, w, raw_n // w))
                print(f"  {f'raw, {w} processes':36} {rate:8.0f} {rate / raw1:6.2f}")
        raw5 = median(lambda: run_raw(url, 1, raw_n, kind="5"))
        print(f"  {'raw, 5 commits, 1 process':36} {raw5:8.0f} {raw5 / raw1:6.2f}")
        for w in workers:
            results = [
                run_workers(url, w, n, concurrency, cluster.postmaster_pid) for _ in range(rounds)
            ]
            rate = statistics.median(r.rate for r in results)
            workers_rows.append(Row(f"{w} worker(s), {concurrency} in flight each", rate,
                                    ratio=rate / raw1, against="raw, 1 process"))
            batch = statistics.median(r.per_commit for r in results)
            label = f"sagaflow, {w} worker{'s' if w > 1 else ''}, {concurrency} in flight each"
            print(f"  {label:36} {rate:8.0f} {rate / raw1:6.2f}  {batch:.0f} checkpoints per "
                  f"commit; {_cpu_split(results)}")
        print("  x raw: against the raw saga in 1 process, in the same run")
        figures["PostgreSQL, workers"] = workers_rows
    return figures


def _cpu_split(results: list[WorkerRun]) -> str:
    def med(values: list[float | None]) -> float | None:
        found = [v for v in values if v is not None]
        return statistics.median(found) if found else None

    busy = med([r.busy for r in results])
    if busy is None:
        return "CPU not measured (no /proc)"
    spent_workers = med([r.workers for r in results]) or 0.0
    spent_server = med([r.server for r in results])
    if spent_server is None:
        return f"CPU busy {busy:.0%} (workers {spent_workers:.0%})"
    other = max(0.0, busy - spent_workers - spent_server)
    return (f"CPU busy {busy:.0%}: workers {spent_workers:.0%}, PostgreSQL "
            f"{spent_server:.0%}, other {other:.0%}")


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

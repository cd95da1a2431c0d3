"""Waiting sagas: how fast a signal or a timer resumes a parked saga, what a wait costs a
saga's throughput, and what a waiting saga costs a process.

``python -m benchmarks waits [--quick] [--dir DIR]`` (``./run.sh bench waits``). The sagas
are in :mod:`benchmarks.waitsagas`: a step, a wait for signal ``go`` (a typed payload)
or a 50 ms timer, a step; each handler notes the Unix time it ran in the saga's data, so
the figures are read from the stored record, in whichever process the saga resumed.
The stores are durable: SQLite with its default ``synchronous=FULL`` (WAL), and a
throwaway PostgreSQL cluster (started as :mod:`benchmarks.postgres` does) with ``fsync``
and ``synchronous_commit`` on. Latencies are medians and 99th percentiles (nearest rank)
over sagas signalled one after another; each is printed beside its target (the ratio is
against the target) and beside the cost of one raw durable commit on the same store,
measured in the same run.

- **signal → resume, this process**: sagas parked by ``run()`` (``arun()``); then, one at
  a time, ``Orchestrator.signal`` (``asignal``) from the same process: from the call until
  the handler ran, and until ``signal`` returned (the saga ran on to its end). On
  PostgreSQL, the round trips to the server of ``run()`` to the park and of ``signal()``
  (counted by the proxy of :mod:`benchmarks.postgres`).
- **timer overshoot, this process**: a saga parked at a 50 ms timer; a scheduler here
  sleeps until the saga's stored wake time, then calls ``resume_due()``: how late after
  the wake time the handler ran.
- **a wait's cost to throughput** (SQLite): the saga run and signalled at once
  (``run()`` then ``signal()``), against the same saga with its wait made a plain step
  (the same calls, no wait), in paired rounds; the wait's extra time per saga is given in
  raw checkpoints (the raw hand-written durable saga of :mod:`benchmarks.sqlite`, 7 commits,
  measured in the same rounds): a wait should add at most one per side (the park, the
  signal).
- **memory per waiting saga, this process**: tracemalloc over N sagas parked by
  ``arun()`` on SQLite (what the process keeps of them once parked).
- **through a worker**: ``python -m sagaflow worker --store URL --import
  benchmarks.waitsagas`` in a process of its own (its defaults), on SQLite and on
  PostgreSQL. The sagas are parked by this process; the signal is stored from this
  process at the store's level (``Store.add_signal``: this process does not resume the
  saga) and the worker resumes it: from the signal until the handler ran (its stored
  time), and until this process sees the saga's next checkpoint (a cheap ``SELECT
  status`` polled every millisecond). Timers: a saga parked here at a 50 ms timer,
  resumed by the worker: how late the handler ran. Idle: the worker's CPU time
  (``/proc``: user + system; on PostgreSQL the server's too) over a few seconds with 100
  and then 10,000 sagas waiting, and its resident memory (RSS) per waiting saga between
  the two; beside it, what a scheduler in this process pays per tick for ``resume_due()``
  with nothing due, with 100 and with 10,000 waiting (held to the same target: it must
  not grow).

Anchor: DBOS 3.4, measured on the same kind of machine (the issue's text): a message
reaches a waiting workflow in 7.2 ms median / 20 ms p99 on PostgreSQL, 517-549 ms on
SQLite (it polls once a second); a durable sleep overshoots by 1-2 ms; a waiting async
workflow costs 14-17 kB; idle CPU grows with the waiters (27 % of a core for 2,000 on
SQLite).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import gc
import math
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs

from sagaflow import Orchestrator, SagaStatus
from sagaflow.stores.sqlite import SQLiteStore

from .rows import Row, show
from .waitsagas import (
    TIMER,
    ANoWait,
    ASignalWait,
    ATimerWait,
    Go,
    NoWait,
    SignalWait,
    TimerWait,
)

ROOT = Path(__file__).resolve().parents[1]
#: How long a signalled saga may take to resume through a worker before the case gives up.
GIVE_UP = 10.0
#: What the worker's sagas module is, as ``--import`` takes it.
SAGAS_MODULE = "benchmarks.waitsagas"

# Targets (ms) and the DBOS 3.4 anchor of the issue.
SAME_PROCESS_MS = 5.0
ACROSS_PG_MS = 5.0
ACROSS_SQLITE_MS = 50.0
OVERSHOOT_MS = 2.0
BYTES_PER_WAITER = 2048
ANCHOR = {
    "sqlite": "DBOS 3.4: 517-549 ms",
    "postgres": "DBOS 3.4: 7.2 ms, p99 20 ms",
    "timer": "DBOS 3.4: 1-2 ms",
}


# --- figures ------------------------------------------------------------------------------


def p99(values: list[float]) -> float:
    """The 99th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


@attrs.frozen
class Latency:
    """Latencies (seconds) of one case, its target (ms), and what to print beside it."""

    what: str
    samples: list[float]
    target_ms: float | None = None
    commit: float | None = None  # one raw durable commit on the same store (seconds)
    anchor: str = ""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1e3

    def row(self) -> Row:
        ratio = None if self.target_ms is None else self.median_ms / self.target_ms
        return Row(self.what, self.median_ms, unit="ms", ratio=ratio,
                   against=f"target {self.target_ms:g} ms" if self.target_ms else "",
                   target_max=1.0 if self.target_ms else None)

    def show(self) -> None:
        med, high = self.median_ms, p99(self.samples) * 1e3
        line = f"  {self.what:50} {med:8.2f} {high:8.2f} ms"
        line += f" {med / (self.commit * 1e3):6.1f}" if self.commit else " " * 7
        if self.target_ms is not None:
            ok = "met" if med <= self.target_ms else "MISSED"
            line += f"   target <= {self.target_ms:g} ms: {ok}"
        if self.anchor:
            line += f"   ({self.anchor})"
        print(line)


def header(commit: float | None, store: str) -> None:
    raw = f"   x raw commit ({commit * 1e3:.2f} ms on {store})" if commit else ""
    print(f"  {'':50} {'median':>8} {'p99':>8}   {raw}")


# --- raw commits: the baseline of every latency ---------------------------------------


def sqlite_commit(directory: str, n: int) -> float:
    """Seconds of one raw durable commit on SQLite (WAL, FULL): the raw hand-written saga
    of :mod:`benchmarks.sqlite` makes 7 per saga."""
    from .sqlite import Raw

    raw = Raw(os.path.join(directory, "raw-commit.db"), "FULL")
    try:
        raw.run()
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                raw.run()
            samples.append((time.perf_counter() - t0) / n / 7)
        return statistics.median(samples)
    finally:
        raw.close()


def pg_commit(url: str, n: int) -> float:
    """Seconds of one raw durable commit on PostgreSQL: the raw saga of
    :mod:`benchmarks.postgres` (7 one-statement commits), in a database of its own."""
    import psycopg

    from .postgres import RAW_LOG, RAW_TABLE, raw_saga

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RAW_TABLE)
        conn.execute(RAW_LOG)
        raw_saga(conn)
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                raw_saga(conn)
            samples.append((time.perf_counter() - t0) / n / 7)
    return statistics.median(samples)


# --- in this process ------------------------------------------------------------------------


def same_process_signals(orch: Orchestrator, n: int) -> tuple[list[float], list[float],
                                                               list[float], list[float]]:
    """Park ``n`` sagas (sync, then async) and signal each from here: (sync to handler,
    sync to return, async to handler, async to return), seconds."""
    ids = [orch.run(SignalWait()).saga_id for _ in range(n)]
    handled, returned = [], []
    for sid in ids:
        gc.collect(0)
        t0 = time.time()
        result = orch.signal(sid, "go", Go())
        returned.append(time.time() - t0)
        assert result.status is SagaStatus.COMPLETED, result
        handled.append(result.data.handled_at - t0)

    async def run_async() -> tuple[list[float], list[float]]:
        parked = [(await orch.arun(ASignalWait())).saga_id for _ in range(n)]
        ahandled, areturned = [], []
        for sid in parked:
            gc.collect(0)
            t0 = time.time()
            result = await orch.asignal(sid, "go", Go())
            areturned.append(time.time() - t0)
            assert result.status is SagaStatus.COMPLETED, result
            ahandled.append(result.data.handled_at - t0)
        return ahandled, areturned

    ahandled, areturned = asyncio.run(run_async())
    return handled, returned, ahandled, areturned


def same_process_timers(orch: Orchestrator, n: int) -> list[float]:
    """Park ``n`` sagas at their 50 ms timer, one after another; a scheduler here sleeps
    until each one's stored wake time, then calls ``resume_due()``: seconds late."""
    late = []
    for _ in range(n):
        sid = orch.run(TimerWait()).saga_id
        record = orch.store.load(sid)
        assert record is not None and record.wake_at is not None
        time.sleep(max(0.0, record.wake_at - time.time()))
        resumed = orch.resume_due()
        assert resumed.get(sid) is SagaStatus.COMPLETED, resumed
        result = orch.get(sid)
        assert result is not None
        late.append(result.data.fired_at - record.wake_at)
    return late


def signal_cases(orch: Orchestrator, n: int, store: str, commit: float) -> list[Latency]:
    handled, returned, ahandled, areturned = same_process_signals(orch, n)
    anchor = ANCHOR[store]
    return [
        Latency("signal() -> handler ran", handled, SAME_PROCESS_MS, commit, anchor),
        Latency("signal() returned (saga at its end)", returned, None, commit),
        Latency("asignal() -> handler ran", ahandled, SAME_PROCESS_MS, commit, anchor),
        Latency("asignal() returned (saga at its end)", areturned, None, commit),
    ]


def pg_round_trips(cluster: Any, url: str, n: int = 20) -> tuple[float, float]:
    """Round trips to the server (counted by :class:`benchmarks.postgres.RoundTrips`'s
    proxy) per ``run()`` of the waiting saga to its park, and per ``signal()`` from the
    call to its return (the saga at its end)."""
    from sagaflow.stores.postgres import PostgresStore

    from .postgres import RoundTrips

    proxy = RoundTrips(str(cluster.socket_dir), cluster.port)
    store = PostgresStore(proxy.url(url), pool_size=1, writers=1)
    try:
        with Orchestrator(store) as orch:
            orch.signal(orch.run(SignalWait()).saga_id, "go", Go())  # warm
            proxy.turns = 0
            ids = [orch.run(SignalWait()).saga_id for _ in range(n)]
            parking = proxy.turns / n
            proxy.turns = 0
            for sid in ids:
                orch.signal(sid, "go", Go())
            signalling = proxy.turns / n
    finally:
        store.close()
        proxy.close()
    return parking, signalling


def rounds_of(fns: dict[str, Callable[[int], None]], n: int, rounds: int
              ) -> list[dict[str, float]]:
    """Seconds per saga of each of ``fns`` (``fn(n)`` runs n sagas), round by round: each
    round runs every one back to back, in an order that turns from round to round, so that
    other load on the machine slows them alike."""
    for fn in fns.values():  # warm up
        fn(max(1, n // 10))
    names = list(fns)
    out = []
    for r in range(rounds):
        took = {}
        for name in names[r % len(names):] + names[:r % len(names)]:
            gc.collect()
            t0 = time.perf_counter()
            fns[name](n)
            took[name] = (time.perf_counter() - t0) / n
        out.append(took)
    return out


def throughput(directory: str, n: int, rounds: int) -> list[Row]:
    """Sagas/s of the saga that waits once (signalled at once) against the same saga
    without its wait, and the raw saga's rate for the cost of one checkpoint, in the same
    rounds (SQLite, WAL + FULL, one saga at a time)."""
    from .sqlite import Raw

    raw = Raw(os.path.join(directory, "raw-throughput.db"), "FULL")
    store = SQLiteStore(os.path.join(directory, "throughput.db"))
    orch = Orchestrator(store)

    def raw_n(k: int) -> None:
        for _ in range(k):
            raw.run()

    def nowait_n(k: int) -> None:
        for _ in range(k):
            assert orch.run(NoWait()).status is SagaStatus.COMPLETED

    def wait_n(k: int) -> None:
        for _ in range(k):
            sid = orch.run(SignalWait()).saga_id
            assert orch.signal(sid, "go", Go()).status is SagaStatus.COMPLETED

    async def anowait(k: int) -> None:
        for _ in range(k):
            assert (await orch.arun(ANoWait())).status is SagaStatus.COMPLETED

    async def await_(k: int) -> None:
        for _ in range(k):
            sid = (await orch.arun(ASignalWait())).saga_id
            assert (await orch.asignal(sid, "go", Go())).status is SagaStatus.COMPLETED

    try:
        found = rounds_of({
            "raw": raw_n,
            "run": nowait_n,
            "run+signal": wait_n,
            "arun": lambda k: asyncio.run(anowait(k)),
            "arun+asignal": lambda k: asyncio.run(await_(k)),
        }, n, rounds)
    finally:
        orch.close()
        store.close()
        raw.close()

    def med(values: Iterable[float]) -> float:
        return statistics.median(values)

    checkpoint = med(r["raw"] / 7 for r in found)
    rows = [
        Row("raw hand-written saga (7 commits), one at a time", med(1 / r["raw"] for r in found)),
        Row("  one raw checkpoint (a commit)", checkpoint * 1e6, unit="µs"),
    ]
    for base, mine in (("run", "run+signal"), ("arun", "arun+asignal")):
        label = " + ".join(f"{call}()" for call in mine.split("+"))
        extra = [r[mine] - r[base] for r in found]
        per_side = [(r[mine] - r[base]) / (r["raw"] / 7) / 2 for r in found]
        rows += [
            Row(f"{label}, waits once, one at a time", med(1 / r[mine] for r in found),
                ratio=med(r[base] / r[mine] for r in found), against="same saga, no wait"),
            Row(f"  {base}() of the same saga with no wait", med(1 / r[base] for r in found)),
            Row("  the wait's extra time per saga", med(extra) * 1e6, unit="µs",
                ratio=med(per_side), against="raw checkpoints/side", target_max=1.0),
        ]
    return rows


def parked_memory(directory: str, n: int) -> float:
    """Bytes this process keeps per saga parked by ``arun()`` on SQLite (tracemalloc)."""
    store = SQLiteStore(os.path.join(directory, "memory.db"))
    orch = Orchestrator(store)

    async def park(k: int) -> None:
        for start in range(0, k, 100):
            batch = [orch.arun(ASignalWait()) for _ in range(min(100, k - start))]
            for result in await asyncio.gather(*batch):
                assert result.status is SagaStatus.RUNNING

    try:
        asyncio.run(park(200))  # warm: statements prepared, classes registered, threads
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        asyncio.run(park(n))
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    finally:
        orch.close()
        store.close()
    return (after - before) / n


# --- through a worker process -------------------------------------------------------------


class WorkerProcess:
    """``python -m sagaflow worker --store URL --import benchmarks.waitsagas``, watched:
    its stderr is kept (the last lines), ready once it says it runs."""

    def __init__(self, url: str) -> None:
        path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sagaflow", "worker", "--store", url,
             "--import", SAGAS_MODULE],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": path}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.lines: collections.deque[str] = collections.deque(maxlen=20)
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if ": running " in line:
                self.ready.set()
        self.ready.set()  # it ended: wait_ready says why

    def wait_ready(self, timeout: float = 60.0) -> str | None:
        """``None`` once it serves; else why not (what it printed as it ended)."""
        self.ready.wait(timeout)
        if self.proc.poll() is None and self.ready.is_set():
            return None
        if self.proc.poll() is None:
            return f"it did not say it runs within {timeout:g} s"
        self.proc.wait()
        said = [line for line in self.lines if line.strip()]
        return said[-1] if said else f"it exited with status {self.proc.returncode}"

    def cpu(self) -> float:
        """Seconds of CPU (user + system) it used so far."""
        from .postgres import _process_jiffies

        return _process_jiffies([self.proc.pid]) / os.sysconf("SC_CLK_TCK")

    def rss(self) -> int:
        """Its resident memory, bytes."""
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Status:
    """Cheap reads of one saga's row, straight from the store's table: its status and
    its version (one more at each checkpoint; a signal stored for it leaves it be)."""

    def __init__(self, url: str) -> None:
        sql = "SELECT status, version FROM sagaflow_sagas WHERE saga_id = ?"
        if url.startswith("sqlite:///"):
            path = url[len("sqlite:///"):]
            self.conn: Any = sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                             isolation_level=None)
            self.sql = sql
        else:
            import psycopg

            self.conn = psycopg.connect(url, autocommit=True)
            self.sql = sql.replace("?", "%s")

    def of(self, saga_id: str) -> tuple[str, int]:
        row = self.conn.execute(self.sql, (saga_id,)).fetchone()
        return str(row[0]), int(row[1])

    def until(self, saga_id: str, seen: Callable[[str, int], bool]) -> float | None:
        """Poll every millisecond until ``seen(status, version)``: the Unix time it was;
        ``None`` if not within :data:`GIVE_UP` seconds."""
        end = time.monotonic() + GIVE_UP
        while time.monotonic() < end:
            if seen(*self.of(saga_id)):
                return time.time()
            time.sleep(0.001)
        return None

    def close(self) -> None:
        self.conn.close()


def _moved(before: int, status: str, version: int) -> bool:
    return version > before


def _completed(status: str, version: int) -> bool:
    return status == "COMPLETED"


@attrs.define
class Idle:
    """The worker's CPU share of one core over a window, its RSS, the server's CPU."""

    waiting: int
    cpu: float
    rss: int
    server: float | None


def idle(worker: WorkerProcess, waiting: int, window: float, postmaster: int | None) -> Idle:
    from .postgres import _process_jiffies, _server_pids

    server = _server_pids(postmaster)
    tick = os.sysconf("SC_CLK_TCK")
    cpu0, srv0, t0 = worker.cpu(), _process_jiffies(server), time.monotonic()
    time.sleep(window)
    cpu1, srv1, t1 = worker.cpu(), _process_jiffies(server), time.monotonic()
    spent = (srv1 - srv0) / tick / (t1 - t0) if server else None
    return Idle(waiting, (cpu1 - cpu0) / (t1 - t0), worker.rss(), spent)


def tick_cost(orch: Orchestrator, n: int = 20) -> float:
    """Seconds of ``resume_due()`` with nothing due (median of ``n``): what a scheduler
    that calls it pays per tick, here beside the worker (which does not call it)."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert orch.resume_due() == {}
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def park_many(orch: Orchestrator, cls: type, n: int) -> list[str]:
    """Park ``n`` sagas of ``cls`` from here, 100 in flight (their commits grouped)."""

    async def main() -> list[str]:
        ids: list[str] = []
        for start in range(0, n, 100):
            batch = [orch.arun(cls()) for _ in range(min(100, n - start))]
            for result in await asyncio.gather(*batch):
                assert result.status is SagaStatus.RUNNING, result
                ids.append(result.saga_id)
        return ids

    return asyncio.run(main())


def through_worker(store_kind: str, url: str, store: Any, quick: bool, commit: float,
                   postmaster: int | None = None) -> list[Row]:
    """Every figure through a worker process on one store (see the module's notes)."""
    n_signals, n_timers = (50, 20) if quick else (300, 100)
    many, window = (10_000, 3.0) if quick else (10_000, 10.0)
    target = ACROSS_SQLITE_MS if store_kind == "sqlite" else ACROSS_PG_MS
    orch = Orchestrator(store)
    orch.register(SignalWait, ASignalWait, TimerWait, ATimerWait)
    payload = orch.runtime.codec.dump_payload(Go(), Go)
    rows: list[Row] = []
    parked = park_many(orch, ASignalWait, 100)
    worker = WorkerProcess(url)
    status = Status(url)
    try:
        why = worker.wait_ready()
        if why is not None:
            print(f"  worker on {'SQLite' if store_kind == 'sqlite' else 'PostgreSQL'} not "
                  f"available yet: sagaflow worker says: {why}")
            return rows
        time.sleep(1.0)
        idles = [idle(worker, len(parked), window, postmaster)]
        ticks = [tick_cost(orch)]
        parked += park_many(orch, ASignalWait, many - len(parked))
        time.sleep(2.0)
        idles.append(idle(worker, len(parked), window, postmaster))
        ticks.append(tick_cost(orch))

        handled, seen = [], []
        for sid in parked[:n_signals]:
            version = status.of(sid)[1]
            t0 = time.time()
            store.add_signal(sid, "go", uuid.uuid4().hex, payload, t0)
            at = status.until(sid, functools.partial(_moved, version))
            if at is None or status.until(sid, _completed) is None:
                print(f"  the worker did not resume a signalled saga within {GIVE_UP:g} s: "
                      "resuming parked sagas through a worker is not available yet")
                break
            record = store.load(sid)
            handled.append(record.data.handled_at - t0)
            seen.append(at - t0)
        late = []
        if len(handled) == n_signals:
            for _ in range(n_timers):
                sid = asyncio.run(orch.arun(ATimerWait())).saga_id
                record = store.load(sid)
                assert record is not None and record.wake_at is not None
                if status.until(sid, _completed) is None:
                    print(f"  the worker did not fire a timer within {GIVE_UP:g} s of its "
                          "time: not available yet")
                    break
                done = store.load(sid)
                late.append(done.data.fired_at - record.wake_at)
    finally:
        worker.stop()
        status.close()
        orch.close()

    header(commit, "SQLite" if store_kind == "sqlite" else "PostgreSQL")
    anchor = ANCHOR[store_kind]
    cases = []
    if handled:
        cases.append(Latency("signal -> handler ran in the worker", handled, target, commit,
                             anchor))
        cases.append(Latency("signal -> its next checkpoint seen here", seen, None, commit))
    if late:
        cases.append(Latency(f"timer ({TIMER * 1e3:g} ms) overshoot in the worker", late,
                             OVERSHOOT_MS, commit, ANCHOR["timer"]))
    for case in cases:
        case.show()
        rows.append(case.row())
    few, lots = idles
    tick = 1.0 / os.sysconf("SC_CLK_TCK") / window  # the measure's resolution
    growth = (lots.cpu + tick) / (few.cpu + tick)
    for each in idles:
        server = "" if each.server is None else f", PostgreSQL server {each.server:.1%}"
        print(f"  idle worker, {each.waiting:6,} sagas waiting: CPU {each.cpu:.2%} of a core"
              f"{server} (over {window:g} s); RSS {each.rss / 2**20:.1f} MiB")
    rows.append(Row(f"idle worker CPU, {lots.waiting:,} waiting", lots.cpu * 100, unit="% core",
                    ratio=growth, against=f"{few.waiting} waiting", target_max=1.5))
    per_saga = (lots.rss - few.rss) / (lots.waiting - few.waiting)
    rows.append(Row("worker RSS per waiting saga", per_saga, unit="B",
                    ratio=per_saga / BYTES_PER_WAITER, against="2 KB", target_max=1.0))
    rows.append(Row(f"resume_due(), nothing due, {lots.waiting:,} waiting", ticks[1] * 1e3,
                    unit="ms", ratio=ticks[1] / ticks[0], against=f"{few.waiting} waiting",
                    target_max=1.5))
    show(rows[-3:])
    print(f"  (idle CPU growth: the two shares, each plus the measure's resolution of "
          f"{tick:.2%}; a target of 1.5x: it must not grow with the sagas; resume_due(): "
          "a scheduler's tick in this process, held to the same target)")
    return rows


# --- the report --------------------------------------------------------------------------


def report(quick: bool = False, directory: str | None = None) -> dict[str, list[Row]]:
    """Print every figure of the group; return them (for the summary)."""
    n_same, n_timers, rounds, n_tp = (100, 30, 3, 40) if quick else (1000, 200, 7, 150)
    n_memory = 2_000 if quick else 10_000
    where = tempfile.mkdtemp(prefix="sagaflow-bench-waits-", dir=directory)
    print(f"sagaflow waiting sagas: python {sys.version.split()[0]}, sqlite "
          f"{sqlite3.sqlite_version}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, "
          f"databases in {where}")
    figures: dict[str, list[Row]] = {}
    try:
        commit = sqlite_commit(where, 20 if quick else 100)
        print(f"\nin this process, SQLite (WAL + FULL): {n_same} sagas parked, signalled one "
              f"at a time; {n_timers} timers")
        store = SQLiteStore(os.path.join(where, "same.db"))
        with Orchestrator(store) as orch:
            cases = signal_cases(orch, n_same, "sqlite", commit)
            cases.append(Latency(f"timer ({TIMER * 1e3:g} ms) overshoot, resume_due() at "
                                 "its time", same_process_timers(orch, n_timers),
                                 OVERSHOOT_MS, commit, ANCHOR["timer"]))
        store.close()
        header(commit, "SQLite")
        for case in cases:
            case.show()
        figures["waits, SQLite"] = [c.row() for c in cases if c.target_ms is not None]

        print(f"\na wait's cost to throughput (SQLite, WAL + FULL; medians of {rounds} "
              f"paired rounds of {n_tp} sagas)")
        rows = throughput(where, n_tp, rounds)
        show(rows)
        print("  (the wait's extra time per saga, in raw checkpoints per side: the park and "
              "the signal; target <= 1)")
        figures["waits, throughput"] = rows

        per_saga = parked_memory(where, n_memory)
        row = Row(f"memory per parked saga in this process ({n_memory:,})", per_saga,
                  unit="B", ratio=per_saga / BYTES_PER_WAITER, against="2 KB",
                  target_max=1.0)
        print(f"\nmemory: {n_memory:,} sagas parked by arun() on SQLite, tracemalloc "
              "(DBOS 3.4: 14-17 kB per waiting async workflow)")
        show([row])
        figures["waits, memory"] = [row]

        path = os.path.join(where, "worker.db")
        print(f"\nthrough a worker process, SQLite (WAL + FULL; sagaflow worker --store "
              f"sqlite:///{path} --import {SAGAS_MODULE})")
        store = SQLiteStore(path)
        try:
            figures["worker, SQLite"] = through_worker(
                "sqlite", f"sqlite:///{path}", store, quick, commit)
        finally:
            store.close()

        figures.update(postgres(quick, n_same, n_timers))
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return figures


def postgres(quick: bool, n_same: int, n_timers: int) -> dict[str, list[Row]]:
    """The PostgreSQL cases, on a throwaway durable cluster."""
    from sagaflow.testing.pgcluster import DURABLE, PgCluster, find_binaries

    if find_binaries() is None:
        print("\nPostgreSQL cases skipped: no PostgreSQL server binaries (see "
              "sagaflow.testing.pgcluster)")
        return {}
    from sagaflow.stores.postgres import PostgresStore

    figures: dict[str, list[Row]] = {}
    with PgCluster(settings=DURABLE) as cluster:
        commit = pg_commit(cluster.create_database("raw"), 20 if quick else 100)
        url = cluster.create_database("same")
        print(f"\nin this process, PostgreSQL (durable commits): {n_same} sagas parked, "
              f"signalled one at a time; {n_timers} timers")
        store = PostgresStore(url)
        try:
            with Orchestrator(store) as orch:
                cases = signal_cases(orch, n_same, "postgres", commit)
                cases.append(Latency(f"timer ({TIMER * 1e3:g} ms) overshoot, resume_due() "
                                     "at its time", same_process_timers(orch, n_timers),
                                     OVERSHOOT_MS, commit, ANCHOR["timer"]))
        finally:
            store.close()
        header(commit, "PostgreSQL")
        for case in cases:
            case.show()
        parking, signalling = pg_round_trips(cluster, url)
        print(f"  round trips to the server (counted by a proxy): {parking:.1f} per run() to "
              f"the park, {signalling:.1f} per signal() to the saga's end")
        figures["waits, PostgreSQL"] = [c.row() for c in cases if c.target_ms is not None]

        url = cluster.create_database("worker")
        print("\nthrough a worker process, PostgreSQL (sagaflow worker --store "
              f"postgresql://... --import {SAGAS_MODULE})")
        store = PostgresStore(url)
        try:
            figures["worker, PostgreSQL"] = through_worker(
                "postgres", url, store, quick, commit, cluster.postmaster_pid)
        finally:
            store.close()
    return figures


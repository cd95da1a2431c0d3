"""Durable sagas on SQLite against a raw hand-written durable saga, in the same run.

``python -m benchmarks sqlite [--quick] [--dir DIR]`` (``./run.sh bench``). Figures are
sagas per second, medians of rounds; each sagaflow round is paired with a raw round run
right before or after it, and each ratio is the median of the rounds' ratios, so other
load on the machine slows both sides alike.

- **raw**: the leanest hand-written 5-step durable saga on sqlite3, making sagaflow's 7
  commits (the saga's row inserted; one small write per step, before it; the end), each
  an UPDATE of the saga's row (with an optimistic version check) and an INSERT into an
  append-only event log, statements prepared once (sqlite3's statement cache), random
  128-bit ids as the orchestrator makes them;
- **sagaflow, one saga at a time**: ``Orchestrator.run`` with the default step timeouts
  (each run then hands off to a worker thread) and with ``timeout=None`` (no thread), and
  ``arun``, one saga after the other;
- **sagaflow, 100 in flight**: batches of 100 ``arun()`` under ``asyncio.gather`` (their
  checkpoints are group-committed);

each on WAL + ``synchronous=FULL`` and WAL + ``NORMAL``. Then how the cost grows: per
step for 5 and 50 steps; per saga with 1,000 and 100,000 finished sagas in the store.
Then recovery of 10,000 in-flight sagas (written through the store API as a crash leaves
them: step 2 started, not finished): ``scan`` + ``decode`` alone, and
``Orchestrator.arecover()`` until every one is COMPLETED.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import attrs

from sagaflow import Orchestrator, SagaStatus, saga, step
from sagaflow.engine import Call, new_record, next_command, settle
from sagaflow.spec import spec_of
from sagaflow.stores.sqlite import SQLiteStore

from .rows import Row, show

STEPS = 5
RECOVERY = 10_000
_DEFAULT = object()  # the step's default timeout (30 s)


def _saga_class(name: str, steps: int, is_async: bool, timeout: Any) -> type:
    """A saga of ``steps`` compensatable steps, each appending to ``log`` (module level,
    so that its stored type path imports)."""
    body: dict[str, Any] = {"__module__": __name__, "__qualname__": name}
    options = {} if timeout is _DEFAULT else {"timeout": timeout}
    for i in range(1, steps + 1):
        if is_async:
            async def forward(self: Any, ctx: Any, i: int = i) -> None:
                self.log.append(i)

            async def undo(self: Any, ctx: Any, i: int = i) -> None:
                self.log.append(-i)
        else:
            def forward(self: Any, ctx: Any, i: int = i) -> None:  # type: ignore[misc]
                self.log.append(i)

            def undo(self: Any, ctx: Any, i: int = i) -> None:  # type: ignore[misc]
                self.log.append(-i)
        for fn, attr in ((forward, f"s{i}"), (undo, f"u{i}")):
            fn.__name__, fn.__qualname__, fn.__module__ = attr, f"{name}.{attr}", __name__
        made = step(**options)(forward)
        body[f"s{i}"] = made
        body[f"u{i}"] = made.compensate(**options)(undo)
    body["__annotations__"] = {"order": str, "amount": int, "log": list[int]}
    body.update(order="o-1", amount=100, log=attrs.field(factory=list))
    cls = type(name, (), body)
    return saga(name=f"bench_{name.lower()}")(attrs.define(cls))


Bench = _saga_class("Bench", STEPS, False, None)
BenchDefault = _saga_class("BenchDefault", STEPS, False, _DEFAULT)
ABench = _saga_class("ABench", STEPS, True, None)
Bench50 = _saga_class("Bench50", 50, False, None)


# --- the raw durable saga ---------------------------------------------------------------


class Raw:
    """What a careful hand-written durable saga does: a row per saga, a log per event,
    one committed transaction per checkpoint (write-ahead), nothing else."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS raw_sagas (id TEXT PRIMARY KEY, state TEXT NOT NULL,"
            " step INTEGER NOT NULL, data TEXT NOT NULL, version INTEGER NOT NULL)"
        )
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS raw_log (id TEXT NOT NULL, seq INTEGER NOT NULL,"
            " event TEXT NOT NULL, PRIMARY KEY (id, seq)) WITHOUT ROWID"
        )

    def checkpoint(self, saga_id: str, state: str, i: int, data: dict[str, Any],
                   seq: int, log: list[str], version: int) -> None:
        import json

        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        c.execute("UPDATE raw_sagas SET state = ?, step = ?, data = ?, version = ? "
                  "WHERE id = ? AND version = ?",
                  (state, i, json.dumps(data), version, saga_id, version - 1))
        c.executemany("INSERT INTO raw_log (id, seq, event) VALUES (?, ?, ?)",
                      [(saga_id, seq + k, e) for k, e in enumerate(log)])
        c.execute("COMMIT")

    def run(self, steps: int = STEPS) -> None:
        import json

        saga_id = os.urandom(16).hex()  # random ids, as the orchestrator makes them
        data: dict[str, Any] = {"order": "o-1", "amount": 100, "log": []}
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO raw_sagas (id, state, step, data, version) VALUES (?, ?, ?, ?, 0)",
                  (saga_id, "s1", 0, json.dumps(data)))
        c.execute("INSERT INTO raw_log (id, seq, event) VALUES (?, 0, 'started')", (saga_id,))
        c.execute("COMMIT")
        seq = 1
        for i in range(1, steps + 1):
            log = ["completed"] if i > 1 else []
            self.checkpoint(saga_id, f"s{i}", i, data, seq, [*log, "step started"], i)
            seq += len(log) + 1
            data["log"].append(i)  # the step
        self.checkpoint(saga_id, "completed", steps, data, seq, ["completed", "done"],
                        steps + 1)

    def close(self) -> None:
        self.conn.close()


# --- measuring ---------------------------------------------------------------------------


def paired(raw: Callable[[int], None], mine: Callable[[int], None], n_raw: int, n_mine: int,
           rounds: int) -> tuple[float, float, float]:
    """(raw sagas/s, sagaflow sagas/s, sagaflow / raw): medians over ``rounds`` rounds,
    raw and sagaflow back to back in each (alternating which goes first)."""
    raw(max(1, n_raw // 10))  # warm up both
    mine(max(1, n_mine // 10))
    raws, mines, ratios = [], [], []
    for i in range(rounds):
        took = {}
        for fn, n in ((mine, n_mine), (raw, n_raw)) if i % 2 else ((raw, n_raw), (mine, n_mine)):
            gc.collect()
            t0 = time.perf_counter()
            fn(n)
            took[fn] = n / (time.perf_counter() - t0)
        raws.append(took[raw])
        mines.append(took[mine])
        ratios.append(took[mine] / took[raw])
    return statistics.median(raws), statistics.median(mines), statistics.median(ratios)


def runner(orch: Orchestrator, cls: type, how: str) -> Callable[[int], None]:
    """Run ``n`` sagas of ``cls``: ``run`` or ``arun`` one at a time, or ``arun`` 100 at
    a time under gather."""
    if how == "run":
        def run_n(n: int) -> None:
            for _ in range(n):
                assert orch.run(cls()).status is SagaStatus.COMPLETED
        return run_n

    async def one_by_one(n: int) -> None:
        for _ in range(n):
            assert (await orch.arun(cls())).status is SagaStatus.COMPLETED

    async def hundreds(n: int) -> None:
        for start in range(0, n, 100):
            batch = [orch.arun(cls()) for _ in range(min(100, n - start))]
            for result in await asyncio.gather(*batch):
                assert result.status is SagaStatus.COMPLETED

    main = one_by_one if how == "arun" else hundreds
    return lambda n: asyncio.run(main(n))


def bench_mode(directory: str, mode: str, n_single: int, n_concurrent: int,
               rounds: int) -> list[Row]:
    """Each way of running sagaflow against the raw saga, on one sync level."""
    raw = Raw(os.path.join(directory, f"raw-{mode}.db"), mode)

    def raw_n(n: int) -> None:
        for _ in range(n):
            raw.run()

    store = SQLiteStore(os.path.join(directory, f"sagaflow-{mode}.db"), synchronous=mode)
    orch = Orchestrator(store=store)
    one_target = 0.9 if mode == "FULL" else 0.6
    rows, raws = [], []
    for name, fn, n, target in (
        ("run(), default timeouts, one at a time", runner(orch, BenchDefault, "run"),
         n_single, one_target),
        ("run(), timeout=None, one at a time", runner(orch, Bench, "run"), n_single,
         one_target),
        ("arun(), one at a time", runner(orch, ABench, "arun"), n_single, one_target),
        ("arun(), 100 in flight", runner(orch, ABench, "gather"), n_concurrent, 3.0),
    ):
        commits, writes = store.commits, store.writes
        raw_rate, mine, ratio = paired(raw_n, fn, n_single, n, rounds)
        raws.append(raw_rate)
        rows.append(Row(f"sagaflow {name}", mine, ratio=ratio, against="raw x1",
                        target=target))
        if "in flight" in name:
            per_commit = (store.writes - writes) / max(1, store.commits - commits)
            rows.append(Row("  checkpoints per commit", per_commit, unit="writes"))
    rows.insert(0, Row("raw hand-written saga, one at a time", statistics.median(raws)))
    orch.close()
    store.close()
    raw.close()
    return rows


def growth_by_steps(directory: str, n: int, rounds: int) -> list[Row]:
    """Per-step cost (µs, NORMAL, sync, one at a time) of a 5-step and a 50-step saga:
    a checkpoint writes what changed, so it should not grow with the steps."""
    store = SQLiteStore(os.path.join(directory, "steps.db"), synchronous="NORMAL")
    orch = Orchestrator(store=store)
    short, long = runner(orch, Bench, "run"), runner(orch, Bench50, "run")
    short(20)
    long(2)
    per_step: dict[int, list[float]] = {5: [], 50: []}
    for _ in range(rounds):
        for steps, fn, k in ((5, short, n), (50, long, max(1, n // 10))):
            gc.collect()
            t0 = time.perf_counter()
            fn(k)
            per_step[steps].append((time.perf_counter() - t0) / k / steps * 1e6)
    store.close()
    five, fifty = statistics.median(per_step[5]), statistics.median(per_step[50])
    return [
        Row("per step, 5-step saga", five, unit="µs"),
        Row("per step, 50-step saga", fifty, unit="µs", ratio=fifty / five,
            against="per step, 5 steps", target_max=1.25),
    ]


def growth_by_store(directory: str, n: int, rounds: int, big: int) -> list[Row]:
    """Sagas/s (NORMAL, sync, one at a time) with 1,000 and ``big`` finished sagas in the
    store, in alternating rounds: a checkpoint's cost should not grow with what the
    store holds."""
    runs: dict[int, Callable[[int], None]] = {}
    stores = []
    for size in (1_000, big):
        store = SQLiteStore(os.path.join(directory, f"filled-{size}.db"), synchronous="NORMAL")
        orch = Orchestrator(store=store)
        fill(store, orch, size)
        runs[size] = runner(orch, Bench, "run")
        runs[size](20)
        stores.append(store)
    rates: dict[int, list[float]] = {size: [] for size in runs}
    for k in range(rounds):
        for size in sorted(runs, reverse=bool(k % 2)):
            gc.collect()
            t0 = time.perf_counter()
            runs[size](n)
            rates[size].append(n / (time.perf_counter() - t0))
    for store in stores:
        store.close()
    small, large = statistics.median(rates[1_000]), statistics.median(rates[big])
    return [
        Row("one at a time, 1,000 finished sagas stored", small),
        Row(f"one at a time, {big:,} finished sagas stored", large, ratio=large / small,
            against="1,000 stored", target=0.9),
    ]


def fill(store: SQLiteStore, orch: Orchestrator, size: int) -> None:
    """Put ``size`` finished sagas in ``store``: one run through the store, copied by SQL
    under new random ids (the events of each, inline in the row, come along)."""
    result = orch.run(Bench())
    conn = sqlite3.connect(store.path, isolation_level=None)
    try:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(sagaflow_sagas)")]
        rest = ", ".join(c for c in columns if c != "saga_id")
        conn.execute("BEGIN")
        conn.execute(
            f"INSERT INTO sagaflow_sagas (saga_id, {rest}) "
            "WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < ?) "
            f"SELECT lower(hex(randomblob(16))), {rest} FROM n, sagaflow_sagas "
            "WHERE saga_id = ?",
            (size - 1, result.saga_id),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def in_flight(path: str, n: int, cls: type) -> float:
    """Write ``n`` sagas of ``cls`` as a crash leaves them (step 1 done, step 2 started,
    nothing after), through the store API; seconds taken."""
    spec = spec_of(cls)
    store = SQLiteStore(path, synchronous="NORMAL")

    async def write() -> None:
        async def one(i: int) -> None:
            record = new_record(spec, cls(), f"r-{i:06}", 1.0)
            call = next_command(spec, record, 2.0)  # step 1 started
            assert isinstance(call, Call)
            settle(spec, record, call, 2.0)  # step 1 done
            assert isinstance(next_command(spec, record, 3.0), Call)  # step 2 started
            await store.asave(record)  # a first save inserts it

        for start in range(0, n, 1000):
            await asyncio.gather(*(one(i) for i in range(start, min(n, start + 1000))))

    t0 = time.perf_counter()
    asyncio.run(write())
    took = time.perf_counter() - t0
    store.close()
    return took


def scan_decode(path: str, cls: type, n: int) -> float:
    """Seconds to read back every in-flight saga (scan + decode) from a fresh store."""
    active = (SagaStatus.NOT_STARTED, SagaStatus.RUNNING, SagaStatus.COMPENSATING)
    with SQLiteStore(path, readonly=True) as store:
        store.register(cls)
        gc.collect()
        t0 = time.perf_counter()
        records = [store.decode(s) for s in store.scan(status=active)]
        took = time.perf_counter() - t0
    assert len(records) == n and all(r.status is SagaStatus.RUNNING for r in records)
    return took


def recover_all(path: str, cls: type, n: int, synchronous: str) -> float:
    """Seconds for ``Orchestrator.arecover()`` on a fresh store to finish every saga."""
    with SQLiteStore(path, synchronous=synchronous) as store:
        orch = Orchestrator(store, sagas=[cls])
        gc.collect()
        t0 = time.perf_counter()
        report = asyncio.run(orch.arecover())
        took = time.perf_counter() - t0
        orch.close()
    assert not report.skipped, report.describe()
    assert len(report.resumed) == n
    assert set(report.resumed.values()) == {SagaStatus.COMPLETED}
    return took


def recovery(directory: str, n: int, quick: bool) -> list[Row]:
    """Recovery figures: async steps and plain ``def`` steps (run on worker threads
    under ``arecover``), on both sync levels (only async on FULL when ``quick``). The
    target, 2 s for 10,000, is scaled to ``n``."""
    rows = []
    limit = 2.0 * n / RECOVERY
    for cls, label in ((ABench, "async steps"), (Bench, "def steps")):
        for mode in ("FULL", "NORMAL"):
            if quick and (cls is Bench or mode == "NORMAL"):
                continue
            path = os.path.join(directory, f"recovery-{cls.__name__}-{mode}.db")
            fill_took = in_flight(path, n, cls)
            if mode == "FULL" and cls is ABench:
                read = scan_decode(path, cls, n)
                rows.append(Row(f"scan + decode {n:,} in-flight sagas", read, unit="s"))
            took = recover_all(path, cls, n, mode)
            rows.append(Row(f"arecover() {n:,} in flight to COMPLETED, {label}, {mode}", took,
                            unit="s", ratio=took / limit, against=f"{limit:g} s",
                            target_max=1.0))
            if mode == "FULL" and cls is ABench:
                rows.append(Row("  (writing them in flight took)", fill_took, unit="s"))
    return rows


def report(quick: bool = False, directory: str | None = None) -> dict[str, list[Row]]:
    """Print every figure; return them (for the summary and the closing note)."""
    n_full, n_normal, n_conc, rounds = (40, 100, 300, 3) if quick else (100, 300, 1000, 7)
    where = tempfile.mkdtemp(prefix="sagaflow-bench-", dir=directory)
    print(f"sagaflow SQLite benchmark: python {sys.version.split()[0]}, sqlite "
          f"{sqlite3.sqlite_version}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, "
          f"databases in {where}; medians of {rounds} paired rounds")
    figures: dict[str, list[Row]] = {}
    try:
        for mode, n in (("FULL", n_full), ("NORMAL", n_normal)):
            rows = bench_mode(where, mode, n, n_conc, rounds)
            figures[f"SQLite WAL+{mode}"] = rows
            print(f"\nWAL + synchronous={mode}, a 5-step saga (7 commits): sagas/s, and x the raw "
                  "saga's rate (one at a time) in paired rounds")
            show(rows)

        print("\nhow the cost grows (WAL + NORMAL, run(), timeout=None, one at a time)")
        rows = growth_by_steps(where, 40 if quick else 200, rounds)
        rows += growth_by_store(where, 100 if quick else 300, rounds,
                                10_000 if quick else 100_000)
        figures["SQLite growth"] = rows
        show(rows)

        n = 2_000 if quick else RECOVERY
        print(f"\nrecovery of {n:,} in-flight sagas (step 2 of 5 started; each resumed to "
              "COMPLETED)")
        rows = recovery(where, n, quick)
        figures["SQLite recovery"] = rows
        show(rows)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return figures

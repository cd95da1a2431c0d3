"""Durable sagas on SQLite against a raw hand-written durable saga, in the same run.

``python -m benchmarks sqlite [--quick] [--dir DIR]`` (``./run.sh bench``). Figures are
sagas per second, medians of rounds; each sagaflow round is paired with a raw round run
right before or after it, and each ratio is the median of the rounds' ratios, so other
load on the machine slows both sides alike:

- raw: a hand-written 5-step durable saga on sqlite3 doing the same 7 commits as
  sagaflow (insert; one checkpoint before each step; the final one), each an UPDATE of
  the saga row (with an optimistic version check) plus an INSERT into an append-only
  event log, keyed by random 128-bit ids as the orchestrator makes them;
- sagaflow, 1 at a time: ``Orchestrator.run`` (sync) and ``arun`` (async);
- sagaflow, 100 concurrent: batches of 100 ``arun()`` under ``asyncio.gather`` (their
  checkpoints are group-committed);

each on WAL + ``synchronous=FULL`` and WAL + ``NORMAL``. Targets (issue 6): one saga at
a time >= 0.8x raw; 100 concurrent >= 3x raw (one saga at a time).

Then: the cost of encoding one checkpoint, by history length, against the whole record
as one JSON blob; and recovery of 10,000 in-flight sagas (written through the store API
as a crash leaves them: step 2 started, not finished): ``scan`` + ``decode`` alone, and
``Orchestrator.arecover()`` until every one is COMPLETED (target: <= 2 s).
"""

from __future__ import annotations

import asyncio
import gc
import json
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

from sagaflow import Orchestrator, SagaStatus, events, saga, step
from sagaflow.codec import default_codec
from sagaflow.definition import spec_of
from sagaflow.engine import Call, new_record, next_command, settle
from sagaflow.stores.sqlite import SQLiteStore

STEPS = 5
RECOVERY = 10_000


@saga(name="bench_durable")
@attrs.define
class Bench:
    order: str = "o-1"
    amount: int = 100
    log: list[int] = attrs.field(factory=list)

    @step(timeout=None)
    def s1(self, ctx: Any) -> None:
        self.log.append(1)

    @s1.compensate(timeout=None)
    def u1(self, ctx: Any) -> None:
        self.log.append(-1)

    @step(timeout=None)
    def s2(self, ctx: Any) -> None:
        self.log.append(2)

    @s2.compensate(timeout=None)
    def u2(self, ctx: Any) -> None:
        self.log.append(-2)

    @step(timeout=None)
    def s3(self, ctx: Any) -> None:
        self.log.append(3)

    @s3.compensate(timeout=None)
    def u3(self, ctx: Any) -> None:
        self.log.append(-3)

    @step(timeout=None)
    def s4(self, ctx: Any) -> None:
        self.log.append(4)

    @s4.compensate(timeout=None)
    def u4(self, ctx: Any) -> None:
        self.log.append(-4)

    @step(timeout=None)
    def s5(self, ctx: Any) -> None:
        self.log.append(5)

    @s5.compensate(timeout=None)
    def u5(self, ctx: Any) -> None:
        self.log.append(-5)


@saga(name="bench_durable_async")
@attrs.define
class ABench:
    order: str = "o-1"
    amount: int = 100
    log: list[int] = attrs.field(factory=list)

    @step(timeout=None)
    async def s1(self, ctx: Any) -> None:
        self.log.append(1)

    @s1.compensate(timeout=None)
    async def u1(self, ctx: Any) -> None:
        self.log.append(-1)

    @step(timeout=None)
    async def s2(self, ctx: Any) -> None:
        self.log.append(2)

    @s2.compensate(timeout=None)
    async def u2(self, ctx: Any) -> None:
        self.log.append(-2)

    @step(timeout=None)
    async def s3(self, ctx: Any) -> None:
        self.log.append(3)

    @s3.compensate(timeout=None)
    async def u3(self, ctx: Any) -> None:
        self.log.append(-3)

    @step(timeout=None)
    async def s4(self, ctx: Any) -> None:
        self.log.append(4)

    @s4.compensate(timeout=None)
    async def u4(self, ctx: Any) -> None:
        self.log.append(-4)

    @step(timeout=None)
    async def s5(self, ctx: Any) -> None:
        self.log.append(5)

    @s5.compensate(timeout=None)
    async def u5(self, ctx: Any) -> None:
        self.log.append(-5)


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
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        c.execute("UPDATE raw_sagas SET state = ?, step = ?, data = ?, version = ? "
                  "WHERE id = ? AND version = ?",
                  (state, i, json.dumps(data), version, saga_id, version - 1))
        c.executemany("INSERT INTO raw_log (id, seq, event) VALUES (?, ?, ?)",
                      [(saga_id, seq + k, e) for k, e in enumerate(log)])
        c.execute("COMMIT")

    def run(self) -> None:
        saga_id = os.urandom(16).hex()  # random ids, as the orchestrator makes them
        data: dict[str, Any] = {"order": "o-1", "amount": 100, "log": []}
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO raw_sagas (id, state, step, data, version) VALUES (?, ?, ?, ?, 0)",
                  (saga_id, "s1", 0, json.dumps(data)))
        c.execute("INSERT INTO raw_log (id, seq, event) VALUES (?, 0, 'started')", (saga_id,))
        c.execute("COMMIT")
        seq = 1
        for i in range(1, STEPS + 1):
            log = ["completed"] if i > 1 else []
            self.checkpoint(saga_id, f"s{i}", i, data, seq, [*log, "step started"], i)
            seq += len(log) + 1
            data["log"].append(i)  # the step
        self.checkpoint(saga_id, "completed", STEPS, data, seq, ["completed", "done"],
                        STEPS + 1)

    def close(self) -> None:
        self.conn.close()


# --- measuring ---------------------------------------------------------------------------


def rate(fn: Callable[[int], None], n: int) -> float:
    """Sagas per second of ``fn(n)``."""
    gc.collect()
    t0 = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t0)


def paired(raw: Callable[[int], None], mine: Callable[[int], None], n_raw: int, n_mine: int,
           rounds: int) -> tuple[float, float, float]:
    """(raw sagas/s, sagaflow sagas/s, sagaflow / raw): medians over ``rounds`` rounds,
    raw and sagaflow back to back in each (alternating which goes first)."""
    raw(max(1, n_raw // 10))  # warm up both
    mine(max(1, n_mine // 10))
    raws, mines, ratios = [], [], []
    for i in range(rounds):
        if i % 2:
            b = rate(mine, n_mine)
            a = rate(raw, n_raw)
        else:
            a = rate(raw, n_raw)
            b = rate(mine, n_mine)
        raws.append(a)
        mines.append(b)
        ratios.append(b / a)
    return statistics.median(raws), statistics.median(mines), statistics.median(ratios)


@attrs.frozen
class Row:
    what: str
    value: float
    ratio: float | None = None  #: x the raw single saga, in paired rounds
    unit: str = "sagas/s"


def bench_mode(directory: str, mode: str, n_single: int, n_concurrent: int,
               rounds: int) -> list[Row]:
    """Each way of running sagaflow against the raw saga, on one sync level."""
    raw = Raw(os.path.join(directory, f"raw-{mode}.db"), mode)

    def raw_n(n: int) -> None:
        for _ in range(n):
            raw.run()

    store = SQLiteStore(os.path.join(directory, f"sagaflow-{mode}.db"), synchronous=mode)
    orch = Orchestrator(store=store)

    def sync_n(n: int) -> None:
        for _ in range(n):
            result = orch.run(Bench())
            assert result.status is SagaStatus.COMPLETED

    def async_n(n: int) -> None:
        async def main() -> None:
            for _ in range(n):
                result = await orch.arun(ABench())
                assert result.status is SagaStatus.COMPLETED

        asyncio.run(main())

    def concurrent_n(n: int) -> None:
        async def main() -> None:
            for start in range(0, n, 100):
                batch = [orch.arun(ABench()) for _ in range(min(100, n - start))]
                for result in await asyncio.gather(*batch):
                    assert result.status is SagaStatus.COMPLETED

        asyncio.run(main())

    rows = []
    raws = []
    for name, fn, n in (
        ("sagaflow run() x1", sync_n, n_single),
        ("sagaflow arun() x1", async_n, n_single),
        ("sagaflow arun() x100 concurrent", concurrent_n, n_concurrent),
    ):
        commits, writes = store.commits, store.writes
        raw_rate, mine, ratio = paired(raw_n, fn, n_single, n, rounds)
        raws.append(raw_rate)
        rows.append(Row(name, mine, ratio))
        if name.endswith("concurrent"):
            per_commit = (store.writes - writes) / max(1, store.commits - commits)
            rows.append(Row("  checkpoints per commit", per_commit, unit="writes"))
    rows.insert(0, Row("raw hand-written saga x1", statistics.median(raws), 1.0))
    store.close()
    raw.close()
    return rows


def encoding_cost(lengths: tuple[int, ...]) -> list[tuple[int, float, float]]:
    """Microseconds to encode one checkpoint (two new lifecycle events) of a saga whose
    history has ``n`` events: this store's way (the row, the inline tail, a chunk spilled
    every 32) against the whole record as one JSON blob."""
    spec = spec_of(Bench)
    rows = []
    store = SQLiteStore(":memory:")
    for n in lengths:
        record = new_record(spec, Bench(), f"enc-{n}", 0.0)
        store.create(record)
        t = 0.0
        while len(record.history) < n:
            t += 1
            record.history.append(
                events.StepRetrying(record.saga_id, spec.name, t, "s1", 2, "x", delay=1.0)
            )
        store.save(record)  # the store now knows this saga: saves encode what is new
        reps = 2000
        t0 = time.perf_counter()
        for _ in range(reps):
            record.history.append(events.StepStarted(record.saga_id, spec.name, t, "s1", 3))
            record.history.append(events.StepCompleted(record.saga_id, spec.name, t, "s1", 3))
            store._item(record, create=False)
            record.version += 1
        split = (time.perf_counter() - t0) / reps * 1e6
        del record.history[n:]
        reps = 2000 if n <= 100 else 100
        t0 = time.perf_counter()
        for _ in range(reps):
            default_codec.dumps(record)
        blob = (time.perf_counter() - t0) / reps * 1e6
        rows.append((n, split, blob))
    store.close()
    return rows


def in_flight(path: str, n: int, cls: type) -> float:
    """Write ``n`` sagas of ``cls`` as a crash leaves them (step 1 done, step 2 started,
    nothing after), through the store API; seconds taken."""
    spec = spec_of(cls)
    store = SQLiteStore(path, synchronous="NORMAL")

    async def fill() -> None:
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
    asyncio.run(fill())
    took = time.perf_counter() - t0
    store.close()
    return took


def scan_decode(path: str, cls: type, n: int) -> float:
    """Seconds to read back every in-flight saga (scan + decode) from a fresh store."""
    active = (SagaStatus.NOT_STARTED, SagaStatus.RUNNING, SagaStatus.COMPENSATING)
    with SQLiteStore(path) as store:
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
    under ``arecover``), on both sync levels (only async on FULL when ``quick``)."""
    rows = []
    for cls, label in ((ABench, "async steps"), (Bench, "def steps")):
        for mode in ("FULL", "NORMAL"):
            if quick and (cls is Bench or mode == "NORMAL"):
                continue
            path = os.path.join(directory, f"recovery-{cls.__name__}-{mode}.db")
            fill = in_flight(path, n, cls)
            if mode == "FULL" and cls is ABench:
                read = scan_decode(path, cls, n)
                rows.append(Row(f"scan + decode {n:,} in-flight sagas", read, unit="s"))
            took = recover_all(path, cls, n, mode)
            rows.append(Row(f"arecover() {n:,}, {label}, {mode}", took, unit="s"))
            if mode == "FULL" and cls is ABench:
                rows.append(Row(f"  (writing them in flight took {fill:.2f}s)", 0, unit=""))
    return rows


def report(quick: bool = False, directory: str | None = None) -> dict[str, Any]:
    """Print every figure; return them (for the closing note of a change)."""
    n_single, n_conc, rounds = (100, 300, 3) if quick else (200, 1000, 9)
    where = tempfile.mkdtemp(prefix="sagaflow-bench-", dir=directory)
    print(f"sagaflow SQLite benchmark: python {sys.version.split()[0]}, sqlite "
          f"{sqlite3.sqlite_version}, {os.cpu_count()} cpus, databases in {where}; "
          f"medians of {rounds} paired rounds")
    figures: dict[str, Any] = {}
    try:
        for mode in ("FULL", "NORMAL"):
            rows = bench_mode(where, mode, n_single, n_conc, rounds)
            figures[mode] = rows
            print(f"\nWAL + synchronous={mode}, a 5-step saga (7 commits): sagas/s, and x the "
                  "raw saga's rate (one at a time) in paired rounds")
            for row in rows:
                if row.ratio is None:
                    print(f"  {row.what:36} {row.value:10.1f}")
                else:
                    print(f"  {row.what:36} {row.value:10.0f}   {row.ratio:5.2f}x")
        print("  targets: x1 >= 0.80x raw; x100 concurrent >= 3x raw")

        print("\ncheckpoint encoding (µs): history length, this store, whole record as one blob")
        for n, split, blob in encoding_cost((12, 100, 1000)):
            print(f"  {n:6}  {split:8.1f}  {blob:8.1f}")

        raw_full = next(r.value for r in figures["FULL"] if r.ratio == 1.0)
        print(f"\nrecovery of {RECOVERY:,} in-flight sagas (step 2 of 5 started; each resumed "
              "to COMPLETED); target <= 2 s")
        rows = recovery(where, RECOVERY, quick)
        figures["recovery"] = rows
        for row in rows:
            if row.unit == "s" and row.what.startswith("arecover"):
                per_s = RECOVERY / row.value
                print(f"  {row.what:40} {row.value:6.2f}s  ({per_s:,.0f} sagas/s, "
                      f"{per_s / raw_full:.1f}x raw FULL x1)")
            elif row.unit == "s":
                print(f"  {row.what:40} {row.value:6.2f}s")
            else:
                print(f"  {row.what}")
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return figures

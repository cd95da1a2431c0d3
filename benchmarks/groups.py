"""Parallel groups and fan-outs: what running calls together costs, against the leanest
honest baselines run in the same process.

``python -m benchmarks groups [--quick] [--dir DIR]`` (``./run.sh bench groups``). The
sagas are in :mod:`benchmarks.groupsagas` (built with ``SagaBuilder``); every member, step
and item is compensatable (its compensation does nothing), none fails; the steps'
default timeouts (30 s). Stores: SQLite with its default WAL + ``synchronous=FULL`` and a
throwaway PostgreSQL cluster (``fsync`` and ``synchronous_commit`` on), started as
:mod:`benchmarks.postgres` does.

- **a group of 10 members that each sleep 10 ms** (``asyncio.sleep``), ``arun()``, one
  saga after the other: wall time per saga (median, p90) against the floor (10 ms) and
  against two hand-written durable sagas run in the same rounds: the leanest
  (``asyncio.gather`` of the 10 sleeps, one checkpoint for all of them: the saga's row
  and the members started in one commit, the outcomes and the end in a second), and a
  DBOS-like one (one write per member as it ends, each its own commit: DBOS 3.4 takes
  48-72 ms for this, the issue's anchor). Target: <= 15 ms.
- **orchestration overhead per member**: a group of 10 no-work members against the same
  10 calls written as a sequential saga, each minus a plain-Python loop of the same 10
  calls (as :mod:`benchmarks.core` does): (group - plain) / (sequential - plain), memory
  store and SQLite, ``run()`` (sync members on call threads) and ``arun()`` (coroutine
  members as tasks). Target <= 2x.
- **a fan-out over 1,000 items** (no-work coroutine items; ``limit=10`` and unlimited),
  ``arun()`` on SQLite, against the same 1,000 calls run one by one: a 1,000-step
  sequential saga (``SagaBuilder``; target: the fan-out no slower, <= 1x), and the raw
  hand-written durable loop with the fewest commits that runs them one by one (the
  saga's row, one commit per step marking it started and the one before done, the end:
  1,002 commits; no target, what a hand-written loop pays).

Rounds run every case back to back, in an order that turns from round to round, so that
other load on the machine slows them alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import math
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from sagaflow import Orchestrator, SagaStatus
from sagaflow.stores import MemoryStore, SQLiteStore

from .core import handoff
from .groupsagas import (
    ITEMS,
    MEMBERS,
    SLEEP,
    BenchFanOut10,
    BenchFanOutAll,
    BenchGroupAsync,
    BenchGroupNap,
    BenchGroupSync,
    BenchSeq1000,
    BenchSeqAsync,
    BenchSeqSync,
    anoop,
    noop,
)
from .rows import Row, show
from .waits import rounds_of

TARGET_MS = 15.0
OVERHEAD_MAX = 2.0
ANCHOR = "DBOS 3.4: 48-72 ms"


def p90(values: list[float]) -> float:
    """The 90th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


# --- the hand-written durable sagas --------------------------------------------------


def _sqlite(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS raw_sagas (id TEXT PRIMARY KEY, state TEXT NOT "
                 "NULL, data TEXT NOT NULL, version INTEGER NOT NULL)")
    conn.execute("CREATE TABLE IF NOT EXISTS raw_log (id TEXT NOT NULL, seq INTEGER NOT NULL,"
                 " event TEXT NOT NULL, PRIMARY KEY (id, seq)) WITHOUT ROWID")
    return conn


def _events(sid: str, first: int, events: list[str]) -> list[tuple[str, int, str]]:
    return [(sid, first + k, e) for k, e in enumerate(events)]


class RawSQLite:
    """The hand-written durable sagas on sqlite3 (one connection, statements cached)."""

    def __init__(self, path: str) -> None:
        self.conn = _sqlite(path)

    def _commit(self, sql: str, args: tuple[Any, ...], log: list[tuple[str, int, str]]
                ) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        c.execute(sql, args)
        c.executemany("INSERT INTO raw_log (id, seq, event) VALUES (?, ?, ?)", log)
        c.execute("COMMIT")

    def _create(self, sid: str, state: str, log: list[str]) -> None:
        self._commit("INSERT INTO raw_sagas (id, state, data, version) VALUES (?, ?, ?, 0)",
                     (sid, state, json.dumps({"n": 0})), _events(sid, 0, log))

    def _update(self, sid: str, state: str, version: int, seq: int, log: list[str]) -> None:
        self._commit("UPDATE raw_sagas SET state = ?, data = ?, version = ? WHERE id = ? "
                     "AND version = ?", (state, json.dumps({"n": 0}), version, sid,
                                         version - 1), _events(sid, seq, log))

    async def one_checkpoint(self) -> None:
        """2 commits: the row with the members started; their outcomes and the end."""
        sid = os.urandom(16).hex()
        self._create(sid, "together", [f"m{i} started" for i in range(MEMBERS)])
        await asyncio.gather(*(asyncio.sleep(SLEEP) for _ in range(MEMBERS)))
        self._update(sid, "completed", 1, MEMBERS,
                     [f"m{i} completed" for i in range(MEMBERS)] + ["done"])

    async def per_member(self) -> None:
        """DBOS-like: the row; one commit per member as it ends; the end."""
        sid = os.urandom(16).hex()
        self._create(sid, "together", ["started"])

        async def member(i: int) -> None:
            await asyncio.sleep(SLEEP)
            self.conn.execute("INSERT INTO raw_log (id, seq, event) VALUES (?, ?, ?)",
                              (sid, 1 + i, f"m{i} output"))  # autocommit: one commit

        await asyncio.gather(*(member(i) for i in range(MEMBERS)))
        self._update(sid, "completed", 1, 1 + MEMBERS, ["done"])

    def loop(self, steps: int = ITEMS) -> None:
        """The steps one by one, fewest commits: the row (the first step started), one
        commit per step (the one before done, this one started), the end."""
        sid = os.urandom(16).hex()
        self._create(sid, "s0", ["started", "s0 started"])
        seq = 2
        for i in range(1, steps):
            self._update(sid, f"s{i}", i, seq, [f"s{i - 1} completed", f"s{i} started"])
            seq += 2
        self._update(sid, "completed", steps, seq, [f"s{steps - 1} completed", "done"])

    def close(self) -> None:
        self.conn.close()


PG_TABLES = (
    "CREATE TABLE IF NOT EXISTS raw_sagas (id text PRIMARY KEY, state text NOT NULL, "
    "data text NOT NULL, version integer NOT NULL)",
    "CREATE TABLE IF NOT EXISTS raw_log (id text NOT NULL, seq integer NOT NULL, "
    "event text NOT NULL, PRIMARY KEY (id, seq))",
)


class RawPostgres:
    """The same on PostgreSQL: asyncio psycopg, autocommit, one statement per commit (the
    row and its log rows by one CTE); the DBOS-like saga's members each on a connection
    of their own (as a pool would give them), so their commits do not queue here."""

    def __init__(self, conns: list[Any]) -> None:
        self.conns = conns

    @classmethod
    async def open(cls, url: str) -> RawPostgres:
        import psycopg

        conns = [await psycopg.AsyncConnection.connect(url, autocommit=True)
                 for _ in range(MEMBERS)]
        for sql in PG_TABLES:
            await conns[0].execute(sql)
        return cls(conns)

    @staticmethod
    def _log(n: int) -> str:
        return "INSERT INTO raw_log VALUES " + ", ".join(["(%s, %s, %s)"] * n)

    async def _create(self, sid: str, log: list[str]) -> None:
        await self.conns[0].execute(
            "WITH s AS (INSERT INTO raw_sagas VALUES (%s, 'together', %s, 0)) "
            + self._log(len(log)),
            [sid, json.dumps({"n": 0})] + [v for e in _events(sid, 0, log) for v in e])

    async def _end(self, sid: str, seq: int, log: list[str]) -> None:
        await self.conns[0].execute(
            "WITH u AS (UPDATE raw_sagas SET state = 'completed', data = %s, version = 1 "
            "WHERE id = %s AND version = 0) " + self._log(len(log)),
            [json.dumps({"n": 0}), sid] + [v for e in _events(sid, seq, log) for v in e])

    async def one_checkpoint(self) -> None:
        sid = os.urandom(16).hex()
        await self._create(sid, [f"m{i} started" for i in range(MEMBERS)])
        await asyncio.gather(*(asyncio.sleep(SLEEP) for _ in range(MEMBERS)))
        await self._end(sid, MEMBERS, [f"m{i} completed" for i in range(MEMBERS)] + ["done"])

    async def per_member(self) -> None:
        sid = os.urandom(16).hex()
        await self._create(sid, ["started"])

        async def member(i: int) -> None:
            await asyncio.sleep(SLEEP)
            await self.conns[i].execute("INSERT INTO raw_log VALUES (%s, %s, %s)",
                                        (sid, 1 + i, f"m{i} output"))

        await asyncio.gather(*(member(i) for i in range(MEMBERS)))
        await self._end(sid, 1 + MEMBERS, ["done"])

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()


# --- a: the sleeping group ------------------------------------------------------------


async def _latencies(cases: dict[str, Callable[[], Awaitable[None]]], n: int
                     ) -> dict[str, list[float]]:
    """Seconds of each case's saga, ``n`` of each, interleaved (the order turning)."""
    names = list(cases)
    for name in names:  # warm up
        for _ in range(3):
            await cases[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    for k in range(n):
        for name in names[k % len(names):] + names[:k % len(names)]:
            t0 = time.perf_counter()
            await cases[name]()
            out[name].append(time.perf_counter() - t0)
    return out


def _sleeping_rows(store: str, found: dict[str, list[float]]) -> list[Row]:
    flow = found["sagaflow"]
    lean = statistics.median(found["one checkpoint"])
    dbos = statistics.median(found["per member"])
    med = statistics.median(flow)
    print(f"  {'':58} {'median':>8} {'p90':>8}")
    labels = {
        "sagaflow": "sagaflow: arun() of the group",
        "one checkpoint": "hand-written: gather, one checkpoint (2 commits)",
        "per member": "hand-written, DBOS-like: a commit per member (12)",
    }
    for name, label in labels.items():
        print(f"  {label:58} {statistics.median(found[name]) * 1e3:8.2f} "
              f"{p90(found[name]) * 1e3:8.2f} ms")
    ok = "met" if med * 1e3 <= TARGET_MS else "MISSED"
    print(f"  sagaflow: {med * 1e3:.2f} ms = {med / SLEEP:.2f}x the floor ({SLEEP * 1e3:g} ms), "
          f"{med / lean:.2f}x the one-checkpoint saga, {med / dbos:.2f}x the DBOS-like one; "
          f"target <= {TARGET_MS:g} ms: {ok} ({ANCHOR})")
    return [
        Row(f"group of {MEMBERS} x 10 ms sleep, {store}", med * 1e3, unit="ms",
            ratio=med / SLEEP, against="the 10 ms floor", target_max=TARGET_MS / 1e3 / SLEEP),
        Row(f"  the same, {store}", med * 1e3, unit="ms", ratio=med / lean,
            against="1-checkpoint saga"),
        Row(f"  the same, {store}", med * 1e3, unit="ms", ratio=med / dbos,
            against="DBOS-like (12 commits)"),
    ]


def sleeping_sqlite(directory: str, n: int) -> list[Row]:
    raw = RawSQLite(os.path.join(directory, "raw-sleep.db"))
    store = SQLiteStore(os.path.join(directory, "sleep.db"))
    orch = Orchestrator(store)

    async def flow() -> None:
        assert (await orch.arun(BenchGroupNap())).status is SagaStatus.COMPLETED

    try:
        found = asyncio.run(_latencies({"sagaflow": flow, "one checkpoint": raw.one_checkpoint,
                                        "per member": raw.per_member}, n))
    finally:
        orch.close()
        store.close()
        raw.close()
    return _sleeping_rows("SQLite", found)


def sleeping_postgres(cluster: Any, n: int) -> list[Row]:
    from sagaflow.stores.postgres import PostgresStore

    store = PostgresStore(cluster.create_database("sleep"))
    orch = Orchestrator(store)
    raw_url = cluster.create_database("raw_sleep")

    async def main() -> dict[str, list[float]]:
        raw = await RawPostgres.open(raw_url)

        async def flow() -> None:
            assert (await orch.arun(BenchGroupNap())).status is SagaStatus.COMPLETED

        try:
            return await _latencies({"sagaflow": flow, "one checkpoint": raw.one_checkpoint,
                                     "per member": raw.per_member}, n)
        finally:
            await raw.close()

    try:
        found = asyncio.run(main())
    finally:
        orch.close()
        store.close()
    return _sleeping_rows("PostgreSQL", found)


# --- b: overhead per member -----------------------------------------------------------


def _plain(k: int) -> None:
    for _ in range(k):
        for _ in range(MEMBERS):
            noop(None, None)


async def _aplain(k: int) -> None:
    for _ in range(k):
        for _ in range(MEMBERS):
            await anoop(None, None)


def overhead(directory: str, n_memory: int, n_sqlite: int, rounds: int) -> list[Row]:
    rows = []
    fresh = itertools.count()

    @contextlib.contextmanager
    def orchestrator(kind: str) -> Iterator[Orchestrator]:
        # A fresh store each round: a store that grows without bound measures the garbage
        # collector (memory) or the file's growth (SQLite), not sagaflow.
        store: Any = (MemoryStore() if kind == "memory" else
                      SQLiteStore(os.path.join(directory, f"overhead-{next(fresh)}.db")))
        try:
            with Orchestrator(store) as orch:
                yield orch
        finally:
            if kind != "memory":
                store.close()

    for kind in ("memory", "SQLite"):
        n = n_memory if kind == "memory" else n_sqlite
        for how in ("run", "arun"):
            def sync(cls: type, kind: str = kind) -> Callable[[int], None]:
                def run(k: int) -> None:
                    with orchestrator(kind) as orch:
                        for _ in range(k):
                            assert orch.run(cls()).status is SagaStatus.COMPLETED
                return run

            def asyn(cls: type, kind: str = kind) -> Callable[[int], None]:
                async def main(k: int) -> None:
                    with orchestrator(kind) as orch:
                        for _ in range(k):
                            assert (await orch.arun(cls())).status is SagaStatus.COMPLETED
                return lambda k: asyncio.run(main(k))

            if how == "run":
                fns = {"plain": _plain, "group": sync(BenchGroupSync),
                       "sequential": sync(BenchSeqSync)}
            else:
                fns = {"plain": lambda k: asyncio.run(_aplain(k)),
                       "group": asyn(BenchGroupAsync), "sequential": asyn(BenchSeqAsync)}
            found = rounds_of(fns, n, rounds)
            member = statistics.median((r["group"] - r["plain"]) / MEMBERS for r in found)
            per_step = statistics.median((r["sequential"] - r["plain"]) / MEMBERS
                                         for r in found)
            ratio = statistics.median((r["group"] - r["plain"]) / (r["sequential"] - r["plain"])
                                      for r in found)
            rows.append(Row(f"{how}(), {kind}: per member of a group of {MEMBERS}",
                            member * 1e6, unit="µs", ratio=ratio,
                            against="per step, sequential", target_max=OVERHEAD_MAX))
            rows.append(Row(f"  per step of the same {MEMBERS} calls in sequence",
                            per_step * 1e6, unit="µs"))
    return rows


# --- c: the fan-out -------------------------------------------------------------------


def fan_out(directory: str, rounds: int) -> list[Row]:
    store = SQLiteStore(os.path.join(directory, "fanout.db"))
    orch = Orchestrator(store)
    raw = RawSQLite(os.path.join(directory, "raw-loop.db"))
    items = list(range(ITEMS))

    def flow(cls: type) -> Callable[[int], None]:
        async def main(k: int) -> None:
            for _ in range(k):
                assert (await orch.arun(cls(list(items)))).status is SagaStatus.COMPLETED
        return lambda k: asyncio.run(main(k))

    def loop(k: int) -> None:
        for _ in range(k):
            raw.loop()

    try:
        found = rounds_of({
            "limit=10": flow(BenchFanOut10), "unlimited": flow(BenchFanOutAll),
            "sequential": flow(BenchSeq1000), "raw": loop,
        }, 1, rounds)
    finally:
        orch.close()
        store.close()
        raw.close()

    def med(name: str) -> float:
        return statistics.median(r[name] for r in found)

    rows = [
        Row(f"raw hand-written loop, {ITEMS} steps one by one ({ITEMS + 2} commits)",
            med("raw") * 1e3, unit="ms"),
        Row(f"sequential saga of {ITEMS} steps (SagaBuilder)", med("sequential") * 1e3,
            unit="ms", ratio=statistics.median(r["sequential"] / r["raw"] for r in found),
            against="raw loop"),
    ]
    for name in ("limit=10", "unlimited"):
        rows.append(Row(f"fan-out over {ITEMS} items, {name}", med(name) * 1e3, unit="ms",
                        ratio=statistics.median(r[name] / r["sequential"] for r in found),
                        against="sequential saga", target_max=1.0))
        rows.append(Row("  the same", med(name) * 1e3, unit="ms",
                        ratio=statistics.median(r[name] / r["raw"] for r in found),
                        against="raw loop"))
    return rows


# --- the report -----------------------------------------------------------------------


def report(quick: bool = False, directory: str | None = None) -> dict[str, list[Row]]:
    """Print every figure of the group; return them (for the summary)."""
    n_sleep, rounds, n_memory, n_sqlite, fan_rounds = (
        (30, 3, 100, 20, 1) if quick else (200, 5, 500, 60, 3)
    )
    where = tempfile.mkdtemp(prefix="sagaflow-bench-groups-", dir=directory)
    print(f"sagaflow parallel groups and fan-outs: python {sys.version.split()[0]}, sqlite "
          f"{sqlite3.sqlite_version}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}, "
          f"databases in {where}")
    figures: dict[str, list[Row]] = {}
    try:
        print(f"\na group of {MEMBERS} members that each sleep {SLEEP * 1e3:g} ms "
              f"(asyncio.sleep), arun() one saga at a time, {n_sleep} of each interleaved; "
              "SQLite (WAL + FULL)")
        figures["groups, SQLite"] = sleeping_sqlite(where, n_sleep)
        figures.update(postgres(n_sleep))

        print(f"\norchestration overhead per member: a group of {MEMBERS} no-work members "
              f"against the same {MEMBERS} calls as a sequential saga, each minus a "
              f"plain-Python loop of them (medians of {rounds} rounds of {n_memory} sagas "
              f"on memory, {n_sqlite} on SQLite WAL + FULL, a fresh store each round)")
        rows = overhead(where, n_memory, n_sqlite, rounds)
        show(rows)
        low, mid, high = handoff(500 if quick else 3000)
        print("  (ratio: (group - plain) / (sequential - plain); default timeouts: a "
              "sequential run() runs its steps on one watched call thread, a group's sync "
              "members each on a call thread of their own (a thread handoff each: a bare "
              f"lock round trip between two threads here, no sagaflow, {mid * 1e6:.1f} µs "
              f"median, {low * 1e6:.1f}-{high * 1e6:.1f}); async members are tasks)")
        figures["groups, overhead"] = rows

        print(f"\na fan-out over {ITEMS:,} no-work items against the same {ITEMS:,} calls "
              f"one by one, arun() on SQLite (WAL + FULL); medians of {fan_rounds} rounds")
        rows = fan_out(where, fan_rounds)
        show(rows)
        figures["groups, fan-out"] = rows
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return figures


def postgres(n: int) -> dict[str, list[Row]]:
    from sagaflow.testing.pgcluster import DURABLE, PgCluster, find_binaries

    if find_binaries() is None:
        print("\nPostgreSQL case skipped: no PostgreSQL server binaries (see "
              "sagaflow.testing.pgcluster)")
        return {}
    with PgCluster(settings=DURABLE) as cluster:
        print(f"\nthe same on PostgreSQL (durable commits), {n} of each interleaved")
        return {"groups, PostgreSQL": sleeping_postgres(cluster, n)}

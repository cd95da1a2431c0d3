"""Orchestration overhead per step, against a plain-Python saga run in the same process;
decoration; memory per in-flight async saga; recovery of many in-flight sagas.

Every case says what it runs. The sync cases run with the steps' default timeouts (30 s:
``@step`` with no ``timeout``), which puts each run on a call thread watched by the
caller (one thread handoff per run), and with ``timeout=None`` beside them (no thread).
The bare cost of one such handoff on this machine (two threads passing a lock back and
forth, no sagaflow) is printed too: it is the floor of the sync cases with timeouts.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import attrs

from sagaflow import Orchestrator, saga, spec_of, step
from sagaflow.engine import new_record, next_command
from sagaflow.stores import MemoryStore, SQLiteStore

STEPS = 5
FAIL_AT = 4  # 1-based: the 4th step fails, 3 compensations run


class Boom(Exception):
    pass


# --- the baseline: what a careful hand-written saga does -----------------------------


def plain_saga(fail_at: int | None, log: list[int]) -> str:
    undo: list[Callable[[], None]] = []
    try:
        for i in range(1, STEPS + 1):
            if i == fail_at:
                raise Boom
            log.append(i)
            undo.append(lambda i=i: log.append(-i))
        return "COMPLETED"
    except Boom:
        for fn in reversed(undo):
            fn()
        return "COMPENSATED"


async def aplain_saga(fail_at: int | None, log: list[int]) -> str:
    undo: list[Callable[[], Any]] = []
    try:
        for i in range(1, STEPS + 1):
            if i == fail_at:
                raise Boom
            await _anoop()
            log.append(i)
            undo.append(lambda i=i: log.append(-i))
        return "COMPLETED"
    except Boom:
        for fn in reversed(undo):
            await _anoop()
            fn()
        return "COMPENSATED"


async def _anoop() -> None:
    return None


# --- the same saga in sagaflow ---------------------------------------------------------


DEFAULT = "default"  # no timeout= at all: the steps' default (30 s)


def _step(timeout: float | str | None) -> Any:
    """``@step`` as the case asks: with no ``timeout`` (the default), or this one."""
    return step if timeout == DEFAULT else step(timeout=timeout)


def _undo(forward: Any, timeout: float | str | None) -> Any:
    return forward.compensate if timeout == DEFAULT else forward.compensate(timeout=timeout)


def make_sync(timeout: float | str | None) -> type:
    @saga(name="bench_sync")
    @attrs.define
    class Bench:
        fail_at: int | None = None
        log: list[int] = attrs.field(factory=list)

        @_step(timeout)
        def s1(self, ctx: Any) -> None:
            self.log.append(1)

        @_undo(s1, timeout)
        def u1(self, ctx: Any) -> None:
            self.log.append(-1)

        @_step(timeout)
        def s2(self, ctx: Any) -> None:
            self.log.append(2)

        @_undo(s2, timeout)
        def u2(self, ctx: Any) -> None:
            self.log.append(-2)

        @_step(timeout)
        def s3(self, ctx: Any) -> None:
            self.log.append(3)

        @_undo(s3, timeout)
        def u3(self, ctx: Any) -> None:
            self.log.append(-3)

        @_step(timeout)
        def s4(self, ctx: Any) -> None:
            if self.fail_at == 4:
                raise Boom
            self.log.append(4)

        @_undo(s4, timeout)
        def u4(self, ctx: Any) -> None:
            self.log.append(-4)

        @(step(pivot=True) if timeout == DEFAULT else step(pivot=True, timeout=timeout))
        def s5(self, ctx: Any) -> None:
            self.log.append(5)

    return Bench


def make_async(timeout: float | str | None) -> type:
    @saga(name="bench_async")
    @attrs.define
    class ABench:
        fail_at: int | None = None
        log: list[int] = attrs.field(factory=list)

        @_step(timeout)
        async def s1(self, ctx: Any) -> None:
            self.log.append(1)

        @_undo(s1, timeout)
        async def u1(self, ctx: Any) -> None:
            self.log.append(-1)

        @_step(timeout)
        async def s2(self, ctx: Any) -> None:
            self.log.append(2)

        @_undo(s2, timeout)
        async def u2(self, ctx: Any) -> None:
            self.log.append(-2)

        @_step(timeout)
        async def s3(self, ctx: Any) -> None:
            self.log.append(3)

        @_undo(s3, timeout)
        async def u3(self, ctx: Any) -> None:
            self.log.append(-3)

        @_step(timeout)
        async def s4(self, ctx: Any) -> None:
            if self.fail_at == 4:
                raise Boom
            self.log.append(4)

        @_undo(s4, timeout)
        async def u4(self, ctx: Any) -> None:
            self.log.append(-4)

        @(step(pivot=True) if timeout == DEFAULT else step(pivot=True, timeout=timeout))
        async def s5(self, ctx: Any) -> None:
            self.log.append(5)

    return ABench


def _median_per_saga(fn: Callable[[int], None], n: int, rounds: int) -> float:
    """Median over rounds of the seconds per saga, ``fn(n)`` running n sagas."""
    samples = []
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        fn(n)
        samples.append((time.perf_counter() - t0) / n)
    return statistics.median(samples)


CASES: tuple[tuple[float | str | None, str], ...] = (
    (DEFAULT, "default timeouts (30 s)"),
    (None, "timeout=None"),
)


def overhead(rounds: int, n: int) -> list[tuple[str, float, float, float]]:
    """Rows of (case, µs per saga, baseline µs per saga, overhead µs per step)."""
    rows = []
    for fail_at, label in ((None, "happy"), (FAIL_AT, "fail@4")):  # fail@4: 3 undone
        calls = STEPS if fail_at is None else (FAIL_AT - 1) * 2 + 1

        def base(n: int, fail_at: int | None = fail_at) -> None:
            for _ in range(n):
                plain_saga(fail_at, [])

        base_t = _median_per_saga(base, n, rounds)
        for timeout, tlabel in CASES:
            cls = make_sync(timeout)

            def run(n: int, cls: type = cls, fail_at: int | None = fail_at) -> None:
                # A fresh in-memory store per round: it keeps every record, and a store
                # that grows without bound measures the garbage collector, not sagaflow.
                with Orchestrator() as orch:
                    for _ in range(n):
                        orch.run(cls(fail_at))

            t = _median_per_saga(run, n, rounds)
            rows.append((f"sync {label}, {tlabel}", t, base_t, (t - base_t) / calls))

        async def abase(n: int, fail_at: int | None = fail_at) -> None:
            for _ in range(n):
                await aplain_saga(fail_at, [])

        abase_t = _median_per_saga(lambda n: asyncio.run(abase(n)), n, rounds)
        for timeout, tlabel in CASES:
            acls = make_async(timeout)

            async def arun(n: int, acls: type = acls, fail_at: int | None = fail_at) -> None:
                orch = Orchestrator()
                for _ in range(n):
                    await orch.arun(acls(fail_at))

            t = _median_per_saga(lambda n, f=arun: asyncio.run(f(n)), n, rounds)
            rows.append((f"async {label}, {tlabel}", t, abase_t, (t - abase_t) / calls))
    return rows


def decoration(rounds: int) -> float:
    """Median seconds of @saga on an attrs class with 10 compensatable steps."""
    src = "class S:\n    x: int = 0\n" + "".join(
        f"    @step\n    def a{i}(self, ctx): ...\n"
        f"    @a{i}.compensate\n    def u{i}(self, ctx): ...\n"
        for i in range(10)
    )
    samples = []
    for _ in range(rounds):
        ns: dict[str, Any] = {"step": step}
        exec(src, ns)
        cls = attrs.define(ns["S"])
        t0 = time.perf_counter()
        saga(cls)
        samples.append(time.perf_counter() - t0)
        assert len(spec_of(cls).steps) == 10
    return statistics.median(samples)


def memory(n: int) -> tuple[float, float]:
    """Bytes per in-flight saga waiting in a step: (sagaflow, plain coroutine), n at once."""

    async def measure(make: Callable[[asyncio.Event], Any]) -> float:
        gate = asyncio.Event()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tasks = [asyncio.ensure_future(make(gate)) for _ in range(n)]
        for _ in range(5):
            await asyncio.sleep(0)
        during = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        gate.set()
        await asyncio.gather(*tasks)
        return (during - before) / n

    @saga(name="bench_wait")
    @attrs.define
    class Wait:
        gate: asyncio.Event

        @step
        async def s1(self, ctx: Any) -> None:
            pass

        @s1.compensate
        async def u1(self, ctx: Any) -> None:
            pass

        @step
        async def s2(self, ctx: Any) -> None:
            await self.gate.wait()

        @s2.compensate
        async def u2(self, ctx: Any) -> None:
            pass

        @step(pivot=True)
        async def s3(self, ctx: Any) -> None:
            pass

    async def plain_step(gate: asyncio.Event) -> None:
        await gate.wait()

    async def plain(gate: asyncio.Event) -> None:
        # The hand-written saga, its first step done, awaiting its second step's
        # coroutine (as aplain_saga awaits each step), which waits.
        undo: list[Callable[[], None]] = []
        undo.append(lambda: None)
        await plain_step(gate)

    async def main() -> tuple[float, float]:
        orch = Orchestrator()
        flow = await measure(lambda gate: orch.arun(Wait(gate)))
        base = await measure(plain)
        return flow, base

    return asyncio.run(main())


def handoff(n: int, rounds: int = 7) -> tuple[float, float, float]:
    """Seconds of one round trip between two threads passing locks (no sagaflow): what a
    sync run with timeouts pays at least, once per run, to run on a watched thread.
    (min, median, max) over rounds, each with a fresh thread: the cost depends on whether
    the scheduler puts the two threads on one core or two."""

    def once() -> float:
        go, done = threading.Lock(), threading.Lock()
        go.acquire()
        done.acquire()

        def serve() -> None:
            for _ in range(n):
                go.acquire()
                done.release()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        t0 = time.perf_counter()
        for _ in range(n):
            go.release()
            done.acquire(timeout=30)
        took = time.perf_counter() - t0
        thread.join()
        return took / n

    samples = sorted(once() for _ in range(rounds))
    return samples[0], statistics.median(samples), samples[-1]


def recovery(count: int) -> tuple[float, float]:
    """Seconds for ``arecover()`` to bring ``count`` in-flight sagas (the 5-step async
    saga, cut off in its first step) to their end: (from a SQLite file, WAL+NORMAL; the
    same records held by a memory store, i.e. recovery's own cost without the store's
    decoding, encoding and commits)."""
    cls = make_async(DEFAULT)
    spec = spec_of(cls)

    def in_flight() -> list[Any]:
        now = time.time()
        records = []
        for i in range(count):
            record = new_record(spec, cls(None), f"r{i:07d}", now)
            next_command(spec, record, now)  # step 1 started: its process died there
            records.append(record)
        return records

    async def sqlite(path: str) -> float:
        store = SQLiteStore(path, synchronous="NORMAL")
        store.register(cls)
        await asyncio.gather(*(store.acreate(r) for r in in_flight()))
        store.close()
        with Orchestrator(SQLiteStore(path, synchronous="NORMAL"), sagas=[cls]) as orch:
            gc.collect()
            t0 = time.perf_counter()
            report = await orch.arecover()
            took = time.perf_counter() - t0
        assert len(report.resumed) == count, report.describe()[:300]
        return took

    async def memory() -> float:
        store = MemoryStore()
        for record in in_flight():
            store.create(record)
        orch = Orchestrator(store, sagas=[cls])
        gc.collect()
        t0 = time.perf_counter()
        report = await orch.arecover()
        took = time.perf_counter() - t0
        assert len(report.resumed) == count
        return took

    with tempfile.TemporaryDirectory() as folder:
        on_sqlite = asyncio.run(sqlite(os.path.join(folder, "recovery.db")))
    return on_sqlite, asyncio.run(memory())


def report(quick: bool = False) -> None:
    rounds, n = (3, 300) if quick else (9, 1000)
    load = os.getloadavg()[0]
    print(f"sagaflow core benchmark ({STEPS}-step saga; medians of {rounds} rounds of {n} sagas; "
          f"load average {load:.2f} on {os.cpu_count()} cores)")
    print(f"{'case':46} {'µs/saga':>9} {'baseline':>9} {'ratio':>7} {'overhead µs/step':>17}")
    for case, t, base, per_step in overhead(rounds, n):
        print(f"{case:46} {t * 1e6:9.1f} {base * 1e6:9.2f} {t / base:6.1f}x {per_step * 1e6:17.2f}")
    print("  happy: 5 steps; fail@4: step 4 of 5 fails, 3 compensations (7 calls);")
    print("  overhead/step = (sagaflow - plain Python saga, same process) / calls made")
    low, mid, high = handoff(500 if quick else 3000)
    print(f"  one thread handoff (a bare lock round trip between two threads, no sagaflow): "
          f"median {mid * 1e6:.1f} µs (from {low * 1e6:.1f} to {high * 1e6:.1f} over 7 "
          f"rounds); a sync run with timeouts pays it once: {mid * 1e6 / STEPS:.1f} µs/step "
          "of the happy path")
    print(f"decoration of a 10-step saga: {decoration(50 if quick else 300) * 1e3:.3f} ms (median)")
    count = 10_000 if quick else 100_000
    flow, base = memory(count)
    print(
        f"memory per in-flight async saga ({count:,} waiting in a step, default timeouts, "
        f"tracemalloc): {flow:,.0f} B (a plain saga's task awaiting its step coroutine "
        f"{base:,.0f} B; sagaflow's own "
        f"{flow - base:,.0f} B)"
    )
    sagas = 2_000 if quick else 10_000
    on_sqlite, own = recovery(sagas)
    print(
        f"recovery: arecover() of {sagas:,} in-flight sagas ({STEPS}-step async, cut off in "
        f"step 1) to their end: {on_sqlite:.2f} s from SQLite (WAL+NORMAL); "
        f"{own:.2f} s of it is recovery's own cost (the same records in a memory store)"
    )

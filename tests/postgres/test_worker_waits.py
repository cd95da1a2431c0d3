"""PostgreSQL workers and waiting sagas: a saga that parks is released to the queue,
due at its wake time; a signal makes it due at once and wakes the workers (NOTIFY), also
when it commits while a worker parks the saga; timers fire after restarts and takeovers;
waiting sagas cost a worker nothing.

Worker processes run ``sagaflow worker --poll 30``: what they do within well under 30 s
they did because they were told, or because they slept until a saga's time."""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from wait_sagas import (
    LOG_ENV,
    ROOT,
    SAGAS,
    Approval,
    Decision,
    Nap,
    calls,
    clone_parked,
    environment,
    serving,
    signal_from_another_process,
    start_worker,
    stop,
    until,
    wait_for_line,
)

from sagaflow import Orchestrator, signals
from sagaflow.definition import spec_of
from sagaflow.stores.postgres import PostgresStore
from sagaflow.worker import Worker, enqueue, wait

DECISION = {"approved": True, "by": "ann"}


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The calls' log (this process logs too)."""
    path = tmp_path / "calls.log"
    monkeypatch.setenv(LOG_ENV, str(path))
    return path


def parked(store: PostgresStore, saga_id: str) -> bool:
    """Whether ``saga_id`` waits as a row in the queue: parked, and held by nobody."""
    rows = store._query("SELECT waiting, owner FROM sagaflow_sagas WHERE saga_id = %s",
                        (saga_id,))
    return bool(rows) and rows[0][0] is not None and rows[0][1] is None


def listening_worker(url: str, log: Path, *options: str) -> subprocess.Popen[str]:
    worker = start_worker(url, log, "--poll", "30", *options)
    wait_for_line(worker, "listening for wake-ups")
    return worker


def test_a_parked_saga_is_a_row_in_the_queue_until_its_signal(
    pg_store: PostgresStore, log: Path
) -> None:
    sid = enqueue(pg_store, Approval("o-1"), "a1")
    worker = Worker(pg_store, SAGAS, poll=0.02)
    with serving(worker):
        until(lambda: parked(pg_store, sid), what="the park")
        time.sleep(0.3)  # fifteen polls: nobody claims it again
        assert worker.stats.claimed == 1 and not worker.active
        stored = pg_store.load_raw(sid)
        assert stored.run_at == stored.wake_at and stored.lease_until is None
        signals.accept(worker.orchestrator.runtime, worker.orchestrator.spec_for, sid,
                       "decision", Decision(True, "ann"), None)
        result = wait(pg_store, sid, timeout=30)
    assert result.ok and result.data.approved_by == "ann"
    assert worker.stats.claimed == 2 and worker.stats.parked == 1
    stored = pg_store.load_raw(sid)
    assert stored.run_at is None and stored.owner is None


def test_a_signal_from_another_process_wakes_a_worker_at_once(
    store_url: str, pg_store: PostgresStore, log: Path
) -> None:
    worker = listening_worker(store_url, log)
    try:
        sid = enqueue(pg_store, Approval("o-2"), "a2")  # its NOTIFY wakes the worker
        until(lambda: parked(pg_store, sid), what="the claim and the park")
        signal_from_another_process(store_url, sid, "decision", DECISION, log)
        result = wait(pg_store, sid, timeout=15)  # half the poll interval
    finally:
        err = stop(worker)
    assert result.ok
    assert [(what, pid == worker.pid) for what, pid in calls(log, sid)] == [
        ("reserve", True), ("charge", True)
    ]
    assert "claimed 2;" in err and "parked 1;" in err, err


def test_the_signal_command_and_the_workers_resume_a_saga_once(
    store_url: str, pg_store: PostgresStore, log: Path
) -> None:
    worker = listening_worker(store_url, log)
    try:
        sid = enqueue(pg_store, Approval("o-3"), "a3")
        until(lambda: parked(pg_store, sid), what="the park")
        # The command resumes the saga itself; the worker, told, finds it taken.
        done = subprocess.run(
            [sys.executable, "-m", "sagaflow", "sagas", "signal", "--store", store_url,
             "--import", "wait_sagas", sid, "decision", "--data", '{"approved": true, '
             '"by": "bo"}', "-q"],
            env=environment(log), cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        result = wait(pg_store, sid, timeout=15)
        time.sleep(0.2)
    finally:
        stop(worker)
    assert result.ok and result.data.approved_by == "bo"
    assert [what for what, _ in calls(log, sid)] == ["reserve", "charge"]
    stored = pg_store.load_raw(sid)
    assert stored.run_at is None and stored.owner is None


def test_a_saga_parked_by_its_own_process_is_resumed_by_a_worker(
    store_url: str, pg_store: PostgresStore, log: Path
) -> None:
    with Orchestrator(store_url, sagas=SAGAS) as orch:
        asyncio.run(orch.arun(Approval("o-4"), "a4"))  # parks here: queued, due then
    assert parked(pg_store, "a4") and pg_store.load_raw("a4").run_at is not None
    worker = listening_worker(store_url, log)
    try:
        signal_from_another_process(store_url, "a4", "decision", DECISION, log)
        result = wait(pg_store, "a4", timeout=15)
    finally:
        stop(worker)
    assert result.ok
    assert [(what, pid == worker.pid) for what, pid in calls(log, "a4")] == [
        ("reserve", False), ("charge", True)
    ]


def test_a_timer_fires_after_the_worker_restarts(
    store_url: str, pg_store: PostgresStore, log: Path
) -> None:
    first = listening_worker(store_url, log)
    sid = enqueue(pg_store, Nap(seconds=2.0), "n1")
    until(lambda: parked(pg_store, sid), what="the park")
    stop(first, signal.SIGKILL)
    wake_at = pg_store.load_raw(sid).wake_at
    second = listening_worker(store_url, log)  # it sleeps until the timer's time
    try:
        result = wait(pg_store, sid, timeout=15)
    finally:
        stop(second)
    assert result.ok
    assert [(what, pid) for what, pid in calls(log, sid)] == [
        ("first", first.pid), ("woke", second.pid), ("last", second.pid)
    ]
    woke = [e for e in result.history if type(e).__name__ == "StepStarted" and e.step == "nap"]
    assert woke[0].at >= wake_at


def test_a_timer_fires_after_a_takeover(
    store_url: str, pg_store: PostgresStore, log: Path
) -> None:
    """The worker holding the saga dies in its first step; another takes the saga over
    when the lease ends, runs the step again, parks at the timer, and the timer fires."""
    first = listening_worker(store_url, log, "--lease", "1")
    sid = enqueue(pg_store, Nap(seconds=1.0, work=1.0), "n2")
    until(lambda: calls(log, sid), what="the first step")
    stop(first, signal.SIGKILL)
    second = listening_worker(store_url, log)
    try:
        result = wait(pg_store, sid, timeout=20)
    finally:
        err = stop(second)
    assert result.ok
    assert [(what, pid) for what, pid in calls(log, sid)] == [
        ("first", first.pid), ("first", second.pid), ("woke", second.pid),
        ("last", second.pid),
    ]
    assert "claimed 2;" in err and "parked 1;" in err, err


def test_a_signal_stored_while_a_worker_holds_the_saga_is_found_when_it_parks(
    pg_store: PostgresStore,
) -> None:
    """The race itself, step by step: the signal commits after the driver looked for
    it and before the release; the release then makes the saga due at once. A signal
    after the release makes it due itself."""
    spec = spec_of(Approval)
    tokens: dict[str, int] = {}
    orch = Orchestrator(pg_store.fenced(tokens), sagas=SAGAS)  # this test is the worker
    kinds = {"names": [spec.name], "fingerprints": [spec.fingerprint]}
    for sid, before in (("r1", True), ("r2", False)):
        enqueue(pg_store, Approval(sid), sid)
        [held] = pg_store.claim("w", 1, lease=30, now=time.time(), exclude=["r1"], **kinds) \
            if sid == "r2" else pg_store.claim("w", 1, lease=30, now=time.time(), **kinds)
        assert held.saga_id == sid
        tokens[sid] = held.fence
        record = pg_store.decode(held)
        asyncio.run(orch.adrive(spec, record))  # it parks
        assert record.waiting == "decision"
        stored = pg_store.load_raw(sid)
        assert stored.owner == "w" and stored.run_at > time.time()
        if before:  # held: the signal leaves the queue alone
            signals.accept(orch.runtime, orch.spec_for, sid, "decision", DECISION, None)
            assert pg_store.load_raw(sid).run_at == stored.run_at
        now = time.time()
        assert pg_store.park(sid, held.fence, record.wake_at, now)
        if not before:
            assert pg_store.load_raw(sid).run_at == record.wake_at
            signals.accept(orch.runtime, orch.spec_for, sid, "decision", DECISION, None)
        assert pg_store.load_raw(sid).run_at <= time.time()  # due: claimed at once
        assert pg_store.next_due(**kinds) <= time.time()


class RacingStore(PostgresStore):
    """A store on which the worker's driver, looking for the decision before it lets
    go of the saga, finds none, and the decision is stored right then by another
    store: after the look, before the release."""

    def __init__(self, url: str, schema: str, other: PostgresStore) -> None:
        super().__init__(url, schema=schema)
        self.sender = Orchestrator(other, sagas=SAGAS)
        self.raced: list[str] = []

    async def anext_signal(self, saga_id: str, name: str, after: int):  # type: ignore[no-untyped-def]
        found = await super().anext_signal(saga_id, name, after)
        if found is None and saga_id not in self.raced:
            self.raced.append(saga_id)
            sender = self.sender
            await asyncio.to_thread(signals.accept, sender.runtime, sender.spec_for, saga_id,
                                    name, DECISION, None)
        return found


def test_a_signal_stored_while_the_worker_parks_the_saga_still_wakes_it(
    pg_url: str, schema: str, pg_store: PostgresStore, log: Path
) -> None:
    store = RacingStore(pg_url, schema, pg_store)
    worker = Worker(store, SAGAS, poll=30)
    try:
        with serving(worker):
            sids = [enqueue(pg_store, Approval(f"o-{i}")) for i in range(5)]
            results = [wait(pg_store, sid, timeout=15) for sid in sids]
    finally:
        store.close()
    assert all(r.ok for r in results) and sorted(store.raced) == sorted(sids)
    assert worker.stats.parked == 5 and worker.stats.claimed == 10


def test_waiting_sagas_cost_the_worker_no_memory(pg_store: PostgresStore, log: Path) -> None:
    """100,000 sagas parked in the queue: a worker serving beside them, through a few
    poll intervals, a signal and a timer, keeps a constant, not a cost per saga."""
    seed = enqueue(pg_store, Approval("seed"), "seed")
    with serving(Worker(pg_store, SAGAS, poll=0.02)):
        until(lambda: parked(pg_store, seed), what="the park")
    clone_parked(pg_store, seed, 100_000, queued=True)
    assert len(pg_store) == 100_001
    gc.collect()
    tracemalloc.start()
    try:
        worker = Worker(pg_store, SAGAS, poll=0.05, concurrency=8)
        with serving(worker):
            nap = enqueue(pg_store, Nap(seconds=0.2))
            orch = worker.orchestrator
            signals.accept(orch.runtime, orch.spec_for, "w5", "decision", DECISION, None)
            assert wait(pg_store, "w5", timeout=30).ok and wait(pg_store, nap, timeout=30).ok
            time.sleep(0.5)  # ten polls
        del worker, orch
        gc.collect()
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grown < 512 * 1024  # bytes

"""The worker on a SQLite file: one per file; it recovers interrupted sagas when it
starts, resumes a parked saga when a signal for it is stored by any process or when its
time comes, never loses a signal that comes while it parks a saga, lets go of running
sagas without letting them write when it stops, and holds nothing per waiting saga.

Real SQLite files, real worker processes (``sagaflow worker``) where processes matter,
SIGKILL for the crashes."""

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
    Twice,
    calls,
    clone_parked,
    environment,
    park_here,
    run_elsewhere,
    serving,
    signal_from_another_process,
    start_worker,
    stop,
    until,
    wait_for_line,
)

from sagaflow import Orchestrator, SagaStatus, StoreError, signals
from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.worker import Worker


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path, Path]:
    """The store's URL, its database file, the calls' log (this process logs too)."""
    db = tmp_path / "sagas.db"
    log = tmp_path / "calls.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    return f"sqlite:///{db}", db, log


def status_of(db: Path, saga_id: str) -> SagaStatus | None:
    with SQLiteStore(db, readonly=True) as store:
        stored = store.load_raw(saga_id)
    return None if stored is None else SagaStatus(stored.status)


def test_a_signal_from_another_process_resumes_the_saga_through_the_worker(files) -> None:
    url, db, log = files
    park_here(db, Approval("o-1"), "a1")
    worker = start_worker(url, log, "--poll", "30")
    try:
        wait_for_line(worker, "watching")
        signal_from_another_process(url, "a1", "decision", {"approved": True, "by": "ann"}, log)
        until(lambda: status_of(db, "a1") is SagaStatus.COMPLETED, what="the resumption")
    finally:
        err = stop(worker)
    assert [(what, pid == worker.pid) for what, pid in calls(log, "a1")] == [
        ("reserve", False), ("charge", True)
    ]
    assert "resumed 1" in err and "finished: 1 completed" in err, err


def test_the_signal_command_and_the_worker_resume_a_saga_once(files) -> None:
    url, db, log = files
    park_here(db, Approval("o-2"), "a2")
    worker = start_worker(url, log, "--poll", "30")
    try:
        wait_for_line(worker, "watching")
        done = subprocess.run(
            [sys.executable, "-m", "sagaflow", "sagas", "signal", "--store", url, "--import",
             "wait_sagas", "a2", "decision", "--data", '{"approved": true, "by": "bo"}', "-q"],
            env=environment(log), cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        until(lambda: status_of(db, "a2") is SagaStatus.COMPLETED, what="the resumption")
        time.sleep(0.2)  # the worker has noticed the signal too, and found nothing to do
    finally:
        stop(worker)
    assert [what for what, _ in calls(log, "a2")] == ["reserve", "charge"]


def test_timers_fire_at_their_time_and_after_the_worker_restarts(files) -> None:
    url, db, log = files
    park_here(db, Nap(seconds=1.0), "soon")
    park_here(db, Nap(seconds=5.0), "later")
    first = start_worker(url, log, "--poll", "30")
    wait_for_line(first, "watching")
    stop(first, signal.SIGKILL)  # before either timer's time
    assert status_of(db, "soon") is SagaStatus.RUNNING
    with SQLiteStore(db) as store:
        soon = store.load("soon").wake_at
        later = store.load("later").wake_at
    until(lambda: time.time() > soon, what="the first timer's time")
    second = start_worker(url, log, "--poll", "30")
    try:
        until(lambda: status_of(db, "soon") is status_of(db, "later") is SagaStatus.COMPLETED,
              what="both timers")
    finally:
        err = stop(second)
    for sid in ("soon", "later"):
        assert [(what, pid == second.pid) for what, pid in calls(log, sid)] == [
            ("first", False), ("woke", True), ("last", True)
        ]
    with SQLiteStore(db) as store:
        store.register(Nap)
        woke = [e for e in store.load("later").history if type(e).__name__ == "StepStarted"
                and e.step == "nap"]
    assert woke and woke[0].at >= later  # never before its time
    assert "finished: 2 completed" in err, err


def test_a_saga_interrupted_twice_is_recovered_by_the_next_worker(files) -> None:
    """The application dies in a step; the worker that recovers it dies in the same
    step; the next one runs it to its timer, and the timer fires."""
    url, db, log = files
    app = run_elsewhere(url, Nap(seconds=0.5, work=1.5), "n1", log)
    until(lambda: calls(log, "n1"), what="the first step")
    app.kill()
    app.wait()
    first = start_worker(url, log, "--poll", "30")
    until(lambda: len(calls(log, "n1")) == 2, what="the recovery")
    stop(first, signal.SIGKILL)
    assert status_of(db, "n1") is SagaStatus.RUNNING
    second = start_worker(url, log, "--poll", "30")
    try:
        until(lambda: status_of(db, "n1") is SagaStatus.COMPLETED, what="the second recovery")
    finally:
        err = stop(second)
    assert [(what, pid) for what, pid in calls(log, "n1")] == [
        ("first", app.pid), ("first", first.pid), ("first", second.pid),
        ("woke", second.pid), ("last", second.pid),
    ]
    assert "recovered 1" in err, err


def test_a_second_worker_on_the_file_refuses_to_start(files) -> None:
    url, _db, log = files
    first = start_worker(url, log)
    try:
        wait_for_line(first, "watching")
        second = subprocess.run(
            [sys.executable, "-m", "sagaflow", "worker", "--store", url, "--import",
             "wait_sagas"],
            env=environment(log), cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert second.returncode == 2
        assert "another sagaflow worker" in second.stderr
        assert "a SQLite file has one worker" in second.stderr
        with pytest.raises(StoreError, match="another sagaflow worker"):
            Worker(url, SAGAS)
    finally:
        stop(first, signal.SIGKILL)
    Worker(url, SAGAS).close()  # the kernel let go of the dead worker's lock


class RacingStore(SQLiteStore):
    """A store on which the worker's driver, looking for signal ``two`` before it lets
    go of the saga, finds none, and the signal is stored right then by another
    connection: too late for the driver, before the saga is a row again."""

    def __init__(self, path: Path, sender: Orchestrator) -> None:
        super().__init__(path)
        self.sender = sender
        self.raced: list[str] = []

    async def anext_signal(self, saga_id: str, name: str, after: int):  # type: ignore[no-untyped-def]
        found = await super().anext_signal(saga_id, name, after)
        if found is None and name == "two" and saga_id not in self.raced:
            self.raced.append(saga_id)
            sender = self.sender
            await asyncio.to_thread(
                signals.accept, sender.runtime, sender.spec_for, saga_id, "two", None, None
            )
        return found


def test_a_signal_stored_while_the_worker_parks_the_saga_still_wakes_it(files) -> None:
    _url, db, _log = files
    park_here(db, Twice(), "t1")
    with Orchestrator(SQLiteStore(db), sagas=SAGAS) as sender:
        store = RacingStore(db, sender)
        worker = Worker(store, SAGAS, poll=30)
        with serving(worker):
            sender.signal("t1", "one")  # stored, and resumed here: it parks again
            until(lambda: status_of(db, "t1") is SagaStatus.COMPLETED, what="the resumption")
        store.close()
        assert store.raced == ["t1"]
        assert sender.store.load("t1").data.got == ["one", "two"]
        sender.store.close()  # type: ignore[attr-defined]


def test_a_stopped_worker_leaves_its_running_sagas_at_their_last_checkpoint(files) -> None:
    """Stopped with no grace while a step runs: the run is cancelled, and the worker
    lets nothing of it be written (a cancelled run would compensate): the saga stays as
    it was, for the next worker to recover."""
    url, db, log = files
    app = run_elsewhere(url, Nap(seconds=0.5, work=120.0), "n9", log)
    until(lambda: calls(log, "n9"), what="the first step")
    app.kill()
    app.wait()
    worker = start_worker(url, log, "--grace", "0")
    until(lambda: len(calls(log, "n9")) == 2, what="the recovery")
    err = stop(worker)
    assert "stopped;" in err, err
    with SQLiteStore(db) as store:
        store.register(Nap)
        record = store.load("n9")
    assert record.status is SagaStatus.RUNNING
    assert record.steps[0].status.value == "RUNNING"  # in flight, as the worker found it
    assert not any("Compensat" in type(e).__name__ for e in record.history)


def test_waiting_sagas_cost_the_worker_no_memory(files) -> None:
    """100,000 parked sagas: the worker's memory after starting and a few rounds of
    looking (a signal and a timer among them) is a constant, not per saga."""
    url, db, _log = files
    park_here(db, Approval("seed"), "seed")
    with SQLiteStore(db, synchronous="OFF") as store:
        clone_parked(store, "seed", 100_000)
        assert len(store) == 100_001
    gc.collect()
    blocks = sys.getallocatedblocks()
    worker = Worker(url, SAGAS, poll=0.05, concurrency=8)
    with serving(worker):
        until(lambda: worker.mode._recovery is not None and worker.mode._recovery.done(),
              timeout=300, what="the start-up recovery")
        gc.collect()
        tracemalloc.start()
        try:
            park_here(db, Nap(seconds=0.2), "nap")
            with Orchestrator(SQLiteStore(db), sagas=SAGAS) as sender:
                signals.accept(sender.runtime, sender.spec_for, "w5", "decision",
                               Decision(True, "ann"), None)
                until(lambda: status_of(db, "w5") is SagaStatus.COMPLETED, what="a signal")
                until(lambda: status_of(db, "nap") is SagaStatus.COMPLETED, what="a timer")
                sender.store.close()  # type: ignore[attr-defined]
            time.sleep(0.5)  # ten polls, fifty looks at the file
            gc.collect()
            grown, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        held = sys.getallocatedblocks() - blocks
    assert worker.stats.resumed == 2
    assert grown < 512 * 1024  # bytes: what the rounds left behind
    assert held < 20_000  # objects: not one per waiting saga

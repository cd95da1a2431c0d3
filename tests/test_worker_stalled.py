"""Stalled detection from the worker: with ``stalled_after`` the worker looks for sagas
with no checkpoint for that long in its loop and pages ``on_incident`` once per
incident (not at every look); ``sagaflow worker --stalled-after S`` logs them.

Real SQLite files, a real worker (in a thread, and a ``sagaflow worker`` process)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import attrs
import pytest
from wait_sagas import serving, start_worker, stop, until, wait_for_line

from sagaflow import Orchestrator, SagaStatus, saga, step
from sagaflow.incidents import STALLED, Incident
from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.worker import Worker

#: set: the step goes on; ``crash``: the first call dies with its process
gate = threading.Event()
crash: list[bool] = []


class Died(BaseException):
    """The process dies in the middle of the step (the record stays RUNNING)."""


@saga(name="stall-hang")
@attrs.define
class Hang:
    """Its step hangs until ``gate`` opens (a call stuck past any timeout)."""

    note: str = ""

    @step(readonly=True)
    def call(self, ctx: Any) -> None:
        if crash:
            crash.clear()
            raise Died
        gate.wait(60)


def crashed(db: Path, saga_id: str) -> None:
    """Leave ``saga_id`` RUNNING in ``db``, as a process that died in its step does."""
    crash.append(True)
    with Orchestrator(SQLiteStore(db)) as orch, pytest.raises(Died):
        orch.run(Hang(), saga_id)
    orch.store.close()  # type: ignore[attr-defined]


def status_of(db: Path, saga_id: str) -> SagaStatus:
    with SQLiteStore(db, readonly=True) as store:
        stored = store.load_raw(saga_id)
        assert stored is not None
        return SagaStatus(stored.status)


def test_the_worker_pages_a_stalled_saga_once(tmp_path: Path) -> None:
    db = tmp_path / "sagas.db"
    crashed(db, "h1")
    gate.clear()
    heard: list[Incident] = []
    worker = Worker(SQLiteStore(db), [Hang], stalled_after=0.2, stalled_every=0.02,
                    on_incident=heard.append)
    try:
        with serving(worker, grace=0):
            # the worker recovers h1; its step hangs: no checkpoint for 0.2 s and more
            until(lambda: len(heard) >= 1, what="the stalled incident")
            looked = worker.stall_checks
            until(lambda: worker.stall_checks >= looked + 5, what="five more looks")
            assert [(i.kind, i.saga_id) for i in heard] == [(STALLED, "h1")]
            assert "no checkpoint" in heard[0].reason
            assert worker.stats.stalled == 1
            gate.set()  # the call comes back: the saga moves on and ends
            until(lambda: status_of(db, "h1") is SagaStatus.COMPLETED, what="the end")
            looked = worker.stall_checks
            until(lambda: worker.stall_checks >= looked + 2, what="two more looks")
            assert len(heard) == 1
    finally:
        gate.set()
        worker.store.close()


def test_without_the_option_the_worker_does_not_look(tmp_path: Path) -> None:
    db = tmp_path / "sagas.db"
    with pytest.raises(ValueError, match="stalled_after must be > 0"):
        Worker(SQLiteStore(db), [Hang], stalled_after=0)
    worker = Worker(SQLiteStore(db), [Hang])
    try:
        assert worker.stalled_after is None and worker.orchestrator.on_incident is None
    finally:
        worker.close()
        worker.store.close()


def test_the_worker_command_logs_a_stalled_saga_once(tmp_path: Path) -> None:
    db = tmp_path / "sagas.db"
    crashed(db, "h2")  # a class this worker does not run: nothing recovers it
    child = start_worker(f"sqlite:///{db}", tmp_path / "calls.log", "-v",
                         "--stalled-after", "0.05")
    try:
        lines = wait_for_line(child, "incident h2/stalled/")
        assert "no checkpoint" in lines[-1]
        for _ in range(3):  # three more looks, each finding it stalled still
            lines += wait_for_line(child, "looked for stalled sagas: 1 stalled")
    finally:
        lines.append(stop(child))
    said = "".join(lines)
    assert said.count("incident h2/stalled/") == 1, said
    assert "stalled sagas reported 1" in said

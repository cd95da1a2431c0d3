"""A process killed (SIGKILL) in the middle of group commits leaves a readable store."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from store_sagas import Order

from sagaflow import SagaStatus
from sagaflow.stores.sqlite import SQLiteStore

CHILD = """
import asyncio, sys
from sagaflow import Orchestrator
from sagaflow.stores.sqlite import SQLiteStore
from store_sagas import Order

store = SQLiteStore(sys.argv[1], synchronous="NORMAL")
orch = Orchestrator(store=store)
prefix = sys.argv[2]

async def main():
    n = 0
    while True:
        await asyncio.gather(*(orch.arun(Order(), f"{prefix}-{n + i}") for i in range(50)))
        n += 50

asyncio.run(main())
"""


def test_sigkill_during_group_commits_leaves_every_saga_readable(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    SQLiteStore(path).close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parent), str(Path(__file__).parents[2]),
         os.environ.get("PYTHONPATH", "")])}
    rng = random.Random(6)
    for k in range(4):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), f"p{k}"], env=env)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # wait until this child finishes sagas
                with sqlite3.connect(path) as conn:
                    if conn.execute(
                        "SELECT count(*) FROM sagaflow_sagas WHERE saga_id LIKE ? "
                        "AND status = 'COMPLETED'", (f"p{k}-%",)
                    ).fetchone()[0]:
                        break
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.05))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with SQLiteStore(path) as store:
        store.register(Order)
        stored = list(store.scan())
        records = [store.decode(s) for s in stored]  # none is corrupted
    assert len(records) > 80
    statuses = {r.status for r in records}
    assert SagaStatus.COMPLETED in statuses
    for r in records:
        kinds = [type(e).__name__ for e in r.history]
        assert kinds[0] == "SagaStarted"
        if r.status is SagaStatus.COMPLETED:
            assert kinds[-1] == "SagaCompleted" and r.steps_executed == 3
            assert len(r.events) == 2
        else:  # cut off mid-run: created, or its last checkpoint started a step
            assert r.status is SagaStatus.RUNNING
            assert kinds == ["SagaStarted"] or kinds[-1] == "StepStarted"

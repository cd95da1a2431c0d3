"""Crash recovery with real processes and SIGKILL.

A 5-step saga (:class:`crash_sagas.CrashOrder`), on its happy path and on its failing
path (s4 refused: s3, s2, s1 compensated), is run by a process that SIGKILLs itself at
one boundary: before or after each store write (the checkpoints, the first one the
create), before each participant call, and after each participant effect is committed
but before the call returns (the effect is done, no checkpoint records it). A new
process then recovers it. Every boundary of both paths is a case; the saga must reach
its path's terminal state, and every participant's net effect must be exactly once:
participants dedupe by idempotency key, so this holds only if the step cut short ran
again with the same key (the ledger's call counts show it did).

The randomized run chains kills (a recovery is killed too) and recovers the lot with
``sagaflow recover`` in a fresh interpreter: 200 kills, 2,000 with SAGAFLOW_PROFILE=deep.

To stay fast, one ``crash_child.py`` process forks a process per kill (see its docstring).
"""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from crash_jobs import CHILD, run
from crash_jobs import jobs as run_jobs
from crash_sagas import STEPS, CrashOrder, Point, census, expected_effects

from sagaflow import SagaStatus, events
from sagaflow.stores import SQLiteStore

DEEP = os.environ.get("SAGAFLOW_PROFILE") == "deep"
RANDOM_KILLS = 2_000 if DEEP else 200

POINTS = {"happy": census(fail=False), "failing": census(fail=True)}
CASES = [(path, p) for path, points in POINTS.items() for p in points]
TERMINAL = {"happy": SagaStatus.COMPLETED, "failing": SagaStatus.COMPENSATED}


def _job(saga_id: str, action: str, fail: bool, point: Point | None, sync: str) -> dict[str, Any]:
    return {"saga_id": saga_id, "action": action, "fail": fail, "synchronous": sync,
            "point": None if point is None else [point.kind, point.n, point.when]}


class Outcome:
    """What the store and the ledger hold once recovery is over."""

    def __init__(self, store: Path, ledger: Path) -> None:
        with sqlite3.connect(store) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with SQLiteStore(store) as s:
            s.register(CrashOrder)
            self.records = {st.saga_id: s.decode(st) for st in s.scan()}
        conn = sqlite3.connect(ledger)
        self.effects: dict[str, dict[str, int]] = {}
        for key, saga_id, delta in conn.execute("SELECT key, saga_id, delta FROM effects"):
            self.effects.setdefault(saga_id, {})[key] = delta
        self.calls = dict(conn.execute("SELECT key, n FROM calls").fetchall())
        conn.close()

    def check(self, saga_id: str, fail: bool) -> None:
        """The saga ended as its path does, every effect exactly once; or, killed
        before its first write, it never began and did nothing."""
        record = self.records.get(saga_id)
        effects = self.effects.get(saga_id, {})
        if record is None:
            assert effects == {}, effects
            return
        path = "failing" if fail else "happy"
        assert record.status is TERMINAL[path], (saga_id, record.status, record.history)
        # A step cut off by the kill has an unknown outcome: if it then fails for good,
        # its compensation runs too and, finding nothing to undo, leaves a zero entry.
        assert {k: v for k, v in effects.items() if v} == expected_effects(saga_id, fail)
        assert sum(effects.values()) == (0 if fail else 11_111)
        kinds = [type(e).__name__ for e in record.history]
        assert kinds[0] == "SagaStarted"
        assert kinds[-1] == ("SagaCompensated" if fail else "SagaCompleted")
        done = [e.step for e in record.history if isinstance(e, events.StepCompleted)]
        assert done == (["s1", "s2", "s3"] if fail else list(STEPS))  # each once, in order
        undone = [e.step for e in record.history if isinstance(e, events.CompensationCompleted)]
        # s4 itself too when a kill cut off one of its attempts (outcome unknown)
        cut_off = record.steps[3].timed_out
        assert undone == ((["s4"] if cut_off else []) + ["s3", "s2", "s1"] if fail else [])
        for key in effects:
            assert self.calls[key] >= 1


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory):
    """``matrix(path)``: every kill point of the path, each in its own process, then one
    new process recovering them all (Orchestrator.recover); run once per path."""
    runs: dict[str, tuple[dict[str, Any], dict[str, Any], Outcome]] = {}

    def get(path: str) -> tuple[dict[str, Any], dict[str, Any], Outcome]:
        if path not in runs:
            where = tmp_path_factory.mktemp(f"crash-{path}")
            store, ledger = where / "sagas.db", where / "ledger.db"
            fail = path == "failing"
            jobs = [_job(f"{path}-{p.id}", "run", fail, p, "FULL") for p in POINTS[path]]
            results = {r["saga_id"]: r for r in run_jobs(store, ledger, jobs)}
            done = run([sys.executable, str(CHILD), "recover", str(store)], ledger)
            runs[path] = results, json.loads(done.stdout), Outcome(store, ledger)
        return runs[path]

    return get


@pytest.mark.parametrize(("path", "case"), CASES, ids=[f"{path}-{p.id}" for path, p in CASES])
def test_killed_at_every_boundary_then_recovered_exactly_once(
    matrix: Any, path: str, case: Point
) -> None:
    results, report, outcome = matrix(path)
    saga_id = f"{path}-{case.id}"
    assert results[saga_id]["killed"], results[saga_id]
    assert report["skipped"] == {}
    outcome.check(saga_id, path == "failing")
    if case.kind == "write" and case.n == 1 and case.when == "before":
        assert saga_id not in outcome.records  # killed before the create: never began
        assert saga_id not in report["resumed"]
        return
    last_write = max(p.n for p in POINTS[path] if p.kind == "write")
    if case.kind == "write" and case.n == last_write and case.when == "after":
        assert saga_id not in report["resumed"]  # finished before the kill: nothing to do
    else:
        assert report["resumed"][saga_id] == TERMINAL[path].value
    if case.kind == "call" and case.when == "after":
        # The effect was committed and no checkpoint recorded it: recovery called the
        # participant again, with the same key, and the ledger kept the first effect.
        key = saga_id + case.label.removeprefix("census")
        assert outcome.calls[key] == 2
        assert outcome.effects[saga_id][key] != 0


def test_the_census_covers_every_checkpoint_and_effect() -> None:
    happy, failing = POINTS["happy"], POINTS["failing"]
    labels = [p.label for p in happy if p.kind == "write" and p.when == "after"]
    assert labels == [
        "create", "StepStarted-s1", "StepStarted-s2", "StepRetrying-s2", "StepStarted-s2",
        "StepStarted-s3", "StepStarted-s4", "StepStarted-s5", "SagaCompleted",
    ]
    labels = [p.label for p in failing if p.kind == "write" and p.when == "after"]
    assert labels[-5:] == [
        "StepStarted-s4", "CompensationStarted-s3", "CompensationStarted-s2",
        "CompensationStarted-s1", "SagaCompensated",
    ]
    effects = [p.label for p in failing if p.kind == "call" and p.when == "after"]
    assert effects == [
        "census:s1:forward", "census:s2:forward", "census:s3:forward",
        "census:s3:compensate", "census:s2:compensate", "census:s1:compensate",
    ]
    assert len(CASES) == len(happy) + len(failing) > 60


def test_random_kills_with_chained_crashes_then_sagaflow_recover(tmp_path: Path) -> None:
    """Random kill points, a recovery killed in turn (up to three kills in a row), and
    every saga finished by ``sagaflow recover`` in a fresh interpreter."""
    seed = int(os.environ.get("SAGAFLOW_CRASH_SEED", "6"))
    rng = random.Random(seed)
    store, ledger = tmp_path / "sagas.db", tmp_path / "ledger.db"
    limits = {
        path: {kind: max(p.n for p in points if p.kind == kind) for kind in ("write", "call")}
        for path, points in POINTS.items()
    }
    paths: dict[str, bool] = {}
    kills = 0
    serial = 0
    while kills < RANDOM_KILLS:
        jobs = []
        for _ in range(max(8, math.ceil((RANDOM_KILLS - kills) * 0.6))):
            serial += 1
            fail = rng.random() < 0.5
            path = "failing" if fail else "happy"
            saga_id = f"r{serial:05}-{path}"
            paths[saga_id] = fail
            jobs.append(_job(saga_id, "run", fail, rng.choice(POINTS[path]), "NORMAL"))
            for _ in range(rng.choice((0, 0, 1, 1, 2))):  # recoveries killed in turn
                kind = rng.choice(("write", "call"))
                point = Point(kind, rng.randint(1, limits[path][kind]),
                              rng.choice(("before", "after")))
                jobs.append(_job(saga_id, "recover", fail, point, "NORMAL"))
        kills += sum(r["killed"] for r in run_jobs(store, ledger, jobs))
    assert kills >= RANDOM_KILLS

    url = f"sqlite:///{store}"
    done = run([sys.executable, "-m", "sagaflow", "recover", "--store", url,
                 "--import", "crash_sagas"], ledger)
    assert done.stdout.splitlines()[0].endswith(", left 0 alone"), done.stdout
    outcome = Outcome(store, ledger)
    for saga_id, fail in paths.items():
        outcome.check(saga_id, fail)
    started = [sid for sid in paths if sid in outcome.records]
    assert len(started) > 0.8 * len(paths)

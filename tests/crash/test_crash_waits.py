"""Waiting sagas killed with SIGKILL around every checkpoint, on SQLite files.

The saga and its scripts are :mod:`crash_waits`' (read its docstring): a signal wait
with a typed payload whose handler records data and has a participant effect, a
durable timer, a wait with on_timeout="continue", a rejection by signal, a wait that
runs out, a signal that comes early. Every kill point of every phase of every script
is a case: the signalling process dies before, inside or after the signal's commit; a
resuming one between a signal's delivery (its handler's effect done) and the
checkpoint that consumes it, or after; before or after a fired timer's checkpoint;
with an early signal stored, before the saga reaches its wait; a signal stored in time
whose saga is recovered only after the wait's timeout ("late"). A fresh process
recovers, the client sends its signal again (same ``signal_id``), the script goes on;
then nothing is lost and nothing happened twice (:meth:`crash_waits.Outcome.check`).

The default run takes the boundaries of the new checkpoints
(:func:`crash_waits.representative`) with the sync driver; SAGAFLOW_PROFILE=deep takes
every boundary, with the sync and the async driver.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
from crash_waits import (
    FEW,
    PATHS,
    Case,
    Outcome,
    all_cases,
    census,
    few,
    representative,
    run_chained,
    run_matrix,
)

from sagaflow.stores import SQLiteStore

DEEP = os.environ.get("SAGAFLOW_PROFILE") == "deep"
POINTS = census()
EVERY = all_cases(POINTS)
DRIVERS = ("sync", "async") if DEEP else ("sync",)
CASES = [(driver, case) for case in EVERY if DEEP or representative(case) for driver in DRIVERS]


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Every case's script on one SQLite file (each saga by its own id), then what the
    file and the ledger hold; the reports of each case's jobs."""
    where = tmp_path_factory.mktemp("crash-waits")
    store, ledger = where / "sagas.db", where / "ledger.db"
    reports = run_matrix(store, ledger, where, CASES)
    with SQLiteStore(store) as opened:
        yield Outcome(opened, ledger), reports


@pytest.mark.parametrize(("driver", "case"), CASES, ids=[f"{d}-{c.id}" for d, c in CASES])
def test_a_waiting_saga_killed_at_a_boundary_loses_nothing_and_does_nothing_twice(
    outcome: Any, driver: str, case: Case
) -> None:
    found, reports = outcome
    found.check_case(reports, driver, case)


def test_the_census_covers_every_new_checkpoint() -> None:
    approved = [p.label for p in POINTS["approved"][1] if p.kind == "write"]
    assert approved == [
        "signal-decision", "signal-decision", "signal-decision",  # before, inside, after
        "SignalDelivered-approval..WaitStarted-cool_off",  # consumes it (and parks)
        "SignalDelivered-approval..WaitStarted-cool_off",
    ]
    fired = [p.label for p in POINTS["approved"][2] if p.kind == "write" and p.when == "after"]
    assert fired == ["StepStarted-cool_off", "StepCompleted-cool_off..WaitStarted-remark"]
    ran_out = [p.label for p in POINTS["approved"][3] if p.kind == "write"]
    assert ran_out[0] == "WaitExpired-remark..StepStarted-charge"
    early = [p.label for p in POINTS["early"][3] if p.kind == "write" and p.when == "after"]
    assert early[1:3] == ["StepCompleted-cool_off..WaitStarted-remark",
                          "SignalDelivered-remark..StepStarted-charge"]
    handler = [p for p in POINTS["rejected"][1] if p.kind == "call"]
    assert [p.label for p in handler][:2] == ["census-rejected:approval:forward"] * 2
    assert set(PATHS) == {"approved", "early", "late", "rejected", "expired"}
    late = [case.point.id for case in EVERY if case.path == "late"]
    assert late[0] == "w01-after-signal-decision" and len(late) == 5
    assert len(EVERY) > 80
    assert sum(map(representative, EVERY)) >= 40
    # The default PostgreSQL run's few: each names a boundary of the census, all of them
    # among the representative ones.
    chosen = [case for case in EVERY if few(case)]
    assert len(chosen) == sum(len(ids) for ids in FEW.values())
    assert all(map(representative, chosen))


def test_random_cases_whose_recoveries_are_killed_too(tmp_path: Path) -> None:
    """Random cases, their recovery killed in turn at a random point (up to twice in a
    row) before one finishes it: still nothing lost, nothing done twice. 12 cases per
    driver; every case with SAGAFLOW_PROFILE=deep; the seed is SAGAFLOW_CRASH_SEED."""
    rng = random.Random(int(os.environ.get("SAGAFLOW_CRASH_SEED", "11")))
    store, ledger = tmp_path / "sagas.db", tmp_path / "ledger.db"
    cases = EVERY if DEEP else rng.sample(EVERY, 12)
    run_chained(store, ledger, tmp_path, cases, rng, lambda: SQLiteStore(store))

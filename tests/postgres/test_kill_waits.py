"""Waiting sagas killed with SIGKILL around every checkpoint, on PostgreSQL.

The same scripts, kill points and checks as the SQLite crash test
(``tests/crash/test_crash_waits.py``; the saga and the harness are
``tests/crash/crash_waits.py`` and ``crash_sagas.py``), on the session's throwaway
cluster: a signal's row killed before, inside (the server rolls the open transaction
back) and after its commit; a resuming process killed between a signal's handler and
the checkpoint that consumes it, and after; around a fired timer's checkpoint; with an
early signal stored. Then a fresh process recovers, the client sends its signal again
(same ``signal_id``), and nothing is lost or done twice.

The default run takes each new checkpoint's boundaries on one path
(:data:`crash_waits.FEW`) with the async driver; SAGAFLOW_PROFILE=deep takes every
boundary of every path, with the sync and the async driver, and (``./run.sh deep``)
every case again with its recovery killed in turn.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_cluster import drop_schema, fresh_schema

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "crash"))
from crash_waits import Case, Outcome, all_cases, census, few, run_chained, run_matrix

from sagaflow.stores.postgres import PostgresStore

DEEP = os.environ.get("SAGAFLOW_PROFILE") == "deep"
EVERY = all_cases(census())
DRIVERS = ("sync", "async") if DEEP else ("async",)
CASES = [(driver, case) for case in EVERY if DEEP or few(case) for driver in DRIVERS]


@pytest.fixture(scope="module")
def outcome(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Every case's script on one schema (each saga by its own id), then what the
    schema and the ledger hold; the reports of each case's jobs."""
    schema = fresh_schema("kw")
    where = tmp_path_factory.mktemp("kill-waits")
    ledger = where / "ledger.db"
    try:
        reports = run_matrix(f"{pg_url}&schema={schema}", ledger, where, CASES)
        with PostgresStore(pg_url, schema=schema) as store:
            yield Outcome(store, ledger), reports
    finally:
        drop_schema(pg_url, schema)


@pytest.mark.parametrize(("driver", "case"), CASES, ids=[f"{d}-{c.id}" for d, c in CASES])
def test_a_waiting_saga_killed_at_a_boundary_on_postgres_loses_nothing_and_does_nothing_twice(
    outcome: Any, driver: str, case: Case
) -> None:
    found, reports = outcome
    found.check_case(reports, driver, case)


@pytest.mark.slow
def test_every_case_with_its_recoveries_killed_too_on_postgres(
    pg_url: str, schema: str, tmp_path: Path
) -> None:
    """Every case, its recovery killed in turn at a random point (up to twice in a row)
    before one finishes it, with each driver (deep profile only: ./run.sh deep)."""
    rng = random.Random(int(os.environ.get("SAGAFLOW_CRASH_SEED", "11")))
    store = f"{pg_url}&schema={schema}"
    run_chained(store, tmp_path / "ledger.db", tmp_path, EVERY, rng,
                lambda: PostgresStore(pg_url, schema=schema))

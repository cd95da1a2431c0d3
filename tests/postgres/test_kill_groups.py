"""Parallel groups and fan-outs killed with SIGKILL, on PostgreSQL.

The saga, the named kill points and the checks of the SQLite crash test
(``tests/crash/test_crash_groups.py``; the harness is ``tests/crash/crash_groups.py``),
on the session's throwaway cluster: a process dies before, inside or after a member's
or an item's participant effect and before or after the checkpoints that start, settle
and undo it; a fresh process recovers; the saga ends terminal, what the store held as
done is not run again, every net effect is exactly once or zero, nothing is undone
twice.

The default run takes the points of member ``b`` and item ``pick[i3]``, on the
completing path and the group's failing one (reverse order), with the async driver;
SAGAFLOW_PROFILE=deep every point with both drivers, and (``./run.sh deep``) random
cases with their recoveries killed in turn.
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
from crash_groups import MODES, PATHS, Case, Outcome, cases, census, run_chained, run_matrix

from sagaflow.stores.postgres import PostgresStore

DEEP = os.environ.get("SAGAFLOW_PROFILE") == "deep"
POINTS = {
    (path, mode): census(path, mode)
    for path in PATHS for mode in MODES if path != "happy" or mode == "concurrent"
}
EVERY = cases(POINTS, ("sync", "async"))


def few(case: Case) -> bool:
    if case.driver != "async" or (case.path, case.mode) not in (
        ("happy", "concurrent"), ("group", "reverse")
    ):
        return False
    label = case.point.label
    return label.startswith(("b:", "b=", "b~", "pick[i3]"))


CASES = [case for case in EVERY if DEEP or few(case)]


@pytest.fixture(scope="module")
def outcome(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    schema = fresh_schema("kg")
    where = tmp_path_factory.mktemp("kill-groups")
    ledger = where / "ledger.db"
    try:
        reports = run_matrix(f"{pg_url}&schema={schema}", ledger, where, CASES)
        with PostgresStore(pg_url, schema=schema) as store:
            yield Outcome(store, ledger), reports
    finally:
        drop_schema(pg_url, schema)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_group_killed_at_a_point_on_postgres_resumes_only_what_had_not_finished(
    outcome: Any, case: Case
) -> None:
    found, reports = outcome
    found.check_case(case, reports)


def test_the_default_run_kills_a_member_and_an_item_at_each_kind_of_point() -> None:
    chosen = [case for case in EVERY if few(case)]
    kinds = {(c.point.kind, c.point.when) for c in chosen}
    assert kinds == {("write", "before"), ("write", "after"),
                     *(("call", w) for w in ("before", "inside", "after"))}
    assert any(c.point.label == "b:compensate" for c in chosen)
    assert 20 < len(chosen) < 80


@pytest.mark.slow
def test_random_cases_with_their_recoveries_killed_too_on_postgres(
    pg_url: str, schema: str, tmp_path: Path
) -> None:
    """60 random cases, each one's recovery killed in turn at a random point (once or
    twice) before one finishes it (deep profile only: ./run.sh deep)."""
    rng = random.Random(int(os.environ.get("SAGAFLOW_CRASH_SEED", "12")))
    todo = rng.sample(EVERY, 60)
    ids = run_chained(f"{pg_url}&schema={schema}", tmp_path / "ledger.db", tmp_path, todo,
                      POINTS, rng)
    with PostgresStore(pg_url, schema=schema) as store:
        found = Outcome(store, tmp_path / "ledger.db")
        for case, saga_id in zip(todo, ids, strict=True):
            found.check(saga_id, case.path)

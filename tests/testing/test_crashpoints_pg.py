"""check_crash_points on PostgreSQL: a schema of the session's test cluster per crash
point (tests/postgres_cluster.py), dropped afterwards; real child processes, SIGKILL."""

from __future__ import annotations

import crashpoint_sagas as cs
import psycopg
from crashpoint_sagas import ledger  # noqa: F401  (a fixture)
from postgres_cluster import pg_url  # noqa: F401  (a fixture)

from sagaflow.testing import FailurePlan, SignalPlan, check_crash_points


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'crash_%'")
        return {r[0] for r in rows}


def test_a_sound_saga_passes_at_every_crash_point_on_postgresql(pg_url: str) -> None:  # noqa: F811
    before = _schemas(pg_url)
    report = check_crash_points(cs.Order, snapshot=cs.balances, setup=cs.reset, store=pg_url)
    assert report.ok, report.describe()
    assert report.store == "PostgreSQL"
    assert report.references == ("COMPLETED", "COMPENSATED")
    assert len(report.points) > 30
    assert {r.outcome for r in report.points} == {"ok"}
    assert _schemas(pg_url) == before  # every point's schema dropped


def test_the_broken_saga_is_named_at_its_first_crash_point_on_postgresql(
    pg_url: str,  # noqa: F811
) -> None:
    report = check_crash_points(cs.BrokenCharge, snapshot=cs.balances, setup=cs.reset,
                                store=pg_url, plans=[FailurePlan()], fail_fast=True)
    first = report.first_failure
    assert first is not None and report.points[-1] is first
    assert first.point.seq == 8
    assert first.point.name == "after charge:forward took effect, before its checkpoint"
    assert "'card': 30 without a crash, 60 after this one" in first.problems[0]


def test_a_waiting_saga_passes_at_every_point_on_postgresql(pg_url: str) -> None:  # noqa: F811
    # the signal's row and the saga's parking and wake time in PostgreSQL's tables
    plan = FailurePlan(signals=[SignalPlan("approval", cs.Approval("ann"), twice=True)])
    report = check_crash_points(cs.ApprovedOrder, snapshot=cs.balances, setup=cs.reset,
                                store=pg_url, plans=[plan])
    assert report.ok, report.describe()
    assert report.references == ("COMPLETED",)
    names = [r.point.name for r in report.points]
    assert "after signal 'decision' is stored" in names
    assert "after cooling_off:forward took effect, before its checkpoint" in names
    assert {r.outcome for r in report.points} == {"ok"}

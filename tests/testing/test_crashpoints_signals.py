"""check_crash_points with signals that come early, late, refused, or with another one
after them: real child processes killed with SIGKILL at every point (the signals' rows
too), recovered in a fresh process whose sender sends again (same ids), on SQLite.

``Countersigned`` waits for an approval (it goes on without one) and then for a
countersignature on the same signal: only a second signal (``another``), a late first
one or an early pair reaches the countersignature's handler, whose bug (booked again
when it runs again) a plain plan never shows.
"""

from __future__ import annotations

import crashpoint_sagas as cs
import pytest
from crashpoint_sagas import ledger  # noqa: F401  (a fixture)

from sagaflow.testing import (
    Arrival,
    CrashPoint,
    CrashPointsReport,
    FailurePlan,
    SignalPlan,
    check_crash_points,
)

ANN = cs.Approval("ann")
#: the approval while it waits, nothing for the countersignature: its time runs out
PLAIN = FailurePlan(signals=[SignalPlan("approval", ANN)])
#: a payload that does not fit first (refused), the approval, another one: countersigns
ANOTHER = FailurePlan(signals=[SignalPlan("approval", ANN, refused=True, another=True)])
#: the approval after its time ran out: the saga went on, the countersignature takes it
LATE = FailurePlan(signals=[SignalPlan("approval", ANN, arrives=Arrival.LATE)])
#: both sent before the saga starts its steps: each wait takes one
EARLY = FailurePlan(signals=[SignalPlan("approval", ANN, arrives=Arrival.EARLY, another=True)])
#: a payload that does not fit, then nothing: the approval's time runs out, then the
#: countersignature's, which releases the reservation
REFUSED = FailurePlan(signals=[SignalPlan("approval", arrives=Arrival.NEVER, refused=True)])


def _names(report: CrashPointsReport, plan: int) -> list[str]:
    return [r.point.name for r in report.points if r.point.plan == plan]


def test_a_sound_saga_passes_at_every_point_of_early_late_refused_and_another_signal() -> None:
    report = check_crash_points(cs.Countersigned, snapshot=cs.balances, setup=cs.reset,
                                plans=[ANOTHER, LATE, EARLY, REFUSED])
    assert report.ok, report.describe()
    assert report.references == ("COMPLETED", "COMPLETED", "COMPLETED", "COMPENSATED")
    assert {r.outcome for r in report.points} == {"ok"}
    # the refused payload stores nothing (no point); another one's row is a point of
    # its own, after the approval took the first
    assert _names(report, 0)[11:15] == [
        "after checkpoint 4 (SignalDelivered approval, StepStarted approval, StepCompleted "
        "approval, WaitStarted countersign)",
        "before signal 'decision' (#2) is stored",
        "after signal 'decision' (#2) is stored",
        "after countersign:forward took effect, before its checkpoint",
    ]
    # late: stored once the approval's time ran out and the saga parked again
    assert _names(report, 1)[7:11] == [
        "before checkpoint 4 (WaitExpired approval, WaitStarted countersign)",
        "after checkpoint 4 (WaitExpired approval, WaitStarted countersign)",
        "before signal 'decision' is stored",
        "after signal 'decision' is stored",
    ]
    # early: both rows stored before the first step starts
    assert _names(report, 2)[:7] == [
        "before checkpoint 1 (SagaStarted)",
        "after checkpoint 1 (SagaStarted)",
        "before signal 'decision' is stored",
        "after signal 'decision' is stored",
        "before signal 'decision' (#2) is stored",
        "after signal 'decision' (#2) is stored",
        "before checkpoint 2 (StepStarted reserve)",
    ]
    assert not any("signal" in name for name in _names(report, 3))
    assert "before checkpoint 4 (WaitExpired approval, WaitStarted countersign)" in (
        _names(report, 3))


def test_a_handler_only_a_second_signal_reaches_is_named_at_its_first_point() -> None:
    report = check_crash_points(cs.Countersigned, kwargs={"countersign_idempotent": False},
                                snapshot=cs.balances, setup=cs.reset,
                                plans=[PLAIN, ANOTHER], fail_fast=True)
    assert all(r.ok for r in report.points if r.point.plan == 0)  # never reached there
    first = report.first_failure
    assert first is not None and report.points[-1] is first
    assert first.point == CrashPoint(1, ANOTHER.describe(), 15, "effect", "after",
                                     "countersign:forward", 1, 0)
    assert first.status == "COMPLETED"
    assert "'countersigned-by-ann': 1 without a crash, 2 after this one" in first.problems[0]


@pytest.mark.parametrize(("plan", "seq"), [(LATE, 12), (EARLY, 15)])
def test_a_late_or_early_signal_reaches_the_broken_handler_too(plan: FailurePlan,
                                                               seq: int) -> None:
    report = check_crash_points(cs.Countersigned, kwargs={"countersign_idempotent": False},
                                snapshot=cs.balances, setup=cs.reset, plans=[plan],
                                fail_fast=True)
    first = report.first_failure
    assert first is not None
    assert (first.point.seq, first.point.name) == (
        seq, "after countersign:forward took effect, before its checkpoint")


def test_an_async_saga_takes_early_signals_sent_with_asignal() -> None:
    plan = FailurePlan(signals=[SignalPlan("approval", ANN, arrives=Arrival.EARLY)])
    report = check_crash_points(cs.AsyncApprovedOrder, snapshot=cs.balances,
                                setup=cs.reset, plans=[plan])
    assert report.ok, report.describe()
    assert report.references == ("COMPLETED",)
    assert _names(report, 0)[2:4] == ["before signal 'decision' is stored",
                                      "after signal 'decision' is stored"]

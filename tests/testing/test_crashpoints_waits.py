"""check_crash_points on sagas that wait (a signal, a timer) and with chained crashes
(``depth=2``: each recovery killed at its own points too): real child processes killed
with SIGKILL, recovered in a fresh process, on SQLite (a file per point).

The participants (``crashpoint_sagas``) keep their effects in a SQLite file named by
``$CRASHPOINT_LEDGER``, which the children inherit.
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

#: the approval comes while the saga waits, and again (same signal id); no approval
APPROVED = FailurePlan(signals=[SignalPlan("approval", cs.Approval("ann"), twice=True)])
UNANSWERED = FailurePlan(signals=[SignalPlan("approval", arrives=Arrival.NEVER)])

#: the crash points of the approved run, from parking at the wait on
APPROVED_POINTS = [
    "before checkpoint 3 (StepCompleted reserve, WaitStarted approval)",  # parks
    "after checkpoint 3 (StepCompleted reserve, WaitStarted approval)",
    "before signal 'decision' is stored",
    "after signal 'decision' is stored",
    "after approval:forward took effect, before its checkpoint",
    "before checkpoint 4 (SignalDelivered approval, StepStarted approval, StepCompleted "
    "approval, WaitStarted cooling_off)",  # delivered; parks at the timer
    "after checkpoint 4 (SignalDelivered approval, StepStarted approval, StepCompleted "
    "approval, WaitStarted cooling_off)",
    "before signal 'decision' (#2) is stored",  # the duplicate: ignored
    "after signal 'decision' (#2) is stored",
    "before checkpoint 5 (StepStarted cooling_off)",  # the timer fired
    "after checkpoint 5 (StepStarted cooling_off)",
    "after cooling_off:forward took effect, before its checkpoint",
    "before checkpoint 6 (StepCompleted cooling_off, StepStarted ship)",
    "after checkpoint 6 (StepCompleted cooling_off, StepStarted ship)",
    "after ship:forward took effect, before its checkpoint",
    "before checkpoint 7 (StepCompleted ship, SagaCompleted)",
    "after checkpoint 7 (StepCompleted ship, SagaCompleted)",
]


def _names(report: CrashPointsReport, plan: int) -> list[str]:
    return [r.point.name for r in report.points if r.point.plan == plan]


@pytest.mark.parametrize("saga", [cs.ApprovedOrder, cs.AsyncApprovedOrder])
def test_a_sound_waiting_saga_passes_at_every_point_around_its_signal_and_timer(
    saga: type,
) -> None:
    report = check_crash_points(saga, snapshot=cs.balances, setup=cs.reset,
                                plans=[APPROVED, UNANSWERED])
    assert report.ok, report.describe()
    assert report.references == ("COMPLETED", "COMPENSATED")
    assert {r.outcome for r in report.points} == {"ok"}
    # killed before it parked, while parked, with the signal stored and not delivered,
    # inside the handler, at the timer: the signal comes (again) after recovery
    assert _names(report, 0)[5:] == APPROVED_POINTS
    assert [r.status for r in report.points if r.point.plan == 0] == ["COMPLETED"] * 22
    # nobody answers: the clock moves to the wait's timeout, which compensates
    assert "before checkpoint 4 (WaitExpired approval, CompensationStarted reserve)" in (
        _names(report, 1))
    assert "after reserve:compensate took effect, before its checkpoint" in _names(report, 1)
    assert [r.status for r in report.points if r.point.plan == 1] == ["COMPENSATED"] * 12


def test_a_signal_handler_that_is_not_idempotent_is_named_at_its_first_point() -> None:
    report = check_crash_points(cs.ApprovedOrder, kwargs={"idempotent": False},
                                snapshot=cs.balances, setup=cs.reset,
                                plans=[APPROVED, UNANSWERED])
    first = report.first_failure
    assert first is not None
    assert first.point == CrashPoint(0, APPROVED.describe(), 10, "effect", "after",
                                     "approval:forward", 1, 0)
    assert first.status == "COMPLETED"
    assert "'approved-by-ann': 1 without a crash, 2 after this one" in first.problems[0]
    # the handler's effect before its checkpoint: that point and the write of it
    assert [r.point.seq for r in report.failures] == [10, 11]


def test_a_recovery_that_is_not_idempotent_fails_only_when_it_is_crashed_too() -> None:
    once = check_crash_points(cs.VoidingCharge, snapshot=cs.balances, setup=cs.reset,
                              plans=[FailurePlan()])
    assert once.ok, once.describe()
    assert all(r.recovery is None for r in once.points)

    twice = check_crash_points(cs.VoidingCharge, snapshot=cs.balances, setup=cs.reset,
                               plans=[FailurePlan()], depth=2)
    assert len(twice.points) > 3 * len(once.points)  # each recovery's points too
    first = twice.first_failure
    assert first is not None and first.recovery is not None
    assert first.point.name == "after charge:forward took effect, before its checkpoint"
    # the recovery killed once the charge's second attempt is recorded started: the
    # third voids the second (never made) and charges again; the first stays
    assert (first.recovery.seq, first.recovery.name) == (
        2, "after checkpoint 1 (OperatorAction, StepStarted charge)")
    assert "'card': 30 without a crash, 60 after this one" in first.problems[0]
    assert first.where.endswith(
        "; recovery killed at 2: after checkpoint 1 (OperatorAction, StepStarted charge)")
    assert "first failure: [nothing goes wrong] 8: after charge:forward" in twice.describe()
    # depth 1's points come first, each followed by its chained ones
    assert [r.point for r in twice.points if r.recovery is None] == [
        r.point for r in once.points]


def _chained(plan: FailurePlan, status: str) -> list:
    report = check_crash_points(cs.ApprovedOrder, snapshot=cs.balances, setup=cs.reset,
                                plans=[plan], depth=2)
    assert report.ok, report.describe()
    assert {r.status for r in report.points if r.outcome == "ok"} == {status}
    return [r for r in report.points if r.recovery is not None]


def test_a_sound_waiting_saga_survives_chained_crashes_at_its_timeout() -> None:
    chained = _chained(UNANSWERED, "COMPENSATED")
    assert len(chained) > 50
    # a recovery killed as it expires the wait, and inside the compensation it starts
    names = {r.recovery.name for r in chained}  # type: ignore[union-attr]
    assert any("WaitExpired approval" in name for name in names), names
    assert "after reserve:compensate took effect, before its checkpoint" in names


@pytest.mark.slow
def test_a_sound_waiting_saga_survives_chained_crashes_around_its_signal() -> None:
    chained = _chained(APPROVED, "COMPLETED")
    assert len(chained) > 100
    # a recovery killed as it sends the signal again (or the duplicate) and stores it
    assert any(r.recovery.kind == "signal" for r in chained)  # type: ignore[union-attr]


def test_each_recovery_is_killed_at_its_own_points_down_to_depth() -> None:
    # 7 points; a recovery's own run has 4 to 7: the runs grow about fivefold a level
    counts = {depth: check_crash_points(cs.Voiding1, kwargs={"voids": 2},
                                        snapshot=cs.balances, setup=cs.reset,
                                        plans=[FailurePlan()], depth=depth)
              for depth in (1, 2)}
    assert all(report.ok for report in counts.values())
    assert [len(report.points) for report in counts.values()] == [7, 39]
    assert {len(r.chain) for r in counts[2].points} == {0, 1}


@pytest.mark.slow
def test_a_bug_three_crashes_deep_is_found_at_depth_3_only() -> None:
    # the retry voids the two attempts before it: two chained crashes leave nothing
    # behind, three leave the first attempt's payment
    def report(depth: int) -> CrashPointsReport:
        return check_crash_points(cs.Voiding1, kwargs={"voids": 2}, snapshot=cs.balances,
                                  setup=cs.reset, plans=[FailurePlan()], depth=depth,
                                  fail_fast=True)

    assert report(2).ok
    deep = report(3)
    first = deep.first_failure
    assert first is not None and deep.points[-1] is first
    assert first.point.name == "after charge:forward took effect, before its checkpoint"
    assert [(p.seq, p.name) for p in first.chain] == [
        (2, "after checkpoint 1 (OperatorAction, StepStarted charge)")] * 2
    assert first.where.endswith(
        "; recovery killed at 2: after checkpoint 1 (OperatorAction, StepStarted charge)"
        "; recovery 2 killed at 2: after checkpoint 1 (OperatorAction, StepStarted charge)")
    assert "'card': 30 without a crash, 60 after this one" in first.problems[0]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"saga": cs.ApprovedOrder}, r"waits \(approval\).*SignalPlan\('approval', payload\)"),
    ({"saga": cs.Order, "depth": 0}, "depth is a whole number from 1"),
    ({"saga": cs.Order, "depth": True}, "depth is a whole number from 1"),
])
def test_bad_input_is_a_value_error_naming_the_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_crash_points(**kwargs)

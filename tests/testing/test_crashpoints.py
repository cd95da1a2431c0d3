"""check_crash_points: real child processes killed with SIGKILL at every crash point of a
user's saga, recovered in a fresh process, on SQLite (a file per point).

The participants (``crashpoint_sagas``) keep their effects in a SQLite file named by
``$CRASHPOINT_LEDGER``, which the children inherit.
"""

from __future__ import annotations

import crashpoint_sagas as cs
import pytest
from crashpoint_sagas import ledger  # noqa: F401  (a fixture)

from sagaflow.testing import (
    CrashPoint,
    CrashPointsReport,
    FailurePlan,
    Fault,
    check_crash_points,
)
from sagaflow.testing.pytest_plugin import crash_points  # noqa: F401  (a fixture)

#: the crash points of Order's (and BrokenCharge's) run where nothing goes wrong
HAPPY = [
    "before checkpoint 1 (SagaStarted)",
    "after checkpoint 1 (SagaStarted)",
    "before checkpoint 2 (StepStarted reserve)",
    "after checkpoint 2 (StepStarted reserve)",
    "after reserve:forward took effect, before its checkpoint",
    "before checkpoint 3 (StepCompleted reserve, StepStarted charge)",
    "after checkpoint 3 (StepCompleted reserve, StepStarted charge)",
    "after charge:forward took effect, before its checkpoint",
    "before checkpoint 4 (StepCompleted charge, StepStarted ship)",
    "after checkpoint 4 (StepCompleted charge, StepStarted ship)",
    "after ship:forward took effect, before its checkpoint",
    "before checkpoint 5 (StepCompleted ship, SagaCompleted)",
    "after checkpoint 5 (StepCompleted ship, SagaCompleted)",
]


def _names(report: CrashPointsReport, plan: int) -> list[str]:
    return [r.point.name for r in report.points if r.point.plan == plan]


def test_a_sound_saga_passes_at_every_crash_point_happy_and_compensating() -> None:
    # the factory returns a SagaCase carrying its own setup and snapshot (run in the child)
    report = check_crash_points("crashpoint_sagas:order_case")
    assert report.ok, report.describe()
    assert report.effects_checked
    assert report.plans == ("nothing goes wrong", "charge raises for good")
    assert report.references == ("COMPLETED", "COMPENSATED")
    assert {r.outcome for r in report.points} == {"ok"}
    assert [r.status for r in report.points if r.point.plan == 0] == ["COMPLETED"] * 13
    assert _names(report, 0) == HAPPY
    # the failing plan crashes inside the compensation too
    assert "after reserve:compensate took effect, before its checkpoint" in _names(report, 1)
    assert [r.status for r in report.points if r.point.plan == 1] == (
        ["COMPENSATED"] * len(_names(report, 1))
    )


def test_a_step_that_is_not_idempotent_is_named_at_the_first_crash_point_it_breaks() -> None:
    report = check_crash_points(cs.BrokenCharge, snapshot=cs.balances, setup=cs.reset,
                                plans=[FailurePlan()])
    assert not report.ok
    first = report.first_failure
    assert first is not None
    assert first.point == CrashPoint(0, "nothing goes wrong", 8, "effect", "after",
                                     "charge:forward", 1, 0)
    assert str(first.point) == (
        "[nothing goes wrong] 8: after charge:forward took effect, before its checkpoint"
    )
    assert first.status == "COMPLETED"  # the saga is fine: the world is not
    assert "'card': 30 without a crash, 60 after this one" in first.problems[0]
    # every point before it passed; the one right after (same durable state) fails too
    assert [r.outcome for r in report.points][:9] == ["ok"] * 7 + ["failed"] * 2
    assert [r.point.seq for r in report.failures] == [8, 9]
    assert _names(report, 0) == HAPPY
    table = report.describe()
    assert "first failure: [nothing goes wrong] 8: after charge:forward took effect" in table
    assert "13 point(s), 2 failed" in table


def test_a_compensation_that_is_not_idempotent_is_named_inside_the_compensation() -> None:
    report = check_crash_points(cs.BrokenRefund, snapshot=cs.balances, setup=cs.reset,
                                plans=[FailurePlan(step="ship")], fail_fast=True)
    first = report.first_failure
    assert first is not None and report.failures == (first,)  # fail_fast: stopped there
    assert report.points[-1] is first
    assert (first.point.kind, first.point.what) == ("effect", "charge:compensate")
    assert first.point.name == "after charge:compensate took effect, before its checkpoint"
    assert first.status == "COMPENSATED"
    assert "'card': '<missing>' without a crash, -30 after this one" in first.problems[0]


def test_an_async_saga_is_recovered_with_arecover_at_every_point() -> None:
    report = check_crash_points(cs.AsyncOrder, snapshot=cs.balances, setup=cs.reset,
                                plans=[FailurePlan(step="charge")])
    assert report.ok, report.describe()
    assert report.references == ("COMPENSATED",)
    assert "after reserve:compensate took effect, before its checkpoint" in _names(report, 0)


def test_the_fixture_fails_the_test_with_the_table(crash_points) -> None:  # noqa: F811
    with pytest.raises(AssertionError, match=r"first failure: .* charge:forward took effect"):
        crash_points(cs.BrokenCharge, snapshot=cs.balances, setup=cs.reset,
                     plans=[FailurePlan()], fail_fast=True)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"saga": lambda: cs.Order()}, "import in a child process"),
    ({"saga": "crashpoint_sagas"}, "'module:callable'"),
    ({"saga": "crashpoint_sagas:not_a_saga"}, "must return a saga instance"),
    ({"saga": cs.Order, "plans": [FailurePlan(step="charge", fault=Fault.TIMES_OUT)]},
     "not fault=Fault.TIMES_OUT"),
    ({"saga": cs.Order, "plans": [FailurePlan(step="nope")]}, "nope"),
    ({"saga": cs.Order, "store": "mysql://x"}, "postgresql://"),
    ({"saga": cs.Order, "kwargs": {"amount": 1, "colour": "red"}}, "give kwargs="),
])
def test_bad_input_is_a_value_error_naming_the_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_crash_points(**kwargs)


def _group_report(**options: object) -> CrashPointsReport:
    report = check_crash_points(cs.Packing, snapshot=cs.balances, setup=cs.reset,
                                **options)  # type: ignore[arg-type]
    assert report.ok, report.describe()
    names = {r.point.name for r in report.points}
    for call in ("box:forward", "label:forward", "pick[a]:forward", "box:compensate",
                 "label:compensate", "pick[a]:compensate"):
        assert f"after {call} took effect, before its checkpoint" in names
    # members on threads may end in another order than in the reference run, so a
    # point of it may not come again: "not reached", never a failure
    assert {r.outcome for r in report.points} <= {"ok", "not reached"}
    assert sum(r.outcome == "ok" for r in report.points) > 0.6 * len(report.points)
    return report


def test_parallel_members_and_fan_out_items_are_crashed_and_recovered() -> None:
    report = _group_report(kwargs={"lines": ["a"]}, plans=[FailurePlan(step="close")])
    assert report.references == ("COMPENSATED",)


@pytest.mark.slow
def test_parallel_members_and_fan_out_items_every_plan() -> None:
    report = _group_report()
    assert report.references == ("COMPLETED", "COMPENSATED")


def test_a_failing_pivot_is_crash_checked_everywhere_but_where_its_outcome_is_unknown() -> None:
    report = check_crash_points(cs.Order, snapshot=cs.balances, setup=cs.reset,
                                plans=[FailurePlan(step="ship")])
    assert report.ok, report.describe()
    assert report.references == ("COMPENSATED",)
    # the pivot recorded started and cut off, then failing again: it may have shipped,
    # so nothing is undone and the saga waits for an operator, FAILED (checked)
    excluded = [(r.point.seq, r.point.name, r.status) for r in report.points
                if r.outcome == "excluded"]
    assert excluded == [
        (10, "after checkpoint 4 (StepCompleted charge, StepStarted ship)", "FAILED"),
        (11, "before checkpoint 5 (StepFailed ship, CompensationStarted charge)", "FAILED"),
    ]
    # before the pivot, and in every compensation after it failed, checked in full
    ok = [r for r in report.points if r.outcome == "ok"]
    assert len(ok) == 16 and {r.status for r in ok} == {"COMPENSATED"}
    assert "after charge:compensate took effect, before its checkpoint" in _names(report, 0)
    assert "excluded: 2 point(s) cut the pivot off" in report.describe()


def test_participants_whose_state_dies_with_the_process_are_said_not_checked() -> None:
    # every point would compare the state before the run with itself and pass: the
    # report says the effects were not checked, and why, rather than "every effect once"
    report = check_crash_points("crashpoint_sagas:forgetful_case",
                                plans=[FailurePlan()])
    assert report.ok
    assert not report.effects_checked
    assert report.unchecked_because.startswith(
        "the participants' state did not outlive the process that ran the saga")
    assert "keep it in a file or a database" in report.unchecked_because
    assert "did not outlive" in report.describe().splitlines()[0]
    # the same saga's participants filed: checked
    assert check_crash_points("crashpoint_sagas:order_case",
                              plans=[FailurePlan()]).effects_checked

"""The UnbundleSaga's example cases (``example_sagas()``): what the property tests and
``sagaflow verify`` run it on, and what their gates found.

The cases share one database file per process, reset before each run: these tests
check that the reset is real, that the snapshot is what customers and billing see, and
that the gates run on the saga (not skip): idempotency, nothing to undo, and crash
points with its effects compared (real child processes killed with SIGKILL).
"""

from __future__ import annotations

from typing import Any

from example_fixtures import crash_verified, make_ctx
from hypothesis import given, settings

from examples.subscriptions import db as dbmod
from examples.subscriptions import demo as scenarios
from examples.subscriptions.saga import (
    CASE_SUBSCRIPTION,
    Decision,
    UnbundleSaga,
    case_database,
    case_state,
    example_case,
    example_sagas,
    reset_case_database,
)
from sagaflow import SagaStatus
from sagaflow.testing import (
    FailurePlan,
    SagaCase,
    SignalPlan,
    assert_compensations_idempotent,
    assert_compensations_tolerate_nothing_to_undo,
    check_crash_points,
    run_plan,
)

MOST = scenarios.MOST  # 4 of 6: the approver's wait
APPROVED = Decision(True, "ann", "retention offer")
FRESH_PRICE = "67.77"  # the whole bundle, 15% off


def fresh_state() -> dict[str, Any]:
    reset_case_database()
    return case_state()


def test_setup_resets_the_database_to_the_catalogue_and_one_whole_subscription() -> None:
    fresh = fresh_state()
    assert fresh == {
        "subscriptions": {CASE_SUBSCRIPTION: (
            FRESH_PRICE, tuple(sorted(c.component_id for c in scenarios.COMPONENTS)))},
        "approvals": [], "audit": [],
    }
    run = run_plan(example_case(("api",)))
    assert run.status is SagaStatus.COMPLETED
    assert case_state() != fresh  # the run changed it...
    db = case_database()
    db.faults.fail("load", RuntimeError("armed by an earlier test"), times=None)
    reset_case_database()
    assert case_state() == fresh  # ...and setup put it back, faults disarmed
    assert db.query("SELECT count(*) FROM applied_keys") == [(0,)]
    assert run_plan(example_case(("api",))).status is SagaStatus.COMPLETED


def test_the_cases_become_the_sagas_database_again_after_a_test_opened_its_own(
    tmp_path: Any,
) -> None:
    reset_case_database()
    other = dbmod.open_database(tmp_path / "other.db")
    assert dbmod.database() is other
    reset_case_database()
    assert dbmod.database() is case_database()


def test_the_snapshot_leaves_out_what_an_undo_keeps_on_purpose() -> None:
    fresh = fresh_state()
    run = run_plan(example_case(MOST), FailurePlan(
        signals=[SignalPlan("await_approval", Decision(False, "bob", "no"))]))
    assert run.status is SagaStatus.COMPENSATED
    # the withdrawn approval, the version bumped twice and the history stay (trail)...
    db = case_database()
    assert db.query("SELECT status FROM approvals") == [("WITHDRAWN",)]
    # ...and what customers, approver and billing see is as before
    assert case_state() == fresh


@settings(max_examples=60, deadline=None, database=None)
@given(case=example_sagas())
def test_valid_requests_complete_and_refused_ones_end_at_validate(case: SagaCase) -> None:
    saga: UnbundleSaga = case.saga
    approver = FailurePlan(signals=[SignalPlan("await_approval", APPROVED)])
    run = run_plan(case, approver)
    if case.allow_step_errors:  # the rules refuse it: nothing written
        assert run.status is SagaStatus.COMPENSATED  # with nothing to undo
        assert run.result.steps[0].status.value == "FAILED"
        assert case_state() == fresh_state()
    else:
        assert run.status is SagaStatus.COMPLETED, run.table()
        assert 1 <= len(saga.remove) <= 5
        [(_, components)] = case_state()["subscriptions"].values()
        assert not set(saga.remove) & set(components)


def test_the_approvers_case_compensations_are_idempotent_and_tolerate_nothing_to_undo(
) -> None:
    # verify's gate picks a case that completes without a signal (no approval): this
    # one reaches create_approval, so withdraw_approval is checked too
    payloads = {"approval": APPROVED}
    assert_compensations_idempotent(example_case(MOST), payloads=payloads)
    assert_compensations_tolerate_nothing_to_undo(example_case(MOST), payloads=payloads)


def test_a_late_create_approval_after_its_withdrawal_leaves_no_approval_standing() -> None:
    # Found reading what the nothing-to-undo gate passes over: create_approval timed out
    # before its thread even named the approval (a busy pool), so withdraw_approval ran
    # with approval_id None and returned without the WITHDRAWN row that refuses a late
    # create; the create then arrived and left a PENDING approval behind a COMPENSATED
    # saga. The id is the saga's own, so the withdrawal now names it itself.
    fresh = fresh_state()
    saga = UnbundleSaga(CASE_SUBSCRIPTION, scenarios.BUNDLE, MOST)
    saga.calculate_pricing(make_ctx(saga, "late", "calculate_pricing", compensate=False))
    saga.withdraw_approval(make_ctx(saga, "late", "create_approval"))
    saga.create_approval(make_ctx(saga, "late", "create_approval", compensate=False))
    assert case_state() == fresh
    assert case_database().query("SELECT status FROM approvals") == [("WITHDRAWN",)]


def test_crash_points_of_the_approvers_case_compare_the_database() -> None:
    plans = [
        FailurePlan(signals=[SignalPlan("await_approval", APPROVED, twice=True)]),
        FailurePlan(signals=[SignalPlan("await_approval", Decision(False, "bob", "no"))]),
    ]
    report = check_crash_points("examples.subscriptions.saga:example_case",
                                kwargs={"remove": MOST}, plans=plans)
    report.assert_ok()
    assert report.effects_checked
    assert report.references == ("COMPLETED", "COMPENSATED")
    names = {r.point.name for r in report.points}
    assert "after create_approval:compensate took effect, before its checkpoint" in names
    assert "after apply_modification:forward took effect, before its checkpoint" in names


def test_crash_points_see_a_write_that_is_not_idempotent() -> None:
    # the gate's teeth: an audit append that forgets its key doubles the trail when
    # the process dies after writing it and the recovery writes it again
    report = check_crash_points(forgetful_case, plans=[FailurePlan()])  # no wait on its way
    assert not report.ok
    first = report.first_failure
    assert first is not None
    assert first.point.name == "after emit_audit_events:forward took effect, before its checkpoint"
    assert "'audit'" in "\n".join(first.problems)


def forgetful_case() -> SagaCase:
    """A case whose audit append runs under a fresh key each call (not idempotent)."""
    case = example_case(("api",))

    def append(key: str, *args: Any, **kw: Any) -> int:
        counted = int(case_database().query("SELECT count(*) FROM audit_events")[0][0])
        return original(f"{key}#{counted}", *args, **kw)

    def setup() -> None:
        reset_case_database()
        case_database().append_audit_events = append  # type: ignore[method-assign]

    original = dbmod.SubscriptionDB.append_audit_events.__get__(case_database())
    return SagaCase(case.saga, setup, case_state)


def test_verify_runs_every_gate_on_the_unbundle_saga_effects_compared() -> None:
    gates = crash_verified("examples.subscriptions")
    assert gates["idempotency"][1] == "2 compensations run twice: no change"

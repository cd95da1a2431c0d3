"""The UnbundleSaga on its SQLite domain database: seed 000's scenarios and more.

The scenarios are the demo's own (``examples.subscriptions.demo``), so what the demo
shows is what is tested. Each test gets a fresh database file. The approval's wait is
tested on the memory store and on a SQLite store, its signal sent in the process and
from the command line (``python -m sagaflow sagas signal``, a real subprocess).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from example_fixtures import Captured, compensation_order, make_ctx

from examples._support import Voided
from examples.subscriptions import db as dbmod
from examples.subscriptions import demo as scenarios
from examples.subscriptions.rules import Rejected, Rejection
from examples.subscriptions.saga import (
    APPROVAL_WINDOW,
    ApprovalGranted,
    ApprovalRequested,
    ApprovalWithdrawn,
    BundleModified,
    Decision,
    ModificationReverted,
    UnbundleSaga,
)
from sagaflow import (
    CompensationStatus,
    OnTimeout,
    Orchestrator,
    SagaRejected,
    SagaStatus,
    SignalRefused,
    StepError,
    StepKind,
    StepStatus,
    StepTimeout,
    WaitTimedOut,
    events,
    spec_of,
)
from sagaflow.stores.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]
FULL_PRICE = Decimal("67.77")  # (24.00 + 9.99 + 14.50 + 7.25 + 4.99 + 19.00) * 0.85
MOST = scenarios.MOST  # 4 of 6 components: more than half, the approver must answer


@pytest.fixture
def db(tmp_path: Path) -> Iterator[dbmod.SubscriptionDB]:
    database = dbmod.open_database(tmp_path / "subscriptions.db")
    scenarios.seed(database)
    yield database
    database.faults.clear()
    database.wait_idle()


def state(db: dbmod.SubscriptionDB, sub: str) -> dict[str, Any]:
    """A subscription's rows, as a person would check them."""
    price, version = db.query(
        "SELECT price, version FROM subscriptions WHERE subscription_id = ?", sub
    )[0]
    return {
        "components": sorted(c for (c,) in db.query(
            "SELECT component_id FROM subscription_components WHERE subscription_id = ?", sub)),
        "price": Decimal(price),
        "version": version,
        "approvals": [s for (s,) in db.query(
            "SELECT status FROM approvals WHERE subscription_id = ?", sub)],
        "audit": [t for (t,) in db.query(
            "SELECT type FROM audit_events WHERE subscription_id = ? ORDER BY seq", sub)],
    }


ALL = sorted(c.component_id for c in scenarios.COMPONENTS)


def test_the_steps_have_the_kinds_the_design_says() -> None:
    spec = spec_of(UnbundleSaga)
    assert [(s.name, s.kind) for s in spec.steps] == [
        ("validate", StepKind.READONLY),
        ("calculate_pricing", StepKind.READONLY),
        ("create_approval", StepKind.COMPENSATABLE),
        ("await_approval", StepKind.READONLY),
        ("apply_modification", StepKind.COMPENSATABLE),
        ("emit_audit_events", StepKind.PIVOT),
    ]
    assert spec.step("create_approval").guard_name == "approval_required"
    wait = spec.step("await_approval")
    assert wait.guard_name == "approval_required"  # the rules' threshold decides both
    assert wait.wait is not None
    assert (wait.wait.signal, wait.wait.payload) == ("approval", Decision)
    assert wait.wait.timeout == APPROVAL_WINDOW.total_seconds() == 3 * 86_400
    assert wait.wait.on_timeout is OnTimeout.COMPENSATE
    assert spec.key == "subscription_id" and spec.signals == {"approval": (3,)}


# --- seed 000's scenarios -----------------------------------------------------------


def test_1_happy_path(db: dbmod.SubscriptionDB, demo: Captured) -> None:
    result = scenarios.happy_path(demo)

    assert result.status is SagaStatus.COMPLETED
    assert result.step("create_approval").status is StepStatus.SKIPPED
    assert result.events == (
        BundleModified("sub-1", ("templates",), FULL_PRICE, Decimal("63.53")),
    )
    assert state(db, "sub-1") == {
        "components": sorted(set(ALL) - {"templates"}),
        "price": Decimal("63.53"),
        "version": 2,
        "approvals": [],
        "audit": ["BundleModified"],
    }
    # the modification was one transaction: one price change, one applied key
    assert db.query("SELECT reason FROM price_history") == [("components removed",)]


@pytest.mark.parametrize(
    ("scenario", "sub", "removed", "approval"),
    [
        (scenarios.just_below_half, "sub-2", 2, False),
        (scenarios.exactly_half, "sub-3", 3, False),
        (scenarios.just_above_half, "sub-4", 4, True),
    ],
    ids=["just-below-50%", "exactly-50%", "just-above-50%"],
)
def test_2_3_4_approval_boundaries(
    db: dbmod.SubscriptionDB, demo: Captured, scenario: Any, sub: str, removed: int,
    approval: bool,
) -> None:
    result = scenario(demo)

    assert result.status is SagaStatus.COMPLETED
    for name in ("create_approval", "await_approval"):
        step = result.step(name)
        assert step.status is (StepStatus.COMPLETED if approval else StepStatus.SKIPPED)
    after = state(db, sub)
    assert len(after["components"]) == 6 - removed
    assert after["approvals"] == (["APPROVED"] if approval else [])
    expected = (["ApprovalRequested", "ApprovalGranted", "BundleModified"] if approval
                else ["BundleModified"])
    assert after["audit"] == expected
    assert [type(e).__name__ for e in result.events] == expected
    if approval:
        assert result.data.approval_id == "APR-unbundle-4"
        assert result.data.approved_by == "ann"
        assert result.events[:2] == (ApprovalRequested("APR-unbundle-4", "sub-4", "2/3"),
                                     ApprovalGranted("APR-unbundle-4", "ann"))
        assert db.query("SELECT decided_by FROM approvals") == [("ann",)]
        assert "await_approval ⏸ parked: waits up to 3d for signal 'approval'" in demo.text
        assert "await_approval ✓ signal 'approval' received   approved_by=ann" in demo.text
    else:
        assert "parked" not in demo.text


def test_5_a_refused_request_fails_validate_and_changes_nothing(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    result = scenarios.invalid_request(demo)

    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepError) and result.error.step == "validate"
    cause = result.error.cause
    assert isinstance(cause, Rejected) and cause.reason is Rejection.UNKNOWN_COMPONENT
    assert state(db, "sub-5")["components"] == ALL
    assert result.events == ()


def test_6_calculate_pricing_fails_with_nothing_to_undo(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    result = scenarios.pricing_read_fails(demo)

    assert result.status is SagaStatus.COMPENSATED
    assert result.error.step == "calculate_pricing"  # type: ignore[union-attr]
    assert compensation_order(result) == []
    assert state(db, "sub-6")["version"] == 1


def test_7_create_approval_fails_with_nothing_to_undo(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    result = scenarios.approval_fails(demo)

    assert result.status is SagaStatus.COMPENSATED
    assert result.error.step == "create_approval"  # type: ignore[union-attr]
    assert compensation_order(result) == []
    assert state(db, "sub-7") == {
        "components": ALL, "price": FULL_PRICE, "version": 1, "approvals": [], "audit": [],
    }


def test_8_apply_fails_at_commit_rolls_back_and_withdraws_the_approval(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    result = scenarios.apply_fails(demo)

    assert result.status is SagaStatus.COMPENSATED
    assert result.error.step == "apply_modification"  # type: ignore[union-attr]
    assert compensation_order(result) == ["create_approval"]
    # the transaction rolled back as a whole: nothing of the modification is left
    assert state(db, "sub-8") == {
        "components": ALL, "price": FULL_PRICE, "version": 1, "approvals": ["WITHDRAWN"],
        "audit": [],
    }
    assert db.query("SELECT count(*) FROM price_history") == [(0,)]
    assert [type(e) for e in result.events] == [
        ApprovalRequested, ApprovalGranted, ApprovalWithdrawn,
    ]


def test_9_the_pivot_fails_and_both_steps_are_undone_newest_first(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    result = scenarios.audit_fails(demo)

    assert result.status is SagaStatus.COMPENSATED
    assert result.error.step == "emit_audit_events"  # type: ignore[union-attr]
    assert compensation_order(result) == ["apply_modification", "create_approval"]
    assert state(db, "sub-9") == {
        "components": ALL, "price": FULL_PRICE, "version": 3, "approvals": ["WITHDRAWN"],
        "audit": [],  # BundleModified was never published, so no revert is either
    }
    assert [type(e) for e in result.events] == [
        ApprovalRequested, ApprovalGranted, BundleModified, ModificationReverted,
        ApprovalWithdrawn,
    ]


def test_10_a_revert_whose_answer_is_lost_restores_once(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    # seed 000's production hardening gap: the compensation is retried after it took effect
    result = scenarios.revert_answer_lost(demo)

    assert result.status is SagaStatus.COMPENSATED
    revert = result.step("apply_modification")
    assert revert.compensation is CompensationStatus.COMPENSATED
    assert revert.compensation_attempts == 2
    assert db.faults.calls["revert_modification"] == 2
    assert state(db, "sub-10")["components"] == ALL
    assert state(db, "sub-10")["price"] == FULL_PRICE
    reverts = db.query("SELECT count(*) FROM price_history WHERE reason = 'modification reverted'")
    assert reverts == [(1,)]
    assert [type(e) for e in result.events] == [BundleModified, ModificationReverted]


def test_11_a_busy_database_is_retried(db: dbmod.SubscriptionDB, demo: Captured) -> None:
    result = scenarios.locked_then_ok(demo)

    assert result.status is SagaStatus.COMPLETED
    assert result.step("apply_modification").attempts == 2
    assert state(db, "sub-11")["version"] == 2
    assert "retrying in 0.05s" in demo.text


# --- idempotency ------------------------------------------------------------------


def test_compensations_run_twice_leave_the_same_state(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    result = scenarios.audit_fails(demo)
    saga: UnbundleSaga = result.data
    before = db.snapshot()

    for step_name, undo in (
        ("apply_modification", saga.revert_modification),
        ("create_approval", saga.withdraw_approval),
    ):
        ctx = make_ctx(saga, result.saga_id, step_name)
        undo(ctx)
        undo(ctx)

    assert db.snapshot() == before


def test_forward_writes_repeated_with_their_key_change_nothing(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    result = scenarios.just_above_half(demo)
    saga: UnbundleSaga = result.data
    before = db.snapshot()

    for step_name in ("create_approval", "apply_modification", "emit_audit_events"):
        getattr(saga, step_name)(make_ctx(saga, result.saga_id, step_name, compensate=False))

    assert db.snapshot() == before


def test_an_undo_that_comes_first_voids_the_late_forward_write(
    db: dbmod.SubscriptionDB,
) -> None:
    scenarios.subscribe("sub-x")
    assert not db.revert_modification(
        "x:apply_modification:compensate", "x:apply_modification:forward", "x", "sub-x",
        ("api",), FULL_PRICE,
    )
    with pytest.raises(Voided):
        db.apply_modification("x:apply_modification:forward", "sub-x", ("api",),
                              Decimal("1.00"), 1)
    assert not db.withdraw_approval("x:create_approval:compensate", "APR-x", "sub-x")
    db.create_approval("x:create_approval:forward", "APR-x", "sub-x", ("api",), "1/6")
    assert state(db, "sub-x")["approvals"] == ["WITHDRAWN"]
    assert state(db, "sub-x")["components"] == ALL


# --- edge cases -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sub", "bundle", "remove", "reason"),
    [
        ("sub-e", "creator-suite", tuple(ALL), Rejection.REMOVES_EVERYTHING),
        ("sub-e", "creator-suite", ("api", "api"), Rejection.DUPLICATE_COMPONENT),
        ("sub-e", "creator-suite", (), Rejection.NOTHING_REMOVED),
        ("sub-e", "starter", ("api",), Rejection.UNKNOWN_BUNDLE),
        ("sub-none", "creator-suite", ("api",), Rejection.UNKNOWN_SUBSCRIPTION),
    ],
)
def test_refused_requests_end_the_saga_before_any_write(
    db: dbmod.SubscriptionDB, demo: Captured, sub: str, bundle: str,
    remove: tuple[str, ...], reason: Rejection,
) -> None:
    scenarios.subscribe("sub-e")
    before = db.snapshot()

    result = demo.orchestrator().run(UnbundleSaga(sub, bundle, remove))

    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepError) and result.error.step == "validate"
    assert isinstance(result.error.cause, Rejected)
    assert result.error.cause.reason is reason
    assert db.snapshot() == before


def test_a_component_already_removed_is_unknown_the_second_time(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    scenarios.happy_path(demo)  # sub-1 loses its templates
    again = demo.orchestrator().run(UnbundleSaga("sub-1", "creator-suite", ("templates",)))
    assert again.status is SagaStatus.COMPENSATED
    assert again.error.cause.reason is Rejection.UNKNOWN_COMPONENT  # type: ignore[union-attr]


def test_a_subscription_changed_meanwhile_is_a_conflict_and_nothing_is_lost(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    # Saga A stalls just before its modification; saga B modifies the same subscription;
    # A then finds another version than the one it priced, fails, and withdraws its approval.
    sub = scenarios.subscribe("sub-c")
    results: dict[str, Any] = {}
    orch = demo.orchestrator()
    a = UnbundleSaga(sub, "creator-suite", ("api", "editor", "storage", "support"))
    assert orch.run(a, "a").status is SagaStatus.RUNNING  # parked for its approval
    db.faults.hang("apply_modification", 0.9)  # under the 1 s step timeout
    approve = lambda: results.setdefault(  # noqa: E731
        "a", orch.signal("a", "approval", scenarios.APPROVED))
    thread = threading.Thread(target=approve)
    thread.start()
    while db.faults.calls["apply_modification"] == 0:  # A is stalled in its modification
        thread.join(0.005)
    results["b"] = orch.run(UnbundleSaga(sub, "creator-suite", ("templates",)), "b")
    db.faults.clear()  # A goes on
    thread.join()

    assert results["b"].status is SagaStatus.COMPLETED
    ra = results["a"]
    assert ra.status is SagaStatus.COMPENSATED
    assert isinstance(ra.error.cause, dbmod.Conflict)
    assert compensation_order(ra) == ["create_approval"]
    assert state(db, sub) == {
        "components": sorted(set(ALL) - {"templates"}), "price": Decimal("63.53"),
        "version": 2, "approvals": ["WITHDRAWN"], "audit": ["BundleModified"],
    }


# --- timeouts (real time: the sync runner waits a step's 1 s timeout for real) -------


def test_the_pivot_times_out_after_writing_and_an_operator_finishes_it(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    sub = scenarios.subscribe("sub-t")
    db.faults.hang("append_audit_events", 30, at="after")  # written, then no answer
    orchestrator = demo.orchestrator()
    orchestrator.run(UnbundleSaga(sub, "creator-suite", ("api", "editor", "storage", "support")),
                     "t")
    result = orchestrator.signal("t", "approval", scenarios.APPROVED)

    # The pivot's outcome is unknown: neither undoing the steps before it nor going on
    # is safe, so the saga stops FAILED, nothing undone, for an operator.
    assert result.status is SagaStatus.FAILED
    assert isinstance(result.error, StepTimeout)
    assert result.step("emit_audit_events").status is StepStatus.TIMED_OUT
    assert compensation_order(result) == []
    db.faults.clear()
    assert db.wait_idle()
    # The operator retries: the append is idempotent by its key, so the late write and
    # the retry leave one record of the change.
    again = orchestrator.retry("t", note="audit append timed out; retried")
    assert again.status is SagaStatus.COMPLETED
    after = state(db, sub)
    assert after["components"] == sorted(set(ALL) - {"api", "editor", "storage", "support"})
    assert after["audit"] == ["ApprovalRequested", "ApprovalGranted", "BundleModified"]


def test_a_modification_that_times_out_before_arriving_is_voided(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    sub = scenarios.subscribe("sub-v")
    db.faults.hang("apply_modification", 30)  # stalls before its transaction
    result = demo.orchestrator().run(UnbundleSaga(sub, "creator-suite", ("api",)), "v")

    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepTimeout)
    # its outcome was unknown, so its own compensation ran: it found nothing, and voided it
    assert result.step("apply_modification").compensation is CompensationStatus.COMPENSATED
    assert db.query("SELECT outcome FROM applied_keys WHERE key = ?",
                    "v:apply_modification:forward") == [("voided",)]
    db.faults.clear()  # the stalled call goes on, late, on its abandoned thread
    assert db.wait_idle()
    assert state(db, sub)["components"] == ALL  # and was refused
    assert state(db, sub)["version"] == 1


def test_a_database_that_stays_locked_fails_the_step_after_its_retries(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    sub = scenarios.subscribe("sub-l")
    db.faults.fail("apply_modification", sqlite3.OperationalError("database is locked"),
                   times=None)
    result = demo.orchestrator().run(UnbundleSaga(sub, "creator-suite", ("api",)), "l")

    assert result.status is SagaStatus.COMPENSATED
    assert result.step("apply_modification").attempts == 3
    assert state(db, sub)["version"] == 1


def test_no_database_open_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dbmod, "_current", None)
    monkeypatch.delenv(dbmod.DB_ENV, raising=False)
    with pytest.raises(RuntimeError, match=r"open_database.*SUBSCRIPTIONS_DB"):
        dbmod.database()


def test_a_process_that_did_not_open_the_database_opens_the_one_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(dbmod, "_current", None)
    monkeypatch.setenv(dbmod.DB_ENV, str(tmp_path / "elsewhere.db"))
    opened = dbmod.database()
    assert opened.path == str(tmp_path / "elsewhere.db") and dbmod.database() is opened


# --- the approval's wait (seed 000's scenario 5, "modification rejected") ------------


def parked_for_approval(demo: Captured, n: str) -> tuple[Orchestrator, str]:
    """An UnbundleSaga removing 4 of 6 components of a fresh subscription, parked."""
    sub = scenarios.subscribe(f"sub-{n}")
    orch = demo.orchestrator()
    result = orch.run(UnbundleSaga(sub, scenarios.BUNDLE, MOST), f"unbundle-{n}")
    assert result.status is SagaStatus.RUNNING
    assert result.step("await_approval").status is StepStatus.WAITING
    return orch, sub


def test_above_the_threshold_the_saga_parks_until_the_approver_approves(
    db: dbmod.SubscriptionDB, stored: Captured
) -> None:
    orch, sub = parked_for_approval(stored, "w")
    record = orch.store.load("unbundle-w")
    assert record is not None and record.waiting == "approval"
    assert record.state == "await_approval" and record.business_key == sub
    assert "unbundle-w" not in orch.runtime.live  # a row in the store, nothing in memory
    # the approval is requested, nothing is modified yet
    assert state(db, sub) == {
        "components": ALL, "price": FULL_PRICE, "version": 1, "approvals": ["PENDING"],
        "audit": [],
    }
    # the approver's tool knows the subscription, not the saga
    saga_id = orch.find(sub, UnbundleSaga, "approval")
    assert saga_id == "unbundle-w"
    result = orch.signal(saga_id, "approval", Decision(True, "ann", "ok"))

    assert result.status is SagaStatus.COMPLETED
    assert result.data.approved_by == "ann"
    assert state(db, sub)["approvals"] == ["APPROVED"]
    assert state(db, sub)["components"] == sorted(set(ALL) - set(MOST))
    kinds = [type(e) for e in result.history]
    assert kinds.index(events.WaitStarted) < kinds.index(events.SignalDelivered) < kinds.index(
        events.SagaCompleted)


def test_refused_withdraws_the_approval_and_the_rejection_is_the_outcome(
    db: dbmod.SubscriptionDB, stored: Captured
) -> None:
    result = scenarios.refused_by_the_approver(stored)

    assert result.status is SagaStatus.COMPENSATED
    error = result.error
    assert isinstance(error, SagaRejected) and not isinstance(error, StepError)
    assert error.step == "await_approval"
    assert error.reason == "refused by bob: the contract keeps at least half of the bundle"
    assert result.step("await_approval").status is StepStatus.REJECTED
    assert result.step("await_approval").attempts == 1  # a rejection is never retried
    assert compensation_order(result) == ["create_approval"]
    assert state(db, "sub-13") == {
        "components": ALL, "price": FULL_PRICE, "version": 1, "approvals": ["WITHDRAWN"],
        "audit": [],
    }
    assert [type(e) for e in result.events] == [ApprovalRequested, ApprovalWithdrawn]
    [rejected] = [e for e in result.history if isinstance(e, events.StepRejected)]
    assert rejected.error == error.reason
    assert "await_approval ✗ rejected: refused by bob" in stored.text
    assert "error: SagaRejected: saga rejected at 'await_approval': refused by bob" in (
        stored.text)
    if stored.store is not None:  # the durable record says so too
        record = stored.store.load(result.saga_id)
        assert record is not None and isinstance(record.error, SagaRejected)
        assert record.error.reason == error.reason


def test_no_answer_within_the_approval_window_withdraws_it(
    db: dbmod.SubscriptionDB, stored: Captured
) -> None:
    orch, sub = parked_for_approval(stored, "late")
    orch.clock.advance(APPROVAL_WINDOW.total_seconds() - 1)  # type: ignore[attr-defined]
    assert orch.resume_due() == {}  # a second before the window closes: still waiting
    assert state(db, sub)["approvals"] == ["PENDING"]
    orch.clock.advance(1)  # type: ignore[attr-defined]
    assert orch.resume_due() == {"unbundle-late": SagaStatus.COMPENSATED}

    result = orch.get("unbundle-late")
    assert result is not None
    assert isinstance(result.error, WaitTimedOut) and result.error.signal == "approval"
    assert result.step("await_approval").status is StepStatus.EXPIRED
    assert compensation_order(result) == ["create_approval"]
    assert state(db, sub)["approvals"] == ["WITHDRAWN"]
    assert state(db, sub)["components"] == ALL
    # the answer that comes too late is refused: the saga is over
    with pytest.raises(SignalRefused, match="finished saga"):
        orch.signal("unbundle-late", "approval", scenarios.APPROVED)


def test_the_demo_scenario_of_the_silent_approver(
    db: dbmod.SubscriptionDB, stored: Captured
) -> None:
    result = scenarios.nobody_answers(stored)
    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, WaitTimedOut)
    assert result.duration == APPROVAL_WINDOW.total_seconds()  # virtual: 3 days
    assert "await_approval ⏱ no signal 'approval' within 3d: compensate" in stored.text
    assert "⇒ COMPENSATED in 3d" in stored.text


def test_a_decision_that_does_not_fit_or_has_no_waiting_saga_is_refused(
    db: dbmod.SubscriptionDB, stored: Captured
) -> None:
    orch, sub = parked_for_approval(stored, "bad")
    with pytest.raises(SignalRefused, match="payload does not fit"):
        orch.signal("unbundle-bad", "approval", {"approved": "yes", "by": "ann"})
    with pytest.raises(SignalRefused, match="declares no wait for signal 'approve'"):
        orch.signal("unbundle-bad", "approve", scenarios.APPROVED)
    assert state(db, sub)["approvals"] == ["PENDING"]  # nothing was delivered
    # a finished saga takes no decision, and no unfinished saga is found by its key
    assert orch.signal("unbundle-bad", "approval", scenarios.APPROVED).status is (
        SagaStatus.COMPLETED)
    with pytest.raises(SignalRefused, match="finished saga"):
        orch.signal("unbundle-bad", "approval", scenarios.REFUSED)
    with pytest.raises(SignalRefused, match="no unfinished saga of UnbundleSaga"):
        orch.find(sub, UnbundleSaga, "approval")
    assert state(db, sub)["approvals"] == ["APPROVED"]


# --- the decision from the command line (a real process) ----------------------------


def cli(store: Path, database: Path, sub: str, decision: dict[str, Any]) -> (
        subprocess.CompletedProcess[str]):
    """`python -m sagaflow sagas signal --key SUB ...`, as the demo prints it, run."""
    argv, env = scenarios.signal_command(str(store), sub, Decision(True, "-"), str(database))
    argv[-1] = json.dumps(decision)  # the --data, as given (it may not fit)
    return subprocess.run(
        [sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, **env},
    )


@pytest.fixture
def sqlite_demo(tmp_path: Path) -> Iterator[Captured]:
    with SQLiteStore(tmp_path / "sagas.db") as store:
        yield Captured(store)


def test_an_approval_sent_from_the_command_line_completes_the_saga(
    db: dbmod.SubscriptionDB, sqlite_demo: Captured, tmp_path: Path
) -> None:
    orch, sub = parked_for_approval(sqlite_demo, "cli")
    done = cli(tmp_path / "sagas.db", Path(db.path), sub,
               {"approved": True, "by": "carol", "reason": "by phone"})

    assert done.returncode == 0, done.stderr
    assert "signal 'approval' stored for saga unbundle-cli: it is COMPLETED" in done.stdout
    assert "unbundle-cli: StepCompleted 'apply_modification'" in done.stdout  # ran there
    result = orch.get("unbundle-cli")  # this process reads what the other one wrote
    assert result is not None and result.status is SagaStatus.COMPLETED
    assert result.data.approved_by == "carol"
    assert state(db, sub)["approvals"] == ["APPROVED"]
    assert state(db, sub)["audit"] == ["ApprovalRequested", "ApprovalGranted", "BundleModified"]


def test_a_refusal_sent_from_the_command_line_compensates_and_says_why(
    db: dbmod.SubscriptionDB, sqlite_demo: Captured, tmp_path: Path
) -> None:
    orch, sub = parked_for_approval(sqlite_demo, "no")
    done = cli(tmp_path / "sagas.db", Path(db.path), sub,
               {"approved": False, "by": "dan", "reason": "fraud check"})

    assert done.returncode == 0, done.stderr
    assert "it is COMPENSATED" in done.stdout
    result = orch.get("unbundle-no")
    assert result is not None and result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, SagaRejected)
    assert result.error.reason == "refused by dan: fraud check"
    assert state(db, sub)["approvals"] == ["WITHDRAWN"]


def test_a_decision_that_does_not_fit_is_refused_on_the_command_line_and_stores_nothing(
    db: dbmod.SubscriptionDB, sqlite_demo: Captured, tmp_path: Path
) -> None:
    orch, sub = parked_for_approval(sqlite_demo, "odd")
    done = cli(tmp_path / "sagas.db", Path(db.path), sub, {"approved": "maybe", "by": 7})

    assert done.returncode != 0
    assert "payload does not fit" in done.stderr
    assert orch.store.signals("unbundle-odd") == []  # type: ignore[attr-defined]
    assert orch.get("unbundle-odd").status is SagaStatus.RUNNING  # type: ignore[union-attr]
    assert state(db, sub)["approvals"] == ["PENDING"]


def test_the_demo_scenario_prints_the_command_and_what_it_printed(
    db: dbmod.SubscriptionDB, sqlite_demo: Captured
) -> None:
    result = scenarios.approved_from_the_command_line(sqlite_demo)

    assert result.status is SagaStatus.COMPLETED
    assert result.data.approved_by == "carol"
    text = sqlite_demo.text
    assert f"$ {dbmod.DB_ENV}=" in text
    assert "python -m sagaflow sagas signal --store sqlite:///" in text
    assert ("--import examples.subscriptions --key sub-12 --saga UnbundleSaga approval --data "
            "'{\"approved\": true, \"by\": \"carol\"") in text
    assert "signal 'approval' stored for saga unbundle-12: it is COMPLETED" in text
    assert state(db, "sub-12")["approvals"] == ["APPROVED"]


def test_the_command_line_scenario_needs_a_store_another_process_can_open(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    with pytest.raises(RuntimeError, match="SQLite store that another process can open"):
        scenarios.approved_from_the_command_line(demo)

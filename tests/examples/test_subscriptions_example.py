"""The UnbundleSaga on its SQLite domain database: seed 000's scenarios and more.

The scenarios are the demo's own (``examples.subscriptions.demo``), so what the demo
shows is what is tested. Each test gets a fresh database file.
"""

from __future__ import annotations

import sqlite3
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
    ApprovalRequested,
    ApprovalWithdrawn,
    BundleModified,
    ModificationReverted,
    UnbundleSaga,
)
from sagaflow import (
    CompensationStatus,
    SagaStatus,
    StepError,
    StepKind,
    StepStatus,
    StepTimeout,
    spec_of,
)

FULL_PRICE = Decimal("67.77")  # (24.00 + 9.99 + 14.50 + 7.25 + 4.99 + 19.00) * 0.85


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
        ("apply_modification", StepKind.COMPENSATABLE),
        ("emit_audit_events", StepKind.PIVOT),
    ]
    assert spec.step("create_approval").guard_name == "approval_required"


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
    step = result.step("create_approval")
    assert step.status is (StepStatus.COMPLETED if approval else StepStatus.SKIPPED)
    after = state(db, sub)
    assert len(after["components"]) == 6 - removed
    assert after["approvals"] == (["PENDING"] if approval else [])
    expected = ["ApprovalRequested", "BundleModified"] if approval else ["BundleModified"]
    assert after["audit"] == expected
    assert [type(e).__name__ for e in result.events] == expected
    if approval:
        assert result.data.approval_id == "APR-unbundle-4"
        assert result.events[0] == ApprovalRequested("APR-unbundle-4", "sub-4", "2/3")


def test_5_a_refused_request_fails_validate_and_changes_nothing(
    db: dbmod.SubscriptionDB, demo: Captured
) -> None:
    result = scenarios.rejected(demo)

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
    assert [type(e) for e in result.events] == [ApprovalRequested, ApprovalWithdrawn]


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
        ApprovalRequested, BundleModified, ModificationReverted, ApprovalWithdrawn,
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
    db.faults.hang("apply_modification", 0.9)  # under the 1 s step timeout
    results: dict[str, Any] = {}
    orch = demo.orchestrator()
    a = UnbundleSaga(sub, "creator-suite", ("api", "editor", "storage", "support"))
    thread = threading.Thread(target=lambda: results.setdefault("a", orch.run(a, "a")))
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
    result = orchestrator.run(
        UnbundleSaga(sub, "creator-suite", ("api", "editor", "storage", "support")), "t"
    )

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
    assert after["audit"] == ["ApprovalRequested", "BundleModified"]


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
    with pytest.raises(RuntimeError, match="open_database"):
        dbmod.database()

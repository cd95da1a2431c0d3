"""The UnbundleSaga's scenarios (seed 000's test plan); each returns its result for the tests.

Every scenario subscribes a fresh customer to the catalogue's six-component bundle and
removes some components from it, so the scenarios are independent of one another and the
database tells each one's story afterwards.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

from sagaflow import SagaResult

from ..console import Demo
from . import db as dbmod
from .rules import Component
from .saga import UnbundleSaga

__all__ = [
    "BUNDLE",
    "SCENARIOS",
    "apply_fails",
    "approval_fails",
    "audit_fails",
    "demo",
    "exactly_half",
    "happy_path",
    "just_above_half",
    "just_below_half",
    "pricing_read_fails",
    "rejected",
    "revert_answer_lost",
    "seed",
    "subscribe",
]

BUNDLE = "creator-suite"
COMPONENTS = [
    Component("editor", "Video editor", Decimal("24.00")),
    Component("storage", "1 TB storage", Decimal("9.99")),
    Component("analytics", "Audience analytics", Decimal("14.50")),
    Component("support", "Priority support", Decimal("7.25")),
    Component("templates", "Template library", Decimal("4.99")),
    Component("api", "API access", Decimal("19.00")),
]
DISCOUNT = Decimal("0.15")


def seed(db: dbmod.SubscriptionDB) -> None:
    """The catalogue: one bundle of six components, 15% off."""
    db.add_bundle(BUNDLE, "Creator Suite", DISCOUNT, COMPONENTS)


def subscribe(subscription_id: str) -> str:
    """A fresh subscription to the whole bundle."""
    dbmod.database().subscribe(subscription_id, f"customer of {subscription_id}", BUNDLE)
    return subscription_id


def _run(d: Demo, n: int, remove: tuple[str, ...], bundle: str = BUNDLE) -> SagaResult:
    sub = subscribe(f"sub-{n}")
    return d.run(d.orchestrator(), UnbundleSaga(sub, bundle, remove), f"unbundle-{n}")


def happy_path(d: Demo) -> SagaResult:
    d.scenario("1. happy path: remove 1 of 6 components (no approval needed)")
    return _run(d, 1, ("templates",))


def just_below_half(d: Demo) -> SagaResult:
    d.scenario("2. approval boundary, just below: 2 of 6 (33%)")
    return _run(d, 2, ("templates", "support"))


def exactly_half(d: Demo) -> SagaResult:
    d.scenario("3. approval boundary, exactly at: 3 of 6 (50%) needs no approval")
    return _run(d, 3, ("templates", "support", "storage"))


def just_above_half(d: Demo) -> SagaResult:
    d.scenario("4. approval boundary, just above: 4 of 6 (67%) creates an approval")
    return _run(d, 4, ("templates", "support", "storage", "analytics"))


def rejected(d: Demo) -> SagaResult:
    d.scenario("5. validate fails: an unknown component is refused, nothing to undo")
    return _run(d, 5, ("templates", "hosting"))


def pricing_read_fails(d: Demo) -> SagaResult:
    d.scenario("6. calculate_pricing fails: the database cannot be read, nothing to undo")
    # the first read (validate) goes through; the second (calculate_pricing) fails
    dbmod.database().faults.fail("load", sqlite3.OperationalError("disk I/O error"), skip=1)
    return _run(d, 6, ("templates",))


def approval_fails(d: Demo) -> SagaResult:
    d.scenario("7. create_approval fails: it did nothing, so nothing to undo")
    dbmod.database().faults.fail("create_approval", sqlite3.OperationalError("disk I/O error"))
    return _run(d, 7, ("templates", "support", "storage", "analytics"))


def apply_fails(d: Demo) -> SagaResult:
    d.scenario("8. apply_modification fails at commit (rolled back): withdraw the approval")
    dbmod.database().faults.fail(
        "apply_modification", sqlite3.OperationalError("disk I/O error"), at="commit"
    )
    return _run(d, 8, ("templates", "support", "storage", "analytics"))


def audit_fails(d: Demo) -> SagaResult:
    d.scenario("9. emit_audit_events (the pivot) fails: undo both, newest first")
    dbmod.database().faults.fail(
        "append_audit_events", sqlite3.OperationalError("attempt to write a readonly database")
    )
    return _run(d, 9, ("templates", "support", "storage", "analytics"))


def revert_answer_lost(d: Demo) -> SagaResult:
    d.scenario("10. the revert commits but its answer is lost: the retry restores nothing twice")
    db = dbmod.database()
    db.faults.fail(
        "append_audit_events", sqlite3.OperationalError("attempt to write a readonly database")
    )
    db.faults.fail("revert_modification", ConnectionResetError("connection reset"), at="after")
    return _run(d, 10, ("templates", "support"))


def locked_then_ok(d: Demo) -> SagaResult:
    d.scenario("11. the database is busy once: apply_modification is retried, and completes")
    dbmod.database().faults.fail(
        "apply_modification", sqlite3.OperationalError("database is locked")
    )
    return _run(d, 11, ("api",))


SCENARIOS = (
    happy_path,
    just_below_half,
    exactly_half,
    just_above_half,
    rejected,
    pricing_read_fails,
    approval_fails,
    apply_fails,
    audit_fails,
    revert_answer_lost,
    locked_then_ok,
)


def summary(d: Demo) -> None:
    """What the database holds afterwards, one line per subscription."""
    db = dbmod.database()
    d.note("")
    d.note(f"the domain database ({db.path}) afterwards:")
    rows = db.query(
        "SELECT s.subscription_id, s.price, s.version, count(c.component_id)"
        " FROM subscriptions s LEFT JOIN subscription_components c USING (subscription_id)"
        " GROUP BY s.subscription_id ORDER BY s.rowid"
    )
    for sub, price, version, components in rows:
        approvals = [a for (a,) in db.query(
            "SELECT status FROM approvals WHERE subscription_id = ?", sub)]
        trail = [t for (t,) in db.query(
            "SELECT type FROM audit_events WHERE subscription_id = ? ORDER BY seq", sub)]
        d.note(
            f"  {sub:<7} {components} components  ${price:>6}  v{version}"
            f"  approval: {', '.join(approvals) or '-':<9}  audit: {', '.join(trail) or '-'}"
        )


def demo(d: Demo, directory: Path) -> None:
    d.section(
        "subscriptions (seed 000): UnbundleSaga on a SQLite domain database",
        "validate (readonly) → calculate_pricing (readonly) → create_approval (if > 50%) "
        "→ apply_modification → emit_audit_events (pivot)",
    )
    path = directory / "subscriptions.db"
    path.unlink(missing_ok=True)
    seed(dbmod.open_database(path))
    for scenario in SCENARIOS:
        scenario(d)
    summary(d)

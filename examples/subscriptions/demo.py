"""The UnbundleSaga's scenarios (seed 000's test plan); each returns its result for the tests.

Every scenario subscribes a fresh customer to the catalogue's six-component bundle and
removes some components from it, so the scenarios are independent of one another and the
database tells each one's story afterwards. Removing more than half needs the approver:
the saga parks at ``await_approval`` until the decision comes, sent here in the process
(``orchestrator.signal``), or, in scenario 12, from the command line, in another process:
``python -m sagaflow sagas signal ...``, run for real.
"""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from sagaflow import Orchestrator, SagaResult, StepStatus

from ..console import Demo
from . import db as dbmod
from .rules import Component
from .saga import APPROVAL_WINDOW, Decision, UnbundleSaga

__all__ = [
    "APPROVED",
    "BUNDLE",
    "REFUSED",
    "SCENARIOS",
    "apply_fails",
    "approval_fails",
    "approved_from_the_command_line",
    "audit_fails",
    "demo",
    "exactly_half",
    "happy_path",
    "invalid_request",
    "just_above_half",
    "just_below_half",
    "nobody_answers",
    "pricing_read_fails",
    "refused_by_the_approver",
    "revert_answer_lost",
    "seed",
    "signal_command",
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


#: The approver's answers in these scenarios.
APPROVED = Decision(True, "ann", "retention offer accepted")
REFUSED = Decision(False, "bob", "the contract keeps at least half of the bundle")
MOST = ("templates", "support", "storage", "analytics")  # 4 of 6: needs the approver


def parked(result: SagaResult) -> bool:
    """Whether the saga is parked at a wait (waiting for its signal or its time)."""
    return any(s.status is StepStatus.WAITING for s in result.steps)


def _run(
    d: Demo, n: int, remove: tuple[str, ...], bundle: str = BUNDLE,
    decision: Decision | None = APPROVED,
) -> SagaResult:
    """Run the saga; if it parks for the approver, ``decision`` comes (``None``: none yet)."""
    sub = subscribe(f"sub-{n}")
    orch = d.orchestrator()
    result = d.run(orch, UnbundleSaga(sub, bundle, remove), f"unbundle-{n}")
    if decision is not None and parked(result):
        result = decide(d, orch, sub, decision)
    return result


def decide(d: Demo, orch: Orchestrator, sub: str, decision: Decision) -> SagaResult:
    """The approver's decision, signalled in this process to the saga found by ``sub``."""
    verdict = "approves" if decision.approved else "refuses"
    d.note(f"← {decision.by} {verdict} ({decision.reason}): signal 'approval' to the "
           f"UnbundleSaga of {sub}")
    return d.signal(orch, orch.find(sub, UnbundleSaga, "approval"), "approval", decision)


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
    d.scenario("4. approval boundary, just above: 4 of 6 (67%) creates an approval and "
               "waits for it")
    return _run(d, 4, MOST)


def invalid_request(d: Demo) -> SagaResult:
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
    return _run(d, 7, MOST)


def apply_fails(d: Demo) -> SagaResult:
    d.scenario("8. apply_modification fails at commit (rolled back): withdraw the approval")
    dbmod.database().faults.fail(
        "apply_modification", sqlite3.OperationalError("disk I/O error"), at="commit"
    )
    return _run(d, 8, MOST)


def audit_fails(d: Demo) -> SagaResult:
    d.scenario("9. emit_audit_events (the pivot) fails: undo both, newest first")
    dbmod.database().faults.fail(
        "append_audit_events", sqlite3.OperationalError("attempt to write a readonly database")
    )
    return _run(d, 9, MOST)


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


def signal_command(
    store: str, sub: str, decision: Decision, database: str
) -> tuple[list[str], dict[str, str]]:
    """The command line (and its environment) that sends ``decision`` to the UnbundleSaga
    of ``sub`` in the store at ``store`` (a file path), from another process, as a
    person would: that process resumes the saga, so it needs the domain database too."""
    data = json.dumps({"approved": decision.approved, "by": decision.by,
                       "reason": decision.reason})
    argv = ["python", "-m", "sagaflow", "sagas", "signal", "--store", f"sqlite:///{store}",
            "--import", "examples.subscriptions", "--key", sub, "--saga", "UnbundleSaga",
            "approval", "--data", data]
    return argv, {dbmod.DB_ENV: database}


def approved_from_the_command_line(d: Demo) -> SagaResult:
    """Scenario 12: the saga parks in this process; the approval comes from a shell."""
    d.scenario("12. 5 of 6 go: the saga parks at its approval; the approver answers from "
               "the command line, in another process")
    if d.store is None or not hasattr(d.store, "path"):
        raise RuntimeError("this scenario needs a SQLite store that another process can open")
    sub = subscribe("sub-12")
    orch = d.orchestrator()
    first = d.run(orch, UnbundleSaga(sub, BUNDLE, (*MOST, "api")), "unbundle-12")
    assert parked(first), first
    store, database = _shown(d.store.path), _shown(dbmod.database().path)
    argv, env = signal_command(store, sub, Decision(True, "carol", "approved by phone"),
                               database)
    d.note("$ " + " ".join(f"{k}={v}" for k, v in env.items()) + " " + shlex.join(argv))
    done = subprocess.run(
        [sys.executable, *argv[1:]], capture_output=True, text=True, timeout=120,
        env={**os.environ, **env, "PYTHONPATH": _path_with_examples()},
    )
    for line in (done.stdout + done.stderr).splitlines():
        d.note("  " + line)
    if done.returncode != 0:
        raise RuntimeError(f"the signal command failed ({done.returncode}): {done.stderr}")
    result = orch.get(first.saga_id)  # read back from the store the other process wrote
    assert result is not None
    d.note("back here, the store says:")
    d.show(result)
    return result


def _shown(path: str) -> str:
    """A path as the command line shows it: relative to here when it is below here."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(Path(path).resolve())


def _path_with_examples() -> str:
    """PYTHONPATH with the folder holding the ``examples`` package first."""
    root = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))


def refused_by_the_approver(d: Demo) -> SagaResult:
    d.scenario("13. 4 of 6 go, and the approver refuses: withdraw the approval; the "
               "outcome is the rejection, with its reason")
    return _run(d, 13, MOST, decision=REFUSED)


def nobody_answers(d: Demo) -> SagaResult:
    d.scenario(f"14. 4 of 6 go, and nobody answers within {APPROVAL_WINDOW.days} days: "
               "withdraw the approval")
    sub = subscribe("sub-14")
    orch = d.orchestrator()
    d.run(orch, UnbundleSaga(sub, BUNDLE, MOST), "unbundle-14")
    orch.clock.advance(APPROVAL_WINDOW.total_seconds())  # type: ignore[attr-defined]
    d.note(f"… {APPROVAL_WINDOW.days} days pass (virtual time); a scheduler calls "
           "orchestrator.resume_due():")
    [result] = d.resume_due(orch)
    return result


SCENARIOS = (
    happy_path,
    just_below_half,
    exactly_half,
    just_above_half,
    invalid_request,
    pricing_read_fails,
    approval_fails,
    apply_fails,
    audit_fails,
    revert_answer_lost,
    locked_then_ok,
)
#: The scenarios of the approval's wait (12 needs a store another process can open).
WAITING = (approved_from_the_command_line, refused_by_the_approver, nobody_answers)


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
        "→ await_approval (if > 50%: waits up to 3 days for the signal 'approval') "
        "→ apply_modification → emit_audit_events (pivot)",
    )
    path = directory / "subscriptions.db"
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    seed(dbmod.open_database(path))
    for scenario in (*SCENARIOS, *WAITING):
        scenario(d)
    summary(d)

"""Seed 002's onboarding scenarios, each started by its ``ClientOnboarded`` event."""

from __future__ import annotations

import time

from sagaflow import SagaResult

from ..console import Demo
from . import services
from .saga import ClientOnboarded, on_client_onboarded
from .services import MailServerDown, billing, notifications, workspaces

__all__ = [
    "SCENARIOS",
    "billing_rejects",
    "delivered_twice",
    "demo",
    "happy_path",
    "mail_server_down",
    "mail_server_flaky",
]


def _onboard(d: Demo, event: ClientOnboarded) -> SagaResult:
    d.note(f"← ClientOnboarded {event.client_id} ({event.company}, plan {event.plan!r})")
    started = time.perf_counter()
    result = on_client_onboarded(d.orchestrator(), event)
    d.show(result, time.perf_counter() - started)
    return result


def happy_path(d: Demo) -> SagaResult:
    d.scenario("1. happy path: workspace, billing, welcome email")
    return _onboard(d, ClientOnboarded("acme", "Acme Corp", "ops@acme.test", "team"))


def billing_rejects(d: Demo) -> SagaResult:
    d.scenario("2. billing rejects the plan: delete the workspace (and its tenant)")
    return _onboard(d, ClientOnboarded("globex", "Globex", "it@globex.test", "platinum"))


def mail_server_flaky(d: Demo) -> SagaResult:
    d.scenario("3. the mail server fails twice: the email is retried after the pivot")
    notifications.faults.fail("send", MailServerDown("mail server unreachable"), times=2)
    return _onboard(d, ClientOnboarded("initech", "Initech", "bill@initech.test", "starter"))


def mail_server_down(d: Demo) -> SagaResult:
    d.scenario("4. the mail server stays down: FAILED for an operator, nothing undone")
    notifications.faults.fail("send", MailServerDown("mail server unreachable"), times=None)
    try:
        return _onboard(d, ClientOnboarded("umbrella", "Umbrella", "hr@umbrella.test", "team"))
    finally:
        notifications.faults.clear()


def delivered_twice(d: Demo) -> tuple[SagaResult, SagaResult]:
    d.scenario("5. ClientOnboarded is delivered twice: the saga runs once")
    event = ClientOnboarded("hooli", "Hooli", "gavin@hooli.test", "enterprise")
    orch = d.orchestrator()
    first = on_client_onboarded(orch, event)
    d.show(first)
    again = on_client_onboarded(orch, event)
    made = [w.workspace_id for w in workspaces.workspaces.values() if w.client_id == "hooli"]
    d.note(
        f"second delivery: the stored result ({again.status.value}, saga {again.saga_id}); "
        f"no step ran again; hooli's workspaces: {made}"
    )
    return first, again


SCENARIOS = (happy_path, billing_rejects, mail_server_flaky, mail_server_down, delivered_twice)


def demo(d: Demo) -> None:
    d.section(
        "onboarding (seed 002): started by a ClientOnboarded event",
        "create_workspace → setup_billing (pivot) → send_welcome_email (retriable); "
        "undo: delete_workspace",
    )
    services.reset()
    for scenario in SCENARIOS:
        scenario(d)
    d.note("")
    d.note(
        f"workspaces: {[w.client_id for w in workspaces.active()]}, "
        f"billing profiles: {sorted(c for c, _ in billing.profiles.values())}, "
        f"emails sent: {len(notifications.outbox)}"
    )

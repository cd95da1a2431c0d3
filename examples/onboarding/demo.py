"""Seed 002's onboarding scenarios, each started by its ``ClientOnboarded`` event.

The workspace service answers ``CreateWorkspace`` some time later (40 s, virtual): the
saga parks until then, and the reply, carried here as the message bus would carry it,
resumes it in this process.
"""

from __future__ import annotations

import time

from sagaflow import Orchestrator, SagaResult, StepStatus

from ..console import Demo
from . import services
from .saga import PROVISIONING_WINDOW, ClientOnboarded, on_client_onboarded, on_workspace_reply
from .services import MailServerDown, ProvisioningFailed, billing, notifications, workspaces

__all__ = [
    "SCENARIOS",
    "billing_rejects",
    "delivered_twice",
    "demo",
    "happy_path",
    "mail_server_down",
    "mail_server_flaky",
    "no_reply",
    "onboard",
    "provisioning_fails",
]

#: How long the workspace service takes to provision a workspace (virtual time).
PROVISIONING = 40.0


def onboard(d: Demo, event: ClientOnboarded, orch: Orchestrator | None = None) -> SagaResult:
    """Deliver the trigger, then, once the saga waits, the workspace service's reply."""
    orch = orch or d.orchestrator()
    d.note(f"← ClientOnboarded {event.client_id} ({event.company}, plan {event.plan!r})")
    started = time.perf_counter()
    result = on_client_onboarded(orch, event)
    d.show(result, time.perf_counter() - started)
    if result.step("workspace_created").status is StepStatus.WAITING:
        orch.clock.advance(PROVISIONING)  # type: ignore[attr-defined]
        for reply in workspaces.provision():
            what = "ready" if reply.ready else f"FAILED ({reply.error})"
            d.note(f"← WorkspaceReply {reply.workspace_id} {what}, {PROVISIONING:g}s later: "
                   "on_workspace_reply signals the saga")
            started = time.perf_counter()
            result = on_workspace_reply(orch, reply)
            d.show(result, time.perf_counter() - started)
    return result


def happy_path(d: Demo) -> SagaResult:
    d.scenario("1. happy path: workspace, billing, welcome email")
    return onboard(d, ClientOnboarded("acme", "Acme Corp", "ops@acme.test", "team"))


def billing_rejects(d: Demo) -> SagaResult:
    d.scenario("2. billing rejects the plan: delete the workspace (and its tenant)")
    return onboard(d, ClientOnboarded("globex", "Globex", "it@globex.test", "platinum"))


def mail_server_flaky(d: Demo) -> SagaResult:
    d.scenario("3. the mail server fails twice: the email is retried after the pivot")
    notifications.faults.fail("send", MailServerDown("mail server unreachable"), times=2)
    return onboard(d, ClientOnboarded("initech", "Initech", "bill@initech.test", "starter"))


def mail_server_down(d: Demo) -> SagaResult:
    d.scenario("4. the mail server stays down: FAILED for an operator, nothing undone")
    notifications.faults.fail("send", MailServerDown("mail server unreachable"), times=None)
    try:
        return onboard(d, ClientOnboarded("umbrella", "Umbrella", "hr@umbrella.test", "team"))
    finally:
        notifications.faults.clear()


def delivered_twice(d: Demo) -> tuple[SagaResult, SagaResult]:
    d.scenario("5. ClientOnboarded is delivered twice: the saga runs once")
    event = ClientOnboarded("hooli", "Hooli", "gavin@hooli.test", "enterprise")
    orch = d.orchestrator()
    first = onboard(d, event, orch)
    again = on_client_onboarded(orch, event)
    made = [w.workspace_id for w in workspaces.workspaces.values() if w.client_id == "hooli"]
    d.note(
        f"second delivery: the stored result ({again.status.value}, saga {again.saga_id}); "
        f"no step ran again; hooli's workspaces: {made}"
    )
    return first, again


def provisioning_fails(d: Demo) -> SagaResult:
    d.scenario("6. the workspace service replies that provisioning failed: delete the "
               "workspace (the seed's DeleteTenant)")
    workspaces.faults.fail("provision", ProvisioningFailed("no capacity in region eu-2"))
    return onboard(d, ClientOnboarded("soylent", "Soylent", "ops@soylent.test", "team"))


def no_reply(d: Demo) -> SagaResult:
    minutes = int(PROVISIONING_WINDOW.total_seconds() // 60)
    d.scenario(f"7. the workspace service never replies: after {minutes} minutes the wait "
               "times out; delete the workspace")
    workspaces.silent.add("wonka")
    orch = d.orchestrator()
    onboard(d, ClientOnboarded("wonka", "Wonka", "it@wonka.test", "starter"), orch)
    orch.clock.advance(PROVISIONING_WINDOW.total_seconds())  # type: ignore[attr-defined]
    d.note(f"… {minutes} minutes pass with no reply; the worker's resume_due() finds it due:")
    [result] = d.resume_due(orch)
    return result


SCENARIOS = (
    happy_path,
    billing_rejects,
    mail_server_flaky,
    mail_server_down,
    delivered_twice,
    provisioning_fails,
    no_reply,
)


def demo(d: Demo) -> None:
    d.section(
        "onboarding (seed 002): started by a ClientOnboarded event",
        "create_workspace → workspace_created (waits up to 15 min for the service's reply) "
        "→ setup_billing (pivot) → send_welcome_email (retriable); undo: delete_workspace",
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

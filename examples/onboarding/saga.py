"""Seed 002's ``OnboardClientSaga``: a ``ClientOnboarded`` event starts it.

The seed's steps and events: create the workspace (WorkspaceCreated), set up billing
(BillingProfileCreated), send the welcome email (NotificationSent). The seed's failure
column maps onto one compensation: ``delete_workspace`` removes the workspace and its
tenant, so it is the seed's DeleteWorkspace when billing fails and its DeleteTenant when
the workspace was never made (its provisioning failed, never answered, or its command
timed out with its outcome unknown).

As the seed's orchestration draws it (``→ [Command] CreateWorkspace ← [Event]
WorkspaceCreated``), the workspace service answers the command later, when the workspace
is provisioned: the saga waits for that reply.

Kinds, and why:

- ``create_workspace``: compensatable (``delete_workspace``): sends ``CreateWorkspace``,
  which the service takes at once.
- ``workspace_created``: a wait for the service's reply, the signal ``workspace`` (a
  :class:`~.services.WorkspaceReply`), for up to 15 minutes. Meanwhile the saga is a row
  in the store, nothing in memory. Ready goes on; a failed provisioning is a failure
  (:class:`~.services.ProvisioningFailed`) and no reply in time is a timeout: both delete
  the workspace and its tenant. :func:`on_workspace_reply` carries a reply to its saga.
- ``setup_billing``: the pivot. With a billing profile the client is a customer and
  invoicing acts on it; from there the onboarding only goes forward. It is retried when
  billing is unavailable or slow (idempotent by key, so a retry settles an unknown
  outcome instead of tearing the workspace down around a profile that may exist); a
  rejected plan is not retried, and the workspace is deleted.
- ``send_welcome_email``: retriable, the seed's "N/A" compensation. An email cannot be
  unsent, and a late welcome is no reason to undo a paying client's workspace: it is
  retried with backoff, and if the mail server stays down the saga ends FAILED for an
  operator to resend it, with nothing undone.

:func:`on_client_onboarded` is the trigger: the saga id is derived from the client id, so
an event delivered twice runs the saga once (the second delivery gets the first result).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs

from sagaflow import (
    Orchestrator,
    Retry,
    SagaResult,
    StepContext,
    StepTimeout,
    saga,
    step,
    wait,
)

from .._support import forward_key
from . import services
from .services import (
    BillingUnavailable,
    ProvisioningFailed,
    WorkspaceReply,
    billing,
    notifications,
    workspaces,
)

__all__ = [
    "BillingProfileCreated",
    "ClientOnboarded",
    "NotificationSent",
    "OnboardClientSaga",
    "PROVISIONING_WINDOW",
    "WorkspaceCreated",
    "WorkspaceDeleted",
    "example_sagas",
    "on_client_onboarded",
    "on_workspace_reply",
    "saga_id_of",
]

#: How long the workspace service may take to answer before the onboarding gives up.
PROVISIONING_WINDOW = timedelta(minutes=15)


@attrs.frozen
class ClientOnboarded:
    """The trigger, from the clients service."""

    client_id: str
    company: str
    email: str
    plan: str


@attrs.frozen
class WorkspaceCreated:
    client_id: str
    workspace_id: str


@attrs.frozen
class WorkspaceDeleted:
    client_id: str
    workspace_id: str


@attrs.frozen
class BillingProfileCreated:
    client_id: str
    billing_profile_id: str
    plan: str


@attrs.frozen
class NotificationSent:
    client_id: str
    notification_id: str


@saga
@attrs.define
class OnboardClientSaga:
    client_id: str
    company: str
    email: str
    plan: str
    workspace_id: str | None = None
    billing_profile_id: str | None = None

    @step(timeout=5.0)
    def create_workspace(self, ctx: StepContext) -> None:
        self.workspace_id = workspaces.create(ctx.idempotency_key, self.client_id, self.company)

    @create_workspace.compensate
    def delete_workspace(self, ctx: StepContext) -> None:
        if (deleted := workspaces.delete(ctx.idempotency_key, forward_key(ctx))) is not None:
            ctx.emit(WorkspaceDeleted(self.client_id, deleted))

    @wait("workspace", payload=WorkspaceReply, timeout=PROVISIONING_WINDOW)
    def workspace_created(self, reply: WorkspaceReply, ctx: StepContext) -> None:
        if not reply.ready:
            raise ProvisioningFailed(f"workspace {reply.workspace_id}: {reply.error}")
        ctx.emit(WorkspaceCreated(self.client_id, reply.workspace_id))

    @step(pivot=True, timeout=5.0,
          retry=Retry(attempts=3, backoff=0.5, retry_on=(BillingUnavailable, StepTimeout)))
    def setup_billing(self, ctx: StepContext) -> None:
        self.billing_profile_id = billing.create_profile(
            ctx.idempotency_key, self.client_id, self.plan
        )
        ctx.emit(BillingProfileCreated(self.client_id, self.billing_profile_id, self.plan))

    @step(retriable=True, timeout=10.0, retry=Retry(attempts=5, backoff=1.0))
    def send_welcome_email(self, ctx: StepContext) -> None:
        subject = f"Welcome to your {self.plan} workspace, {self.company}"
        notification_id = notifications.send(ctx.idempotency_key, self.email, subject)
        ctx.emit(NotificationSent(self.client_id, notification_id))


def saga_id_of(client_id: str) -> str:
    """The id of a client's onboarding: one per client."""
    return f"onboard-{client_id}"


def on_client_onboarded(orchestrator: Orchestrator, event: ClientOnboarded) -> SagaResult:
    """Handle the trigger event: one onboarding per client, however often it is delivered.

    The result is RUNNING while the saga waits for the workspace service's reply."""
    saga_ = OnboardClientSaga(event.client_id, event.company, event.email, event.plan)
    return orchestrator.run(saga_, saga_id=saga_id_of(event.client_id))


def on_workspace_reply(orchestrator: Orchestrator, reply: WorkspaceReply) -> SagaResult:
    """Handle the workspace service's reply: signal the client's onboarding, which goes on
    here and now. The reply's id is the workspace's, so a reply delivered twice while the
    saga still waits is delivered once."""
    return orchestrator.signal(saga_id_of(reply.client_id), "workspace", reply,
                               signal_id=f"workspace-reply:{reply.workspace_id}")


def example_sagas() -> Any:
    """Onboardings for the property tests and ``sagaflow verify``: each on fresh services
    kept in a file (so that a crash check's killed process leaves its effects behind, as
    real services would); a plan billing does not sell (``"platinum"``) is refused at the
    pivot (a step error: the workspace is deleted). The snapshot is what the client and
    the operators see: the live workspaces and tenants, the billing profiles, the emails
    sent."""
    from hypothesis import strategies as st

    from sagaflow.testing import SagaCase

    def setup() -> None:
        services.reset(durable=True)

    def snapshot() -> dict[str, Any]:
        with services.STATE.held():
            return {
                "workspaces": sorted((w.workspace_id, w.client_id, w.name)
                                     for w in workspaces.active()),
                "tenants": sorted(workspaces.tenants),
                "billing profiles": sorted(billing.profiles.items()),
                "emails sent": [(to, subject) for _, to, subject in notifications.outbox],
            }

    def case(client: str, plan: str) -> SagaCase:
        saga_ = OnboardClientSaga(client, client.title(), f"admin@{client}.test", plan)
        return SagaCase(saga_, setup, snapshot, allow_step_errors=True)

    clients = st.sampled_from(["acme", "globex", "initech"])
    plans = st.sampled_from(["starter", "team", "enterprise", "platinum"])
    return st.builds(case, clients, plans)

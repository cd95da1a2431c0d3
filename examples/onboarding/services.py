"""The participants of seed 002's onboarding: workspaces, billing, notifications.

Small in-process services with their own state; every operation is idempotent by the
caller's key, and the undo names the forward call it undoes by that call's key. Each has
a :class:`~examples._support.Faults` switch for the demo and the tests.

The workspace service works as the seed's orchestration draws it: it takes the command
(``CreateWorkspace``) at once, provisions the workspace in its own time, and answers
later with an event, :class:`WorkspaceReply`, ready or failed. :meth:`WorkspaceService.
provision` is that later: it finishes what is pending and returns the replies, which the
message bus would carry back to the saga.
"""

from __future__ import annotations

import threading

import attrs

from .._filed import Ids, StateFile, filed
from .._support import Faults, IdempotencyKeys

__all__ = [
    "BillingRejected",
    "BillingService",
    "BillingUnavailable",
    "MailServerDown",
    "NotificationService",
    "ProvisioningFailed",
    "STATE",
    "WorkspaceReply",
    "WorkspaceService",
    "billing",
    "notifications",
    "reset",
    "workspaces",
]


class BillingRejected(ValueError):
    """Billing refuses the profile (say, an unknown plan): retrying will not help."""


class BillingUnavailable(ConnectionError):
    """Billing did not answer; the profile was not created (safe to retry)."""


class MailServerDown(ConnectionError):
    """The mail server could not be reached."""


class ProvisioningFailed(RuntimeError):
    """The workspace service could not provision the workspace (its reply said so)."""


@attrs.frozen
class WorkspaceReply:
    """The workspace service's answer to ``CreateWorkspace``, some time later: the seed's
    ``WorkspaceCreated`` event when ``ready``, its failure event when not."""

    client_id: str
    workspace_id: str
    ready: bool
    error: str = ""


@attrs.define
class Workspace:
    workspace_id: str
    tenant_id: str
    client_id: str
    name: str
    deleted: bool = False
    status: str = "provisioning"  #: then "ready" or "failed", as the reply says


class WorkspaceService:
    """Tenants and their workspaces (the seed's ai-workspace service).

    ``create`` takes the command and answers with the new workspace's id at once; the
    workspace is provisioned later (:meth:`provision`). ``silent`` holds the clients whose
    provisioning never finishes (a stuck job: no reply ever comes).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.workspaces: dict[str, Workspace] = {}
        self.tenants: set[str] = set()
        self.keys = IdempotencyKeys()
        self.faults = Faults()
        self.state_file: StateFile | None = None
        self.silent: set[str] = set()
        self._ids = Ids(1)
        self._lock = threading.Lock()

    @filed
    def create(self, key: str, client_id: str, name: str) -> str:
        """Take ``CreateWorkspace``: the client's tenant and a workspace to provision; its
        id. The reply comes later, from :meth:`provision`."""
        self.faults.check("create")

        def create() -> str:
            with self._lock:
                n = next(self._ids)
                workspace = Workspace(f"ws-{n}", f"tenant-{client_id}", client_id, name)
                self.tenants.add(workspace.tenant_id)
                self.workspaces[workspace.workspace_id] = workspace
                return workspace.workspace_id

        workspace_id = self.keys.once(key, create)
        self.faults.check("create", "after")
        return workspace_id

    @filed
    def delete(self, key: str, created_by: str) -> str | None:
        """Delete the workspace (and tenant) made by the call keyed ``created_by``."""
        self.faults.check("delete")

        def delete(workspace_id: str) -> str:
            workspace = self.workspaces[workspace_id]
            workspace.deleted = True
            self.tenants.discard(workspace.tenant_id)
            return workspace_id

        deleted = self.keys.undo(key, created_by, delete)
        self.faults.check("delete", "after")
        return deleted

    @filed
    def provision(self) -> list[WorkspaceReply]:
        """Finish the pending provisioning jobs; the replies, in the order of the commands.

        A job fails when a ``provision`` fault is armed (the reply says why); a deleted
        workspace's job was cancelled and a silent client's never ends: neither replies.
        """
        replies = []
        with self._lock:
            pending = [w for w in self.workspaces.values() if w.status == "provisioning"
                       and not w.deleted and w.client_id not in self.silent]
        for w in pending:
            try:
                self.faults.check("provision")
            except Exception as exc:
                w.status = "failed"
                replies.append(WorkspaceReply(w.client_id, w.workspace_id, False, str(exc)))
                continue
            w.status = "ready"
            replies.append(WorkspaceReply(w.client_id, w.workspace_id, True))
        return replies

    @filed
    def active(self) -> list[Workspace]:
        return [w for w in self.workspaces.values() if not w.deleted]


class BillingService:
    """Billing profiles; ``plans`` are the plans it sells."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.profiles: dict[str, tuple[str, str]] = {}  # id -> (client, plan)
        self.plans = {"starter", "team", "enterprise"}
        self.keys = IdempotencyKeys()
        self.faults = Faults()
        self.state_file: StateFile | None = None
        self._ids = Ids(1)

    @filed
    def create_profile(self, key: str, client_id: str, plan: str) -> str:
        """Open the client's billing profile on ``plan``; the profile id."""
        self.faults.check("create_profile")

        def create() -> str:
            if plan not in self.plans:
                raise BillingRejected(
                    f"unknown plan {plan!r}: choose one of {', '.join(sorted(self.plans))}"
                )
            profile_id = f"bp-{next(self._ids)}"
            self.profiles[profile_id] = (client_id, plan)
            return profile_id

        profile_id = self.keys.once(key, create)
        self.faults.check("create_profile", "after")
        return profile_id


class NotificationService:
    """Sends emails; ``outbox`` is what went out."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.outbox: list[tuple[str, str, str]] = []  # (id, to, subject)
        self.keys = IdempotencyKeys()
        self.faults = Faults()
        self.state_file: StateFile | None = None
        self._ids = Ids(1)

    @filed
    def send(self, key: str, to: str, subject: str) -> str:
        """Send an email once per key; its notification id."""
        self.faults.check("send")

        def send() -> str:
            notification_id = f"msg-{next(self._ids)}"
            self.outbox.append((notification_id, to, subject))
            return notification_id

        notification_id = self.keys.once(key, send)
        self.faults.check("send", "after")
        return notification_id


workspaces = WorkspaceService()
billing = BillingService()
notifications = NotificationService()


#: Where the services keep their state when it must outlive a process (a crash check).
STATE = StateFile("onboarding", workspaces=workspaces, billing=billing,
                  notifications=notifications)


def reset(*, durable: bool = False) -> None:
    """Give every service a fresh state (a test or a demo section starts here); with
    ``durable``, kept in a file (:data:`STATE`) so that it outlives a killed process."""
    for service in (workspaces, billing, notifications):
        service.reset()
    if durable:
        STATE.use()

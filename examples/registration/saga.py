"""Seed 001's saga: register a user who pays for a plan.

Create the account, charge the plan, send the confirmation. A failure rolls back in
reverse order: refund, then delete the account. The refund is retried with exponential
backoff (2 s, 4 s, ...), since a compensation is the last line of defence; when it still
fails, the saga ends FAILED and :func:`manual_actions` says what an operator must do.

Kinds, and why:

- ``create_account``: compensatable (``delete_account``).
- ``process_payment``: compensatable (``refund``).
- ``send_confirmation``: the pivot. An email cannot be recalled, so once it is out the
  registration is final; it comes last, so nothing after it would need undoing, and
  when it fails (nothing was sent) the payment and the account are undone. (If it
  timed out, the email may be out for a registration that was rolled back: the seed
  accepts this; an outbox written with the account would close the gap.)
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from sagaflow import (
    CompensationError,
    CompensationStatus,
    Retry,
    SagaResult,
    StepContext,
    saga,
    step,
)

from .._support import forward_key
from . import services
from .services import notifications, payments, users

__all__ = [
    "AccountCreated",
    "AccountDeleted",
    "ConfirmationSent",
    "PaymentCharged",
    "PaymentRefunded",
    "RegistrationSaga",
    "example_sagas",
    "manual_actions",
]


@attrs.frozen
class AccountCreated:
    user_id: int
    email: str


@attrs.frozen
class AccountDeleted:
    user_id: int


@attrs.frozen
class PaymentCharged:
    transaction_id: int
    amount: Decimal


@attrs.frozen
class PaymentRefunded:
    refund_id: str
    amount: Decimal


@attrs.frozen
class ConfirmationSent:
    notification_id: int


@saga
@attrs.define
class RegistrationSaga:
    email: str
    amount: Decimal
    user_id: int | None = None
    transaction_id: int | None = None
    notification_id: int | None = None

    @step(timeout=5.0)
    def create_account(self, ctx: StepContext) -> None:
        self.user_id = users.create_account(ctx.idempotency_key, self.email)
        ctx.emit(AccountCreated(self.user_id, self.email))

    @create_account.compensate
    def delete_account(self, ctx: StepContext) -> None:
        if (user_id := users.delete_account(ctx.idempotency_key, forward_key(ctx))) is not None:
            ctx.emit(AccountDeleted(user_id))

    @step(timeout=10.0)
    def process_payment(self, ctx: StepContext) -> None:
        assert self.user_id is not None
        self.transaction_id = payments.charge(ctx.idempotency_key, self.user_id, self.amount)
        ctx.emit(PaymentCharged(self.transaction_id, self.amount))

    @process_payment.compensate(timeout=10.0, retry=Retry(attempts=5, backoff=2.0))
    def refund(self, ctx: StepContext) -> None:
        if (refund_id := payments.refund(ctx.idempotency_key, forward_key(ctx))) is not None:
            ctx.emit(PaymentRefunded(refund_id, self.amount))

    @step(pivot=True, timeout=10.0)
    def send_confirmation(self, ctx: StepContext) -> None:
        subject = f"Welcome! Your payment of ${self.amount} is confirmed"
        self.notification_id = notifications.send(ctx.idempotency_key, self.email, subject)
        ctx.emit(ConfirmationSent(self.notification_id))


def manual_actions(result: SagaResult) -> list[str]:
    """What an operator must do by hand for a FAILED registration, read off its record."""
    if not isinstance(result.error, CompensationError):
        return []
    reg: RegistrationSaga = result.data
    lines = []
    for step_name, error in result.error.failures.items():
        if step_name == "process_payment":
            lines.append(f"Transaction {reg.transaction_id} could not be refunded ({error})")
            lines.append(f"Please refund ${reg.amount} to user {reg.user_id} manually")
        elif step_name == "create_account":
            lines.append(f"User account {reg.user_id} could not be deleted ({error})")
    if result.step("create_account").compensation is CompensationStatus.COMPENSATED:
        lines.append(f"User account {reg.user_id} has been deleted")
    return lines


#: The account example_sagas() finds already there: registering its email is refused.
TAKEN = "taken@example.com"


def example_sagas() -> Any:
    """Registrations for the property tests and ``sagaflow verify``: each on fresh
    services kept in a file (so that a crash check's killed process leaves its effects
    behind, as real services would) with one account already there, :data:`TAKEN`;
    registering that email again is refused (a step error the saga compensates). The
    snapshot is what a user or an auditor sees: the active accounts, the charges not
    refunded, the emails sent."""
    from hypothesis import strategies as st

    from sagaflow.testing import SagaCase

    def setup() -> None:
        services.reset(durable=True)
        users.create_account("already-there", TAKEN)

    def snapshot() -> dict[str, Any]:
        with services.STATE.held():
            return {
                "active accounts": sorted(a.email for a in users.active()),
                "charged": sorted((c.user_id, c.amount) for c in payments.charges.values()
                                  if c.refund_id is None),
                "emails sent": [(to, subject) for _, to, subject in notifications.outbox],
            }

    emails = st.sampled_from(["ada@example.com", "grace@example.com", TAKEN])
    amounts = st.decimals(min_value=1, max_value=500, places=2)
    return st.builds(lambda email, amount: SagaCase(RegistrationSaga(email, amount), setup,
                                                    snapshot, allow_step_errors=True),
                     emails, amounts)

"""Seed 001's four scenarios, plus a declined card; each returns its result for the tests."""

from __future__ import annotations

from decimal import Decimal

from sagaflow import SagaResult

from ..console import Demo
from . import services
from .saga import RegistrationSaga, manual_actions
from .services import GatewayError, PaymentDeclined, SMTPError, notifications, payments

__all__ = [
    "SCENARIOS",
    "complete_success",
    "demo",
    "notification_fails",
    "payment_declined",
    "refund_fails_for_good",
    "refund_fails_twice",
]

PRICE = Decimal("99.99")


def complete_success(d: Demo) -> SagaResult:
    """Scenario 1: every step succeeds; no compensation."""
    d.scenario("scenario 1: complete success")
    return d.run(d.orchestrator(), RegistrationSaga("ada@example.com", PRICE), "reg-1")


def notification_fails(d: Demo) -> SagaResult:
    """Scenario 2: the confirmation fails; refund, then delete the account."""
    d.scenario("scenario 2: the confirmation email fails: roll back in reverse order")
    notifications.faults.fail("send", SMTPError("SMTP connection timeout"))
    return d.run(d.orchestrator(), RegistrationSaga("grace@example.com", PRICE), "reg-2")


def refund_fails_twice(d: Demo) -> SagaResult:
    """Scenario 3: during the rollback the refund fails twice, then succeeds."""
    d.scenario("scenario 3: the refund fails twice, then succeeds (backoff 2s, 4s)")
    notifications.faults.fail("send", SMTPError("SMTP connection timeout"))
    payments.faults.fail("refund", GatewayError("payment gateway timeout"), times=2)
    return d.run(d.orchestrator(), RegistrationSaga("alan@example.com", PRICE), "reg-3")


def refund_fails_for_good(d: Demo) -> SagaResult:
    """Scenario 4: the refund never succeeds; the account is still deleted; FAILED."""
    d.scenario("scenario 4: the refund fails for good: partial rollback, manual action")
    notifications.faults.fail("send", SMTPError("SMTP connection timeout"))
    payments.faults.fail(
        "refund", GatewayError("payment gateway permanently down"), times=None
    )
    result = d.run(d.orchestrator(), RegistrationSaga("linus@example.com", PRICE), "reg-4")
    d.note("[CRITICAL] Manual action required (from the saga's record):")
    for line in manual_actions(result):
        d.note(f"  - {line}")
    d.note(f"  incident: saga {result.saga_id}; orchestrator.get({result.saga_id!r}) has it all")
    payments.faults.clear()
    return result


def payment_declined(d: Demo) -> SagaResult:
    """The card is declined: only the account needs undoing."""
    d.scenario("extra: the card is declined: delete the account, nothing to refund")
    payments.faults.fail("charge", PaymentDeclined("card declined: insufficient funds"))
    return d.run(d.orchestrator(), RegistrationSaga("barbara@example.com", PRICE), "reg-5")


SCENARIOS = (
    complete_success,
    notification_fails,
    refund_fails_twice,
    refund_fails_for_good,
    payment_declined,
)


def demo(d: Demo) -> None:
    d.section(
        "registration (seed 001)",
        "create_account → process_payment → send_confirmation (pivot); "
        "undo: refund, delete_account",
    )
    services.reset()
    for scenario in SCENARIOS:
        scenario(d)
    d.note("")
    d.note(f"active accounts: {[a.email for a in services.users.active()]}")

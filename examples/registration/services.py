"""The participants of seed 001's registration: users, payments, notifications.

Small, real in-process services with their own state. Every operation takes the
caller's idempotency key: a repeated call returns the first call's result and changes
nothing, and an undo (``delete_account``, ``refund``) names the forward call it undoes by
that call's key, so it works even when the forward call's answer never came back.
Each service has a :class:`~examples._support.Faults` switch for the demo and tests.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import attrs

from .._filed import Ids, StateFile, filed
from .._support import Faults, IdempotencyKeys

__all__ = [
    "Account",
    "Charge",
    "GatewayError",
    "NotificationService",
    "PaymentDeclined",
    "PaymentService",
    "SMTPError",
    "STATE",
    "UserService",
    "notifications",
    "payments",
    "reset",
    "users",
]


class PaymentDeclined(Exception):
    """The card was declined: a business answer, retrying will not change it."""


class GatewayError(ConnectionError):
    """The payment gateway could not be reached or did not answer."""


class SMTPError(ConnectionError):
    """The mail server could not be reached."""


@attrs.define
class Account:
    user_id: int
    email: str
    deleted: bool = False


@attrs.define
class Charge:
    transaction_id: int
    user_id: int
    amount: Decimal
    refund_id: str | None = None


class UserService:
    """User accounts. Deleting is a soft delete: the row stays, marked deleted."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.accounts: dict[int, Account] = {}
        self.keys = IdempotencyKeys()
        self.faults = Faults()
        self.state_file: StateFile | None = None
        self._ids = Ids(123)  # seed 001's first user is 123
        self._lock = threading.Lock()

    @filed
    def create_account(self, key: str, email: str) -> int:
        """Create an account for ``email``; its user id."""
        self.faults.check("create_account")

        def create() -> int:
            with self._lock:
                if any(a.email == email and not a.deleted for a in self.accounts.values()):
                    raise ValueError(f"an account for {email} already exists")
                user_id = next(self._ids)
                self.accounts[user_id] = Account(user_id, email)
                return user_id

        user_id = self.keys.once(key, create)
        self.faults.check("create_account", "after")
        return user_id

    @filed
    def delete_account(self, key: str, created_by: str) -> int | None:
        """Undo the ``create_account`` call made with key ``created_by``; the user id
        deleted, or ``None`` when that call never created anything."""
        self.faults.check("delete_account")

        def delete(user_id: int) -> int:
            self.accounts[user_id].deleted = True
            return user_id

        deleted = self.keys.undo(key, created_by, delete)
        self.faults.check("delete_account", "after")
        return deleted

    @filed
    def active(self) -> list[Account]:
        return [a for a in self.accounts.values() if not a.deleted]


class PaymentService:
    """Charges and refunds; transaction ids count from 456 as in seed 001."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.charges: dict[int, Charge] = {}
        self.keys = IdempotencyKeys()
        self.faults = Faults()
        self.state_file: StateFile | None = None
        self._ids = Ids(456)
        self._refunds = Ids(789)

    @filed
    def charge(self, key: str, user_id: int, amount: Decimal) -> int:
        """Charge ``amount`` to ``user_id``; the transaction id."""
        self.faults.check("charge")

        def charge() -> int:
            txn = Charge(next(self._ids), user_id, amount)
            self.charges[txn.transaction_id] = txn
            return txn.transaction_id

        transaction_id = self.keys.once(key, charge)
        self.faults.check("charge", "after")
        return transaction_id

    @filed
    def refund(self, key: str, charged_by: str) -> str | None:
        """Refund the charge made with key ``charged_by``; the refund id, or ``None``
        when that call never charged anything."""
        self.faults.check("refund")

        def refund(transaction_id: int) -> str:
            txn = self.charges[transaction_id]
            txn.refund_id = f"REF-{next(self._refunds)}"
            return txn.refund_id

        refund_id = self.keys.undo(key, charged_by, refund)
        self.faults.check("refund", "after")
        return refund_id

    @filed
    def net_charged(self, user_id: int) -> Decimal:
        """What ``user_id`` has paid, refunds deducted."""
        return sum(
            (c.amount for c in self.charges.values() if c.user_id == user_id and not c.refund_id),
            Decimal(0),
        )


class NotificationService:
    """Sends emails; ``outbox`` is what went out."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.outbox: list[tuple[int, str, str]] = []
        self.keys = IdempotencyKeys()
        self.faults = Faults()
        self.state_file: StateFile | None = None
        self._ids = Ids(789)

    @filed
    def send(self, key: str, to: str, subject: str) -> int:
        """Send an email; its notification id."""
        self.faults.check("send")

        def send() -> int:
            notification_id = next(self._ids)
            self.outbox.append((notification_id, to, subject))
            return notification_id

        notification_id = self.keys.once(key, send)
        self.faults.check("send", "after")
        return notification_id


users = UserService()
payments = PaymentService()
notifications = NotificationService()


#: Where the services keep their state when it must outlive a process (a crash check).
STATE = StateFile("registration", users=users, payments=payments, notifications=notifications)


def reset(*, durable: bool = False) -> None:
    """Give every service a fresh state (a test or a demo section starts here); with
    ``durable``, kept in a file (:data:`STATE`) so that it outlives a killed process."""
    for service in (users, payments, notifications):
        service.reset()
    if durable:
        STATE.use()

"""The payout batch's participants: the treasury and the bank, async and in process.

Each operation is idempotent by the caller's key (:class:`IdempotencyKeys`); an undo names
the forward call it undoes by that call's key. A :class:`Faults` switch per service
injects failures; ``closed`` lists accounts the bank refuses to pay.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from .._support import Faults, IdempotencyKeys

__all__ = ["AccountClosed", "Bank", "BankUnavailable", "Treasury", "bank", "reset", "treasury"]


class AccountClosed(Exception):
    """The payee's account is closed: retrying will not change it."""


class BankUnavailable(ConnectionError):
    """The bank did not answer; nothing was paid (safe to retry)."""


class Treasury:
    """The money the batch pays from; a reservation holds it until released."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.balance = Decimal("100000.00")
        self.held: dict[str, Decimal] = {}
        self.keys = IdempotencyKeys()
        self.faults = Faults()

    async def reserve(self, key: str, batch_id: str, amount: Decimal) -> str:
        await self.faults.acheck("reserve")
        await asyncio.sleep(0.02)

        def hold() -> str:
            self.balance -= amount
            self.held[batch_id] = amount
            return f"hold-{batch_id}"

        return self.keys.once(key, hold)

    async def release(self, key: str, reserved_by: str, batch_id: str) -> None:
        await asyncio.sleep(0.02)

        def give_back(_: str) -> None:
            self.balance += self.held.pop(batch_id)

        self.keys.undo(key, reserved_by, give_back)

    async def settle(self, key: str, batch_id: str) -> None:
        """The batch is paid: its hold becomes spent money."""
        await asyncio.sleep(0.02)
        self.keys.once(key, lambda: self.held.pop(batch_id))


class Bank:
    """Transfers to payees' accounts; ``paid`` holds what stands per transfer key."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.paid: dict[str, tuple[str, Decimal]] = {}  # forward key -> (account, amount)
        self.reversed: list[str] = []  # the forward keys reversed, in order
        self.closed: set[str] = set()
        self.keys = IdempotencyKeys()
        self.faults = Faults()
        self.running = 0
        self.most_at_once = 0

    async def transfer(self, key: str, account: str, amount: Decimal) -> str:
        await self.faults.acheck("transfer")
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if account in self.closed:  # refused quickly
                await asyncio.sleep(0.05)
                raise AccountClosed(f"account {account} is closed")
            await asyncio.sleep(0.1)
        finally:
            self.running -= 1

        def pay() -> str:
            self.paid[key] = (account, amount)
            return f"tx-{len(self.paid)}"

        return self.keys.once(key, pay)

    async def reverse(self, key: str, paid_by: str) -> bool:
        """Reverse the transfer keyed ``paid_by``; whether there was one."""
        await asyncio.sleep(0.05)

        def back(_: str) -> str:
            self.paid.pop(paid_by)
            self.reversed.append(paid_by)
            return paid_by

        return self.keys.undo(key, paid_by, back) is not None

    def total_paid(self) -> Decimal:
        return sum((amount for _, amount in self.paid.values()), Decimal(0))


treasury = Treasury()
bank = Bank()


def reset() -> None:
    treasury.reset()
    bank.reset()

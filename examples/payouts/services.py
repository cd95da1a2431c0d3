"""The payout batch's participants: the treasury and the bank, async and in process.

Each operation is idempotent by the caller's key (:class:`IdempotencyKeys`); an undo names
the forward call it undoes by that call's key. A :class:`Faults` switch per service
injects failures; ``closed`` lists accounts the bank refuses to pay. Each operation's
change is a plain method marked :func:`~examples._filed.filed` (no ``await`` inside), so
that the example cases can keep the services' state in a file (:data:`STATE`), as real
services keep theirs outside the saga's process.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from .._filed import StateFile, filed
from .._support import Faults, IdempotencyKeys

__all__ = [
    "STATE", "AccountClosed", "Bank", "BankUnavailable", "Treasury", "bank", "reset", "state",
    "treasury",
]


class AccountClosed(Exception):
    """The payee's account is closed: retrying will not change it."""


class BankUnavailable(ConnectionError):
    """The bank did not answer; nothing was paid (safe to retry)."""


class _Service:
    """What both services share: a call's time on the wire, and a state file or none."""

    UNFILED = frozenset({"latency"})  # the process's setting, not the service's state
    latency: float
    state_file: StateFile | None

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` times ``latency`` (virtual time in the demo; 0: at once)."""
        await asyncio.sleep(seconds * self.latency)


class Treasury(_Service):
    """The money the batch pays from; a reservation holds it until released."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.state_file = None
        self.latency = 1.0
        self.balance = Decimal("100000.00")
        self.held: dict[str, Decimal] = {}
        self.keys = IdempotencyKeys()
        self.faults = Faults()

    async def reserve(self, key: str, batch_id: str, amount: Decimal) -> str:
        await self.faults.acheck("reserve")
        await self._pause(0.02)
        return self._reserve(key, batch_id, amount)

    @filed
    def _reserve(self, key: str, batch_id: str, amount: Decimal) -> str:
        def hold() -> str:
            self.balance -= amount
            self.held[batch_id] = amount
            return f"hold-{batch_id}"

        return self.keys.once(key, hold)

    async def release(self, key: str, reserved_by: str, batch_id: str) -> None:
        await self._pause(0.02)
        self._release(key, reserved_by, batch_id)

    @filed
    def _release(self, key: str, reserved_by: str, batch_id: str) -> None:
        def give_back(_: str) -> None:
            self.balance += self.held.pop(batch_id)

        self.keys.undo(key, reserved_by, give_back)

    async def settle(self, key: str, batch_id: str) -> None:
        """The batch is paid: its hold becomes spent money."""
        await self._pause(0.02)
        self._settle(key, batch_id)

    @filed
    def _settle(self, key: str, batch_id: str) -> None:
        self.keys.once(key, lambda: self.held.pop(batch_id))


class Bank(_Service):
    """Transfers to payees' accounts; ``paid`` holds what stands per transfer key."""

    UNFILED = frozenset({"latency", "running", "most_at_once"})  # this process's gauges

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.state_file = None
        self.latency = 1.0
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
                await self._pause(0.05)
                raise AccountClosed(f"account {account} is closed")
            await self._pause(0.1)
        finally:
            self.running -= 1
        return self._pay(key, account, amount)

    @filed
    def _pay(self, key: str, account: str, amount: Decimal) -> str:
        def pay() -> str:
            self.paid[key] = (account, amount)
            return f"tx-{len(self.paid)}"

        return self.keys.once(key, pay)

    async def reverse(self, key: str, paid_by: str) -> bool:
        """Reverse the transfer keyed ``paid_by``; whether there was one."""
        await self._pause(0.05)
        return self._reverse(key, paid_by)

    @filed
    def _reverse(self, key: str, paid_by: str) -> bool:
        def back(_: str) -> str:
            self.paid.pop(paid_by)
            self.reversed.append(paid_by)
            return paid_by

        return self.keys.undo(key, paid_by, back) is not None

    def total_paid(self) -> Decimal:
        return sum((amount for _, amount in self.paid.values()), Decimal(0))


treasury = Treasury()
bank = Bank()

#: Where the example cases keep both services' state (:func:`reset` with ``filed=True``).
STATE = StateFile("payouts", treasury=treasury, bank=bank)


def reset(closed: tuple[str, ...] = (), latency: float = 1.0, filed: bool = False) -> None:
    """Both services afresh, in memory, with the bank refusing to pay the ``closed``
    accounts, each call taking ``latency`` times its time; ``filed``: kept in
    :data:`STATE`'s file from now on (the example cases: a crash test's recovery, in
    another process, finds what the killed one did)."""
    treasury.reset()
    bank.reset()
    bank.closed.update(closed)
    treasury.latency = bank.latency = latency
    if filed:
        STATE.use()


def state() -> dict[str, Any]:
    """What the treasury and the payees see: the treasury's balance and holds, and each
    transfer that stands (not the reversals' trail or the idempotency keys); as last
    filed, when the services are kept in a file."""
    def read() -> dict[str, Any]:
        return {"balance": treasury.balance, "held": dict(treasury.held),
                "paid": dict(sorted(bank.paid.items()))}

    if treasury.state_file is None:
        return read()
    with STATE.held():
        return read()

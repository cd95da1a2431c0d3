"""The participant of seed 004's transfer: an async ledger of account balances.

Every posting is idempotent by the caller's key (a repeat returns the first posting and
moves nothing); a reversal names the posting it reverses by that posting's key, moves
the money back once, and voids a posting that never happened so it never will. A
reversal is a ledger correction: it may take an account below zero (the money was never
the holder's to spend), so it cannot fail for want of funds.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import attrs

from .._support import Faults, IdempotencyKeys

__all__ = ["InsufficientFunds", "InvalidAmount", "Ledger", "Posting", "UnknownAccount", "ledger"]


class InsufficientFunds(Exception):
    """The account cannot pay this much."""


class UnknownAccount(KeyError):
    """No such account."""


class InvalidAmount(ValueError):
    """An amount no ledger can post: infinite, or not a number."""


@attrs.frozen
class Posting:
    account: str
    delta: Decimal


class Ledger:
    """Balances per account, moved by idempotent postings."""

    def __init__(self, latency: float = 0.01) -> None:
        self.latency = latency
        self.reset()

    def reset(self, **balances: Decimal) -> None:
        """Open these accounts with these balances (and forget everything else)."""
        self.balances: dict[str, Decimal] = dict(balances)
        self.keys = IdempotencyKeys()
        self.faults = Faults()

    def total(self) -> Decimal:
        return sum(self.balances.values(), Decimal(0))

    async def post(self, key: str, account: str, delta: Decimal) -> Posting:
        """Move ``delta`` into ``account`` (negative: out of it); the posting."""
        if not delta.is_finite():  # it could never be reversed: refused, nothing moves
            raise InvalidAmount(f"cannot post {delta} to {account!r}")
        op = "debit" if delta < 0 else "credit"
        await self.faults.acheck(op)
        await asyncio.sleep(self.latency)

        def post() -> Posting:
            if account not in self.balances:
                raise UnknownAccount(f"no account {account!r}")
            if self.balances[account] + delta < 0:
                raise InsufficientFunds(
                    f"{account} has {self.balances[account]}, cannot pay {-delta}"
                )
            self.balances[account] += delta
            return Posting(account, delta)

        posting = self.keys.once(key, post)
        await self.faults.acheck(op, "after")
        return posting

    async def reverse(self, key: str, posted_by: str) -> Posting | None:
        """Reverse the posting made by the call keyed ``posted_by``; the reversal, or
        ``None`` if that posting never happened."""
        await self.faults.acheck("reverse")
        await asyncio.sleep(self.latency)

        def reverse(posting: Posting) -> Posting:
            self.balances[posting.account] -= posting.delta
            return Posting(posting.account, -posting.delta)

        reversal = self.keys.undo(key, posted_by, reverse)
        await self.faults.acheck("reverse", "after")
        return reversal


ledger = Ledger()

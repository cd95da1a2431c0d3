"""The checkout's participants: a warehouse, a payment gateway, a courier, a notifier.

Async in-process services with a simulated network round trip. Their effects are kept in
one :class:`~examples.crash_demo.Participants` ledger (SQLite, in memory by default; a file
for the crash scenario, so that what a killed process did is still there), keyed by the
caller's idempotency key: a repeated call changes nothing and returns the first result,
an undo reverts its forward call once, or voids it if it never arrived. Each service has
a :class:`Faults` switch, and ``spans`` records when each call ran (loop time), so the
demo can show the members of a group overlapping.
"""

from __future__ import annotations

import asyncio
import os
import signal
from decimal import Decimal
from pathlib import Path

from .._support import Faults
from ..crash_demo import Participants

__all__ = [
    "CardDeclined",
    "Checkout",
    "CourierBusy",
    "GatewayUnavailable",
    "OutOfStock",
    "services",
]


class OutOfStock(Exception):
    """Fewer units are available than the order wants."""


class CardDeclined(Exception):
    """The card was declined: a business answer, retrying will not change it."""


class GatewayUnavailable(ConnectionError):
    """The payment gateway did not answer; nothing was charged (safe to retry)."""


class CourierBusy(ConnectionError):
    """The courier's booking desk is busy; nothing was booked (safe to retry)."""


LATENCY = {"reserve": 0.05, "charge": 0.2, "book": 0.3, "receipt": 0.05, "warehouse": 0.05,
           "confirm": 0.05, "undo": 0.05}


class Checkout:
    """Every participant of the checkout, sharing one ledger."""

    def __init__(self, ledger: Path | str = ":memory:", latency: float | None = None) -> None:
        self.ledger = Participants(ledger)
        # each operation's round trip: the demo's (LATENCY), or ``latency`` for all of them
        self.latency = dict(LATENCY) if latency is None else dict.fromkeys(LATENCY, latency)
        self.faults = Faults()
        self.declined: set[str] = set()
        self.stock: dict[str, int] = {"lamp": 10}
        self.spans: list[tuple[str, float, float]] = []  # (operation, start, end), loop time
        self.crash_after: str | None = None  # the operation after which the process dies

    async def _call(self, op: str, key: str, what: str, amount: Decimal | None = None) -> str:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self.faults.acheck(op)
        await asyncio.sleep(self.latency[op])
        done = self.ledger.once(key, what, amount)
        if op == self.crash_after:
            print(f"   ✝ {op} took effect ({key}); the process is killed (SIGKILL) "
                  "before the member returns", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        await self.faults.acheck(op, "after")
        self.spans.append((op, start, loop.time()))
        return done

    async def reserve(self, key: str, sku: str, quantity: int) -> str:
        if self.stock.get(sku, 0) < quantity:
            raise OutOfStock(f"{quantity} x {sku} wanted, {self.stock.get(sku, 0)} left")
        return await self._call("reserve", key, f"reserved {quantity} x {sku}")

    async def charge(self, key: str, customer: str, amount: Decimal) -> str:
        if customer in self.declined:
            await asyncio.sleep(self.latency["charge"])
            raise CardDeclined(f"card of {customer} declined")
        return await self._call("charge", key, f"charged {customer} {amount:.2f}", amount)

    async def book(self, key: str, address: str) -> str:
        return await self._call("book", key, f"courier to {address}")

    async def notify(self, key: str, op: str, what: str) -> str:
        return await self._call(op, key, what)

    async def undo(self, key: str, forward_key: str) -> bool:
        """Undo the call keyed ``forward_key``; whether there was anything to undo."""
        await asyncio.sleep(self.latency["undo"])
        before = self.ledger.conn.execute(
            "SELECT 1 FROM applied WHERE key = ? AND undone = 0", (forward_key,)).fetchone()
        self.ledger.undo(key, forward_key)
        return before is not None

    def standing(self, saga_id: str) -> list[str]:
        """The forward effects of ``saga_id`` that stand (done and not undone)."""
        rows = self.ledger.conn.execute(
            "SELECT what FROM applied WHERE key LIKE ? AND key LIKE '%:forward' AND undone = 0"
            " ORDER BY what", (f"{saga_id}:%",)).fetchall()
        return [str(r[0]) for r in rows]

    def close(self) -> None:
        self.ledger.conn.close()


_current = Checkout()


def services() -> Checkout:
    """The participants this process talks to."""
    return _current


def reset(ledger: Path | str = ":memory:", latency: float | None = None) -> Checkout:
    """Fresh participants (a test or a demo section starts here), with the demo's
    latencies or ``latency`` seconds per call (the generated cases: 0)."""
    global _current
    _current.close()
    _current = Checkout(ledger, latency)
    return _current

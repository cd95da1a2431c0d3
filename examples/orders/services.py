"""The participants of seed 003's order saga: inventory, a payment gateway, orders.

Async in-process services with their own state and a simulated network round trip
(``latency``, spread by a seeded random generator so that concurrent orders interleave
the same way every run). Every operation is idempotent by the caller's key; each undo
names the forward call it undoes by that call's key. A :class:`Faults` switch per service
injects failures for the demo and the tests.

The gateway is the interesting one: a charge, once sent, is processed by the gateway
whether or not the caller still waits (it runs in its own task). So a payment step that
times out has an unknown outcome twice over: the charge may be done (its answer was
lost), or still on its way. The refund handles both: it refunds a charge that exists,
and voids one that has not arrived, so the late charge is refused.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import attrs

from .._filed import Ids, StateFile, filed
from .._support import Faults, IdempotencyKeys, Voided

T = TypeVar("T")

__all__ = [
    "CardDeclined",
    "GatewayUnavailable",
    "Inventory",
    "OrderService",
    "OutOfStock",
    "PaymentGateway",
    "STATE",
    "inventory",
    "orders",
    "payments",
    "reset",
]


class OutOfStock(Exception):
    """Fewer units are available than the order wants."""


class CardDeclined(Exception):
    """The card was declined: a business answer, retrying will not change it."""


class GatewayUnavailable(ConnectionError):
    """The payment gateway did not answer; the charge was not made (safe to retry)."""


class _Service:
    def __init__(self, latency: float = 0.05, seed: int = 3) -> None:
        self.typical_latency = latency  # what every reset() restores (a case sets 0)
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self.latency = self.typical_latency
        self.keys = IdempotencyKeys()
        self.faults = Faults()
        self.state_file: StateFile | None = None  # in memory (STATE.use() files it)
        self.reseed()

    @filed
    def _once(self, key: str, apply: Callable[[], T]) -> T:
        """``keys.once``: where the state changes, on the filed state when there is one."""
        return self.keys.once(key, apply)

    @filed
    def _undo(self, key: str, forward: str, revert: Callable[[Any], T]) -> T | None:
        return self.keys.undo(key, forward, revert)

    def reseed(self, seed: int | None = None) -> None:
        """Restart the latencies' random sequence (``seed``: a new one)."""
        if seed is not None:
            self.seed = seed
        self._rng = random.Random(self.seed)

    async def _roundtrip(self) -> None:
        """The network: some latency, different for every call."""
        await asyncio.sleep(self.latency * (0.5 + self._rng.random()))


@attrs.define
class Reservation:
    reservation_id: str
    order_id: str
    sku: str
    quantity: int
    status: str = "HELD"  # or RELEASED


class Inventory(_Service):
    """Stock per SKU; a reservation holds units until it is released."""

    def reset(self) -> None:
        super().reset()
        self.available: dict[str, int] = {}
        self.reservations: dict[str, Reservation] = {}
        self._ids = Ids(1)

    def stock(self, sku: str, units: int) -> None:
        self.available[sku] = self.available.get(sku, 0) + units

    def held(self, sku: str) -> int:
        return sum(
            r.quantity for r in self.reservations.values() if r.sku == sku and r.status == "HELD"
        )

    async def reserve(self, key: str, order_id: str, sku: str, quantity: int) -> str:
        """Hold ``quantity`` units of ``sku``; the reservation id, or :class:`OutOfStock`."""
        await self.faults.acheck("reserve")
        await self._roundtrip()

        def take() -> str:
            # No await between the check and the take: no other order runs in between.
            left = self.available.get(sku, 0)
            if left < quantity:
                raise OutOfStock(f"{quantity} x {sku} wanted, {left} left")
            self.available[sku] = left - quantity
            reservation = Reservation(f"RES-{next(self._ids)}", order_id, sku, quantity)
            self.reservations[reservation.reservation_id] = reservation
            return reservation.reservation_id

        reservation_id = self._once(key, take)
        await self.faults.acheck("reserve", "after")
        return reservation_id

    async def release(self, key: str, reserved_by: str) -> str | None:
        """Release what the call keyed ``reserved_by`` reserved; its id, or ``None``."""
        await self.faults.acheck("release")
        await self._roundtrip()

        def give_back(reservation_id: str) -> str:
            reservation = self.reservations[reservation_id]
            reservation.status = "RELEASED"
            self.available[reservation.sku] += reservation.quantity
            return reservation_id

        released = self._undo(key, reserved_by, give_back)
        await self.faults.acheck("release", "after")
        return released


@attrs.define
class Charge:
    charge_id: str
    customer: str
    amount: Decimal
    refunded: bool = False


class PaymentGateway(_Service):
    """Charges and refunds. ``declined`` lists the customers whose card is declined."""

    def reset(self) -> None:
        super().reset()
        self.charges: dict[str, Charge] = {}
        self.declined: set[str] = set()
        self.late: list[str] = []  # what happened to charges that arrived after the caller left
        _INFLIGHT[self] = set()
        self._ids = Ids(1)

    @property
    def _inflight(self) -> set[asyncio.Task[str]]:
        """The charges this process is processing: its tasks, never filed with the state."""
        return _INFLIGHT[self]

    async def charge(self, key: str, customer: str, amount: Decimal) -> str:
        """Charge ``amount`` to ``customer``'s card; the charge id."""
        await self.faults.acheck("charge")  # the request never left: nothing happens
        processing = asyncio.ensure_future(self._process(key, customer, amount))
        self._inflight.add(processing)
        processing.add_done_callback(self._settled)
        charge_id = await asyncio.shield(processing)  # the caller may stop waiting...
        await self.faults.acheck("charge", "after")  # ...or never hear the answer
        return charge_id

    async def _process(self, key: str, customer: str, amount: Decimal) -> str:
        """The gateway's side of a charge: it goes on when the caller gives up."""
        await self._roundtrip()
        await self.faults.acheck("charge", "gateway")  # a slow gateway: the charge lands late

        def charge() -> str:
            if customer in self.declined:
                raise CardDeclined(f"card of {customer} declined")
            made = Charge(f"CH-{next(self._ids)}", customer, amount)
            self.charges[made.charge_id] = made
            return made.charge_id

        return self._once(key, charge)

    def _settled(self, task: asyncio.Task[str]) -> None:
        self._inflight.discard(task)
        if task.cancelled():
            return
        error = task.exception()  # retrieved here, so an abandoned one is never "lost"
        if isinstance(error, Voided):
            self.late.append(f"a late charge ({error.key}) arrived after its refund: refused")

    async def drain(self) -> None:
        """Wait for charges still being processed (their callers may have left)."""
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def refund(self, key: str, charged_by: str) -> str | None:
        """Refund the charge made by the call keyed ``charged_by``; its id, or ``None``
        if that charge was never made (then it never will be)."""
        await self.faults.acheck("refund")
        await self._roundtrip()

        def refund(charge_id: str) -> str:
            self.charges[charge_id].refunded = True
            return charge_id

        refunded = self._undo(key, charged_by, refund)
        await self.faults.acheck("refund", "after")
        return refunded

    def net_charged(self, customer: str) -> Decimal:
        return sum(
            (c.amount for c in self.charges.values() if c.customer == customer and not c.refunded),
            Decimal(0),
        )


@attrs.define
class Order:
    order_id: str
    customer: str
    status: str = "CONFIRMED"  # or CANCELLED


class OrderService(_Service):
    """Orders, confirmed once reserved and paid."""

    def reset(self) -> None:
        super().reset()
        self.orders: dict[str, Order] = {}

    async def confirm(self, key: str, order_id: str, customer: str) -> str:
        await self.faults.acheck("confirm")
        await self._roundtrip()

        def confirm() -> str:
            self.orders[order_id] = Order(order_id, customer)
            return order_id

        confirmed = self._once(key, confirm)
        await self.faults.acheck("confirm", "after")
        return confirmed

    async def cancel(self, key: str, confirmed_by: str) -> str | None:
        await self.faults.acheck("cancel")
        await self._roundtrip()

        def cancel(order_id: str) -> str:
            self.orders[order_id].status = "CANCELLED"
            return order_id

        return self._undo(key, confirmed_by, cancel)


_INFLIGHT: weakref.WeakKeyDictionary[PaymentGateway, set[asyncio.Task[str]]] = (
    weakref.WeakKeyDictionary()
)

inventory = Inventory(latency=0.05, seed=3)
payments = PaymentGateway(latency=0.2, seed=5)
orders = OrderService(latency=0.05, seed=7)

#: The services' state in a file, for the generated cases (so that it outlives a
#: process ``sagaflow verify --crash`` kills); the demo and the tests keep it in memory.
STATE = StateFile("orders", inventory=inventory, payments=payments, orders=orders)


def reset(latency: float | None = None) -> None:
    """Give every service a fresh state (a test or a demo section starts here), with its
    typical latency, or ``latency`` seconds per call (the generated cases: 0)."""
    for service in (inventory, payments, orders):
        service.reset()
        if latency is not None:
            service.latency = latency


def reseed(seed: int | None = None) -> None:
    """Restart every service's latencies, so a scenario interleaves the same way whatever
    ran before it (``seed``: another interleaving)."""
    for i, service in enumerate((inventory, payments, orders)):
        service.reseed(None if seed is None else seed + i)

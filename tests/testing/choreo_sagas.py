"""Choreographies for the choreography toolkit's tests: the example order as a case, and
a box office whose participants are deliberately broken (and its correct twin): one
set of steps, each choreography naming the participants that are careless.

The box office: seats are held (a counter goes down), the card is charged, the ticket
issued. ``Office`` is the world the participants change; ``effects(id)`` what they did
for one booking.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

import attrs

import examples.choreography.saga as order
from examples.choreography.saga import OrderCreated, OrderFlow, Services
from sagaflow import Retry
from sagaflow.choreography import choreography
from sagaflow.choreography import step as reacts
from sagaflow.testing import ChoreographyCase

# --- the example order ---------------------------------------------------------------


def reset_order() -> None:
    order.services = Services()


def order_effects(order_id: str) -> object:
    """What the order's participants did for one order: reserved, charged, confirmed."""
    s = order.services
    return (order_id in s.reserved, s.charged.get(order_id), order_id in s.confirmed)


def order_case(*amounts: str) -> ChoreographyCase:
    """The example order, one instance per amount (``"5000"`` is declined)."""
    starts = [OrderCreated(f"o-{i}", Decimal(a)) for i, a in enumerate(amounts or ("25",))]
    return ChoreographyCase(OrderFlow, starts, reset_order, order_effects,
                            allow_step_errors=any(Decimal(a) > 1000 for a in amounts))


# --- the box office ------------------------------------------------------------------


@attrs.frozen
class BookingMade:
    booking: str
    show: str


@attrs.frozen
class SeatsHeld:
    booking: str


@attrs.frozen
class SeatsFreed:
    booking: str


@attrs.frozen
class Paid:
    booking: str


@attrs.frozen
class Refunded:
    booking: str


@attrs.frozen
class Issued:
    booking: str


@attrs.define
class Office:
    """Seats left per show, money taken per booking, tickets issued; ``seen`` is the
    idempotency keys the careful participants have acted on."""

    seats: dict[str, int] = attrs.field(factory=lambda: {"gala": 10})
    taken: dict[str, int] = attrs.field(factory=dict)
    issued: set[str] = attrs.field(factory=set)
    seen: set[str] = attrs.field(factory=set)

    def once(self, key: str) -> bool:
        """Whether ``key`` is new (then it is noted): the careful participants' dedupe."""
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


office = Office()


def reset_office() -> None:
    global office
    office = Office()


def office_effects(booking: str) -> object:
    return (office.seats.get("gala"), office.taken.get(booking, 0), booking in office.issued)


def office_case(flow: type) -> ChoreographyCase:
    return ChoreographyCase(flow, [BookingMade("b-1", "gala")], reset_office, office_effects)


@attrs.define
class Booking:
    """The box office's steps, shared by the three choreographies below (each adds
    ``@choreography``): every effect keyed by its idempotency key, but for the methods a
    subclass names in ``careless`` (its bug: that participant acts on every call)."""

    careless: ClassVar[frozenset[str]] = frozenset()
    booking: str
    show: str

    def acts(self, ctx: Any, method: str) -> bool:
        """Whether this call of ``method`` takes effect: a key not seen before, or any
        call of a careless method."""
        return method in self.careless or office.once(ctx.idempotency_key)

    @reacts(emits=SeatsHeld, participant="seating")
    def hold(self, ctx):
        if self.acts(ctx, "hold"):
            office.seats[self.show] -= 1

    @hold.compensate(emits=SeatsFreed)
    def free(self, ctx):
        if self.acts(ctx, "free"):
            office.seats[self.show] += 1

    @reacts(emits=Paid, participant="payments", retry=Retry(3, backoff=0.01))
    def pay(self, ctx):
        if self.acts(ctx, "pay"):
            office.taken[self.booking] = office.taken.get(self.booking, 0) + 50

    @pay.compensate(emits=Refunded)
    def refund(self, ctx):
        if self.acts(ctx, "refund"):
            office.taken[self.booking] -= 50

    @reacts(pivot=True, emits=Issued, participant="tickets")
    def issue(self, ctx):
        office.issued.add(self.booking)


@choreography(start=BookingMade, correlation="booking", deadline=900)
class CarelessHold(Booking):
    """Holding seats is not deduplicated: a redelivered BookingMade whose first
    handling died after the hold holds them again."""

    careless = frozenset({"hold"})


@choreography(start=BookingMade, correlation="booking", deadline=900)
class CarelessRefund(Booking):
    """The refund is not idempotent: a refund whose reply was lost refunds twice."""

    careless = frozenset({"refund"})


@choreography(start=BookingMade, correlation="booking", deadline=900,
              compensation_deadline=3600)
class CarefulBooking(Booking):
    """The same booking with every effect keyed by its idempotency key (and a
    compensation deadline: a compensation event that never comes fails what is left)."""

"""The business rules of removing components from a subscription's bundle (seed 000).

Pure functions of values: no I/O, no clock, no sagaflow. The saga calls them; they know
nothing of sagas, so they are tested alone and reused anywhere (a pricing page, a CLI).

The rules, as the business set them:

- A request names the subscription's bundle and the components to remove: at least one,
  each once, each in the bundle now. Removing every component is refused: that is a
  cancellation, a different process.
- Price: the remaining components' monthly prices, summed, less the bundle discount the
  customer keeps, rounded to the cent half-to-even (banker's rounding: ties go to the
  even cent, so rounding does not drift one way over many invoices). A grandfathered
  price below today's list price is kept as a cap: removing components never raises it.
- Approval: needed when more than half of the bundle's components are removed; exactly
  half does not need it. The approver has ``APPROVAL_WINDOW_DAYS`` (3) days to answer:
  no answer in that time is a no, and the request is withdrawn.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

__all__ = [
    "APPROVAL_THRESHOLD",
    "APPROVAL_WINDOW_DAYS",
    "CENT",
    "ROUNDING",
    "Component",
    "ModificationRequest",
    "Quote",
    "Rejected",
    "Rejection",
    "Subscription",
    "list_price",
    "quote",
    "requires_approval",
    "validate",
]

CENT = Decimal("0.01")
ROUNDING = ROUND_HALF_EVEN
#: More than this share of the bundle's components removed needs an approval.
APPROVAL_THRESHOLD = Fraction(1, 2)
#: Days the approver has to answer; silence past them withdraws the request.
APPROVAL_WINDOW_DAYS = 3


def _money(value: object, what: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise ValueError(f"{what} must be a finite Decimal >= 0, got {value!r}")
    if value != value.quantize(CENT):
        raise ValueError(f"{what} must be whole cents, got {value}: quantize it to 0.01")
    return value


@dataclass(frozen=True)
class Component:
    """One component of a bundle, with its monthly list price."""

    component_id: str
    name: str
    monthly_price: Decimal

    def __post_init__(self) -> None:
        _money(self.monthly_price, f"monthly price of {self.component_id!r}")


@dataclass(frozen=True)
class Subscription:
    """A subscription as the rules see it: its bundle's components now, its price now."""

    subscription_id: str
    bundle_id: str
    components: tuple[Component, ...]
    discount: Decimal  #: the bundle discount, a fraction in [0, 1)
    price: Decimal  #: the monthly price the customer pays now

    def __post_init__(self) -> None:
        ids = [c.component_id for c in self.components]
        if len(set(ids)) != len(ids):
            raise ValueError(f"components of {self.subscription_id!r} repeat: {ids}")
        if not isinstance(self.discount, Decimal) or not (0 <= self.discount < 1):
            raise ValueError(f"discount must be a Decimal in [0, 1), got {self.discount!r}")
        _money(self.price, f"price of {self.subscription_id!r}")


@dataclass(frozen=True)
class ModificationRequest:
    """Remove ``remove`` (component ids) from the bundle ``bundle_id`` of a subscription."""

    subscription_id: str
    bundle_id: str
    remove: tuple[str, ...]


class Rejection(enum.Enum):
    """Why a request is refused."""

    UNKNOWN_SUBSCRIPTION = "unknown subscription"
    UNKNOWN_BUNDLE = "unknown bundle"
    NOTHING_REMOVED = "nothing removed"
    DUPLICATE_COMPONENT = "component named twice"
    UNKNOWN_COMPONENT = "unknown component"
    REMOVES_EVERYTHING = "removes every component"


class Rejected(ValueError):
    """A request the rules refuse; ``reason`` says which rule, the message says how to fix it."""

    def __init__(self, reason: Rejection, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.reason, self.detail))


@dataclass(frozen=True)
class Quote:
    """What a valid request costs and whether it needs an approval."""

    removed: tuple[Component, ...]
    remaining: tuple[Component, ...]
    original_price: Decimal
    new_price: Decimal
    requires_approval: bool

    @property
    def removed_share(self) -> Fraction:
        """The share of the bundle's components removed."""
        return Fraction(len(self.removed), len(self.removed) + len(self.remaining))


def validate(request: ModificationRequest, subscription: Subscription | None) -> tuple[str, ...]:
    """The component ids to remove, in bundle order; :class:`Rejected` if the rules refuse."""
    if subscription is None or subscription.subscription_id != request.subscription_id:
        raise Rejected(
            Rejection.UNKNOWN_SUBSCRIPTION,
            f"no subscription {request.subscription_id!r}: check the subscription id",
        )
    if request.bundle_id != subscription.bundle_id:
        raise Rejected(
            Rejection.UNKNOWN_BUNDLE,
            f"subscription {subscription.subscription_id!r} has bundle "
            f"{subscription.bundle_id!r}, not {request.bundle_id!r}",
        )
    if not request.remove:
        raise Rejected(Rejection.NOTHING_REMOVED, "name at least one component to remove")
    twice = sorted(c for c, n in Counter(request.remove).items() if n > 1)
    if twice:
        raise Rejected(
            Rejection.DUPLICATE_COMPONENT,
            f"{', '.join(twice)} named more than once: name each once",
        )
    present = [c.component_id for c in subscription.components]
    unknown = [c for c in request.remove if c not in present]
    if unknown:
        raise Rejected(
            Rejection.UNKNOWN_COMPONENT,
            f"{', '.join(unknown)} not in bundle {subscription.bundle_id!r} "
            f"(it has: {', '.join(present)})",
        )
    if len(request.remove) == len(present):
        raise Rejected(
            Rejection.REMOVES_EVERYTHING,
            "a bundle keeps at least one component: cancel the subscription instead",
        )
    wanted = set(request.remove)
    return tuple(c for c in present if c in wanted)


def list_price(components: tuple[Component, ...], discount: Decimal) -> Decimal:
    """The monthly price of ``components`` less ``discount``, to the cent, half-to-even."""
    total = sum((c.monthly_price for c in components), Decimal(0))
    return (total * (1 - discount)).quantize(CENT, rounding=ROUNDING)


def requires_approval(removed: int, total: int) -> bool:
    """Whether removing ``removed`` of ``total`` components needs an approval (> half)."""
    if total < 1 or not 0 <= removed <= total:
        raise ValueError(f"need 0 <= removed <= total and total >= 1, got {removed}/{total}")
    return Fraction(removed, total) > APPROVAL_THRESHOLD


def quote(request: ModificationRequest, subscription: Subscription | None) -> Quote:
    """Validate ``request`` and price it; :class:`Rejected` if the rules refuse it."""
    remove = set(validate(request, subscription))
    assert subscription is not None
    removed = tuple(c for c in subscription.components if c.component_id in remove)
    remaining = tuple(c for c in subscription.components if c.component_id not in remove)
    new_price = min(list_price(remaining, subscription.discount), subscription.price)
    return Quote(
        removed=removed,
        remaining=remaining,
        original_price=subscription.price,
        new_price=new_price,
        requires_approval=requires_approval(len(removed), len(subscription.components)),
    )

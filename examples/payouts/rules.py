"""The business rules of a payout batch: what a batch may hold, each payout's fee.

Pure functions of values: no I/O, no clock, no sagaflow (a test checks its imports).

- A batch holds at least one payout and at most ``MAX_PAYOUTS``; each payout id appears
  once; each amount is positive, in cents, and at most ``MAX_AMOUNT``.
- A payout's fee is 1% of its amount, rounded half-to-even to the cent, at least
  ``MIN_FEE``; the payee receives the amount less the fee.
- The batch reserves its total (amounts, fees included) from the treasury before paying.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = [
    "CENT",
    "FEE_RATE",
    "MAX_AMOUNT",
    "MAX_PAYOUTS",
    "MIN_FEE",
    "Payout",
    "fee",
    "net",
    "problems",
    "total",
]

CENT = Decimal("0.01")
FEE_RATE = Decimal("0.01")
MIN_FEE = Decimal("0.25")
MAX_AMOUNT = Decimal("10000.00")
MAX_PAYOUTS = 500


@dataclass(frozen=True)
class Payout:
    payout_id: str
    account: str
    amount: Decimal


def fee(payout: Payout) -> Decimal:
    """1% of the amount, to the cent (ties to the even cent), never below ``MIN_FEE``."""
    return max(MIN_FEE, (payout.amount * FEE_RATE).quantize(CENT, ROUND_HALF_EVEN))


def net(payout: Payout) -> Decimal:
    """What the payee receives."""
    return payout.amount - fee(payout)


def total(payouts: list[Payout]) -> Decimal:
    """What the batch takes from the treasury: every amount (fees are inside them)."""
    return sum((p.amount for p in payouts), Decimal(0))


def problems(payouts: list[Payout]) -> list[str]:
    """Why the batch cannot be paid as it is (empty: it can)."""
    found: list[str] = []
    if not payouts:
        found.append("the batch is empty")
    if len(payouts) > MAX_PAYOUTS:
        found.append(f"{len(payouts)} payouts, at most {MAX_PAYOUTS}")
    seen: set[str] = set()
    for p in payouts:
        if p.payout_id in seen:
            found.append(f"payout {p.payout_id} appears twice")
        seen.add(p.payout_id)
        if p.amount <= 0 or p.amount > MAX_AMOUNT:
            found.append(f"payout {p.payout_id}: {p.amount} is not in (0, {MAX_AMOUNT}]")
        elif p.amount != p.amount.quantize(CENT) or net(p) <= 0:
            found.append(f"payout {p.payout_id}: {p.amount} is not a payable amount in cents")
    return found

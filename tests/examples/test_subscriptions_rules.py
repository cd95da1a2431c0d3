"""The UnbundleSaga's business rules, tested alone: pure functions, no saga, no database."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from examples.subscriptions.rules import (
    CENT,
    Component,
    ModificationRequest,
    Rejected,
    Rejection,
    Subscription,
    list_price,
    quote,
    requires_approval,
    validate,
)

COMPONENTS = (
    Component("a", "A", Decimal("10.00")),
    Component("b", "B", Decimal("5.50")),
    Component("c", "C", Decimal("2.25")),
    Component("d", "D", Decimal("0.99")),
)
SUB = Subscription("s1", "suite", COMPONENTS, Decimal("0.10"), Decimal("16.87"))


def request(*remove: str, bundle: str = "suite", sub: str = "s1") -> ModificationRequest:
    return ModificationRequest(sub, bundle, remove)


# --- validation -------------------------------------------------------------------


def test_a_valid_request_names_the_components_in_bundle_order() -> None:
    assert validate(request("c", "a"), SUB) == ("a", "c")


@pytest.mark.parametrize(
    ("req", "subscription", "reason", "hint"),
    [
        (request("a", sub="nope"), None, Rejection.UNKNOWN_SUBSCRIPTION, "check the subscription"),
        (request("a", bundle="other"), SUB, Rejection.UNKNOWN_BUNDLE, "has bundle 'suite'"),
        (request(), SUB, Rejection.NOTHING_REMOVED, "at least one"),
        (request("a", "b", "a"), SUB, Rejection.DUPLICATE_COMPONENT, "name each once"),
        (request("a", "zz"), SUB, Rejection.UNKNOWN_COMPONENT, "it has: a, b, c, d"),
        (request("a", "b", "c", "d"), SUB, Rejection.REMOVES_EVERYTHING, "cancel the subscription"),
    ],
)
def test_invalid_requests_get_a_typed_rejection_that_says_how_to_fix_them(
    req: ModificationRequest, subscription: Subscription | None, reason: Rejection, hint: str
) -> None:
    with pytest.raises(Rejected) as caught:
        validate(req, subscription)
    assert caught.value.reason is reason
    assert hint in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "bad",
    [Decimal("-1.00"), Decimal("1.005"), 1.5, Decimal("NaN")],
)
def test_component_prices_are_whole_cents_of_decimal_money(bad: object) -> None:
    with pytest.raises(ValueError, match="monthly price"):
        Component("x", "X", bad)  # type: ignore[arg-type]


def test_a_subscription_rejects_repeated_components_and_a_bad_discount() -> None:
    with pytest.raises(ValueError, match="repeat"):
        Subscription("s", "b", (COMPONENTS[0], COMPONENTS[0]), Decimal(0), Decimal(0))
    with pytest.raises(ValueError, match="discount"):
        Subscription("s", "b", COMPONENTS, Decimal(1), Decimal(0))


# --- pricing ----------------------------------------------------------------------


def test_prices_round_half_to_even_to_the_cent() -> None:
    # 10.05 at 50% off is 5.025: half-to-even gives 5.02 (half-up would give 5.03)
    assert list_price((Component("x", "X", Decimal("10.05")),), Decimal("0.5")) == Decimal("5.02")
    # 10.15 at 50% off is 5.075: the even cent is 5.08
    assert list_price((Component("x", "X", Decimal("10.15")),), Decimal("0.5")) == Decimal("5.08")


def test_a_quote_prices_the_remaining_components() -> None:
    q = quote(request("a"), SUB)
    assert q.original_price == Decimal("16.87")
    assert q.new_price == Decimal("7.87")  # (5.50 + 2.25 + 0.99) * 0.9 = 7.866
    assert [c.component_id for c in q.removed] == ["a"]
    assert q.removed_share == Fraction(1, 4)
    assert not q.requires_approval


def test_a_grandfathered_price_below_list_is_a_cap() -> None:
    cheap = Subscription("s1", "suite", COMPONENTS, Decimal("0.10"), Decimal("5.00"))
    assert quote(request("d"), cheap).new_price == Decimal("5.00")


# --- the approval rule ------------------------------------------------------------


@pytest.mark.parametrize(
    ("removed", "total", "needed"),
    [
        (1, 4, False),  # 25%
        (2, 4, False),  # exactly 50%: not more than half
        (3, 4, True),  # 75%
        (2, 6, False),  # just below 50%
        (3, 6, False),  # exactly 50%
        (4, 6, True),  # just above 50%
        (2, 5, False),  # 40%
        (3, 5, True),  # 60%
        (1, 2, False),
        (0, 3, False),
    ],
)
def test_approval_is_needed_only_above_half(removed: int, total: int, needed: bool) -> None:
    assert requires_approval(removed, total) is needed


def test_the_approval_rule_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match="removed <= total"):
        requires_approval(3, 2)
    with pytest.raises(ValueError, match="total >= 1"):
        requires_approval(0, 0)


# --- properties -------------------------------------------------------------------

cents = st.integers(min_value=0, max_value=100_000).map(lambda n: Decimal(n) / 100)
discounts = st.integers(min_value=0, max_value=99).map(lambda n: Decimal(n) / 100)


@st.composite
def subscriptions(draw: st.DrawFn) -> Subscription:
    n = draw(st.integers(min_value=2, max_value=12))
    components = tuple(Component(f"c{i}", f"C{i}", draw(cents)) for i in range(n))
    discount = draw(discounts)
    listed = list_price(components, discount)
    # the price paid now: today's list price, or a grandfathered one below it
    price = draw(st.sampled_from([listed, (listed / 2).quantize(CENT)]))
    return Subscription("s", "b", components, discount, price)


@st.composite
def nested_removals(draw: st.DrawFn) -> tuple[Subscription, list[str], list[str]]:
    """A subscription and two valid removals, the second a superset of the first."""
    sub = draw(subscriptions())
    ids = [c.component_id for c in sub.components]
    order = draw(st.permutations(ids))
    k = draw(st.integers(min_value=1, max_value=len(ids) - 1))
    j = draw(st.integers(min_value=1, max_value=k))
    return sub, list(order[:j]), list(order[:k])


@given(nested_removals())
def test_removing_components_never_raises_the_price(
    case: tuple[Subscription, list[str], list[str]],
) -> None:
    sub, fewer, more = case
    q_fewer = quote(ModificationRequest("s", "b", tuple(fewer)), sub)
    q_more = quote(ModificationRequest("s", "b", tuple(more)), sub)
    assert q_fewer.new_price <= sub.price
    assert q_more.new_price <= q_fewer.new_price
    assert q_more.new_price >= 0
    assert q_more.new_price == q_more.new_price.quantize(CENT)


@given(st.integers(min_value=1, max_value=500).flatmap(
    lambda total: st.tuples(st.integers(min_value=0, max_value=total), st.just(total))
))
def test_the_approval_boundary_is_strictly_more_than_half(case: tuple[int, int]) -> None:
    removed, total = case
    assert requires_approval(removed, total) == (2 * removed > total)


@given(subscriptions(), st.data())
def test_a_quote_needs_approval_exactly_when_its_share_is_above_half(
    sub: Subscription, data: st.DataObject
) -> None:
    ids = [c.component_id for c in sub.components]
    remove = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=len(ids) - 1,
                                unique=True))
    q = quote(ModificationRequest("s", "b", tuple(remove)), sub)
    assert q.requires_approval == (q.removed_share > Fraction(1, 2))
    assert len(q.removed) + len(q.remaining) == len(sub.components)


@given(subscriptions(), st.lists(st.sampled_from(["c0", "c1", "c2", "zz"]), max_size=5))
def test_validation_accepts_exactly_the_valid_requests(
    sub: Subscription, remove: list[str]
) -> None:
    ids = {c.component_id for c in sub.components}
    valid = (
        bool(remove)
        and len(set(remove)) == len(remove)
        and set(remove) <= ids
        and len(remove) < len(ids)
    )
    try:
        validate(ModificationRequest("s", "b", tuple(remove)), sub)
    except Rejected:
        assert not valid
    else:
        assert valid

"""The example order (examples/choreography) under generated delivery plans: every
invariant holds, on the memory store (the many plans of the fast profile) and on SQLite
files (each participant on its own connection, as separate services are).

``SAGAFLOW_PROFILE=deep`` (``./run.sh deep``) draws many more.
"""

from __future__ import annotations

from choreo_sagas import order_case
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.choreography.saga import OrderFlow
from sagaflow.testing import (
    Delivery,
    DeliveryPlan,
    choreography_plans,
    run_choreography,
)

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
ON_SQLITE = settings(FAST, max_examples=max(25, settings.default.max_examples // 4))

CASE = order_case("25", "40")
DECLINED = order_case("25", "5000")  # one card declined: that instance compensates


@FAST
@given(choreography_plans(OrderFlow))
def test_the_order_keeps_every_invariant(plan: DeliveryPlan) -> None:
    run_choreography(CASE, plan, store="memory").check()


@ON_SQLITE
@given(choreography_plans(OrderFlow))
def test_the_order_keeps_every_invariant_on_sqlite(plan: DeliveryPlan) -> None:
    run_choreography(CASE, plan).check()


@FAST
@given(choreography_plans(OrderFlow))
def test_a_declined_order_beside_a_good_one_keeps_every_invariant(plan: DeliveryPlan) -> None:
    run_choreography(DECLINED, plan, store="memory").check()


@settings(deadline=None, max_examples=200)
@given(choreography_plans(OrderFlow))
def test_plans_fit_the_flow_and_shrink_toward_nothing_wrong(plan: DeliveryPlan) -> None:
    plan.validate(OrderFlow)
    assert plan.delivery("OrderCreated") in (Delivery.ONCE, Delivery.TWICE, Delivery.LATE,
                                             Delivery.OUT_OF_ORDER)
    for name, count in plan.transient:
        assert name == "charge" and 1 <= count <= 2  # the only step that retries


def test_a_strategy_for_something_else_is_refused() -> None:
    import pytest
    from hypothesis.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="takes a choreography class"):
        choreography_plans(object).example()
    with pytest.raises(InvalidArgument, match="the start event OrderCreated cannot be"):
        choreography_plans(OrderFlow, withheld=["OrderCreated"]).example()
    with pytest.raises(InvalidArgument, match="withheld names \\['Nope'\\]"):
        choreography_plans(OrderFlow, withheld=["Nope"]).example()
    assert st.SearchStrategy  # the strategies are hypothesis strategies

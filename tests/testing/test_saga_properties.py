"""The toolkit applied to the sample sagas: every generated plan keeps every invariant.

The engine driver runs the bulk (at least 500 plans per saga in the default profile,
the profile's own count under ``deep``); a smaller sample goes through the real sync
and async drivers, so the drivers are held to the same invariants.
"""

from __future__ import annotations

from hypothesis import given, settings
from testing_sagas import Shop, Trip, shop_cases, trip_cases

from sagaflow.testing import Fault, SagaCase, failure_plans, run_plan

MANY = settings(max_examples=max(500, settings.default.max_examples), deadline=None)
SAMPLE = settings(max_examples=25, deadline=None)


@MANY
@given(case=shop_cases(), plan=failure_plans(Shop))
def test_shop_keeps_every_invariant(case: SagaCase, plan) -> None:
    run_plan(case, plan).check()


@MANY
@given(case=trip_cases(), plan=failure_plans(Trip))
def test_trip_keeps_every_invariant(case: SagaCase, plan) -> None:
    run_plan(case, plan).check()


@SAMPLE
@given(case=shop_cases(), plan=failure_plans(Shop, faults=[Fault.RAISES, Fault.TIMES_OUT]))
def test_shop_under_the_sync_driver(case: SagaCase, plan) -> None:
    run_plan(case, plan, driver="sync").check()


@SAMPLE
@given(case=shop_cases(), plan=failure_plans(Shop))
def test_shop_under_the_async_driver(case: SagaCase, plan) -> None:
    run_plan(case, plan, driver="async").check()


@SAMPLE
@given(case=trip_cases(), plan=failure_plans(Trip))
def test_trip_under_the_async_driver(case: SagaCase, plan) -> None:
    run_plan(case, plan, driver="async").check()

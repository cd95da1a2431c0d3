"""saga_state_machine(): runs driven call by call, failures as rules, invariants throughout."""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test
from testing_sagas import DoubleRelease, Shop, Trip, reset_world, shop_cases, trip_cases, world

from sagaflow.testing import InvariantViolation, SagaCase, saga_state_machine

STEPS = settings(max_examples=100, stateful_step_count=40, deadline=None)

ShopMachine = saga_state_machine(Shop, sagas=shop_cases())
TestShopMachine = ShopMachine.TestCase
TestShopMachine.settings = STEPS

TripMachine = saga_state_machine(Trip, sagas=trip_cases())
TestTripMachine = TripMachine.TestCase
TestTripMachine.settings = STEPS


def test_the_machine_class_is_named_after_the_saga() -> None:
    assert ShopMachine.__name__ == "ShopStateMachine"


def test_the_state_machine_finds_a_compensation_that_is_not_idempotent() -> None:
    machine = saga_state_machine(
        DoubleRelease, sagas=st.builds(lambda: SagaCase(DoubleRelease(), reset_world, world))
    )
    with pytest.raises(InvariantViolation) as caught:
        run_state_machine_as_test(
            machine,
            # finding is what this test shows; shrinking rule sequences takes longer
            settings=settings(max_examples=1000, stateful_step_count=15, database=None,
                              deadline=None, phases=[Phase.generate]),
        )
    assert caught.value.numbers == [11]
    assert "+effect" in str(caught.value)  # a compensation that took effect, then failed

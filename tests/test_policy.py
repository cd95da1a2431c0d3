"""Retry policies and backoff are pure functions of numbers."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from sagaflow import Retry, StepTimeout, backoff_delay

policies = st.builds(
    Retry,
    attempts=st.integers(1, 20),
    backoff=st.floats(0, 10),
    multiplier=st.floats(1, 5),
    max_delay=st.floats(0, 120),
    jitter=st.floats(0, 1),
)


def test_exponential_backoff_without_jitter() -> None:
    policy = Retry(attempts=5, backoff=2.0, multiplier=2.0, max_delay=10.0, jitter=0.0)
    assert [backoff_delay(policy, n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_jitter_places_delay_in_its_band() -> None:
    policy = Retry(backoff=1.0, multiplier=1.0, jitter=0.2)
    assert backoff_delay(policy, 1, 0.0) == 0.8
    assert backoff_delay(policy, 1, 0.5) == 1.0
    assert math.isclose(backoff_delay(policy, 1, 0.999999), 1.2, rel_tol=1e-5)


@given(policies, st.integers(1, 10_000), st.floats(0, 1, exclude_max=True))
def test_delay_is_bounded_by_band_and_max(policy: Retry, n: int, rand: float) -> None:
    delay = backoff_delay(policy, n, rand)
    try:
        base = min(policy.backoff * policy.multiplier ** (n - 1), policy.max_delay)
    except OverflowError:
        base = policy.max_delay
    assert 0.0 <= delay <= policy.max_delay
    assert base * (1 - policy.jitter) - 1e-9 <= delay <= base * (1 + policy.jitter) + 1e-9


@given(policies, st.integers(1, 50))
def test_middle_of_band_never_decreases(policy: Retry, n: int) -> None:
    assert backoff_delay(policy, n + 1) >= backoff_delay(policy, n) - 1e-9


def test_which_errors_are_retried() -> None:
    policy = Retry(
        retry_on=(ConnectionError, StepTimeout), retry_if=lambda e: "fatal" not in str(e)
    )
    assert policy.is_retryable(ConnectionError("blip"))
    assert not policy.is_retryable(ConnectionError("fatal"))
    assert not policy.is_retryable(ValueError("bad input"))
    assert policy.is_retryable(StepTimeout(0, "pay", 1.0))
    assert Retry().is_retryable(ValueError())  # default: every Exception

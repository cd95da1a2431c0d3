"""Retry policies and backoff: value objects and pure functions of numbers."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import attrs

__all__ = ["COMPENSATION_RETRY", "NO_RETRY", "RETRIABLE_RETRY", "Retry", "backoff_delay"]


def _positive_int(_: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Retry.{attribute.name} must be a whole number >= 1, got {value!r}"
        )


def _non_negative(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"Retry.{attribute.name} must be a finite number >= 0, got {value!r}")


def _multiplier(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    _non_negative(_, attribute, value)
    if value < 1:  # type: ignore[operator]  # a number: checked just above
        raise ValueError(f"Retry.multiplier must be >= 1 (1 = constant backoff), got {value!r}")


def _jitter(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    _non_negative(_, attribute, value)
    if value > 1:  # type: ignore[operator]
        raise ValueError(f"Retry.jitter is a fraction of the delay in [0, 1], got {value!r}")


def _error_types(value: object) -> tuple[type[BaseException], ...]:
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ValueError(
                f"Retry.retry_on takes exception types (or a tuple of them), got {item!r}"
            )
    return items


def _predicate(_: object, attribute: attrs.Attribute[object], value: object) -> None:
    if value is not None and not callable(value):
        raise ValueError(f"Retry.retry_if must be a callable(error) -> bool, got {value!r}")


@attrs.frozen
class Retry:
    """How often, and after which errors, a step or compensation is tried again.

    ``attempts`` counts every try, the first included (1 = no retry). The delay before
    retry *n* (n = 1 for the second attempt) is ``backoff * multiplier**(n-1)``, spread by
    +/- ``jitter`` (a fraction) so that many sagas failing together do not retry in
    lockstep, and never more than ``max_delay``. An error is retried when it is an instance of
    ``retry_on`` and ``retry_if(error)`` (when given) is true. A timeout counts as a
    :class:`~sagaflow.StepTimeout` error, so ``retry_on`` decides whether timeouts retry.
    """

    attempts: int = attrs.field(default=3, validator=_positive_int)
    backoff: float = attrs.field(default=0.1, validator=_non_negative)
    multiplier: float = attrs.field(default=2.0, validator=_multiplier)
    max_delay: float = attrs.field(default=30.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.1, validator=_jitter)
    retry_on: tuple[type[BaseException], ...] = attrs.field(
        default=(Exception,), converter=_error_types
    )
    retry_if: Callable[[BaseException], bool] | None = attrs.field(
        default=None, validator=_predicate  # type: ignore[assignment]  # attrs typing
    )

    def is_retryable(self, error: BaseException) -> bool:
        """Whether this policy retries after ``error`` (attempts left aside)."""
        if not isinstance(error, self.retry_on):
            return False
        return self.retry_if is None or bool(self.retry_if(error))


def backoff_delay(policy: Retry, retry_number: int, rand: float = 0.5) -> float:
    """Seconds to wait before retry ``retry_number`` (1 = before the second attempt).

    ``rand`` is a number in [0, 1) that places the delay inside its jitter band;
    0.5 gives the band's middle, so the function stays pure and testable.
    """
    if retry_number < 1:
        raise ValueError(f"retry_number counts from 1, got {retry_number}")
    try:
        base = min(policy.backoff * policy.multiplier ** (retry_number - 1), policy.max_delay)
    except OverflowError:  # the uncapped delay is beyond a float: it is capped anyway
        base = policy.max_delay
    spread = base * policy.jitter
    return min(policy.max_delay, max(0.0, base - spread + 2.0 * spread * rand))


def jittered_delay(policy: Retry, retry_number: int) -> float:
    """:func:`backoff_delay` with a random place in the jitter band."""
    return backoff_delay(policy, retry_number, random.random())


#: Forward steps do not retry unless asked: retrying a step that is not idempotent
#: would repeat its effect, and the saga's answer to failure is compensation.
NO_RETRY = Retry(attempts=1, backoff=0.0, jitter=0.0)
#: Retriable steps (after the pivot) must eventually succeed: patient by default.
RETRIABLE_RETRY = Retry(attempts=10, backoff=0.5, multiplier=2.0, max_delay=30.0)
#: Compensations are the last line of defence: more patient than forward steps
#: (seed 001 retries a refund five times with exponential backoff).
COMPENSATION_RETRY = Retry(attempts=5, backoff=0.5, multiplier=2.0, max_delay=30.0)

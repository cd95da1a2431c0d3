"""Hypothesis strategies of :class:`~sagaflow.testing.DeliveryPlan` drawn from a
choreography: its steps, the retries each allows, its compensations, its event types.

Plans shrink toward "nothing goes wrong": no failing step, no crash, every event
delivered once.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ..choreography import choreography_of, is_choreography
from ..spec import spec_of
from .choreography import Delivery, DeliveryPlan, event_types
from .plan import InjectedFault

__all__ = ["choreography_plans"]

#: Shrinking goes toward the left: delivered once first, lost last.
_ORDER = (Delivery.ONCE, Delivery.TWICE, Delivery.LATE, Delivery.OUT_OF_ORDER,
          Delivery.AFTER_DEADLINE, Delivery.NEVER)


def choreography_plans(
    flow: type,
    *,
    failures: bool = True,
    crashes: bool = True,
    compensation_faults: bool = True,
    deliveries: bool = True,
    withheld: Collection[str] | None = None,
    republish: bool = True,
    max_transient: int = 2,
) -> st.SearchStrategy[DeliveryPlan]:
    """Plans for choreography ``flow`` (its class).

    ``failures``: a step fails for good or a few times (within its retry budget);
    ``crashes``: a participant dies during a step, before or after its effect;
    ``compensation_faults``: a compensation takes effect and then fails (a lost reply)
    or its participant dies after its effect; ``deliveries``: each event type delivered
    twice, late, out of order, after the deadline or never; ``withheld``: the event
    type names that may come after the deadline or never (default: all but the start
    event; ``()``: none); ``republish``: the relay publishes some event types twice.
    """
    if not (isinstance(flow, type) and is_choreography(flow)):
        raise InvalidArgument(f"choreography_plans() takes a choreography class "
                              f"(@sagaflow.choreography), got {flow!r}")
    if isinstance(max_transient, bool) or not isinstance(max_transient, int) or (
        max_transient < 0
    ):
        raise InvalidArgument(f"max_transient must be a whole number >= 0, got {max_transient!r}")
    spec = spec_of(flow)
    start = choreography_of(flow).start.__name__
    types = list(event_types(flow))
    may_withhold = set(types) - {start} if withheld is None else set(withheld)
    unknown = sorted(may_withhold - set(types))
    if unknown:
        raise InvalidArgument(f"withheld names {unknown}, which are not event types of "
                              f"{spec.name} ({', '.join(types)})")
    if start in may_withhold:
        raise InvalidArgument(f"the start event {start} cannot be withheld")
    names = [s.name for s in spec.steps]
    undoable = [s.name for s in spec.steps if s.compensation is not None]
    sample = InjectedFault("a sample")

    def none() -> st.SearchStrategy[Any]:
        return st.just({})

    fails: st.SearchStrategy[str | None] = (
        st.none() | st.sampled_from(names) if failures else st.none())
    transient = st.fixed_dictionaries({
        s.name: st.integers(0, min(max_transient, s.retry.attempts - 1))
        for s in spec.steps
        if failures and s.retry.attempts > 1 and s.retry.is_retryable(sample)
    })
    crash = st.fixed_dictionaries({n: st.none() | st.booleans() for n in names}).map(
        lambda d: {k: v for k, v in d.items() if v is not None}) if crashes else none()
    comp_transient = st.fixed_dictionaries({
        s.name: st.integers(0, min(max_transient, s.compensation_retry.attempts - 1))
        for s in spec.steps
        if s.compensation is not None and s.compensation_retry.attempts > 1
        and s.compensation_retry.is_retryable(sample)
    }) if compensation_faults else none()
    comp_crash = _subsets(undoable) if compensation_faults else st.just(frozenset())
    delivered = st.fixed_dictionaries({
        t: st.sampled_from([d for d in _ORDER if not d.withholds or t in may_withhold])
        for t in types
    }) if deliveries else none()
    again = _subsets(types) if republish else st.just(frozenset())
    return st.builds(
        DeliveryPlan, fails=fails, transient=transient, crash=crash,
        compensation_transient=comp_transient, compensation_crash=comp_crash,
        deliveries=delivered, republished=again,
    )


def _subsets(names: list[str]) -> st.SearchStrategy[frozenset[str]]:
    """Subsets of ``names``, each name in or out on its own (so each shrinks out alone)."""
    return st.fixed_dictionaries({n: st.booleans() for n in names}).map(
        lambda d: frozenset(n for n, inside in d.items() if inside))

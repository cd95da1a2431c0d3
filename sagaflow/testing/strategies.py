"""Hypothesis strategies: failure plans drawn from a saga class's own spec.

``failure_plans(MySaga)`` draws only plans that fit the class: its step names, the
faults each step can suffer (a step with no timeout cannot time out), transient
failures within each retry budget (and only where the policy retries them), a
deadline only if the saga has one, and for each wait what it receives (a
:class:`~sagaflow.testing.SignalPlan`, its payload drawn from the strategy given for
the signal's name, or built from the payload class). Plans shrink toward the
simplest: no failure at all, then a failure of the first step, raising, with no
transient failures, and every signal coming while its wait waits.

``st.from_type(FailurePlan[MySaga])`` gives the same strategy once
:func:`register_strategies` has run: the ``hypothesis`` entry point runs it when
hypothesis is imported.
"""

from __future__ import annotations

import importlib
import math
import typing
from collections.abc import Collection, Mapping
from typing import Any

import attrs
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ..policy import Retry, backoff_delay
from ..spec import SagaSpec, StepKind, StepSpec, is_saga, spec_of
from .plan import (
    Arrival,
    DeadlinePass,
    FailurePlan,
    Fault,
    SagaCase,
    SignalPlan,
    can_time_out,
    sample_error,
)

__all__ = [
    "failure_plans",
    "payloads_for",
    "register_strategies",
    "saga_cases",
]

ALL_FAULTS = (Fault.RAISES, Fault.TIMES_OUT, Fault.CANCELLED, Fault.REJECTS)
# Plans shrink toward the signal coming in time, then toward no signal at all.
_ARRIVALS = (Arrival.AT_WAIT, Arrival.EARLY, Arrival.NEVER, Arrival.LATE)
_IN_TIME = (Arrival.AT_WAIT, Arrival.EARLY)
#: Share of the saga's deadline that planned transient failures may use up.
_TIME_SHARE = 0.5


def _spec(saga: Any) -> SagaSpec:
    if not is_saga(saga):
        raise InvalidArgument(
            f"failure_plans() takes a saga class (decorated with @sagaflow.saga), "
            f"got {saga!r}"
        )
    return spec_of(saga)


def _retries_for(s: StepSpec, fault: Fault, policy: Retry, cap: int) -> int:
    if not policy.is_retryable(sample_error(s, fault)):
        return 0
    return min(policy.attempts - 1, cap)


def _worst_delay(policy: Retry, n: int) -> float:
    return backoff_delay(policy, n, 1.0)


def payloads_for(
    saga: Any, given: Mapping[str, st.SearchStrategy[Any]] | None = None, what: str = "payloads"
) -> dict[str, st.SearchStrategy[Any]]:
    """A strategy of payloads for each signal ``saga`` waits for: the one ``given`` for
    its name, else instances built from the wait's payload class (``st.builds``, its
    fields from their types), or ``None`` for a signal without one."""
    spec = _spec(saga)
    given = dict(given or {})
    unknown = sorted(set(given) - set(spec.signals))
    if unknown:
        raise InvalidArgument(
            f"{what} names signals {unknown}, which saga {spec.name!r} does not wait for "
            f"(its signals: {sorted(spec.signals) or 'none'})"
        )
    out: dict[str, st.SearchStrategy[Any]] = {}
    for name, waits in spec.signals.items():
        strategy = given.get(name)
        if strategy is not None and not isinstance(strategy, st.SearchStrategy):
            raise InvalidArgument(
                f"{what}[{name!r}] must be a hypothesis strategy, got {strategy!r}"
            )
        if strategy is None:
            w = spec.steps[waits[0]].wait
            assert w is not None
            strategy = st.none() if w.payload is None else _builds(w.payload)
        out[name] = strategy
    return out


def failure_plans(
    saga: Any,
    *,
    faults: Collection[Fault] = ALL_FAULTS,
    transient: bool = True,
    compensation_failures: bool = True,
    deadlines: bool = True,
    effects: bool = True,
    max_transient: int = 3,
    signals: bool = True,
    payloads: Mapping[str, st.SearchStrategy[Any]] | None = None,
    rejections: Mapping[str, st.SearchStrategy[Any]] | None = None,
    blocks: bool = True,
    items: Mapping[str, Collection[Any]] | None = None,
) -> st.SearchStrategy[FailurePlan[Any]]:
    """Plans for ``saga`` (a saga class or instance), shrinking toward "no failure".

    ``faults``: the permanent faults to plan (drop ``Fault.CANCELLED`` for the sync
    driver; ``Fault.REJECTS`` makes a step or a wait's handler reject the saga);
    ``transient``: plan transient failures of steps; ``compensation_failures``: plan
    failures of compensations; ``deadlines``: plan the saga's deadline passing (if it
    has one); ``effects``: let timed-out and failing calls take effect first;
    ``max_transient``: at most this many transient failures per step or compensation.

    Waits: ``signals`` plans what each wait receives (without it, no signal comes and
    every wait's time runs out). ``payloads`` maps a signal's name to a strategy of its
    payloads (default: built from the payload class); ``rejections`` maps a signal's
    name to a strategy of payloads its handler must reject (then some plans deliver one
    of those, ``SignalPlan(rejects=True)``, and the run must end rejected).

    Parallel groups and fan-outs (``blocks``): any subset of the members (and of the
    items) fails for good, raising, timing out or rejecting (``FailurePlan.faults``), or
    is cut off by a crash (``cut``, having taken effect or not); the order a batch's calls
    are performed in is drawn too (``order``). A fan-out's items are named by their keys,
    which the class cannot tell: ``items`` maps a fan-out step to the keys its items may
    have (``{"pick": ["a", "b"]}``), else the fan-out's name stands for all its items.
    """
    spec = _spec(saga)
    carried = payloads_for(saga, payloads)
    rejecting = {
        name: strategy
        for name, strategy in payloads_for(saga, rejections, "rejections").items()
        if rejections and name in rejections
    }
    signal_waits = [s for s in spec.steps if s.wait is not None and s.wait.signal is not None]
    faults = tuple(f for f in ALL_FAULTS if f in set(faults))
    if any(not isinstance(f, Fault) for f in faults):
        raise InvalidArgument(f"faults must be Fault members, got {faults!r}")
    if isinstance(max_transient, bool) or not isinstance(max_transient, int) or (
        max_transient < 0
    ):
        raise InvalidArgument(f"max_transient must be a whole number >= 0, got {max_transient!r}")
    names = [s.name for s in spec.steps]
    compensatable = [s for s in spec.steps if s.compensation is not None]
    guarded = [s.name for s in spec.steps if s.kind is not StepKind.RETRIABLE]

    # Everything that depends only on the spec is worked out once, here; the
    # strategies are made once too (drawing is what hypothesis does thousands of times).
    booleans = st.booleans()
    step_choice = st.none() | st.sampled_from(names) if faults else st.none()
    fault_choice = {
        s.name: st.sampled_from(possible)
        for s in spec.steps
        if (possible := [f for f in faults
                         if f is not Fault.TIMES_OUT or can_time_out(spec, s)])
    }
    transient_kinds = [Fault.RAISES]
    if any(s.timeout is not None for s in spec.steps):
        transient_kinds.append(Fault.TIMES_OUT)
    kind_choice = st.sampled_from(transient_kinds)
    rooms: dict[Fault, list[tuple[StepSpec, st.SearchStrategy[int]]]] = {}
    for kind in transient_kinds:
        rooms[kind] = []
        for s in spec.steps:
            room = _retries_for(s, kind, s.retry, max_transient)
            if kind is Fault.TIMES_OUT and s.timeout is None:
                room = 0
            if room:
                rooms[kind].append((s, st.integers(0, room)))
    comp_names = st.frozensets(st.sampled_from([s.name for s in compensatable])) if (
        compensatable
    ) else st.just(frozenset[str]())
    comp_rooms = [
        (s, st.integers(0, room))
        for s in compensatable
        if (room := _retries_for(s, Fault.RAISES, s.compensation_retry, max_transient))
    ]
    where_choice = st.sampled_from(guarded) if guarded else st.nothing()
    with_deadline = deadlines and spec.deadline is not None and bool(guarded)
    block_names = [s.name for s in spec.steps if s.group is not None or s.each is not None]
    for s in spec.steps:
        if s.each is not None:
            block_names += [f"{s.name}[{k}]" for k in (items or {}).get(s.name, ())]
    if items:
        unknown_fan_outs = sorted(n for n in items if n not in spec.index
                                  or spec.step(n).each is None)
        if unknown_fan_outs:
            raise InvalidArgument(f"items names {unknown_fan_outs}, which are not fan-outs "
                                  f"of saga {spec.name!r}")
    with_blocks = blocks and bool(block_names)
    block_faults = {
        name: st.sampled_from(possible)
        for name in block_names
        if (possible := [f for f in faults if f is not Fault.CANCELLED and (
            f is not Fault.TIMES_OUT or can_time_out(spec, spec.step(name.partition("[")[0]))
        )])
    }
    block_subset = st.lists(st.sampled_from(block_names), unique=True, max_size=3) if (
        with_blocks
    ) else st.just([])
    orders = st.integers(0, 2**16)
    arrivals = st.sampled_from(_ARRIVALS)
    in_time = st.sampled_from(_IN_TIME)

    def signal_plan(draw: st.DrawFn, s: StepSpec, fails_here: bool) -> SignalPlan:
        name = s.wait.signal  # type: ignore[union-attr]
        assert name is not None
        arrives = draw(in_time if fails_here else arrivals)
        if arrives is Arrival.NEVER:
            return SignalPlan(s.name, arrives=arrives, refused=draw(booleans))
        rejects = arrives in _IN_TIME and name in rejecting and draw(booleans)
        payload = draw(rejecting[name] if rejects else carried[name])
        return SignalPlan(s.name, payload, arrives=arrives, twice=draw(booleans),
                          another=draw(booleans), refused=draw(booleans), rejects=rejects)

    def within(s: StepSpec, n: int, policy: Retry, each: float, budget: list[float]) -> int:
        """Cut ``n`` failures so that their time (``each`` plus a backoff per failure)
        fits the budget left (``budget[0]``): they must stay transient."""
        for k in range(1, n + 1):
            cost = each + _worst_delay(policy, k)
            if cost > budget[0]:
                return k - 1
            budget[0] -= cost
        return n

    @st.composite
    def plans(draw: st.DrawFn) -> FailurePlan[Any]:
        step = draw(step_choice)
        fault = Fault.RAISES
        effect = False
        if step is not None:
            if step not in fault_choice:
                step = None
            else:
                fault = draw(fault_choice[step])
                if effects and fault not in (Fault.RAISES, Fault.REJECTS):
                    effect = draw(booleans)

        counts: dict[str, int] = {}
        t_fault = Fault.RAISES
        t_effect = False
        if transient and max_transient and draw(booleans):
            t_fault = draw(kind_choice)
            budget = [math.inf if spec.deadline is None else spec.deadline * _TIME_SHARE]
            for s, strategy in rooms[t_fault]:
                n = draw(strategy)
                if n and s.kind is not StepKind.RETRIABLE:
                    each = (s.timeout or 0.0) if t_fault is Fault.TIMES_OUT else 0.0
                    n = within(s, n, s.retry, each, budget)
                if n:
                    counts[s.name] = n
            if counts and effects and t_fault is Fault.TIMES_OUT:
                t_effect = draw(booleans)
            if not counts:
                t_fault = Fault.RAISES

        comp_counts: dict[str, int] = {}
        comp_fails: frozenset[str] = frozenset()
        comp_effect = False
        if compensation_failures and compensatable and draw(booleans):
            comp_fails = draw(comp_names)
            budget = [math.inf if spec.compensation_deadline is None
                      else spec.compensation_deadline * _TIME_SHARE]
            for s, strategy in comp_rooms:
                if s.name in comp_fails:
                    continue
                n = within(s, draw(strategy), s.compensation_retry, 0.0, budget)
                if n:
                    comp_counts[s.name] = n
            if (comp_counts or comp_fails) and effects:
                comp_effect = draw(booleans)

        deadline = None
        if with_deadline and draw(booleans):
            where = draw(where_choice)
            # a wait's handler runs with no time limit: the deadline passes before it
            during = spec.step(where).wait is None and draw(booleans)
            d_effect = draw(booleans) if during and effects else False
            deadline = DeadlinePass(where, during=during, effect=d_effect)

        planned = [signal_plan(draw, s, s.name == step) for s in signal_waits] if (
            signals
        ) else []
        if not signals and step is not None and spec.step(step).wait is not None and (
            spec.step(step).wait.signal is not None  # type: ignore[union-attr]
        ):
            step, fault, effect = None, Fault.RAISES, False  # its handler never runs

        more: dict[str, Fault] = {}
        cut: list[str] = []
        cut_effect = False
        order = 0
        if with_blocks and draw(booleans):
            for name in draw(block_subset):
                if name in block_faults and name != step:
                    more[name] = draw(block_faults[name])
            cut = [n for n in draw(block_subset) if n not in more and n != step]
            cut_effect = bool(cut) and effects and draw(booleans)
            order = draw(orders)
            if effects and not effect and Fault.TIMES_OUT in more.values() and (
                step is None or fault in (Fault.TIMES_OUT, Fault.CANCELLED)
            ):
                effect = draw(booleans)

        return FailurePlan(
            step=step,
            fault=fault,
            effect=effect,
            transient=counts,
            transient_fault=t_fault,
            transient_effect=t_effect,
            compensation_transient=comp_counts,
            compensation_fails=comp_fails,
            compensation_effect=comp_effect,
            deadline=deadline,
            signals=planned,
            faults=more,
            cut=cut,
            cut_effect=cut_effect,
            order=order,
        )

    return plans()


def saga_cases(saga_class: type) -> st.SearchStrategy[SagaCase]:
    """Instances of ``saga_class``, as :class:`SagaCase`, by the examples convention.

    If the class's module defines ``example_sagas()`` (a function returning a strategy
    of saga instances or :class:`SagaCase`), its values of this class are used;
    otherwise ``st.builds(saga_class)``.
    """
    _spec(saga_class)
    module = importlib.import_module(saga_class.__module__)
    hook = getattr(module, "example_sagas", None)
    base: st.SearchStrategy[Any]
    if hook is None:
        base = _builds(saga_class)
    else:
        base = hook()
        if not isinstance(base, st.SearchStrategy):
            raise InvalidArgument(
                f"{module.__name__}.example_sagas() must return a hypothesis strategy of "
                f"saga instances (or SagaCase), got {base!r}"
            )

    def as_case(value: Any) -> SagaCase:
        if isinstance(value, SagaCase):
            return value
        # without the module's own cases, inputs are arbitrary: a step may refuse them
        return SagaCase(value, allow_step_errors=hook is None)

    def of_class(case: SagaCase) -> bool:
        return type(case.saga) is saga_class

    cases = base.map(as_case)
    if hook is not None:
        cases = cases.filter(of_class)
    return cases


def _builds(saga_class: type) -> st.SearchStrategy[Any]:
    """``st.builds`` with the required fields' annotations resolved (they may be strings,
    under ``from __future__ import annotations``)."""
    try:
        hints = typing.get_type_hints(saga_class)
    except Exception:  # unresolvable annotations: let st.builds say what it can't infer
        hints = {}
    required = {
        f.alias or f.name: st.from_type(hints[f.name])
        for f in attrs.fields(saga_class)
        if f.init and f.default is attrs.NOTHING and f.name in hints
    }
    return st.builds(saga_class, **required)


def _resolve(thing: Any) -> st.SearchStrategy[FailurePlan[Any]]:
    args = typing.get_args(thing)
    if not args:
        raise InvalidArgument(
            "st.from_type(FailurePlan) needs the saga class: write "
            "st.from_type(FailurePlan[MySaga]) or sagaflow.testing.failure_plans(MySaga)"
        )
    return failure_plans(args[0])


def register_strategies() -> None:
    """Teach ``st.from_type`` about ``FailurePlan[MySaga]`` (the entry point calls it)."""
    st.register_type_strategy(FailurePlan, _resolve)


# Imported before hypothesis was, this module is what imported it, so the entry point
# (sagaflow.testing._hooks) found it half made and left the registering to it.
register_strategies()

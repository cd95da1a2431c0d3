"""Direct checks of compensations against a snapshot of the participants' state.

A compensation is retried (a lost reply, a crash before the record was saved), so it
must be idempotent: running it a second time, with the same idempotency key, must
change nothing. And it runs for steps that timed out, so it must tolerate "nothing to
undo". These helpers call the user's functions directly, step by step, with no
orchestrator, and compare snapshots. A wait's handler on the way runs with the payload
given for its signal (``payloads=``), or not at all.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ..context import Direction, StepContext
from ..engine._blocks import _item_name
from ..spec import SagaSpec, spec_of
from .clock import VirtualClock
from .loop import VirtualTimeLoop
from .plan import SagaCase
from .trace import diff

__all__ = [
    "assert_compensations_idempotent",
    "assert_compensations_tolerate_nothing_to_undo",
]

Factory = Callable[[], Any]


def _source(saga: Any) -> Callable[[], SagaCase]:
    """A function giving a fresh :class:`SagaCase` for each scenario."""
    if callable(saga) and not isinstance(saga, SagaCase) and not isinstance(saga, type) and (
        not attrs.has(type(saga))
    ):
        factory: Factory = saga

        def fresh() -> SagaCase:
            made = factory()
            return made if isinstance(made, SagaCase) else SagaCase(made)

        return fresh
    case = saga if isinstance(saga, SagaCase) else SagaCase(saga)

    def copy() -> SagaCase:
        return attrs.evolve(case, saga=attrs.evolve(case.saga))

    return copy


class _Caller:
    def __init__(self, spec: SagaSpec, saga_id: str) -> None:
        self.spec = spec
        self.saga_id = saga_id
        self.clock = VirtualClock()
        self.loop: asyncio.AbstractEventLoop | None = None

    def call(self, saga: Any, index: int, direction: Direction, attempt: int,
             payload: Any = None) -> None:
        s = self.spec.steps[index]
        fn = self.spec.forward[index] if direction is Direction.FORWARD else (
            self.spec.compensations[index]
        )
        assert fn is not None
        timeout = s.timeout if direction is Direction.FORWARD else s.compensation_timeout
        calls: list[tuple[str, tuple[Any, ...]]] = [(s.name, ())]
        if s.each is not None:  # a fan-out: once per item, under the item's own name (key)
            items = getattr(saga, s.each.field)
            calls = [(_item_name(s, k, item), (item,)) for k, item in enumerate(items)]
        for name, item in calls:
            ctx = StepContext(self.saga_id, self.spec.name, name, direction, attempt, timeout,
                              None, self.clock.now(), self.clock.now)
            ctx.signal = payload
            value = fn(saga, *item, ctx)
            if inspect.isawaitable(value):
                if self.loop is None:
                    self.loop = VirtualTimeLoop()
                self.loop.run_until_complete(_await(value))

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()


async def _await(value: Any) -> Any:
    return await value


def _reach(caller: _Caller, saga: Any, upto: int,
           payloads: Mapping[str, Any] | None = None) -> bool:
    """Run the forward steps before ``upto`` (skipping those whose condition is false,
    and the waits whose signal ``payloads`` gives no payload for)."""
    spec = caller.spec
    passed: list[str] = []
    for s in spec.steps[:upto]:
        if s.when is not None and not s.when(saga):
            continue
        payload = None
        if s.wait is not None and s.wait.signal is not None:
            if payloads is None or s.wait.signal not in payloads:
                passed.append(s.name)
                continue  # its handler only records what the signal says
            payload = payloads[s.wait.signal]
        try:
            caller.call(saga, s.index, Direction.FORWARD, 1, payload)
        except Exception as exc:
            hint = ""
            if passed:
                hint = (f" (the handlers of {', '.join(map(repr, passed))} did not run: "
                        "give payloads={signal: payload} to run them)")
            raise AssertionError(
                f"could not bring saga {spec.name!r} to step {spec.steps[upto].name!r}: "
                f"step {s.name!r} raised {type(exc).__name__}: {exc}{hint}"
            ) from exc
    return True


def _steps(spec: SagaSpec, only: Iterable[str] | None) -> list[int]:
    chosen = [s.index for s in spec.steps if s.compensation is not None]
    if only is not None:
        names = set(only)
        unknown = names - {s.name for s in spec.steps}
        if unknown:
            raise ValueError(f"saga {spec.name!r} has no steps {sorted(unknown)}")
        chosen = [i for i in chosen if spec.steps[i].name in names]
    return chosen


def _step_id(saga_id: str, step: str) -> str:
    """The saga id of one step's check, ``{saga_id}-{step}``: its own, as a fresh run
    would have. Under one id for every step, the keys of the steps before the one checked
    come again after the check of an earlier step used (and undid) them: without a
    ``setup`` that resets every participant, one that refuses a key it saw undone stops
    the run forward (a failure of a sound saga), and one that dedupes by key drops those
    steps' effects, which a compensation may need to show its bug (a failure hidden)."""
    return f"{saga_id}-{step}"


def assert_compensations_idempotent(
    saga: Any,
    *,
    snapshot: Callable[[], Any] | None = None,
    setup: Callable[[], Any] | None = None,
    steps: Iterable[str] | None = None,
    saga_id: str = "idempotency-check",
    payloads: Mapping[str, Any] | None = None,
) -> None:
    """Run each compensation twice after its step; the second run must change nothing.

    ``saga``: a saga instance or :class:`SagaCase` (copied for each step with
    ``attrs.evolve``), or a function returning a fresh one. ``snapshot()`` returns the
    participants' state (default: the case's); ``setup()`` resets them before each step
    (default: the case's). For each compensatable step: setup, run the forward steps up
    to and including it, run its compensation (attempt 1), snapshot, run it again
    (attempt 2, same idempotency key), snapshot. Raises ``AssertionError`` listing every
    compensation whose second run changed the snapshot or raised. ``payloads``: the
    payload each signal (by name) hands the waits on the way; a wait with none is passed
    by without running its handler. Each step's check has a saga id of its own,
    ``{saga_id}-{step}``.
    """
    fresh = _source(saga)
    first = fresh()
    spec = spec_of(first.saga)
    problems: list[str] = []
    for index in _steps(spec, steps):
        case = fresh()
        snap = snapshot or case.snapshot
        if snap is None:
            raise ValueError(
                "assert_compensations_idempotent needs a snapshot of the participants' "
                "state: pass snapshot=... or a SagaCase with one"
            )
        prepare = setup or case.setup
        if prepare is not None:
            prepare()
        s = spec.steps[index]
        caller = _Caller(spec, _step_id(saga_id, s.name))
        try:
            _reach(caller, case.saga, index, payloads)
            if s.when is not None and not s.when(case.saga):
                continue  # the step would be skipped for this saga: nothing to undo
            caller.call(case.saga, index, Direction.FORWARD, 1)
            caller.call(case.saga, index, Direction.COMPENSATE, 1)
            once = snap()
            try:
                caller.call(case.saga, index, Direction.COMPENSATE, 2)
            except Exception as exc:
                problems.append(
                    f"{s.compensation_name} (undoes {s.name!r}) raised on its second run: "
                    f"{type(exc).__name__}: {exc}"
                )
                continue
            twice = snap()
        finally:
            caller.close()
        if once != twice:
            problems.append(
                f"{s.compensation_name} (undoes {s.name!r}) is not idempotent: its second "
                f"run (same key {caller.saga_id}:{s.name}:compensate) changed:\n"
                + _indent(diff(once, twice))
            )
    if problems:
        raise AssertionError(
            f"saga {spec.name!r}: {len(problems)} compensation(s) not idempotent:\n"
            + "\n".join(f"- {p}" for p in problems)
        )


def assert_compensations_tolerate_nothing_to_undo(
    saga: Any,
    *,
    snapshot: Callable[[], Any] | None = None,
    setup: Callable[[], Any] | None = None,
    steps: Iterable[str] | None = None,
    saga_id: str = "nothing-to-undo-check",
    payloads: Mapping[str, Any] | None = None,
) -> None:
    """Run each compensation after the steps before its own, but not its own step.

    That is the situation after a step timed out before taking effect: the compensation
    runs with nothing to undo. It must not raise, and (with a snapshot) must change
    nothing. Arguments as for :func:`assert_compensations_idempotent`; each step's run
    has a saga id of its own, ``{saga_id}-{step}``.
    """
    fresh = _source(saga)
    first = fresh()
    spec = spec_of(first.saga)
    problems: list[str] = []
    for index in _steps(spec, steps):
        case = fresh()
        snap = snapshot or case.snapshot
        prepare = setup or case.setup
        if prepare is not None:
            prepare()
        s = spec.steps[index]
        caller = _Caller(spec, _step_id(saga_id, s.name))
        try:
            _reach(caller, case.saga, index, payloads)
            before = snap() if snap is not None else None
            try:
                caller.call(case.saga, index, Direction.COMPENSATE, 1)
            except Exception as exc:
                problems.append(
                    f"{s.compensation_name} (undoes {s.name!r}) raised with nothing to "
                    f"undo: {type(exc).__name__}: {exc}"
                )
                continue
            after = snap() if snap is not None else None
        finally:
            caller.close()
        if before != after:
            problems.append(
                f"{s.compensation_name} (undoes {s.name!r}) changed the participants with "
                "nothing to undo:\n" + _indent(diff(before, after))
            )
    if problems:
        raise AssertionError(
            f"saga {spec.name!r}: {len(problems)} compensation(s) do not tolerate "
            "\"nothing to undo\":\n" + "\n".join(f"- {p}" for p in problems)
        )


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())

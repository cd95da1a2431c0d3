"""The frozen description of a saga class: :class:`StepKind`, :class:`StepSpec`, :class:`SagaSpec`.

``@saga`` (:mod:`sagaflow.definition`) builds a :class:`SagaSpec` once per class and
leaves it on the class; everything else (the machine, the engine, the stores, the
diagrams, the CLI) reads it through :func:`spec_of`. This module is the bottom of that
chain: it imports nothing of sagaflow, so any module may depend on it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:  # a type in the annotations only: policy.py is not needed to read a spec
    from .policy import Retry

__all__ = [
    "SPEC_ATTRIBUTE",
    "CompensationOrder",
    "FanOutSpec",
    "GroupSpec",
    "OnTimeout",
    "SagaSpec",
    "StepKind",
    "StepSpec",
    "WaitSpec",
    "callable_name",
    "is_saga",
    "spec_of",
]

StepFn = Callable[..., Any]
Predicate = Callable[[Any], bool]

#: The class attribute ``@saga`` leaves the spec in.
SPEC_ATTRIBUTE = "__sagaflow_spec__"


class StepKind(enum.Enum):
    """What a step does to the world, which decides how the saga treats its failure."""

    COMPENSATABLE = "compensatable"  #: has a compensation that undoes it
    READONLY = "readonly"  #: changes nothing: nothing to undo
    PIVOT = "pivot"  #: the point of no return: after it the saga only goes forward
    RETRIABLE = "retriable"  #: after the pivot: retried, never compensated


class OnTimeout(enum.Enum):
    """What a wait's running out of time means."""

    COMPENSATE = "compensate"  #: the saga compensates what it did (before the pivot)
    CONTINUE = "continue"  #: the saga goes on without the signal
    FAIL = "fail"  #: the saga ends FAILED for an operator (after the pivot)


class CompensationOrder(enum.Enum):
    """How the members of a parallel group (or the items of a fan-out) are undone."""

    CONCURRENT = "concurrent"  #: all at once (they are independent): the default
    REVERSE = "reverse"  #: one at a time, the last to complete first


@attrs.frozen
class GroupSpec:
    """A parallel group: steps ``first`` to ``last`` (indices, inclusive) run at once.

    ``name`` is the group's state in the machine (the class attribute holding its
    :func:`~sagaflow.parallel`); ``limit`` how many members run at once (``None``: all);
    ``compensation`` how its completed (and unknown) members are undone;
    ``after_pivot``: its members are retriable or readonly steps after the pivot (a
    member failing for good fails the saga, as a retriable step does).
    """

    index: int
    name: str
    first: int
    last: int
    limit: int | None
    compensation: CompensationOrder
    after_pivot: bool = False

    @property
    def members(self) -> range:
        """The members' step indices."""
        return range(self.first, self.last + 1)


@attrs.frozen
class FanOutSpec:
    """What makes a step a fan-out: it is applied to each item of the saga's field
    ``field`` (a list or tuple), ``limit`` at once (``None``: all), each item under its
    own key: ``key(item)`` as text, or its position when ``key`` is ``None``. The
    handler and its compensation are ``(self, item, ctx)``."""

    field: str
    key: Callable[[Any], Any] | None
    limit: int | None
    compensation: CompensationOrder


@attrs.frozen
class WaitSpec:
    """What makes a step a wait: it parks the saga durably until a signal or a time.

    A signal wait (``signal`` set) delivers the signal's ``payload`` (an instance of
    that class, or ``None`` for a signal without one) to its handler; its ``timeout``
    (seconds) says how long it waits and ``on_timeout`` what happens then. A timer
    (``signal`` is ``None``) fires ``after(saga)`` seconds after it is reached (a number
    or a callable of the saga instance) or at ``at(saga)`` (a Unix time or an aware
    datetime), and then calls its handler.
    """

    signal: str | None
    payload: type | None
    timeout: float | None
    on_timeout: OnTimeout
    after: float | Callable[[Any], Any] | None = None
    at: Callable[[Any], Any] | None = None

    @property
    def is_timer(self) -> bool:
        """Whether this is a timer (no signal)."""
        return self.signal is None


def callable_name(fn: object) -> str:
    """The name a function (or callable object) is shown by in errors and diagrams.

    Never ``repr()``: that carries a memory address, and diagrams must be byte-stable.
    """
    return getattr(fn, "__name__", None) or type(fn).__qualname__


@attrs.frozen
class StepSpec:
    """One step of a saga, resolved and validated: the row of the dispatch tables."""

    index: int
    name: str
    kind: StepKind
    fn: StepFn
    is_async: bool
    timeout: float | None
    retry: Retry
    when: Predicate | None
    compensation: StepFn | None
    compensation_name: str | None
    compensation_is_async: bool
    compensation_timeout: float | None
    compensation_retry: Retry
    #: set on a wait (``@wait``/``@timer``): what it waits for; ``None`` on a step
    wait: WaitSpec | None = None
    #: the index in :attr:`SagaSpec.groups` of the parallel group this step belongs to
    group: int | None = None
    #: set on a fan-out (``@step(each=...)``): what it is applied to
    each: FanOutSpec | None = None

    @property
    def guard_name(self) -> str | None:
        """The name of the ``when`` predicate, as diagrams show it."""
        return None if self.when is None else callable_name(self.when)


@attrs.frozen(eq=False)
class SagaSpec:
    """The frozen description of a saga class, built once by ``@saga``.

    ``forward`` and ``compensations`` are the dispatch tables (step index -> function,
    ``None`` where a step has no compensation); ``machine`` is the class's one
    ``transitions`` state machine and ``transitions`` the set of (source, trigger,
    destination) it allows, which every run checks each state change against.
    """

    name: str
    cls: type
    steps: tuple[StepSpec, ...]
    forward: tuple[StepFn, ...]
    compensations: tuple[StepFn | None, ...]
    deadline: float | None
    compensation_deadline: float | None
    pivot_index: int | None
    is_async: bool
    fingerprint: str
    #: the shortest limit any call can get (a timeout or a deadline); ``None`` when no
    #: call is ever limited. The sync driver's watchdog never sleeps longer than this.
    shortest_limit: float | None
    machine: Any = attrs.field(repr=False)
    transitions: frozenset[tuple[str, str, str]] = attrs.field(repr=False)
    index: Mapping[str, int] = attrs.field(repr=False)
    #: the field holding the saga's business key (``@saga(key=...)``), or ``None``
    key: str | None = None
    #: the waits for each signal name: signal name -> the waits' step indices
    signals: Mapping[str, tuple[int, ...]] = attrs.field(factory=dict, repr=False)
    #: the parallel groups, in step order (their members are in :attr:`steps`)
    groups: tuple[GroupSpec, ...] = ()

    def state_of(self, index: int) -> str:
        """The machine state a run is in at step ``index``: a group member's group, or
        the step itself."""
        s = self.steps[index]
        return s.name if s.group is None else self.groups[s.group].name

    def step(self, name: str) -> StepSpec:
        """The step called ``name``."""
        try:
            return self.steps[self.index[name]]
        except KeyError:
            known = ", ".join(s.name for s in self.steps)
            raise KeyError(f"saga {self.name!r} has no step {name!r} (steps: {known})") from None


def is_saga(obj: object) -> bool:
    """Whether ``obj`` is a saga class or an instance of one."""
    cls = obj if isinstance(obj, type) else type(obj)
    return isinstance(cls.__dict__.get(SPEC_ATTRIBUTE), SagaSpec)


def spec_of(obj: object) -> SagaSpec:
    """The :class:`SagaSpec` of a saga class or instance."""
    cls = obj if isinstance(obj, type) else type(obj)
    spec = cls.__dict__.get(SPEC_ATTRIBUTE)
    if not isinstance(spec, SagaSpec):
        raise TypeError(
            f"{cls.__qualname__} is not a saga class: decorate it with @sagaflow.saga"
        )
    return spec

"""``@saga``, ``@step`` and ``<step>.compensate``: a saga class becomes a frozen :class:`SagaSpec`.

The decorators only record what they are given; ``@saga`` validates everything at once,
once, when the class is defined, and reports every problem in one
:class:`~sagaflow.SagaDefinitionError`. Nothing here runs per saga instance.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import itertools
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast, overload

import attrs

from ._checks import check_callable, check_retry, check_timeout
from ._groupdefs import FanOutDecl, resolve_groups
from ._waitdefs import WaitDecl, place_waits, resolve_wait
from .errors import SagaDefinitionError
from .machine import (
    COMPENSATING_PREFIX,
    RESERVED_NAMES,
    build_machine,
    check_graph,
    is_reserved,
)
from .policy import COMPENSATION_RETRY, NO_RETRY, RETRIABLE_RETRY, Retry
from .spec import (
    SPEC_ATTRIBUTE,
    GroupSpec,
    OnTimeout,
    Predicate,
    SagaSpec,
    StepFn,
    StepKind,
    StepSpec,
    callable_name,
    is_saga,
    spec_of,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "CompensationDef",
    "Parallel",
    "SagaSpec",
    "StepDef",
    "StepKind",
    "StepSpec",
    "disown",
    "is_saga",
    "parallel",
    "saga",
    "spec_of",
    "step",
    "timer",
    "wait",
]

T = TypeVar("T")

#: Seconds a forward step or compensation may run when no ``timeout`` is given (seed 004).
DEFAULT_TIMEOUT = 30.0


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "<default>"


UNSET = _Unset.UNSET

_counter = itertools.count()
_lock = threading.Lock()
# Every @step and .compensate made for a class body, by the body's module and qualified
# name, so that @saga can see one that a later method of the same name silently replaced.
# The module is part of the key: an undecorated mixin's steps must not be blamed on a saga
# of the same name.
_made_for: dict[tuple[str, str], list[StepDef | CompensationDef]] = {}


def _owner_of(fn: object) -> tuple[str, str]:
    """The (module, qualified name) of the class body ``fn`` is defined in."""
    qualname = getattr(fn, "__qualname__", "")
    owner = qualname.rpartition(".")[0] if "." in qualname else ""
    return getattr(fn, "__module__", None) or "", owner


@attrs.frozen(eq=False)
class CompensationDef:
    """What ``@<step>.compensate`` recorded; resolved by ``@saga``."""

    fn: Any
    step: StepDef
    timeout: float | _Unset | None = UNSET
    retry: Any = UNSET
    order: int = attrs.field(factory=lambda: next(_counter))

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None or not hasattr(self.fn, "__get__"):
            return self
        return self.fn.__get__(instance, owner)


@attrs.frozen(eq=False)
class StepDef:
    """What ``@step`` recorded about one method; resolved by ``@saga``.

    Accessed on an instance it behaves as the method itself, so a saga's steps can be
    called directly in unit tests.
    """

    fn: Any
    name: str | None = None
    timeout: float | _Unset | None = UNSET
    retry: Any = UNSET
    when: Any = None
    readonly: Any = False
    pivot: Any = False
    retriable: Any = False
    order: int = attrs.field(factory=lambda: next(_counter))
    compensations: list[CompensationDef] = attrs.field(factory=list, repr=False)
    #: what ``@wait``/``@timer`` declared (checked by ``@saga``); ``None`` for a step
    wait: WaitDecl | None = None
    #: the :class:`Parallel` group it is a member of (``@group.step``), if any
    group: Parallel | None = None
    #: what ``each=`` (a fan-out) declared, as given; ``None`` for a step without it
    each: FanOutDecl | None = None

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None or not hasattr(self.fn, "__get__"):
            return self
        return self.fn.__get__(instance, owner)

    @overload
    def compensate(self, fn: StepFn, /) -> CompensationDef: ...

    @overload
    def compensate(
        self, /, *, timeout: float | _Unset | None = ..., retry: Retry | _Unset = ...
    ) -> Callable[[StepFn], CompensationDef]: ...

    def compensate(
        self,
        fn: StepFn | None = None,
        /,
        *,
        timeout: float | _Unset | None = UNSET,
        retry: Retry | _Unset = UNSET,
    ) -> CompensationDef | Callable[[StepFn], CompensationDef]:
        """Mark ``fn`` as this step's compensation: ``@debit.compensate`` or
        ``@debit.compensate(timeout=..., retry=Retry(...))``."""

        def attach(fn: StepFn) -> CompensationDef:
            comp = CompensationDef(fn=fn, step=self, timeout=timeout, retry=retry)
            self.compensations.append(comp)
            with _lock:
                _made_for.setdefault(_owner_of(fn), []).append(comp)
            return comp

        return attach if fn is None else attach(fn)


@overload
def step(fn: StepFn, /) -> StepDef: ...


@overload
def step(
    *,
    name: str | None = None,
    timeout: float | _Unset | None = UNSET,
    retry: Retry | _Unset = UNSET,
    when: Predicate | None = None,
    readonly: bool = False,
    pivot: bool = False,
    retriable: bool = False,
    each: str | None = None,
    key: Callable[[Any], Any] | None = None,
    limit: int | None = None,
    compensate: str = "concurrent",
) -> Callable[[StepFn], StepDef]: ...


def step(
    fn: StepFn | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | _Unset | None = UNSET,
    retry: Retry | _Unset = UNSET,
    when: Predicate | None = None,
    readonly: bool = False,
    pivot: bool = False,
    retriable: bool = False,
    each: str | None = None,
    key: Callable[[Any], Any] | None = None,
    limit: int | None = None,
    compensate: str = "concurrent",
) -> StepDef | Callable[[StepFn], StepDef]:
    """Mark a method ``(self, ctx)`` of a saga class as a forward step.

    ``timeout`` is in seconds (default 30, ``None`` for none); ``retry`` a
    :class:`~sagaflow.Retry` (default: no retry for forward steps, patient for
    retriable ones); ``when`` a predicate of the saga instance that makes the step
    conditional. The kind is compensatable (give it a ``.compensate``), or one of
    ``readonly``, ``pivot``, ``retriable``.

    ``each="field"`` makes it a fan-out: the method ``(self, item, ctx)`` (and its
    compensation) is called once per item of that field (a list or tuple), ``limit`` at
    once (``None``: all), each item under ``key(item)`` (default: its position);
    ``compensate`` is ``"concurrent"`` or ``"reverse"``.
    """
    fan_out = None
    if each is not None or key is not None or limit is not None or compensate != "concurrent":
        fan_out = FanOutDecl(each, key, limit, compensate)

    def make(fn: StepFn) -> StepDef:
        return make_step(
            fn,
            name=name,
            timeout=timeout,
            retry=retry,
            when=when,
            readonly=readonly,
            pivot=pivot,
            retriable=retriable,
            each=fan_out,
        )

    return make if fn is None else make(fn)


def make_step(fn: StepFn, **fields: Any) -> StepDef:
    """A :class:`StepDef` of ``fn``, noted as made in its class body (``@step`` and a
    group's ``.step``)."""
    made = StepDef(fn=fn, **fields)
    with _lock:
        _made_for.setdefault(_owner_of(fn), []).append(made)
    return made


class Parallel:
    """A parallel group: its members (``@group.step``) run at once, ``limit`` at a time
    (``None``: all), and are undone ``compensate="concurrent"`` (all at once) or
    ``"reverse"`` (one at a time, the last to complete first). Its name is the class
    attribute it is assigned to; that name is the saga's state while the group runs."""

    def __init__(self, limit: int | None = None, compensate: str = "concurrent") -> None:
        self.limit = limit
        self.compensate = compensate
        #: the class attribute it is assigned to (set by the class body)
        self.name: str | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        if self.name is None:
            self.name = name

    def __repr__(self) -> str:
        return f"parallel({self.name or '?'}, limit={self.limit!r}, compensate={self.compensate!r})"

    @overload
    def step(self, fn: StepFn, /) -> StepDef: ...

    @overload
    def step(
        self,
        *,
        name: str | None = None,
        timeout: Any = ...,
        retry: Retry | Any = ...,
        when: Predicate | None = None,
        readonly: bool = False,
        pivot: bool = False,
        retriable: bool = False,
    ) -> Callable[[StepFn], StepDef]: ...

    def step(self, fn: Any = None, /, **options: Any) -> Any:  # type: ignore[misc]
        """A member of this group: ``@group.step`` or ``@group.step(...)`` with
        :func:`~sagaflow.step`'s keywords (not ``each=``: a member is one call)."""
        def make(fn: StepFn) -> StepDef:
            return make_step(fn, group=self, **options)

        return make if fn is None else make(fn)


def parallel(limit: int | None = None, compensate: str = "concurrent") -> Parallel:
    """A parallel group of steps, assigned to a class attribute of the saga::

        book = parallel(limit=3, compensate="concurrent")

        @book.step
        def reserve_stock(self, ctx): ...

    Members are defined one after another; each is a step with its own kind,
    compensation, retry and timeout. ``limit``: how many run at once (``None``: all);
    ``compensate``: ``"concurrent"`` or ``"reverse"``.
    """
    return Parallel(limit, compensate)


def disown(*made: StepDef | CompensationDef) -> None:
    """Forget that these were made in a class body. :class:`~sagaflow.SagaBuilder` applies
    the decorators outside any class body: ``@saga`` must not look for what it made there
    (and a process that builds many sagas must not keep them)."""
    with _lock:
        for d in made:
            owner = _owner_of(d.fn)
            kept = [m for m in _made_for.get(owner, []) if m is not d]
            if kept:
                _made_for[owner] = kept
            else:
                _made_for.pop(owner, None)


def _declare(fn: StepFn, name: str | None, when: Predicate | None, decl: WaitDecl) -> StepDef:
    made = StepDef(fn=fn, name=name, timeout=None, when=when, wait=decl)
    with _lock:
        _made_for.setdefault(_owner_of(fn), []).append(made)
    return made


def wait(
    signal: str,
    *,
    payload: type | None = None,
    timeout: float | timedelta,
    on_timeout: str | OnTimeout | None = None,
    when: Predicate | None = None,
    name: str | None = None,
) -> Callable[[StepFn], StepDef]:
    """Mark a method as a wait: the saga parks durably until signal ``signal`` comes.

    The method is the signal's handler, ``(self, payload, ctx)`` (``(self, ctx)`` when
    the signal has no ``payload`` class): it may record data on the saga, raise
    :class:`~sagaflow.SagaRejected` (a business "no": the saga compensates), or raise
    any other error (a failure, never retried). ``timeout`` (seconds or a timedelta) is
    required: a wait never waits for ever. ``on_timeout`` is ``"compensate"`` (the
    default before the pivot), ``"continue"`` (go on without the signal), or ``"fail"``
    (end FAILED for an operator: the default after the pivot). ``when`` makes the wait
    conditional, like a step's. A parked saga holds no thread, task or memory: it is a
    row with a wake time; :meth:`Orchestrator.signal` delivers.
    """
    decl = WaitDecl(signal, payload, timeout, on_timeout)
    return lambda fn: _declare(fn, name, when, decl)


def timer(
    *,
    after: float | timedelta | Callable[[Any], Any] | None = None,
    at: Callable[[Any], Any] | None = None,
    when: Predicate | None = None,
    name: str | None = None,
) -> Callable[[StepFn], StepDef]:
    """Mark a method ``(self, ctx)`` as a durable timer: the saga parks until the time
    comes (after a restart too), then the method runs and the saga goes on.

    Give ``after`` (seconds, a timedelta, or a callable of the saga returning either:
    counted from when the saga reaches the timer) or ``at`` (a callable of the saga
    returning an aware datetime or a Unix time).
    """
    decl = WaitDecl(None, None, None, None, after, at)
    return lambda fn: _declare(fn, name, when, decl)


@overload
def saga(cls: type[T], /) -> type[T]: ...


@overload
def saga(
    *,
    name: str | None = None,
    deadline: float | None = None,
    compensation_deadline: float | None = None,
    key: str | None = None,
) -> Callable[[type[T]], type[T]]: ...


def saga(
    cls: type[T] | None = None,
    /,
    *,
    name: str | None = None,
    deadline: float | None = None,
    compensation_deadline: float | None = None,
    key: str | None = None,
) -> type[T] | Callable[[type[T]], type[T]]:
    """Make a class a saga: validate its steps and build its spec and state machine.

    A class that is not yet an attrs class is made one with ``attrs.define``. ``name``
    defaults to the class name; ``deadline`` (seconds) bounds the forward steps, after
    which the saga compensates; ``compensation_deadline`` bounds the compensation
    that follows any failure (``None``: no bound beyond each compensation's own
    timeout and retries). ``key`` names the field that holds the saga's business key
    (say ``"subscription_id"``): signals can find the saga by its value.
    """

    def build(cls: type[T]) -> type[T]:
        if not isinstance(cls, type):
            raise SagaDefinitionError(
                repr(cls), ["@saga decorates a class; got " + type(cls).__name__]
            )
        if SPEC_ATTRIBUTE in cls.__dict__:
            raise SagaDefinitionError(cls.__qualname__, ["@saga was applied twice: keep one"])
        made: Any = cls if attrs.has(cls) else attrs.define(cls)
        spec = _build_spec(made, name, deadline, compensation_deadline, key)
        setattr(made, SPEC_ATTRIBUTE, spec)
        return cast("type[T]", made)

    return build if cls is None else build(cls)


def _step_label(d: StepDef) -> str:
    return d.name if isinstance(d.name, str) else callable_name(d.fn)


def _replaced(lost: StepDef | CompensationDef, winner: object) -> str:
    """The problem of a step or compensation that a later method of its name replaced."""
    name = callable_name(lost.fn)
    if isinstance(lost, StepDef) and isinstance(winner, StepDef):
        return (
            f"step {name!r} is defined twice in the class body; the later definition "
            "replaced the earlier one: give each step its own name"
        )
    if isinstance(lost, CompensationDef) and isinstance(winner, CompensationDef):
        first, second = _step_label(lost.step), _step_label(winner.step)
        if first == second:
            return (
                f"compensation {name!r} of step {first!r} is defined twice in the class "
                "body; the later definition replaced the earlier one: keep one"
            )
        return (
            f"the compensations of steps {first!r} and {second!r} are both named {name!r}: "
            f"the later replaced the earlier in the class body, leaving {first!r} with "
            f"none: give each compensation its own name (undo_{first}, undo_{second})"
        )

    def what(d: object) -> str:
        if isinstance(d, CompensationDef):
            return f"compensation {name!r} of step {_step_label(d.step)!r}"
        return f"step {name!r}" if isinstance(d, StepDef) else f"the attribute {name!r}"

    return (
        f"{what(lost)} and {what(winner)} are both named {name!r}: the later replaced "
        "the earlier in the class body: give each its own name"
    )


def _build_spec(
    cls: type,
    name: str | None,
    deadline: object,
    compensation_deadline: object,
    key: object = None,
) -> SagaSpec:
    """The spec of ``cls``, or one :class:`SagaDefinitionError` with every problem."""
    saga_name = name if name is not None else cls.__name__
    problems: list[str] = []
    if not isinstance(saga_name, str) or not saga_name.strip():
        problems.append(f"name must be a non-empty string, got {saga_name!r}")
        saga_name = cls.__name__
    saga_deadline = check_timeout(deadline, "@saga(deadline=...)", problems)
    comp_deadline = check_timeout(
        compensation_deadline, "@saga(compensation_deadline=...)", problems
    )
    defs, comps, robbed = _collect(cls, problems)
    attached = {id(c) for c in comps.values()}
    seen: dict[str, str] = {}  # step name -> the method that took it
    steps = tuple(
        _resolve_step(index, attr, d, attached, robbed, seen, problems)
        for index, (attr, d) in enumerate(defs)
    )
    steps = place_waits(steps, [d.wait for _, d in defs], problems)
    declared: dict[int, tuple[str, Parallel]] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if isinstance(value, Parallel):
                declared.setdefault(id(value), (attr, value))
    steps, groups = resolve_groups(cls, list(declared.values()), defs, steps, problems)
    pivot_index = _check_order(steps, problems)
    _check_key(cls, key, problems)
    if problems:
        raise SagaDefinitionError(saga_name, problems)

    machine, allowed = build_machine(saga_name, steps, groups)
    trapped = check_graph(list(machine.states), allowed)
    if trapped:
        raise SagaDefinitionError(saga_name, [f"internal: {p}" for p in trapped])
    shape = "|".join(
        f"{s.name}:{s.kind.value}:{s.compensation is not None}:{s.when is not None}"
        + ("" if s.wait is None else f":wait:{s.wait.signal}:{s.wait.on_timeout.value}")
        + _group_shape(s, groups)
        for s in steps
    )
    signals: dict[str, tuple[int, ...]] = {}
    for s in steps:
        if s.wait is not None and s.wait.signal is not None:
            signals[s.wait.signal] = (*signals.get(s.wait.signal, ()), s.index)
    limits = [
        limit
        for s in steps
        for limit in (s.timeout, s.compensation_timeout if s.compensation is not None else None)
        if limit is not None
    ]
    return SagaSpec(
        name=saga_name,
        cls=cls,
        steps=steps,
        forward=tuple(s.fn for s in steps),
        compensations=tuple(s.compensation for s in steps),
        deadline=saga_deadline,
        compensation_deadline=comp_deadline,
        pivot_index=pivot_index,
        is_async=any(s.is_async or s.compensation_is_async for s in steps),
        fingerprint=hashlib.sha256(f"{saga_name}/{shape}".encode()).hexdigest()[:16],
        shortest_limit=min(limits, default=None),
        machine=machine,
        transitions=allowed,
        index={s.name: s.index for s in steps},
        key=key if isinstance(key, str) else None,
        signals=signals,
        groups=groups,
    )


def _group_shape(s: StepSpec, groups: tuple[GroupSpec, ...]) -> str:
    """What the fingerprint says of a member's group or a fan-out ("" for neither, so
    the fingerprints of sagas without them stay as they were)."""
    shape = ""
    if s.group is not None:
        g = groups[s.group]
        shape += f":group:{g.name}:{g.limit}:{g.compensation.value}"
    if s.each is not None:
        e = s.each
        key = "-" if e.key is None else callable_name(e.key)
        shape += f":each:{e.field}:{key}:{e.limit}:{e.compensation.value}"
    return shape


def _collect(
    cls: type, problems: list[str]
) -> tuple[list[tuple[str, StepDef]], dict[str, CompensationDef], set[int]]:
    """The class's steps (by attribute, in definition order), its compensations, and the
    ids of steps whose compensation a later method of the same name replaced."""
    # Walk the whole MRO so that a saga may inherit steps; the subclass wins.
    found: dict[str, StepDef] = {}
    comps: dict[str, CompensationDef] = {}
    position: dict[str, int] = {}  # an overridden step keeps its base class's place
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if isinstance(value, StepDef):
                found[attr] = value
                position.setdefault(attr, value.order)
                comps.pop(attr, None)
            elif isinstance(value, CompensationDef):
                comps[attr] = value
                found.pop(attr, None)
    with _lock:
        made = _made_for.pop((cls.__module__, cls.__qualname__), [])
    present = {id(d) for d in found.values()} | {id(c) for c in comps.values()}
    # Those steps' problem is the clash, not a missing compensation.
    robbed: set[int] = set()
    for lost in made:
        if id(lost) not in present:
            if isinstance(lost, CompensationDef):
                robbed.add(id(lost.step))
            problems.append(_replaced(lost, vars(cls).get(callable_name(lost.fn))))

    defs = sorted(found.items(), key=lambda item: position[item[0]])
    if not defs:
        problems.append(
            "it has no steps: decorate at least one method 'def name(self, ctx)' with @step"
        )
    step_ids = {id(d) for _, d in defs}
    for attr, comp in comps.items():
        if id(comp.step) not in step_ids:
            problems.append(
                f"compensation {attr!r} is attached to {_step_label(comp.step)!r}, which is "
                "not a step of this saga: attach it with @<step>.compensate to one of its "
                "own steps"
            )
    return defs, comps, robbed


_NOTHING_TO_UNDO = {
    "readonly": "it changes nothing, so there is nothing to undo",
    "pivot": "it is the point of no return",
    "retriable": "it is retried until it succeeds, never undone",
}


def _resolve_step(
    index: int,
    attr: str,
    d: StepDef,
    attached: set[int],
    robbed: set[int],
    seen: dict[str, str],
    problems: list[str],
) -> StepSpec:
    """The :class:`StepSpec` of the step ``d`` (method ``attr``); its problems noted."""
    step_name = _step_name(attr, d, seen, problems)
    if d.wait is not None:
        return resolve_wait(index, step_name, d.fn, d.when, d.wait, problems)
    what = f"step {step_name!r}"
    item = d.each is not None and d.each.field is not None  # a fan-out: (self, item, ctx)
    fn_ok = check_callable(d.fn, what, problems, item)

    flags = {"readonly": d.readonly, "pivot": d.pivot, "retriable": d.retriable}
    for flag, value in flags.items():
        if not isinstance(value, bool):
            problems.append(f"{what}: {flag} must be True or False, got {value!r}")
    chosen = [flag for flag, value in flags.items() if value is True]
    own = [c for c in d.compensations if id(c) in attached]
    if len(own) > 1:
        names = ", ".join(repr(callable_name(c.fn)) for c in own)
        problems.append(f"{what} has {len(own)} compensations ({names}): keep exactly one")
    if len(chosen) > 1:
        problems.append(f"{what} is marked {' and '.join(chosen)}: a step has exactly one kind")
    if own and chosen:
        problems.append(
            f"{what} is {chosen[0]} and has a compensation, but {_NOTHING_TO_UNDO[chosen[0]]}: "
            f"remove {chosen[0]}=True or the compensation"
        )
    if own or not chosen:
        kind = StepKind.COMPENSATABLE
        if not own and id(d) not in robbed:
            problems.append(
                f"{what} has no compensation and no kind: add @{attr}.compensate, or "
                "mark it readonly=True, pivot=True or retriable=True"
            )
    else:
        kind = StepKind(chosen[0])

    timeout = DEFAULT_TIMEOUT if d.timeout is UNSET else check_timeout(d.timeout, what, problems)
    default_retry = RETRIABLE_RETRY if kind is StepKind.RETRIABLE else NO_RETRY
    retry = default_retry if d.retry is UNSET else check_retry(d.retry, what, problems)
    if d.when is not None and not callable(d.when):
        problems.append(
            f"{what}: when must be a predicate of the saga instance "
            f"(a callable taking the saga), got {d.when!r}"
        )

    comp_fn = comp_name = None
    comp_timeout: float | None = DEFAULT_TIMEOUT
    comp_retry: Retry | None = COMPENSATION_RETRY
    if own:
        c = own[0]
        comp_name = callable_name(c.fn)
        cwhat = f"compensation {comp_name!r} of step {step_name!r}"
        if check_callable(c.fn, cwhat, problems, item):
            comp_fn = c.fn
        if c.timeout is not UNSET:
            comp_timeout = check_timeout(c.timeout, cwhat, problems)
        if c.retry is not UNSET:
            comp_retry = check_retry(c.retry, cwhat, problems)

    return StepSpec(
        index=index,
        name=step_name,
        kind=kind,
        fn=d.fn,
        is_async=fn_ok and inspect.iscoroutinefunction(d.fn),
        timeout=timeout,
        retry=retry or NO_RETRY,
        when=d.when if callable(d.when) else None,
        compensation=comp_fn,
        compensation_name=comp_name,
        compensation_is_async=comp_fn is not None and inspect.iscoroutinefunction(comp_fn),
        compensation_timeout=comp_timeout,
        compensation_retry=comp_retry or COMPENSATION_RETRY,
    )


def _check_key(cls: type, key: object, problems: list[str]) -> None:
    if key is None:
        return
    names = [f.name for f in attrs.fields(cls)] if attrs.has(cls) else []
    if not isinstance(key, str) or key not in names:
        problems.append(
            f"@saga(key={key!r}) must name one of the saga's fields ({', '.join(names)}): "
            "the field whose value signals find the saga by"
        )


def _step_name(attr: str, d: StepDef, seen: dict[str, str], problems: list[str]) -> str:
    """The step's name (``name=`` or the method's), checked: an identifier, not a
    state's name, not another step's."""
    step_name = d.name if d.name is not None else attr
    if not isinstance(step_name, str) or not step_name.isidentifier():
        problems.append(f"step {attr!r}: name must be a Python identifier, got {step_name!r}")
        step_name = attr
    elif is_reserved(step_name):
        problems.append(
            f"step {step_name!r}: the name is reserved for the state machine "
            f"({', '.join(sorted(RESERVED_NAMES))}, {COMPENSATING_PREFIX}*): rename the step"
        )
    if step_name in seen:
        problems.append(
            f"step {step_name!r}: duplicate step name (methods {seen[step_name]!r} and "
            f"{attr!r}): give each step a unique name"
        )
    seen[step_name] = attr
    return step_name


def _check_order(steps: tuple[StepSpec, ...], problems: list[str]) -> int | None:
    """Compensatable and readonly steps, then at most one pivot, then retriable steps."""
    pivot: int | None = None
    retriable_seen = False
    for s in steps:
        if s.kind is StepKind.PIVOT:
            if pivot is not None:
                problems.append(
                    f"step {s.name!r} is a second pivot after {steps[pivot].name!r}: "
                    "a saga has at most one point of no return"
                )
            else:
                pivot = s.index
        elif s.kind in (StepKind.COMPENSATABLE, StepKind.READONLY) and (
            pivot is not None or retriable_seen
        ) and s.group is None:  # a group's members: resolve_groups says what is wrong
            after = steps[pivot].name if pivot is not None else "a retriable step"
            problems.append(
                f"step {s.name!r} is {s.kind.value} but comes after {after!r}: "
                "compensatable and readonly steps go before the pivot; move it up or "
                "make it retriable=True"
            )
        elif s.kind is StepKind.RETRIABLE:
            first = pivot is None and not retriable_seen
            undoable = [p.name for p in steps[: s.index] if p.kind is StepKind.COMPENSATABLE]
            if first and undoable:
                problems.append(
                    f"step {s.name!r} is retriable but follows compensatable steps "
                    f"({', '.join(undoable)}) with no pivot between: mark the last step "
                    "before it pivot=True"
                )
            retriable_seen = True
    return pivot

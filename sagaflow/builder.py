"""Sagas composed at run time: :class:`SagaBuilder` turns a list of steps decided from data
(a configurable onboarding, a plugin list) into a saga class.

The builder writes no spec of its own: :meth:`SagaBuilder.build` makes a subclass of the
data class whose attributes are the given functions passed through the very decorators
(:func:`~sagaflow.step`, ``.compensate``, :func:`~sagaflow.wait`, :func:`~sagaflow.timer`,
:func:`~sagaflow.saga`). There is one path to a :class:`~sagaflow.SagaSpec`, so the same
validation, state machine, diagrams and fingerprint follow, and everything that takes a
saga class (``Orchestrator(sagas=[...])``, recovery, signals, the testing toolkit) takes
the built one. The fingerprint depends on the saga's name and its steps' names, kinds and
options, never on the functions' identity: the same configuration built in another
process is the same definition, and that process recovers the sagas this one started.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Generic, Self, TypeVar

import attrs

from ._waitdefs import seconds
from .definition import UNSET, CompensationDef, Parallel, StepDef, disown, saga, step, timer, wait
from .errors import SagaDefinitionError
from .policy import Retry
from .spec import OnTimeout, Predicate, callable_name, is_saga

__all__ = ["GroupBuilder", "SagaBuilder"]

T = TypeVar("T")


@attrs.frozen
class _Entry:
    """One ``.step``/``.wait``/``.timer`` call, as given: checked by :meth:`SagaBuilder.build`."""

    what: str  # "step", "wait", "timer" or "group"
    fn: Any
    name: Any
    #: the keyword arguments for the decorator, as given
    options: dict[str, Any]
    compensate: Any = None
    compensate_options: dict[str, Any] = attrs.field(factory=dict)
    #: the group a member belongs to (its entry: ``what == "group"``)
    group: Any = None
    #: a fan-out's functions take (saga, item, ctx)
    fan_out: bool = False


class GroupBuilder:
    """A parallel group of a :class:`SagaBuilder` (:meth:`SagaBuilder.group`): its
    :meth:`step` adds a member, with :meth:`SagaBuilder.step`'s keywords (not the fan-out
    ones: a member is one call)."""

    def __init__(self, builder: SagaBuilder[Any], entry: _Entry) -> None:
        self._builder = builder
        self._entry = entry

    def step(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        compensate: Callable[..., Any] | None = None,
        readonly: bool = False,
        pivot: bool = False,
        retriable: bool = False,
        retry: Retry | Any = UNSET,
        timeout: float | timedelta | Any | None = UNSET,
        when: Predicate | None = None,
        compensate_retry: Retry | Any = UNSET,
        compensate_timeout: float | timedelta | Any | None = UNSET,
    ) -> Self:
        """Add a member ``fn(saga, ctx)``; the options are :meth:`SagaBuilder.step`'s.
        Members are added one after another (another step between them is refused)."""
        options = {
            "timeout": seconds(timeout), "retry": retry, "when": when,
            "readonly": readonly, "pivot": pivot, "retriable": retriable,
        }
        comp_options = {"timeout": seconds(compensate_timeout), "retry": compensate_retry}
        self._builder._add(
            _Entry("step", fn, name, options, compensate, comp_options, group=self._entry)
        )
        return self


def _placeholder(saga: Any, ctx: Any) -> None:  # pragma: no cover - never run
    """Stands in for a refused function while the rest of a definition is checked."""


def _placeholder_payload(saga: Any, payload: Any, ctx: Any) -> None:  # pragma: no cover
    """:func:`_placeholder` for a wait whose signal carries a payload."""


class SagaBuilder(Generic[T]):
    """Compose a saga from data; :meth:`build` gives the saga class.

    ::

        builder = SagaBuilder("onboarding", data=Onboarding, key="user")
        for plugin in plugins:
            builder.step(plugin.apply, name=plugin.name, compensate=plugin.revert)
        builder.step(activate, pivot=True)
        Onboarding = builder.build()
        orchestrator = Orchestrator(store, sagas=[Onboarding])

    ``data`` is an attrs class holding the saga's fields (the built class is a subclass of
    it, so ``Built(user="u-1")`` makes an instance); ``name``, ``deadline``,
    ``compensation_deadline`` and ``key`` are :func:`~sagaflow.saga`'s. The built class
    belongs to ``module`` (default: the module that makes the builder), where the command
    line's ``--import`` finds it when that module builds it at import time. Each function takes
    ``(saga, ctx)`` as a method takes ``(self, ctx)`` (a wait with a ``payload`` class:
    ``(saga, payload, ctx)``); a bound method or a callable object is called the same way.
    Every problem is reported together by :meth:`build`, in one
    :class:`~sagaflow.SagaDefinitionError`.

    Parallel groups and fan-outs::

        book = builder.group("book", limit=3, compensate="concurrent")
        book.step(reserve_stock, compensate=release_stock)   # members, one after another
        book.step(charge, compensate=refund)
        builder.step(pick, each="lines", key=sku_of, limit=10, compensate=unpick)

    :meth:`group` gives the group (a :class:`GroupBuilder`) whose ``.step`` adds members,
    as ``book = parallel(...)`` and ``@book.step`` do in a class body; ``each=`` makes a
    step a fan-out (``fn(saga, item, ctx)``, its compensation too), and since
    ``compensate=`` is the builder's compensation function, the fan-out's undo order
    is ``compensate_order=`` (``@step``'s ``compensate=``).
    """

    def __init__(
        self,
        name: str,
        *,
        data: type[T],
        deadline: float | None = None,
        compensation_deadline: float | None = None,
        key: str | None = None,
        module: str | None = None,
    ) -> None:
        self.name = name
        self.data = data
        self.deadline = deadline
        self.compensation_deadline = compensation_deadline
        self.key = key
        #: the module the built class says it belongs to: the caller's, by default
        self.module = module if module is not None else _caller_module(data)
        self._entries: list[_Entry] = []
        self._built: type[T] | None = None

    def step(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        compensate: Callable[..., Any] | None = None,
        readonly: bool = False,
        pivot: bool = False,
        retriable: bool = False,
        retry: Retry | Any = UNSET,
        timeout: float | timedelta | Any | None = UNSET,
        when: Predicate | None = None,
        compensate_retry: Retry | Any = UNSET,
        compensate_timeout: float | timedelta | Any | None = UNSET,
        each: str | None = None,
        key: Callable[[Any], Any] | None = None,
        limit: int | None = None,
        compensate_order: str = "concurrent",
    ) -> Self:
        """Add a forward step ``fn(saga, ctx)`` (named ``name``, default the function's
        name). Its kind: ``compensate=undo`` (``undo(saga, ctx)`` undoes it), or one of
        ``readonly``, ``pivot``, ``retriable``. ``retry``, ``timeout`` and ``when`` are
        :func:`~sagaflow.step`'s; ``compensate_retry`` and ``compensate_timeout`` the
        compensation's. ``each``, ``key``, ``limit`` and ``compensate_order`` make it a
        fan-out (``@step``'s ``each``, ``key``, ``limit`` and ``compensate``): ``fn(saga,
        item, ctx)`` and ``undo(saga, item, ctx)`` are called once per item."""
        options = {
            "timeout": seconds(timeout), "retry": retry, "when": when,
            "readonly": readonly, "pivot": pivot, "retriable": retriable,
        }
        fan_out = {"each": each, "key": key, "limit": limit, "compensate": compensate_order}
        if each is not None or key is not None or limit is not None or (
            compensate_order != "concurrent"
        ):
            options.update(fan_out)
        comp_options = {"timeout": seconds(compensate_timeout), "retry": compensate_retry}
        return self._add(
            _Entry("step", fn, name, options, compensate, comp_options, fan_out=each is not None)
        )

    def group(
        self, name: str, *, limit: int | None = None, compensate: str = "concurrent"
    ) -> GroupBuilder:
        """A parallel group called ``name`` (its state's name): add its members, one after
        another, with the returned group's ``.step``; ``limit`` and ``compensate`` are
        :func:`~sagaflow.parallel`'s."""
        entry = _Entry("group", None, name, {"limit": limit, "compensate": compensate})
        self._add(entry)
        return GroupBuilder(self, entry)

    def wait(
        self,
        signal: str,
        fn: Callable[..., Any],
        *,
        payload: type | None = None,
        timeout: float | timedelta,
        on_timeout: str | OnTimeout | None = None,
        when: Predicate | None = None,
        name: str | None = None,
    ) -> Self:
        """Add a wait for signal ``signal``, handled by ``fn(saga, payload, ctx)``
        (``fn(saga, ctx)`` without a ``payload`` class); the options are
        :func:`~sagaflow.wait`'s."""
        options = {
            "payload": payload, "timeout": timeout, "on_timeout": on_timeout, "when": when,
        }
        return self._add(_Entry("wait", fn, name, {"signal": signal, **options}))

    def timer(
        self,
        fn: Callable[..., Any],
        *,
        after: float | timedelta | Callable[[Any], Any] | None = None,
        at: Callable[[Any], Any] | None = None,
        when: Predicate | None = None,
        name: str | None = None,
    ) -> Self:
        """Add a durable timer: the saga parks until the time comes, then ``fn(saga,
        ctx)`` runs; ``after``, ``at`` and ``when`` are :func:`~sagaflow.timer`'s."""
        return self._add(_Entry("timer", fn, name, {"after": after, "at": at, "when": when}))

    def _add(self, entry: _Entry) -> Self:
        if self._built is not None:
            raise SagaDefinitionError(
                str(self.name),
                [
                    f"this builder was already built into {self._built.__qualname__}, "
                    f"which a {entry.what} added now would not change: make a new "
                    "SagaBuilder (with every step) for a different saga"
                ],
            )
        self._entries.append(entry)
        return self

    def build(self) -> type[T]:
        """The saga class; built once (calling this again gives the same class).

        Raises :class:`~sagaflow.SagaDefinitionError` listing every problem, each with
        its fix: the builder's (a function that is none, a duplicate name, data that is
        no attrs class, no steps) and the definition's (kinds, order, pivot, retries,
        timeouts, waits), as :func:`~sagaflow.saga` reports them for a class.
        """
        if self._built is not None:
            return self._built
        problems: list[str] = []
        data = self._check_data(problems)
        if not self._entries:
            problems.append(
                "the builder has no steps: add at least one with "
                ".step(fn, compensate=undo) (or readonly=, pivot=, retriable=True)"
            )
        cls, made = self._assemble(data, problems)
        disown(*made)
        try:
            saga(
                name=self.name,
                deadline=self.deadline,
                compensation_deadline=self.compensation_deadline,
                key=self.key,
            )(cls)
        except SagaDefinitionError as exc:
            problems.extend(exc.problems)
        if problems:
            raise SagaDefinitionError(str(self.name), problems)
        self._built = cls
        return cls

    # -- checks --------------------------------------------------------------------------

    def _check_data(self, problems: list[str]) -> type:
        data: Any = self.data
        if not (isinstance(data, type) and attrs.has(data)):
            problems.append(
                f"data must be an attrs class holding the saga's fields, got {data!r}: "
                "declare one with @attrs.define (fields with defaults, if any)"
            )
            return _NoData
        if is_saga(data) or any(
            isinstance(v, (StepDef, CompensationDef))
            for klass in data.__mro__
            for v in vars(klass).values()
        ):
            problems.append(
                f"data {data.__qualname__} already has steps (it is a saga class): give "
                "the plain attrs class of the saga's fields, and every step to the builder"
            )
            return _NoData
        return data

    def _assemble(self, data: type, problems: list[str]) -> tuple[type, list[Any]]:
        """The class to give ``@saga``: each entry's function through its decorator.
        What the builder refuses is noted and stood in for (a placeholder function, a
        spare name), so that ``@saga`` still reports every other problem."""
        taken = {f.name for f in attrs.fields(data)} if attrs.has(data) else set()
        ns: dict[str, Any] = {}
        made: list[Any] = []
        forward_only = False  # a pivot or retriable step came before
        groups: dict[int, Parallel] = {}  # id(group entry) -> its parallel()
        for number, e in enumerate(self._entries, 1):
            if e.what == "group":
                self._group(number, e, ns, data, groups, problems)
                continue
            payload = e.what == "wait" and e.options["payload"] is not None
            shape = "(saga, item, ctx)" if e.fan_out else "(saga, payload, ctx)"
            fn = _callable(e.fn, f"{e.what} #{number}", payload or e.fan_out, problems, shape)
            name = self._name(number, e, ns, data, taken, problems, callable(e.fn))
            asked = e.name if e.name is not None else getattr(e.fn, "__name__", None)
            label = f"{e.what} {name!r}" if name == asked else f"{e.what} #{number}"
            options = dict(e.options)
            if e.what == "wait":
                d = wait(options.pop("signal"), **options)(fn)
            elif e.what == "timer":
                d = timer(**options)(fn)
            else:
                kinds = [k for k in ("readonly", "pivot", "retriable") if options[k] is True]
                if e.compensate is None and not kinds:
                    problems.append(
                        f"{label} has no compensation and no kind: pass compensate="
                        "<a function (saga, ctx) that undoes it>, or mark it readonly=True, "
                        "pivot=True or retriable=True"
                    )
                    options["retriable" if forward_only else "readonly"] = True
                forward_only = forward_only or bool({"pivot", "retriable"} & set(kinds))
                member = groups.get(id(e.group)) if e.group is not None else None
                d = member.step(**options)(fn) if member is not None else step(**options)(fn)
                if e.compensate is not None:
                    comp = _callable(
                        e.compensate, f"the compensation of {label}", e.fan_out, problems,
                        "(saga, item, ctx)",
                    )
                    c = d.compensate(**e.compensate_options)(comp)
                    ns[_spare(f"{name}__compensate", ns, data)] = c
                    made.append(c)
            ns[name] = d
            made.append(d)
        cls_name = re.sub(r"\W", "_", str(self.name))
        cls_name = cls_name if cls_name.isidentifier() else f"_{cls_name}"
        ns.update(
            __module__=self.module,
            __qualname__=cls_name,
            __doc__=f"The saga {self.name!r}, built by sagaflow.SagaBuilder.",
        )
        return type(cls_name, (data,), ns), made

    def _group(
        self,
        number: int,
        e: _Entry,
        ns: dict[str, Any],
        data: type,
        groups: dict[int, Parallel],
        problems: list[str],
    ) -> None:
        """The group's ``parallel()``, put in the class body under its name (checked as a
        step's: an identifier, not taken)."""
        name = e.name
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("__"):
            problems.append(
                f"group #{number}: the name {name!r} is no group name (a Python identifier, "
                "not starting with '__'): pass .group('a_name')"
            )
            name = _spare(f"group{number}", ns, data)
        elif name in ns or hasattr(data, name):
            held = (
                "an earlier step or group" if name in ns
                else f"the data class {data.__qualname__}"
            )
            problems.append(
                f"group #{number}: the name {name!r} is already taken by {held}: give the "
                "group its own name"
            )
            name = _spare(name, ns, data)
        p = Parallel(**e.options)
        ns[name] = p
        groups[id(e)] = p

    def _name(
        self,
        number: int,
        e: _Entry,
        ns: dict[str, Any],
        data: type,
        taken: set[str],
        problems: list[str],
        fn_ok: bool = True,
    ) -> str:
        """The entry's name (``name=`` or the function's), checked: an identifier, not
        taken by another step or by the data class; a spare one stands in if not."""
        default = getattr(e.fn, "__name__", None)
        name = e.name if e.name is not None else default
        what = f"{e.what} #{number}"
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("__"):
            if name is None and not fn_ok:  # no function, so no name: said already
                return _spare(f"{e.what}{number}", ns, data)
            given = "name=" if e.name is not None else "the function's name"
            problems.append(
                f"{what}: {given} {name!r} is no step name (a Python identifier, not "
                f"starting with '__'): pass name='a_name'"
            )
            return _spare(f"{e.what}{number}", ns, data)
        if name in ns:
            problems.append(
                f"{what}: the name {name!r} is already taken by an earlier step: give each "
                "step its own name with name="
            )
            return _spare(name, ns, data)
        if name in taken or hasattr(data, name):
            held = "field" if name in taken else "attribute"
            problems.append(
                f"{what}: the name {name!r} is a {held} of the data class "
                f"{data.__qualname__}: name the step otherwise with name="
            )
            return _spare(name, ns, data)
        return name


def _caller_module(data: object) -> str:
    """The name of the module that called :class:`SagaBuilder` (as ``namedtuple`` does)."""
    try:
        return str(sys._getframe(2).f_globals["__name__"])
    except (AttributeError, KeyError, ValueError):  # no frames here: the data's module
        return str(getattr(data, "__module__", __name__))


@attrs.define
class _NoData:
    """Stands in for a refused data class while the steps are checked."""


def _spare(name: str, ns: dict[str, Any], data: type) -> str:
    """``name`` or ``name_2``, ``name_3``...: one that neither the class body nor the data
    class holds."""
    found, n = name, 1
    while found in ns or hasattr(data, found):
        n += 1
        found = f"{name}_{n}"
    return found


def _callable(
    fn: object,
    what: str,
    payload: bool,
    problems: list[str],
    three: str = "(saga, payload, ctx)",
) -> Any:
    """``fn`` as a function the decorators take (``(saga, ctx)``, or ``(saga, payload,
    ctx)``: ``payload``, shown as ``three``, a fan-out's ``(saga, item, ctx)`` too): a
    function as it is, a bound method or callable object wrapped in one; a placeholder,
    with the problem noted, if it is no such callable."""
    shape = three if payload else "(saga, ctx)"
    stand_in = _placeholder_payload if payload else _placeholder
    if not callable(fn):
        problems.append(
            f"{what} is a {type(fn).__name__} ({fn!r}), not a function: pass a function "
            f"def name{shape} (or async def), a bound method or a callable object"
        )
        return stand_in
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (a builtin): calls will say
        signature = None
    if signature is not None:
        try:
            signature.bind(*([None] * (3 if payload else 2)))
        except TypeError:
            problems.append(f"{what} must take {shape}; its signature is {signature}")
            return stand_in
    if inspect.isfunction(fn):
        return fn
    return _wrap(fn, payload)


def _wrap(fn: Any, payload: bool) -> Any:
    """A plain function calling ``fn``, as the decorators need one (async if ``fn`` is)."""
    call = fn if inspect.isroutine(fn) else type(fn).__call__
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)
    wrapper: Any
    if payload and is_async:

        async def wrapper(saga: Any, signal: Any, ctx: Any) -> Any:
            return await fn(saga, signal, ctx)

    elif payload:

        def wrapper(saga: Any, signal: Any, ctx: Any) -> Any:
            return fn(saga, signal, ctx)

    elif is_async:

        async def wrapper(saga: Any, ctx: Any) -> Any:
            return await fn(saga, ctx)

    else:

        def wrapper(saga: Any, ctx: Any) -> Any:
            return fn(saga, ctx)

    wrapper.__name__ = wrapper.__qualname__ = callable_name(fn)
    wrapper.__wrapped__ = fn
    return wrapper

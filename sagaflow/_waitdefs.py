"""Waits and timers at definition: what ``@wait`` and ``@timer`` record
(:class:`WaitDecl`), and how ``@saga`` checks and places them (:func:`resolve_wait`,
:func:`place_waits`) into the :class:`~sagaflow.spec.WaitSpec` of a step."""

from __future__ import annotations

import inspect
from datetime import timedelta
from typing import Any

import attrs

from ._checks import check_callable, check_timeout
from .policy import COMPENSATION_RETRY, NO_RETRY
from .spec import OnTimeout, StepKind, StepSpec, WaitSpec

__all__ = ["WaitDecl", "place_waits", "resolve_wait"]


@attrs.frozen
class WaitDecl:
    """What ``@wait`` or ``@timer`` was given, as given: ``@saga`` checks it."""

    signal: Any
    payload: Any
    timeout: Any
    on_timeout: Any
    after: Any = None
    at: Any = None


_ON_TIMEOUT_WORDS = ", ".join(repr(o.value) for o in OnTimeout)


def seconds(value: object) -> object:
    """A timedelta as seconds; anything else as given (checked by the caller)."""
    return value.total_seconds() if isinstance(value, timedelta) else value


def resolve_wait(
    index: int,
    step_name: str,
    fn: Any,
    when: object,
    decl: WaitDecl,
    problems: list[str],
) -> StepSpec:
    """The :class:`StepSpec` of a wait or timer; its kind and default ``on_timeout``
    depend on where it stands (:func:`place_waits`)."""
    timer_ = decl.signal is None
    what = f"{'timer' if timer_ else 'wait'} {step_name!r}"
    takes_payload = not timer_ and decl.payload is not None
    fn_ok = check_handler(fn, what, takes_payload, problems)
    if not timer_ and (not isinstance(decl.signal, str) or not decl.signal.strip()):
        problems.append(
            f"{what}: the signal's name must be a non-empty string, got {decl.signal!r}"
        )
    if decl.payload is not None and not (
        isinstance(decl.payload, type) and (attrs.has(decl.payload) or is_dataclass(decl.payload))
    ):
        problems.append(
            f"{what}: payload must be an attrs class (or a dataclass) that signals carry, "
            f"got {decl.payload!r}: declare one with @attrs.frozen"
        )
    timeout: float | None = None
    on_timeout: OnTimeout | None = None
    if not timer_:
        if decl.timeout is None:
            problems.append(
                f"{what} has no timeout, and a wait never waits for ever: give "
                "timeout=timedelta(days=3) (or seconds) and, if running out of time is not a "
                "reason to compensate, on_timeout='continue'"
            )
        else:
            timeout = check_timeout(seconds(decl.timeout), what, problems)
        if decl.on_timeout is not None:
            try:
                on_timeout = OnTimeout(getattr(decl.on_timeout, "value", decl.on_timeout))
            except ValueError:
                problems.append(
                    f"{what}: on_timeout must be one of {_ON_TIMEOUT_WORDS}, "
                    f"got {decl.on_timeout!r}"
                )
    after: Any = None
    if timer_:
        given = [k for k in ("after", "at") if getattr(decl, k) is not None]
        if len(given) != 1:
            problems.append(
                f"{what}: give exactly one of after= (seconds, a timedelta, or a callable of "
                "the saga) and at= (a callable of the saga giving an aware datetime or a "
                f"Unix time); got {' and '.join(given) or 'neither'}"
            )
        after = seconds(decl.after)
        if after is not None and not callable(after):
            after = check_timeout(after, f"{what} after=", problems)
        if decl.at is not None and not callable(decl.at):
            problems.append(
                f"{what}: at= must be a callable of the saga (lambda saga: saga.renews_at), "
                f"got {decl.at!r}: a fixed time would be the same for every saga"
            )
    if when is not None and not callable(when):
        problems.append(
            f"{what}: when must be a predicate of the saga instance "
            f"(a callable taking the saga), got {when!r}"
        )
    wait_spec = WaitSpec(
        signal=decl.signal if isinstance(decl.signal, str) else None,
        payload=decl.payload if isinstance(decl.payload, type) else None,
        timeout=timeout,
        # COMPENSATE stands in until place_waits knows which side of the pivot it is on
        on_timeout=on_timeout or OnTimeout.COMPENSATE,
        after=after,
        at=decl.at if callable(decl.at) else None,
    )
    return StepSpec(
        index=index,
        name=step_name,
        kind=StepKind.READONLY,
        fn=payload_handler(fn) if takes_payload and fn_ok else fn,
        is_async=fn_ok and inspect.iscoroutinefunction(fn),
        timeout=None,
        retry=NO_RETRY,
        when=when if callable(when) else None,
        compensation=None,
        compensation_name=None,
        compensation_is_async=False,
        compensation_timeout=None,
        compensation_retry=COMPENSATION_RETRY,
        wait=wait_spec,
    )


def is_dataclass(cls: type) -> bool:
    return hasattr(cls, "__dataclass_fields__")


def payload_handler(fn: Any) -> Any:
    """``fn(self, payload, ctx)`` as a step's ``(self, ctx)``: the driver puts the
    delivered payload on ``ctx.signal``."""
    if inspect.iscoroutinefunction(fn):

        async def ahandler(data: Any, ctx: Any) -> Any:
            return await fn(data, ctx.signal, ctx)

        ahandler.__name__ = fn.__name__
        ahandler.__qualname__ = fn.__qualname__
        return ahandler

    def handler(data: Any, ctx: Any) -> Any:
        return fn(data, ctx.signal, ctx)

    handler.__name__ = fn.__name__
    handler.__qualname__ = fn.__qualname__
    return handler


def check_handler(fn: object, what: str, takes_payload: bool, problems: list[str]) -> bool:
    """A wait's handler takes ``(self, payload, ctx)``; a timer's ``(self, ctx)``."""
    if not takes_payload:
        return check_callable(fn, what, problems)
    if not inspect.isfunction(fn):
        problems.append(
            f"{what} is a {type(fn).__name__}, not a function: decorate a plain method "
            "'def name(self, payload, ctx)' (or 'async def')"
        )
        return False
    code = fn.__code__
    required = code.co_argcount - len(fn.__defaults__ or ())
    if not (code.co_argcount >= 3 or code.co_flags & inspect.CO_VARARGS) or required > 3:
        problems.append(
            f"{what} must take (self, payload, ctx): its signal carries a payload; its "
            f"signature is {inspect.signature(fn)}"
        )
        return False
    return True


def place_waits(
    steps: tuple[StepSpec, ...], decls: list[WaitDecl | None], problems: list[str]
) -> tuple[StepSpec, ...]:
    """Give each wait its kind and default ``on_timeout`` from where it stands: before
    the pivot a wait is readonly (nothing to undo) and running out of time compensates;
    after the pivot (or a retriable step) it is retriable and running out of time fails
    the saga for an operator, since nothing can be undone there."""
    out: list[StepSpec] = []
    forward_only = False
    for s in steps:
        if s.wait is None:
            if s.kind in (StepKind.PIVOT, StepKind.RETRIABLE):
                forward_only = True
            out.append(s)
            continue
        decl = decls[s.index]
        # a timer has no on_timeout to give (it never times out): after the pivot it is
        # defaulted like a wait's, or it would stand as 'compensate' and be refused
        defaulted = decl is not None and decl.on_timeout is None
        if not forward_only:
            out.append(s)
            continue
        wait_spec = s.wait
        if defaulted:
            wait_spec = attrs.evolve(wait_spec, on_timeout=OnTimeout.FAIL)
        elif wait_spec.on_timeout is OnTimeout.COMPENSATE:
            problems.append(
                f"wait {s.name!r} comes after the point of no return, where nothing can be "
                "undone, but its on_timeout is 'compensate': use on_timeout='continue' or "
                "'fail' (an operator acts), or move the wait before the pivot"
            )
        out.append(attrs.evolve(s, kind=StepKind.RETRIABLE, wait=wait_spec))
    return tuple(out)

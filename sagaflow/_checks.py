"""The checks ``@saga`` runs on what step, compensation and wait decorators were given:
each appends what is wrong, with its fix, to ``problems`` (reported together)."""

from __future__ import annotations

import inspect
import math

from .policy import Retry

__all__ = ["check_callable", "check_retry", "check_timeout"]


def check_timeout(value: object, what: str, problems: list[str]) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        problems.append(f"{what}: timeout must be a number of seconds > 0 or None, got {value!r}")
        return None
    return float(value)


def check_retry(value: object, what: str, problems: list[str]) -> Retry | None:
    if isinstance(value, Retry):
        return value
    hint = f"retry=Retry(attempts={value})" if isinstance(value, int) else "retry=Retry(...)"
    problems.append(f"{what}: retry must be a sagaflow.Retry, got {value!r}: use {hint}")
    return None


def check_callable(fn: object, what: str, problems: list[str], item: bool = False) -> bool:
    """A step's function takes ``(self, ctx)``; a fan-out's (``item``) ``(self, item, ctx)``."""
    shape = "(self, item, ctx)" if item else "(self, ctx)"
    if not inspect.isfunction(fn):
        kind = type(fn).__name__
        problems.append(
            f"{what} is a {kind}, not a function: decorate a plain method "
            f"'def name{shape}' (or 'async def')"
        )
        return False
    # Read the code object rather than inspect.signature: this runs for every method of
    # every saga class at import time, and the code object answers in a fraction of it.
    code = fn.__code__
    positional = code.co_argcount
    required = positional - len(fn.__defaults__ or ())
    kw_required = code.co_kwonlyargcount - len(fn.__kwdefaults__ or {})
    arity = 3 if item else 2
    takes = positional >= arity or bool(code.co_flags & inspect.CO_VARARGS)
    if not takes or required > arity or kw_required > 0:
        problems.append(f"{what} must take {shape}; its signature is {inspect.signature(fn)}")
        return False
    return True

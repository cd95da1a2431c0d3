"""A fast shallow copy of a saga instance (``copy.copy`` costs several microseconds)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["shallow_copy"]

_copiers: dict[type, Callable[[Any], Any]] = {}
_UNSET = object()


def _make_copier(cls: type) -> Callable[[Any], Any]:
    if not attrs.has(cls) or hasattr(cls, "__copy__") or "__dict__" in dir(cls):
        return copy.copy
    names = tuple(a.name for a in attrs.fields(cls))
    new = object.__new__
    put = object.__setattr__

    def copier(obj: Any) -> Any:
        twin = new(cls)
        for name in names:
            value = getattr(obj, name, _UNSET)
            if value is not _UNSET:  # a field never set (init=False, no default) stays so
                put(twin, name, value)
        return twin

    return copier


def shallow_copy(obj: Any) -> Any:
    """A new instance with the same field values (nested objects are shared)."""
    cls = type(obj)
    copier = _copiers.get(cls)
    if copier is None:
        copier = _copiers[cls] = _make_copier(cls)
    return copier(obj)

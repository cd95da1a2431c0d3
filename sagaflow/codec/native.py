"""Which classes msgspec writes in sagaflow's own form, straight from the instance.

Text, numbers, booleans, ``Decimal``, ``UUID``, ``date``, enums of text or integers,
literals, nested attrs classes and dataclasses, lists, tuples, sets, ``dict[str, ...]`` and
optionals of those are written by msgspec exactly as the general path (cattrs) writes them,
and read back from either's text. ``float`` and ``datetime`` are too, for some values only
(msgspec writes a non-finite float as ``null`` and a datetime's zone not at all): a field of
those types outside a container gets a check of its value at each encoding, and one inside
a container makes the class the general path's. So do ``_private`` fields (msgspec leaves
them out), converters (msgspec does not run them), ``time``, ``timedelta``, ``bytes`` (other
forms), untyped fields and the users' registered types.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import operator
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

import attrs
import msgspec

__all__ = ["GENERAL", "Plan", "plan_for"]

_NONE = type(None)
#: Types msgspec writes and reads exactly as the general path does.
_LEAVES = frozenset({str, int, bool, _NONE, decimal.Decimal, uuid.UUID, dt.date})


def _finite(value: Any) -> bool:
    return value is None or bool(value - value == 0.0)


def _fixed_offset(value: Any) -> bool:
    # msgspec writes an offset in whole minutes only, and a zone's name not at all.
    tz = value.tzinfo if value is not None else None
    if tz is None or tz is dt.UTC:
        return True
    if type(tz) is not dt.timezone:
        return False
    offset = tz.utcoffset(None)
    return not offset.seconds % 60 and not offset.microseconds


#: Types msgspec writes in sagaflow's form only for some values: the check of a value.
_CHECKED: dict[Any, Callable[[Any], bool]] = {float: _finite, dt.datetime: _fixed_offset}


@attrs.frozen
class Plan:
    """How one class is encoded: ``decoder`` is msgspec's (``None``: the general path
    only); ``checks`` are (getter, check) of the values msgspec writes only when they pass."""

    decoder: msgspec.json.Decoder[Any] | None
    checks: tuple[tuple[Callable[[Any], Any], Callable[[Any], bool]], ...] = ()

    def native(self, data: Any) -> bool:
        if self.decoder is None:
            return False
        try:
            for get, check in self.checks:
                if not check(get(data)):
                    return False
        except Exception:  # not what the annotation says: the general path tells
            return False
        return True


GENERAL = Plan(None)


class _Native:
    """Whether a class is msgspec-native, collecting the checks its values need."""

    def __init__(self, registered: Callable[[Any], bool]) -> None:
        self.registered = registered
        self.checks: list[tuple[str, Callable[[Any], bool]]] = []
        self._stack: set[type] = set()

    def cls(self, cls: type, path: str | None) -> bool:
        if cls in self._stack:  # recursive classes: the general path
            return False
        self._stack.add(cls)
        try:
            if attrs.has(cls):
                fields = [(f.name, f.type, f.converter) for f in attrs.fields(
                    attrs.resolve_types(cls))]
            elif dataclasses.is_dataclass(cls):
                hints = typing.get_type_hints(cls)
                fields = [(f.name, hints.get(f.name), None) for f in dataclasses.fields(cls)]
            else:
                return False
            for name, t, converter in fields:
                # msgspec leaves out "_private" fields; converters must run on load.
                if name.startswith("_") or t is None or isinstance(t, str) or converter:
                    return False
                if not self.type(t, None if path is None else f"{path}.{name}".lstrip(".")):
                    return False
            return True
        except Exception:  # unresolvable annotations and the like: the general path
            return False
        finally:
            self._stack.discard(cls)

    def type(self, t: Any, path: str | None) -> bool:
        if self.registered(t):
            return False
        if t in _LEAVES:
            return True
        check = _CHECKED.get(t)
        if check is not None:
            if path is None:  # inside a container: too costly to check each time
                return False
            self.checks.append((path, check))
            return True
        origin, args = get_origin(t), get_args(t)
        if origin is Union or origin is types.UnionType:
            members = [a for a in args if a is not _NONE]
            if len(members) != 1 or len(args) != 2:
                return False
            member = members[0]
            nested = isinstance(member, type) and (attrs.has(member) or
                                                   dataclasses.is_dataclass(member))
            return self.type(member, None if nested else path)
        if origin is Literal:
            return all(type(a) is str or type(a) is int for a in args)
        if origin in (list, set, frozenset) and len(args) == 1:
            return self.type(args[0], None)
        if origin is tuple and args:
            if len(args) == 2 and args[1] is Ellipsis:
                return self.type(args[0], None)
            return all(a is not Ellipsis and self.type(a, None) for a in args)
        if origin is dict and len(args) == 2:
            return args[0] is str and self.type(args[1], None)
        if not isinstance(t, type):
            return False
        if issubclass(t, enum.Enum):
            kinds = {type(m.value) for m in t}
            return not issubclass(t, enum.Flag) and (kinds == {str} or kinds == {int})
        return self.cls(t, path)




def plan_for(cls: type, registered: Callable[[Any], bool]) -> Plan:
    """How instances of ``cls`` are encoded; ``registered`` tells a user's own types."""
    native = _Native(registered)
    if not native.cls(cls, ""):
        return GENERAL
    try:
        decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(cls)
    except (TypeError, ValueError):  # msgspec refuses the class
        return GENERAL
    return Plan(decoder, tuple((operator.attrgetter(p), check) for p, check in native.checks))

"""The cattrs converter: typed user data to JSON-able builtins and back, by declared type.

This is the general path for saga data and for tagged values (domain events, values under
``Any``): whatever msgspec cannot write in sagaflow's form goes through here. Its forms are
the ones sagaflow 0.1 stored:

- ``Decimal`` and ``UUID`` as text; ``date``, ``time`` in ISO 8601;
- ``datetime`` in ISO 8601, and an aware one in a named zone keeps the zone (RFC 9557's
  ``2024-10-27T02:30:00+01:00[Europe/Paris]``), so its later arithmetic follows the zone;
- ``timedelta`` as ``[days, seconds, microseconds]``, ``bytes`` as base85 text;
- enums by value, attrs classes and dataclasses as objects (``init=False`` fields too),
  tuples and sets as lists;
- untyped positions (``Any``, ``object``, a bare ``list``/``dict``, an unannotated field)
  through the self-describing encoding the caller passes in;
- a non-finite float as its text (``"nan"``, ``"inf"``): msgspec would write ``null``.

A type nothing here knows raises :class:`~sagaflow.errors.CodecError` with the fix.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import uuid
import zoneinfo
from collections.abc import Callable
from typing import Any, Literal, get_origin

import attrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.json import JsonConverter, make_converter

from ..errors import CodecError

__all__ = ["FIX", "VALUE_FORMS", "Hooks", "build_converter", "is_dataclass", "type_name"]

#: How to make a value storable; ``{name}`` is its type's name.
FIX = (
    "store it as a JSON value, an attrs class, a dataclass, an enum, Decimal, UUID, "
    "datetime, date, time, timedelta or bytes, or teach sagaflow its JSON form with "
    "sagaflow.codec.register({name}, unstructure, structure)"
)

#: A type's (unstructure, structure) pair, as :func:`sagaflow.codec.register` takes it.
Hooks = tuple[Callable[[Any], Any], Callable[[Any], Any]]

_BARE = frozenset({list, dict, tuple, set, frozenset})
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def type_name(t: type) -> str:
    """A type's name for a message: ``Money``, ``decimal.Decimal``."""
    module = t.__module__
    return t.__qualname__ if module in ("builtins", "__main__") else f"{module}.{t.__qualname__}"


def is_dataclass(t: Any) -> bool:
    """A dataclass that is not also an attrs class."""
    return isinstance(t, type) and dataclasses.is_dataclass(t) and not attrs.has(t)


def _unstructure_datetime(v: dt.datetime) -> str:
    tz = v.tzinfo
    if isinstance(tz, zoneinfo.ZoneInfo):
        return f"{v.isoformat()}[{tz.key}]"
    return v.isoformat()


def _from_datetime(v: Any) -> dt.datetime:
    if v.endswith("]"):
        text, _sep, key = v[:-1].partition("[")
        return dt.datetime.fromisoformat(text).astimezone(zoneinfo.ZoneInfo(key))
    return dt.datetime.fromisoformat(v)


def _unstructure_timedelta(v: dt.timedelta) -> list[int]:
    return [v.days, v.seconds, v.microseconds]


def _from_timedelta(v: Any) -> dt.timedelta:
    days, seconds, micros = v
    return dt.timedelta(days=days, seconds=seconds, microseconds=micros)


def _from_b85(v: Any) -> bytes:
    return base64.b85decode(v)


def _to_b85(v: bytes) -> str:
    return base64.b85encode(v).decode("ascii")


#: The forms of the value types the codec knows by itself: (to JSON, from JSON).
VALUE_FORMS: dict[type, Hooks] = {
    decimal.Decimal: (str, decimal.Decimal),
    uuid.UUID: (str, uuid.UUID),
    dt.datetime: (_unstructure_datetime, _from_datetime),
    dt.date: (dt.date.isoformat, dt.date.fromisoformat),
    dt.time: (dt.time.isoformat, dt.time.fromisoformat),
    dt.timedelta: (_unstructure_timedelta, _from_timedelta),
    bytes: (_to_b85, _from_b85),
}


def _unstructure_float(v: float) -> float | str:
    return v if v - v == 0.0 else repr(float(v))


def _refuse(t: Any) -> Callable[[Any], Any]:
    if t in _JSON_SCALARS or get_origin(t) is Literal:
        return _identity

    def refuse(value: Any) -> Any:
        name = type_name(type(value))
        raise CodecError(f"a {name} cannot be stored as JSON: " + FIX.format(name=name))

    return refuse


def _identity(value: Any) -> Any:
    return value


def build_converter(
    encode_value: Callable[[Any], Any],
    decode_value: Callable[[Any], Any],
    registered: dict[type, Hooks],
) -> JsonConverter:
    """A converter with sagaflow's forms; ``encode_value``/``decode_value`` handle the
    untyped positions, ``registered`` holds the users' own types."""
    c = make_converter(unstructure_fallback_factory=_refuse)
    for t, (un, st) in (*VALUE_FORMS.items(), (float, (_unstructure_float, float))):
        c.register_unstructure_hook(t, un)
        c.register_structure_hook(t, _structure_with(st))

    def untyped(t: Any) -> bool:
        return t is Any or t is object

    def structure_bare(value: Any, t: Any) -> Any:
        decoded = decode_value(value)
        return decoded if type(decoded) is t else t(decoded)

    c.register_unstructure_hook_func(untyped, encode_value)
    c.register_structure_hook_func(untyped, lambda v, _: decode_value(v))
    c.register_unstructure_hook_func(lambda t: t in _BARE, encode_value)
    c.register_structure_hook_func(lambda t: t in _BARE, structure_bare)

    def overrides(cls: Any) -> dict[str, Any]:
        fields = attrs.fields(cls) if attrs.has(cls) else dataclasses.fields(cls)
        return {
            f.name: override(unstruct_hook=encode_value, struct_hook=lambda v, _: decode_value(v))
            for f in fields
            if f.type is None
        }

    def unstructure_class(cls: Any) -> Callable[[Any], Any]:
        return make_dict_unstructure_fn(
            cls, c, _cattrs_include_init_false=True, **overrides(cls)
        )

    def structure_class(cls: Any) -> Callable[[Any, Any], Any]:
        return make_dict_structure_fn(cls, c, _cattrs_include_init_false=True, **overrides(cls))

    c.register_unstructure_hook_factory(attrs.has, unstructure_class)
    c.register_structure_hook_factory(attrs.has, structure_class)
    c.register_unstructure_hook_factory(is_dataclass, unstructure_class)
    c.register_structure_hook_factory(is_dataclass, structure_class)
    for t, (un, st_) in registered.items():
        c.register_unstructure_hook(t, un)
        c.register_structure_hook(t, _structure_with(st_))
    return c


def _structure_with(structure: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    return lambda v, _: structure(v)

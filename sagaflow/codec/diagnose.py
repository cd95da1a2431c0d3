"""Why saga data cannot be stored, or would not load back as itself: the field, its value,
its type and the fix. Only the first save of a saga (and a failing one) comes here."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import math
import re
import types
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import attrs
from cattrs.errors import ClassValidationError
from cattrs.preconf.json import JsonConverter

from .convert import FIX, type_name
from .text import dumps, loads

if TYPE_CHECKING:
    from .values import Values

__all__ = [
    "Check",
    "culprit",
    "declared_at",
    "describe_failure",
    "difference",
    "field_problem",
    "round_trip",
    "round_trips",
    "fields_of",
    "short",
    "stores",
]

#: Whether a value (declared of a type; ``None``: say nothing) passes, given the encoding.
Check = Callable[["Values", Any, Any], bool]


def cause_text(cause: BaseException | str) -> str:
    """``"ValueError: boom"``: an exception (or a text) in one line."""
    if isinstance(cause, str):
        return cause
    text = str(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real problem
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_failure(exc: BaseException) -> str:
    """One line on why decoding failed (cattrs' nested errors flattened)."""
    if isinstance(exc, ClassValidationError):
        parts = []
        for sub in exc.exceptions:
            notes = getattr(sub, "__notes__", None) or []
            parts.append(f"{'; '.join(notes) or 'error'}: {cause_text(sub)}")
        return f"{exc.message}: " + "; ".join(parts)
    return cause_text(exc)
def fields_of(value: Any) -> list[tuple[str, Any, Any]] | None:
    """(name, declared type, value) of an attrs/dataclass instance's fields."""
    t = type(value)
    if attrs.has(t):
        with contextlib.suppress(Exception):  # unresolvable: report the values, untyped
            attrs.resolve_types(t)
        return [(f.name, f.type, getattr(value, f.name, None)) for f in attrs.fields(t)]
    if dataclasses.is_dataclass(t):
        return [(f.name, f.type, getattr(value, f.name, None)) for f in dataclasses.fields(t)]
    return None


def culprit(
    value: Any, values: Values, ok: Check, path: str = ""
) -> tuple[str | None, Any]:
    """The path (``items[1].price``) and value of the first field that fails ``ok``."""
    fields = fields_of(value)
    if fields is not None:
        for name, declared, v in fields:
            where = f"{path}.{name}" if path else name
            if not ok(values, v, declared):
                inner, bad = culprit(v, values, ok, where)
                return (inner, bad) if inner is not None else (where, v)
        return None, None
    if isinstance(value, (list, tuple, set, frozenset)):
        for i, v in enumerate(value):
            if not ok(values, v, None):
                inner, bad = culprit(v, values, ok, f"{path}[{i}]")
                return (inner, bad) if inner is not None else (f"{path}[{i}]", v)
    if isinstance(value, dict):
        for k, v in value.items():
            if not ok(values, v, None):
                inner, bad = culprit(v, values, ok, f"{path}[{k!r}]")
                return (inner, bad) if inner is not None else (f"{path}[{k!r}]", v)
    return None, None


def stores(values: Values, value: Any, declared: Any) -> bool:
    """Whether ``value`` (declared ``declared``; ``None``: say nothing) becomes JSON."""
    try:
        if declared is None or isinstance(declared, str):
            plain = values.encode_value(value)
        else:
            plain = values.converter.unstructure(value, declared)
        dumps(plain)
    except Exception:
        return False
    return True


def round_trip(values: Values, value: Any, declared: Any) -> Any:
    """``value`` stored as JSON and loaded back (raises if it cannot be)."""
    if declared is None or isinstance(declared, str):
        return values.decode_value(loads(dumps(values.encode_value(value))))
    plain = loads(dumps(values.converter.unstructure(value, declared)))
    return values.converter.structure(plain, declared)


def round_trips(values: Values, value: Any, declared: Any) -> bool:
    try:
        back = round_trip(values, value, declared)
    except Exception:
        return False
    return difference(value, back, "") is None


def declared_at(data: Any, path: str) -> Any:
    """The declared type of the attribute at the end of ``path`` (``None``: an item of
    a container, whose type the annotation of the container says)."""
    if path.endswith("]"):
        return None
    owner = data
    parts = path.split(".")
    for part in parts[:-1]:
        name, _, rest = part.partition("[")
        owner = getattr(owner, name)
        for index in re.findall(r"\[(.*?)\]", "[" + rest if rest else ""):
            key = ast.literal_eval(index)
            owner = owner[key] if not isinstance(owner, (set, frozenset)) else list(owner)[key]
    for name, declared, _v in fields_of(owner) or ():
        if name == parts[-1]:
            return declared
    return None


def field_problem(cls: type, converter: JsonConverter) -> str | None:
    """Name the first field of ``cls`` (nested classes included) whose declared type
    cattrs cannot handle. Union members are checked one by one: cattrs resolves them
    only when a value arrives, which would be too late (a recovery)."""
    try:
        if attrs.has(cls):
            attrs.resolve_types(cls)
    except NameError as exc:
        return (
            f"{type_name(cls)}: a field annotation cannot be resolved ({exc}): define the "
            "types the saga's fields use at module level"
        )
    seen: set[Any] = set()

    def walk(t: Any, where: str) -> str | None:
        if t is None or t is type(None) or t is Ellipsis or isinstance(t, (str, TypeVar)):
            return None
        try:
            if t in seen:
                return None
            seen.add(t)
        except TypeError:  # an unhashable annotation: check it every time
            pass
        origin = get_origin(t)
        if origin is Literal:
            return None
        if origin is Annotated:
            return walk(get_args(t)[0], where)
        if origin is Union or origin is types.UnionType:
            for member in get_args(t):
                problem = walk(member, where)
                if problem is not None:
                    return problem
            return None
        try:
            converter.get_structure_hook(t)
            converter.get_unstructure_hook(t)
        except Exception as exc:  # cattrs raises several kinds here; report them alike
            name = getattr(t, "__qualname__", None) or repr(t)
            return (
                f"field {where!r}: its type {name} cannot be stored as JSON ({exc}). "
                "To fix: " + FIX.format(name=name)
            )
        for arg in get_args(t):
            problem = walk(arg, where)
            if problem is not None:
                return problem
        if isinstance(t, type) and (attrs.has(t) or dataclasses.is_dataclass(t)):
            klass: Any = t
            with contextlib.suppress(Exception):
                if attrs.has(klass):
                    attrs.resolve_types(klass)
            nested = attrs.fields(klass) if attrs.has(klass) else dataclasses.fields(klass)
            for f in nested:
                problem = walk(f.type, f"{where}.{f.name}")
                if problem is not None:
                    return problem
        return None

    fields: Any = attrs.fields(cls) if attrs.has(cls) else dataclasses.fields(cls)
    for f in fields:
        problem = walk(f.type, f"{cls.__qualname__}.{f.name}")
        if problem is not None:
            return problem
    return None


_FIELD_NAMES: weakref.WeakKeyDictionary[type, tuple[str, ...] | None] = (
    weakref.WeakKeyDictionary()
)


def _field_names(t: type) -> tuple[str, ...] | None:
    """The field names of attrs/dataclass class ``t`` (``None``: neither), cached: the
    first save of every saga compares its data field by field."""
    try:
        return _FIELD_NAMES[t]
    except KeyError:
        pass
    except TypeError:  # pragma: no cover - a type that takes no weak reference
        fields = _fields_of_type(t)
        return None if fields is None else tuple(fields)
    names = _fields_of_type(t)
    found = None if names is None else tuple(names)
    with contextlib.suppress(TypeError):
        _FIELD_NAMES[t] = found
    return found


def _fields_of_type(t: type) -> list[str] | None:
    if attrs.has(t):
        return [f.name for f in attrs.fields(t)]
    if dataclasses.is_dataclass(t):
        return [f.name for f in dataclasses.fields(t)]
    return None


def difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    """Where ``b`` (loaded back) differs from ``a`` (saved), or ``None``."""
    if type(a) is not type(b):
        return path, a, b
    t = type(a)
    if t is str or t is int or t is bool or a is None:
        return None if a == b else (path, a, b)
    names = _field_names(t)
    if names is not None:
        for name in names:
            found = difference(
                getattr(a, name, None), getattr(b, name, None), f"{path}.{name}"
            )
            if found is not None:
                return found
        return None
    if isinstance(a, float):
        return None if a == b or (math.isnan(a) and math.isnan(b)) else (path, a, b)
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return path, a, b
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = difference(x, y, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return path, a, b
        for k, v in a.items():
            found = difference(v, b[k], f"{path}[{k!r}]")
            if found is not None:
                return found
        return None
    try:
        same = bool(a == b) or (a != a and b != b)  # NaN (float or Decimal) is itself
    except Exception:  # an __eq__ that raises: trust the round trip
        same = True
    return None if same else (path, a, b)



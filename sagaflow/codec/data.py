"""The saga instance (``record.data``) as JSON text, by its class's declared field types.

A store writes the data at every checkpoint and reads it at every recovery, so a class
whose declared types msgspec writes in sagaflow's own form (text, numbers, booleans,
``Decimal``, ``UUID``, ``date``, enums, nested attrs classes and dataclasses, lists, tuples,
sets, ``dict[str, ...]``, optionals of those; ``float`` and ``datetime`` fields while their
values are finite and in UTC or a fixed offset) is encoded and decoded by msgspec straight
from the instance: about ten times faster than through cattrs. Everything else, and any
value a check sends back (a named zone, a non-finite float, a lone surrogate, a value not
of its declared type), takes the general path: cattrs (:mod:`.convert`) and the JSON text.
Both paths write the same form, and either reads what the other wrote.

The first save of a saga (``verify=True``) also loads the text back and compares, so a
field whose value would not come back as itself is named now, not in a recovery.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import operator
import threading
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

import attrs
import msgspec

from ..errors import CodecError
from ..records import SagaRecord
from .convert import FIX, type_name
from .diagnose import (
    culprit,
    declared_at,
    describe_failure,
    difference,
    field_problem,
    round_trip,
    round_trips,
    short,
    stores,
)
from .text import dumps, encode, loads
from .values import Values

__all__ = ["SagaData"]

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
class _Plan:
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


_GENERAL = _Plan(None)


class _Native:
    """Whether a class is msgspec-native, collecting the checks its values need."""

    def __init__(self, values: Values) -> None:
        self.values = values
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
        if self.values.is_registered(t):
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


class SagaData:
    """Encodes and decodes saga instances; one per codec."""

    def __init__(self, values: Values) -> None:
        self.values = values
        self._lock = threading.Lock()
        self._plans: dict[type, _Plan] = {}
        #: the plans of the classes checked at a first save
        self._checked: dict[type, _Plan] = {}

    def forget(self) -> None:
        """Drop what was learnt of classes (a type was registered: plans change)."""
        with self._lock:
            self._plans = {}
            self._checked = {}

    def _plan(self, cls: type) -> _Plan:
        plan = self._plans.get(cls)
        if plan is None:
            native = _Native(self.values)
            plan = _GENERAL
            if native.cls(cls, ""):
                try:
                    decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(cls)
                except (TypeError, ValueError):  # msgspec refuses the class
                    pass
                else:
                    plan = _Plan(decoder, tuple(
                        (operator.attrgetter(path), check) for path, check in native.checks
                    ))
            with self._lock:
                self._plans[cls] = plan
        return plan

    def dump(self, record: SagaRecord, *, verify: bool = False) -> str:
        """``record.data`` as JSON text; ``verify`` also checks that it loads back as
        an equal instance (a store passes it at a saga's first save)."""
        data = record.data
        cls = type(data)
        plan = self._checked.get(cls)
        if plan is None:
            try:
                self._check_class(cls)
            except CodecError as exc:
                raise CodecError(f"{_where(record)}: {exc}") from exc
            plan = self._plan(cls)
            with self._lock:
                self._checked[cls] = plan
        text = None
        if plan.decoder is not None and (not plan.checks or plan.native(data)):
            try:
                text = encode(data).decode()
            except (TypeError, ValueError, OverflowError):  # the general path says why
                text = None
        if text is None:
            try:
                text = dumps(self.values.converter.unstructure(data, cls))
            except (TypeError, ValueError, AttributeError, RecursionError) as exc:
                raise self._explain(record, exc) from exc
        if verify:
            self._verify(record, text)
        return text

    def load(self, text: str | bytes, cls: type) -> Any:
        """The instance of ``cls`` from :meth:`dump`'s text (or sagaflow 0.1's)."""
        decoder = self._plan(cls).decoder
        if decoder is not None:
            try:
                return decoder.decode(text)
            except msgspec.DecodeError:  # a form only the general path reads
                pass
        return self.values.converter.structure(loads(text), cls)

    def _check_class(self, cls: type) -> None:
        """A field type nothing can store fails here, at the first save."""
        if not (attrs.has(cls) or dataclasses.is_dataclass(cls)):
            raise CodecError(
                f"a saga's data must be an attrs class (what @saga makes); "
                f"got a {type_name(cls)}"
            )
        converter = self.values.converter
        problem = field_problem(cls, converter)
        if problem is not None:
            raise CodecError(problem)
        try:
            converter.get_unstructure_hook(cls)
            converter.get_structure_hook(cls)
        except Exception as exc:  # cattrs raises several kinds here; report them alike
            raise CodecError(f"{type_name(cls)} cannot be stored as JSON: {exc}") from exc

    def _explain(self, record: SagaRecord, exc: BaseException) -> CodecError:
        """Find the field that failed and say what to do about it."""
        path, value = culprit(record.data, self.values, stores)
        if path is None:
            return CodecError(f"{_where(record)}: its data cannot be stored as JSON: {exc}")
        name = type_name(type(value))
        return CodecError(
            f"{_where(record)}: field {path!r} holds a {name} ({short(value)}), which cannot "
            f"be stored as JSON: {exc}. To fix: " + FIX.format(name=name)
        )

    def _verify(self, record: SagaRecord, text: str) -> None:
        data = record.data
        try:
            back = self.load(text, type(data))
            failure: BaseException | None = None
        except Exception as exc:  # any failure to load is what we are here to report
            back, failure = None, exc
        if failure is None and difference(data, back, "") is None:
            return
        path, value = culprit(data, self.values, round_trips)
        if path is None:
            detail = "?" if failure is None else describe_failure(failure)
            raise CodecError(
                f"{_where(record)}: its data would not load back as itself ({detail}): check "
                "that each field holds a value of its annotated type"
            ) from failure
        declared = declared_at(data, path)
        try:
            after: Any = round_trip(self.values, value, declared)
            outcome = f"load back as {short(after)} ({type_name(type(after))})"
        except Exception as exc:  # the value does not load back at all
            outcome = f"not load back ({describe_failure(exc)})"
        raise CodecError(
            f"{_where(record)}: field {path!r} holds {short(value)} ({type_name(type(value))}), "
            f"which would {outcome}: make the value match the field's annotation, or "
            "annotate the field with the value's type"
        ) from failure


def _where(record: SagaRecord) -> str:
    return f"saga {record.saga_name!r} (id {record.saga_id!r})"

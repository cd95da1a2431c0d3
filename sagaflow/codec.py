"""Saga records to JSON and back, through cattrs: never pickle.

A durable store keeps a :class:`~sagaflow.records.SagaRecord` as JSON. What goes where:

- the saga instance (``record.data``) is unstructured by a cattrs converter *with its
  declared field types*: ``Decimal`` as a string, ``UUID`` as its canonical text, ``datetime``,
  ``date``, ``time`` in ISO 8601, ``timedelta`` as ``[days, seconds, microseconds]``,
  ``bytes`` as base85, enums by value, nested attrs classes and dataclasses as
  objects, tuples, sets and frozensets as lists, ``Optional``/unions of scalars as
  themselves; an aware datetime in a named zone keeps the zone
  (``2024-10-27T02:30:00+01:00[Europe/Paris]``), not only its offset;
- a value whose declared type says nothing (``Any``, ``object``, a bare ``list`` or
  ``dict``, an unannotated field) and every domain event (``ctx.emit``) are encoded
  *self-describing*: JSON values as themselves, anything else tagged with its type, e.g.
  ``{"$type": "decimal:Decimal", "value": "9.99"}`` or ``{"$type": "tuple", "items": [...]}``,
  so that what is loaded has the type that was saved;
- lifecycle events are tagged by class name (``{"type": "StepRetrying", "at": ...}``);
- the saga's error is ``{"type": "StepError", "step_index": 2, ...}``: the arguments its
  ``__reduce__`` gives, an arbitrary exception ``cause`` flattened to ``"ValueError: boom"``.

A value the codec cannot store is a :class:`CodecError` at the first save, naming the
saga, the field, its type and the fix; teach the codec a type with :func:`register`.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import importlib
import inspect
import json
import math
import re
import threading
import types
import uuid
import weakref
import zoneinfo
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import attrs
from cattrs.errors import ClassValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.json import JsonConverter, make_converter

from . import errors as _errors
from . import events as _events
from .errors import CodecError, CorruptRecord, SagaflowError, _describe
from .events import LifecycleEvent
from .records import SagaRecord, SagaStatus, StepRecord

__all__ = [
    "Codec",
    "CodecError",
    "CorruptRecord",
    "HistoryRow",
    "decode_record",
    "default_codec",
    "dumps",
    "encode_record",
    "import_path",
    "loads",
    "register",
    "type_path",
]

#: One lifecycle event as a store's history row: (type, at, step, attempt, error, detail).
HistoryRow = tuple[str, float, str | None, int, str | None, str | None]

_FIX = (
    "store it as a JSON value, an attrs class, a dataclass, an enum, Decimal, UUID, "
    "datetime, date, time, timedelta or bytes, or teach sagaflow its JSON form with "
    "sagaflow.codec.register({name}, unstructure, structure)"
)


def type_path(t: type) -> str:
    """``"module:QualName"``: how a type is named in stored JSON."""
    return f"{t.__module__}:{t.__qualname__}"


def import_path(path: str) -> Any:
    """The object a ``"module:QualName"`` path names; a clear error if it is gone."""
    module, sep, qualname = path.partition(":")
    if not sep or not module or not qualname:
        raise CodecError(f"{path!r} is not a 'module:QualName' type path")
    if "<locals>" in qualname:
        raise CodecError(
            f"{path!r} is defined inside a function, so a new process cannot import it: "
            "define it at module level (or register it with this store or codec first)"
        )
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise CodecError(f"cannot import {path!r}: {exc}") from exc
    return obj


#: Errors stored under the names they had before 0.2.0.
_RENAMED_ERRORS = {"StepFailed": "StepError", "CompensationFailed": "CompensationError"}

_JSON_SCALARS = (str, int, float, bool, type(None))
_FACTORY: type = type(attrs.Factory(list))
_CONTAINER_TAGS: dict[str, Callable[[list[Any]], Any]] = {
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
}
_BARE = frozenset({list, dict, tuple, set, frozenset})


def _unstructure_timedelta(v: dt.timedelta) -> list[int]:
    return [v.days, v.seconds, v.microseconds]


def _structure_timedelta(v: Any, _: Any) -> dt.timedelta:
    days, seconds, micros = v
    return dt.timedelta(days=days, seconds=seconds, microseconds=micros)


def _unstructure_datetime(v: dt.datetime) -> str:
    # An aware datetime in a named zone keeps the zone (RFC 9557's "[Europe/Paris]"
    # suffix), not only today's offset, so its later arithmetic follows the zone's rules.
    tz = v.tzinfo
    if isinstance(tz, zoneinfo.ZoneInfo):
        return f"{v.isoformat()}[{tz.key}]"
    return v.isoformat()


def _structure_datetime(v: Any, _: Any) -> dt.datetime:
    if v.endswith("]"):
        text, _sep, key = v[:-1].partition("[")
        return dt.datetime.fromisoformat(text).astimezone(zoneinfo.ZoneInfo(key))
    return dt.datetime.fromisoformat(v)


def _unstructure_bytes(v: bytes) -> str:
    return base64.b85encode(v).decode("ascii")


def _structure_bytes(v: Any, _: Any) -> bytes:
    return base64.b85decode(v)


class Codec:
    """Records to JSON and back; one shared instance is :data:`default_codec`.

    Stores call the piece methods (``dump_data``, ``dump_steps``, ``history_row``...)
    so a checkpoint writes only what changed; :meth:`encode_record` and
    :meth:`decode_record` give the whole record's JSON form (export, tests, the CLI).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: types the self-describing encoding tags and rebuilds, besides attrs/dataclass/enum
        self._value_types: dict[type, str] = {}
        #: types seen while encoding, by path: rebuilds local classes in this process
        self._seen: dict[str, type] = {}
        self._checked: set[type] = set()
        self._error_params: dict[type, tuple[str, ...] | None] = {}
        self._event_classes: dict[type, tuple[str, tuple[tuple[str, Any], ...]]] = {}
        self._event_tags: dict[str, type[LifecycleEvent]] = {}
        self._encode = _compact_json_encoder()
        self._decode = _json_decoder()
        self.converter = self._make_converter()
        self._step_dict = _plain_dict_maker(StepRecord) or self.converter.get_unstructure_hook(
            StepRecord
        )
        self._step_text = _plain_text_maker(StepRecord)
        made = _plain_maker(StepRecord)
        if made is None:  # pragma: no cover - StepRecord has plain fields
            hook = self.converter.get_structure_hook(StepRecord)

            def made(d: Any) -> Any:
                return hook(d, StepRecord)

        self._step_from_dict: Callable[[Any], StepRecord] = made

    # -- configuration -----------------------------------------------------------

    def _make_converter(self) -> JsonConverter:
        c = make_converter(unstructure_fallback_factory=self._no_unstructure)
        hooks: list[tuple[type, Callable[[Any], Any], Callable[[Any, Any], Any]]] = [
            (decimal.Decimal, str, lambda v, _: decimal.Decimal(v)),
            (dt.datetime, _unstructure_datetime, _structure_datetime),
            (uuid.UUID, str, lambda v, _: uuid.UUID(v)),
            (dt.time, lambda v: v.isoformat(), lambda v, _: dt.time.fromisoformat(v)),
            (dt.timedelta, _unstructure_timedelta, _structure_timedelta),
            (bytes, _unstructure_bytes, _structure_bytes),
        ]
        for t, un, st in hooks:
            c.register_unstructure_hook(t, un)
            c.register_structure_hook(t, st)
        for value_type in (decimal.Decimal, uuid.UUID, dt.datetime, dt.date, dt.time,
                           dt.timedelta, bytes):
            self._value_types[value_type] = type_path(value_type)
        # Untyped positions get the self-describing encoding, so a Decimal under Any
        # comes back a Decimal, not a string.
        c.register_unstructure_hook_func(lambda t: t is Any or t is object, self.encode_value)
        c.register_structure_hook_func(
            lambda t: t is Any or t is object, lambda v, _: self.decode_value(v)
        )
        c.register_unstructure_hook_func(lambda t: t in _BARE, self.encode_value)
        c.register_structure_hook_func(lambda t: t in _BARE, self._structure_bare)
        c.register_unstructure_hook_factory(attrs.has, self._attrs_unstructure)
        c.register_structure_hook_factory(attrs.has, self._attrs_structure)
        c.register_unstructure_hook_factory(_is_dataclass, self._attrs_unstructure)
        c.register_structure_hook_factory(_is_dataclass, self._attrs_structure)
        steps = make_dict_unstructure_fn(StepRecord, c, _cattrs_omit_if_default=True)
        c.register_unstructure_hook(StepRecord, steps)
        return c

    def _attrs_unstructure(self, cls: Any) -> Callable[[Any], Any]:
        return make_dict_unstructure_fn(
            cls, self.converter, _cattrs_include_init_false=True, **self._untyped(cls)
        )

    def _attrs_structure(self, cls: Any) -> Callable[[Any, Any], Any]:
        return make_dict_structure_fn(
            cls, self.converter, _cattrs_include_init_false=True, **self._untyped(cls)
        )

    def _untyped(self, cls: Any) -> dict[str, Any]:
        fields = attrs.fields(cls) if attrs.has(cls) else dataclasses.fields(cls)
        return {
            f.name: override(
                unstruct_hook=self.encode_value, struct_hook=lambda v, _: self.decode_value(v)
            )
            for f in fields
            if f.type is None
        }

    def _no_unstructure(self, t: Any) -> Callable[[Any], Any]:
        if t in _JSON_SCALARS:
            return _identity

        def refuse(value: Any) -> Any:
            raise CodecError(
                f"a {_type_name(type(value))} cannot be stored as JSON: "
                + _FIX.format(name=_type_name(type(value)))
            )

        return refuse

    def _structure_bare(self, value: Any, t: Any) -> Any:
        decoded = self.decode_value(value)
        return decoded if type(decoded) is t else t(decoded)

    def register(
        self,
        type_: type,
        unstructure: Callable[[Any], Any],
        structure: Callable[[Any], Any],
    ) -> None:
        """Teach the codec a type: ``unstructure(value)`` returns JSON-able data,
        ``structure(data)`` rebuilds the value. Register before the first save that
        needs it: hooks made for classes using the type are rebuilt."""
        if not isinstance(type_, type):
            raise TypeError(f"register() takes a type first, got {type_!r}")
        if not callable(unstructure) or not callable(structure):
            raise TypeError("register(type, unstructure, structure): both must be callables")
        with self._lock:
            self.converter.register_unstructure_hook(type_, unstructure)
            self.converter.register_structure_hook(type_, lambda v, _: structure(v))
            self._value_types[type_] = type_path(type_)
            self._seen[type_path(type_)] = type_
            # Generated hooks of classes that use this type captured the old one.
            self.converter._unstructure_func.clear_cache()
            self.converter._structure_func.clear_cache()
            self._checked.clear()

    # -- self-describing values (Any, domain events) -----------------------------

    def encode_value(self, value: Any) -> Any:
        """A value as JSON that says its own type: JSON values as themselves, the rest
        tagged ``{"$type": ..., ...}``."""
        t = type(value)
        if t in _JSON_SCALARS:
            return value
        if t is list:
            return [self.encode_value(v) for v in value]
        if t is dict:
            if all(type(k) is str and not k.startswith("$") for k in value):
                return {k: self.encode_value(v) for k, v in value.items()}
            return {
                "$type": "dict",
                "items": [[self.encode_value(k), self.encode_value(v)] for k, v in value.items()],
            }
        if t is tuple or t is set or t is frozenset:
            return {"$type": t.__name__, "items": [self.encode_value(v) for v in value]}
        path = self._value_types.get(t)
        if path is None:
            if not (attrs.has(t) or dataclasses.is_dataclass(t) or issubclass(t, enum.Enum)):
                if isinstance(value, float):
                    return float(value)
                raise CodecError(
                    f"a {_type_name(t)} cannot be stored as JSON: "
                    + _FIX.format(name=_type_name(t))
                )
            path = type_path(t)
            self._seen[path] = t
        return {"$type": path, "value": self.converter.unstructure(value, t)}

    def decode_value(self, data: Any) -> Any:
        """The inverse of :meth:`encode_value`."""
        t = type(data)
        if t is list:
            return [self.decode_value(v) for v in data]
        if t is not dict:
            return data
        tag = data.get("$type")
        if tag is None:
            return {k: self.decode_value(v) for k, v in data.items()}
        if tag == "dict":
            return {self.decode_value(k): self.decode_value(v) for k, v in data["items"]}
        make = _CONTAINER_TAGS.get(tag)
        if make is not None:
            return make([self.decode_value(v) for v in data["items"]])
        cls = self._resolve(tag)
        return self.converter.structure(data["value"], cls)

    def _resolve(self, path: str) -> type:
        cls = self._seen.get(path)
        if cls is None:
            found = import_path(path)
            if not isinstance(found, type):
                raise CodecError(f"{path!r} names a {type(found).__name__}, not a type")
            cls = found
            self._seen[path] = cls
        return cls

    # -- the saga instance -------------------------------------------------------

    def dump_data(self, record: SagaRecord, *, verify: bool = False) -> str:
        """``record.data`` as JSON text, by its class's declared field types.

        ``verify`` (a store passes it at a saga's first save) also checks that the
        text loads back as an equal instance, so a mistyped field is reported now,
        naming the field, rather than when a recovery cannot read the record.
        """
        data = record.data
        cls = type(data)
        if cls not in self._checked:
            try:
                self._check_class(cls)
            except CodecError as exc:
                where = f"saga {record.saga_name!r} (id {record.saga_id!r})"
                raise CodecError(f"{where}: {exc}") from exc
        try:
            plain = self.converter.unstructure(data, cls)
            text = self._encode(plain)
        except CodecError as exc:
            raise self._explain(record, exc) from exc
        except (TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise self._explain(record, exc) from exc
        if verify:
            self._verify(record, text)
        return text

    def load_data(self, text: str, cls: type) -> Any:
        """The saga instance of class ``cls`` from :meth:`dump_data`'s text."""
        return self.converter.structure(self._decode(text), cls)

    def _check_class(self, cls: type) -> None:
        """Build the class's hooks once: a field type cattrs cannot handle fails here."""
        if not (attrs.has(cls) or dataclasses.is_dataclass(cls)):
            raise CodecError(
                f"a saga's data must be an attrs class (what @saga makes); "
                f"got a {_type_name(cls)}"
            )
        problem = _field_problem(cls, self.converter)
        if problem is not None:
            raise CodecError(problem)
        try:
            self.converter.get_unstructure_hook(cls)
            self.converter.get_structure_hook(cls)
        except Exception as exc:  # cattrs raises several kinds here; report them alike
            raise CodecError(f"{_type_name(cls)} cannot be stored as JSON: {exc}") from exc
        with self._lock:
            self._checked.add(cls)

    def _explain(self, record: SagaRecord, exc: BaseException) -> CodecError:
        """Find the field that failed and say what to do about it."""
        where = f"saga {record.saga_name!r} (id {record.saga_id!r})"
        path, value = _culprit(record.data, self, _stores)
        if path is None:
            return CodecError(f"{where}: its data cannot be stored as JSON: {exc}")
        name = _type_name(type(value))
        return CodecError(
            f"{where}: field {path!r} holds a {name} ({_short(value)}), which cannot be "
            f"stored as JSON: {exc}. To fix: " + _FIX.format(name=name)
        )

    def _verify(self, record: SagaRecord, text: str) -> None:
        data = record.data
        try:
            back = self.load_data(text, type(data))
            failure: BaseException | None = None
        except Exception as exc:  # any failure to load is what we are here to report
            back, failure = None, exc
        if failure is None and _difference(data, back, "") is None:
            return
        where = f"saga {record.saga_name!r} (id {record.saga_id!r})"
        path, value = _culprit(data, self, _round_trips)
        if path is None:
            detail = "?" if failure is None else describe_failure(failure)
            raise CodecError(
                f"{where}: its data would not load back as itself ({detail}): check that "
                "each field holds a value of its annotated type"
            ) from failure
        declared = _declared_at(data, path)
        try:
            after: Any = _round_trip(self, value, declared)
            outcome = f"load back as {_short(after)} ({_type_name(type(after))})"
        except Exception as exc:  # the value does not load back at all
            outcome = f"not load back ({describe_failure(exc)})"
        raise CodecError(
            f"{where}: field {path!r} holds {_short(value)} ({_type_name(type(value))}), "
            f"which would {outcome}: make the value match the field's annotation, or "
            "annotate the field with the value's type"
        ) from failure

    # -- steps, errors, lifecycle and domain events ------------------------------

    def dump_steps(self, steps: list[StepRecord]) -> str:
        """The step records as JSON text (default values omitted)."""
        return "[" + ",".join(self.dump_step(s) for s in steps) + "]"

    def dump_step(self, step: StepRecord) -> str:
        """One step record as JSON text (a store may keep it while the step is unchanged)."""
        made = self._step_text
        if made is not None:
            text = made(step)
            if text is not None:
                return text
        return self._encode(self._step_dict(step))

    def load_steps(self, text: str) -> list[StepRecord]:
        """The step records from :meth:`dump_steps`'s text."""
        make = self._step_from_dict
        return [make(s) for s in self._decode(text)]

    def encode_error(self, error: SagaflowError | None) -> dict[str, Any] | None:
        """A sagaflow error as ``{"type": name, "message": ..., <its constructor args>}``."""
        if error is None:
            return None
        cls = type(error)
        tag = cls.__name__ if getattr(_errors, cls.__name__, None) is cls else type_path(cls)
        if tag != cls.__name__:
            self._seen[tag] = cls
        out: dict[str, Any] = {"type": tag, "message": str(error)}
        try:
            reduced = error.__reduce__()
            args = tuple(reduced[1]) if isinstance(reduced, tuple) and len(reduced) > 1 else ()
        except Exception:  # an odd __reduce__: the message alone still informs
            args = ()
        names = self._error_names(cls)
        encoded = [self._encode_error_arg(a) for a in args]
        if names is not None and len(args) <= len(names):
            out.update(zip(names, encoded, strict=False))
        else:
            out["args"] = encoded
        return out

    def decode_error(self, data: Mapping[str, Any] | None) -> SagaflowError | None:
        """The inverse of :meth:`encode_error`; a class that is gone (or refuses its
        arguments) comes back as a plain :class:`~sagaflow.SagaflowError` with the
        stored message."""
        if data is None:
            return None
        tag = data["type"]
        tag = _RENAMED_ERRORS.get(tag, tag)
        message = data.get("message", tag)
        try:
            cls = getattr(_errors, tag, None) if ":" not in tag else self._resolve(tag)
            if not (isinstance(cls, type) and issubclass(cls, SagaflowError)):
                return SagaflowError(message)
            if "args" in data:
                made = cls(*(self._decode_error_arg(a) for a in data["args"]))
            else:
                kwargs = {
                    k: self._decode_error_arg(v)
                    for k, v in data.items()
                    if k not in ("type", "message")
                }
                made = cls(**kwargs)
        except Exception:  # degrade rather than make the whole record unreadable
            return SagaflowError(message)
        return made

    def _error_names(self, cls: type) -> tuple[str, ...] | None:
        try:
            return self._error_params[cls]
        except KeyError:
            pass
        try:
            params = inspect.signature(cls).parameters.values()
            names: tuple[str, ...] | None = tuple(
                p.name
                for p in params
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            )
            if any(p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) for p in params):
                names = None
        except (TypeError, ValueError):
            names = None
        self._error_params[cls] = names
        return names

    def _encode_error_arg(self, value: Any) -> Any:
        if isinstance(value, SagaflowError):
            return {"$error": self.encode_error(value)}
        if isinstance(value, BaseException):
            return _describe(value)
        if type(value) is tuple:  # SagaDefinitionError keeps problems as a tuple
            return [self._encode_error_arg(v) for v in value]
        try:
            return self.encode_value(value)
        except CodecError:
            return repr(value)

    def _decode_error_arg(self, data: Any) -> Any:
        if type(data) is dict and len(data) == 1 and "$error" in data:
            return self.decode_error(data["$error"])
        return self.decode_value(data)

    def _event_class(self, cls: type) -> tuple[str, tuple[tuple[str, Any], ...]]:
        try:
            return self._event_classes[cls]
        except KeyError:
            pass
        base = {f.name for f in attrs.fields(LifecycleEvent)}
        extras = tuple(
            (f.name, attrs.NOTHING if isinstance(f.default, _FACTORY) else f.default)
            for f in attrs.fields(cls)
            if f.name not in base
        )
        tag = cls.__name__ if getattr(_events, cls.__name__, None) is cls else type_path(cls)
        if tag != cls.__name__:
            self._seen[tag] = cls
        self._event_classes[cls] = (tag, extras)
        return tag, extras

    def history_row(self, event: LifecycleEvent) -> HistoryRow:
        """One lifecycle event as a history row; ``detail`` holds the subclass fields
        that differ from their defaults, as JSON (``{"delay": 0.5}``). The saga id and
        name are the record's."""
        tag, extras = self._event_class(type(event))
        detail = None
        if extras:
            values = {}
            for name, default in extras:
                value = getattr(event, name)
                if value is not default and (type(value) is not type(default) or value != default):
                    values[name] = self.encode_value(value)
            detail = self._encode(values) if values else None
        return (tag, event.at, _text(event.step), event.attempt, _text(event.error), detail)

    def event_from_row(
        self, row: tuple[Any, ...], saga_id: str, saga_name: str
    ) -> LifecycleEvent:
        """A lifecycle event from ``(type, at, step, attempt, error, detail)``."""
        tag, at, step_, attempt, error, detail = row
        return self._event(
            tag, at, step_, attempt, error, self._decode(detail) if detail else None,
            saga_id, saga_name,
        )

    def history_text(self, row: HistoryRow) -> str:
        """A history row as a compact JSON array, ``["StepRetrying", at, step, attempt,
        error, {detail}]`` (trailing empty fields left out): the form a store keeps
        inline, next to the saga's row."""
        tag, at, step_, attempt, error, detail = row
        if type(at) is not float or type(attempt) is not int or not math.isfinite(at):
            return self._encode([tag, at, step_, attempt, error, None if detail is None
                                 else self._decode(detail)])
        # Written out by hand: this runs for every lifecycle event, and the C string
        # escaper is what json.dumps would use anyway.
        text = (
            f"[{_quote(tag)},{_float_text(at)},{'null' if step_ is None else _quote(step_)},"
            f"{attempt}"
        )
        if detail is not None:
            return f"{text},{'null' if error is None else _quote(error)},{detail}]"
        if error is not None:
            return f"{text},{_quote(error)}]"
        return text + "]"

    def event_from_item(self, item: list[Any], saga_id: str, saga_name: str) -> LifecycleEvent:
        """A lifecycle event from :meth:`history_text`'s array."""
        tag, at, step_, attempt, *rest = item
        return self._event(
            tag, at, step_, attempt, rest[0] if rest else None,
            rest[1] if len(rest) > 1 else None, saga_id, saga_name,
        )

    def _event(
        self,
        tag: str,
        at: float,
        step_: str | None,
        attempt: int,
        error: str | None,
        detail: dict[str, Any] | None,
        saga_id: str,
        saga_name: str,
    ) -> LifecycleEvent:
        cls = self._event_type(tag)
        if detail:
            extra = {k: self.decode_value(v) for k, v in detail.items()}
            return cls(saga_id, saga_name, at, step_, attempt, error, **extra)
        return cls(saga_id, saga_name, at, step_, attempt, error)

    def _event_type(self, tag: str) -> type[LifecycleEvent]:
        cls = self._event_tags.get(tag)
        if cls is None:
            found = getattr(_events, tag, None) if ":" not in tag else self._resolve(tag)
            if not (isinstance(found, type) and issubclass(found, LifecycleEvent)):
                raise CodecError(f"{tag!r} is not a lifecycle event class")
            cls = found
            self._event_tags[tag] = cls
        return cls

    def dump_event(self, event: Any, record: SagaRecord, index: int) -> str:
        """Domain event number ``index`` of ``record`` as JSON text."""
        try:
            return self._encode(self.encode_value(event))
        except (CodecError, TypeError, ValueError) as exc:
            name = _type_name(type(event))
            raise CodecError(
                f"saga {record.saga_name!r} (id {record.saga_id!r}): domain event #{index} "
                f"({_short(event)}, a {name}) cannot be stored as JSON: {exc}. To fix: "
                "emit attrs classes, dataclasses, enums or JSON values, or "
                f"sagaflow.codec.register({name}, unstructure, structure)"
            ) from exc

    def load_event(self, text: str) -> Any:
        """A domain event from :meth:`dump_event`'s text."""
        return self.decode_value(self._decode(text))

    # -- JSON text ---------------------------------------------------------------

    def dumps_json(self, value: Any) -> str:
        """Compact JSON text of JSON-able ``value``."""
        return self._encode(value)

    def loads_json(self, text: str) -> Any:
        """Parse JSON text."""
        return self._decode(text)

    # -- the whole record --------------------------------------------------------

    def encode_record(self, record: SagaRecord) -> dict[str, Any]:
        """The whole record as a JSON-able dict (``data`` by its class's field types)."""
        history = []
        for event in record.history:
            tag, at, step_, attempt, error, detail = self.history_row(event)
            item: dict[str, Any] = {"type": tag, "at": at}
            if step_ is not None:
                item["step"] = step_
            if attempt:
                item["attempt"] = attempt
            if error is not None:
                item["error"] = error
            if event.saga_id != record.saga_id:
                item["saga_id"] = event.saga_id
            if event.saga_name != record.saga_name:
                item["saga_name"] = event.saga_name
            if detail is not None:
                item["detail"] = self._decode(detail)
            history.append(item)
        return {
            "saga_id": record.saga_id,
            "saga_name": record.saga_name,
            "fingerprint": record.fingerprint,
            "data_type": type_path(type(record.data)),
            "status": record.status.value,
            "state": record.state,
            "cursor": record.cursor,
            "undo": list(record.undo),
            "wake_at": record.wake_at,
            "deadline_at": record.deadline_at,
            "compensation_deadline_at": record.compensation_deadline_at,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "finished_at": record.finished_at,
            "version": record.version,
            "error": self.encode_error(record.error),
            "failures": dict(record.failures),
            "resolution": record.resolution,
            "steps": self._decode(self.dump_steps(record.steps)),
            "data": self._decode(self.dump_data(record)),
            "events": [self.encode_value(e) for e in record.events],
            "history": history,
            "path": [list(edge) for edge in record.path],
        }

    def decode_record(self, data: Mapping[str, Any], cls: type | None) -> SagaRecord:
        """The inverse of :meth:`encode_record`; ``cls`` is the saga class (``None``
        keeps ``data`` as its JSON form). Raises :class:`CorruptRecord`."""
        saga_id = str(data.get("saga_id", "?"))
        try:
            saga_name = data["saga_name"]
            history = []
            for item in data["history"]:
                detail = item.get("detail")
                row = (
                    item["type"],
                    item["at"],
                    item.get("step"),
                    item.get("attempt", 0),
                    item.get("error"),
                    None if detail is None else self._encode(detail),
                )
                history.append(
                    self.event_from_row(
                        row, item.get("saga_id", saga_id), item.get("saga_name", saga_name)
                    )
                )
            return SagaRecord(
                saga_id=data["saga_id"],
                saga_name=saga_name,
                fingerprint=data["fingerprint"],
                data=data["data"]
                if cls is None
                else self.converter.structure(data["data"], cls),
                steps=[self.converter.structure(s, StepRecord) for s in data["steps"]],
                created_at=data["created_at"],
                status=SagaStatus(data["status"]),
                state=data["state"],
                cursor=data["cursor"],
                undo=list(data["undo"]),
                wake_at=data["wake_at"],
                deadline_at=data["deadline_at"],
                compensation_deadline_at=data["compensation_deadline_at"],
                updated_at=data["updated_at"],
                finished_at=data["finished_at"],
                error=self.decode_error(data["error"]),
                failures=dict(data["failures"]),
                events=[self.decode_value(e) for e in data["events"]],
                history=history,
                version=data["version"],
                resolution=data.get("resolution"),
                path=[(a, b, c) for a, b, c in data.get("path", ())],
            )
        except Exception as exc:  # report any malformation as one error naming the saga
            raise CorruptRecord(saga_id, describe_failure(exc)) from exc

    def dumps(self, record: SagaRecord) -> str:
        """The whole record as JSON text."""
        return self._encode(self.encode_record(record))

    def loads(self, text: str, cls: type | None) -> SagaRecord:
        """The record from :meth:`dumps`'s text."""
        try:
            data = self._decode(text)
        except ValueError as exc:
            raise CorruptRecord("?", f"not JSON: {exc}") from exc
        return self.decode_record(data, cls)


def _compact_json_encoder() -> Callable[[Any], str]:
    """``json.dumps`` with compact separators, minus its per-call set-up: the C encoder
    is made once (``json.dumps`` builds one on every call; a checkpoint makes several)."""
    try:
        from _json import make_encoder
    except ImportError:  # pragma: no cover - CPython always has it
        return json.JSONEncoder(separators=(",", ":"), check_circular=False).encode

    def default(value: Any) -> Any:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    encode = make_encoder(
        None, default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )

    def dumps(value: Any) -> str:
        return "".join(encode(value, 0))

    return dumps


_quote = json.encoder.encode_basestring_ascii

_FLOAT_TEXTS: dict[float, str] = {}


def _float_text(value: float) -> str:
    """``repr(value)``, remembered for recent values: one checkpoint writes its time
    several times (the event that ends a step, the step's end, the next one's start)
    and formatting a float costs more than looking it up. Zero is not remembered:
    ``0.0 == -0.0``, and they are written differently."""
    text = _FLOAT_TEXTS.get(value)
    if text is None:
        text = float.__repr__(value)
        if value:
            if len(_FLOAT_TEXTS) >= 256:
                _FLOAT_TEXTS.clear()
            _FLOAT_TEXTS[value] = text
    return text


def _plain_dict_maker(cls: type) -> Callable[[Any], dict[str, Any]] | None:
    """A function from an instance of attrs class ``cls`` to a dict of its fields that
    differ from their defaults, enums by value: generated from the class's fields (so a
    field added later is not lost), for classes of plain fields only (else ``None``)."""
    try:
        fields = attrs.fields(attrs.resolve_types(cls))
    except Exception:  # unresolvable annotations: let cattrs handle the class
        return None
    lines = ["def make(o):", "    d = {}"]
    env: dict[str, Any] = {}
    for i, f in enumerate(fields):
        t = f.type
        is_enum = isinstance(t, type) and issubclass(t, enum.Enum)
        if not (is_enum or t in (str, int, float, bool) or t in _OPTIONAL_SCALARS):
            return None
        value = f"v{i}"
        lines.append(f"    {value} = o.{f.name}")
        out = f"{value}.value" if is_enum else value
        if f.default is attrs.NOTHING:
            lines.append(f"    d[{f.name!r}] = {out}")
        elif isinstance(f.default, _FACTORY):
            return None
        else:
            env[f"D{i}"] = f.default
            test = "is not" if is_enum or f.default is None else "!="
            lines.append(f"    if {value} {test} D{i}:")
            lines.append(f"        d[{f.name!r}] = {out}")
    lines.append("    return d")
    exec("\n".join(lines), env)  # code made from the class's own field names only
    made: Callable[[Any], dict[str, Any]] = env["make"]
    return made


def _plain_text_maker(cls: type) -> Callable[[Any], str | None] | None:
    """:func:`_plain_dict_maker` and the JSON encoder in one: the JSON text of an
    instance of attrs class ``cls`` of plain fields, written out directly (a store
    encodes a step record at nearly every checkpoint). Returns ``None`` for a value the
    generic path must handle (a value not of its field's type, a NaN or infinity);
    the text is the generic path's, byte for byte."""
    try:
        fields = attrs.fields(attrs.resolve_types(cls))
    except Exception:  # unresolvable annotations: let cattrs handle the class
        return None
    env: dict[str, Any] = {"q": _quote, "frepr": _float_text, "irepr": int.__repr__,
                           "INF": math.inf}
    lines = ["def text(o):", "    out = []", "    add = out.append"]
    for i, f in enumerate(fields):
        t = f.type
        optional = t in _OPTIONAL_SCALARS
        base = next(a for a in get_args(t) if a is not type(None)) if optional else t
        is_enum = isinstance(base, type) and issubclass(base, enum.Enum)
        if not (is_enum or base in (str, int, float, bool)) or isinstance(f.default, _FACTORY):
            return None
        v = f"v{i}"
        key = json.dumps(f.name) + ":"
        body: list[str] = []
        if optional:
            body += [f"if {v} is None:", f"    add({key + 'null'!r})", "else:"]
            indent = "    "
        else:
            indent = ""
        if is_enum:
            # By member name: a dict keyed by the members would call Enum.__hash__, a
            # Python function, for every field of every step.
            env[f"T{i}"] = base
            env[f"E{i}"] = {m.name: key + _quote(m.value) for m in base
                            if isinstance(m.value, str)}
            body += [f"{indent}if type({v}) is not T{i}: return None",
                     f"{indent}s = E{i}.get({v}._name_)", f"{indent}if s is None: return None",
                     f"{indent}add(s)"]
        elif base is str:
            body += [f"{indent}if type({v}) is not str: return None",
                     f"{indent}add({key!r} + q({v}))"]
        elif base is bool:
            body += [f"{indent}if {v} is True: add({key + 'true'!r})",
                     f"{indent}elif {v} is False: add({key + 'false'!r})",
                     f"{indent}else: return None"]
        elif base is int:
            body += [f"{indent}if type({v}) is not int: return None",
                     f"{indent}add({key!r} + irepr({v}))"]
        else:  # float: an int stays an int, as the JSON encoder writes it
            body += [f"{indent}if type({v}) is float:",
                     f"{indent}    if {v} != {v} or {v} == INF or {v} == -INF: return None",
                     f"{indent}    add({key!r} + frepr({v}))",
                     f"{indent}elif type({v}) is int: add({key!r} + irepr({v}))",
                     f"{indent}else: return None"]
        lines.append(f"    {v} = o.{f.name}")
        if f.default is attrs.NOTHING:
            lines += ["    " + b for b in body]
        else:
            env[f"D{i}"] = f.default
            test = "is not" if is_enum or f.default is None else "!="  # the dict maker's
            lines.append(f"    if {v} {test} D{i}:")
            lines += ["        " + b for b in body]
    lines.append('    return "{" + ",".join(out) + "}"')
    exec("\n".join(lines), env)  # code made from the class's own field names only
    made: Callable[[Any], str | None] = env["text"]
    return made


def _plain_maker(cls: type) -> Callable[[Any], Any] | None:
    """The inverse of :func:`_plain_dict_maker`: an instance of ``cls`` from such a dict,
    checking each value's type (a damaged record fails here, naming the field)."""
    try:
        fields = attrs.fields(attrs.resolve_types(cls))
    except Exception:  # unresolvable annotations: let cattrs handle the class
        return None
    env: dict[str, Any] = {"cls": cls, "bad": _bad_field}
    lines = ["def make(d):"]
    args = []
    for i, f in enumerate(fields):
        t = f.type
        optional = t in _OPTIONAL_SCALARS
        base = next(a for a in get_args(t) if a is not type(None)) if optional else t
        if isinstance(f.default, _FACTORY):
            return None
        value = f"v{i}"
        if f.default is attrs.NOTHING:
            lines.append(f"    {value} = d[{f.name!r}]")
        else:
            env[f"D{i}"] = f.default
            lines.append(f"    {value} = d.get({f.name!r}, D{i})")
        if isinstance(base, type) and issubclass(base, enum.Enum):
            env[f"E{i}"] = base
            lines.append(f"    if type({value}) is not E{i}: {value} = E{i}({value})")
        elif base in (str, bool, int, float):
            ok = {
                str: f"type({value}) is str",
                bool: f"type({value}) is bool",
                int: f"type({value}) is int",
                float: f"type({value}) is float or type({value}) is int",
            }[base]
            if optional:
                ok = f"{value} is None or {ok}"
            lines.append(f"    if not ({ok}): bad({f.name!r}, {value})")
        else:
            return None
        args.append(value)
    lines.append(f"    return cls({', '.join(args)})")
    exec("\n".join(lines), env)  # code made from the class's own field names only
    made: Callable[[Any], Any] = env["make"]
    return made


def _bad_field(name: str, value: Any) -> None:
    raise ValueError(f"field {name!r} holds {_short(value)}, a {type(value).__name__}")


def _json_decoder() -> Callable[[str], Any]:
    """``json.loads`` minus its whitespace-skipping wrapper: the text a store wrote has
    none. Anything else (or malformed text) goes through ``json.loads`` and its errors."""
    scan = json.decoder.JSONDecoder().scan_once  # type: ignore[attr-defined]

    def loads(text: str) -> Any:
        try:
            value, end = scan(text, 0)
        except (StopIteration, TypeError, ValueError):
            return json.loads(text)
        if end != len(text):
            return json.loads(text)
        return value

    return loads


_OPTIONAL_SCALARS = frozenset(
    {str | None, int | None, float | None, bool | None}
)


def _identity(value: Any) -> Any:
    return value


def _text(value: str | None) -> str | None:
    """Text a database column can hold: a lone surrogate (an exception message made
    from undecodable bytes) is escaped as ``\\udcxx`` rather than failing the save."""
    if type(value) is not str or value.isascii():
        return value  # None, ASCII, or not text at all (the store refuses that)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _is_dataclass(t: Any) -> bool:
    return isinstance(t, type) and dataclasses.is_dataclass(t) and not attrs.has(t)


def _type_name(t: type) -> str:
    module = t.__module__
    return t.__qualname__ if module in ("builtins", "__main__") else f"{module}.{t.__qualname__}"


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real problem
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fields_of(value: Any) -> list[tuple[str, Any, Any]] | None:
    """(name, declared type, value) of an attrs/dataclass instance's fields."""
    t = type(value)
    if attrs.has(t):
        with contextlib.suppress(Exception):  # unresolvable: report the values, untyped
            attrs.resolve_types(t)
        return [(f.name, f.type, getattr(value, f.name, None)) for f in attrs.fields(t)]
    if dataclasses.is_dataclass(t):
        return [(f.name, f.type, getattr(value, f.name, None)) for f in dataclasses.fields(t)]
    return None


Check = Callable[["Codec", Any, Any], bool]


def _culprit(
    value: Any, codec: Codec, ok: Check, path: str = ""
) -> tuple[str | None, Any]:
    """The path (``items[1].price``) and value of the first field that fails ``ok``."""
    fields = _fields_of(value)
    if fields is not None:
        for name, declared, v in fields:
            where = f"{path}.{name}" if path else name
            if not ok(codec, v, declared):
                inner, bad = _culprit(v, codec, ok, where)
                return (inner, bad) if inner is not None else (where, v)
        return None, None
    if isinstance(value, (list, tuple, set, frozenset)):
        for i, v in enumerate(value):
            if not ok(codec, v, None):
                inner, bad = _culprit(v, codec, ok, f"{path}[{i}]")
                return (inner, bad) if inner is not None else (f"{path}[{i}]", v)
    if isinstance(value, dict):
        for k, v in value.items():
            if not ok(codec, v, None):
                inner, bad = _culprit(v, codec, ok, f"{path}[{k!r}]")
                return (inner, bad) if inner is not None else (f"{path}[{k!r}]", v)
    return None, None


def _stores(codec: Codec, value: Any, declared: Any) -> bool:
    """Whether ``value`` (declared ``declared``; ``None``: say nothing) becomes JSON."""
    try:
        if declared is None or isinstance(declared, str):
            plain = codec.encode_value(value)
        else:
            plain = codec.converter.unstructure(value, declared)
        json.dumps(plain)
    except Exception:
        return False
    return True


def _round_trip(codec: Codec, value: Any, declared: Any) -> Any:
    """``value`` stored as JSON and loaded back (raises if it cannot be)."""
    if declared is None or isinstance(declared, str):
        return codec.decode_value(json.loads(json.dumps(codec.encode_value(value))))
    plain = json.loads(json.dumps(codec.converter.unstructure(value, declared)))
    return codec.converter.structure(plain, declared)


def _round_trips(codec: Codec, value: Any, declared: Any) -> bool:
    try:
        back = _round_trip(codec, value, declared)
    except Exception:
        return False
    return _difference(value, back, "") is None


def _declared_at(data: Any, path: str) -> Any:
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
    for name, declared, _v in _fields_of(owner) or ():
        if name == parts[-1]:
            return declared
    return None


def _field_problem(cls: type, converter: JsonConverter) -> str | None:
    """Name the first field of ``cls`` (nested classes included) whose declared type
    cattrs cannot handle. Union members are checked one by one: cattrs resolves them
    only when a value arrives, which would be too late (a recovery)."""
    try:
        if attrs.has(cls):
            attrs.resolve_types(cls)
    except NameError as exc:
        return (
            f"{_type_name(cls)}: a field annotation cannot be resolved ({exc}): define the "
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
                "To fix: " + _FIX.format(name=name)
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


def describe_failure(exc: BaseException) -> str:
    """One line on why decoding failed (cattrs' nested errors flattened)."""
    if isinstance(exc, ClassValidationError):
        parts = []
        for sub in exc.exceptions:
            notes = getattr(sub, "__notes__", None) or []
            parts.append(f"{'; '.join(notes) or 'error'}: {_describe(sub)}")
        return f"{exc.message}: " + "; ".join(parts)
    return _describe(exc)


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


def _difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    """Where ``b`` (loaded back) differs from ``a`` (saved), or ``None``."""
    if type(a) is not type(b):
        return path, a, b
    t = type(a)
    if t is str or t is int or t is bool or a is None:
        return None if a == b else (path, a, b)
    names = _field_names(t)
    if names is not None:
        for name in names:
            found = _difference(
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
            found = _difference(x, y, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return path, a, b
        for k, v in a.items():
            found = _difference(v, b[k], f"{path}[{k!r}]")
            if found is not None:
                return found
        return None
    try:
        same = bool(a == b) or (a != a and b != b)  # NaN (float or Decimal) is itself
    except Exception:  # an __eq__ that raises: trust the round trip
        same = True
    return None if same else (path, a, b)


#: The codec stores use unless given another; :func:`register` teaches it types.
default_codec = Codec()


def register(
    type_: type, unstructure: Callable[[Any], Any], structure: Callable[[Any], Any]
) -> None:
    """Teach sagaflow's default codec a type its JSON form cannot otherwise hold::

        sagaflow.codec.register(Money, lambda m: [str(m.amount), m.currency],
                                lambda v: Money(Decimal(v[0]), v[1]))
    """
    default_codec.register(type_, unstructure, structure)


def encode_record(record: SagaRecord) -> dict[str, Any]:
    """:meth:`Codec.encode_record` of the default codec."""
    return default_codec.encode_record(record)


def decode_record(data: Mapping[str, Any], cls: type | None) -> SagaRecord:
    """:meth:`Codec.decode_record` of the default codec."""
    return default_codec.decode_record(data, cls)


def dumps(record: SagaRecord) -> str:
    """:meth:`Codec.dumps` of the default codec."""
    return default_codec.dumps(record)


def loads(text: str, cls: type | None) -> SagaRecord:
    """:meth:`Codec.loads` of the default codec."""
    return default_codec.loads(text, cls)

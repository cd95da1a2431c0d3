"""The self-describing encoding: values whose declared type says nothing (``Any``, a bare
``list``, an unannotated field) and domain events.

JSON values are themselves; anything else is tagged with its type so that what is loaded
has the type that was saved: ``{"$type": "decimal:Decimal", "value": "9.99"}``,
``{"$type": "tuple", "items": [...]}``, ``{"$type": "dict", "items": [[k, v], ...]}`` for a
dict whose keys are not all plain text, ``{"$type": "float", "value": "inf"}`` for a
non-finite float. A class is tagged by the name :class:`~.paths.TypeNames` gives it.

A domain event whose class cannot be found in this process (an operator's shell reading a
script's saga) decodes to a :class:`StoredValue` that keeps the stored form and encodes back
to it, so the record can still be read, resolved and retried, and a save does not damage it.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections.abc import Callable
from typing import Any

import attrs
from cattrs.preconf.json import JsonConverter

from ..errors import CodecError
from .convert import FIX, VALUE_FORMS, Hooks, build_converter, type_name
from .native import Plan, plan_for
from .paths import TypeNames, type_path
from .text import dumps, encode

__all__ = ["StoredValue", "Values"]

_CONTAINER_TAGS: dict[str, Callable[[list[Any]], Any]] = {
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
}


@attrs.frozen(repr=False)
class StoredValue:
    """A stored value whose type (``type``, its stored name) cannot be found in this
    process; ``form`` is its stored JSON form, written back unchanged on a save."""

    type: str
    form: dict[str, Any] = attrs.field(repr=False)

    def __repr__(self) -> str:
        return f"StoredValue({self.type!r}, value={self.form.get('value')!r})"

    def __str__(self) -> str:
        return f"<{self.type}: its class cannot be imported here>"


class Values:
    """The self-describing encoding, and the converter for the typed values inside it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.names = TypeNames()
        #: value types (not attrs/dataclass/enum): their tag and form, both ways
        self._forms: dict[type, tuple[str, Callable[[Any], Any]]] = {
            t: (type_path(t), un) for t, (un, _) in VALUE_FORMS.items()
        }
        self._by_tag: dict[str, Callable[[Any], Any]] = {
            type_path(t): st for t, (_, st) in VALUE_FORMS.items()
        }
        self._registered: dict[type, Hooks] = {}
        self._plans: dict[type, Plan] = {}
        self.converter: JsonConverter = self._converter()

    def _converter(self) -> JsonConverter:
        return build_converter(self.encode_value, self._decode_strict, self._registered)

    def register(
        self,
        type_: type,
        unstructure: Callable[[Any], Any] | None,
        structure: Callable[[Any], Any] | None,
        name: str | None,
    ) -> None:
        """Teach the encoding ``type_`` (see :func:`sagaflow.codec.register`)."""
        if not isinstance(type_, type):
            raise TypeError(f"register() takes a type first, got {type_!r}")
        if unstructure is None and structure is None:
            if not (attrs.has(type_) or dataclasses.is_dataclass(type_)
                    or issubclass(type_, enum.Enum)):
                raise TypeError(
                    f"register({type_.__qualname__}) needs unstructure and structure: "
                    "only attrs classes, dataclasses and enums have a JSON form already"
                )
        elif not callable(unstructure) or not callable(structure):
            raise TypeError("register(type, unstructure, structure): both must be callables")
        with self._lock:
            stored = self.names.register(type_, name)
            if unstructure is not None and structure is not None:
                self._registered[type_] = (unstructure, structure)
                self._forms[type_] = (stored, unstructure)
                self._by_tag[stored] = structure
                # A fresh converter: hooks made for classes using the type captured the
                # old one.
                self.converter = self._converter()
                self._plans = {}

    def is_registered(self, t: Any) -> bool:
        """Whether ``t`` has hooks of a user's (its form is theirs, not msgspec's)."""
        return t in self._registered

    def encode_value(self, value: Any) -> Any:
        """``value`` as JSON-able builtins that say their own type."""
        t = type(value)
        if t is str or t is int or t is bool or value is None:
            return value
        if t is float:
            return value if value - value == 0.0 else {"$type": "float", "value": repr(value)}
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
        form = self._forms.get(t)
        if form is not None:
            return {"$type": form[0], "value": form[1](value)}
        if t is StoredValue:
            return value.form
        if not (attrs.has(t) or dataclasses.is_dataclass(t) or issubclass(t, enum.Enum)):
            if isinstance(value, float):  # a float subclass: stored as a float
                return self.encode_value(float(value))
            raise CodecError(
                f"a {type_name(t)} cannot be stored as JSON: " + FIX.format(name=type_name(t))
            )
        return {"$type": self.names.name_of(t), "value": self.converter.unstructure(value, t)}

    def dumps_value(self, value: Any) -> str:
        """:meth:`encode_value` as JSON text. An instance of a class msgspec writes in
        sagaflow's form (:mod:`.native`) is written by msgspec straight from it."""
        t = type(value)
        if t not in self._forms and (attrs.has(t) or dataclasses.is_dataclass(t)):
            plan = self._plans.get(t)
            if plan is None:
                plan = self._plans[t] = plan_for(t, self.is_registered)
            if plan.decoder is not None and (not plan.checks or plan.native(value)):
                try:
                    return encode({"$type": self.names.name_of(t), "value": value}).decode()
                except (TypeError, ValueError, OverflowError):  # the general path says why
                    pass
        return dumps(self.encode_value(value))

    def decode_value(self, data: Any) -> Any:
        """The inverse of :meth:`encode_value`; a class that cannot be found here comes
        back as a :class:`StoredValue` (what a domain event needs)."""
        return self._decode(data, True)

    def _decode_strict(self, data: Any) -> Any:
        # Saga data: a step must never get a stand-in where its data was.
        return self._decode(data, False)

    def _decode(self, data: Any, lenient: bool) -> Any:
        t = type(data)
        if t is list:
            return [self._decode(v, lenient) for v in data]
        if t is not dict:
            return data
        tag = data.get("$type")
        if tag is None:
            return {k: self._decode(v, lenient) for k, v in data.items()}
        if tag == "dict":
            return {self._decode(k, lenient): self._decode(v, lenient) for k, v in data["items"]}
        make = _CONTAINER_TAGS.get(tag)
        if make is not None:
            return make([self._decode(v, lenient) for v in data["items"]])
        if tag == "float":
            return float(data["value"])
        form = self._by_tag.get(tag)
        if form is not None:
            return form(data["value"])
        try:
            cls = self.names.type_of(tag)
        except CodecError:
            if lenient:
                return StoredValue(tag, data)
            raise
        return self.converter.structure(data["value"], cls)

"""Lifecycle events (a saga's history) as rows and as JSON arrays.

A row is ``(type, at, step, attempt, error, detail)``: the event's class name (a type path
for a class outside :mod:`sagaflow.events`), its base fields, and ``detail``, the JSON text
of the subclass's fields that differ from their defaults (``{"delay": 0.5}``). The saga id
and name are the record's. A store keeps the recent ones inline, each as a compact array
``["StepRetrying", at, step, attempt, error, {detail}]`` with its trailing empty fields left
out, and older ones as rows of a table.
"""

from __future__ import annotations

import threading
from typing import Any

import attrs
import msgspec

from .. import events as _events
from ..errors import CodecError
from ..events import LifecycleEvent
from .paths import type_path
from .text import dumps, dumps_compat, encode, loads
from .values import Values

__all__ = ["History", "HistoryRow"]

#: One lifecycle event as a store's history row: (type, at, step, attempt, error, detail).
HistoryRow = tuple[str, float, str | None, int, str | None, str | None]

_BASE = frozenset(f.name for f in attrs.fields(LifecycleEvent))


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


class History:
    """Encodes and decodes lifecycle events; one per codec."""

    def __init__(self, values: Values) -> None:
        self.values = values
        self._lock = threading.Lock()
        self._classes: dict[type, tuple[str, tuple[tuple[str, Any], ...]]] = {}
        self._tags: dict[str, type[LifecycleEvent]] = {}

    def _class(self, cls: type) -> tuple[str, tuple[tuple[str, Any], ...]]:
        known = self._classes.get(cls)
        if known is not None:
            return known
        extras = tuple(
            (f.name, attrs.NOTHING if isinstance(f.default, attrs.Factory) else f.default)  # type: ignore[arg-type]
            for f in attrs.fields(cls)
            if f.name not in _BASE
        )
        tag = cls.__name__
        if getattr(_events, tag, None) is not cls:
            tag = type_path(cls)
            self.values.names.remember(tag, cls)
        with self._lock:
            self._classes[cls] = (tag, extras)
        return tag, extras

    def _detail(self, event: LifecycleEvent, extras: tuple[tuple[str, Any], ...]) -> str | None:
        values = {}
        for name, default in extras:
            value = getattr(event, name)
            if value is not default and (type(value) is not type(default) or value != default):
                values[name] = self.values.encode_value(value)
        return dumps(values) if values else None

    def row(self, event: LifecycleEvent) -> HistoryRow:
        """``event`` as a history row."""
        tag, extras = self._classes.get(type(event)) or self._class(type(event))
        detail = self._detail(event, extras) if extras else None
        return (tag, event.at, _text(event.step), event.attempt, _text(event.error), detail)

    def item(self, event: LifecycleEvent) -> str:
        """``event`` as :meth:`text` writes it (without making the row first)."""
        tag, extras = self._classes.get(type(event)) or self._class(type(event))
        at, error = event.at, event.error
        if type(at) is not float or at - at != 0.0:
            return self.text(self.row(event))
        detail = self._detail(event, extras) if extras else None
        items: list[Any] = [tag, at, event.step, event.attempt]
        if detail is not None:
            items += (error, msgspec.Raw(detail))
        elif error is not None:
            items.append(error)
        try:
            return encode(items).decode()
        except (UnicodeEncodeError, TypeError):  # a lone surrogate: escaped by the row
            return self.text(self.row(event))

    def text(self, row: HistoryRow) -> str:
        """A history row as a compact JSON array (what a store keeps inline)."""
        tag, at, step, attempt, error, detail = row
        if detail is not None:
            items: list[Any] = [tag, at, step, attempt, error, msgspec.Raw(detail)]
        elif error is not None:
            items = [tag, at, step, attempt, error]
        else:
            items = [tag, at, step, attempt]
        if type(at) is float and at - at == 0.0:  # msgspec writes a non-finite float as null
            try:
                return encode(items).decode()
            except UnicodeEncodeError:
                pass
        if detail is not None:
            items[5] = loads(detail)
        return dumps_compat(items)

    def from_row(self, row: tuple[Any, ...], saga_id: str, saga_name: str) -> LifecycleEvent:
        """A lifecycle event from a history row."""
        tag, at, step, attempt, error, detail = row
        return self._event(
            tag, at, step, attempt, error, loads(detail) if detail else None, saga_id, saga_name
        )

    def from_item(self, item: list[Any], saga_id: str, saga_name: str) -> LifecycleEvent:
        """A lifecycle event from :meth:`text`'s array, parsed."""
        if len(item) == 4:  # the usual event: no error, no subclass field
            tag, at, step, attempt = item
            cls = self._tags.get(tag) or self._event_type(tag)
            return cls(saga_id, saga_name, at, step, attempt)
        tag, at, step, attempt, *rest = item
        return self._event(
            tag, at, step, attempt, rest[0] if rest else None,
            rest[1] if len(rest) > 1 else None, saga_id, saga_name,
        )

    def _event(
        self,
        tag: str,
        at: float,
        step: str | None,
        attempt: int,
        error: str | None,
        detail: dict[str, Any] | None,
        saga_id: str,
        saga_name: str,
    ) -> LifecycleEvent:
        cls = self._tags.get(tag)
        if cls is None:
            cls = self._event_type(tag)
        if detail:
            extra = {k: self.values.decode_value(v) for k, v in detail.items()}
            return cls(saga_id, saga_name, at, step, attempt, error, **extra)
        return cls(saga_id, saga_name, at, step, attempt, error)

    def _event_type(self, tag: str) -> type[LifecycleEvent]:
        found = getattr(_events, tag, None) if ":" not in tag else self.values.names.type_of(tag)
        if not (isinstance(found, type) and issubclass(found, LifecycleEvent)):
            raise CodecError(f"{tag!r} is not a lifecycle event class")
        with self._lock:
            self._tags[tag] = found
        return found

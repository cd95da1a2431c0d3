"""Saga records to JSON and back: never pickle.

A durable store keeps a :class:`~sagaflow.records.SagaRecord` as JSON that ``sqlite3`` and
``psql`` can read, in pieces, so a checkpoint writes only what changed:

- the saga instance by its class's declared field types (:mod:`.data`): ``Decimal`` and
  ``UUID`` as text, ``datetime``/``date``/``time`` in ISO 8601 (an aware datetime in a named
  zone keeps the zone: ``2024-10-27T02:30:00+01:00[Europe/Paris]``), ``timedelta`` as
  ``[days, seconds, microseconds]``, ``bytes`` as base85, enums by value, nested attrs
  classes and dataclasses as objects, tuples and sets as lists;
- values whose declared type says nothing (``Any``, a bare ``list``) and domain events
  self-describing (:mod:`.values`): ``{"$type": "decimal:Decimal", "value": "9.99"}``;
- step records (:mod:`.steps`), lifecycle events (:mod:`.history`), the saga's error
  (:mod:`.faults`); types named so that another process finds them (:mod:`.paths`).

A value that cannot be stored is a :class:`CodecError` at the first save, naming the saga,
the field, its type and the fix; :func:`register` teaches the codec a type.

Why msgspec: measured on the development machine (Python 3.11, one process, medians), a step
record encodes in 0.41 µs and decodes in 0.55 µs through a msgspec struct (0.1's hand-written
encoder: 1.2 and 3.2 µs), and a typical saga instance (text, Decimal, UUID, datetime fields)
in 0.4 and 0.7 µs straight from the attrs class (cattrs and the json module: 3.6 and 3.7 µs).
orjson parses as fast, but writes no attrs class: every record would go through a Python
walk first (4.4 µs for a step record). cattrs stays for what msgspec cannot write in this
form (named zones, timedelta, bytes, untyped values, the users' own types), where it was
already the right tool. ``python -m benchmarks codec`` measures it again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cattrs.preconf.json import JsonConverter

from ..errors import CodecError, CorruptRecord, SagaflowError
from ..events import LifecycleEvent
from ..records import SagaRecord, StepRecord
from .convert import type_name
from .data import SagaData
from .diagnose import describe_failure, short
from .faults import Errors
from .history import History, HistoryRow
from .paths import import_path, main_module_name, type_path
from .record import Records
from .steps import dump_step, dump_steps, load_steps
from .text import dumps as _dumps_json
from .text import loads as _loads_json
from .values import StoredValue, Values

__all__ = [
    "Codec",
    "CodecError",
    "CorruptRecord",
    "HistoryRow",
    "StoredValue",
    "decode_record",
    "default_codec",
    "describe_failure",
    "dumps",
    "encode_record",
    "import_path",
    "loads",
    "main_module_name",
    "register",
    "type_path",
]


class Codec:
    """Records to JSON and back; one shared instance is :data:`default_codec`.

    Stores call the piece methods (``dump_data``, ``dump_step``, ``history_row``...);
    :meth:`encode_record` and :meth:`decode_record` give the whole record's JSON form.
    The hot ones are plain functions or bound methods of the parts, set per instance.
    """

    #: One step record as JSON text.
    dump_step: Callable[[StepRecord], str]
    #: The step records as a JSON array.
    dump_steps: Callable[[list[StepRecord]], str]
    #: The step records from :attr:`dump_steps`' text.
    load_steps: Callable[[str], list[StepRecord]]
    #: A lifecycle event as a history row ``(type, at, step, attempt, error, detail)``.
    history_row: Callable[[LifecycleEvent], HistoryRow]
    #: A history row as the compact JSON array a store keeps inline.
    history_text: Callable[[HistoryRow], str]
    #: ``history_text(history_row(event))``, faster (the row is not made when not needed).
    history_item: Callable[[LifecycleEvent], str]
    #: A lifecycle event from a history row, given the saga's id and name.
    event_from_row: Callable[[tuple[Any, ...], str, str], LifecycleEvent]
    #: A lifecycle event from :attr:`history_text`'s array, parsed.
    event_from_item: Callable[[list[Any], str, str], LifecycleEvent]
    #: Compact JSON text of a JSON-able value (no non-finite floats).
    dumps_json: Callable[[Any], str]
    #: Parse JSON text.
    loads_json: Callable[[str], Any]
    #: A value as JSON-able builtins that say their own type.
    encode_value: Callable[[Any], Any]
    #: The inverse of :attr:`encode_value`; a class not found here gives a StoredValue.
    decode_value: Callable[[Any], Any]
    #: A sagaflow error as ``{"type": ..., "message": ..., <arguments>}``.
    encode_error: Callable[[SagaflowError | None], dict[str, Any] | None]
    #: The inverse of :attr:`encode_error` (a gone class: a plain SagaflowError).
    decode_error: Callable[[Mapping[str, Any] | None], SagaflowError | None]
    #: The saga instance of a class from :meth:`dump_data`'s text.
    load_data: Callable[[str, type], Any]

    def __init__(self) -> None:
        self._values = values = Values()
        self._data = SagaData(values)
        self._errors = Errors(values)
        self._history = History(values)
        self._records = Records(self._data, self._errors, self._history)
        self.dump_step = dump_step
        self.dump_steps = dump_steps
        self.load_steps = load_steps
        self.history_row = self._history.row
        self.history_text = self._history.text
        self.history_item = self._history.item
        self.event_from_row = self._history.from_row
        self.event_from_item = self._history.from_item
        self.dumps_json = _dumps_json
        self.loads_json = _loads_json
        self.encode_value = values.encode_value
        self.decode_value = values.decode_value
        self.encode_error = self._errors.encode
        self.decode_error = self._errors.decode
        self.load_data = self._data.load

    @property
    def converter(self) -> JsonConverter:
        """The cattrs converter of typed user data (to JSON-able builtins and back)."""
        return self._values.converter

    def register(
        self,
        type_: type,
        unstructure: Callable[[Any], Any] | None = None,
        structure: Callable[[Any], Any] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        """Teach the codec a type: ``unstructure(value)`` returns JSON-able data,
        ``structure(data)`` rebuilds the value (attrs classes, dataclasses and enums
        need neither). ``name`` (``"module:QualName"``) is the name its values are
        stored under, found again by any process that registers it: for a class of a
        script or one defined in a function. Register before the first save that needs
        it."""
        self._values.register(type_, unstructure, structure, name)
        self._data.forget()

    def dump_data(self, record: SagaRecord, *, verify: bool = False) -> str:
        """``record.data`` as JSON text, by its class's declared field types.

        ``verify`` (a store passes it at a saga's first save) also checks that the
        text loads back as an equal instance, so a mistyped field is reported now,
        naming the field, rather than when a recovery cannot read the record.
        """
        return self._data.dump(record, verify=verify)

    def dump_event(self, event: Any, record: SagaRecord, index: int) -> str:
        """Domain event number ``index`` of ``record`` as JSON text."""
        try:
            return self._values.dumps_value(event)
        except (CodecError, TypeError, ValueError) as exc:
            name = type_name(type(event))
            fix = "" if "To fix" in str(exc) else (
                ". To fix: emit attrs classes, dataclasses, enums or JSON values, or "
                f"sagaflow.codec.register({name}, unstructure, structure)"
            )
            raise CodecError(
                f"saga {record.saga_name!r} (id {record.saga_id!r}): domain event #{index} "
                f"({short(event)}, a {name}) cannot be stored as JSON: {exc}{fix}"
            ) from exc

    def load_event(self, text: str) -> Any:
        """A domain event from :meth:`dump_event`'s text; one whose class cannot be
        found in this process is a :class:`StoredValue` that saves back unchanged."""
        return self._values.decode_value(_loads_json(text))

    def encode_record(self, record: SagaRecord) -> dict[str, Any]:
        """The whole record as a JSON-able dict (``data`` by its class's field types)."""
        return self._records.encode(record)

    def decode_record(self, data: Mapping[str, Any], cls: type | None) -> SagaRecord:
        """The inverse of :meth:`encode_record`; ``cls`` is the saga class (``None``
        keeps ``data`` as its JSON form). Raises :class:`CorruptRecord`."""
        return self._records.decode(data, cls)

    def dumps(self, record: SagaRecord) -> str:
        """The whole record as JSON text."""
        return _dumps_json(self._records.encode(record))

    def loads(self, text: str, cls: type | None) -> SagaRecord:
        """The record from :meth:`dumps`'s text."""
        try:
            data = _loads_json(text)
        except ValueError as exc:
            raise CorruptRecord("?", f"not JSON: {exc}") from exc
        return self._records.decode(data, cls)


#: The codec stores use unless given another; :func:`register` teaches it types.
default_codec = Codec()


def register(
    type_: type,
    unstructure: Callable[[Any], Any] | None = None,
    structure: Callable[[Any], Any] | None = None,
    *,
    name: str | None = None,
) -> None:
    """Teach sagaflow's default codec a type its JSON form cannot otherwise hold, or the
    name to store a class under (see :meth:`Codec.register`)::

        sagaflow.codec.register(Money, lambda m: [str(m.amount), m.currency],
                                lambda v: Money(Decimal(v[0]), v[1]))
        sagaflow.codec.register(OrderPlaced, name="shop.events:OrderPlaced")
    """
    default_codec.register(type_, unstructure, structure, name=name)


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

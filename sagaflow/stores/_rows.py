"""The saga row of the durable stores, both ways: a record to its columns (encoding only
what changed since the store last wrote it) and a row back to a checked record.

The row: headline columns (id, name, definition fingerprint, status, machine state,
version, cursor, timestamps); as JSON text the step records, the saga instance
(``data``), the error, the incident (``failures``); and the recent tails of three
append-only lists, lifecycle events (``history``), domain events (``events``) and the
path through the machine (``path``), each with its count. Every :data:`INLINE` items, a
chunk of a list moves out of the row into its own table (``sagaflow_history``,
``sagaflow_events``, ``sagaflow_path``), so a checkpoint writes O(1) bytes however long
the saga runs, and encodes only the new items (:class:`Tracked`). The wait columns
(schema 3): ``waiting`` (the signal's name a parked saga waits for, ``''`` for a timer,
``NULL`` when not parked), ``waiting_after`` (the mark it waits after:
``signal_marks[waiting]``, so that the sagas due can be found without reading JSON),
``signal_marks`` (JSON: signal name to the arrival number of the last one delivered) and
``business_key``.
"""

from __future__ import annotations

import itertools
import json
import operator
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ..codec import Codec, describe_failure
from ..codec.diagnose import short
from ..errors import CorruptRecord, StoreError
from ..records import SagaRecord, SagaStatus, StepRecord, outcome
from ..spec import SagaSpec
from ._check import check_record

__all__ = [
    "AT",
    "COLUMNS",
    "INLINE",
    "STATIC",
    "StoredSaga",
    "Tail",
    "Tracked",
    "decode_row",
    "edge_text",
    "extend",
    "spilled",
    "waiting_after",
]

#: The saga row's columns, in the order a write binds them.
COLUMNS = (
    "saga_id", "saga_name", "fingerprint", "data_type", "status", "state", "version",
    "cursor", "undo", "created_at", "updated_at", "finished_at", "wake_at", "deadline_at",
    "compensation_deadline_at", "steps", "data", "error", "failures", "resolution",
    "history", "history_count", "events", "events_count", "path", "path_count", "waiting",
    "waiting_after", "signal_marks", "business_key",
)  # fmt: skip
AT = {name: i for i, name in enumerate(COLUMNS)}  #: each column's position
_WAITING_AT = AT["waiting"]
_ERROR_AT = AT["error"]
#: Columns a checkpoint usually leaves as they are (a store may leave them out of its
#: UPDATE: naming an indexed column rewrites its index entry in SQLite). The wait
#: columns change only when a saga parks, wakes or takes a signal.
STATIC = (
    "saga_id", "saga_name", "fingerprint", "data_type", "status", "created_at", "waiting",
    "waiting_after", "signal_marks", "business_key",
)  # fmt: skip
_STATIC_AT = tuple(AT[c] for c in STATIC[1:])
#: Items of each append-only list kept in the saga's row; every INLINE, a chunk moves to
#: the list's table.
INLINE = 32
_TERMINAL_VALUES = frozenset(s.value for s in SagaStatus if s.is_terminal)
_step_values = operator.attrgetter(*(f.name for f in attrs.fields(StepRecord)))


def spilled(n: int) -> int:
    """How many of ``n`` items live in the list's table (the rest are inline)."""
    return n - n % INLINE


def edge_text(edge: tuple[str, str, str], index: int = 0) -> str:
    """One path edge as JSON: ``["source","trigger","destination"]``. State and trigger
    names are identifiers (nothing to escape); anything else goes through json."""
    a, b, c = edge
    if a.isidentifier() and b.isidentifier() and c.isidentifier():
        return f'["{a}","{b}","{c}"]'
    return json.dumps([a, b, c], separators=(",", ":"), ensure_ascii=False)


# --- what the store has: encoding only what changed ---------------------------------------

#: One append-only list as stored: (its length, its inline items' JSON joined by commas).
Tail = tuple[int, str]


def extend(
    tail: Tail, items: list[Any], text_of: Callable[[Any, int], str], what: str, saga_id: str
) -> tuple[range, Tail]:
    """The new tail of a list now that it is ``items`` and the store has ``tail``; and
    which items move to the list's table (an empty range, but every INLINE items).
    Only the new items are encoded (``text_of(item, index)``: its JSON), except at a
    spill, which encodes the (at most INLINE - 1) items left inline again."""
    stored, text = tail
    n = len(items)
    if n < stored:
        raise StoreError(f"saga {saga_id!r}: its {what} shrank since the last save; it is "
                         "append-only")
    first, last = spilled(stored), spilled(n)
    if first == last:
        added = ",".join(map(text_of, items[stored:n], range(stored, n)))
        return range(0), (n, f"{text},{added}" if text else added)
    return range(first, last), (n, ",".join(map(text_of, items[last:n], range(last, n))))


class Tracked:
    """What the store has of a saga at ``version`` (a save updates it in place): each
    step record's values and JSON (texts ``None``: not encoded here yet), the three
    tails, the :data:`STATIC` columns; ``owner`` refers to the record it describes."""

    __slots__ = (
        "events", "history", "owner", "path", "static", "step_texts", "step_values", "version",
    )  # fmt: skip

    def __init__(
        self,
        version: int,
        step_values: list[Any],
        step_texts: list[str] | None,
        tails: tuple[Tail, Tail, Tail],
        static: tuple[Any, ...],
    ) -> None:
        self.owner: Any = None
        self.version = version
        self.step_values = step_values
        self.step_texts = step_texts
        self.history, self.events, self.path = tails
        self.static = static

    @classmethod
    def of(cls, stored: StoredSaga, record: SagaRecord) -> Tracked:
        """What a store that just read ``stored`` (decoded as ``record``) has."""
        c = stored.columns
        tails = (
            (len(record.history), c[AT["history"]][1:-1]),
            (len(record.events), c[AT["events"]][1:-1]),
            (len(record.path), c[AT["path"]][1:-1]),
        )
        return cls(
            stored.version, list(map(_step_values, record.steps)), None, tails, static_of(c)
        )

    def steps(self, codec: Codec, steps: list[StepRecord]) -> str:
        """The steps column now, re-encoding only the step records whose values changed."""
        now = list(map(_step_values, steps))
        texts = self.step_texts
        if texts is None or len(self.step_values) != len(now):
            texts = self.step_texts = list(map(codec.dump_step, steps))
        elif now != self.step_values:
            dump_step = codec.dump_step
            for i in itertools.compress(range(len(now)), map(operator.ne, now, self.step_values)):
                texts[i] = dump_step(steps[i])
        self.step_values = now
        return "[" + ",".join(texts) + "]"


def step_values(steps: list[StepRecord]) -> list[Any]:
    """What :class:`Tracked` compares step records by."""
    return list(map(_step_values, steps))


#: The :data:`STATIC` columns of a row but the id.
static_of = operator.itemgetter(*_STATIC_AT)


# --- a row back to a record ----------------------------------------------------------------


@attrs.frozen(slots=True)
class StoredSaga:
    """A saga as stored, not yet decoded: what recovery and operators decide on.

    Decode it with the store's ``decode``; a damaged record fails there (with
    :class:`~sagaflow.CorruptRecord` naming it and the column), not while listing.
    ``quarantined`` is why the saga was set aside, if it was.
    """

    saga_id: str
    saga_name: str
    fingerprint: str
    status: str
    state: str
    version: int
    created_at: float
    updated_at: float
    finished_at: float | None
    wake_at: float | None
    deadline_at: float | None
    data_type: str
    quarantined: str | None
    columns: tuple[Any, ...] = attrs.field(repr=False)
    history: tuple[tuple[Any, ...], ...] = attrs.field(repr=False)
    events: tuple[str, ...] = attrs.field(repr=False)
    path: tuple[tuple[Any, ...], ...] = attrs.field(repr=False)

    @staticmethod
    def fields(
        row: Sequence[Any],
        history: Sequence[tuple[Any, ...]],
        events: Sequence[str],
        path: Sequence[tuple[Any, ...]],
        quarantined: str | None,
    ) -> dict[str, Any]:
        """The constructor's arguments from the saga row (its :data:`COLUMNS` first)."""
        return {
            "saga_id": row[0], "saga_name": row[1], "fingerprint": row[2],
            "data_type": row[3], "status": row[4], "state": row[5], "version": row[6],
            "created_at": row[9], "updated_at": row[10], "finished_at": row[11],
            "wake_at": row[12], "deadline_at": row[13], "quarantined": quarantined,
            "columns": tuple(row[: len(COLUMNS)]), "history": tuple(history),
            "events": tuple(events), "path": tuple(path),
        }  # fmt: skip

    @property
    def parked(self) -> bool:
        """Whether the saga is parked at a wait (its ``waiting`` column is set): read
        without decoding, so that recovery can leave waiting sagas as rows."""
        return self.columns[_WAITING_AT] is not None

    @property
    def outcome(self) -> str:
        """The saga's outcome in one word (:func:`sagaflow.records.outcome`), from the
        stored status, the type tag of the stored error and the wait column; a damaged
        error column reads as no error here (decoding the record says what is wrong)."""
        try:
            status = SagaStatus(self.status)
        except ValueError:
            return "?"
        text = self.columns[_ERROR_AT]
        tag = None
        if text is not None:
            try:
                tag = json.loads(text).get("type")
            except (ValueError, TypeError, AttributeError):
                tag = None
        return outcome(status, tag if isinstance(tag, str) else None, self.parked)

    @property
    def business_key(self) -> str | None:
        """The saga's business key (``@saga(key=...)``), read without decoding it."""
        return self.columns[AT["business_key"]]  # type: ignore[no-any-return]

    @property
    def is_terminal(self) -> bool:
        """Whether the stored status is a final one."""
        return self.status in _TERMINAL_VALUES


class _Column(Exception):
    """Decoding ``column`` failed (its cause says how)."""

    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column


def decode_row(
    codec: Codec, stored: StoredSaga, cls: type | None, spec: SagaSpec | None
) -> SagaRecord:
    """The record of ``stored``, its data an instance of ``cls`` (``None``: its JSON),
    checked against ``spec``. Raises :class:`~sagaflow.CorruptRecord` naming the
    column that cannot be read or holds what no run leaves."""
    c = stored.columns
    sid, name = stored.saga_id, stored.saga_name
    column = "data"
    try:
        loads = codec.loads_json
        text = c[AT["data"]]
        data = loads(text) if cls is None else codec.load_data(text, cls)
        column = "steps"
        steps = codec.load_steps(c[AT["steps"]])
        column = "status"
        status = SagaStatus(stored.status)
        column = "undo"
        undo = list(loads(c[AT["undo"]]))
        column = "error"
        error_text = c[AT["error"]]
        error = None if error_text is None else codec.decode_error(loads(error_text))
        column = "failures"
        failures_text = c[AT["failures"]]
        failures = {} if failures_text is None else dict(loads(failures_text))
        column = "history"
        history = [codec.event_from_row(h, sid, name) for h in stored.history]
        history.extend(
            codec.event_from_item(item, sid, name)
            for item in _tail(stored, "history", len(history), loads)
        )
        column = "events"
        events = [codec.load_event(body) for body in stored.events]
        inline = _tail(stored, "events", len(events), loads)
        events.extend(codec.decode_value(item) for item in inline)
        column = "path"
        path = [(a, b, d) for a, b, d in stored.path]
        path.extend((a, b, d) for a, b, d in _tail(stored, "path", len(path), loads))
        column = "signal_marks"
        marks_text = c[AT["signal_marks"]]
        signal_marks = {} if marks_text == "{}" else loads(marks_text)
    except CorruptRecord:
        raise
    except _Column as bad:
        value = c[AT[bad.column]]
        raise CorruptRecord(sid, describe_failure(bad.__cause__ or bad), bad.column,
                            short(value)) from bad.__cause__
    except Exception as exc:  # anything malformed: one error naming the saga and column
        raise CorruptRecord(sid, describe_failure(exc), column, short(c[AT[column]])) from exc
    record = SagaRecord(
        saga_id=sid, saga_name=name, fingerprint=stored.fingerprint, data=data,
        steps=steps, created_at=c[AT["created_at"]], status=status, state=stored.state,
        cursor=c[AT["cursor"]], undo=undo, wake_at=c[AT["wake_at"]],
        deadline_at=c[AT["deadline_at"]],
        compensation_deadline_at=c[AT["compensation_deadline_at"]],
        updated_at=c[AT["updated_at"]], finished_at=c[AT["finished_at"]], error=error,
        failures=failures, events=events, history=history, version=stored.version,
        resolution=c[AT["resolution"]], path=path, waiting=c[AT["waiting"]],
        signal_marks=signal_marks, business_key=c[AT["business_key"]],
    )  # fmt: skip
    if type(c[AT["data_type"]]) is not str or not c[AT["data_type"]]:
        raise CorruptRecord(sid, "a type path is expected", "data_type", short(c[AT["data_type"]]))
    check_record(record, spec)
    after = c[AT["waiting_after"]]
    if after != 0 or type(after) is not int or record.waiting is not None:
        _check_waiting_after(record, after)
    return record


def waiting_after(record: SagaRecord) -> int:
    """The ``waiting_after`` column of ``record``: the mark of the signal it waits for."""
    waiting = record.waiting
    return 0 if waiting is None else record.signal_marks.get(waiting, 0)


def _check_waiting_after(record: SagaRecord, after: Any) -> None:
    expected = waiting_after(record)
    if type(after) is not int or after != expected:
        what = (
            "the saga is not parked" if record.waiting is None
            else f"the mark of {record.waiting!r} in signal_marks"
        )  # fmt: skip
        raise CorruptRecord(
            record.saga_id, f"{expected} is expected: {what}", "waiting_after", short(after)
        )


def _tail(stored: StoredSaga, what: str, outside: int, loads: Callable[[str], Any]) -> list[Any]:
    """The inline items of list ``what``, checking that with the ``outside`` ones spilled
    to its table they add up to the row's count."""
    c = stored.columns
    count = c[AT[f"{what}_count"]]
    try:
        inline = loads(c[AT[what]])
        if type(inline) is not list:
            raise ValueError(f"a JSON list of the last {what} items is expected")
    except Exception as exc:
        raise _Column(what) from exc
    if type(count) is not int or outside != spilled(count) or len(inline) != count - outside:
        raise CorruptRecord(
            stored.saga_id,
            f"the count of the {what} items, but {outside} are in its table and "
            f"{len(inline)} in the row",
            f"{what}_count",
            short(count),
        )
    return inline

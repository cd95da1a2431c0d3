"""The in-memory store: records live as long as the process (tests, demos, short jobs)."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

import attrs

from ..codec import Codec, default_codec
from ..errors import SagaNotFound, SignalRefused
from ..incidents import Incident
from ..messages import Message
from ..records import SagaRecord, SagaStatus, Signal, error_type, outcome
from ._sql import OutboxStats, check_kinds, event_type, lifecycle_types
from .base import AsyncStoreMixin, Quarantined

__all__ = ["MemoryStore"]

#: The statuses a parked saga can have (RUNNING at a wait; a choreography between its
#: events, RUNNING or COMPENSATING).
_PARKABLE = (SagaStatus.RUNNING, SagaStatus.COMPENSATING)


@attrs.frozen(slots=True)
class _Held:
    """A saga held in memory, as :meth:`MemoryStore.scan` lists it."""

    record: SagaRecord
    quarantined: str | None = None

    @property
    def saga_id(self) -> str:
        return self.record.saga_id

    @property
    def saga_name(self) -> str:
        return self.record.saga_name

    @property
    def fingerprint(self) -> str:
        return self.record.fingerprint

    @property
    def status(self) -> str:
        return self.record.status.value

    @property
    def updated_at(self) -> float:
        return self.record.updated_at

    @property
    def created_at(self) -> float:
        return self.record.created_at

    @property
    def parked(self) -> bool:
        return self.record.waiting is not None

    @property
    def wake_at(self) -> float | None:
        return self.record.wake_at

    @property
    def business_key(self) -> str | None:
        return self.record.business_key

    @property
    def outcome(self) -> str:
        r = self.record
        return outcome(r.status, error_type(r.error), r.waiting is not None)


def _incident_kind(record: SagaRecord, held: _Held, stalled_before: float | None) -> str:
    """The kind of the incident open for ``record`` ("" for none), as the SQL stores'
    :func:`~sagaflow.stores._sql.incident_selects` read it."""
    if held.quarantined is not None:
        return "quarantined"
    status = record.status
    if status is SagaStatus.FAILED:
        return "failed" if record.resolution is None else ""
    if (
        stalled_before is not None and status in _PARKABLE
        and record.updated_at <= stalled_before
        and (record.waiting is None
             or (status is SagaStatus.COMPENSATING and record.wake_at is None))
    ):
        return "stalled"
    return ""


class MemoryStore(AsyncStoreMixin):
    """Keeps the live record objects in a dict; nothing survives the process.

    It keeps every record it is given, finished ones included, for as long as it lives.
    """

    def __init__(self, *, codec: Codec | None = None) -> None:
        self._records: dict[str, SagaRecord] = {}
        self._quarantined: dict[str, tuple[str, float]] = {}
        #: (saga id, kind) -> the ``since`` of the incident of it claimed last
        self._claims: dict[tuple[str, str], float] = {}
        self._signals: dict[str, list[Signal]] = {}
        self._seq = 0
        self._lock = threading.Lock()
        #: what encodes the outbox's messages (as a durable store would)
        self.codec = codec if codec is not None else default_codec
        # The outbox: id -> [record, seq, at, attempts, last_error, event] of
        # each event not relayed yet, in the order the events were saved (a relayed one
        # leaves it, so that a relay reads only what is pending); how many events (and,
        # with publish_lifecycle, history events) of each saga it was given.
        self._outbox: dict[str, list[Any]] = {}
        self._emitted: dict[str, int] = {}
        self._told: dict[str, int] = {}
        self._lifecycle: frozenset[type] = frozenset()
        self._outbox_wake: list[Callable[[], None]] = []

    def create(self, record: SagaRecord) -> SagaRecord | None:
        # dict.setdefault is atomic under the GIL: two threads starting the same id
        # cannot both insert.
        existing = self._records.setdefault(record.saga_id, record)
        if existing is not record:
            return existing
        if record.events or self._lifecycle:
            self._to_outbox(record)
        return None

    def save(self, record: SagaRecord) -> None:
        record.version += 1
        sid = record.saga_id
        self._records[sid] = record
        if len(record.events) != self._emitted.get(sid, 0) or (
            self._lifecycle and len(record.history) != self._told.get(sid, 0)
        ):
            self._to_outbox(record)

    # -- the outbox ------------------------------------------------------------------

    def _to_outbox(self, record: SagaRecord) -> None:
        """The events ``record`` has that the outbox has not: in it, with this save."""
        sid = record.saga_id
        events = record.events
        with self._lock:
            first = self._emitted.get(sid, 0)
            for i in range(first, len(events)):
                self._outbox.setdefault(
                    f"{sid}:{i}", [record, i, record.updated_at, 0, None, events[i]]
                )
            self._emitted[sid] = len(events)
            if self._lifecycle:
                history = record.history
                for i in range(self._told.get(sid, 0), len(history)):
                    e = history[i]
                    if type(e) in self._lifecycle:
                        self._outbox.setdefault(f"{sid}:h{i}", [record, i, e.at, 0, None, e])
                self._told[sid] = len(history)
        for callback in list(self._outbox_wake):
            callback()

    def publish_lifecycle(self, *event_types: type) -> None:
        """Also write the lifecycle events of these classes to the outbox (see
        :meth:`~sagaflow.stores.OutboxStore.publish_lifecycle`)."""
        self._lifecycle = lifecycle_types(event_types)

    def outbox(self, limit: int = 100) -> list[Message]:
        """The domain events not relayed yet, in the order they were saved."""
        found: list[Message] = []
        with self._lock:
            rows = list(itertools.islice(self._outbox.items(), max(0, int(limit))))
        for mid, (record, i, at, *_rest, event) in rows:
            body = self.codec.dump_event(event, record, i)
            found.append(
                Message(mid, event_type(body), record.saga_id, record.saga_name, i, body, at)
            )
        return found

    def relayed(self, ids: Collection[str]) -> None:
        with self._lock:
            for mid in ids:
                self._outbox.pop(mid, None)

    def outbox_failed(self, ids: Collection[str], error: str) -> None:
        with self._lock:
            for mid in ids:
                row = self._outbox.get(mid)
                if row is not None:
                    row[3] += 1
                    row[4] = str(error)

    def relay_outbox(self, publish: Callable[[list[Message]], Any], limit: int = 100) -> int:
        messages = self.outbox(limit)
        if not messages:
            return 0
        ids = [m.id for m in messages]
        try:
            publish(messages)
        except Exception as exc:
            self.outbox_failed(ids, f"{type(exc).__name__}: {exc}")
            raise
        self.relayed(ids)
        return len(messages)

    def outbox_stats(self) -> OutboxStats:
        with self._lock:
            pending = list(self._outbox.items())
        failing = sorted(
            ((mid, row[3], row[4]) for mid, row in pending if row[3]), key=lambda f: -f[1]
        )
        oldest = min((row[2] for _, row in pending), default=None)
        return OutboxStats(len(pending), oldest, tuple(failing[:100]))

    def on_outbox(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._outbox_wake.append(callback)

        def stop() -> None:
            if callback in self._outbox_wake:
                self._outbox_wake.remove(callback)

        return stop

    def load(self, saga_id: str) -> SagaRecord | None:
        return self._records.get(saga_id)

    def query(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> list[SagaRecord]:
        found = [
            r
            for r in list(self._records.values())
            if (status is None or r.status in status) and (name is None or r.saga_name == name)
        ]
        found.sort(key=lambda r: (-r.updated_at, r.saga_id))
        return found if limit is None else found[:limit]

    def scan(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        newest_first: bool = False,
        limit: int | None = None,
        parked: bool | None = None,
        after: tuple[float, str] | None = None,
    ) -> Iterator[_Held]:
        found = self.query(status=status, name=name)  # newest first, then by id
        if parked is not None:
            found = [r for r in found if (r.waiting is not None) is parked]
        if after is not None:
            if not newest_first:
                raise ValueError("scan(after=...) pages the most recently updated first: "
                                 "pass newest_first=True")
            at, sid = after
            found = [r for r in found if r.updated_at < at or (r.updated_at == at
                                                              and r.saga_id > sid)]
        if not newest_first:
            found.sort(key=lambda r: r.saga_id)
        for record in found if limit is None else found[:limit]:
            yield self._held(record)

    def browse(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        outcome: str | None = None,
        key: str | None = None,
        text: str | None = None,
        newer: float | None = None,
        older: float | None = None,
        after: tuple[float, str] | None = None,
        limit: int = 50,
        incidents: Collection[str] | None = None,
        stalled_before: float | None = None,
    ) -> list[_Held]:
        """A page of the dashboard's list, as :meth:`SQLStore.browse
        <sagaflow.stores.sqlite.SQLiteStore.browse>` reads it (newest started first,
        then by saga id descending; ``after``: the last ``(created_at, saga_id)`` of the
        page before; ``incidents``: only the sagas with an open incident of these
        kinds); here by looking at every saga."""
        wanted = None if status is None else {SagaStatus(s) for s in status}
        needle = None if text is None else text.lower()
        if incidents is not None:
            check_kinds(incidents)
        found = []
        for record in list(self._records.values()):
            held = self._held(record)
            if (
                (incidents is None
                 or _incident_kind(record, held, stalled_before) in incidents)
                and (wanted is None or record.status in wanted)
                and (name is None or record.saga_name == name)
                and (outcome is None or held.outcome == outcome)
                and (key is None or record.business_key == key)
                and (needle is None or needle in record.saga_id.lower())
                and (newer is None or record.created_at >= newer)
                and (older is None or record.created_at < older)
                and (after is None or (record.created_at, record.saga_id) < after)
            ):
                found.append(held)
        found.sort(key=lambda h: (h.created_at, h.saga_id), reverse=True)
        return found[:limit]

    def counts(self, name: str | None = None) -> dict[str, int]:
        """How many sagas of each status the store holds (every status; 0 when none);
        with ``name``, of that saga class only."""
        found = dict.fromkeys((st.value for st in SagaStatus), 0)
        for record in list(self._records.values()):
            if name is None or record.saga_name == name:
                found[record.status.value] += 1
        return found

    def load_raw(self, saga_id: str) -> _Held | None:
        record = self._records.get(saga_id)
        return None if record is None else self._held(record)

    def _held(self, record: SagaRecord) -> _Held:
        why = self._quarantined.get(record.saga_id)
        return _Held(record, None if why is None else why[0])

    def quarantine(self, saga_id: str, reason: str) -> None:
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("quarantine needs a reason: say why the saga is set aside")
        if saga_id not in self._records:
            raise SagaNotFound(saga_id)
        self._quarantined[saga_id] = (reason, time.time())

    def unquarantine(self, saga_id: str) -> bool:
        return self._quarantined.pop(saga_id, None) is not None

    def quarantined(self) -> list[Quarantined]:
        found = [
            Quarantined(sid, self._records[sid].saga_name, reason, at)
            for sid, (reason, at) in list(self._quarantined.items())
        ]
        return sorted(found, key=lambda q: (q.at, q.saga_id))

    def claim_incident(self, incident: Incident, by: str) -> bool:
        """Claim ``incident`` for ``by``: ``True`` the first time, and for a later
        incident of the saga (it moved on and stalled anew); see
        :meth:`SQLStore.claim_incident <sagaflow.stores._sql.SQLStore.claim_incident>`."""
        key = (incident.saga_id, incident.kind)
        with self._lock:
            if self._claims.get(key, -math.inf) >= incident.since:
                return False
            self._claims[key] = incident.since
            return True

    def add_signal(
        self, saga_id: str, name: str, signal_id: str, payload: str, at: float
    ) -> Signal | None:
        with self._lock:
            record = self._records.get(saga_id)
            if record is None:
                raise SagaNotFound(saga_id)
            kept = self._signals.setdefault(saga_id, [])
            if any(s.signal_id == signal_id for s in kept):
                return None  # a duplicate, even once the saga finished
            if record.status.is_terminal:
                raise SignalRefused(
                    saga_id, name, f"it is {record.status.value}: a finished saga takes no signals"
                )
            self._seq += 1
            signal = Signal(saga_id, self._seq, name, signal_id, payload, at)
            kept.append(signal)
            return signal

    def next_signal(self, saga_id: str, name: str, after: int) -> Signal | None:
        for signal in list(self._signals.get(saga_id, ())):
            if signal.name == name and signal.seq > after:
                return signal
        return None

    def signals(self, saga_id: str) -> list[Signal]:
        return list(self._signals.get(saga_id, ()))

    def due(self, now: float, limit: int = 100) -> list[str]:
        found = []
        for record in list(self._records.values()):
            waiting = record.waiting
            if waiting is None or record.status not in _PARKABLE:
                continue
            if record.saga_id in self._quarantined:
                continue
            woken = record.wake_at is not None and record.wake_at <= now
            if not woken and waiting:
                woken = self.next_signal(
                    record.saga_id, waiting, record.signal_marks.get(waiting, 0)
                ) is not None
            if woken:
                found.append((record.wake_at if record.wake_at is not None else now,
                              record.saga_id))
        found.sort()
        return [saga_id for _, saga_id in found[:limit]]

    def by_key(
        self, key: str, saga_name: str | None = None, *, unfinished: bool = True
    ) -> list[str]:
        found = [
            r for r in list(self._records.values())
            if r.business_key == key and not (unfinished and r.status.is_terminal)
            and (saga_name is None or r.saga_name == saga_name)
        ]
        found.sort(key=lambda r: (-r.created_at, r.saga_id))
        return [r.saga_id for r in found]

    def decode(
        self, stored: object, cls: type | None = None, *, raw_data: bool = False
    ) -> SagaRecord:
        if not isinstance(stored, _Held):
            raise TypeError(f"{stored!r} did not come from this MemoryStore")
        return stored.record

    def register(self, *saga_classes: type) -> None:
        """Nothing to do: the memory store keeps the instances themselves."""

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._records)} sagas)"

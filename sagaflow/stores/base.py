"""The store protocol: where runs are recorded, write-ahead.

A driver calls :meth:`Store.save` after every decision of the engine and before it acts
on it, so a step never starts before its "started" record is saved and its outcome is
saved before the next one starts. Records are plain data (see :mod:`sagaflow.records`);
durable stores serialize them (:mod:`sagaflow.codec`), the memory store keeps the objects.

Recovery and operators read undecoded sagas (:class:`Stored`) with :meth:`Store.scan`
and :meth:`Store.load_raw`, and decode each one with :meth:`Store.decode`, so that one
damaged record is reported by its id and never stops the others. A saga that cannot be
decoded or driven is *quarantined* (:meth:`Store.quarantine`): set aside with the
reason, its record untouched, until an operator lifts it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any, Protocol, runtime_checkable

import attrs

from ..messages import Message
from ..records import SagaRecord, SagaStatus, Signal

__all__ = ["AsyncStoreMixin", "OutboxStore", "Quarantined", "Store", "Stored"]


@attrs.frozen
class Quarantined:
    """A saga set aside: its id and name (``None`` if its row is gone), why, since when."""

    saga_id: str
    saga_name: str | None
    reason: str
    at: float


class Stored(Protocol):
    """A saga as a store keeps it, not decoded: enough to decide what to do with it."""

    @property
    def saga_id(self) -> str: ...

    @property
    def saga_name(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def updated_at(self) -> float: ...

    @property
    def quarantined(self) -> str | None:
        """Why the saga was set aside (:meth:`Store.quarantine`), or ``None``."""

    @property
    def parked(self) -> bool:
        """Whether the saga is parked at a wait (a row until its signal or time comes)."""

    @property
    def wake_at(self) -> float | None:
        """When the saga is due again (a wait's timeout, a retry, a deadline), or ``None``."""

    @property
    def business_key(self) -> str | None:
        """The saga's business key (``@saga(key=...)``), read without decoding it."""

    @property
    def outcome(self) -> str:
        """The saga's outcome in one word (:data:`~sagaflow.records.OUTCOMES`): what
        ``sagaflow sagas list`` shows, read without decoding the record."""


@runtime_checkable
class Store(Protocol):
    """What the orchestrator needs of a store, sync and async."""

    def create(self, record: SagaRecord) -> SagaRecord | None:
        """Insert ``record`` unless its saga id exists; return the existing record if it does."""

    def save(self, record: SagaRecord) -> None:
        """Persist ``record`` (durably, for a durable store) before returning.

        Raises :class:`~sagaflow.ConcurrentModification` if someone else saved the
        saga since this copy was loaded; nothing is written then.
        """

    def load(self, saga_id: str) -> SagaRecord | None:
        """The record of ``saga_id``, or ``None``."""

    def query(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> list[SagaRecord]:
        """Records by status and saga name, most recently updated first."""

    def scan(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        newest_first: bool = False,
        limit: int | None = None,
        parked: bool | None = None,
        after: tuple[float, str] | None = None,
    ) -> Iterator[Stored]:
        """Sagas matching ``status`` and ``name``, undecoded: by saga id, or most
        recently updated first; at most ``limit``. ``parked``: only the sagas parked at
        a wait (``True``) or only the others (``False``). ``after`` (newest first only):
        start after the saga of this ``(updated_at, saga_id)`` (keyset paging)."""

    def load_raw(self, saga_id: str) -> Stored | None:
        """The undecoded saga ``saga_id``, or ``None``."""

    def decode(self, stored: Stored, cls: type | None = None) -> SagaRecord:
        """The record of ``stored``, its data an instance of ``cls`` (default: the class
        registered for it). Raises :class:`~sagaflow.CorruptRecord` naming the saga."""

    def register(self, *saga_classes: type) -> None:
        """Tell the store which classes its sagas' data are instances of."""

    def quarantine(self, saga_id: str, reason: str) -> None:
        """Set ``saga_id`` aside (never claimed or recovered until lifted), saying why;
        its record is left as it is. :class:`~sagaflow.SagaNotFound` if absent."""

    def unquarantine(self, saga_id: str) -> bool:
        """Lift ``saga_id``'s quarantine; whether it was quarantined."""

    def quarantined(self) -> list[Quarantined]:
        """Every quarantined saga, the longest set aside first."""

    async def acreate(self, record: SagaRecord) -> SagaRecord | None:
        """:meth:`create`, for the async driver."""

    async def asave(self, record: SagaRecord) -> None:
        """:meth:`save`, for the async driver."""

    async def aload(self, saga_id: str) -> SagaRecord | None:
        """:meth:`load`, for the async driver."""

    # -- signals and waiting sagas --------------------------------------------------

    def add_signal(
        self, saga_id: str, name: str, signal_id: str, payload: str, at: float
    ) -> Signal | None:
        """Store a signal for ``saga_id``, durably, in one transaction with the check of
        its row: :class:`~sagaflow.SagaNotFound` if there is none,
        :class:`~sagaflow.SignalRefused` if it finished; ``None`` (nothing changes) if a
        signal with ``signal_id`` is stored for it already; else the stored signal, its
        ``seq`` above every earlier one of the saga."""

    def next_signal(self, saga_id: str, name: str, after: int) -> Signal | None:
        """The signal ``name`` of ``saga_id`` with the smallest ``seq`` above ``after``."""

    def signals(self, saga_id: str) -> list[Signal]:
        """Every signal stored for ``saga_id``, delivered or not, in arrival order."""

    def due(self, now: float, limit: int = 100) -> list[str]:
        """Ids of parked sagas (not quarantined; RUNNING at a wait, or a choreography
        RUNNING or COMPENSATING between its events) to resume: their wake time has
        come (``wake_at <= now``) or a signal they wait for arrived; earliest first."""

    def by_key(
        self, key: str, saga_name: str | None = None, *, unfinished: bool = True
    ) -> list[str]:
        """Ids of the unfinished sagas (``unfinished=False``: of any status) whose business
        key is ``key``, newest first."""

    async def aadd_signal(
        self, saga_id: str, name: str, signal_id: str, payload: str, at: float
    ) -> Signal | None:
        """:meth:`add_signal`, for the async driver."""

    async def anext_signal(self, saga_id: str, name: str, after: int) -> Signal | None:
        """:meth:`next_signal`, for the async driver."""


@runtime_checkable
class OutboxStore(Protocol):
    """A store with an outbox (the memory, SQLite and PostgreSQL stores all have one).

    A checkpoint that records a step's domain events for the first time writes one
    message per event into the outbox, in its own transaction: a saga's events are
    there once its checkpoint is committed, never before, and never an event of an
    attempt that failed (it is not in the record either). A relay
    (:class:`sagaflow.outbox.Relay`) publishes them after. A separate protocol from
    :class:`Store`, so that a store of one's own need not have an outbox to run sagas.
    """

    def outbox(self, limit: int = 100) -> list[Message]:
        """The messages not relayed yet, in the order they were written (each saga's
        in the order it emitted them); at most ``limit``."""

    def relayed(self, ids: Collection[str]) -> None:
        """Mark the messages ``ids`` relayed: :meth:`outbox` gives them no more."""

    def outbox_failed(self, ids: Collection[str], error: str) -> None:
        """A publisher refused the messages ``ids``: count an attempt, keep ``error``."""

    def relay_outbox(self, publish: Callable[[list[Message]], Any], limit: int = 100) -> int:
        """Hand the next ``limit`` messages to ``publish`` and mark them relayed once it
        returns; how many. If it raises, none is marked (:meth:`outbox_failed`) and the
        error is raised. PostgreSQL holds the rows locked meanwhile (``FOR UPDATE SKIP
        LOCKED``): two relays never publish one message at once."""

    def outbox_stats(self) -> Any:
        """What waits: an :class:`~sagaflow.stores._sql.OutboxStats`."""

    def on_outbox(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after each commit of this store (in this process) that
        wrote messages; returns the function that stops it."""

    def publish_lifecycle(self, *event_types: type) -> None:
        """From now on, also write the saga's lifecycle events of these classes
        (:class:`sagaflow.events.SagaCompleted`...) to the outbox, in the checkpoint
        that records them, under the id ``"{saga_id}:h{n}"`` (``n``: the event's place
        in the saga's history). None given: only domain events (the default)."""


class AsyncStoreMixin:
    """Async methods that call the sync ones: right for stores that never block."""

    def create(self, record: SagaRecord) -> SagaRecord | None:
        raise NotImplementedError  # pragma: no cover - provided by the store

    def save(self, record: SagaRecord) -> None:
        raise NotImplementedError  # pragma: no cover - provided by the store

    def load(self, saga_id: str) -> SagaRecord | None:
        raise NotImplementedError  # pragma: no cover - provided by the store

    async def acreate(self, record: SagaRecord) -> SagaRecord | None:
        return self.create(record)

    async def asave(self, record: SagaRecord) -> None:
        self.save(record)

    async def aload(self, saga_id: str) -> SagaRecord | None:
        return self.load(saga_id)

    def add_signal(
        self, saga_id: str, name: str, signal_id: str, payload: str, at: float
    ) -> Signal | None:
        raise NotImplementedError  # pragma: no cover - provided by the store

    def next_signal(self, saga_id: str, name: str, after: int) -> Signal | None:
        raise NotImplementedError  # pragma: no cover - provided by the store

    async def aadd_signal(
        self, saga_id: str, name: str, signal_id: str, payload: str, at: float
    ) -> Signal | None:
        return self.add_signal(saga_id, name, signal_id, payload, at)

    async def anext_signal(self, saga_id: str, name: str, after: int) -> Signal | None:
        return self.next_signal(saga_id, name, after)

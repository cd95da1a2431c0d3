"""The queue of the PostgreSQL store (see :mod:`sagaflow.worker`): enqueueing, claims
under a lease (``FOR UPDATE SKIP LOCKED``; never a quarantined saga), renewals,
releases, fenced saves, and wake-ups.

Wake-ups: what makes a saga due sooner than the workers may expect tells them with a
``NOTIFY`` on the store's channel (:attr:`Queue.channel`; its payload is the time the
saga is due, a Unix time as text), sent when its transaction commits: an enqueue, a
release, a park by a process of its own, a signal to a parked saga (which makes it due
at once). A worker listens (:meth:`Queue.wakeups`) on a connection of its own, so that
it never polls for signals; it still looks for the earliest ``run_at`` (:meth:`Queue.
next_due`) to sleep until then, at most its poll interval.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from ..errors import StoreError
from ..records import SagaRecord, SagaStatus
from ._pglayout import PostgresStoredSaga, select_columns, spilled_joins
from ._sql import SCHEMA_VERSION, Run, Select, SQLStore

__all__ = ["Queue", "notify_sql", "outbox_channel", "wake_channel"]

_CLAIM = (
    "WITH picked AS ("
    " SELECT saga_id FROM sagaflow_sagas t"
    " WHERE run_at <= %(now)s AND saga_name = ANY(%(names)s) AND fingerprint = ANY(%(fps)s)"
    " AND (lease_until IS NULL OR lease_until < clock_timestamp())"
    " AND saga_id <> ALL(%(busy)s)"
    " AND NOT EXISTS (SELECT 1 FROM sagaflow_quarantine q WHERE q.saga_id = t.saga_id)"
    " ORDER BY run_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
    "), s AS ("
    " UPDATE sagaflow_sagas t SET owner = %(owner)s, fence = t.fence + 1,"
    " lease_until = clock_timestamp() + make_interval(secs => %(lease)s),"
    " run_at = %(now)s + %(lease)s"
    " FROM picked WHERE t.saga_id = picked.saga_id RETURNING t.*"
    f") SELECT {select_columns(SCHEMA_VERSION)} FROM s{spilled_joins(SCHEMA_VERSION)}"
)
# Row locks are taken in saga id order, by renewals as by the writers' batches, so that
# the two never deadlock.
_RENEW = (
    "WITH held AS (SELECT saga_id FROM sagaflow_sagas WHERE saga_id = ANY(%s) AND owner = %s"
    " AND run_at IS NOT NULL ORDER BY saga_id FOR NO KEY UPDATE)"
    " UPDATE sagaflow_sagas s SET lease_until = clock_timestamp() + make_interval(secs => %s),"
    " run_at = %s FROM held WHERE s.saga_id = held.saga_id RETURNING s.saga_id, s.fence"
)
_RELEASE = (
    "UPDATE sagaflow_sagas SET owner = NULL, lease_until = NULL, fence = fence + 1,"
    " run_at = %s WHERE saga_id = %s AND fence = %s AND run_at IS NOT NULL"
)


def notify_sql(statement: str, mark: str) -> str:
    """``statement`` (an INSERT or UPDATE) that also notifies channel and payload (two
    more parameters) if it changed a row; it returns a row if it did."""
    if "RETURNING" not in statement:
        statement += " RETURNING saga_id"
    return f"WITH changed AS ({statement}) SELECT pg_notify({mark}, {mark}) FROM changed"


_RELEASE_NOTIFY = notify_sql(_RELEASE, "%s")
# Parked and released: a signal it waits for that committed meanwhile makes it due now.
_WAKE_SIGNALLED = notify_sql(
    "UPDATE sagaflow_sagas s SET run_at = %s WHERE s.saga_id = %s AND s.owner IS NULL"
    " AND s.run_at > %s AND s.waiting IS NOT NULL AND EXISTS (SELECT 1 FROM sagaflow_signals g"
    " WHERE g.saga_id = s.saga_id AND g.name = s.waiting AND g.seq > s.waiting_after)",
    "%s",
)
# A signal stored for a parked saga that nobody holds (in the signal's transaction,
# after the saga's row is locked): due at once. One held by a worker is its to release.
_SIGNAL_WAKES = notify_sql(
    "UPDATE sagaflow_sagas SET run_at = ? WHERE saga_id = ? AND waiting = ? AND owner IS NULL"
    " AND run_at > ?",
    "?",
)
#: How many of the queue's first rows :meth:`Queue.next_due` looks at before all of it.
_NEXT_DUE_FIRST = 256
_DUE_FILTER = (
    " run_at IS NOT NULL AND saga_name = ANY(%(names)s) AND fingerprint = ANY(%(fps)s)"
    " AND saga_id <> ALL(%(busy)s)"
    " AND NOT EXISTS (SELECT 1 FROM sagaflow_quarantine q WHERE q.saga_id = t.saga_id)"
)
# The earliest run_at among the first rows of the queue (in run_at order: the index, a
# plan that stale statistics cannot spoil, as they can the filtered query's: right after
# thousands of sagas parked, the planner reads them all); the whole queue only when none
# of those is this worker's to claim.
_NEXT_DUE = (
    "SELECT COALESCE((SELECT run_at FROM (SELECT saga_id, saga_name, fingerprint, run_at"
    f" FROM sagaflow_sagas WHERE run_at IS NOT NULL ORDER BY run_at LIMIT {_NEXT_DUE_FIRST}) t"
    f" WHERE{_DUE_FILTER} ORDER BY run_at LIMIT 1),"
    f" (SELECT run_at FROM sagaflow_sagas t WHERE{_DUE_FILTER} ORDER BY run_at LIMIT 1))"
)


def wake_channel(schema: str | None) -> str:
    """The ``NOTIFY`` channel of the store in ``schema`` (channels are the database's:
    stores in other schemas do not wake each other's workers)."""
    if schema is None:
        return "sagaflow"
    name = f"sagaflow.{schema}"
    if len(name.encode()) > 63:  # PostgreSQL's limit on a channel's name
        name = "sagaflow." + hashlib.sha256(schema.encode()).hexdigest()[:32]
    return name


def outbox_channel(schema: str | None) -> str:
    """The ``NOTIFY`` channel on which a checkpoint that wrote outbox rows wakes the
    relays of the store in ``schema``."""
    if schema is None:
        return "sagaflow_outbox"
    name = f"sagaflow_outbox.{schema}"
    if len(name.encode()) > 63:
        name = "sagaflow_outbox." + hashlib.sha256(schema.encode()).hexdigest()[:32]
    return name


def _due_at(payload: str) -> float:
    """A notification's payload: when something is due (unreadable: now)."""
    try:
        return float(payload)
    except ValueError:
        return -math.inf


class Queue(SQLStore):
    """A PostgreSQL store's queue verbs and fenced saves, over its :meth:`_query`."""

    conninfo: str
    schema: str | None

    def _query(self, statement: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        """Run one statement (psycopg's ``%s`` marks): its rows, or its row count."""
        raise NotImplementedError

    def _timeout(self) -> int:
        raise NotImplementedError

    @property
    def channel(self) -> str:
        """The ``NOTIFY`` channel that wakes this store's workers."""
        return wake_channel(self.schema)

    @property
    def outbox_channel(self) -> str:
        """The ``NOTIFY`` channel that wakes this store's outbox relays."""
        return outbox_channel(self.schema)

    def save(self, record: SagaRecord, *, fence: int | None = None) -> None:
        """Commit ``record``; durable when this returns. Optimistic concurrency as in
        every store; with ``fence`` (a worker's lease token), the saga must still be
        held under that token, else :class:`~sagaflow.LeaseLost` and nothing is written.
        """
        self._save(record, fence)

    async def asave(self, record: SagaRecord, *, fence: int | None = None) -> None:
        """:meth:`save`, group-committed with other sagas' checkpoints."""
        await self._asave(record, fence)

    def load_raw(self, saga_id: str) -> PostgresStoredSaga | None:
        """The stored form of ``saga_id``, not decoded; ``None`` if absent."""
        found = self._fetch(Select(saga_id=saga_id))
        return found[0] if found and isinstance(found[0], PostgresStoredSaga) else None

    def status_of(self, saga_id: str) -> SagaStatus | None:
        """Just the status of ``saga_id`` (``None`` if absent): a cheap poll."""
        rows = self._query("SELECT status FROM sagaflow_sagas WHERE saga_id = %s", (saga_id,))
        return SagaStatus(rows[0][0]) if rows else None

    # -- the queue (see sagaflow.worker) -------------------------------------------------

    def enqueue(self, record: SagaRecord, run_at: float | None = None) -> SagaRecord | None:
        """Insert ``record`` as queued, for a worker to run from ``run_at`` (default:
        ``record.updated_at``); like :meth:`create`, return the stored record instead
        if its id exists."""
        return self.enqueue_many([record], run_at)[0]

    def enqueue_many(
        self, records: Iterable[SagaRecord], run_at: float | None = None
    ) -> list[SagaRecord | None]:
        """:meth:`enqueue` for many records, committed together."""
        records = list(records)
        items = [
            self._item(r, create=True, run_at=r.updated_at if run_at is None else run_at)
            for r in records
        ]
        self._commit.submit(items)
        out: list[SagaRecord | None] = []
        for record, item in zip(records, items, strict=True):
            if item.error is not None:
                raise item.error
            out.append(self._created(record, item))
        return out

    async def aenqueue(self, record: SagaRecord, run_at: float | None = None) -> SagaRecord | None:
        """:meth:`enqueue`, group-committed with other writes."""
        when = record.updated_at if run_at is None else run_at
        return await self._acreate(self._item(record, create=True, run_at=when), record)

    def claim(
        self,
        owner: str,
        limit: int,
        *,
        lease: float,
        now: float,
        names: Collection[str],
        fingerprints: Collection[str],
        exclude: Collection[str] = (),
    ) -> list[PostgresStoredSaga]:
        """Take up to ``limit`` queued sagas that are due (``run_at <= now``), not held
        under a live lease and not quarantined, of the given names and definition
        fingerprints.

        ``FOR UPDATE SKIP LOCKED``: concurrent claims never wait for each other nor take
        the same saga. Each claimed saga's ``fence`` is bumped (its ``fence`` here is
        the new lease token), its ``owner`` set, and its lease runs ``lease`` seconds of
        the database's clock. Sagas in ``exclude`` (those the caller is running) are
        left alone even if their lease lapsed: a heartbeat renews it.
        """
        if limit < 1 or not names:
            return []
        self._check_writable()
        params = {
            "now": now, "lease": float(lease), "owner": owner, "limit": int(limit),
            "names": list(names), "fps": list(fingerprints), "busy": list(exclude),
        }  # fmt: skip
        return [PostgresStoredSaga.of(r) for r in self._query(_CLAIM, params)]

    def renew(
        self, owner: str, saga_ids: Collection[str], *, lease: float, now: float
    ) -> dict[str, int]:
        """Extend ``owner``'s leases on ``saga_ids`` by ``lease`` seconds; returns the
        sagas still held, with their tokens (the others were taken over or finished)."""
        if not saga_ids:
            return {}
        rows = self._query(_RENEW, (sorted(saga_ids), owner, float(lease), now + lease))
        return {sid: fence for sid, fence in rows}

    def release(self, saga_id: str, fence: int, run_at: float) -> bool:
        """Give a held saga back to the queue, due at ``run_at`` (infinity: when a signal
        makes it due), if ``fence`` is still its token. The token is bumped, so the
        releasing worker's later writes fail. The workers are told of it."""
        if math.isinf(run_at):
            return bool(self._query(_RELEASE, (run_at, saga_id, fence)) == 1)
        return len(self._query(_RELEASE_NOTIFY, (run_at, saga_id, fence, self.channel,
                                                 repr(run_at)))) == 1

    def park(
        self, saga_id: str, fence: int, wake_at: float | None, now: float
    ) -> float | None:
        """Release a held saga that parked at a wait: due at ``wake_at`` (its timeout,
        timer or deadline; ``None``: only a signal wakes it), or at ``now`` if a signal it
        waits for is stored already. When it is due now (``math.inf``: when a signal
        comes), or ``None`` if it was not held under ``fence`` any more.

        The signal may commit while the worker parks the saga, after the driver looked
        for it and before the release: the release commits first, then this looks again
        (a signal committed later finds the saga released, and makes it due itself)."""
        due = math.inf if wake_at is None else wake_at
        if not self.release(saga_id, fence, due):
            return None
        if self._query(_WAKE_SIGNALLED, (now, saga_id, now, self.channel, repr(now))):
            return now
        return due

    def next_due(
        self, names: Collection[str], fingerprints: Collection[str], exclude: Collection[str] = ()
    ) -> float | None:
        """When the next saga that :meth:`claim` (with these arguments) could take is
        due: the earliest ``run_at`` (a held saga's is its lease's end), or ``None``."""
        if not names:
            return None
        params = {"names": list(names), "fps": list(fingerprints), "busy": list(exclude)}
        rows = self._query(_NEXT_DUE, params)
        due = rows[0][0] if rows else None
        return None if due is None or math.isinf(due) else float(due)

    def _signalled(self, run: Run, saga_id: str, name: str, at: float) -> None:
        run(_SIGNAL_WAKES, (at, saga_id, name, at, self.channel, repr(at)))

    async def wakeups(self) -> AsyncIterator[float]:
        """Listen on :attr:`channel`, on a connection of its own: yields ``-inf`` once
        listening (whatever was due before may not have been told: look now), then, at
        each notification, when its saga is due. Raises :class:`~sagaflow.StoreError`
        when the connection fails (listen again: a new call)."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=self._timeout()
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot listen to the sagaflow store at {self._where()}: {exc}"
                             ) from exc
        try:
            async with conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                yield -math.inf
                async for note in conn.notifies():
                    yield _due_at(note.payload)
        except psycopg.Error as exc:
            raise StoreError(f"listening to the sagaflow store at {self._where()} failed: {exc}"
                             ) from exc

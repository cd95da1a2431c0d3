"""The queue of the PostgreSQL store (see :mod:`sagaflow.worker`): enqueueing, claims
under a lease (``FOR UPDATE SKIP LOCKED``; never a quarantined saga), renewals,
releases, fenced saves."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from ..records import SagaRecord, SagaStatus
from ._pglayout import PostgresStoredSaga, select_columns, spilled_joins
from ._sql import SCHEMA_VERSION, Select, SQLStore

__all__ = ["Queue"]

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


class Queue(SQLStore):
    """A PostgreSQL store's queue verbs and fenced saves, over its :meth:`_query`."""

    def _query(self, statement: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        """Run one statement (psycopg's ``%s`` marks): its rows, or its row count."""
        raise NotImplementedError

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
        """Give a held saga back to the queue, due at ``run_at``, if ``fence`` is still
        its token. The token is bumped, so the releasing worker's later writes fail."""
        return bool(self._query(_RELEASE, (run_at, saga_id, fence)) == 1)

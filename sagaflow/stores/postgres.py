"""The PostgreSQL store: durable sagas shared by many processes and machines (psycopg 3).

The layout (schema version 4, created on first use in the connection's schema;
``sagaflow_meta`` holds the version; an older one is migrated when opened) is the
SQLite store's (:mod:`sagaflow.stores._rows`), plus a queue. JSON is kept as ``text``:
the store never looks inside it, and ``jsonb`` would make the server parse every
checkpoint. The queue columns of ``sagaflow_sagas`` (see :mod:`sagaflow.worker`):
``run_at`` (when a worker may take the saga; ``NULL``: not queued, as for a saga an
:class:`~sagaflow.Orchestrator` runs in its own process; infinity: a parked saga only a
signal wakes), ``owner`` and ``lease_until`` (the worker holding it, until when: the
database's clock), and ``fence``, a token bumped at every claim and release. A worker's
writes carry the token it claimed with (:meth:`PostgresStore.fenced`); once another
worker has taken the saga over, they fail with :class:`~sagaflow.LeaseLost` and change
nothing. Any other save is by a process that drives the saga itself: it takes the saga
out of the queue (and from a worker that held it), unless it parks it: a parked saga is
queued, due at its wake time, whoever parked it, for the workers to resume. Claims never
take a quarantined saga. Wake-ups: see :mod:`sagaflow.stores._pgqueue`.

Writes are write-ahead: ``save`` and ``asave`` return once the record is committed
(with the server's ``synchronous_commit``, by default on: durable), group-committed by
``writers`` connections of the store's own (:mod:`sagaflow.stores._commit`). Every
statement passes its values as parameters; the only SQL composed at run time is the
optional schema name, quoted as an identifier.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from ..codec import Codec
from ..errors import ConcurrentModification, LeaseLost, StoreError
from ..messages import Message
from ..records import SagaRecord, Signal
from ._commit import Committer, Lane, Write
from ._pglayout import MIGRATIONS, PostgresStoredSaga, error_type, select_columns, spilled_joins
from ._pgqueue import Queue, notify_sql
from ._rows import AT, COLUMNS, StoredSaga
from ._sql import OUTBOX_INSERT, SCHEMA_VERSION, Run, Select, resignal, signalled_set
from .base import Quarantined, Stored

__all__ = [
    "SCHEMA_VERSION",
    "FencedStore",
    "PostgresStore",
    "PostgresStoredSaga",
]

log = logging.getLogger("sagaflow.stores.postgres")

_Conn = psycopg.Connection[tuple[Any, ...]]

_N = len(COLUMNS)
_WAITING, _WAKE_AT = AT["waiting"], AT["wake_at"]
_WAITING_AFTER = AT["waiting_after"]
_RESIGNAL = resignal().replace("?", "%s")
_INSERT = (
    f"INSERT INTO sagaflow_sagas ({', '.join(COLUMNS)}, run_at) "
    f"VALUES ({', '.join(['%s'] * (_N + 1))}) "
    "ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id"
)
# The queue columns after a save (%s is positional: the flag is bound three times).
# A worker's save (fenced) of a saga it holds leaves them to the worker, unless the saga
# is finished: it leaves the queue. Any other save is by a process that drives the saga
# itself: it is nobody's (a worker that held it loses it: the token moves on), and
# queued only if it parks, due at its wake time (infinity: a signal wakes it), for
# whichever worker then resumes it.
_UPDATE = (
    "UPDATE sagaflow_sagas SET "
    + ", ".join(f"{c} = %s" for c in COLUMNS[1:])
    + ", run_at = CASE WHEN %s THEN run_at ELSE %s END"
    + ", fence = CASE WHEN %s AND owner IS NOT NULL THEN fence + 1 ELSE fence END"
    + ", owner = CASE WHEN %s THEN owner END"
    + ", lease_until = CASE WHEN %s THEN lease_until END"
    + ", " + signalled_set("%s", "%s", "%s")
    + " WHERE saga_id = %s AND version = %s AND (%s::bigint IS NULL OR fence = %s)"
    + " RETURNING saga_id"
)
# The same, telling the workers (see _pgqueue.notify_sql) that a saga is queued: an
# enqueued saga, a saga parked by a process of its own.
_INSERT_NOTIFY = notify_sql(_INSERT, "%s")
_UPDATE_NOTIFY = notify_sql(_UPDATE, "%s")
_APPEND = {
    "history": "INSERT INTO sagaflow_history (saga_id, seq, type, at, step, attempt, error, "
    "detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
    "events": "INSERT INTO sagaflow_events (saga_id, seq, body) VALUES (%s, %s, %s)",
    "path": "INSERT INTO sagaflow_path (saga_id, seq, source, trigger, destination) "
    "VALUES (%s, %s, %s, %s, %s)",
    "outbox": OUTBOX_INSERT.replace("?", "%s"),  # never twice: ON CONFLICT (id) skips
}
_REPLAY = " ON CONFLICT DO NOTHING"
# The relay's batch: the next unrelayed rows no other relay holds, locked until its
# transaction ends.
_OUTBOX_CLAIM = (
    "SELECT n, id, type, saga_id, saga_name, seq, body, at FROM sagaflow_outbox"
    " WHERE relayed_at IS NULL ORDER BY n LIMIT %s FOR UPDATE SKIP LOCKED"
)
# Each saga's unrelayed messages up to a point, locked or not (a plain read waits for
# no lock): which of a batch's messages are next for their saga.
_OUTBOX_BEFORE = (
    "SELECT saga_id, id FROM sagaflow_outbox WHERE relayed_at IS NULL"
    " AND saga_id = ANY(%s) AND n <= %s ORDER BY n"
)
#: What a read that only indexes serve runs first (see _execute_indexed).
_INDEXED = ("SET LOCAL enable_seqscan = off",)
_ROLLED_BACK = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


class PostgresStore(Queue):
    """Durable saga records in PostgreSQL, shared by every process that opens it.

    ``conninfo`` is a libpq connection string or URL (``postgresql://user@host/db``).
    ``schema`` puts the tables in that schema (created if absent; default: the
    connection's ``search_path``). ``pool_size`` bounds the connections used for reads
    and queue operations. Writes are group-committed by ``writers`` connections of their
    own: async checkpoints by as many threads, so that one batch executes while another
    commits. ``max_batch`` bounds the checkpoints in one transaction. ``codec`` turns
    records into JSON (default: :data:`sagaflow.codec.default_codec`). ``readonly=True``
    reads only (in read-only transactions): nothing is created or migrated, a database
    without sagaflow's tables is a :class:`~sagaflow.StoreError`, writes are refused.

    Thread-safe, and usable from any number of event loops. It does not survive
    ``fork()``: open one per process. Use it as a context manager or call :meth:`close`.
    """

    MARK = "%s"
    # Signals to one saga wait for each other (and for a checkpoint of it in flight), so
    # that their numbers follow the order they commit in: a reader never sees a later
    # one before an earlier one is visible.
    LOCK_ROW = " FOR NO KEY UPDATE"

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None = None,
        pool_size: int = 4,
        codec: Codec | None = None,
        max_batch: int = 500,
        writers: int = 2,
        connect_timeout: float = 10.0,
        readonly: bool = False,
    ) -> None:
        for name, value in (("pool_size", pool_size), ("writers", writers)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        if schema is not None and (not isinstance(schema, str) or not schema):
            raise ValueError(f"schema must be a non-empty string, got {schema!r}")
        super().__init__(codec, readonly)
        self.conninfo = conninfo
        self.schema = schema
        self._connect_timeout = connect_timeout
        self._commit = Committer(
            self._write_batch, [Lane() for _ in range(writers)], max_batch,
            "sagaflow-postgres", self._closed_error,
        )  # fmt: skip
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": self._timeout()}
        if readonly:
            kwargs["options"] = "-c default_transaction_read_only=on"
        self._pool: ConnectionPool[_Conn] = ConnectionPool(
            conninfo, min_size=1, max_size=pool_size, kwargs=kwargs,
            configure=self._configure, open=False, name="sagaflow",
        )  # fmt: skip
        try:
            if readonly:
                # One connection first: a server that is down fails here at once (the
                # pool would retry until its timeout), as a writer's does below.
                psycopg.connect(conninfo, **kwargs).close()
                self._pool.open(wait=True, timeout=connect_timeout)
                with self._pool.connection(timeout=connect_timeout) as conn, conn.transaction():
                    self._init_schema(conn)
            else:
                # The writer's connection first: a wrong URL or a server that is down
                # fails here at once, with libpq's own message (the pool would retry).
                lane = self._commit.lanes[0]
                with lane.lock:
                    conn = self._connect_writer(lane)
                    with conn.transaction():
                        self._init_schema(conn)
                self._pool.open(wait=True, timeout=connect_timeout)
        except StoreError:
            self._pool.close()
            raise
        except psycopg.Error as exc:
            self._pool.close()
            raise StoreError(f"cannot open the sagaflow store at {self._where()}: {exc}") from exc
        except BaseException as exc:
            self._pool.close()
            if type(exc).__name__ == "PoolTimeout":
                raise StoreError(
                    f"cannot connect to PostgreSQL at {self._where()} within "
                    f"{connect_timeout:g}s: is the server running, and the URL right?"
                ) from exc
            raise
        self._select = f"SELECT {select_columns(self.layout)} FROM sagaflow_sagas s" + (
            spilled_joins(self.layout)
        )

    # -- connections and schema --------------------------------------------------------

    def _timeout(self) -> int:
        return max(1, round(self._connect_timeout))

    error_type = staticmethod(error_type)

    def _where(self) -> str:
        try:
            info = psycopg.conninfo.conninfo_to_dict(self.conninfo)
        except psycopg.Error:
            return "?"
        host = info.get("host") or "localhost"
        return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"

    def _configure(self, conn: _Conn) -> None:
        if self.schema is None:
            return
        with conn.transaction():
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    def _connect_writer(self, lane: Lane) -> _Conn:
        conn: _Conn | None = lane.conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        try:
            # Autocommit: a lone checkpoint is one statement, its own transaction (one
            # round trip); batches open theirs.
            conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=self._timeout())
            if self.schema is not None:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        except psycopg.Error as exc:
            lane.conn = None
            raise StoreError(
                f"cannot connect to the sagaflow store at {self._where()}: {exc}"
            ) from exc
        lane.conn = conn
        return conn

    def _init_schema(self, conn: _Conn) -> None:
        if not self.readonly:
            # One process at a time creates the tables: others wait here, then find them.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('sagaflow schema'))")
            if self.schema is not None:
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
        found = conn.execute("SELECT to_regclass('sagaflow_meta')").fetchone()
        self._open_schema(
            lambda text, params: _rows(conn.execute(_marks(text), params)),
            found is not None and found[0] is not None,
            MIGRATIONS,
        )

    def _execute(self, statement: str, params: Sequence[Any] = (), *, write: bool = False) -> Any:
        return self._query(_marks(statement), params)

    def _execute_indexed(self, statement: str, params: Sequence[Any]) -> Any:
        # Sequential scans priced out for this read only: a table just filled has no
        # statistics yet (until autovacuum's ANALYZE), and the planner then reads it
        # all rather than the small partial indexes that serve the read.
        return self._query(_marks(statement), params, _INDEXED)

    def _query(
        self,
        statement: str,
        params: Sequence[Any] | Mapping[str, Any] = (),
        settings: Sequence[str] = (),
    ) -> Any:
        """Run one statement on a pooled (autocommit) connection: its rows (or, without
        a result, its row count). A connection that turns out dead (the server
        restarted, an idle connection was cut) is replaced and the statement run once
        more; database errors become StoreError."""
        self._check_open()
        for attempt in (1, 2):
            conn: _Conn | None = None
            try:
                with self._pool.connection(timeout=self._connect_timeout) as conn:
                    if not settings:
                        return _rows(conn.execute(statement, params))
                    with conn.transaction():
                        for setting in settings:
                            conn.execute(setting)
                        return _rows(conn.execute(statement, params))
            except psycopg.OperationalError as exc:
                if attempt == 1 and conn is not None and (conn.broken or conn.closed):
                    continue
                raise StoreError(f"the sagaflow store at {self._where()} failed: {exc}") from exc
            except psycopg.Error as exc:
                raise StoreError(f"the sagaflow store at {self._where()} failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _transact(self, work: Callable[[Run], Any]) -> Any:
        """``work`` in one transaction on a pooled connection, committed when this
        returns. A connection found dead at the first statement (nothing done yet) is
        replaced once; a failure later leaves the outcome to the caller to find out."""
        self._check_writable()
        for attempt in (1, 2):
            conn: _Conn | None = None
            ran: list[int] = []  # one item per statement that went through
            try:
                with (
                    self._pool.connection(timeout=self._connect_timeout) as conn,
                    conn.transaction(),
                ):
                    return work(_counted(conn, ran))
            except psycopg.OperationalError as exc:
                if attempt == 1 and not ran and conn is not None and (conn.broken or conn.closed):
                    continue
                raise StoreError(f"the sagaflow store at {self._where()} failed: {exc}") from exc
            except psycopg.Error as exc:
                raise StoreError(f"the sagaflow store at {self._where()} failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the write path ----------------------------------------------------------------

    def _write_batch(self, batch: list[Write], lane: Lane, retries: int = 5) -> None:
        """Write ``batch`` in one transaction (a lone write that is one statement: that
        statement, one round trip); if a statement fails (a value the server refuses),
        each item again in its own, so that each waiter gets its own outcome. A
        transaction the server rolled back (a deadlock, a serialization failure) is run
        again."""
        try:
            conn = self._connect_writer(lane)
        except StoreError as exc:
            for item in batch:
                item.error = exc
            return
        first = batch[0]
        try:
            if len(batch) == 1 and not (
                first.history or first.events or first.path or first.outbox
            ):
                outcomes = [self._apply_one(conn, first)]
            else:
                with conn.transaction():
                    outcomes = self._apply(conn, batch)
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                # The connection failed: whether the commit happened is unknown.
                with contextlib.suppress(Exception):
                    conn.close()
                error = StoreError(
                    f"the connection to the sagaflow store at {self._where()} failed during "
                    f"a write, which may or may not have been committed: {exc}"
                )
                for item in batch:
                    item.error = error
                return
            if isinstance(exc, _ROLLED_BACK) and retries > 0:
                self._write_batch(batch, lane, retries - 1)
            elif len(batch) > 1:
                for item in batch:
                    self._write_batch([item], lane)
            else:
                batch[0].error = StoreError(
                    f"saga {batch[0].row[0]!r}: the sagaflow store refused the write: {exc}"
                )
            return
        self._committed(batch, outcomes)

    def _apply_one(self, conn: _Conn, item: Write) -> BaseException | bool:
        """Write ``item`` as one statement (autocommit: its own transaction)."""
        due = _queued_at(item)
        tell = () if due is None else (self.channel, repr(due))
        if item.create:
            statement = _INSERT if due is None else _INSERT_NOTIFY
            return conn.execute(statement, (*item.row, item.run_at, *tell)).fetchone() is not None
        statement = _UPDATE if due is None else _UPDATE_NOTIFY
        if conn.execute(statement, (*_update_params(item), *tell)).fetchone() is not None:
            return True
        outcomes: list[BaseException | bool] = [True]
        self._lost_races(conn, [item], [0], outcomes)
        return outcomes[0]

    def _apply(self, conn: _Conn, batch: list[Write]) -> list[BaseException | bool]:
        """Write ``batch`` inside the open transaction; one outcome per item (True:
        written or inserted; False: a create whose id existed; an error: a lost race)."""
        outcomes: list[BaseException | bool] = [True] * len(batch)
        # In saga id order: row locks are always taken in that order (see _RENEW).
        order = sorted(range(len(batch)), key=lambda k: batch[k].row[0])
        creates = [k for k in order if batch[k].create]
        saves = [k for k in order if not batch[k].create]
        cur = conn.cursor()
        if creates:
            cur.executemany(
                _INSERT, [(*batch[k].row, batch[k].run_at) for k in creates], returning=True
            )
            for k in creates:
                outcomes[k] = cur.fetchone() is not None
                cur.nextset()
        if saves:
            cur.executemany(_UPDATE, [_update_params(batch[k]) for k in saves], returning=True)
            lost = []
            for k in saves:
                if cur.fetchone() is None:
                    lost.append(k)
                cur.nextset()
            if lost:
                self._lost_races(conn, batch, lost, outcomes)
        due = [
            when for item, outcome in zip(batch, outcomes, strict=True)
            if outcome is True and (when := _queued_at(item)) is not None
        ]
        if due:  # sent when the transaction commits
            cur.execute("SELECT pg_notify(%s, %s)", (self.channel, repr(min(due))))
        for what in _APPEND:
            # by replay: a replayed row may be stored already
            rows: dict[bool, list[tuple[Any, ...]]] = {False: [], True: []}
            for item, outcome in zip(batch, outcomes, strict=True):
                if outcome is True:
                    rows[item.replay].extend(getattr(item, what))
            for replay, found in rows.items():
                if found:
                    again = replay and what != "outbox"
                    cur.executemany(_APPEND[what] + (_REPLAY if again else ""), found)
        if any(item.outbox and outcome is True for item, outcome in zip(batch, outcomes,
                                                                         strict=True)):
            # The relays hear of it when (if) the transaction commits.
            cur.execute("SELECT pg_notify(%s, '')", (self.outbox_channel,))
        return outcomes

    def _lost_races(
        self,
        conn: _Conn,
        batch: list[Write],
        lost: list[int],
        outcomes: list[BaseException | bool],
    ) -> None:
        """Why the saves at ``lost`` changed no row: another version, another lease
        token, or no such saga (then a save of a record never created inserts it)."""
        ids = [batch[k].row[0] for k in lost]
        found = {
            sid: (version, fence)
            for sid, version, fence in conn.execute(
                "SELECT saga_id, version, fence FROM sagaflow_sagas WHERE saga_id = ANY(%s)",
                (ids,),
            )
        }
        for k in lost:
            item = batch[k]
            sid = item.row[0]
            now = found.get(sid)
            if now is None:
                if item.replay:  # never created in this store: insert it, as memory would
                    conn.execute(_INSERT, (*item.row, None))
                    conn.execute(_RESIGNAL, (sid,))
                    continue
                outcomes[k] = ConcurrentModification(sid, item.expected, None)
            elif item.fence is not None and now[1] != item.fence:
                outcomes[k] = LeaseLost(sid, item.fence, now[1])
            else:
                outcomes[k] = ConcurrentModification(sid, item.expected, now[0])

    def _fetch(self, select: Select) -> list[StoredSaga]:
        where, params = select.render("%s", error_type("s.error"))
        return [PostgresStoredSaga.of(r) for r in self._query(self._select + where, params)]

    def relay_outbox(self, publish: Callable[[list[Message]], Any], limit: int = 100) -> int:
        """Relay one batch, in one transaction that holds its rows locked (``FOR UPDATE
        SKIP LOCKED``: another relay takes other rows meanwhile, never these): publish
        them, mark them relayed, commit. A saga's message is published only after its
        earlier ones: one whose earlier message another relay holds is left (unlocked
        at the end, for a later batch). If ``publish`` raises, nothing is marked
        relayed; the attempt is counted (:meth:`outbox_failed`) and the error raised."""
        self._check_writable()
        try:
            with (
                self._pool.connection(timeout=self._connect_timeout) as conn,
                conn.transaction(),
            ):
                rows = conn.execute(_OUTBOX_CLAIM, (int(limit),)).fetchall()
                if not rows:
                    return 0
                messages = _in_order(conn, [Message(*row[1:]) for row in rows], rows[-1][0])
                if not messages:
                    return 0
                ids = [m.id for m in messages]
                try:
                    publish(messages)
                except Exception as exc:
                    failed: Exception | None = exc
                else:
                    failed = None
                    conn.execute(
                        "UPDATE sagaflow_outbox SET relayed_at = %s WHERE id = ANY(%s)",
                        (time.time(), ids),
                    )
        except psycopg.Error as exc:
            raise StoreError(f"the sagaflow store at {self._where()} failed: {exc}") from exc
        if failed is not None:
            self.outbox_failed(ids, f"{type(failed).__name__}: {failed}"[:2000])
            raise failed
        return len(messages)

    def fenced(self, tokens: Mapping[str, int]) -> FencedStore:
        """A view of this store whose saves of a saga in ``tokens`` carry its lease
        token (see :class:`FencedStore`)."""
        return FencedStore(self, tokens)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Finish pending writes, stop the writer threads, close the connections."""
        if self._closed:
            return
        self._closed = True
        self._commit.close()
        for lane in self._commit.lanes:
            with lane.lock:
                if lane.conn is not None:
                    with contextlib.suppress(Exception):
                        lane.conn.close()
        self._pool.close()

    def __repr__(self) -> str:
        schema = "" if self.schema is None else f", schema={self.schema!r}"
        return f"PostgresStore({self._where()!r}{schema})"


class FencedStore:
    """A :class:`PostgresStore` as one worker sees it: every save of a saga the worker holds
    carries the lease token it claimed the saga with, so that once another worker
    has taken the saga over, this one's writes fail (:class:`~sagaflow.LeaseLost`)
    instead of overwriting the new owner's record.

    ``tokens`` maps saga id to token, and is read at each save: the worker adds a saga
    when it claims it and removes it when done. Sagas not in it are saved unfenced.
    Everything else goes straight to the store.
    """

    __slots__ = ("store", "tokens")

    def __init__(self, store: PostgresStore, tokens: Mapping[str, int]) -> None:
        self.store = store
        self.tokens = tokens

    def save(self, record: SagaRecord) -> None:
        self.store.save(record, fence=self.tokens.get(record.saga_id))

    async def asave(self, record: SagaRecord) -> None:
        await self.store.asave(record, fence=self.tokens.get(record.saga_id))

    def create(self, record: SagaRecord) -> SagaRecord | None:
        return self.store.create(record)

    def load(self, saga_id: str) -> SagaRecord | None:
        return self.store.load(saga_id)

    def query(self, **filters: Any) -> list[SagaRecord]:
        return self.store.query(**filters)

    def counts(self, name: str | None = None) -> dict[str, int]:
        return self.store.counts(name)

    def scan(self, **filters: Any) -> Iterator[StoredSaga]:
        return self.store.scan(**filters)

    def browse(self, **filters: Any) -> list[StoredSaga]:
        return self.store.browse(**filters)

    def load_raw(self, saga_id: str) -> PostgresStoredSaga | None:
        return self.store.load_raw(saga_id)

    def decode(self, stored: Stored, cls: type | None = None) -> SagaRecord:
        return self.store.decode(stored, cls)

    def register(self, *saga_classes: type) -> None:
        self.store.register(*saga_classes)

    def quarantine(self, saga_id: str, reason: str) -> None:
        self.store.quarantine(saga_id, reason)

    def unquarantine(self, saga_id: str) -> bool:
        return self.store.unquarantine(saga_id)

    def quarantined(self) -> list[Quarantined]:
        return self.store.quarantined()

    async def acreate(self, record: SagaRecord) -> SagaRecord | None:
        return await self.store.acreate(record)

    async def aload(self, saga_id: str) -> SagaRecord | None:
        return await self.store.aload(saga_id)

    def add_signal(
        self, saga_id: str, name: str, signal_id: str, payload: str, at: float
    ) -> Signal | None:
        return self.store.add_signal(saga_id, name, signal_id, payload, at)

    async def aadd_signal(
        self, saga_id: str, name: str, signal_id: str, payload: str, at: float
    ) -> Signal | None:
        return await self.store.aadd_signal(saga_id, name, signal_id, payload, at)

    def next_signal(self, saga_id: str, name: str, after: int) -> Signal | None:
        return self.store.next_signal(saga_id, name, after)

    async def anext_signal(self, saga_id: str, name: str, after: int) -> Signal | None:
        return await self.store.anext_signal(saga_id, name, after)

    def signals(self, saga_id: str) -> list[Signal]:
        return self.store.signals(saga_id)

    def due(self, now: float, limit: int = 100) -> list[str]:
        return self.store.due(now, limit)

    def by_key(
        self, key: str, saga_name: str | None = None, *, unfinished: bool = True
    ) -> list[str]:
        return self.store.by_key(key, saga_name, unfinished=unfinished)

    def outbox(self, limit: int = 100) -> list[Message]:
        return self.store.outbox(limit)

    def relayed(self, ids: Collection[str]) -> None:
        self.store.relayed(ids)

    def outbox_failed(self, ids: Collection[str], error: str) -> None:
        self.store.outbox_failed(ids, error)

    def relay_outbox(self, publish: Callable[[list[Message]], Any], limit: int = 100) -> int:
        return self.store.relay_outbox(publish, limit)

    def outbox_stats(self) -> Any:
        return self.store.outbox_stats()

    def on_outbox(self, callback: Callable[[], None]) -> Callable[[], None]:
        return self.store.on_outbox(callback)

    def publish_lifecycle(self, *event_types: type) -> None:
        self.store.publish_lifecycle(*event_types)

    def __repr__(self) -> str:
        return f"FencedStore({self.store!r}, {len(self.tokens)} held)"


def _update_params(item: Write) -> tuple[Any, ...]:
    """:data:`_UPDATE`'s parameters for ``item`` (see its comment)."""
    row = item.row
    held = item.fence is not None and not item.terminal
    fence = item.fence
    sid, waiting = row[0], row[_WAITING]
    # signalled_set's marks: the id, the wait, the mark, the wait, the id
    flag = (waiting, sid, waiting, row[_WAITING_AFTER], sid)
    return (*row[1:], held, _parked_at(item), fence is None, held, held, *flag, sid,
            item.expected, fence, fence)


def _parked_at(item: Write) -> float | None:
    """When the saga ``item`` saves is due, if it parks (infinity: at a signal only)."""
    row = item.row
    if item.terminal or row[_WAITING] is None:
        return None
    wake = row[_WAKE_AT]
    return math.inf if wake is None else float(wake)


def _queued_at(item: Write) -> float | None:
    """When the saga is due, if ``item`` queues it and the workers are to be told: an
    enqueue, or a park by a process that is not a worker holding the saga."""
    if item.create:
        return item.run_at
    if item.fence is not None:
        return None  # the worker that holds it releases it (and tells) itself
    due = _parked_at(item)
    return None if due is None or due == math.inf else due


def _counted(conn: _Conn, ran: list[int]) -> Run:
    """A :data:`~._sql.Run` on ``conn`` that counts into ``ran`` the statements done."""

    def run(statement: str, params: Sequence[Any]) -> Any:
        found = _rows(conn.execute(_marks(statement), params))
        ran.append(1)
        return found

    return run


def _marks(statement: str) -> str:
    """Shared SQL (``?`` marks) in psycopg's parameter style."""
    return statement.replace("?", "%s")


def _rows(cur: psycopg.Cursor[Any]) -> Any:
    return cur.fetchall() if cur.description is not None else cur.rowcount


def _in_order(conn: _Conn, claimed: list[Message], last: int) -> list[Message]:
    """The messages of ``claimed`` (in ``n`` order, locked by this transaction) that come
    next for their saga: a saga's run of them stops at the first message that another
    relay holds (or one not yet claimed), so a saga's messages are never published out
    of order."""
    sagas = sorted({m.saga_id for m in claimed})
    mine = {m.id for m in claimed}
    blocked: set[str] = set()
    keep: set[str] = set()
    for saga_id, mid in conn.execute(_OUTBOX_BEFORE, (sagas, last)):
        if saga_id in blocked:
            continue
        if mid in mine:
            keep.add(mid)
        else:
            blocked.add(saga_id)
    return [m for m in claimed if m.id in keep]

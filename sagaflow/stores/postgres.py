"""The PostgreSQL store: durable sagas shared by many processes and machines (psycopg 3).

Layout (schema version 2, created on first use in the connection's schema;
``sagaflow_meta`` holds the version; a version-1 schema is migrated when opened) is the
SQLite store's, plus a queue:

- ``sagaflow_sagas``: one row per saga: id, name, definition fingerprint, status,
  machine state, version, cursor, timestamps; as JSON text the step records, the saga
  instance (``data``), the error, the incident (``failures``); and the recent tail of
  its lifecycle events (``history``), domain events (``events``) and path through the
  machine (``path``). JSON is kept as ``text``: the store never looks inside it, and
  ``jsonb`` would make the server parse every checkpoint.
- ``sagaflow_history``, ``sagaflow_events`` and ``sagaflow_path``: the older events and
  edges, append-only: every 32, a chunk moves out of the saga's row into these tables,
  so every checkpoint writes O(1) bytes however long the saga runs;
- ``sagaflow_quarantine``: sagas set aside (their rows untouched), with the reason;
- the queue columns of ``sagaflow_sagas`` (see :mod:`sagaflow.worker`): ``run_at``
  (when a worker may take the saga; ``NULL``: not queued, as for a saga an
  :class:`~sagaflow.Orchestrator` runs in its own process), ``owner`` and
  ``lease_until`` (the worker holding it, until when: the database's clock), and
  ``fence``, a token bumped at every claim and release. A worker's writes carry the
  token it claimed with (:meth:`PostgresStore.fenced`); once another worker has taken
  the saga over, they fail with :class:`LeaseLost` and change nothing.

Writes are write-ahead: ``save`` and ``asave`` return once the record is committed
(with the server's ``synchronous_commit``, by default on: durable). Checkpoints of many
sagas (threads, or tasks of an event loop) are *group-committed*: one writer takes
every pending write and commits them in one transaction, and each caller is released
when its own row is committed. Optimistic concurrency as in every store: a save names
the version it follows, and a row that moved on is never overwritten
(:class:`~sagaflow.ConcurrentModification`).

Every statement passes its values as parameters; the only SQL composed at run time is
the optional schema name, quoted as an identifier.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import operator
import os
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from ..codec import Codec, default_codec, describe_failure
from ..errors import (
    ConcurrentModification,
    CorruptRecord,
    LeaseLost,
    StoreError,
    UnknownSagaClass,
)
from ..records import SagaRecord, SagaStatus, StepRecord
from ._durable import INLINE, DurableRows, path_of, spilled
from .base import Stored

__all__ = [
    "SCHEMA_VERSION",
    "FencedStore",
    "PostgresStore",
    "PostgresStoredSaga",
]

log = logging.getLogger("sagaflow.stores.postgres")

#: The layout this code writes; a database with a newer one is refused.
SCHEMA_VERSION = 2

_Conn = psycopg.Connection[tuple[Any, ...]]

# Column order of sagaflow_sagas as a write binds it (the SQLite store's order).
_COLUMNS = (
    "saga_id", "saga_name", "fingerprint", "data_type", "status", "state", "version",
    "cursor", "undo", "created_at", "updated_at", "finished_at", "wake_at", "deadline_at",
    "compensation_deadline_at", "steps", "data", "error", "failures", "resolution",
    "history", "history_count", "events", "events_count", "path", "path_count",
)  # fmt: skip
_NCOLS = len(_COLUMNS)
_I = {name: i for i, name in enumerate(_COLUMNS)}
_QUEUE = ("run_at", "owner", "fence", "lease_until")
_TERMINAL_VALUES = frozenset(s.value for s in SagaStatus if s.is_terminal)

_SCHEMA = (
    """CREATE TABLE sagaflow_sagas (
        saga_id text PRIMARY KEY,
        saga_name text NOT NULL,
        fingerprint text NOT NULL,
        data_type text NOT NULL,
        status text NOT NULL,
        state text NOT NULL,
        version bigint NOT NULL,
        cursor integer NOT NULL,
        undo text NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        finished_at double precision,
        wake_at double precision,
        deadline_at double precision,
        compensation_deadline_at double precision,
        steps text NOT NULL,
        data text NOT NULL,
        error text,
        failures text,
        resolution text,
        history text NOT NULL,
        history_count integer NOT NULL,
        events text NOT NULL,
        events_count integer NOT NULL,
        path text NOT NULL DEFAULT '[]',
        path_count integer NOT NULL DEFAULT 0,
        run_at double precision,
        owner text,
        fence bigint NOT NULL DEFAULT 0,
        lease_until timestamptz
    ) WITH (fillfactor = 70)""",
    # fillfactor: a checkpoint rewrites the row and changes no indexed column, so with
    # room on the page PostgreSQL updates it in place (HOT) without touching an index.
    # Status changes a few times per saga: indexing (status, name) costs index writes
    # only then, and serves recovery and listings.
    "CREATE INDEX sagaflow_sagas_by_status ON sagaflow_sagas (status, saga_name)",
    # What workers claim: only queued sagas are in this index.
    "CREATE INDEX sagaflow_sagas_runnable ON sagaflow_sagas (run_at) WHERE run_at IS NOT NULL",
    """CREATE TABLE sagaflow_history (
        saga_id text NOT NULL,
        seq integer NOT NULL,
        type text NOT NULL,
        at double precision NOT NULL,
        step text,
        attempt integer NOT NULL,
        error text,
        detail text,
        PRIMARY KEY (saga_id, seq)
    )""",
    """CREATE TABLE sagaflow_events (
        saga_id text NOT NULL,
        seq integer NOT NULL,
        body text NOT NULL,
        PRIMARY KEY (saga_id, seq)
    )""",
)
#: What version 2 adds to version 1 (the whole of it for a new schema: _SCHEMA first).
_SCHEMA_2 = (
    """CREATE TABLE sagaflow_path (
        saga_id text NOT NULL,
        seq integer NOT NULL,
        source text NOT NULL,
        trigger text NOT NULL,
        destination text NOT NULL,
        PRIMARY KEY (saga_id, seq)
    )""",
    """CREATE TABLE sagaflow_quarantine (
        saga_id text PRIMARY KEY,
        reason text NOT NULL,
        at double precision NOT NULL
    )""",
)
#: Version 1 to 2: the path columns (a migrated saga's path is empty) and tables.
_MIGRATE_1 = (
    "ALTER TABLE sagaflow_sagas ADD COLUMN path text NOT NULL DEFAULT '[]',"
    " ADD COLUMN path_count integer NOT NULL DEFAULT 0",
    *_SCHEMA_2,
)

_INSERT = (
    f"INSERT INTO sagaflow_sagas ({', '.join(_COLUMNS)}, run_at) "
    f"VALUES ({', '.join(['%s'] * (_NCOLS + 1))}) "
    "ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id"
)
# A finished saga leaves the queue: run_at, owner and lease are cleared by the save
# that finishes it (bound three times: %s is positional).
_UPDATE = (
    "UPDATE sagaflow_sagas SET "
    + ", ".join(f"{c} = %s" for c in _COLUMNS[1:])
    + ", run_at = CASE WHEN %s THEN NULL ELSE run_at END"
    + ", owner = CASE WHEN %s THEN NULL ELSE owner END"
    + ", lease_until = CASE WHEN %s THEN NULL ELSE lease_until END"
    + " WHERE saga_id = %s AND version = %s AND (%s::bigint IS NULL OR fence = %s)"
    + " RETURNING saga_id"
)
_INSERT_HISTORY = (
    "INSERT INTO sagaflow_history (saga_id, seq, type, at, step, attempt, error, detail) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
_INSERT_EVENT = "INSERT INTO sagaflow_events (saga_id, seq, body) VALUES (%s, %s, %s)"
_INSERT_PATH = (
    "INSERT INTO sagaflow_path (saga_id, seq, source, trigger, destination) "
    "VALUES (%s, %s, %s, %s, %s)"
)
_REPLAY = " ON CONFLICT DO NOTHING"

# Reading: the row, and the spilled events of sagas that have some, in one statement
# (one snapshot, so the counts always match the rows).
_COLS = ", ".join(f"s.{c}" for c in (*_COLUMNS, *_QUEUE))
_SPILLED = (
    " LEFT JOIN LATERAL (SELECT array_agg(type ORDER BY seq) AS h_type,"
    " array_agg(at ORDER BY seq) AS h_at, array_agg(step ORDER BY seq) AS h_step,"
    " array_agg(attempt ORDER BY seq) AS h_attempt, array_agg(error ORDER BY seq) AS h_error,"
    " array_agg(detail ORDER BY seq) AS h_detail FROM sagaflow_history"
    f" WHERE saga_id = s.saga_id AND s.history_count >= {INLINE}) h ON true"
    " LEFT JOIN LATERAL (SELECT array_agg(body ORDER BY seq) AS e_body FROM sagaflow_events"
    f" WHERE saga_id = s.saga_id AND s.events_count >= {INLINE}) e ON true"
    " LEFT JOIN LATERAL (SELECT array_agg(source ORDER BY seq) AS p_source,"
    " array_agg(trigger ORDER BY seq) AS p_trigger,"
    " array_agg(destination ORDER BY seq) AS p_destination FROM sagaflow_path"
    f" WHERE saga_id = s.saga_id AND s.path_count >= {INLINE}) p ON true"
)
_SELECT_LIST = (
    f"{_COLS}, h.h_type, h.h_at, h.h_step, h.h_attempt, h.h_error, h.h_detail, e.e_body,"
    " p.p_source, p.p_trigger, p.p_destination"
)
_SELECT = f"SELECT {_SELECT_LIST} FROM sagaflow_sagas s{_SPILLED}"

_CLAIM = (
    "WITH picked AS ("
    " SELECT saga_id FROM sagaflow_sagas"
    " WHERE run_at <= %(now)s AND saga_name = ANY(%(names)s) AND fingerprint = ANY(%(fps)s)"
    " AND (lease_until IS NULL OR lease_until < clock_timestamp())"
    " AND saga_id <> ALL(%(busy)s)"
    " ORDER BY run_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
    "), s AS ("
    " UPDATE sagaflow_sagas t SET owner = %(owner)s, fence = t.fence + 1,"
    " lease_until = clock_timestamp() + make_interval(secs => %(lease)s),"
    " run_at = %(now)s + %(lease)s"
    " FROM picked WHERE t.saga_id = picked.saga_id RETURNING t.*"
    f") SELECT {_SELECT_LIST} FROM s{_SPILLED}"
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


_ROLLED_BACK = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


@attrs.frozen(slots=True)
class PostgresStoredSaga:
    """A saga as stored, not yet decoded (decode it with :meth:`PostgresStore.decode`).

    Besides the record's headline fields, where it stands in the queue: ``run_at``
    (``None``: not queued), ``owner`` (the worker holding it), ``fence`` (the lease
    token of the latest claim) and ``lease_until``.
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
    run_at: float | None
    owner: str | None
    fence: int
    lease_until: Any
    columns: tuple[Any, ...] = attrs.field(repr=False)
    history: tuple[tuple[Any, ...], ...] = attrs.field(repr=False)
    events: tuple[str, ...] = attrs.field(repr=False)
    path: tuple[tuple[Any, ...], ...] = attrs.field(repr=False, default=())

    @classmethod
    def of(cls, row: Sequence[Any]) -> PostgresStoredSaga:
        q = _NCOLS
        h_type, h_at, h_step, h_attempt, h_error, h_detail, e_body, *edges = row[q + 4 :]
        history: tuple[tuple[Any, ...], ...] = ()
        if h_type:
            history = tuple(zip(h_type, h_at, h_step, h_attempt, h_error, h_detail, strict=True))
        path: tuple[tuple[Any, ...], ...] = ()
        if edges[0]:
            path = tuple(zip(*edges, strict=True))
        return cls(
            saga_id=row[0],
            saga_name=row[1],
            fingerprint=row[2],
            status=row[4],
            state=row[5],
            version=row[6],
            created_at=row[9],
            updated_at=row[10],
            finished_at=row[11],
            wake_at=row[12],
            deadline_at=row[13],
            data_type=row[3],
            run_at=row[q],
            owner=row[q + 1],
            fence=row[q + 2],
            lease_until=row[q + 3],
            columns=tuple(row[:q]),
            history=history,
            events=tuple(e_body or ()),
            path=path,
        )

    @property
    def is_terminal(self) -> bool:
        """Whether the stored status is a final one."""
        return self.status in _TERMINAL_VALUES

    @property
    def queued(self) -> bool:
        """Whether workers run this saga (it was enqueued), rather than one process."""
        return self.run_at is not None


class _Write:
    """One pending write: the saga's row and the event rows to append, encoded when the
    write is submitted (the engine mutates the record as soon as the caller goes on)."""

    __slots__ = (
        "create", "done", "error", "events", "expected", "fence", "future", "history",
        "inserted", "loop", "path", "replay", "row", "run_at", "terminal", "tracked",
    )  # fmt: skip

    def __init__(
        self,
        create: bool,
        row: tuple[Any, ...],
        expected: int,
        history: list[tuple[Any, ...]],
        events: list[tuple[Any, ...]],
        path: list[tuple[Any, ...]],
        replay: bool,
        fence: int | None,
        run_at: float | None,
        terminal: bool,
    ) -> None:
        self.create = create
        self.row = row
        self.expected = expected
        self.history = history
        self.events = events
        self.path = path
        self.replay = replay
        self.fence = fence
        self.run_at = run_at
        self.terminal = terminal
        self.done = False
        self.error: BaseException | None = None
        self.inserted = False
        self.future: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tracked: _Tracked | None = None


class _Lane:
    """A writer's connection (opened on first use, again after a failure) and its lock."""

    __slots__ = ("conn", "lock")

    def __init__(self) -> None:
        self.conn: _Conn | None = None
        self.lock = threading.Lock()


class _Tracked:
    """What this store knows of a running saga's stored form at ``version``, so that a
    checkpoint encodes only what changed (as in the SQLite store)."""

    __slots__ = (
        "events", "history", "inline_events", "inline_history", "inline_path", "path",
        "steps", "version",
    )  # fmt: skip

    def __init__(
        self,
        version: int,
        history: int,
        events: int,
        steps: list[tuple[Any, str]],
        inline_history: list[tuple[tuple[Any, ...], str]],
        inline_events: list[str],
        path: int,
        inline_path: list[str],
    ) -> None:
        self.version = version
        self.history = history
        self.events = events
        self.steps = steps
        self.inline_history = inline_history
        self.inline_events = inline_events
        self.path = path
        self.inline_path = inline_path


_step_values = operator.attrgetter(*(f.name for f in attrs.fields(StepRecord)))


class PostgresStore(DurableRows):
    """Durable saga records in PostgreSQL, shared by every process that opens it.

    ``conninfo`` is a libpq connection string or URL (``postgresql://user@host/db``).
    ``schema`` puts the tables in that schema (created if absent; default: the
    connection's ``search_path``). ``pool_size`` bounds the connections used for reads
    and queue operations. Writes are group-committed by ``writers`` connections of their
    own: async checkpoints by as many threads, so that one batch executes while another
    commits. ``max_batch`` bounds the checkpoints in one transaction. ``codec`` turns
    records into JSON (default: :data:`sagaflow.codec.default_codec`).

    Thread-safe, and usable from any number of event loops. It does not survive
    ``fork()``: open one per process. Use it as a context manager or call :meth:`close`.
    """

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
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        if writers < 1:
            raise ValueError(f"writers must be >= 1, got {writers!r}")
        if schema is not None and (not isinstance(schema, str) or not schema):
            raise ValueError(f"schema must be a non-empty string, got {schema!r}")
        self.conninfo = conninfo
        self.schema = schema
        self.codec = codec if codec is not None else default_codec
        self._max_batch = max_batch
        self._connect_timeout = connect_timeout
        self._closed = False
        self._pid = os.getpid()
        self._classes: dict[str, dict[str, type]] = {}
        self._data_types: dict[type, str] = {}
        self._known: dict[str, _Tracked] = {}
        self._pending: collections.deque[_Write] = collections.deque()
        # Lane 0 serves sync callers (each writes its own batch, helping the others)
        # and the first writer thread; async writes also go through the others, so that
        # a batch executes while the one before it commits.
        self._lanes = [_Lane() for _ in range(writers)]
        self._wakeup = threading.Event()
        self._writers: list[threading.Thread] = []
        self._writer_guard = threading.Lock()
        #: transactions committed, and the saga writes they carried
        self.commits = 0
        self.writes = 0

        self._pool: ConnectionPool[_Conn] = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(connect_timeout))},
            configure=self._configure,
            open=False,
            name="sagaflow",
        )
        try:
            # The writer's connection first: a wrong URL or a server that is down fails
            # here at once, with libpq's own message (the pool would retry for a while).
            lane = self._lanes[0]
            with lane.lock:
                self._init_schema(self._connect_writer(lane))
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

    # -- connections and schema --------------------------------------------------

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

    def _connect_writer(self, lane: _Lane) -> _Conn:
        conn = lane.conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        try:
            conn = psycopg.connect(
                self.conninfo,
                autocommit=False,
                connect_timeout=max(1, round(self._connect_timeout)),
            )
            if self.schema is not None:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
                conn.commit()
        except psycopg.Error as exc:
            lane.conn = None
            raise StoreError(
                f"cannot connect to the sagaflow store at {self._where()}: {exc}"
            ) from exc
        lane.conn = conn
        return conn

    def _init_schema(self, conn: _Conn) -> None:
        try:
            self._create_schema(conn)
            conn.commit()
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            raise

    def _create_schema(self, conn: _Conn) -> None:
        # One process at a time creates the tables: others wait here, then find them.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('sagaflow schema'))")
        if self.schema is not None:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS sagaflow_meta (key text PRIMARY KEY, value text NOT NULL)"
        )
        row = conn.execute(
            "SELECT value FROM sagaflow_meta WHERE key = 'schema_version'"
        ).fetchone()
        if row is None:
            for statement in (*_SCHEMA, *_SCHEMA_2):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO sagaflow_meta (key, value) VALUES ('schema_version', %s)",
                (str(SCHEMA_VERSION),),
            )
            return
        try:
            found = int(row[0])
        except (TypeError, ValueError):
            raise StoreError(
                f"{self._where()}: sagaflow_meta.schema_version is {row[0]!r}, not a "
                "number: the tables were not written by sagaflow, or are damaged"
            ) from None
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"{self._where()} has sagaflow schema version {found}, newer than this "
                f"sagaflow understands ({SCHEMA_VERSION}): upgrade sagaflow"
            )
        if found < 1:
            raise StoreError(f"{self._where()}: unknown sagaflow schema version {found}")
        if found == 1:
            for statement in _MIGRATE_1:
                conn.execute(statement)
            conn.execute(
                "UPDATE sagaflow_meta SET value = %s WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION),),
            )

    @property
    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        rows = self._execute("SELECT value FROM sagaflow_meta WHERE key = 'schema_version'")
        return int(rows[0][0])

    def _execute(self, statement: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        """Run one statement on a pooled (autocommit) connection: its rows (or, without
        a result, its row count). A connection that turns out dead (the server
        restarted, an idle connection was cut) is replaced and the statement run once
        more; database errors become StoreError."""
        self._check_open()
        for attempt in (1, 2):
            conn: _Conn | None = None
            try:
                with self._pool.connection(timeout=self._connect_timeout) as conn:
                    cur = conn.execute(statement, params)
                    return cur.fetchall() if cur.description is not None else cur.rowcount
            except psycopg.OperationalError as exc:
                if attempt == 1 and conn is not None and (conn.broken or conn.closed):
                    continue
                raise StoreError(f"the sagaflow store at {self._where()} failed: {exc}") from exc
            except psycopg.Error as exc:
                raise StoreError(f"the sagaflow store at {self._where()} failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- saga classes ------------------------------------------------------------

    def _steps(
        self, steps: list[StepRecord], cache: list[tuple[Any, str]] | None
    ) -> tuple[str, list[tuple[Any, str]]]:
        """The steps' JSON, re-encoding only the step records that changed."""
        dump_step = self.codec.dump_step
        if cache is None or len(cache) != len(steps):
            cache = [(_step_values(s), dump_step(s)) for s in steps]
        else:
            for i, s in enumerate(steps):
                values = _step_values(s)
                if values != cache[i][0]:
                    cache[i] = (values, dump_step(s))
        return "[" + ",".join([text for _, text in cache]) + "]", cache

    def _history(
        self,
        record: SagaRecord,
        stored: int,
        inline: list[tuple[tuple[Any, ...], str]],
    ) -> tuple[list[tuple[Any, ...]], list[tuple[tuple[Any, ...], str]]]:
        """Rows to append to sagaflow_history, and the new inline tail, given that the
        store has ``stored`` lifecycle events (the last ones in ``inline``)."""
        codec = self.codec
        history = record.history
        n = len(history)
        if n < stored:
            raise StoreError(
                f"saga {record.saga_id!r}: its history shrank since the last save; it is "
                "append-only"
            )
        for i in range(stored, n):
            row = codec.history_row(history[i])
            inline.append((row, codec.history_text(row)))
        cut = spilled(n) - spilled(stored)
        if not cut:
            return [], inline
        sid = record.saga_id
        first = spilled(stored)
        rows = [(sid, first + k, *inline[k][0]) for k in range(cut)]
        return rows, inline[cut:]

    def _events(
        self, record: SagaRecord, stored: int, inline: list[str]
    ) -> tuple[list[tuple[Any, ...]], list[str]]:
        """:meth:`_history` for the domain events."""
        events = record.events
        n = len(events)
        if n < stored:
            raise StoreError(
                f"saga {record.saga_id!r}: its domain events shrank since the last save; "
                "they are append-only"
            )
        dump_event = self.codec.dump_event
        for i in range(stored, n):
            inline.append(dump_event(events[i], record, i))
        cut = spilled(n) - spilled(stored)
        if not cut:
            return [], inline
        sid = record.saga_id
        first = spilled(stored)
        rows = [(sid, first + k, inline[k]) for k in range(cut)]
        return rows, inline[cut:]

    def _item(
        self,
        record: SagaRecord,
        create: bool,
        fence: int | None = None,
        run_at: float | None = None,
    ) -> _Write:
        """Encode a write of ``record``: a create, or a save of the next version."""
        self._check_open()
        sid = record.saga_id
        expected = record.version
        tracked = None if create else self._known.get(sid)
        if tracked is not None and tracked.version == expected:
            steps, step_cache = self._steps(record.steps, tracked.steps)
            hist_rows, hist_inline = self._history(
                record, tracked.history, tracked.inline_history
            )
            event_rows, event_inline = self._events(
                record, tracked.events, tracked.inline_events
            )
            path_rows, path_inline = self._path(record, tracked.path, tracked.inline_path)
            replay = False
        else:
            # Nothing known (a create, a record loaded elsewhere): encode every event;
            # the spilled ones already stored are skipped by the writer.
            tracked = None
            steps, step_cache = self._steps(record.steps, None)
            hist_rows, hist_inline = self._history(record, 0, [])
            event_rows, event_inline = self._events(record, 0, [])
            path_rows, path_inline = self._path(record, 0, [])
            replay = not create
        version = expected if create else expected + 1
        row = self._row(
            record,
            version,
            tracked is None,  # verify the data loads back at a saga's first save here
            steps,
            "[" + ",".join([text for _, text in hist_inline]) + "]",
            "[" + ",".join(event_inline) + "]",
            "[" + ",".join(path_inline) + "]",
        )
        terminal = record.status.is_terminal
        item = _Write(
            create, row, expected, hist_rows, event_rows, path_rows, replay, fence,
            None if terminal else run_at, terminal,
        )
        if terminal:
            self._known.pop(sid, None)  # keep the map to running sagas
            return item
        if tracked is None:
            tracked = _Tracked(
                version, len(record.history), len(record.events), step_cache, hist_inline,
                event_inline, len(record.path), path_inline,
            )
            if create:
                item.tracked = tracked  # installed once the insert is known to be new
            else:
                self._known[sid] = tracked
        else:
            tracked.version = version
            tracked.history = len(record.history)
            tracked.events = len(record.events)
            tracked.steps = step_cache
            tracked.inline_history = hist_inline
            tracked.inline_events = event_inline
            tracked.path = len(record.path)
            tracked.inline_path = path_inline
        return item

    # -- the write path (group commit) -------------------------------------------

    def _submit(self, items: Sequence[_Write]) -> None:
        """Queue ``items`` and write until they are committed (helping others' writes)."""
        pending = self._pending
        pending.extend(items)
        lane = self._lanes[0]
        try:
            for item in items:
                while not item.done:
                    with lane.lock:
                        if not item.done:
                            self._drain(lane)
        except BaseException:
            for item in items:
                if not item.done:
                    with contextlib.suppress(ValueError):  # taken: it will be written
                        pending.remove(item)
            raise

    def _submit_async(self, item: _Write) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        item.loop = loop
        item.future = loop.create_future()
        self._pending.append(item)
        if self._closed:  # closed meanwhile, by another thread: nobody would write it
            with contextlib.suppress(ValueError):
                self._pending.remove(item)
                raise StoreError(f"the sagaflow store at {self._where()} is closed")
        if not self._writers:
            self._start_writers()
        # Still set: the writer has not woken yet and will take this item too.
        if not self._wakeup.is_set():
            self._wakeup.set()
        return item.future

    def _start_writers(self) -> None:
        with self._writer_guard:
            if self._writers:
                return
            for lane in self._lanes:
                thread = threading.Thread(
                    target=self._serve, args=(lane,), name="sagaflow-postgres-writer",
                    daemon=True,
                )
                thread.start()
                self._writers.append(thread)

    def _serve(self, lane: _Lane) -> None:
        while True:
            self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                with lane.lock:
                    try:
                        self._drain(lane)
                    except Exception:  # the batch's waiters have their error: go on
                        log.exception("sagaflow: the PostgreSQL store's writer failed")
            if self._closed:
                return

    def _drain(self, lane: _Lane) -> None:
        """Write one batch of pending items in one transaction. Hold ``lane.lock``."""
        pending = self._pending
        batch: list[_Write] = []
        try:
            while len(batch) < self._max_batch:
                batch.append(pending.popleft())
        except IndexError:
            pass
        if not batch:
            return
        try:
            self._write_batch(batch, lane)
        except BaseException as exc:  # interrupted before COMMIT: nothing was written
            for item in batch:
                if item.error is None and not item.done:
                    item.error = StoreError(f"the write was interrupted: {exc!r}")
            raise
        finally:
            self._complete(batch)

    def _write_batch(self, batch: list[_Write], lane: _Lane, retries: int = 5) -> None:
        """Write ``batch`` in one transaction; if a statement fails (a value the server
        refuses), each item again in its own, so that each waiter gets its own outcome.
        A transaction the server rolled back (a deadlock, a serialization failure) is
        run again."""
        try:
            conn = self._connect_writer(lane)
        except StoreError as exc:
            for item in batch:
                item.error = exc
            return
        try:
            outcomes = self._apply(conn, batch)
            conn.commit()
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
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            if isinstance(exc, _ROLLED_BACK) and retries > 0:
                self._write_batch(batch, lane, retries - 1)
                return
            if len(batch) > 1:
                for item in batch:
                    self._write_batch([item], lane)
                return
            batch[0].error = StoreError(
                f"saga {batch[0].row[0]!r}: the sagaflow store refused the write: {exc}"
            )
            return
        except BaseException:
            with contextlib.suppress(Exception):
                conn.rollback()
            raise
        self.commits += 1
        self.writes += len(batch)
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                item.error = outcome
            else:
                item.inserted = outcome

    def _apply(self, conn: _Conn, batch: list[_Write]) -> list[BaseException | bool]:
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
            params = []
            for k in saves:
                item = batch[k]
                row = item.row
                done = item.terminal
                params.append(
                    (*row[1:], done, done, done, row[0], item.expected, item.fence, item.fence)
                )
            cur.executemany(_UPDATE, params, returning=True)
            lost = []
            for k in saves:
                if cur.fetchone() is None:
                    lost.append(k)
                cur.nextset()
            if lost:
                self._lost_races(conn, batch, lost, outcomes)
        history: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        path: list[tuple[Any, ...]] = []
        history_replay: list[tuple[Any, ...]] = []
        events_replay: list[tuple[Any, ...]] = []
        path_replay: list[tuple[Any, ...]] = []
        for item, outcome in zip(batch, outcomes, strict=True):
            if outcome is not True or not (item.history or item.events or item.path):
                continue
            (history_replay if item.replay else history).extend(item.history)
            (events_replay if item.replay else events).extend(item.events)
            (path_replay if item.replay else path).extend(item.path)
        for rows, statement in (
            (history, _INSERT_HISTORY),
            (history_replay, _INSERT_HISTORY + _REPLAY),
            (events, _INSERT_EVENT),
            (events_replay, _INSERT_EVENT + _REPLAY),
            (path, _INSERT_PATH),
            (path_replay, _INSERT_PATH + _REPLAY),
        ):
            if rows:
                cur.executemany(statement, rows)
        return outcomes

    def _lost_races(
        self,
        conn: _Conn,
        batch: list[_Write],
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
                    continue
                outcomes[k] = ConcurrentModification(sid, item.expected, None)
            elif item.fence is not None and now[1] != item.fence:
                outcomes[k] = LeaseLost(sid, item.fence, now[1])
            else:
                outcomes[k] = ConcurrentModification(sid, item.expected, now[0])

    def _complete(self, batch: list[_Write]) -> None:
        """Release the waiters: sync ones see ``done``; async ones get their future set
        on their own loop (one wake-up per loop, not per item)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Write]] = {}
        for item in batch:
            item.done = True
            if item.loop is not None:
                by_loop.setdefault(item.loop, []).append(item)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, items)

    # -- the Store protocol: sync ------------------------------------------------

    def create(self, record: SagaRecord) -> SagaRecord | None:
        """Insert ``record`` unless its saga id exists (then return the stored one).

        The first save of a saga: its data is checked to load back as itself, so a
        field that cannot be stored fails here, naming the field.
        """
        item = self._item(record, create=True)
        self._submit((item,))
        if item.error is not None:
            raise item.error
        return self._created(record, item)

    def _created(self, record: SagaRecord, item: _Write) -> SagaRecord | None:
        if item.inserted:
            self._learn(record)
            if item.tracked is not None and not record.status.is_terminal:
                self._known[record.saga_id] = item.tracked
            return None
        stored = self.load_raw(record.saga_id)
        if stored is None:  # deleted in between: nothing to report but a retry
            return self.create(record)
        if stored.saga_name == record.saga_name:
            return self.decode(stored, type(record.data))
        try:
            return self.decode(stored)
        except UnknownSagaClass:
            return self.decode(stored, raw_data=True)

    def save(self, record: SagaRecord, *, fence: int | None = None) -> None:
        """Commit ``record``; durable when this returns.

        Optimistic concurrency: the store's version must be ``record.version``, which
        is then bumped; else :class:`~sagaflow.ConcurrentModification` and nothing is
        written. With ``fence`` (a worker's lease token), the saga must still be held
        under that token; else :class:`LeaseLost` and nothing is written.
        """
        item = self._item(record, create=False, fence=fence)
        try:
            self._submit((item,))
        except BaseException:
            self._known.pop(record.saga_id, None)
            raise
        if item.error is not None:
            self._known.pop(record.saga_id, None)
            raise item.error
        record.version = item.expected + 1

    def load(self, saga_id: str) -> SagaRecord | None:
        """The record of ``saga_id`` (a fresh copy), or ``None``."""
        stored = self.load_raw(saga_id)
        return None if stored is None else self.decode(stored)

    def query(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> list[SagaRecord]:
        """Records by status and saga name, most recently updated first."""
        where, params = _filters(status, name)
        statement = f"{_SELECT}{where} ORDER BY s.updated_at DESC, s.saga_id"
        if limit is not None:
            statement += " LIMIT %s"
            params.append(int(limit))
        return [self.decode(s) for s in self._fetch(statement, params)]

    # -- the Store protocol: async -----------------------------------------------

    async def acreate(self, record: SagaRecord) -> SagaRecord | None:
        """:meth:`create`, group-committed with other sagas' writes."""
        item = self._item(record, create=True)
        await self._submit_async(item)
        if item.inserted:
            return self._created(record, item)
        return await asyncio.to_thread(self._created, record, item)

    async def asave(self, record: SagaRecord, *, fence: int | None = None) -> None:
        """:meth:`save`, group-committed: many sagas' checkpoints share a transaction,
        and this returns once *this* record is committed.

        If the awaiting task is cancelled meanwhile, the write still happens (it may
        already be committed) and ``record.version`` already counts it.
        """
        item = self._item(record, create=False, fence=fence)
        expected = item.expected
        record.version = expected + 1
        try:
            await self._submit_async(item)
        except asyncio.CancelledError:
            raise
        except BaseException:
            if record.version == expected + 1:
                record.version = expected
            self._known.pop(record.saga_id, None)
            raise

    async def aload(self, saga_id: str) -> SagaRecord | None:
        """:meth:`load` on a worker thread."""
        return await asyncio.to_thread(self.load, saga_id)

    # -- raw access: recovery and operators --------------------------------------

    def load_raw(self, saga_id: str) -> PostgresStoredSaga | None:
        """The stored form of ``saga_id``, not decoded; ``None`` if absent."""
        found = self._fetch(f"{_SELECT} WHERE s.saga_id = %s", [saga_id])
        return found[0] if found else None

    def status_of(self, saga_id: str) -> SagaStatus | None:
        """Just the status of ``saga_id`` (``None`` if absent): a cheap poll."""
        rows = self._execute("SELECT status FROM sagaflow_sagas WHERE saga_id = %s", (saga_id,))
        return SagaStatus(rows[0][0]) if rows else None

    def scan(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        batch: int = 500,
    ) -> Iterator[PostgresStoredSaga]:
        """Every stored saga matching ``status`` and ``name``, by saga id, undecoded.

        Reads in batches (each one consistent), so a huge table does not sit in memory.
        Decoding is left to :meth:`decode`, so one corrupted record is reported by its
        id and never stops the iteration.
        """
        where, params = _filters(status, name)
        joiner = " AND " if where else " WHERE "
        after: str | None = None
        while True:
            statement = f"{_SELECT}{where}"
            args = list(params)
            if after is not None:
                statement += f"{joiner}s.saga_id > %s"
                args.append(after)
            statement += " ORDER BY s.saga_id LIMIT %s"
            args.append(batch)
            found = self._fetch(statement, args)
            yield from found
            if len(found) < batch:
                return
            after = found[-1].saga_id

    def decode(
        self, stored: Stored, cls: type | None = None, *, raw_data: bool = False
    ) -> SagaRecord:
        """The record of ``stored``. ``cls`` is the saga class (default: the one
        registered for its name, or imported from its stored type path);
        ``raw_data=True`` leaves ``data`` as its JSON form. Raises
        :class:`~sagaflow.CorruptRecord` or :class:`~sagaflow.UnknownSaga`."""
        if not isinstance(stored, PostgresStoredSaga):
            raise TypeError(f"{stored!r} did not come from a PostgresStore")
        if cls is None and not raw_data:
            cls = self._class_for(stored)
        codec = self.codec
        c = stored.columns
        sid = stored.saga_id
        name = stored.saga_name
        try:
            loads = codec.loads_json
            text = c[_I["data"]]
            data = loads(text) if cls is None else codec.load_data(text, cls)
            error_text = c[_I["error"]]
            failures_text = c[_I["failures"]]
            record = SagaRecord(
                saga_id=sid,
                saga_name=name,
                fingerprint=stored.fingerprint,
                data=data,
                steps=codec.load_steps(c[_I["steps"]]),
                created_at=c[_I["created_at"]],
                status=SagaStatus(stored.status),
                state=stored.state,
                cursor=c[_I["cursor"]],
                undo=list(loads(c[_I["undo"]])),
                wake_at=c[_I["wake_at"]],
                deadline_at=c[_I["deadline_at"]],
                compensation_deadline_at=c[_I["compensation_deadline_at"]],
                updated_at=c[_I["updated_at"]],
                finished_at=c[_I["finished_at"]],
                error=None if error_text is None else codec.decode_error(loads(error_text)),
                failures={} if failures_text is None else dict(loads(failures_text)),
                events=[codec.load_event(body) for body in stored.events],
                history=[codec.event_from_row(h, sid, name) for h in stored.history],
                version=stored.version,
                resolution=c[_I["resolution"]],
                path=path_of(
                    sid, stored.path, loads(c[_I["path"]]), c[_I["path_count"]]
                ),
            )
            _merge_inline(record, stored, codec)
        except CorruptRecord:
            raise
        except Exception as exc:  # anything malformed: one error naming the saga
            raise CorruptRecord(sid, describe_failure(exc)) from exc
        # A copy made here may be saved later: its first save encodes it whole.
        self._known.pop(sid, None)
        return record

    def _fetch(self, statement: str, params: Sequence[Any]) -> list[PostgresStoredSaga]:
        return [PostgresStoredSaga.of(r) for r in self._execute(statement, params)]

    # -- the queue (see sagaflow.worker) -----------------------------------------

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
        self._submit(items)
        out: list[SagaRecord | None] = []
        for record, item in zip(records, items, strict=True):
            if item.error is not None:
                raise item.error
            out.append(self._created(record, item))
        return out

    async def aenqueue(self, record: SagaRecord, run_at: float | None = None) -> SagaRecord | None:
        """:meth:`enqueue`, group-committed with other writes."""
        item = self._item(
            record, create=True, run_at=record.updated_at if run_at is None else run_at
        )
        await self._submit_async(item)
        if item.inserted:
            return self._created(record, item)
        return await asyncio.to_thread(self._created, record, item)

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
        """Take up to ``limit`` queued sagas that are due (``run_at <= now``) and not
        held under a live lease, of the given names and definition fingerprints.

        ``FOR UPDATE SKIP LOCKED``: concurrent claims never wait for each other nor take
        the same saga. Each claimed saga's ``fence`` is bumped (its ``fence`` here is
        the new lease token), its ``owner`` set, and its lease runs ``lease`` seconds of
        the database's clock. Sagas in ``exclude`` (those the caller is running) are
        left alone even if their lease lapsed: a heartbeat renews it.
        """
        if limit < 1 or not names:
            return []
        params = {
            "now": now, "lease": float(lease), "owner": owner, "limit": int(limit),
            "names": list(names), "fps": list(fingerprints), "busy": list(exclude),
        }  # fmt: skip
        return [PostgresStoredSaga.of(r) for r in self._execute(_CLAIM, params)]

    def renew(
        self, owner: str, saga_ids: Collection[str], *, lease: float, now: float
    ) -> dict[str, int]:
        """Extend ``owner``'s leases on ``saga_ids`` by ``lease`` seconds; returns the
        sagas still held, with their tokens (the others were taken over or finished)."""
        if not saga_ids:
            return {}
        rows = self._execute(_RENEW, (sorted(saga_ids), owner, float(lease), now + lease))
        return {sid: fence for sid, fence in rows}

    def release(self, saga_id: str, fence: int, run_at: float) -> bool:
        """Give a held saga back to the queue, due at ``run_at``, if ``fence`` is still
        its token. The token is bumped, so the releasing worker's later writes fail."""
        self._known.pop(saga_id, None)  # whoever takes it next, its next save starts afresh
        return bool(self._execute(_RELEASE, (run_at, saga_id, fence)) == 1)

    def fenced(self, tokens: Mapping[str, int]) -> FencedStore:
        """A view of this store whose saves of a saga in ``tokens`` carry its lease
        token (see :class:`FencedStore`)."""
        return FencedStore(self, tokens)

    # -- lifecycle ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the sagaflow store at {self._where()} is closed")
        if os.getpid() != self._pid:
            raise StoreError(
                f"this PostgresStore was opened in process {self._pid}, before a fork: "
                "open a new PostgresStore in each process"
            )

    def close(self) -> None:
        """Finish pending writes, stop the writer thread, close the connections."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        for writer in self._writers:
            writer.join()
        for lane in self._lanes:
            with lane.lock:
                while self._pending:
                    self._drain(lane)
                if lane.conn is not None:
                    with contextlib.suppress(Exception):
                        lane.conn.close()
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self._execute("SELECT count(*) FROM sagaflow_sagas")[0][0])

    def __repr__(self) -> str:
        schema = "" if self.schema is None else f", schema={self.schema!r}"
        return f"PostgresStore({self._where()!r}{schema})"


class FencedStore:
    """A :class:`PostgresStore` as one worker sees it: every save of a saga the worker
    holds carries the lease token it claimed the saga with, so that once another worker
    has taken the saga over, this one's writes fail (:class:`LeaseLost`) instead of
    overwriting the new owner's record.

    ``tokens`` maps saga id to token, and is read at each save: the worker adds a saga
    when it claims it and removes it when done. Sagas not in it are saved unfenced.
    Everything else goes straight to the store.
    """

    __slots__ = ("store", "tokens")

    def __init__(self, store: PostgresStore, tokens: Mapping[str, int]) -> None:
        self.store = store
        self.tokens = tokens

    def create(self, record: SagaRecord) -> SagaRecord | None:
        return self.store.create(record)

    def save(self, record: SagaRecord) -> None:
        self.store.save(record, fence=self.tokens.get(record.saga_id))

    def load(self, saga_id: str) -> SagaRecord | None:
        return self.store.load(saga_id)

    def query(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> list[SagaRecord]:
        return self.store.query(status=status, name=name, limit=limit)

    def scan(
        self, *, status: Collection[SagaStatus] | None = None, name: str | None = None
    ) -> Iterator[PostgresStoredSaga]:
        return self.store.scan(status=status, name=name)

    def load_raw(self, saga_id: str) -> PostgresStoredSaga | None:
        return self.store.load_raw(saga_id)

    def decode(self, stored: Stored, cls: type | None = None) -> SagaRecord:
        return self.store.decode(stored, cls)

    def register(self, *saga_classes: type) -> None:
        self.store.register(*saga_classes)

    async def acreate(self, record: SagaRecord) -> SagaRecord | None:
        return await self.store.acreate(record)

    async def asave(self, record: SagaRecord) -> None:
        await self.store.asave(record, fence=self.tokens.get(record.saga_id))

    async def aload(self, saga_id: str) -> SagaRecord | None:
        return await self.store.aload(saga_id)

    def __repr__(self) -> str:
        return f"FencedStore({self.store!r}, {len(self.tokens)} held)"


def _resolve(items: list[_Write]) -> None:
    for item in items:
        future = item.future
        if future is None or future.done():  # its waiter was cancelled
            continue
        if item.error is not None:
            future.set_exception(item.error)
        else:
            future.set_result(None)


def _filters(
    status: Collection[SagaStatus] | None, name: str | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if status is not None:
        values = [SagaStatus(s).value for s in status]
        if not values:
            return " WHERE false", []
        clauses.append("s.status = ANY(%s)")
        params.append(values)
    if name is not None:
        clauses.append("s.saga_name = %s")
        params.append(name)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _merge_inline(record: SagaRecord, stored: PostgresStoredSaga, codec: Codec) -> None:
    """Append the inline tails to the spilled events, checking the counts add up."""
    c = stored.columns
    sid = stored.saga_id
    name = stored.saga_name
    for what, outside, inline_text, count in (
        ("lifecycle", stored.history, c[_I["history"]], c[_I["history_count"]]),
        ("domain", stored.events, c[_I["events"]], c[_I["events_count"]]),
    ):
        inline = codec.loads_json(inline_text)
        if len(outside) != spilled(count) or len(inline) != count - spilled(count):
            raise CorruptRecord(
                sid,
                f"its row counts {count} {what} events but {len(outside)} + "
                f"{len(inline)} are stored",
            )
        if what == "lifecycle":
            record.history.extend(codec.event_from_item(item, sid, name) for item in inline)
        else:
            record.events.extend(codec.decode_value(item) for item in inline)

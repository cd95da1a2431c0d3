"""The SQLite store: durable sagas in one file, on the standard library's ``sqlite3``.

Layout (schema version 2, created on first use; ``sagaflow_meta`` holds the version; a
version-1 database is migrated when opened):

- ``sagaflow_sagas``: one row per saga: id, name, definition fingerprint, status,
  machine state, version, cursor, timestamps; as JSON the step records, the saga
  instance (``data``), the error, the incident (``failures``); and the recent tail of
  its lifecycle events (``history``), domain events (``events``) and of its path
  through the machine (``path``, edges as ``[source, trigger, destination]``);
- ``sagaflow_history``, ``sagaflow_events`` and ``sagaflow_path``: the older events and
  edges, append-only, one row each: every 32, a chunk moves out of the saga's row into
  these tables;
- ``sagaflow_quarantine``: sagas set aside (their rows untouched), with the reason.

What a checkpoint writes: the saga's row, in one UPDATE, and every 32 events a chunk
of rows appended. Measured against the alternatives: a row plus one history row per
event costs a second b-tree page per commit (about 20% more per saga under
``synchronous=FULL``, more under NORMAL); the whole record as one JSON blob is as cheap
for short sagas but grows without bound, so a long saga's checkpoints would cost ever
more (quadratic in all). Keeping only the tail inline keeps every checkpoint O(1).

Durability: the database runs in WAL mode. With ``synchronous="FULL"`` (the default)
every commit is on disk when :meth:`SQLiteStore.save` returns: a power cut loses
nothing that was saved. ``"NORMAL"`` skips the sync at each commit (the WAL is synced
at checkpoints): several times faster, still safe when the *process* dies (the OS has
the data), but a power cut or OS crash may lose the last commits; sagaflow then redoes
those steps on recovery, which is safe only because steps are idempotent.

Writes are write-ahead: ``save`` and ``asave`` return once the record is committed.
Concurrent ``asave`` calls (many sagas under asyncio) and concurrent ``save`` calls
from threads are *group-committed*: one writer takes every pending checkpoint and
commits them in one transaction, so one sync to disk serves them all, and each caller
is released only when its own row is committed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import operator
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import attrs

from ..codec import (
    Codec,
    default_codec,
    describe_failure,
)
from ..errors import (
    ConcurrentModification,
    CorruptRecord,
    StoreError,
    UnknownSagaClass,
)
from ..records import SagaRecord, SagaStatus, StepRecord
from ._durable import INLINE, DurableRows, path_of, spilled
from .base import Stored

__all__ = [
    "SCHEMA_VERSION",
    "ConcurrentModification",
    "SQLiteStore",
    "StoreError",
    "StoredSaga",
    "UnknownSagaClass",
]

#: The layout this code writes; a database with a newer one is refused.
SCHEMA_VERSION = 2
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


# Column order of sagaflow_sagas; a write binds these as ?1..?N (?N+1: expected version).
_COLUMNS = (
    "saga_id", "saga_name", "fingerprint", "data_type", "status", "state", "version",
    "cursor", "undo", "created_at", "updated_at", "finished_at", "wake_at", "deadline_at",
    "compensation_deadline_at", "steps", "data", "error", "failures", "resolution",
    "history", "history_count", "events", "events_count", "path", "path_count",
)  # fmt: skip
_NCOLS = len(_COLUMNS)
_I = {name: i for i, name in enumerate(_COLUMNS)}

_SCHEMA = (
    """CREATE TABLE sagaflow_sagas (
        saga_id TEXT PRIMARY KEY NOT NULL,
        saga_name TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        data_type TEXT NOT NULL,
        status TEXT NOT NULL,
        state TEXT NOT NULL,
        version INTEGER NOT NULL,
        cursor INTEGER NOT NULL,
        undo TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL,
        wake_at REAL,
        deadline_at REAL,
        compensation_deadline_at REAL,
        steps TEXT NOT NULL,
        data TEXT NOT NULL,
        error TEXT,
        failures TEXT,
        resolution TEXT,
        history TEXT NOT NULL,
        history_count INTEGER NOT NULL,
        events TEXT NOT NULL,
        events_count INTEGER NOT NULL,
        path TEXT NOT NULL DEFAULT '[]',
        path_count INTEGER NOT NULL DEFAULT 0
    )""",
    # Status changes a few times per saga, unlike updated_at: indexing (status, name)
    # costs index writes only at those changes, and serves recovery and listings.
    "CREATE INDEX sagaflow_sagas_by_status ON sagaflow_sagas (status, saga_name)",
    """CREATE TABLE sagaflow_history (
        saga_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        at REAL NOT NULL,
        step TEXT,
        attempt INTEGER NOT NULL,
        error TEXT,
        detail TEXT,
        PRIMARY KEY (saga_id, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE sagaflow_events (
        saga_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (saga_id, seq)
    ) WITHOUT ROWID""",
)
#: What version 2 adds to version 1 (the whole of it for a new database: _SCHEMA first).
_SCHEMA_2 = (
    """CREATE TABLE sagaflow_path (
        saga_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        source TEXT NOT NULL,
        trigger TEXT NOT NULL,
        destination TEXT NOT NULL,
        PRIMARY KEY (saga_id, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE sagaflow_quarantine (
        saga_id TEXT PRIMARY KEY NOT NULL,
        reason TEXT NOT NULL,
        at REAL NOT NULL
    )""",
)
#: Version 1 to 2: the path columns (a migrated saga's path is empty) and tables.
_MIGRATE_1 = (
    "ALTER TABLE sagaflow_sagas ADD COLUMN path TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE sagaflow_sagas ADD COLUMN path_count INTEGER NOT NULL DEFAULT 0",
    *_SCHEMA_2,
)

_INSERT = (
    f"INSERT INTO sagaflow_sagas ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(f'?{i + 1}' for i in range(_NCOLS))}) ON CONFLICT(saga_id) DO NOTHING"
)
_UPDATE = (
    "UPDATE sagaflow_sagas SET "
    + ", ".join(f"{c} = ?{i + 1}" for i, c in enumerate(_COLUMNS) if c not in ("saga_id",))
    + f" WHERE saga_id = ?1 AND version = ?{_NCOLS + 1}"
)
#: Columns a save leaves alone while they keep their stored values: a checkpoint that
#: names ``status`` or ``saga_name`` rewrites their index entry (SQLite updates an index
#: when one of its columns is SET, whatever the value), a second b-tree page written and
#: synced per commit. :data:`_UPDATE_NARROW` leaves them out; it binds the same
#: parameters as :data:`_UPDATE` (``?N`` by column position, unused ones ignored).
_STATIC = ("saga_id", "saga_name", "fingerprint", "data_type", "status", "created_at")
_UPDATE_NARROW = (
    "UPDATE sagaflow_sagas SET "
    + ", ".join(f"{c} = ?{i + 1}" for i, c in enumerate(_COLUMNS) if c not in _STATIC)
    + f" WHERE saga_id = ?1 AND version = ?{_NCOLS + 1}"
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM sagaflow_sagas"
_INSERT_HISTORY = (
    "INSERT {}INTO sagaflow_history (saga_id, seq, type, at, step, attempt, error, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_EVENT = "INSERT {}INTO sagaflow_events (saga_id, seq, body) VALUES (?, ?, ?)"
_INSERT_PATH = (
    "INSERT {}INTO sagaflow_path (saga_id, seq, source, trigger, destination) "
    "VALUES (?, ?, ?, ?, ?)"
)
_CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-variable limit


@attrs.frozen(slots=True)
class StoredSaga:
    """A saga as stored, not yet decoded: what recovery needs to decide what to do.

    Decode it with :meth:`SQLiteStore.decode`; a corrupted record fails there (with
    :class:`~sagaflow.codec.CorruptRecord` naming it), not while listing.
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
    columns: tuple[Any, ...] = attrs.field(repr=False)
    history: tuple[tuple[Any, ...], ...] = attrs.field(repr=False)
    events: tuple[str, ...] = attrs.field(repr=False)
    path: tuple[tuple[Any, ...], ...] = attrs.field(repr=False, default=())

    @classmethod
    def of(
        cls,
        row: Sequence[Any],
        history: Sequence[tuple[Any, ...]],
        events: Sequence[str],
        path: Sequence[tuple[Any, ...]] = (),
    ) -> StoredSaga:
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
            columns=tuple(row),
            history=tuple(history),
            events=tuple(events),
            path=tuple(path),
        )

    @property
    def is_terminal(self) -> bool:
        """Whether the stored status is a final one."""
        return self.status in _TERMINAL_VALUES


_TERMINAL_VALUES = frozenset(s.value for s in SagaStatus if s.is_terminal)


class _Write:
    """One pending write: the saga's row and the event rows to append, encoded when the
    write is submitted (the engine mutates the record as soon as the caller goes on)."""

    __slots__ = (
        "create", "done", "error", "events", "expected", "future", "history", "inserted",
        "loop", "narrow", "path", "replay", "row", "tracked",
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
    ) -> None:
        self.create = create
        self.row = row
        self.expected = expected
        self.history = history  #: rows to append to sagaflow_history
        self.events = events  #: rows to append to sagaflow_events
        self.path = path  #: rows to append to sagaflow_path
        #: the store's state was not known: the rows are every spilled event, and the
        #: ones already stored are skipped
        self.replay = replay
        self.done = False
        self.error: BaseException | None = None
        self.inserted = False
        self.future: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tracked: _Tracked | None = None
        #: the static columns are as stored: write with :data:`_UPDATE_NARROW`
        self.narrow = False


class _Tracked:
    """What this store knows of a running saga's stored form at ``version``, so that a
    checkpoint encodes only what changed: the number of lifecycle and domain events
    stored, the ones kept inline (as (row, JSON) pairs), each step record's values and
    JSON (only the current step changes between checkpoints), and the values of the
    columns in :data:`_STATIC` (unchanged: the save need not name them)."""

    __slots__ = (
        "events", "history", "history_text", "inline_events", "inline_history",
        "inline_path", "path", "static", "step_texts", "step_values", "version",
    )  # fmt: skip

    def __init__(
        self,
        version: int,
        history: int,
        events: int,
        steps: tuple[list[Any], list[str]],
        inline_history: list[tuple[tuple[Any, ...], str]],
        inline_events: list[str],
        static: tuple[Any, ...],
        path: int,
        inline_path: list[str],
    ) -> None:
        self.version = version
        self.history = history
        self.events = events
        self.step_values, self.step_texts = steps
        self.inline_history = inline_history
        #: the inline history's JSON items, joined (the column without its brackets)
        self.history_text = ",".join([text for _, text in inline_history])
        self.inline_events = inline_events
        self.static = static
        self.path = path
        self.inline_path = inline_path


_step_values = operator.attrgetter(*(f.name for f in attrs.fields(StepRecord)))


class SQLiteStore(DurableRows):
    """Durable saga records in a SQLite file (or ``":memory:"``, for tests).

    ``synchronous`` is SQLite's sync level: ``"FULL"`` (default: durable at each
    save), ``"NORMAL"`` (faster; survives process crashes but may lose the last
    commits on power loss), ``"EXTRA"`` or ``"OFF"``. ``busy_timeout`` (seconds) is
    how long a write waits for another process's lock. ``codec`` turns records into
    JSON (default: :data:`sagaflow.codec.default_codec`).

    Thread-safe; processes may share the file (each opens its own store: a store does
    not survive ``fork()``). Use it as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        codec: Codec | None = None,
        max_batch: int = 1000,
    ) -> None:
        mode = str(synchronous).upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous={synchronous!r} is not a SQLite sync level: use one of "
                f"{', '.join(SYNCHRONOUS_MODES)} (FULL: durable at each save; NORMAL: "
                "faster, may lose the last commits on power loss)"
            )
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        self.path = os.fspath(path)
        self.synchronous = mode
        self.codec = codec if codec is not None else default_codec
        self._max_batch = max_batch
        self._busy_timeout = busy_timeout
        self._in_memory = self.path == ":memory:" or self.path == ""
        self._closed = False
        self._pid = os.getpid()
        # saga name -> {fingerprint: saga class}: how stored data is turned back into
        # instances. Filled by register() and by every create().
        self._classes: dict[str, dict[str, type]] = {}
        self._data_types: dict[type, str] = {}
        # saga id -> what the store has (or will have once the queued writes land) of
        # that saga: lets a checkpoint encode only what is new. Without an entry (a
        # record loaded here or elsewhere) the next save encodes the whole record and
        # the writer skips the spilled events already stored. Running sagas only.
        self._known: dict[str, _Tracked] = {}
        self._pending: collections.deque[_Write] = collections.deque()
        self._write_lock = threading.Lock()
        self._wakeup = threading.Event()
        self._writer: threading.Thread | None = None
        self._writer_guard = threading.Lock()
        #: transactions committed, and the saga writes they carried: ``writes / commits``
        #: is how many checkpoints group commit put in one transaction, on average
        self.commits = 0
        self.writes = 0

        self._conn = self._connect()
        try:
            self.journal_mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._conn.execute(f"PRAGMA synchronous={mode}")
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"cannot open the sagaflow store at {self.path!r}: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise
        if self._in_memory:
            # Each connection to ":memory:" is its own database: share the one.
            self._read_conn = self._conn
            self._read_lock = self._write_lock
        else:
            self._read_conn = self._connect()
            self._read_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by our locks instead
                cached_statements=64,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the sagaflow store at {self.path!r}: {exc}") from exc
        return conn

    def _init_schema(self) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS sagaflow_meta "
                "(key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)"
            )
            row = conn.execute(
                "SELECT value FROM sagaflow_meta WHERE key = 'schema_version'"
            ).fetchone()
            if row is None:
                for statement in (*_SCHEMA, *_SCHEMA_2):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO sagaflow_meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            else:
                try:
                    found = int(row[0])
                except (TypeError, ValueError):
                    raise StoreError(
                        f"{self.path!r}: sagaflow_meta.schema_version is {row[0]!r}, not a "
                        "number: the database was not written by sagaflow, or is damaged"
                    ) from None
                if found > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path!r} has sagaflow schema version {found}, newer than "
                        f"this sagaflow understands ({SCHEMA_VERSION}): upgrade sagaflow"
                    )
                if found < 1:
                    raise StoreError(f"{self.path!r}: unknown sagaflow schema version {found}")
                if found == 1:
                    for statement in _MIGRATE_1:
                        conn.execute(statement)
                    conn.execute(
                        "UPDATE sagaflow_meta SET value = ? WHERE key = 'schema_version'",
                        (str(SCHEMA_VERSION),),
                    )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    @property
    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self._read_lock:
            row = self._read_conn.execute(
                "SELECT value FROM sagaflow_meta WHERE key = 'schema_version'"
            ).fetchone()
        return int(row[0])

    # -- saga classes ------------------------------------------------------------

    def _steps(
        self, steps: list[StepRecord], tracked: _Tracked | None
    ) -> tuple[str, tuple[list[Any], list[str]]]:
        """The steps' JSON, re-encoding only the step records that changed since
        ``tracked`` (whose lists are updated in place); and the values and texts."""
        dump_step = self.codec.dump_step
        if tracked is None or len(tracked.step_values) != len(steps):
            values = [_step_values(s) for s in steps]
            texts = [dump_step(s) for s in steps]
        else:
            values = tracked.step_values
            texts = tracked.step_texts
            for i, s in enumerate(steps):
                now = _step_values(s)
                if now != values[i]:
                    values[i] = now
                    texts[i] = dump_step(s)
        return "[" + ",".join(texts) + "]", (values, texts)

    def _history(
        self,
        record: SagaRecord,
        stored: int,
        inline: list[tuple[tuple[Any, ...], str]],
        joined: str | None = None,
    ) -> tuple[list[tuple[Any, ...]], list[tuple[tuple[Any, ...], str]], str]:
        """Rows to append to sagaflow_history, the new inline tail and its items joined
        (the ``history`` column without brackets), given that the store has ``stored``
        lifecycle events (the last ones in ``inline``, joined in ``joined``)."""
        codec = self.codec
        history = record.history
        n = len(history)
        if n < stored:
            raise StoreError(
                f"saga {record.saga_id!r}: its history shrank since the last save; it is "
                "append-only"
            )
        added = []
        for i in range(stored, n):
            row = codec.history_row(history[i])
            text = codec.history_text(row)
            inline.append((row, text))
            added.append(text)
        cut = spilled(n) - spilled(stored)
        if not cut:
            if joined is None:
                joined = ",".join([text for _, text in inline])
            elif added:
                joined = f"{joined},{','.join(added)}" if joined else ",".join(added)
            return [], inline, joined
        sid = record.saga_id
        first = spilled(stored)
        rows = [(sid, first + k, *inline[k][0]) for k in range(cut)]
        inline = inline[cut:]
        return rows, inline, ",".join([text for _, text in inline])

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

    def _item(self, record: SagaRecord, create: bool) -> _Write:
        """Encode a write of ``record``: a create, or a save of the next version."""
        self._check_open()
        try:
            return self._encode_item(record, create)
        except BaseException:
            # What this store knows of the saga may be half updated: forget it (the
            # next save encodes the whole record).
            self._known.pop(record.saga_id, None)
            raise

    def _encode_item(self, record: SagaRecord, create: bool) -> _Write:
        sid = record.saga_id
        expected = record.version
        tracked = None if create else self._known.get(sid)
        if tracked is not None and tracked.version == expected:
            steps, step_cache = self._steps(record.steps, tracked)
            hist_rows, hist_inline, hist_text = self._history(
                record, tracked.history, tracked.inline_history, tracked.history_text
            )
            event_rows: list[tuple[Any, ...]]
            if len(record.events) == tracked.events:  # the usual case: nothing emitted
                event_rows, event_inline = [], tracked.inline_events
            else:
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
            hist_rows, hist_inline, hist_text = self._history(record, 0, [])
            event_rows, event_inline = self._events(record, 0, [])
            path_rows, path_inline = self._path(record, 0, [])
            replay = not create
        version = expected if create else expected + 1
        row = self._row(
            record,
            version,
            tracked is None,  # verify the data loads back at a saga's first save here
            steps,
            f"[{hist_text}]",
            "[" + ",".join(event_inline) + "]" if event_inline else "[]",
            "[" + ",".join(path_inline) + "]" if path_inline else "[]",
        )
        item = _Write(create, row, expected, hist_rows, event_rows, path_rows, replay)
        static = (row[1], row[2], row[3], row[4], row[9])  # the _STATIC columns but the id
        if tracked is not None and tracked.static == static:
            item.narrow = True
        if record.status.is_terminal:
            self._known.pop(sid, None)  # keep the map to running sagas
            return item
        if tracked is None:
            tracked = _Tracked(
                version, len(record.history), len(record.events), step_cache, hist_inline,
                event_inline, static, len(record.path), path_inline,
            )
            if create:
                item.tracked = tracked  # installed once the insert is known to be new
            else:
                self._known[sid] = tracked
        else:
            tracked.version = version
            tracked.history = len(record.history)
            tracked.events = len(record.events)
            tracked.inline_history = hist_inline
            tracked.history_text = hist_text
            tracked.inline_events = event_inline
            tracked.static = static
            tracked.path = len(record.path)
            tracked.inline_path = path_inline
        return item

    # -- the write path (group commit) -------------------------------------------

    def _submit(self, item: _Write) -> None:
        """Write ``item`` now if nothing else is queued; else queue it and write until
        it is committed (helping others' writes: group commit)."""
        if not self._pending and self._write_lock.acquire(blocking=False):
            try:
                if not self._pending:  # still alone: no queue, no batch to gather
                    try:
                        self._write_batch([item])
                    except BaseException as exc:  # interrupted before COMMIT
                        if item.error is None:
                            item.error = StoreError(f"the write was interrupted: {exc!r}")
                        raise
                    finally:
                        item.done = True
                    if item.error is not None:
                        raise item.error
                    return
            finally:
                self._write_lock.release()
        self._pending.append(item)
        try:
            while not item.done:
                with self._write_lock:
                    if not item.done:
                        self._drain()
        except BaseException:
            if not item.done:
                with contextlib.suppress(ValueError):  # already taken: it will be written
                    self._pending.remove(item)
            raise
        if item.error is not None:
            raise item.error

    def _submit_async(self, item: _Write) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        item.loop = loop
        item.future = loop.create_future()
        self._pending.append(item)
        if self._closed:  # closed meanwhile, by another thread: nobody would write it
            with contextlib.suppress(ValueError):
                self._pending.remove(item)
                raise StoreError(f"the SQLite store at {self.path!r} is closed")
        if self._writer is None:
            self._start_writer()
        # Still set: the writer has not woken yet, and will take this item too (it
        # clears the event before it drains). Skipping set() saves a lock under load.
        if not self._wakeup.is_set():
            self._wakeup.set()
        return item.future

    def _start_writer(self) -> None:
        with self._writer_guard:
            if self._writer is None:
                thread = threading.Thread(
                    target=self._serve, name=f"sagaflow-sqlite-writer:{self.path}", daemon=True
                )
                thread.start()
                self._writer = thread

    def _serve(self) -> None:
        while True:
            self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                with self._write_lock:
                    self._drain()
            if self._closed:
                return

    def _drain(self) -> None:
        """Write one batch of pending items in one transaction. Hold ``_write_lock``."""
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
            self._write_batch(batch)
        except BaseException as exc:  # interrupted before COMMIT: nothing was written
            for item in batch:
                if item.error is None:
                    item.error = StoreError(f"the write was interrupted: {exc!r}")
            raise
        finally:
            self._complete(batch)

    def _write_batch(self, batch: list[_Write]) -> None:
        """Write ``batch`` in one transaction. Every item at once first (one statement
        per kind: fewer calls, and fewer hand-offs of the GIL to the event loop); if
        that does not fit every item (a lost race, an existing id, a refused value),
        item by item, so each waiter gets its own outcome."""
        conn = self._conn
        todo = batch
        exact = len(todo) == 1
        while todo:
            outcomes: list[BaseException | bool | None] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                for item in todo:
                    item.error = exc
                return
            failed: _Write | None = None
            try:
                if not exact:
                    if not self._apply_all(conn, todo):
                        _rollback(conn)
                        exact = True
                        continue
                    outcomes = [True] * len(todo)
                else:
                    for item in todo:
                        failed = item
                        outcomes.append(self._apply(conn, item))
                    failed = None
                conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                # Locked, I/O error, disk full: nothing of this batch is committed.
                _rollback(conn)
                for item in todo:
                    item.error = exc
                return
            except Exception as exc:
                _rollback(conn)
                if not exact:  # find out which item it was
                    exact = True
                    continue
                if failed is None:
                    for item in todo:
                        item.error = exc
                    return
                # One item's data was refused (a constraint, a binding): fail it alone
                # and write the others again without it.
                failed.error = exc
                todo = [item for item in todo if item is not failed]
                continue
            except BaseException:
                _rollback(conn)
                raise
            self.commits += 1
            self.writes += len(todo)
            for item, outcome in zip(todo, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    item.error = outcome
                else:
                    item.inserted = bool(outcome)
            return

    def _apply_all(self, conn: sqlite3.Connection, items: list[_Write]) -> bool:
        """Write every item inside the open transaction with one statement per kind;
        ``False`` if some item needs the item-by-item path (the caller rolls back)."""
        creates: list[tuple[Any, ...]] = []
        saves: list[tuple[Any, ...]] = []
        narrow: list[tuple[Any, ...]] = []
        history: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        path: list[tuple[Any, ...]] = []
        for item in items:
            if item.replay:
                return False
            if item.create:
                creates.append(item.row)
            elif item.narrow:
                narrow.append((*item.row, item.expected))
            else:
                saves.append((*item.row, item.expected))
            history.extend(item.history)
            events.extend(item.events)
            path.extend(item.path)
        # Creates first: a save in the same batch is never of a saga created in it
        # (a save follows its create's return), nor of a saga saved in it (a save
        # follows the last one's return), so the order of the saves does not matter.
        if creates and conn.executemany(_INSERT, creates).rowcount != len(creates):
            return False  # an id existed
        if saves and conn.executemany(_UPDATE, saves).rowcount != len(saves):
            return False  # a lost race, or a saga gone
        if narrow and conn.executemany(_UPDATE_NARROW, narrow).rowcount != len(narrow):
            return False
        if history:
            conn.executemany(_INSERT_HISTORY.format(""), history)
        if events:
            conn.executemany(_INSERT_EVENT.format(""), events)
        if path:
            conn.executemany(_INSERT_PATH.format(""), path)
        return True

    def _apply(self, conn: sqlite3.Connection, item: _Write) -> BaseException | bool | None:
        """Write ``item`` inside the open transaction; a lost race is returned, not raised."""
        row = item.row
        if item.create:
            if conn.execute(_INSERT, row).rowcount == 0:
                return False  # the id exists: create() reports the existing saga
        elif conn.execute(
            _UPDATE_NARROW if item.narrow else _UPDATE, (*row, item.expected)
        ).rowcount == 0:
            sid = row[0]
            found = conn.execute(
                "SELECT version FROM sagaflow_sagas WHERE saga_id = ?", (sid,)
            ).fetchone()
            if found is not None or not item.replay:
                # Someone saved a newer version, or the saga was deleted under us.
                return ConcurrentModification(
                    sid, item.expected, None if found is None else found[0]
                )
            # Never created in this store: insert it, as the memory store would.
            conn.execute(_INSERT, row)
        verb = "OR IGNORE " if item.replay else ""
        if item.history:
            conn.executemany(_INSERT_HISTORY.format(verb), item.history)
        if item.events:
            conn.executemany(_INSERT_EVENT.format(verb), item.events)
        if item.path:
            conn.executemany(_INSERT_PATH.format(verb), item.path)
        return True

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
        self._submit(item)
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

    def save(self, record: SagaRecord) -> None:
        """Commit ``record``; durable (per ``synchronous``) when this returns.

        Optimistic concurrency: the store's version must be ``record.version``, which
        is then bumped; else :class:`ConcurrentModification` and nothing is written.
        """
        item = self._item(record, create=False)
        try:
            self._submit(item)
        except BaseException:
            self._known.pop(record.saga_id, None)
            raise
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
        sql = f"{_SELECT}{where} ORDER BY updated_at DESC, saga_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [self.decode(s) for s in self._fetch(sql, params)]

    # -- the Store protocol: async -----------------------------------------------

    async def acreate(self, record: SagaRecord) -> SagaRecord | None:
        """:meth:`create`, group-committed with other sagas' writes."""
        item = self._item(record, create=True)
        await self._submit_async(item)
        if item.inserted:
            return self._created(record, item)
        return await asyncio.to_thread(self._created, record, item)

    async def asave(self, record: SagaRecord) -> None:
        """:meth:`save`, group-committed: many sagas' checkpoints share a transaction,
        and this returns once *this* record is committed.

        If the awaiting task is cancelled meanwhile, the write still happens (it may
        already be on disk) and ``record.version`` already counts it, so the saga's
        next save follows on from it.
        """
        item = self._item(record, create=False)
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

    def load_raw(self, saga_id: str) -> StoredSaga | None:
        """The stored form of ``saga_id``, not decoded; ``None`` if absent."""
        found = self._fetch(f"{_SELECT} WHERE saga_id = ?", [saga_id])
        return found[0] if found else None

    def scan(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        batch: int = _CHUNK,
    ) -> Iterator[StoredSaga]:
        """Every stored saga matching ``status`` and ``name``, by saga id, undecoded.

        Reads in batches (each one consistent), so a huge table does not sit in memory
        and writers are not held up. Decoding is left to :meth:`decode`, so one
        corrupted record is reported by its id and never stops the iteration.
        """
        where, params = _filters(status, name)
        joiner = " AND " if where else " WHERE "
        after: str | None = None
        while True:
            sql = f"{_SELECT}{where}"
            args = list(params)
            if after is not None:
                sql += f"{joiner}saga_id > ?"
                args.append(after)
            sql += " ORDER BY saga_id LIMIT ?"
            args.append(batch)
            found = self._fetch(sql, args)
            yield from found
            if len(found) < batch:
                return
            after = found[-1].saga_id

    def decode(
        self, stored: Stored, cls: type | None = None, *, raw_data: bool = False
    ) -> SagaRecord:
        """The record of ``stored``. ``cls`` is the saga class (default: the one
        registered for its name, or imported from its stored type path);
        ``raw_data=True`` leaves ``data`` as its JSON form (an operator's view of a
        saga whose class is not at hand). Raises :class:`~sagaflow.codec.CorruptRecord`
        or :class:`UnknownSagaClass`."""
        if not isinstance(stored, StoredSaga):
            raise TypeError(f"{stored!r} did not come from a SQLiteStore")
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

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[StoredSaga]:
        """Rows of ``sql`` with their history and events, read in one transaction."""
        self._check_open()
        conn = self._read_conn
        with self._read_lock:
            conn.execute("BEGIN")
            try:
                rows = conn.execute(sql, params).fetchall()
                history: dict[str, list[tuple[Any, ...]]] = {}
                events: dict[str, list[str]] = {}
                path: dict[str, list[tuple[Any, ...]]] = {}
                # Only sagas with INLINE events or more have rows in the event tables.
                hc, ec, pc = _I["history_count"], _I["events_count"], _I["path_count"]
                ids = [
                    r[0]
                    for r in rows
                    if _has_spilled(r[hc]) or _has_spilled(r[ec]) or _has_spilled(r[pc])
                ]
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for sid, *rest in conn.execute(
                        "SELECT saga_id, type, at, step, attempt, error, detail "
                        f"FROM sagaflow_history WHERE saga_id IN ({marks}) "
                        "ORDER BY saga_id, seq",
                        chunk,
                    ):
                        history.setdefault(sid, []).append(tuple(rest))
                    for sid, body in conn.execute(
                        f"SELECT saga_id, body FROM sagaflow_events WHERE saga_id IN ({marks}) "
                        "ORDER BY saga_id, seq",
                        chunk,
                    ):
                        events.setdefault(sid, []).append(body)
                    for sid, *edge in conn.execute(
                        "SELECT saga_id, source, trigger, destination FROM sagaflow_path "
                        f"WHERE saga_id IN ({marks}) ORDER BY saga_id, seq",
                        chunk,
                    ):
                        path.setdefault(sid, []).append(tuple(edge))
            finally:
                conn.execute("COMMIT")
        return [
            StoredSaga.of(r, history.get(r[0], ()), events.get(r[0], ()), path.get(r[0], ()))
            for r in rows
        ]

    # -- lifecycle ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the SQLite store at {self.path!r} is closed")
        if os.getpid() != self._pid:
            # SQLite connections must not cross a fork: the child would share the
            # parent's file locks and could corrupt the database.
            raise StoreError(
                f"this SQLiteStore for {self.path!r} was opened in process {self._pid}, "
                "before a fork: open a new SQLiteStore in each process"
            )

    def close(self) -> None:
        """Finish pending writes, stop the writer thread, close the connections."""
        if self._closed:
            return
        self._closed = True
        writer = self._writer
        if writer is not None:
            self._wakeup.set()
            writer.join()
        with self._write_lock:
            while self._pending:
                self._drain()
            if self._read_conn is not self._conn:
                with self._read_lock:
                    self._read_conn.close()
            self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._read_lock:
            return int(self._read_conn.execute("SELECT count(*) FROM sagaflow_sagas").fetchone()[0])

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, synchronous={self.synchronous!r})"


def _resolve(items: list[_Write]) -> None:
    for item in items:
        future = item.future
        if future is None or future.done():  # its waiter was cancelled
            continue
        if item.error is not None:
            future.set_exception(item.error)
        else:
            future.set_result(None)


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # SQLite may have ended it already
        conn.execute("ROLLBACK")


def _filters(
    status: Collection[SagaStatus] | None, name: str | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if status is not None:
        values = [SagaStatus(s).value for s in status]
        if not values:
            return " WHERE 0", []
        clauses.append(f"status IN ({','.join('?' * len(values))})")
        params.extend(values)
    if name is not None:
        clauses.append("saga_name = ?")
        params.append(name)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _has_spilled(count: Any) -> bool:
    return not isinstance(count, int) or count >= INLINE


def _merge_inline(record: SagaRecord, stored: StoredSaga, codec: Codec) -> None:
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

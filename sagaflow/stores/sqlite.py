"""The SQLite store: durable sagas in one file, on the standard library's ``sqlite3``.

The layout (schema version 4, created on first use; ``sagaflow_meta`` holds the
version; an older database is migrated when opened) is the saga row of
:mod:`sagaflow.stores._rows` in ``sagaflow_sagas``; the older items of its append-only
lists in ``sagaflow_history``, ``sagaflow_events`` and ``sagaflow_path``; the sagas
set aside in ``sagaflow_quarantine``; and the signals sent to sagas in
``sagaflow_signals``.

What a checkpoint writes: the saga's row, in one UPDATE, and every 32 items of a list a
chunk of rows appended. Measured against the alternatives: a row plus one history row
per event costs a second b-tree page per commit (about 20% more per saga under
``synchronous=FULL``, more under NORMAL); the whole record as one JSON blob is as cheap
for short sagas but grows without bound, so a long saga's checkpoints would cost ever
more (quadratic in all). Keeping only the tails inline keeps every checkpoint O(1).

Durability: the database runs in WAL mode. With ``synchronous="FULL"`` (the default)
every commit is on disk when :meth:`SQLiteStore.save` returns: a power cut loses
nothing that was saved. ``"NORMAL"`` skips the sync at each commit (the WAL is synced
at checkpoints): several times faster, still safe when the *process* dies (the OS has
the data), but a power cut or OS crash may lose the last commits; sagaflow then redoes
those steps on recovery, which is safe only because steps are idempotent.

Concurrent ``asave`` calls (many sagas under asyncio) and concurrent ``save`` calls
from threads are group-committed (:mod:`sagaflow.stores._commit`) on the store's one
write connection.
"""

from __future__ import annotations

import contextlib
import operator
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Collection, Sequence
from typing import Any

from ..codec import Codec
from ..errors import ConcurrentModification, StoreError, UnknownSagaClass
from ._commit import Committer, Lane, Write
from ._rows import AT, COLUMNS, INLINE, STATIC, StoredSaga
from ._sql import (
    OUTBOX_INSERT,
    SCHEMA_VERSION,
    Run,
    Select,
    SQLStore,
    browse_indexes,
    incident_claims,
    outbox_table,
    quarantine_join,
    resignal,
    select_list,
    signalled_and_unparked,
    signalled_set,
    waits_and_signals,
)

__all__ = [
    "INLINE",
    "Changes",
    "SCHEMA_VERSION",
    "ConcurrentModification",
    "SQLiteStore",
    "StoreError",
    "StoredSaga",
    "UnknownSagaClass",
]

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")

#: ``_MIGRATIONS[v]`` takes the schema from version ``v`` to ``v + 1`` (a new database
#: goes through all of them, so it is laid out as a migrated one).
def _error_type(column: str) -> str:
    """The type tag of the error JSON in ``column``: NULL unless it is valid JSON (a
    damaged column must not fail the write that puts its row in the index)."""
    return f"CASE WHEN json_valid({column}) THEN json_extract({column}, '$.type') END"


_COUNT_NEW = (
    "INSERT INTO sagaflow_counts (status, n) VALUES (NEW.status, 1)"
    " ON CONFLICT (status) DO UPDATE SET n = n + 1"
)
_COUNT_OLD = "UPDATE sagaflow_counts SET n = n - 1 WHERE status = OLD.status"

_MIGRATIONS = (
    (
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
            events_count INTEGER NOT NULL
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
    ),
    (  # 2: the run's path; quarantine
        "ALTER TABLE sagaflow_sagas ADD COLUMN path TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE sagaflow_sagas ADD COLUMN path_count INTEGER NOT NULL DEFAULT 0",
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
    ),
    # 3: waits and signals. AUTOINCREMENT: a signal's number is never one a deleted
    # signal had (a saga's mark may have passed it).
    waits_and_signals("INTEGER PRIMARY KEY AUTOINCREMENT", "REAL"),
    # 4: what due() and recovery read from indexes (see signalled_and_unparked)
    signalled_and_unparked("INTEGER"),
    # 5: the outbox (see outbox_table)
    outbox_table("INTEGER PRIMARY KEY", "REAL"),
    # 6: the dashboard's list by start time, status, class, outcome (see browse_indexes),
    # and the counts per status, kept by triggers (one writer at a time: one row each)
    (
        *browse_indexes(_error_type("error")),
        "CREATE TABLE sagaflow_counts (status TEXT PRIMARY KEY NOT NULL,"
        " n INTEGER NOT NULL) WITHOUT ROWID",
        "INSERT INTO sagaflow_counts (status, n)"
        " SELECT status, count(*) FROM sagaflow_sagas GROUP BY status",
        f"CREATE TRIGGER sagaflow_counts_insert AFTER INSERT ON sagaflow_sagas"
        f" BEGIN {_COUNT_NEW}; END",
        # A checkpoint that leaves the status out of its UPDATE does not fire it.
        f"CREATE TRIGGER sagaflow_counts_update AFTER UPDATE OF status ON sagaflow_sagas"
        f" WHEN OLD.status IS NOT NEW.status BEGIN {_COUNT_OLD}; {_COUNT_NEW}; END",
        f"CREATE TRIGGER sagaflow_counts_delete AFTER DELETE ON sagaflow_sagas"
        f" BEGIN {_COUNT_OLD}; END",
    ),
    # 7: who paged which incident; the FAILED sagas no one resolved (see incident_claims)
    incident_claims("REAL"),
)

# A write binds the row's columns as ?1..?N, and a save ?N+1: the version it follows.
_N = len(COLUMNS)
_INSERT = (
    f"INSERT INTO sagaflow_sagas ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(f'?{i + 1}' for i in range(_N))}) ON CONFLICT(saga_id) DO NOTHING"
)
_UPDATE = (
    "UPDATE sagaflow_sagas SET "
    + ", ".join(f"{c} = ?{i + 1}" for i, c in enumerate(COLUMNS) if c != "saga_id")
    + ", "
    + signalled_set("?1", f"?{AT['waiting'] + 1}", f"?{AT['waiting_after'] + 1}")
    + f" WHERE saga_id = ?1 AND version = ?{_N + 1}"
)
_RESIGNAL = resignal()
#: A checkpoint that names ``status`` or ``saga_name`` rewrites their index entry
#: (SQLite updates an index when one of its columns is SET, whatever the value), a
#: second b-tree page written and synced per commit. While the STATIC columns keep
#: their stored values (the wait columns among them: a saga that never waits never
#: changes them), this leaves them out, and binds only what it sets (binding a
#: parameter costs about as much as a column of the row): the id, the columns that
#: change, the version followed (:func:`_narrow`). It leaves ``signalled`` too: the
#: flag is of the saga's wait, which it does not change (a signal's flag stays).
_CHANGING = tuple(i for i, c in enumerate(COLUMNS) if c not in STATIC)
_UPDATE_NARROW = (
    "UPDATE sagaflow_sagas SET "
    + ", ".join(f"{COLUMNS[i]} = ?{k + 2}" for k, i in enumerate(_CHANGING))
    + f" WHERE saga_id = ?1 AND version = ?{len(_CHANGING) + 2}"
)
_changing = operator.itemgetter(0, *_CHANGING)
_APPEND = {
    "history": "INSERT {}INTO sagaflow_history (saga_id, seq, type, at, step, attempt, "
    "error, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "events": "INSERT {}INTO sagaflow_events (saga_id, seq, body) VALUES (?, ?, ?)",
    "path": "INSERT {}INTO sagaflow_path (saga_id, seq, source, trigger, destination) "
    "VALUES (?, ?, ?, ?, ?)",
    "outbox": OUTBOX_INSERT,  # never twice: a replayed row is skipped (ON CONFLICT)
}
# What a saga's spilled items are read with, by list; a saga id list goes in {}.
_SPILLED = {
    "history": "SELECT saga_id, type, at, step, attempt, error, detail FROM sagaflow_history",
    "events": "SELECT saga_id, body FROM sagaflow_events",
    "path": "SELECT saga_id, source, trigger, destination FROM sagaflow_path",
}
_COUNTS = tuple(COLUMNS.index(f"{what}_count") for what in _SPILLED)
_CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-variable limit


class SQLiteStore(SQLStore):
    """Durable saga records in a SQLite file (or ``":memory:"``, for tests).

    ``synchronous`` is SQLite's sync level: ``"FULL"`` (default: durable at each
    save), ``"NORMAL"`` (faster; survives process crashes but may lose the last
    commits on power loss), ``"EXTRA"`` or ``"OFF"``. ``busy_timeout`` (seconds) is
    how long a write waits for another process's lock. ``codec`` turns records into
    JSON (default: :data:`sagaflow.codec.default_codec`). ``readonly=True`` opens the
    file read-only: nothing is created or migrated, a file without sagaflow's tables is
    a :class:`~sagaflow.StoreError`, and writes are refused.

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
        readonly: bool = False,
    ) -> None:
        mode = str(synchronous).upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous={synchronous!r} is not a SQLite sync level: use one of "
                f"{', '.join(SYNCHRONOUS_MODES)} (FULL: durable at each save; NORMAL: "
                "faster, may lose the last commits on power loss)"
            )
        super().__init__(codec, readonly)
        self.path = os.fspath(path)
        self.synchronous = mode
        self.journal_mode = ""
        self._busy_timeout = busy_timeout
        self._in_memory = self.path in (":memory:", "")
        conn = self._connect()
        try:
            if not readonly:
                self.journal_mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                conn.execute(f"PRAGMA synchronous={mode}")
            self._init_schema(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"cannot open the sagaflow store at {self.path!r}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        lane = Lane(None if readonly else conn)
        # Without a sync to disk per commit, a commit costs an event loop less than a
        # round trip to a writer thread: async checkpoints are committed on their loop.
        self._commit = Committer(
            self._write_batch, [lane], max_batch, "sagaflow-sqlite", self._closed_error,
            on_loop=mode in ("OFF", "NORMAL"),
        )  # fmt: skip
        self._head = f"SELECT {select_list(self.layout)} FROM sagaflow_sagas s" + quarantine_join(
            self.layout
        )
        if self._in_memory or readonly:
            # Each connection to ":memory:" is its own database: share the one.
            self._read_conn = conn
            self._read_lock = lane.lock
        else:
            self._read_conn = self._connect()
            self._read_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        target, uri = self.path, False
        if self.readonly and not self._in_memory:
            target, uri = f"file:{urllib.parse.quote(self.path)}?mode=ro", True
        try:
            return sqlite3.connect(
                target,
                timeout=self._busy_timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by our locks instead
                cached_statements=64,
                uri=uri,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the sagaflow store at {self.path!r}: {exc}") from exc

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN" if self.readonly else "BEGIN IMMEDIATE")
        try:
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sagaflow_meta'"
            ).fetchone()
            self._open_schema(
                lambda sql, params: conn.execute(sql, params).fetchall(),
                has_meta is not None,
                _MIGRATIONS,
            )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    error_type = staticmethod(_error_type)

    def _where(self) -> str:
        return repr(self.path)

    def indexed(self, index: str) -> str:
        # SQLite's planner, without statistics, prefers the status index to a partial
        # one (and then sorts every row it finds): name the one to use.
        return f" INDEXED BY {index}"

    def _execute(self, statement: str, params: Sequence[Any] = (), *, write: bool = False) -> Any:
        self._check_open()
        if write:
            lane = self._commit.lanes[0]
            conn, lock = lane.conn, lane.lock
        else:
            conn, lock = self._read_conn, self._read_lock
        with lock:
            return _result(conn.execute(statement, params))

    def _transact(self, work: Callable[[Run], Any]) -> Any:
        """``work`` in one transaction on the write connection (``BEGIN IMMEDIATE``:
        it holds the write lock from its first read), committed when this returns."""
        self._check_writable()
        lane = self._commit.lanes[0]
        with lane.lock:
            conn: sqlite3.Connection = lane.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(lambda statement, params: _result(conn.execute(statement, params)))
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        return result

    # -- the write path ----------------------------------------------------------------

    def _write_batch(self, batch: list[Write], lane: Lane) -> None:
        """Write ``batch`` in one transaction. Every item at once first (one statement
        per kind: fewer calls, and fewer hand-offs of the GIL to the event loop); if
        that does not fit every item (a lost race, an existing id, a refused value),
        item by item, so each waiter gets its own outcome."""
        conn: sqlite3.Connection = lane.conn
        first = batch[0]
        if len(batch) == 1 and not (first.history or first.events or first.path or first.outbox):
            self._write_alone(conn, batch[0])
            return
        todo = batch
        exact = len(todo) == 1
        while todo:
            outcomes: list[BaseException | bool] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                for item in todo:
                    item.error = exc
                return
            failed: Write | None = None
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
            self._committed(todo, outcomes)
            return

    def _write_alone(self, conn: sqlite3.Connection, item: Write) -> None:
        """One write that is one statement: committed as its own transaction (no BEGIN
        and COMMIT to send: the most common checkpoint, one saga at a time)."""
        try:
            outcome = self._apply(conn, item)
        except sqlite3.Error as exc:  # nothing was written
            item.error = exc
        except Exception as exc:  # a value that cannot be bound: nothing was written
            item.error = exc
        else:
            self._committed([item], [outcome])

    def _apply_all(self, conn: sqlite3.Connection, items: list[Write]) -> bool:
        """Write every item inside the open transaction with one statement per kind;
        ``False`` if some item needs the item-by-item path (the caller rolls back)."""
        creates: list[tuple[Any, ...]] = []
        saves: list[tuple[Any, ...]] = []
        narrow: list[tuple[Any, ...]] = []
        lists: dict[str, list[tuple[Any, ...]]] = {
            "history": [], "events": [], "path": [], "outbox": []
        }
        for item in items:
            if item.replay:
                return False
            if item.create:
                creates.append(item.row)
            else:
                if item.narrow:
                    narrow.append((*_changing(item.row), item.expected))
                else:
                    saves.append((*item.row, item.expected))
            lists["history"].extend(item.history)
            lists["events"].extend(item.events)
            lists["path"].extend(item.path)
            lists["outbox"].extend(item.outbox)
        # Creates first: a save in the same batch is never of a saga created in it
        # (a save follows its create's return), nor of a saga saved in it (a save
        # follows the last one's return), so the order of the saves does not matter.
        for statement, rows in ((_INSERT, creates), (_UPDATE, saves), (_UPDATE_NARROW, narrow)):
            if rows and conn.executemany(statement, rows).rowcount != len(rows):
                return False  # an id existed, a lost race, or a saga gone
        for what, rows in lists.items():
            if rows:
                conn.executemany(_APPEND[what].format(""), rows)
        return True

    def _apply(self, conn: sqlite3.Connection, item: Write) -> BaseException | bool:
        """Write ``item`` inside the open transaction; a lost race is returned, not raised."""
        row = item.row
        if item.create:
            if conn.execute(_INSERT, row).rowcount == 0:
                return False  # the id exists: create() reports the existing saga
        elif conn.execute(*_update(item)).rowcount == 0:
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
            conn.execute(_RESIGNAL, (sid,))
        verb = "OR IGNORE " if item.replay else ""
        for what, rows in (
            ("history", item.history), ("events", item.events), ("path", item.path),
            ("outbox", item.outbox),
        ):  # fmt: skip
            if rows:
                conn.executemany(_APPEND[what].format(verb), rows)
        return True

    # -- reading -----------------------------------------------------------------------

    def _fetch(self, select: Select) -> list[StoredSaga]:
        """Rows of ``select`` with their lists' spilled items, read in one transaction."""
        self._check_open()
        where, params = select.render("?", _error_type("s.error"))
        head = self._head
        index = select.index
        if index is not None and self.layout >= 4:
            table = "FROM sagaflow_sagas s"
            head = head.replace(table, table + self.indexed(index), 1)
        conn = self._read_conn
        spilled: dict[str, dict[str, list[Any]]] = {what: {} for what in _SPILLED}
        with self._read_lock:
            conn.execute("BEGIN")
            try:
                rows = conn.execute(head + where, params).fetchall()
                # Only sagas with INLINE items or more in a list have rows in its table.
                ids = [r[0] for r in rows if any(_has_spilled(r[k]) for k in _COUNTS)]
                lists = _SPILLED if self.layout >= 2 else {"history": "", "events": ""}
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for what in lists:
                        into = spilled[what]
                        sql = f"{_SPILLED[what]} WHERE saga_id IN ({marks}) ORDER BY saga_id, seq"
                        for sid, *rest in conn.execute(sql, chunk):
                            item = rest[0] if what == "events" else tuple(rest)
                            into.setdefault(sid, []).append(item)
            finally:
                conn.execute("COMMIT")
        h, e, p = spilled["history"], spilled["events"], spilled["path"]
        return [
            StoredSaga(
                **StoredSaga.fields(r, h.get(r[0], ()), e.get(r[0], ()), p.get(r[0], ()), r[_N])
            )
            for r in rows
        ]

    # -- wake-ups: what a worker on this file looks at ----------------------------------

    def watch(self) -> Changes:
        """A connection of its own that tells when another connection (another process,
        or this store's writer) has committed: see :class:`Changes`."""
        self._check_open()
        if self._in_memory:
            raise StoreError("an in-memory SQLite database has no other connections to watch")
        return Changes(self._connect())

    def last_signal(self) -> int:
        """The arrival number of the newest signal stored (0: none)."""
        rows = self._execute("SELECT max(seq) FROM sagaflow_signals")
        return int(rows[0][0] or 0)

    def signalled(
        self, after: int, names: Sequence[str], fingerprints: Sequence[str]
    ) -> tuple[list[str], int]:
        """The signals stored since arrival number ``after`` (SQLite numbers them in the
        order they commit: a later commit never has a smaller number): the parked sagas
        of these names and definitions that one of them wakes (it is of the name the
        saga waits for, and newer than the last one it took), and the newest number.
        One indexed read of the new signals, whatever the number of parked sagas."""
        kind, params = _kind_of(names, fingerprints)
        rows = self._execute(
            "SELECT g.seq, s.saga_id FROM sagaflow_signals g LEFT JOIN sagaflow_sagas s"
            " ON s.saga_id = g.saga_id AND s.waiting = g.name AND g.seq > s.waiting_after"
            f" AND s.status = 'RUNNING' AND {kind} AND {_NOT_SET_ASIDE}"
            " WHERE g.seq > ? ORDER BY g.seq",
            (*params, int(after)),
        )
        ids = list(dict.fromkeys(sid for _, sid in rows if sid is not None))
        return ids, (rows[-1][0] if rows else after)

    def waking(
        self,
        limit: int,
        names: Sequence[str],
        fingerprints: Sequence[str],
        exclude: Collection[str] = (),
    ) -> list[tuple[str, float]]:
        """The parked sagas of these names and definitions (not quarantined, not in
        ``exclude``) with a wake time, the earliest first, at most ``limit``: those due
        and when the next one is. Read in wake time order from the parked sagas' index:
        the cost does not grow with their number."""
        kind, params = _kind_of(names, fingerprints)
        skip = ""
        if exclude:
            skip = f" AND s.saga_id NOT IN ({', '.join('?' * len(exclude))})"
            params = (*params, *exclude)
        # "+": the status index must not be used: it would read every parked saga.
        return [
            (sid, float(wake)) for sid, wake in self._execute(
                "SELECT s.saga_id, s.wake_at FROM sagaflow_sagas s WHERE s.waiting IS NOT NULL"
                f" AND s.wake_at IS NOT NULL AND +s.status IN ('COMPENSATING', 'RUNNING')"
                f" AND {kind}{skip}"
                f" AND {_NOT_SET_ASIDE} ORDER BY s.wake_at LIMIT ?",
                (*params, int(limit)),
            )
        ]

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Finish pending writes, stop the writer thread, close the connections."""
        if self._closed:
            return
        self._closed = True
        self._commit.close()
        lane = self._commit.lanes[0]
        with lane.lock:
            if self._read_conn is not lane.conn and lane.conn is not None:
                with self._read_lock:
                    self._read_conn.close()
            (lane.conn or self._read_conn).close()

    def __repr__(self) -> str:
        mode = ", readonly=True" if self.readonly else ""
        return f"SQLiteStore({self.path!r}, synchronous={self.synchronous!r}{mode})"


class Changes:
    """Whether the database changed, from a connection that never writes:
    ``PRAGMA data_version`` moves when another connection commits (a read of the WAL's
    header, no table touched: cheap enough to ask every few milliseconds)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._seen = self._version()

    def _version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def changed(self) -> bool:
        """Whether another connection committed since the last call (or since this
        watch began)."""
        now = self._version()
        if now == self._seen:
            return False
        self._seen = now
        return True

    def close(self) -> None:
        self._conn.close()


_NOT_SET_ASIDE = "NOT EXISTS (SELECT 1 FROM sagaflow_quarantine q WHERE q.saga_id = s.saga_id)"


def _kind_of(names: Sequence[str], fingerprints: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """A condition on saga ``s``: one of these names, at one of these definitions."""
    if not names or not fingerprints:
        return "0", ()
    return (
        f"+s.saga_name IN ({', '.join('?' * len(names))})"
        f" AND s.fingerprint IN ({', '.join('?' * len(fingerprints))})",
        (*names, *fingerprints),
    )


def _update(item: Write) -> tuple[str, tuple[Any, ...]]:
    """The UPDATE of a save, and its parameters: narrow when it may be."""
    if item.narrow:
        return _UPDATE_NARROW, (*_changing(item.row), item.expected)
    return _UPDATE, (*item.row, item.expected)


def _result(cur: sqlite3.Cursor) -> Any:
    return cur.fetchall() if cur.description is not None else cur.rowcount


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # SQLite may have ended it already
        conn.execute("ROLLBACK")


def _has_spilled(count: Any) -> bool:
    return not isinstance(count, int) or count >= INLINE

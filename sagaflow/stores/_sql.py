"""The durable store, written once: what the SQLite and PostgreSQL stores share.

:class:`SQLStore` is the store protocol over a saga row (:mod:`._rows`) and group
commit (:mod:`._commit`): which class a stored saga's data is an instance of, what a
write carries (only what changed since this store last wrote the saga), how a row is
read back and checked, paging through sagas, quarantine, and the schema's version and
migrations. A dialect (:mod:`.sqlite`, :mod:`.postgres`) adds what differs: its
connections and SQL text, how a batch of writes is executed, how rows are fetched with
their lists' older items, and (PostgreSQL) the queue: claims, leases, fencing.

Writes are write-ahead: ``save`` and ``asave`` return once the record is committed.
Optimistic concurrency: a save names the version it follows, and a row that moved on
is never overwritten (:class:`~sagaflow.ConcurrentModification`).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, ClassVar

import attrs

from ..codec import Codec, default_codec, import_path, type_path
from ..errors import CodecError, SagaNotFound, SignalRefused, StoreError, UnknownSagaClass
from ..events import LifecycleEvent
from ..incidents import KINDS, Incident
from ..messages import Message
from ..records import SagaRecord, SagaStatus, Signal
from ..spec import is_saga, spec_of
from ._commit import Committer, Write
from ._rows import (
    COLUMNS,
    StoredSaga,
    Tail,
    Tracked,
    decode_row,
    edge_text,
    extend,
    static_of,
)
from .base import Quarantined, Stored

__all__ = [
    "SCHEMA_VERSION",
    "OutboxStats",
    "SQLStore",
    "event_type",
    "outbox_table",
    "Browsed",
    "Select",
    "browse_indexes",
    "check_kinds",
    "incident_claims",
    "incident_selects",
    "quarantine_join",
    "resignal",
    "select_list",
    "signalled_and_unparked",
    "signalled_set",
    "waits_and_signals",
]

#: The layout this code writes; a database with a newer one is refused, an older one
#: migrated when opened (unless read-only).
SCHEMA_VERSION = 7
#: What a read of an older layout (read-only: never migrated) reads in place of the
#: columns it lacks, by the version that added them.
_ADDED = {
    2: {"path": "'[]'", "path_count": "0"},
    3: {"waiting": "NULL", "waiting_after": "0", "signal_marks": "'{}'", "business_key": "NULL"},
}
_TERMINAL = tuple(s.value for s in SagaStatus if s.is_terminal)
_UNFINISHED = f"status NOT IN ({', '.join(repr(v) for v in _TERMINAL)})"
#: The unfinished statuses, as the index of the sagas recovery resumes names them (and a
#: read must name them the same way for SQLite to use it).
_ACTIVE = tuple(sorted(s.value for s in SagaStatus if not s.is_terminal))
_ACTIVE_IN = f"status IN ({', '.join(repr(v) for v in _ACTIVE)})"
_SIGNAL = "SELECT saga_id, seq, name, signal_id, payload, at FROM sagaflow_signals"
_SIGNAL_SEQ = "SELECT seq FROM sagaflow_signals WHERE saga_id = ? AND signal_id = ?"
_ADD_SIGNAL = (
    "INSERT INTO sagaflow_signals (saga_id, name, signal_id, payload, at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (saga_id, signal_id) DO NOTHING"
)
# Parked (RUNNING at a wait, or a choreography RUNNING or COMPENSATING between its
# events), not set aside; its wake time come, or a signal of the name it waits
# for arrived after the last one it was given. By wake time; one without (woken by a
# signal only) counts as due now. Schema 3 (read-only): a probe per parked saga.
_DUE_3 = (
    "SELECT s.saga_id FROM sagaflow_sagas s WHERE s.waiting IS NOT NULL"
    " AND s.status IN ('COMPENSATING', 'RUNNING')"
    " AND NOT EXISTS (SELECT 1 FROM sagaflow_quarantine q WHERE q.saga_id = s.saga_id)"
    " AND (s.wake_at <= ? OR EXISTS (SELECT 1 FROM sagaflow_signals g"
    " WHERE g.saga_id = s.saga_id AND g.name = s.waiting AND g.seq > s.waiting_after))"
    " ORDER BY COALESCE(s.wake_at, ?), s.saga_id LIMIT ?"
)
# "|| ''": no index serves the status test, so that a planner without statistics (a
# table just filled: PostgreSQL before its autovacuum's ANALYZE) does not take the
# status index, which holds every running saga, over the small indexes of _DUE.
_DUE_CHECK = (
    " AND s.status || '' IN ('COMPENSATING', 'RUNNING')"
    " AND NOT EXISTS (SELECT 1 FROM sagaflow_quarantine q WHERE q.saga_id = s.saga_id)"
)
# Schema 4: the same sagas from two indexes, each read as far as the limit: the parked
# ones by wake time (sagaflow_sagas_parked), and the few flagged ``signalled``
# (sagaflow_sagas_signalled), each checked for a signal it waits for. The cost grows
# with the sagas due and signalled, not with the parked ones. ``{parked}`` and
# ``{signalled}``: the dialect's hint to read them from these indexes (see
# SQLStore.indexed).
_DUE = (
    "SELECT saga_id FROM ("
    "SELECT * FROM (SELECT s.saga_id, s.wake_at AS due_at FROM sagaflow_sagas s{parked}"
    f" WHERE s.waiting IS NOT NULL AND s.wake_at <= ?{_DUE_CHECK}"
    " ORDER BY s.wake_at, s.saga_id LIMIT ?) t UNION "
    "SELECT * FROM (SELECT s.saga_id, COALESCE(s.wake_at, ?) AS due_at FROM sagaflow_sagas s"
    "{signalled} WHERE s.signalled IS NOT NULL AND s.waiting IS NOT NULL" + _DUE_CHECK +
    " AND EXISTS (SELECT 1 FROM sagaflow_signals g"
    " WHERE g.saga_id = s.saga_id AND g.name = s.waiting AND g.seq > s.waiting_after)"
    " ORDER BY COALESCE(s.wake_at, ?), s.saga_id LIMIT ?) u"
    ") d ORDER BY due_at, saga_id LIMIT ?"
)
# A signal's transaction flags its saga (whatever it waits for: a driver may be parking
# it for this very signal, its row not saying so yet).
_FLAG = "UPDATE sagaflow_sagas SET signalled = ? WHERE saga_id = ?"
_NOTHING: Tail = (0, "")
#: Runs one statement (``?`` marks) in a dialect's transaction: its rows, or row count.
Run = Callable[[str, Sequence[Any]], Any]
_NONE: list[tuple[Any, ...]] = []  # no rows to append (never appended to)
_META = (
    "CREATE TABLE IF NOT EXISTS sagaflow_meta "
    "(key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)"
)
_SET_VERSION = (
    "INSERT INTO sagaflow_meta (key, value) VALUES ('schema_version', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_QUARANTINE = (
    "INSERT INTO sagaflow_quarantine (saga_id, reason, at) SELECT ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM sagaflow_sagas WHERE saga_id = ?) "
    "ON CONFLICT (saga_id) DO UPDATE SET reason = excluded.reason, at = excluded.at"
)
_QUARANTINED = (
    "SELECT q.saga_id, s.saga_name, q.reason, q.at FROM sagaflow_quarantine q "
    "LEFT JOIN sagaflow_sagas s ON s.saga_id = q.saga_id ORDER BY q.at, q.saga_id"
)


_OUTBOX_COLUMNS = "id, type, saga_id, saga_name, seq, body, at"
_PENDING = " FROM sagaflow_outbox WHERE relayed_at IS NULL"
#: A checkpoint's outbox rows: a row already there (a replayed save) stays as it is.
OUTBOX_INSERT = (
    "INSERT INTO sagaflow_outbox (id, saga_id, saga_name, seq, type, body, at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)


def outbox_table(serial: str, real: str) -> tuple[str, ...]:
    """Schema version 5 in either dialect: the outbox, one row per domain event of a
    saga, written by the checkpoint that first records the event. ``n`` orders them
    (``serial``: the dialect's growing integer key), ``id`` is the message's stable
    id; ``relayed_at`` stays NULL until a relay has published it. The unrelayed rows
    are read by ``n`` from an index that holds only them."""
    return (
        f"""CREATE TABLE sagaflow_outbox (
            n {serial},
            id TEXT NOT NULL UNIQUE,
            saga_id TEXT NOT NULL,
            saga_name TEXT NOT NULL,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            body TEXT NOT NULL,
            at {real} NOT NULL,
            relayed_at {real},
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT
        )""",
        "CREATE INDEX sagaflow_outbox_pending ON sagaflow_outbox (n) WHERE relayed_at IS NULL",
    )


def lifecycle_types(event_types: Collection[type]) -> frozenset[type]:
    """The lifecycle event classes :meth:`publish_lifecycle` was given, checked."""
    for t in event_types:
        if not (isinstance(t, type) and issubclass(t, LifecycleEvent)):
            raise TypeError(
                f"{t!r} is not a lifecycle event class: give classes of sagaflow.events "
                "(SagaStarted, SagaCompleted, SagaCompensated, SagaFailed, StepFailed...)"
            )
    return frozenset(event_types)


def event_type(body: str) -> str:
    """The type of a domain event from the codec's JSON text: its ``$type`` tag (an
    attrs class, dataclass or enum: the codec's name for it; a tuple, a set...), or
    the JSON kind of a plain value (``object``, ``array``, ``string``, ``number``,
    ``boolean``, ``null``)."""
    if body.startswith('{"$type":"'):
        end = body.find('"', 10)
        if end > 10:
            return body[10:end]
    first = body[:1]
    if first == "{":
        return "object"
    if first == "[":
        return "array"
    if first == '"':
        return "string"
    if first in ("t", "f"):
        return "boolean"
    if first == "n":
        return "null"
    return "number"


@attrs.frozen
class OutboxStats:
    """What an operator sees of an outbox: the messages not relayed yet, when the oldest
    of them was written (``None``: none), and those a publisher refused at least once:
    ``(id, attempts, last_error)``, the most tried first."""

    pending: int
    oldest: float | None
    failing: tuple[tuple[str, int, str | None], ...]


def select_list(layout: int, alias: str = "s") -> str:
    """The saga row's columns (:data:`~._rows.COLUMNS`) and its quarantine reason, as a
    query on ``sagaflow_sagas {alias}`` joined to ``sagaflow_quarantine q`` reads them;
    an older table (read-only) lacks some (version 1: the path and quarantine; 2: the
    wait columns): empty ones stand in."""
    old = {c: v for version, added in _ADDED.items() if layout < version for c, v in added.items()}
    reason = "q.reason" if layout >= 2 else "NULL"
    return ", ".join(old.get(c, f"{alias}.{c}") for c in COLUMNS) + f", {reason}"


def waits_and_signals(seq: str, real: str) -> tuple[str, ...]:
    """Schema version 3 in either dialect: the saga row's wait columns, the index that
    finds the parked sagas (only they are in it, and a checkpoint that does not park
    or wake changes none of its columns), the one of business keys, and the signals.
    ``seq`` declares the signals' arrival number (increasing, never reused), ``real``
    is the dialect's float type."""
    return (
        "ALTER TABLE sagaflow_sagas ADD COLUMN waiting TEXT",
        "ALTER TABLE sagaflow_sagas ADD COLUMN waiting_after BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE sagaflow_sagas ADD COLUMN signal_marks TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE sagaflow_sagas ADD COLUMN business_key TEXT",
        # By wake time: a worker finds the next parked saga to wake without a scan.
        "CREATE INDEX sagaflow_sagas_parked ON sagaflow_sagas (wake_at)"
        " WHERE waiting IS NOT NULL",
        "CREATE INDEX sagaflow_sagas_by_key ON sagaflow_sagas (business_key, saga_name)"
        " WHERE business_key IS NOT NULL",
        f"""CREATE TABLE sagaflow_signals (
            saga_id TEXT NOT NULL,
            seq {seq},
            name TEXT NOT NULL,
            signal_id TEXT NOT NULL,
            payload TEXT NOT NULL,
            at {real} NOT NULL,
            UNIQUE (saga_id, signal_id)
        )""",
        "CREATE INDEX sagaflow_signals_by_name ON sagaflow_signals (saga_id, name, seq)",
    )


def signalled_and_unparked(bigint: str) -> tuple[str, ...]:
    """Schema version 4 in either dialect: what makes :meth:`SQLStore.due` and recovery
    read only what they want. ``signalled`` flags a saga a signal may wake (the number
    of a signal: see :func:`signalled_set`), indexed while set; the parked sagas' index
    holds their ids after the wake time (due sagas in order, no sort); the one of the
    unfinished sagas that are not parked is what recovery pages through."""
    return (
        f"ALTER TABLE sagaflow_sagas ADD COLUMN signalled {bigint}",
        "UPDATE sagaflow_sagas SET signalled = (SELECT max(g.seq) FROM sagaflow_signals g"
        " WHERE g.saga_id = sagaflow_sagas.saga_id AND g.name = sagaflow_sagas.waiting"
        " AND g.seq > sagaflow_sagas.waiting_after) WHERE waiting IS NOT NULL",
        "CREATE INDEX sagaflow_sagas_signalled ON sagaflow_sagas (saga_id)"
        " WHERE signalled IS NOT NULL",
        "DROP INDEX sagaflow_sagas_parked",
        "CREATE INDEX sagaflow_sagas_parked ON sagaflow_sagas (wake_at, saga_id)"
        " WHERE waiting IS NOT NULL",
        f"CREATE INDEX sagaflow_sagas_unparked ON sagaflow_sagas (saga_id)"
        f" WHERE waiting IS NULL AND {_ACTIVE_IN}",
    )


def resignal() -> str:
    """The UPDATE that sets ``signalled`` from the saga's row as stored (a parked saga
    inserted by a save, not a create), its id the one parameter."""
    sagas = "sagaflow_sagas"
    return (
        f"UPDATE {sagas} SET "
        + signalled_set(f"{sagas}.saga_id", f"{sagas}.waiting", f"{sagas}.waiting_after")
        + " WHERE saga_id = ?"
    )


def signalled_set(saga_id: str, waiting: str, after: str) -> str:
    """What a save sets ``signalled`` to (schema 4), given the SQL of its saga id, wait
    and mark: nothing unless it parks; parked, a signal it waits for (one stored before
    this statement began), or the flag a signal's transaction set that this statement's
    snapshot does not show (a newer signal than it sees: PostgreSQL re-reads the locked
    row, not the signals, when a signal committed while it waited for the row; a signal
    that commits after it sees the saga parked and flags it itself). A signal is
    therefore never missed by :meth:`SQLStore.due`; a flag it finds stale (a signal of
    another name) costs one probe there, until the saga next moves on."""
    return (
        f"signalled = CASE WHEN CAST({waiting} AS TEXT) IS NULL THEN NULL ELSE COALESCE("
        "(SELECT max(g.seq) FROM sagaflow_signals g"
        f" WHERE g.saga_id = {saga_id} AND g.name = {waiting} AND g.seq > {after}),"
        " CASE WHEN signalled > (SELECT COALESCE(max(g.seq), 0) FROM sagaflow_signals g"
        f" WHERE g.saga_id = {saga_id}) THEN signalled END) END"
    )


#: The statuses whose error names their outcome (a rejection, a timeout...): the
#: partial index of error types holds only them, and a read uses it by naming them so.
_ENDED_BY_ERROR = "s.status IN ('COMPENSATED', 'FAILED')"
#: The error type tags that name an outcome (see :func:`sagaflow.records.outcome`).
_NAMED = {"rejected": "SagaRejected", "timed-out": "WaitTimedOut",
          "cancelled": "SagaCancelled", "deadline": "SagaDeadlineExceeded"}
_UNFINISHED_STATUS = {"not-started": "NOT_STARTED", "running": "RUNNING",
                      "compensating": "COMPENSATING"}


def outcome_where(outcome: str, error_type: str, waits: bool = True) -> list[str]:
    """The terms that keep the sagas of ``outcome`` (a word of
    :data:`~sagaflow.records.OUTCOMES`), as :func:`sagaflow.records.outcome` reads it
    from the status, the error's type tag (``error_type``: its SQL) and the wait
    column (``waits``: the table has one). Each is served by an index: the status
    one, or the error types' (the outcome an error names)."""
    waiting = "s.waiting IS NULL" if waits else None
    if outcome in _UNFINISHED_STATUS:
        return [f"s.status = '{_UNFINISHED_STATUS[outcome]}'", *filter(None, [waiting])]
    if outcome == "waiting":
        if not waits:
            return ["0 = 1"]
        return [f"s.status IN ({', '.join(repr(v) for v in _ACTIVE)})",
                "s.waiting IS NOT NULL"]
    if outcome == "completed":
        return ["s.status = 'COMPLETED'"]
    tag = error_type
    if outcome == "rejected":
        return [_ENDED_BY_ERROR, f"{tag} = 'SagaRejected'"]
    if outcome in _NAMED:
        return [_ENDED_BY_ERROR, f"{tag} = '{_NAMED[outcome]}'", "s.status = 'COMPENSATED'"]
    named = ", ".join(f"'{v}'" for v in _NAMED.values())
    if outcome == "failed":
        return ["s.status = 'FAILED'", f"({tag} IS NULL OR {tag} <> 'SagaRejected')"]
    if outcome == "compensated":
        return ["s.status = 'COMPENSATED'", f"({tag} IS NULL OR {tag} NOT IN ({named}))"]
    raise ValueError(f"{outcome!r} is not an outcome: "
                     "not-started, running, waiting, compensating, completed, compensated, "
                     "rejected, timed-out, cancelled, deadline, failed")


def browse_indexes(error_type: str) -> tuple[str, ...]:
    """Schema version 6 in either dialect: what the dashboard's list reads from
    (:meth:`SQLStore.browse`), newest started first, filtered by status, class or the
    outcome an error names; ``error_type``: the dialect's SQL of the error's type tag
    (over ``error``). Each is keyed on columns a checkpoint leaves as they are
    (``created_at`` never changes; status, class and error at a status change), so a
    checkpoint writes none of them, and PostgreSQL still updates the row in place."""
    return (
        "CREATE INDEX sagaflow_sagas_by_start ON sagaflow_sagas (created_at, saga_id)",
        "CREATE INDEX sagaflow_sagas_by_status_start ON sagaflow_sagas"
        " (status, created_at, saga_id)",
        "CREATE INDEX sagaflow_sagas_by_name_start ON sagaflow_sagas"
        " (saga_name, created_at, saga_id)",
        f"CREATE INDEX sagaflow_sagas_by_error ON sagaflow_sagas (({error_type}),"
        f" created_at, saga_id) WHERE {_ENDED_BY_ERROR.replace('s.', '')}",
    )


def incident_claims(real: str) -> tuple[str, ...]:
    """Schema version 7 in either dialect (``real``: its floating-point type): who
    paged which incident (:meth:`SQLStore.claim_incident`), a row per saga and kind of
    incident, apart from the saga's row so that a claim never writes the record its
    driver may still be saving; and the index of the FAILED sagas no one resolved,
    newest started first (what the dashboard's incidents view reads)."""
    return (
        "CREATE TABLE sagaflow_incident_claims (saga_id TEXT NOT NULL, kind TEXT NOT NULL,"
        f" since {real} NOT NULL, incident_id TEXT NOT NULL, claimed_by TEXT NOT NULL,"
        f" claimed_at {real} NOT NULL, PRIMARY KEY (saga_id, kind))",
        "CREATE INDEX sagaflow_sagas_open_failed ON sagaflow_sagas (created_at, saga_id)"
        " WHERE status = 'FAILED' AND resolution IS NULL",
    )


#: Claims an incident: inserts its row, or moves the saga's row on to a later incident
#: (the saga moved on and stalled anew); a row count of 0: someone claimed it (or a
#: later one of the saga) first. One statement: two claimants at once, one wins.
_CLAIM = (
    "INSERT INTO sagaflow_incident_claims"
    " (saga_id, kind, since, incident_id, claimed_by, claimed_at) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (saga_id, kind) DO UPDATE SET since = excluded.since,"
    " incident_id = excluded.incident_id, claimed_by = excluded.claimed_by,"
    " claimed_at = excluded.claimed_at WHERE sagaflow_incident_claims.since < excluded.since"
)


#: A quarantined saga's incident is its quarantine, whatever its status: the other
#: kinds leave it out, so that each saga is listed once, its kind told by its row.
_NOT_ASIDE = "NOT EXISTS (SELECT 1 FROM sagaflow_quarantine q2 WHERE q2.saga_id = s.saga_id)"


def check_kinds(kinds: Collection[str]) -> None:
    """A clear ``ValueError`` unless every one of ``kinds`` is a kind of incident."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a kind of incident ({', '.join(KINDS)})")


def incident_selects(
    select: Select, kinds: Collection[str], stalled_before: float | None, layout: int,
    quarantined: Sequence[str] = (),
) -> list[tuple[str, Select]]:
    """The reads of the sagas with an open incident of ``kinds`` (words of
    :data:`sagaflow.incidents.KINDS`) that pass ``select``'s filters, one per kind (the stalled:
    one per status), each named, newest started first from an index in that order:
    the FAILED sagas no one resolved (their own, schema 7), the ``quarantined`` (the
    ids the quarantine holds, a few: each read by its id, then sorted), and with
    ``stalled_before`` the RUNNING or COMPENSATING sagas with no checkpoint since then
    (by status and start, passing over the busy ones), not waiting at a wait (one
    parked COMPENSATING with no wake time is stalled: nothing will wake it). As
    :func:`sagaflow.incidents.open_incidents` finds them."""
    check_kinds(kinds)
    wanted = None if select.status is None else set(select.status)
    aside = (_NOT_ASIDE,) if layout >= 2 else ()
    found: list[tuple[str, Select]] = []

    def part(label: str, status: str, terms: tuple[str, ...], params: tuple[Any, ...] = (),
             hint: str | None = None) -> None:
        if wanted is None or status in wanted:
            found.append((label, attrs.evolve(
                select, status=None, terms=(f"s.status = '{status}'", *terms, *aside),
                term_params=params, hint=hint)))

    if "failed" in kinds:
        part("failed", "FAILED", ("s.resolution IS NULL",),
             hint="sagaflow_sagas_open_failed" if layout >= 7 else None)
    if "quarantined" in kinds and quarantined:
        # The ids themselves, not a subquery: a planner that misjudges the quarantine's
        # size would read every saga by start time to find its few.
        marks = ", ".join("?" * len(quarantined))
        found.append(("quarantined", attrs.evolve(
            select, terms=(f"s.saga_id IN ({marks})",), term_params=tuple(quarantined))))
    if "stalled" in kinds and stalled_before is not None:
        quiet = ("s.updated_at <= ?",)
        when = (float(stalled_before),)
        hint = "sagaflow_sagas_by_status_start" if layout >= 6 else None
        unparked = ("s.waiting IS NULL",) if select.waits else ()
        part("stalled RUNNING", "RUNNING", (*unparked, *quiet), when, hint)
        lost = ("(s.waiting IS NULL OR s.wake_at IS NULL)",) if select.waits else ()
        part("stalled COMPENSATING", "COMPENSATING", (*lost, *quiet), when, hint)
    return found


class Browsed(list):  # type: ignore[type-arg]
    """A page of :meth:`SQLStore.browse`: its sagas; ``searched_to``: where a text
    search stopped looking (the ``(created_at, saga_id)`` to go on after), ``None`` when
    it looked through every saga of the other filters."""

    searched_to: tuple[float, str] | None = None


def quarantine_join(layout: int, alias: str = "s") -> str:
    """The join that :func:`select_list` reads the quarantine reason from."""
    if layout < 2:
        return ""
    return f" LEFT JOIN sagaflow_quarantine q ON q.saga_id = {alias}.saga_id"


@attrs.frozen
class Select:
    """Which sagas a read wants: filters, the keyset position to page on from
    (``(saga_id,)``, or ``(updated_at, saga_id)`` when newest first), order, limit;
    ``parked``: only the sagas parked at a wait (``True``), or only the others."""

    status: tuple[str, ...] | None = None
    name: str | None = None
    saga_id: str | None = None
    after: tuple[Any, ...] | None = None
    newest_first: bool = False
    limit: int | None = None
    parked: bool | None = None
    #: the dashboard's filters (:meth:`SQLStore.browse`), read newest started first
    outcome: str | None = None
    key: str | None = None
    text: str | None = None
    newer: float | None = None
    older: float | None = None
    by_start: bool = False
    waits: bool = True  #: whether the table has the wait columns (schema 3)
    #: (newest started first) no saga before this ``(created_at, saga_id)``
    until: tuple[float, str] | None = None
    offset: int | None = None
    #: more terms over ``s`` (``?`` their parameters' marks) and their parameters
    terms: tuple[str, ...] = ()
    term_params: tuple[Any, ...] = ()
    #: the index this read is to use (see :attr:`index`)
    hint: str | None = None

    @property
    def index(self) -> str | None:
        """The index that serves this read where a planner may not see it does (SQLite
        prefers the status index, and sorts): the unfinished sagas not parked, by id;
        or the one :attr:`hint` names."""
        if self.hint is not None:
            return self.hint
        if self.parked is not False or self.newest_first or self.status is None:
            return None
        if {SagaStatus(v).value for v in self.status} != set(_ACTIVE):
            return None
        return "sagaflow_sagas_unparked"

    def render(self, mark: str, error_type: str = "NULL") -> tuple[str, list[Any]]:
        """``WHERE ... ORDER BY ... LIMIT ...`` on the saga row aliased ``s``, with
        ``mark`` as the parameter placeholder, and its parameters; ``error_type``: the
        dialect's SQL of the stored error's type tag (the outcome filter)."""
        clauses: list[str] = [term.replace("?", mark) for term in self.terms]
        params: list[Any] = list(self.term_params)
        if self.outcome is not None:
            clauses.extend(outcome_where(self.outcome, error_type, self.waits))
        if self.key is not None:
            clauses.append(f"s.business_key = {mark}")
            params.append(self.key)
        if self.text is not None:
            clauses.append(f"lower(s.saga_id) LIKE {mark} ESCAPE '\\'")
            escaped = self.text.lower().replace("\\", "\\\\")
            params.append("%" + escaped.replace("%", "\\%").replace("_", "\\_") + "%")
        if self.newer is not None:
            clauses.append(f"s.created_at >= {mark}")
            params.append(float(self.newer))
        if self.older is not None:
            clauses.append(f"s.created_at < {mark}")
            params.append(float(self.older))
        if self.status is not None:
            # Written out (statuses are a fixed set of names), sorted: the unfinished
            # ones read as the index of the sagas that are not parked names them.
            values = sorted({SagaStatus(v).value for v in self.status})
            clauses.append(f"s.status IN ({', '.join(repr(v) for v in values)})")
        if self.parked is not None:
            clauses.append(f"s.waiting IS {'NOT ' if self.parked else ''}NULL")
        if self.name is not None:
            clauses.append(f"s.saga_name = {mark}")
            params.append(self.name)
        if self.saga_id is not None:
            clauses.append(f"s.saga_id = {mark}")
            params.append(self.saga_id)
        if self.until is not None:
            clauses.append(f"s.created_at >= {mark} AND (s.created_at > {mark}"
                           f" OR s.saga_id >= {mark})")
            params.extend((self.until[0], self.until[0], self.until[1]))
        if self.after is not None and self.by_start:
            # The first term bounds the index range (a page costs its size, not the
            # pages before it); the second leaves out what that page showed.
            clauses.append(f"s.created_at <= {mark} AND (s.created_at < {mark}"
                           f" OR s.saga_id < {mark})")
            params.extend((self.after[0], self.after[0], self.after[1]))
        elif self.after is not None and self.newest_first:
            clauses.append(
                f"(s.updated_at < {mark} OR (s.updated_at = {mark} AND s.saga_id > {mark}))"
            )
            params.extend((self.after[0], self.after[0], self.after[1]))
        elif self.after is not None:
            clauses.append(f"s.saga_id > {mark}")
            params.append(self.after[0])
        text = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        order = "s.updated_at DESC, s.saga_id" if self.newest_first else "s.saga_id"
        if self.by_start:
            order = "s.created_at DESC, s.saga_id DESC"
        text += f" ORDER BY {order}"
        if self.limit is not None:
            text += f" LIMIT {mark}"
            params.append(int(self.limit))
        if self.offset is not None:
            text += f" OFFSET {mark}"
            params.append(int(self.offset))
        return text, params


class SQLStore:
    """The durable store's logic; a dialect subclass provides :meth:`_fetch`,
    :meth:`_write_batch`, :meth:`_execute`, :meth:`_where` and opens its lanes.

    ``readonly`` stores never write: no table is created, no schema migrated, and every
    write raises :class:`~sagaflow.StoreError`.
    """

    #: the parameter placeholder of the dialect's SQL
    MARK: ClassVar[str] = "?"

    def _execute_indexed(self, statement: str, params: Sequence[Any]) -> Any:
        """:meth:`_execute` a read whose every table is to be read from an index
        (a dialect whose planner may choose otherwise says so here)."""
        return self._execute(statement, params)

    def indexed(self, index: str) -> str:
        """What follows ``sagaflow_sagas s`` in a read to have it use ``index`` (SQLite:
        ``INDEXED BY``; a planner with statistics needs no hint)."""
        return ""

    commits: int  #: transactions committed
    writes: int  #: saga writes they carried: ``writes / commits`` checkpoints per commit

    def __init__(self, codec: Codec | None, readonly: bool) -> None:
        self.codec = codec if codec is not None else default_codec
        self.readonly = readonly
        self.commits = 0
        self.writes = 0
        #: the schema version found in the database (a read-only store reads older ones)
        self.layout = SCHEMA_VERSION
        self._closed = False
        self._pid = os.getpid()
        # saga name -> {fingerprint: saga class}: how stored data is turned back into
        # instances. Filled by register() and by every create().
        self._classes: dict[str, dict[str, type]] = {}
        self._data_types: dict[type, str] = {}
        # saga id -> what the store has of the record object it was last saved (or
        # read) from, so that that record's next checkpoint encodes only what changed.
        # Another copy of the saga is encoded whole, and the writer skips its spilled
        # items already stored. Running sagas only; an entry goes with its record.
        self._tracked: dict[str, Tracked] = {}
        # Sagas saved by async callers and not finished: while there is one, it has no
        # one to share a commit with (a saga given up on without finishing stays here,
        # which only costs it the shortcut).
        self._async_running: set[str] = set()
        self._commit: Committer
        #: who hears of this process's commits that wrote outbox rows (see on_outbox)
        self._outbox_wake: list[Callable[[], None]] = []
        #: the lifecycle event classes written to the outbox too (publish_lifecycle)
        self._lifecycle: frozenset[type] = frozenset()

    # -- what a dialect provides ---------------------------------------------------------

    def _fetch(self, select: Select) -> list[StoredSaga]:
        """The sagas ``select`` wants, with their lists' spilled items, in one snapshot."""
        raise NotImplementedError

    def _write_batch(self, batch: list[Write], lane: Any) -> None:
        """Write ``batch`` in one transaction on ``lane``; set each item's outcome."""
        raise NotImplementedError

    def _execute(self, statement: str, params: Sequence[Any] = (), *, write: bool = False) -> Any:
        """Run one statement (SQL with ``?`` marks): its rows, or its row count."""
        raise NotImplementedError

    def _where(self) -> str:
        """Where the database is, for messages."""
        raise NotImplementedError

    def _transact(self, work: Callable[[Run], Any]) -> Any:
        """``work(run)`` in one write transaction, committed (durably) before this
        returns and rolled back if it raises; ``run(statement, params)`` executes SQL
        with ``?`` marks in it: its rows, or its row count."""
        raise NotImplementedError

    # -- saga classes ----------------------------------------------------------------------

    def register(self, *saga_classes: type) -> None:
        """Tell the store which classes stored sagas are instances of, so it can load
        them (``create`` registers the classes it sees; recovery registers the rest)."""
        for cls in saga_classes:
            spec = spec_of(cls)
            self._classes.setdefault(spec.name, {})[spec.fingerprint] = spec.cls

    def _learn(self, record: SagaRecord) -> None:
        known = self._classes.setdefault(record.saga_name, {})
        cls = type(record.data)
        if known.get(record.fingerprint) is not cls:
            known.pop(record.fingerprint, None)  # re-insert: the newest class is last
            known[record.fingerprint] = cls

    def _class_for(self, stored: StoredSaga) -> type:
        known = self._classes.get(stored.saga_name)
        if known:
            exact = known.get(stored.fingerprint)
            return exact if exact is not None else next(reversed(known.values()))
        try:
            found = import_path(stored.data_type)
        except CodecError as exc:
            raise UnknownSagaClass(
                stored.saga_id, stored.saga_name, str(stored.data_type), str(exc)
            ) from exc
        if not is_saga(found) or spec_of(found).name != stored.saga_name:
            raise UnknownSagaClass(
                stored.saga_id, stored.saga_name, stored.data_type,
                "that name is not a saga class of this name",
            )
        self.register(found)
        return found  # type: ignore[no-any-return]

    def _data_type(self, cls: type) -> str:
        path = self._data_types.get(cls)
        if path is None:
            path = self._data_types[cls] = type_path(cls)
        return path

    # -- encoding a write ------------------------------------------------------------------

    def _item(
        self,
        record: SagaRecord,
        create: bool,
        fence: int | None = None,
        run_at: float | None = None,
    ) -> Write:
        """Encode a write of ``record``: a create, or a save of the next version."""
        self._check_writable()
        try:
            item = self._encode(record, create)
        except BaseException:
            # What this store knows of the saga may be half updated: forget it (the
            # next save encodes the whole record).
            self._forget(record)
            raise
        item.fence = fence
        if not item.terminal:
            item.run_at = run_at
        return item

    def _encode(self, record: SagaRecord, create: bool) -> Write:
        codec = self.codec
        sid = record.saga_id
        expected = record.version
        known = None if create else self._tracking(record)
        # Nothing known (a create, a copy made elsewhere): encode it all.
        tracked = known or Tracked(expected, [], None, (_NOTHING, _NOTHING, _NOTHING), ())
        steps = tracked.steps(codec, record.steps)
        history, events, path = record.history, record.events, record.path
        h_rows = e_rows = p_rows = _NONE
        told = tracked.history[0]  # the lifecycle events before it are stored
        if len(history) != told:
            item_text = codec.history_item
            moved, tracked.history = extend(
                tracked.history, history, lambda e, i: item_text(e), "history", sid
            )
            if moved:
                history_row = codec.history_row
                h_rows = [(sid, i, *history_row(history[i])) for i in moved]
        outbox = _NONE
        if len(events) != tracked.events[0]:
            dump_event = codec.dump_event
            new = tracked.events[0]  # the events before it are stored (and in the outbox)
            texts: dict[int, str] = {}

            def text_of(event: Any, i: int) -> str:
                text = texts.get(i)
                if text is None:
                    text = texts[i] = dump_event(event, record, i)
                return text

            moved, tracked.events = extend(
                tracked.events, events, text_of, "domain events", sid
            )
            if moved:
                e_rows = [(sid, i, text_of(events[i], i)) for i in moved]
            # The outbox: one row per event this save records first (a save whose store
            # did not know the saga has them all: those already there are skipped).
            name, at = record.saga_name, record.updated_at
            outbox = []
            for i in range(new, len(events)):
                body = text_of(events[i], i)
                outbox.append((f"{sid}:{i}", sid, name, i, event_type(body), body, at))
        if self._lifecycle and told < len(history):
            outbox = self._lifecycle_rows(record, told, outbox)
        if len(path) != tracked.path[0]:
            moved, tracked.path = extend(tracked.path, path, edge_text, "path", sid)
            if moved:
                p_rows = [(sid, i, *path[i]) for i in moved]
        version = expected if create else expected + 1
        # At a saga's first save here, check that its data loads back as itself.
        row = self._row(record, version, known is None, steps, tracked)
        item = Write(create, row, expected, h_rows, e_rows, p_rows, known is None and not create)
        if outbox:
            item.outbox = outbox
        static = static_of(row)
        item.narrow = tracked.static == static
        if record.status.is_terminal:
            item.terminal = True
            self._forget(record)  # running sagas only
            return item
        tracked.static = static
        tracked.version = version
        if create:
            item.tracked = tracked  # installed once the insert is known to be new
        elif known is None:
            self._track(record, tracked)
        return item

    def _tracking(self, record: SagaRecord) -> Tracked | None:
        """What the store has of ``record`` (this object, at its version), if known."""
        tracked = self._tracked.get(record.saga_id)
        if tracked is None or tracked.version != record.version or tracked.owner() is not record:
            return None
        return tracked

    def _track(self, record: SagaRecord, tracked: Tracked) -> None:
        sid = record.saga_id
        tracked.owner = weakref.ref(record, lambda ref: self._dropped(sid, ref))
        self._tracked[sid] = tracked

    def _dropped(self, saga_id: str, ref: Any) -> None:
        """A tracked record is gone (garbage): so is what the store kept of it."""
        tracked = self._tracked.get(saga_id)
        if tracked is not None and tracked.owner is ref:
            self._tracked.pop(saga_id, None)
            self._async_running.discard(saga_id)  # nobody runs it here any more

    def _forget(self, record: SagaRecord) -> None:
        tracked = self._tracked.get(record.saga_id)
        if tracked is not None and tracked.owner() is record:
            self._tracked.pop(record.saga_id, None)

    def _row(
        self,
        record: SagaRecord,
        version: int,
        verify: bool,
        steps: str,
        tracked: Tracked,
    ) -> tuple[Any, ...]:
        """The saga row's values, in :data:`~._rows.COLUMNS` order."""
        codec = self.codec
        dumps = codec.dumps_json
        error = record.error
        history, events, path = tracked.history, tracked.events, tracked.path
        waiting, marks = record.waiting, record.signal_marks
        return (
            record.saga_id, record.saga_name, record.fingerprint,
            self._data_type(type(record.data)), record.status.value, record.state, version,
            record.cursor, dumps(record.undo) if record.undo else "[]", record.created_at,
            record.updated_at, record.finished_at, record.wake_at, record.deadline_at,
            record.compensation_deadline_at, steps, codec.dump_data(record, verify=verify),
            None if error is None else dumps(codec.encode_error(error)),
            dumps(record.failures) if record.failures else None, record.resolution,
            f"[{history[1]}]", history[0], f"[{events[1]}]", events[0], f"[{path[1]}]",
            path[0], waiting, 0 if waiting is None else marks.get(waiting, 0),
            dumps(marks) if marks else "{}", record.business_key,
        )  # fmt: skip

    def _committed(self, batch: list[Write], outcomes: list[BaseException | bool]) -> None:
        """A dialect committed ``batch``: count it, give each item its outcome (True:
        written or inserted; False: a create whose id existed; an error: a lost race)."""
        self.commits += 1
        self.writes += len(batch)
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                item.error = outcome
            else:
                item.inserted = outcome
        if self._outbox_wake:
            self._wake_outbox(batch)

    # -- the Store protocol: sync ----------------------------------------------------------

    def create(self, record: SagaRecord) -> SagaRecord | None:
        """Insert ``record`` unless its saga id exists (then return the stored one).

        The first save of a saga: its data is checked to load back as itself, so a
        field that cannot be stored fails here, naming the field.
        """
        item = self._item(record, create=True)
        self._commit.submit((item,))
        if item.error is not None:
            raise item.error
        return self._created(record, item)

    def _created(self, record: SagaRecord, item: Write) -> SagaRecord | None:
        if item.inserted:
            self._learn(record)
            if item.tracked is not None:
                self._track(record, item.tracked)
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
        """Commit ``record``; durable when this returns.

        Optimistic concurrency: the store's version must be ``record.version``, which
        is then bumped; else :class:`~sagaflow.ConcurrentModification` and nothing is
        written.
        """
        self._save(record, None)

    def _save(self, record: SagaRecord, fence: int | None) -> None:
        item = self._item(record, create=False, fence=fence)
        try:
            self._commit.submit((item,))
        except BaseException:
            self._forget(record)
            raise
        if item.error is not None:
            self._forget(record)
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
        found = self.scan(status=status, name=name, newest_first=True, limit=limit)
        return [self.decode(s) for s in found]

    # -- the Store protocol: async ---------------------------------------------------------

    async def acreate(self, record: SagaRecord) -> SagaRecord | None:
        """:meth:`create`, group-committed with other sagas' writes."""
        return await self._acreate(self._item(record, create=True), record)

    async def _acreate(self, item: Write, record: SagaRecord) -> SagaRecord | None:
        await self._submit_async(item, record)
        if item.inserted:
            return self._created(record, item)
        return await asyncio.to_thread(self._created, record, item)

    async def asave(self, record: SagaRecord) -> None:
        """:meth:`save`, group-committed: many sagas' checkpoints share a transaction,
        and this returns once *this* record is committed.

        If the awaiting task is cancelled meanwhile, the write still happens (it may
        already be committed) and ``record.version`` already counts it, so the saga's
        next save follows on from it.
        """
        await self._asave(record, None)

    async def _asave(self, record: SagaRecord, fence: int | None) -> None:
        item = self._item(record, create=False, fence=fence)
        expected = item.expected
        record.version = expected + 1
        try:
            await self._submit_async(item, record)
        except asyncio.CancelledError:
            raise
        except BaseException:
            if record.version == expected + 1:
                record.version = expected
            self._forget(record)
            raise

    async def _submit_async(self, item: Write, record: SagaRecord) -> None:
        """Write ``item``, group-committed with the other async sagas' checkpoints; a
        saga alone (the only async saga of this store since its first write) has it
        written at once."""
        running = self._async_running
        sid = record.saga_id
        first = sid not in running
        if item.terminal or record.waiting is not None:
            # Finished, or parked (a row, resumed who knows when: nothing kept for it).
            running.discard(sid)
        else:
            running.add(sid)
        future = self._commit.submit_async(item, len(running) <= 1, first)
        if future is not None:
            await future
        elif item.error is not None:
            raise item.error

    async def aload(self, saga_id: str) -> SagaRecord | None:
        """:meth:`load` on a worker thread."""
        return await asyncio.to_thread(self.load, saga_id)

    # -- raw access: recovery and operators ------------------------------------------------

    def load_raw(self, saga_id: str) -> StoredSaga | None:
        """The stored form of ``saga_id``, not decoded; ``None`` if absent."""
        found = self._fetch(Select(saga_id=saga_id))
        return found[0] if found else None

    def scan(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        newest_first: bool = False,
        limit: int | None = None,
        batch: int = 500,
        parked: bool | None = None,
        after: tuple[float, str] | None = None,
    ) -> Iterator[StoredSaga]:
        """Stored sagas matching ``status`` and ``name``, undecoded: by saga id, or
        most recently updated first; at most ``limit``; most recently updated first,
        from after ``after`` (the ``(updated_at, saga_id)`` of the last one of a page
        before: keyset paging, each page costing its size). ``parked=False``: only the
        sagas not parked at a wait (``True``: only those); the unfinished ones of them,
        by saga id, are read from an index of their own (recovery: a page costs its
        size, whatever the number of parked sagas).

        Reads in batches (each one consistent), so a huge table does not sit in memory
        and writers are not held up. Decoding is left to :meth:`decode`, so one damaged
        record is reported by its id and never stops the iteration.
        """
        values = None if status is None else tuple(SagaStatus(s).value for s in status)
        if values == () or (parked and self.layout < 3):
            return
        if self.layout < 3:
            parked = None  # nothing waits in a layout without waits
        if after is not None and not newest_first:
            raise ValueError("scan(after=...) pages the most recently updated first: "
                             "pass newest_first=True")
        left = limit
        mark: tuple[Any, ...] | None = after
        while left is None or left > 0:
            size = batch if left is None else min(batch, left)
            found = self._fetch(
                Select(values, name, None, mark, newest_first, size, parked)
            )
            yield from found
            if len(found) < size:
                return
            if left is not None:
                left -= size
            last = found[-1]
            mark = (last.updated_at, last.saga_id) if newest_first else (last.saga_id,)

    @staticmethod
    def error_type(column: str) -> str:
        """The dialect's SQL of the type tag of the error JSON in ``column`` (NULL when
        there is none): what the outcome filter reads, and the error types' index holds."""
        raise NotImplementedError

    #: How many sagas a page with an id text filter looks through at most: a text few
    #: ids hold would otherwise read back through every saga (the start-time index, in
    #: order) to fill a page; the page then says how far it looked (``searched_to``).
    TEXT_REACH: ClassVar[int] = 2000

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
    ) -> Browsed:
        """A page of the dashboard's list: the sagas of ``status`` (any of them),
        class ``name``, ``outcome`` (a word of :data:`~sagaflow.records.OUTCOMES`),
        business ``key``, whose id contains ``text`` (case-insensitive), started at or
        after ``newer`` and before ``older`` (epoch seconds); newest started first
        (then by saga id, descending), at most ``limit``, from after ``after`` (the
        ``(created_at, saga_id)`` of the last saga of the page before: keyset paging).

        Every filter is in the query, and the order is an index's (schema 6: by start
        time, alone or after the status, the class or the error's type), so a page
        costs its size plus the sagas a second filter passes over; never the pages
        before it. With ``text``, a page looks through the next :attr:`TEXT_REACH`
        sagas of the other filters at most: fewer than ``limit`` found and more sagas
        beyond them, the answer's ``searched_to`` is the position to go on from.

        ``incidents``: only the sagas with an open incident of these kinds (``failed``,
        ``quarantined``, ``stalled``: stalled means no checkpoint since
        ``stalled_before``, none when it is ``None``), as
        :func:`sagaflow.incidents.open_incidents` finds them; each kind read from an
        index in the list's order (:func:`incident_selects`), so a page costs its size
        per kind (plus, for the stalled, the busy sagas passed over). The id text
        filter looks through every such saga then."""
        values = None if status is None else tuple(SagaStatus(s).value for s in status)
        if values == () or (key is not None and self.layout < 3):
            return Browsed()  # (no business keys before schema 3)
        select = Select(
            status=values, name=name, after=after, limit=int(limit), outcome=outcome,
            key=key, text=text, newer=newer, older=older, by_start=True,
            waits=self.layout >= 3,
        )
        if incidents is not None:
            return self._with_incidents(select, incidents, stalled_before)
        reach = None
        if text is not None:
            # Where the window of TEXT_REACH sagas ends: read from the index alone.
            edge = attrs.evolve(select, text=None, limit=1, offset=self.TEXT_REACH - 1)
            where, params = edge.render("?", self.error_type("s.error"))
            found = self._execute(
                f"SELECT s.created_at, s.saga_id FROM sagaflow_sagas s{where}", params
            )
            if found:
                reach = (float(found[0][0]), str(found[0][1]))
                select = attrs.evolve(select, until=reach)
        rows = Browsed(self._fetch(select))
        if reach is not None and len(rows) < limit:
            rows.searched_to = reach
        return rows

    def _with_incidents(
        self, select: Select, kinds: Collection[str], stalled_before: float | None,
    ) -> Browsed:
        """A page of the sagas with an open incident: each kind's page, merged."""
        found: dict[str, StoredSaga] = {}
        aside: list[str] = []
        if "quarantined" in kinds and self.layout >= 2:
            aside = [row[0] for row in self._execute("SELECT saga_id FROM sagaflow_quarantine")]
        for _, part in incident_selects(select, kinds, stalled_before, self.layout, aside):
            for stored in self._fetch(part):
                found.setdefault(stored.saga_id, stored)
        rows = sorted(found.values(), key=lambda s: (s.created_at, s.saga_id), reverse=True)
        return Browsed(rows[: select.limit])

    def counts(self, name: str | None = None) -> dict[str, int]:
        """How many sagas of each status the store holds (every status; 0 when none);
        with ``name``, of that saga class only."""
        found = dict.fromkeys((st.value for st in SagaStatus), 0)
        if name is not None:
            # One seek per status into the (status, saga_name) index, which holds all
            # the query reads: never the rows, whatever the class's size.
            marks = ", ".join([self.MARK] * len(found))
            rows = self._execute(
                f"SELECT status, count(*) FROM sagaflow_sagas WHERE status IN ({marks})"
                f" AND saga_name = {self.MARK} GROUP BY status", (*found, name),
            )
        else:
            # Schema 6: the counts kept by triggers (a read of a few rows, whatever the
            # number of sagas); before, counted from the status index.
            rows = self._execute(
                "SELECT status, sum(n) FROM sagaflow_counts GROUP BY status"
                if self.layout >= 6
                else "SELECT status, count(*) FROM sagaflow_sagas GROUP BY status"
            )
        for status, n in rows:
            found[str(status)] = int(n)
        return found

    def decode(
        self, stored: Stored, cls: type | None = None, *, raw_data: bool = False
    ) -> SagaRecord:
        """The record of ``stored``, checked column by column against its saga's
        definition. ``cls`` is the saga class (default: the one registered for its
        name, or imported from its stored type path); ``raw_data=True`` leaves ``data``
        as its JSON form (an operator's view of a saga whose class is not at hand).
        Raises :class:`~sagaflow.CorruptRecord` (naming the saga and the column) or
        :class:`~sagaflow.UnknownSagaClass`."""
        if not isinstance(stored, StoredSaga):
            raise TypeError(f"{stored!r} did not come from a {type(self).__name__}")
        if cls is None and not raw_data:
            cls = self._class_for(stored)
        spec = spec_of(cls) if cls is not None and is_saga(cls) else None
        record = decode_row(self.codec, stored, cls, spec)
        if cls is not None and not self.readonly and not record.status.is_terminal:
            # Its first save here encodes only what changed since this row (unless a
            # record of the saga is being saved here already: that one stays known).
            known = self._tracked.get(record.saga_id)
            if known is None or known.owner() is None:
                self._track(record, Tracked.of(stored, record))
        return record

    # -- signals and waits -----------------------------------------------------------------

    #: What the read of the saga's row in :meth:`add_signal` adds to lock it (PostgreSQL:
    #: signals to one saga are numbered in the order they commit).
    LOCK_ROW: ClassVar[str] = ""

    def add_signal(
        self, saga_id: str, name: str, signal_id: str, payload: str, at: float
    ) -> Signal | None:
        """Store signal ``name`` for saga ``saga_id``; committed when this returns.

        In one transaction with the check of the saga's row: :class:`~sagaflow.SagaNotFound`
        if there is none, :class:`~sagaflow.SignalRefused` if it is finished; ``None``
        (and nothing changes) if a signal ``signal_id`` of this saga is stored already;
        else the signal, with its arrival number ``seq``. ``payload`` is JSON text.
        """
        self._check_writable()
        at = _signal_fields(name, signal_id, payload, at)

        def work(run: Run) -> Signal | None:
            found = run("SELECT status FROM sagaflow_sagas WHERE saga_id = ?" + self.LOCK_ROW,
                        (saga_id,))
            if not found:
                raise SagaNotFound(saga_id)
            status = found[0][0]
            if status in _TERMINAL:
                if run(_SIGNAL_SEQ, (saga_id, signal_id)):
                    return None  # a duplicate: its sender may not know the first was taken
                raise SignalRefused(
                    saga_id, name, f"it is {status}: a finished saga takes no signals"
                )
            if not run(_ADD_SIGNAL, (saga_id, name, signal_id, payload, at)):
                return None  # stored already
            rows = run(_SIGNAL_SEQ, (saga_id, signal_id))
            if self.layout >= 4:
                run(_FLAG, (rows[0][0], saga_id))
            self._signalled(run, saga_id, name, at)
            return Signal(saga_id, rows[0][0], name, signal_id, payload, at)

        result: Signal | None = self._transact(work)
        return result

    def _signalled(self, run: Run, saga_id: str, name: str, at: float) -> None:
        """Signal ``name`` of saga ``saga_id`` is stored, in the transaction ``run``
        executes in: a dialect that wakes workers does it here (PostgreSQL: a saga parked
        for it is due now, and the workers are told)."""

    def next_signal(self, saga_id: str, name: str, after: int) -> Signal | None:
        """Saga ``saga_id``'s signal ``name`` with the smallest ``seq`` above ``after``."""
        if self.layout < 3:
            return None
        rows = self._execute(
            f"{_SIGNAL} WHERE saga_id = ? AND name = ? AND seq > ? ORDER BY seq LIMIT 1",
            (saga_id, name, int(after)),
        )
        return Signal(*rows[0]) if rows else None

    def signals(self, saga_id: str) -> list[Signal]:
        """Every signal of saga ``saga_id``, delivered or not, in arrival order."""
        if self.layout < 3:
            return []
        rows = self._execute(f"{_SIGNAL} WHERE saga_id = ? ORDER BY seq", (saga_id,))
        return [Signal(*row) for row in rows]

    def due(self, now: float, limit: int = 100) -> list[str]:
        """Ids of the parked sagas to wake: RUNNING, not quarantined, and their wake time
        is ``now`` or past, or a signal they wait for arrived (``seq`` above their mark);
        the earliest wake time first (a saga with none counts as due at ``now``), then by
        id; at most ``limit``."""
        if self.layout < 3:
            return []
        if self.layout < 4:
            return [row[0] for row in self._execute(_DUE_3, (now, now, int(limit)))]
        n = int(limit)
        due = _DUE.format(parked=self.indexed("sagaflow_sagas_parked"),
                          signalled=self.indexed("sagaflow_sagas_signalled"))
        return [row[0] for row in self._execute_indexed(due, (now, n, now, now, n, n))]

    def by_key(
        self, key: str, saga_name: str | None = None, *, unfinished: bool = True
    ) -> list[str]:
        """Ids of the unfinished sagas (``unfinished=False``: of any status) whose
        business key is ``key`` (and whose saga is ``saga_name``, if given), newest
        first."""
        if self.layout < 3:
            return []
        where, params = "business_key = ?", [key]
        if saga_name is not None:
            where += " AND saga_name = ?"
            params.append(saga_name)
        rows = self._execute(
            f"SELECT saga_id FROM sagaflow_sagas WHERE {where}"
            f"{f' AND {_UNFINISHED}' if unfinished else ''}"
            " ORDER BY created_at DESC, saga_id",
            params,
        )
        return [row[0] for row in rows]

    async def aadd_signal(
        self, saga_id: str, name: str, signal_id: str, payload: str, at: float
    ) -> Signal | None:
        """:meth:`add_signal` on a worker thread (it may wait for a lock and a sync)."""
        return await asyncio.to_thread(self.add_signal, saga_id, name, signal_id, payload, at)

    async def anext_signal(self, saga_id: str, name: str, after: int) -> Signal | None:
        """:meth:`next_signal` on a worker thread."""
        return await asyncio.to_thread(self.next_signal, saga_id, name, after)

    # -- the outbox ------------------------------------------------------------------------

    def publish_lifecycle(self, *event_types: type) -> None:
        """Also write the lifecycle events of these classes to the outbox (see
        :meth:`~sagaflow.stores.OutboxStore.publish_lifecycle`)."""
        self._lifecycle = lifecycle_types(event_types)

    def _lifecycle_rows(
        self, record: SagaRecord, first: int, rows: Any
    ) -> list[tuple[Any, ...]]:
        """``rows`` and the outbox rows of ``record``'s lifecycle events from history
        event ``first`` on, of the classes :meth:`publish_lifecycle` named."""
        sid, name = record.saga_id, record.saga_name
        out = list(rows)
        history = record.history
        for i in range(first, len(history)):
            event = history[i]
            if type(event) in self._lifecycle:
                body = self.codec.dump_event(event, record, i)
                out.append((f"{sid}:h{i}", sid, name, i, event_type(body), body, event.at))
        return out

    def outbox(self, limit: int = 100) -> list[Message]:
        """The domain events not relayed yet, in the order they were written (at most
        ``limit``): each saga's in the order it emitted them."""
        if self.layout < 5:
            return []
        rows = self._execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM sagaflow_outbox"
            f"{self.indexed('sagaflow_outbox_pending')} WHERE relayed_at IS NULL"
            " ORDER BY n LIMIT ?",
            (int(limit),),
        )
        return [Message(*row) for row in rows]

    def relayed(self, ids: Collection[str]) -> None:
        """Mark the messages ``ids`` relayed: :meth:`outbox` gives them no more."""
        self._outbox_update("relayed_at = ?", (time.time(),), ids)

    def outbox_failed(self, ids: Collection[str], error: str) -> None:
        """A publisher refused the messages ``ids``: count the attempt, keep ``error``
        (they stay in the outbox, to be relayed again)."""
        self._outbox_update("attempts = attempts + 1, last_error = ?", (str(error),), ids)

    def _outbox_update(self, assign: str, values: tuple[Any, ...], ids: Collection[str]) -> None:
        self._check_writable()
        ids = list(ids)
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            self._execute(
                f"UPDATE sagaflow_outbox SET {assign} WHERE id IN ({', '.join('?' * len(chunk))})",
                (*values, *chunk),
                write=True,
            )

    def relay_outbox(self, publish: Callable[[list[Message]], Any], limit: int = 100) -> int:
        """Relay one batch: the next ``limit`` messages to ``publish``, then marked
        relayed; how many. If ``publish`` raises, none is marked: the attempt is counted
        against each (:meth:`outbox_failed`) and the error raised."""
        messages = self.outbox(limit)
        if not messages:
            return 0
        ids = [m.id for m in messages]
        try:
            publish(messages)
        except Exception as exc:
            self.outbox_failed(ids, _describe(exc))
            raise
        self.relayed(ids)
        return len(messages)

    def outbox_stats(self) -> OutboxStats:
        """How many messages wait to be relayed, since when, and which ones failed."""
        if self.layout < 5:
            return OutboxStats(0, None, ())
        count, oldest = self._execute(
            f"SELECT count(*), min(at){_PENDING}", ()
        )[0]
        failing = self._execute(
            f"SELECT id, attempts, last_error{_PENDING} AND attempts > 0"
            " ORDER BY attempts DESC, n LIMIT 100",
            (),
        )
        return OutboxStats(int(count), oldest, tuple(tuple(r) for r in failing))

    def on_outbox(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (on the writing thread: keep it quick, e.g. set an event)
        after each commit of this store that wrote outbox rows; returns the function
        that stops it. How a relay in the same process hears of new messages at once."""
        self._outbox_wake.append(callback)

        def stop() -> None:
            if callback in self._outbox_wake:
                self._outbox_wake.remove(callback)

        return stop

    def _wake_outbox(self, batch: list[Write]) -> None:
        """``batch`` is committed: tell the relays of this process if it wrote rows."""
        if self._outbox_wake and any(item.outbox and item.error is None for item in batch):
            for callback in list(self._outbox_wake):
                callback()

    # -- quarantine ------------------------------------------------------------------------

    def quarantine(self, saga_id: str, reason: str) -> None:
        """Set saga ``saga_id`` aside, saying why: it is listed and never claimed until
        :meth:`unquarantine`. Its own row is left as it is. Raises
        :class:`~sagaflow.SagaNotFound` if there is no such saga."""
        self._check_writable()
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("quarantine needs a reason: say why the saga is set aside")
        if not self._execute(_QUARANTINE, (saga_id, reason, time.time(), saga_id), write=True):
            raise SagaNotFound(saga_id)

    def unquarantine(self, saga_id: str) -> bool:
        """Lift ``saga_id``'s quarantine; whether it was quarantined."""
        self._check_writable()
        deleted = self._execute(
            "DELETE FROM sagaflow_quarantine WHERE saga_id = ?", (saga_id,), write=True
        )
        return bool(deleted)

    def quarantined(self) -> list[Quarantined]:
        """Every quarantined saga, the longest set aside first."""
        if self.layout < 2:  # written before quarantine existed: nothing is
            return []
        rows = self._execute(_QUARANTINED)
        return [Quarantined(sid, name, reason, at) for sid, name, reason, at in rows]

    # -- incidents -------------------------------------------------------------------------

    def claim_incident(self, incident: Incident, by: str) -> bool:
        """Claim ``incident`` for ``by`` (a worker's id): ``True`` for the first
        claimant of every store on this database, ``False`` for the others, and for an
        incident of the saga older than one claimed already. A saga that moved on and
        stalls again opens a later incident, claimed anew. Writes a row of its own,
        never the saga's. Schema 7."""
        self._check_writable()
        claimed = self._execute(_CLAIM, (
            incident.saga_id, incident.kind, float(incident.since), incident.id, by,
            time.time(),
        ), write=True)
        return bool(claimed)

    # -- the schema ------------------------------------------------------------------------

    def _open_schema(
        self,
        run: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]],
        has_meta: bool,
        migrations: Sequence[Sequence[str]],
    ) -> None:
        """Check the schema version and, unless read-only, create or migrate the tables
        (``migrations[v]`` takes version ``v`` to ``v + 1``). ``run`` executes in the
        dialect's schema transaction, under its lock against other processes."""
        where = self._where()
        found: Any = None
        if has_meta:
            rows = run("SELECT value FROM sagaflow_meta WHERE key = 'schema_version'", ())
            found = rows[0][0] if rows else None
        if found is None and self.readonly:
            raise StoreError(
                f"{where} has no sagaflow schema (no sagaflow_meta table with a schema "
                "version): it is not a sagaflow store, or nothing was ever stored there"
            )
        try:
            version = 0 if found is None else int(found)
        except (TypeError, ValueError):
            raise StoreError(
                f"{where}: sagaflow_meta.schema_version is {found!r}, not a number: the "
                "tables were not written by sagaflow, or are damaged"
            ) from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{where} has sagaflow schema version {version}, newer than this sagaflow "
                f"understands ({SCHEMA_VERSION}): upgrade sagaflow"
            )
        if version < 0 or (found is not None and version < 1):
            raise StoreError(f"{where}: unknown sagaflow schema version {version}")
        self.layout = version
        if self.readonly or version == SCHEMA_VERSION:
            return
        run(_META, ())
        for step in migrations[version:]:
            for statement in step:
                run(statement, ())
        run(_SET_VERSION, (str(SCHEMA_VERSION),))
        self.layout = SCHEMA_VERSION

    @property
    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        rows = self._execute("SELECT value FROM sagaflow_meta WHERE key = 'schema_version'")
        return int(rows[0][0])

    # -- lifecycle -------------------------------------------------------------------------

    def _closed_error(self) -> StoreError | None:
        if self._closed:
            return StoreError(f"the sagaflow store at {self._where()} is closed")
        if os.getpid() != self._pid:
            # Connections must not cross a fork: the child would share the parent's
            # sockets or file locks (and could corrupt a SQLite database).
            return StoreError(
                f"this {type(self).__name__} for {self._where()} was opened in process "
                f"{self._pid}, before a fork: open a new {type(self).__name__} in each process"
            )
        return None

    def _check_open(self) -> None:
        error = self._closed_error()
        if error is not None:
            raise error

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise StoreError(f"the sagaflow store at {self._where()} was opened read-only")

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return int(self._execute("SELECT count(*) FROM sagaflow_sagas")[0][0])




def _signal_fields(name: Any, signal_id: Any, payload: Any, at: Any) -> float:
    """Check a signal's fields before anything is written; its time, as a float."""
    for what, value in (("name", name), ("signal_id", signal_id)):
        if type(value) is not str or not value:
            raise TypeError(f"a signal's {what} is a non-empty string, not {value!r}")
    if not isinstance(payload, str):
        raise TypeError(f"a signal's payload is JSON text (a str), not {type(payload).__name__}")
    if type(at) not in (int, float) or not math.isfinite(at):
        raise ValueError(f"a signal's time (at) is a finite number of seconds, not {at!r}")
    return float(at)


def _describe(exc: BaseException) -> str:
    """An error as the outbox keeps it: its type and message, not too long."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:1997] + "..."

"""The PostgreSQL store's layout: its tables (created, and migrated, version by version),
how a saga's row is read with its lists' spilled items in one statement, and the stored
saga with its place in the queue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from ._rows import COLUMNS, INLINE, StoredSaga
from ._sql import (
    browse_indexes,
    incident_claims,
    outbox_table,
    quarantine_join,
    select_list,
    signalled_and_unparked,
    waits_and_signals,
)

__all__ = [
    "MIGRATIONS", "QUEUE", "PostgresStoredSaga", "error_type", "select_columns", "spilled_joins",
]

#: The queue's columns of ``sagaflow_sagas`` (see :mod:`sagaflow.worker`).
QUEUE = ("run_at", "owner", "fence", "lease_until")


def error_type(column: str) -> str:
    """The type tag of the error JSON in ``column`` (the codec writes it first), read
    without parsing: a damaged column reads as NULL instead of failing the write that
    puts its row in the index (PostgreSQL 15 has no test of valid JSON)."""
    return f"substring({column} from '^\\{{\"type\": *\"([^\"\\\\]*)\"')"


#: The counts per status, kept by triggers as rows of changes (+1 for a saga in a status,
#: -1 for one that left it), summed by a read: a write only appends rows, so concurrent
#: writers never wait for each other (a counter row each would be locked by every
#: transaction that starts or moves a saga, until it commits, and two that touch two
#: counters in opposite orders deadlock). About one write in 500 also folds the rows
#: (those no other transaction is folding: SKIP LOCKED, never a wait) into one per
#: status, so a read sums a few hundred rows at most. ``SET search_path FROM CURRENT``:
#: the function finds the table in the store's schema, whoever writes.
COUNTS = (
    "CREATE TABLE sagaflow_counts (status text NOT NULL, n bigint NOT NULL)",
    "INSERT INTO sagaflow_counts (status, n)"
    " SELECT status, count(*) FROM sagaflow_sagas GROUP BY status",
    """CREATE FUNCTION sagaflow_count() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO sagaflow_counts (status, n) VALUES (OLD.status, -1);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO sagaflow_counts (status, n) VALUES (NEW.status, 1);
        END IF;
        IF random() < 0.002 THEN
            WITH gone AS (DELETE FROM sagaflow_counts WHERE ctid IN
                (SELECT ctid FROM sagaflow_counts FOR UPDATE SKIP LOCKED)
                RETURNING status, n)
            INSERT INTO sagaflow_counts (status, n)
            SELECT status, sum(n) FROM gone GROUP BY status;
        END IF;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER sagaflow_counts_insert AFTER INSERT OR DELETE ON sagaflow_sagas"
    " FOR EACH ROW EXECUTE FUNCTION sagaflow_count()",
    "CREATE TRIGGER sagaflow_counts_update AFTER UPDATE OF status ON sagaflow_sagas"
    " FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)"
    " EXECUTE FUNCTION sagaflow_count()",
)

#: ``MIGRATIONS[v]`` takes the schema from version ``v`` to ``v + 1``.
MIGRATIONS = (
    (
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
            run_at double precision,
            owner text,
            fence bigint NOT NULL DEFAULT 0,
            lease_until timestamptz
        ) WITH (fillfactor = 70)""",
        # fillfactor: a checkpoint rewrites the row and changes no indexed column, so
        # with room on the page PostgreSQL updates it in place (HOT) without touching an
        # index. Status changes a few times per saga: indexing (status, name) costs
        # index writes only then, and serves recovery and listings.
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
    ),
    (  # 2: the run's path; quarantine
        "ALTER TABLE sagaflow_sagas ADD COLUMN path text NOT NULL DEFAULT '[]',"
        " ADD COLUMN path_count integer NOT NULL DEFAULT 0",
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
    ),
    # 3: waits and signals. An identity never gives a number twice.
    waits_and_signals("bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "double precision"),
    # 4: what due() and recovery read from indexes (see signalled_and_unparked)
    signalled_and_unparked("bigint"),
    # 5: the outbox (see outbox_table)
    outbox_table("bigserial PRIMARY KEY", "double precision"),
    # 6: the dashboard's list by start time, status, class, outcome (see browse_indexes),
    # and the counts per status (see COUNTS)
    (*browse_indexes(error_type("error")), *COUNTS),
    # 7: who paged which incident; the FAILED sagas no one resolved (see incident_claims)
    incident_claims("double precision"),
)


def spilled_joins(layout: int) -> str:
    """The lists' spilled items of each saga, aggregated in the same statement as its
    row (one snapshot, so the counts always match)."""
    joins = (
        " LEFT JOIN LATERAL (SELECT array_agg(type ORDER BY seq) AS h_type,"
        " array_agg(at ORDER BY seq) AS h_at, array_agg(step ORDER BY seq) AS h_step,"
        " array_agg(attempt ORDER BY seq) AS h_attempt, array_agg(error ORDER BY seq) AS h_error,"
        " array_agg(detail ORDER BY seq) AS h_detail FROM sagaflow_history"
        f" WHERE saga_id = s.saga_id AND s.history_count >= {INLINE}) h ON true"
        " LEFT JOIN LATERAL (SELECT array_agg(body ORDER BY seq) AS e_body FROM sagaflow_events"
        f" WHERE saga_id = s.saga_id AND s.events_count >= {INLINE}) e ON true"
    )
    if layout >= 2:
        joins += (
            " LEFT JOIN LATERAL (SELECT array_agg(source ORDER BY seq) AS p_source,"
            " array_agg(trigger ORDER BY seq) AS p_trigger,"
            " array_agg(destination ORDER BY seq) AS p_destination FROM sagaflow_path"
            f" WHERE saga_id = s.saga_id AND s.path_count >= {INLINE}) p ON true"
        )
    return joins + quarantine_join(layout)


def select_columns(layout: int) -> str:
    path = "p.p_source, p.p_trigger, p.p_destination" if layout >= 2 else "NULL, NULL, NULL"
    return (
        f"{select_list(layout)}, {', '.join(f's.{c}' for c in QUEUE)}, h.h_type, h.h_at,"
        f" h.h_step, h.h_attempt, h.h_error, h.h_detail, e.e_body, {path}"
    )


@attrs.frozen(slots=True)
class PostgresStoredSaga(StoredSaga):
    """A saga as stored, not yet decoded (decode it with :meth:`PostgresStore.decode`).

    Besides the record's headline fields, where it stands in the queue: ``run_at``
    (``None``: not queued), ``owner`` (the worker holding it), ``fence`` (the lease
    token of the latest claim) and ``lease_until``.
    """

    run_at: float | None = None
    owner: str | None = None
    fence: int = 0
    lease_until: Any = None

    @classmethod
    def of(cls, row: Sequence[Any]) -> PostgresStoredSaga:
        q = len(COLUMNS) + 1  # the row's columns, its quarantine reason, then the queue's
        run_at, owner, fence, lease_until = row[q : q + 4]
        h_type, h_at, h_step, h_attempt, h_error, h_detail, e_body, *edges = row[q + 4 :]
        history: tuple[tuple[Any, ...], ...] = ()
        if h_type:
            history = tuple(zip(h_type, h_at, h_step, h_attempt, h_error, h_detail, strict=True))
        path = tuple(zip(*edges, strict=True)) if edges[0] else ()
        return cls(
            **StoredSaga.fields(row, history, e_body or (), path, row[len(COLUMNS)]),
            run_at=run_at, owner=owner, fence=fence, lease_until=lease_until,
        )  # fmt: skip

    @property
    def queued(self) -> bool:
        """Whether workers run this saga (it was enqueued), rather than one process."""
        return self.run_at is not None

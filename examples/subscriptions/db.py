"""The subscription platform's domain database: SQLite, and the service that writes it.

Tables: the catalogue (``bundles``, ``bundle_components`` with their prices), the
customers' ``subscriptions`` (price, version) and their ``subscription_components``,
``price_history``, ``approvals``, the ``audit_events`` trail (the outbox that billing and
entitlements read), and ``applied_keys``, the service's idempotency memory.

Every write is one transaction (``BEGIN IMMEDIATE``) that first looks its idempotency key
up in ``applied_keys``: a repeat returns the first result and writes nothing; an undo whose
forward key never applied writes a *voided* row for that key, so a forward call that
arrives late (its step timed out and was compensated) is refused. The modification is one
transaction, as the seed's one DynamoDB TransactWriteItems per workflow.

Each call opens its own connection: steps with a timeout run on worker threads, and
SQLite serializes writers itself (a writer that waits past ``busy_timeout`` gets
``sqlite3.OperationalError: database is locked``, which the saga retries).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from .._support import Faults, Voided
from . import rules

__all__ = [
    "DB_ENV",
    "Conflict",
    "SubscriptionDB",
    "database",
    "open_database",
]

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
    bundle_id     TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    discount      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bundle_components (
    bundle_id     TEXT NOT NULL REFERENCES bundles,
    component_id  TEXT NOT NULL,
    name          TEXT NOT NULL,
    monthly_price TEXT NOT NULL,
    PRIMARY KEY (bundle_id, component_id)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    subscription_id TEXT PRIMARY KEY,
    customer        TEXT NOT NULL,
    bundle_id       TEXT NOT NULL REFERENCES bundles,
    price           TEXT NOT NULL,
    version         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS subscription_components (
    subscription_id TEXT NOT NULL REFERENCES subscriptions,
    component_id    TEXT NOT NULL,
    PRIMARY KEY (subscription_id, component_id)
);
CREATE TABLE IF NOT EXISTS price_history (
    id              INTEGER PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    old_price       TEXT NOT NULL,
    new_price       TEXT NOT NULL,
    reason          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS approvals (
    approval_id     TEXT PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    removed         TEXT NOT NULL,
    removed_share   TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('PENDING', 'APPROVED', 'WITHDRAWN')),
    idempotency_key TEXT NOT NULL,
    decided_by      TEXT
);
CREATE TABLE IF NOT EXISTS audit_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id         TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    type            TEXT NOT NULL,
    payload         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS applied_keys (
    key     TEXT PRIMARY KEY,
    outcome TEXT NOT NULL CHECK (outcome IN ('applied', 'voided')),
    result  TEXT
);
"""

#: Tables in the order :meth:`SubscriptionDB.snapshot` reads them.
TABLES = (
    "bundles",
    "bundle_components",
    "subscriptions",
    "subscription_components",
    "price_history",
    "approvals",
    "audit_events",
    "applied_keys",
)


class Conflict(Exception):
    """The subscription changed since the saga read it (optimistic concurrency)."""


class SubscriptionDB:
    """The domain database and its operations; ``faults`` is the demo's switch."""

    def __init__(
        self, path: str | Path, busy_timeout: float = 0.25, synchronous: str = "FULL"
    ) -> None:
        if synchronous not in ("FULL", "NORMAL", "OFF"):
            raise ValueError(f"synchronous is 'FULL', 'NORMAL' or 'OFF', got {synchronous!r}")
        self.path = str(path)
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self.faults = Faults()
        self._busy = 0
        self._idle = threading.Condition()
        with contextlib.closing(self._connect()) as conn:
            # WAL: readers never block the writer, and a commit costs one sync, not two
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)

    # --- plumbing ---------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        # OFF (the property tests' choice): no fsync at all; a killed process still loses
        # nothing it committed (the OS has it), only a power cut could
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        with self._idle:
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no write is in flight (a timed-out call finishes on its own thread)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    @contextlib.contextmanager
    def _transaction(self, op: str = "") -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block returns, rolled back if it raises."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                if op:
                    self.faults.check(op, "commit")  # a crash here rolls everything back
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _write(self, op: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction, with the fault points around it."""
        with self._tracked():
            self.faults.check(op)
            with self._transaction(op) as conn:
                result = work(conn)
            self.faults.check(op, "after")  # committed, but the caller never hears
            return result

    @staticmethod
    def _once(conn: sqlite3.Connection, key: str, apply: Callable[[], Any]) -> Any:
        """Apply once per key; a repeat returns the first result. Refuses a voided key."""
        row = conn.execute("SELECT outcome, result FROM applied_keys WHERE key = ?", (key,))
        found = row.fetchone()
        if found is not None:
            if found[0] == "voided":
                raise Voided(key)
            return json.loads(found[1])
        result = apply()
        conn.execute(
            "INSERT INTO applied_keys VALUES (?, 'applied', ?)", (key, json.dumps(result))
        )
        return result

    @classmethod
    def _undo(
        cls, conn: sqlite3.Connection, key: str, forward: str, revert: Callable[[Any], Any]
    ) -> Any:
        """Revert ``forward``'s effect once per key; void ``forward`` if it never applied."""

        def undo() -> Any:
            row = conn.execute(
                "SELECT outcome, result FROM applied_keys WHERE key = ?", (forward,)
            ).fetchone()
            if row is None:
                conn.execute("INSERT INTO applied_keys VALUES (?, 'voided', NULL)", (forward,))
                return None
            return revert(json.loads(row[1]))

        return cls._once(conn, key, undo)

    # --- catalogue and subscriptions ---------------------------------------------

    def add_bundle(
        self, bundle_id: str, name: str, discount: Decimal, components: list[rules.Component]
    ) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT INTO bundles VALUES (?, ?, ?)", (bundle_id, name, str(discount)))
            conn.executemany(
                "INSERT INTO bundle_components VALUES (?, ?, ?, ?)",
                [(bundle_id, c.component_id, c.name, str(c.monthly_price)) for c in components],
            )

    def subscribe(self, subscription_id: str, customer: str, bundle_id: str) -> Decimal:
        """Subscribe ``customer`` to every component of ``bundle_id``; the monthly price."""
        with self._transaction() as conn:
            components = self._bundle_components(conn, bundle_id, None)
            discount = Decimal(
                conn.execute(
                    "SELECT discount FROM bundles WHERE bundle_id = ?", (bundle_id,)
                ).fetchone()[0]
            )
            price = rules.list_price(components, discount)
            conn.execute(
                "INSERT INTO subscriptions VALUES (?, ?, ?, ?, 1)",
                (subscription_id, customer, bundle_id, str(price)),
            )
            conn.executemany(
                "INSERT INTO subscription_components VALUES (?, ?)",
                [(subscription_id, c.component_id) for c in components],
            )
        return price

    @staticmethod
    def _bundle_components(
        conn: sqlite3.Connection, bundle_id: str, subscription_id: str | None
    ) -> tuple[rules.Component, ...]:
        sql = (
            "SELECT b.component_id, b.name, b.monthly_price FROM bundle_components b"
            + (
                " JOIN subscription_components s ON s.component_id = b.component_id"
                " AND s.subscription_id = ?"
                if subscription_id is not None
                else ""
            )
            + " WHERE b.bundle_id = ? ORDER BY b.rowid"
        )
        args = (subscription_id, bundle_id) if subscription_id is not None else (bundle_id,)
        return tuple(
            rules.Component(cid, name, Decimal(price))
            for cid, name, price in conn.execute(sql, args)
        )

    def load(self, subscription_id: str) -> tuple[rules.Subscription, int] | None:
        """The subscription as the rules see it, and its version; ``None`` if unknown."""
        self.faults.check("load")
        with contextlib.closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT s.bundle_id, b.discount, s.price, s.version FROM subscriptions s"
                " JOIN bundles b USING (bundle_id) WHERE s.subscription_id = ?",
                (subscription_id,),
            ).fetchone()
            if row is None:
                return None
            bundle_id, discount, price, version = row
            components = self._bundle_components(conn, bundle_id, subscription_id)
        subscription = rules.Subscription(
            subscription_id, bundle_id, components, Decimal(discount), Decimal(price)
        )
        return subscription, version

    # --- the saga's writes ----------------------------------------------------------

    def create_approval(
        self, key: str, approval_id: str, subscription_id: str, removed: tuple[str, ...],
        removed_share: str,
    ) -> str:
        """Record that this modification needs an approval (PENDING); the approval id.

        An approval already WITHDRAWN (its compensation came first) stays withdrawn.
        """

        def work(conn: sqlite3.Connection) -> str:
            def insert() -> str:
                conn.execute(
                    "INSERT OR IGNORE INTO approvals VALUES (?, ?, ?, ?, 'PENDING', ?, NULL)",
                    (approval_id, subscription_id, json.dumps(removed), removed_share, key),
                )
                return approval_id

            return self._once(conn, key, insert)  # type: ignore[no-any-return]

        return self._write("create_approval", work)

    def withdraw_approval(self, key: str, approval_id: str, subscription_id: str) -> bool:
        """Mark the approval WITHDRAWN; whether it stood (PENDING or APPROVED). When it does
        not exist (yet),
        a WITHDRAWN row is left in its place, so a late ``create_approval`` changes nothing."""

        def work(conn: sqlite3.Connection) -> bool:
            def withdraw() -> bool:
                row = conn.execute(
                    "SELECT status FROM approvals WHERE approval_id = ?", (approval_id,)
                ).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO approvals VALUES (?, ?, '[]', '', 'WITHDRAWN', ?, NULL)",
                        (approval_id, subscription_id, key),
                    )
                    return False
                conn.execute(
                    "UPDATE approvals SET status = 'WITHDRAWN' WHERE approval_id = ?",
                    (approval_id,),
                )
                return bool(row[0] != "WITHDRAWN")

            return self._once(conn, key, withdraw)  # type: ignore[no-any-return]

        return self._write("withdraw_approval", work)

    def apply_modification(
        self,
        key: str,
        subscription_id: str,
        remove: tuple[str, ...],
        new_price: Decimal,
        expected_version: int,
        approval: tuple[str, str] | None = None,
    ) -> int:
        """Remove the components and set the new price, in one transaction; the new version.

        ``approval`` (approval id, approver) is marked APPROVED in the same transaction.
        :class:`Conflict` if the subscription's version is not ``expected_version``.
        """

        def work(conn: sqlite3.Connection) -> int:
            def modify() -> int:
                old_price, version = conn.execute(
                    "SELECT price, version FROM subscriptions WHERE subscription_id = ?",
                    (subscription_id,),
                ).fetchone()
                if version != expected_version:
                    raise Conflict(
                        f"subscription {subscription_id!r} is at version {version}, not "
                        f"{expected_version}: it changed meanwhile; run the saga again"
                    )
                conn.executemany(
                    "DELETE FROM subscription_components"
                    " WHERE subscription_id = ? AND component_id = ?",
                    [(subscription_id, c) for c in remove],
                )
                conn.execute(
                    "UPDATE subscriptions SET price = ?, version = ? WHERE subscription_id = ?",
                    (str(new_price), version + 1, subscription_id),
                )
                conn.execute(
                    "INSERT INTO price_history (subscription_id, old_price, new_price, reason,"
                    " idempotency_key) VALUES (?, ?, ?, 'components removed', ?)",
                    (subscription_id, old_price, str(new_price), key),
                )
                if approval is not None:
                    conn.execute(
                        "UPDATE approvals SET status = 'APPROVED', decided_by = ?"
                        " WHERE approval_id = ? AND status = 'PENDING'",
                        (approval[1], approval[0]),
                    )
                return version + 1  # type: ignore[no-any-return]

            return self._once(conn, key, modify)  # type: ignore[no-any-return]

        return self._write("apply_modification", work)

    def revert_modification(
        self,
        key: str,
        modified_by: str,
        saga_id: str,
        subscription_id: str,
        remove: tuple[str, ...],
        original_price: Decimal,
    ) -> bool:
        """Put the components and ``original_price`` back if the call keyed ``modified_by``
        applied; whether it did. Tells the audit trail when it already told of the change."""

        def work(conn: sqlite3.Connection) -> bool:
            def revert(_: int) -> bool:
                (price,) = conn.execute(
                    "SELECT price FROM subscriptions WHERE subscription_id = ?",
                    (subscription_id,),
                ).fetchone()
                conn.executemany(
                    "INSERT OR IGNORE INTO subscription_components VALUES (?, ?)",
                    [(subscription_id, c) for c in remove],
                )
                conn.execute(
                    "UPDATE subscriptions SET price = ?, version = version + 1"
                    " WHERE subscription_id = ?",
                    (str(original_price), subscription_id),
                )
                conn.execute(
                    "INSERT INTO price_history (subscription_id, old_price, new_price, reason,"
                    " idempotency_key) VALUES (?, ?, ?, 'modification reverted', ?)",
                    (subscription_id, price, str(original_price), key),
                )
                published = conn.execute(
                    "SELECT 1 FROM audit_events WHERE saga_id = ? AND type = 'BundleModified'",
                    (saga_id,),
                ).fetchone()
                if published:
                    payload = {"restored": list(remove), "price": str(original_price)}
                    self._audit(conn, saga_id, subscription_id, "BundleModificationReverted",
                                payload)
                return True

            return self._undo(conn, key, modified_by, revert) is not None

        return self._write("revert_modification", work)

    def append_audit_events(
        self, key: str, saga_id: str, subscription_id: str, events: list[tuple[str, dict[str, Any]]]
    ) -> int:
        """Append ``events`` (type, payload) to the audit trail once; how many."""

        def work(conn: sqlite3.Connection) -> int:
            def append() -> int:
                for kind, payload in events:
                    self._audit(conn, saga_id, subscription_id, kind, payload)
                return len(events)

            return self._once(conn, key, append)  # type: ignore[no-any-return]

        return self._write("append_audit_events", work)

    @staticmethod
    def _audit(
        conn: sqlite3.Connection, saga_id: str, subscription_id: str, kind: str,
        payload: dict[str, Any],
    ) -> None:
        conn.execute(
            "INSERT INTO audit_events (saga_id, subscription_id, type, payload)"
            " VALUES (?, ?, ?, ?)",
            (saga_id, subscription_id, kind, json.dumps(payload, sort_keys=True)),
        )

    def clear(self) -> None:
        """Delete every row of every table, in one transaction (a test's fresh start)."""
        with self._transaction() as conn:
            for table in reversed(TABLES):  # the referencing tables first
                conn.execute(f"DELETE FROM {table}")

    # --- inspection -------------------------------------------------------------------

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, sorted: two equal snapshots are the same state."""
        with contextlib.closing(self._connect()) as conn:
            return {
                t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in TABLES
            }

    def business_state(self) -> dict[str, Any]:
        """What the customers, the approver and billing see: each subscription's price
        and components, the approvals that stand (PENDING or APPROVED: a WITHDRAWN one
        is trail) and the audit trail billing reads (in order, without saga ids).

        Not the version, ``price_history`` or ``applied_keys``: an undone modification
        bumps the version again (a saga that priced the modified subscription must
        conflict) and leaves its history and idempotency rows, on purpose.
        """
        with contextlib.closing(self._connect()) as conn:
            subscriptions = {
                sub: (price, tuple(c for (c,) in conn.execute(
                    "SELECT component_id FROM subscription_components"
                    " WHERE subscription_id = ? ORDER BY component_id", (sub,))))
                for sub, price in conn.execute(
                    "SELECT subscription_id, price FROM subscriptions ORDER BY subscription_id")
            }
            approvals = conn.execute(
                "SELECT approval_id, subscription_id, removed, status, decided_by"
                " FROM approvals WHERE status != 'WITHDRAWN' ORDER BY approval_id"
            ).fetchall()
            audit = conn.execute(
                "SELECT subscription_id, type, payload FROM audit_events ORDER BY seq"
            ).fetchall()
        return {"subscriptions": subscriptions, "approvals": approvals, "audit": audit}

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of a read-only query, for tests and the demo."""
        with contextlib.closing(self._connect()) as conn:
            return conn.execute(sql, args).fetchall()


#: The environment variable that names the database file for a process that runs the
#: sagas without opening it itself: ``sagaflow sagas signal`` resuming a saga, a worker.
DB_ENV = "SUBSCRIPTIONS_DB"

_current: SubscriptionDB | None = None
_opening = threading.Lock()


def open_database(path: str | Path, synchronous: str = "FULL") -> SubscriptionDB:
    """Open (creating if need be) the database at ``path`` and make it the sagas' one."""
    global _current
    _current = SubscriptionDB(path, synchronous=synchronous)
    return _current


def database() -> SubscriptionDB:
    """The database the sagas write to: the one :func:`open_database` opened, else the
    file ``$SUBSCRIPTIONS_DB`` names (opened once)."""
    if _current is not None:
        return _current
    with _opening:
        if _current is None and os.environ.get(DB_ENV):
            open_database(os.environ[DB_ENV])
    if _current is None:
        raise RuntimeError(
            "no subscription database is open: call "
            "examples.subscriptions.db.open_database(path) before running an UnbundleSaga, "
            f"or name its file in ${DB_ENV}"
        )
    return _current

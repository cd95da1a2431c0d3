"""A durable saga survives its process: killed mid-step, recovered from the SQLite store.

``python -m examples crash`` (part of ``./run.sh demo``). A child process runs
:class:`ShipOrderSaga` on the demo's SQLite store, ``out/sagas.db``; its payment
participant charges the card and the process is killed (SIGKILL) before the step
returns, so no checkpoint records the charge. This process then reads the store,
finds the saga in flight, and recovers it: the step runs again with the *same*
idempotency key, the payment participant recognises the key and charges nothing more,
and the saga completes. The card is charged exactly once.

The participants keep their state in their own SQLite file, ``out/shipping.db``, keyed
by idempotency key: that is what makes the re-run harmless (sagaflow runs a step at
least once; the participant's key makes its effect once).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import attrs

from sagaflow import Orchestrator, Retry, SagaStatus, StepContext, saga, spec_of, step
from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.testing import VirtualClock

from ._support import case_folder, killed_child
from .console import Demo

__all__ = [
    "Participants", "ShipOrderSaga", "Voided", "demo", "example_sagas", "open_participants",
]

T = TypeVar("T")

SAGA_ID = "ship-1"
#: Set in the child process only: the step whose participant dies after its effect.
_CRASH_AFTER: str | None = None


class Voided(Exception):
    """A forward call arrived after its compensation: it must not apply any more."""


class Participants:
    """The warehouse, the payment provider and the courier, in one SQLite file (or
    ``":memory:"``). Each effect is committed with its idempotency key, so a repeated
    call changes nothing and returns the first result; a compensation undoes its
    forward call's effect once, by that call's key, and when there was nothing to undo
    it voids the key, so that a forward call arriving late is refused."""

    def __init__(self, path: Path | str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, what TEXT NOT NULL,"
            " amount TEXT, undone INTEGER NOT NULL DEFAULT 0)"
        )
        self.conn.execute("CREATE TABLE IF NOT EXISTS voided (key TEXT PRIMARY KEY)")
        self.notes: list[str] = []

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            result = body(c)
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")
        return result

    def once(self, key: str, what: str, amount: Decimal | None = None) -> str:
        """Apply ``what`` under ``key`` unless it was applied; return the first result."""

        def body(c: sqlite3.Connection) -> tuple[str, bool]:
            if c.execute("SELECT 1 FROM voided WHERE key = ?", (key,)).fetchone():
                raise Voided(f"{key} was compensated before it arrived: refused")
            found = c.execute("SELECT what FROM applied WHERE key = ?", (key,)).fetchone()
            if found is not None:
                return str(found[0]), True
            c.execute("INSERT INTO applied (key, what, amount) VALUES (?, ?, ?)",
                      (key, what, None if amount is None else str(amount)))
            return what, False

        result, repeated = self._transaction(body)
        if repeated:
            self.notes.append(f"key {key} seen before: returns {result}, changes nothing")
        return result

    def undo(self, key: str, forward_key: str) -> None:
        """Undo the effect of the call ``forward_key``, once (``key`` is the undo's)."""

        def body(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM applied WHERE key = ?", (key,)).fetchone():
                return  # undone already: a repeat changes nothing
            done = c.execute(
                "UPDATE applied SET undone = 1 WHERE key = ?", (forward_key,)
            ).rowcount
            if not done:  # it never took effect: nothing to undo, and it must not later
                c.execute("INSERT OR IGNORE INTO voided VALUES (?)", (forward_key,))
            c.execute("INSERT INTO applied (key, what) VALUES (?, ?)",
                      (key, f"undid {forward_key}" if done else "nothing to undo"))

        self._transaction(body)

    def charges(self, saga_id: str) -> list[Decimal]:
        """The charges of ``saga_id`` that stand (taken and not refunded)."""
        rows = self.conn.execute(
            "SELECT amount FROM applied WHERE key = ? AND undone = 0",
            (f"{saga_id}:charge_card:forward",),
        ).fetchall()
        return [Decimal(r[0]) for r in rows]

    def standing(self) -> list[tuple[str, str | None]]:
        """Every forward effect that stands, as (what, amount): a snapshot of the world."""
        rows = self.conn.execute(
            "SELECT what, amount FROM applied WHERE key LIKE '%:forward' AND undone = 0"
        ).fetchall()
        return sorted((str(w), a) for w, a in rows)


_participants: Participants | None = None


def participants() -> Participants:
    if _participants is None:
        raise RuntimeError("the participants' database is not open: call open_participants()")
    return _participants


def open_participants(path: Path | str = ":memory:") -> Participants:
    """Open (a fresh in-memory one by default) the participants' database for this process."""
    global _participants
    if _participants is not None:
        _participants.conn.close()
    _participants = Participants(path)
    return _participants


def _maybe_die(step_name: str) -> None:
    if step_name == _CRASH_AFTER:
        print(f"   ✝ {step_name} took effect; the process is killed (SIGKILL) before the "
              "step returns: no checkpoint records it", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


@saga
@attrs.define
class ShipOrderSaga:
    order: str
    amount: Decimal
    reservation: str | None = None
    charge: str | None = None
    tracking: str | None = None

    @step
    def reserve_stock(self, ctx: StepContext) -> None:
        self.reservation = participants().once(ctx.idempotency_key, f"res-{self.order}")

    @reserve_stock.compensate
    def release_stock(self, ctx: StepContext) -> None:
        participants().undo(ctx.idempotency_key, ctx.forward_key)

    @step(retry=Retry(attempts=3, backoff=1.0))
    def charge_card(self, ctx: StepContext) -> None:
        self.charge = participants().once(
            ctx.idempotency_key, f"charge-{self.order}", self.amount
        )
        _maybe_die("charge_card")

    @charge_card.compensate
    def refund(self, ctx: StepContext) -> None:
        participants().undo(ctx.idempotency_key, ctx.forward_key)

    @step(pivot=True)
    def book_courier(self, ctx: StepContext) -> None:
        self.tracking = participants().once(ctx.idempotency_key, f"track-{self.order}")

    @step(retriable=True)
    def send_receipt(self, ctx: StepContext) -> None:
        participants().once(ctx.idempotency_key, "receipt sent")


def example_sagas() -> Any:
    """Orders for the property tests and ``sagaflow verify`` (``sagaflow.testing``): each
    run on a fresh participants' database, whose standing effects are the snapshot. The
    database is a file, so that ``--crash`` compares what a killed process and its
    recovery did."""
    from hypothesis import strategies as st

    from sagaflow.testing import SagaCase

    orders = st.text("ABCDEFGHJK0123456789-", min_size=1, max_size=8)
    amounts = st.decimals(min_value=1, max_value=10_000, places=2)
    return st.builds(ShipOrderSaga, orders, amounts).map(
        lambda saga: SagaCase(saga, _fresh_participants, lambda: participants().standing())
    )


def _fresh_participants() -> None:
    """The cases' ``setup``: this process's participants' file, emptied."""
    conn = open_participants(case_folder("crash-demo") / "participants.db").conn
    # a SIGKILL loses no committed write without fsync (only a power cut would)
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript("DELETE FROM applied; DELETE FROM voided;")


def demo(d: Demo, out: Path) -> None:
    """Run the saga in a child process that is killed mid-step, then recover it here."""
    global _participants
    store = d.store
    if not isinstance(store, SQLiteStore):
        raise TypeError("the crash demo needs the demo's SQLite store (python -m examples)")
    shipping = out / "shipping.db"
    for stale in (shipping, shipping.with_name("shipping.db-wal"),
                  shipping.with_name("shipping.db-shm")):
        stale.unlink(missing_ok=True)
    n = len(spec_of(ShipOrderSaga).steps)

    d.section(
        "crash and recovery: a durable saga outlives its process",
        "reserve_stock → charge_card → book_courier (pivot) → send_receipt; "
        f"records in {store.path}",
    )
    d.scenario(f"a child process runs ShipOrderSaga {SAGA_ID!r} and dies inside step 2/{n}")
    started = time.perf_counter()
    killed_child(d, "examples.crash_demo", store.path, str(shipping))

    open_participants(shipping)
    d.scenario("the store, read by this process: the saga is in flight")
    store.register(ShipOrderSaga)
    stored = store.load(SAGA_ID)
    assert stored is not None
    at = stored.steps[stored.cursor]
    d.note(f"{SAGA_ID}: {stored.status.value}, at step {stored.cursor + 1}/{n} {at.name} "
           f"(attempt {at.attempts} started, no outcome recorded)")
    d.note(f"payments already hold: {', '.join(str(c) for c in participants().charges(SAGA_ID))}"
           " charged under key " + f"{SAGA_ID}:{at.name}:forward")

    d.scenario("recovery: Orchestrator(store, sagas=[ShipOrderSaga]).recover()")
    orch = Orchestrator(
        store, [d.console], sagas=[ShipOrderSaga],
        clock=VirtualClock(time.time()), rand=lambda: 0.5,
    )
    d.console.orchestrators.append(orch)
    report = orch.recover()
    for note in participants().notes:
        d.note(f"participant: {note}")
    d.note(f"recovered: step {stored.cursor + 1}/{n} {at.name} re-run with the same "
           "idempotency key; " + report.describe().splitlines()[0])
    result = orch.get(SAGA_ID)
    assert result is not None and result.status is SagaStatus.COMPLETED
    d.show(result, time.perf_counter() - started)
    charges = participants().charges(SAGA_ID)
    d.note(f"card charged {len(charges)} time(s): {' + '.join(str(c) for c in charges)} "
           "(exactly once)")
    d.note(f"its record and diagram: sagaflow sagas show {SAGA_ID} --store sqlite:///{store.path}")
    participants().conn.close()
    _participants = None


def _child(store_path: str, shipping: str) -> None:
    """The child process: run the saga until the payment participant kills it."""
    global _CRASH_AFTER
    _CRASH_AFTER = "charge_card"
    open_participants(Path(shipping))
    with SQLiteStore(store_path, synchronous="NORMAL") as store:
        d = Demo(lambda line: print(line, flush=True), store)
        d.run(d.orchestrator(), ShipOrderSaga("A-1001", Decimal("49.90")), SAGA_ID)


if __name__ == "__main__":
    # Through the package, so the stored class path is examples.crash_demo:ShipOrderSaga
    # (a class of __main__ could not be found by the process that recovers the saga).
    from examples.crash_demo import _child as child

    child(sys.argv[1], sys.argv[2])

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
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import attrs

from sagaflow import Orchestrator, Retry, SagaStatus, StepContext, events, saga, spec_of, step
from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.testing import VirtualClock

from .console import Demo

__all__ = ["Participants", "ShipOrderSaga", "demo"]

ROOT = Path(__file__).resolve().parents[1]
SAGA_ID = "ship-1"
#: Set in the child process only: the step whose participant dies after its effect.
_CRASH_AFTER: str | None = None


class Participants:
    """The warehouse, the payment provider and the courier: one SQLite file, each
    effect committed with its idempotency key, so a repeated call changes nothing."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, what TEXT NOT NULL,"
            " amount TEXT)"
        )
        self.notes: list[str] = []

    def once(self, key: str, what: str, amount: Decimal | None = None) -> str:
        """Apply ``what`` under ``key`` unless it was applied; return the first result."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            found = c.execute("SELECT what FROM applied WHERE key = ?", (key,)).fetchone()
            if found is None:
                c.execute("INSERT INTO applied VALUES (?, ?, ?)",
                          (key, what, None if amount is None else str(amount)))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        if found is not None:
            self.notes.append(f"key {key} seen before: returns {found[0]}, changes nothing")
            return str(found[0])
        return what

    def charges(self, saga_id: str) -> list[Decimal]:
        rows = self.conn.execute(
            "SELECT amount FROM applied WHERE key LIKE ? AND what LIKE 'charge%'",
            (f"{saga_id}:%",),
        ).fetchall()
        return [Decimal(r[0]) for r in rows]


_participants: Participants | None = None


def participants() -> Participants:
    assert _participants is not None, "open the participants' database first"
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
        participants().once(ctx.idempotency_key, "released")

    @step(retry=Retry(attempts=3, backoff=1.0))
    def charge_card(self, ctx: StepContext) -> None:
        self.charge = participants().once(
            ctx.idempotency_key, f"charge-{self.order}", self.amount
        )
        _maybe_die("charge_card")

    @charge_card.compensate
    def refund(self, ctx: StepContext) -> None:
        participants().once(ctx.idempotency_key, "refunded")

    @step(pivot=True)
    def book_courier(self, ctx: StepContext) -> None:
        self.tracking = participants().once(ctx.idempotency_key, f"track-{self.order}")

    @step(retriable=True)
    def send_receipt(self, ctx: StepContext) -> None:
        participants().once(ctx.idempotency_key, "receipt sent")


class _SkipReplayed:
    """Passes on a resumed saga's events except the first ``skip``: a resumed run tells
    its listeners the whole history again, and the console printed those already."""

    def __init__(self, listener: events.Listener, skip: int) -> None:
        self.listener = listener
        self.skip = skip

    def __call__(self, event: events.LifecycleEvent) -> None:
        if self.skip > 0:
            self.skip -= 1
            return
        self.listener(event)


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
    child = subprocess.run(
        [sys.executable, "-m", "examples.crash_demo", store.path, str(shipping)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )
    for line in child.stdout.splitlines():
        d.out(line)
    if child.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the child should have been killed; it exited {child.returncode}: "
                           f"{child.stderr.strip()}")
    d.note(f"process killed (SIGKILL): exit status {child.returncode}")

    _participants = Participants(shipping)
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
        store, [_SkipReplayed(d.console, len(stored.history))], sagas=[ShipOrderSaga],
        clock=VirtualClock(), rand=lambda: 0.5,
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
    global _CRASH_AFTER, _participants
    _CRASH_AFTER = "charge_card"
    _participants = Participants(Path(shipping))
    with SQLiteStore(store_path, synchronous="NORMAL") as store:
        d = Demo(lambda line: print(line, flush=True), store)
        d.run(d.orchestrator(), ShipOrderSaga("A-1001", Decimal("49.90")), SAGA_ID)


if __name__ == "__main__":
    # Through the package, so the stored class path is examples.crash_demo:ShipOrderSaga
    # (a class of __main__ could not be found by the process that recovers the saga).
    from examples.crash_demo import _child as child

    child(sys.argv[1], sys.argv[2])

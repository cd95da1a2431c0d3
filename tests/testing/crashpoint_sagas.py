"""Sagas for the crash points' tests, with participants that outlive a process.

The participants keep their effects in a SQLite file (``$CRASHPOINT_LEDGER``), one row
per effect with its idempotency key: a sound participant applies a key once; the broken
ones append whatever the key (the bug ``check_crash_points`` must find).

The sagas are variations on one shop (reserve stock, charge the card, ship): each is
built (:class:`~sagaflow.SagaBuilder`) from the same few effects (:class:`Book`,
:func:`_approve`, ...), sync or async, sound or broken where its docstring says, so
that what differs between two sagas is only what each test is about. A saga's name is
its name in this module, where the crash points' child imports it from.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from sagaflow import Retry, SagaBuilder, StepContext
from sagaflow.testing import SagaCase

LEDGER_ENV = "CRASHPOINT_LEDGER"


def _conn() -> sqlite3.Connection:
    conn = sqlite3.connect(os.environ[LEDGER_ENV], isolation_level=None, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT NOT NULL, account TEXT NOT NULL,"
                 " delta INTEGER NOT NULL)")
    return conn


def apply(ctx: StepContext, account: str, delta: int, *, check_key: bool = True) -> None:
    """The forward effect: ``delta`` on ``account``, once per key (or, ``check_key``
    false, every time: the bug)."""
    with _conn() as conn:
        conn.execute("BEGIN IMMEDIATE")
        seen = conn.execute("SELECT 1 FROM entries WHERE key = ?",
                            (ctx.idempotency_key,)).fetchone()
        if seen is None or not check_key:
            conn.execute("INSERT INTO entries VALUES (?, ?, ?)",
                         (ctx.idempotency_key, account, delta))
        conn.execute("COMMIT")


def undo(ctx: StepContext, account: str, *, check_key: bool = True) -> None:
    """Undo what the forward call of this step did (if it did anything), once per key."""
    forward = f"{ctx.saga_id}:{ctx.step}:forward"
    with _conn() as conn:
        conn.execute("BEGIN IMMEDIATE")
        seen = conn.execute("SELECT 1 FROM entries WHERE key = ?",
                            (ctx.idempotency_key,)).fetchone()
        if seen is None or not check_key:
            found = conn.execute("SELECT delta FROM entries WHERE key = ? LIMIT 1",
                                 (forward,)).fetchone()
            conn.execute("INSERT INTO entries VALUES (?, ?, ?)",
                         (ctx.idempotency_key, account, 0 if found is None else -found[0]))
        conn.execute("COMMIT")


def put(key: str, account: str, delta: int) -> None:
    """An entry under ``key``, once."""
    with _conn() as conn:
        conn.execute("BEGIN IMMEDIATE")
        if conn.execute("SELECT 1 FROM entries WHERE key = ?", (key,)).fetchone() is None:
            conn.execute("INSERT INTO entries VALUES (?, ?, ?)", (key, account, delta))
        conn.execute("COMMIT")


def void(key: str) -> None:
    """Take back the entry under ``key``, if there is one."""
    with _conn() as conn:
        conn.execute("DELETE FROM entries WHERE key = ?", (key,))


def balances() -> dict[str, int]:
    """The participants' net state: each account's balance, zeros left out (a step a
    crash cut off is compensated too, with nothing to undo: a zero entry)."""
    with _conn() as conn:
        rows = conn.execute("SELECT account, SUM(delta) FROM entries GROUP BY account "
                            "ORDER BY account").fetchall()
    return {account: total for account, total in rows if total}


def reset() -> None:
    with _conn() as conn:
        conn.execute("DELETE FROM entries")


@pytest.fixture(autouse=True)
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The participants' file for a test (``$CRASHPOINT_LEDGER``, which the crash points'
    children inherit): import it into a test module to use it."""
    path = tmp_path / "ledger.db"
    monkeypatch.setenv(LEDGER_ENV, str(path))
    return path


# --------------------------------------------------------------------------- the effects


HOUR = 3600.0
DAY = 24 * HOUR


@attrs.frozen
class Approval:
    """What an approver answers (a signal's payload)."""

    by: str


@attrs.define
class Priced:
    """The fields of a shop saga: what the card is charged."""

    amount: int = 30


@attrs.define
class Approved:
    """The fields of a saga that waits for an approval: who gave it; ``idempotent=False``
    books the approval again when its handler runs again, ``countersign_idempotent=False``
    the countersignature (the bugs)."""

    approved_by: str = ""
    idempotent: bool = True
    countersign_idempotent: bool = True


@attrs.define
class Voiding(Priced):
    """The fields of a charge that voids the ``voids`` attempts before the last."""

    voids: int = 1


@attrs.define
class Lines:
    """The fields of a saga that picks each of ``lines`` (a fan-out)."""

    lines: list[str] = attrs.Factory(lambda: ["a", "b"])


@attrs.frozen
class Book:
    """A step's function ``(saga, ctx)``, or a fan-out's ``(saga, item, ctx)``: ``delta``
    (``None``: the saga's ``amount``) on ``account`` (its ``{}`` filled with the item),
    once per key unless ``sound`` is false (the bug)."""

    account: str
    delta: int | None = None
    sound: bool = True

    def __call__(self, saga: Any, *args: Any) -> None:
        ctx = args[-1]
        delta = saga.amount if self.delta is None else self.delta
        apply(ctx, self.account.format(*args[:-1]), delta, check_key=self.sound)


@attrs.frozen
class Unbook:
    """The compensation of :class:`Book` on ``account``: once per key unless ``sound``
    is false (the bug)."""

    account: str
    sound: bool = True

    def __call__(self, saga: Any, *args: Any) -> None:
        undo(args[-1], self.account.format(*args[:-1]), check_key=self.sound)


def _approve(saga: Any, decision: Approval, ctx: StepContext) -> None:
    """An approval's handler: book it with a participant (again on a rerun, if the saga
    is not ``idempotent``)."""
    apply(ctx, f"approved-by-{decision.by}", 1, check_key=saga.idempotent)
    saga.approved_by = decision.by


def _countersign(saga: Any, decision: Approval, ctx: StepContext) -> None:
    apply(ctx, f"countersigned-by-{decision.by}", 1, check_key=saga.countersign_idempotent)


def _charge_per_attempt(saga: Any, ctx: StepContext) -> None:
    """Each attempt of the charge is its own payment (keyed by attempt), and a retry
    voids the ``saga.voids`` attempts before it."""
    for back in range(1, saga.voids + 1):  # BUG: the attempts before those stay
        void(f"{ctx.idempotency_key}#{ctx.attempt - back}")
    put(f"{ctx.idempotency_key}#{ctx.attempt}", "card", saga.amount)


def _coroutine(fn: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """``fn`` as a coroutine function (the same effect, for an async saga)."""
    if fn is None:
        return None

    async def call(saga: Any, *args: Any) -> Any:
        return fn(saga, *args)

    return call


@attrs.frozen
class Entry:
    """A step (``kind`` ``"step"``), wait or timer of a built saga: the builder's method
    ``kind`` with ``fn``, ``compensate`` and ``options``."""

    name: str
    fn: Callable[..., Any]
    compensate: Callable[..., Any] | None = None
    kind: str = "step"
    options: dict[str, Any] = attrs.field(factory=dict)

    def add(self, builder: SagaBuilder[Any], is_async: bool) -> None:
        wrap = _coroutine if is_async else (lambda fn: fn)
        fn, comp = wrap(self.fn), wrap(self.compensate)
        if self.kind == "wait":
            builder.wait(self.options["signal"], fn, name=self.name, payload=Approval,
                         timeout=DAY, on_timeout=self.options.get("on_timeout"))
        elif self.kind == "timer":
            builder.timer(fn, name=self.name, after=HOUR)
        else:
            builder.step(fn, name=self.name, compensate=comp, **self.options)


def step(name: str, account: str, delta: int | None = None, *, sound: bool = True,
         undo_sound: bool = True, **options: Any) -> Entry:
    """A step booking ``delta`` on ``account``, undone by its compensation (none if it
    is the ``pivot=True``); ``sound``/``undo_sound`` false: not idempotent (the bug)."""
    comp = None if options.get("pivot") else Unbook(account, undo_sound)
    return Entry(name, Book(account, delta, sound), comp, options=options)


def build(name: str, data: type, entries: list[Entry], *, is_async: bool = False) -> type:
    """The saga ``name`` (named as in this module) with ``data``'s fields and ``entries``,
    sync or async."""
    builder = SagaBuilder(name, data=data, module=__name__)
    for entry in entries:
        entry.add(builder, is_async)
    return builder.build()


RESERVE = step("reserve", "stock", -1)
CHARGE = step("charge", "card")
SHIP = step("ship", "courier", 1, pivot=True)
APPROVAL = Entry("approval", _approve, kind="wait", options={"signal": "decision"})
COOLING_OFF = Entry("cooling_off", Book("cooled", 1), kind="timer")


# --------------------------------------------------------------------------- the sagas


#: Reserve stock, charge the card (retried), ship (the pivot).
Order = build("Order", Priced, [
    RESERVE, step("charge", "card", retry=Retry(attempts=3, backoff=0.01, jitter=0)), SHIP])

#: :data:`Order` whose card is charged again when the charge runs again (no key).
BrokenCharge = build("BrokenCharge", Priced, [RESERVE, step("charge", "card", sound=False),
                                              SHIP])

#: :data:`Order` whose refund is paid again when it runs again: every compensation runs
#: when the pivot fails.
BrokenRefund = build("BrokenRefund", Priced, [
    RESERVE, step("charge", "card", undo_sound=False), SHIP])

#: :data:`Order` with coroutine steps (recovered with ``arecover``).
AsyncOrder = build("AsyncOrder", Priced, [RESERVE, CHARGE, SHIP], is_async=True)

#: The charge (the pivot) is a payment per attempt, and a retry voids only the attempt
#: just before (``voids=1``): right after one crash, a double charge after two (the
#: recovery cut off too), as the attempt before the last is never voided; ``voids=2``:
#: after three (the second recovery cut off too).
CHARGE_PER_ATTEMPT = Entry("charge", _charge_per_attempt, options={"pivot": True})
VoidingCharge = build("VoidingCharge", Voiding, [RESERVE, CHARGE_PER_ATTEMPT])

#: :data:`VoidingCharge`'s charge alone: the fewest points to chain crashes at.
Voiding1 = build("Voiding1", Voiding, [CHARGE_PER_ATTEMPT])


def _packing() -> type:
    """A parallel group (``box`` and ``label``, on threads) and a fan-out over the lines
    (``pick``), between a compensatable step and a last step (the failing plan fails it)."""
    builder = SagaBuilder("Packing", data=Lines, module=__name__)
    RESERVE.add(builder, False)
    pack = builder.group("pack")
    for name, account in (("box", "boxes"), ("label", "labels")):
        pack.step(Book(account, 1), name=name, compensate=Unbook(account))
    builder.step(Book("line-{}", 1), name="pick", each="lines",
                 key=lambda line: line, compensate=Unbook("line-{}"))
    step("close", "closed", 1).add(builder, False)
    return builder.build()


Packing = _packing()

#: Reserve, wait a day for an approval (its handler books it), cool off an hour (a
#: timer whose handler has an effect), ship (the pivot). With no approval the wait runs
#: out and the reservation is released.
ApprovedOrder = build("ApprovedOrder", Approved, [RESERVE, APPROVAL, COOLING_OFF, SHIP])

#: :data:`ApprovedOrder` with coroutine steps and handlers (``asignal``,
#: ``aresume_due``, ``arecover``).
AsyncApprovedOrder = build("AsyncApprovedOrder", Approved,
                           [RESERVE, APPROVAL, COOLING_OFF, SHIP], is_async=True)

#: Reserve; an approval that may not come (the saga goes on without it); a
#: countersignature on the same signal, which a second signal (or a first one that
#: came late) is kept for; ship (the pivot). Without a countersignature the reservation
#: is released. ``countersign_idempotent=False``: the countersignature is booked again
#: when its handler runs again, a bug only a plan that sends a second signal reaches.
Countersigned = build("Countersigned", Approved, [
    RESERVE,
    Entry("approval", _approve, kind="wait",
          options={"signal": "decision", "on_timeout": "continue"}),
    Entry("countersign", _countersign, kind="wait", options={"signal": "decision"}),
    SHIP,
])


def order_case(amount: int = 30) -> SagaCase:
    """A factory returning a :class:`SagaCase` that carries its own setup and snapshot
    (run in the child that imported it)."""
    return SagaCase(Order(amount), setup=reset, snapshot=balances)


def not_a_saga() -> Any:
    return object()


#: what :data:`Forgetful`'s participant booked: kept in the process only, so a killed
#: process forgets it (the mistake the crash points must notice, not pass)
IN_MEMORY: list[str] = []


def _remember(saga: Any, ctx: StepContext) -> None:
    IN_MEMORY.append(ctx.idempotency_key)  # not even idempotent: nothing could tell


def _forget(saga: Any, ctx: StepContext) -> None:
    IN_MEMORY.clear()


#: A step whose participant keeps its state in memory, then the pivot.
Forgetful = build("Forgetful", Priced, [Entry("book", _remember, _forget),
                                        step("ship", "courier", 1, pivot=True)])


def forgetful_case() -> SagaCase:
    """:data:`Forgetful` with a snapshot of its in-memory participant."""
    return SagaCase(Forgetful(), setup=IN_MEMORY.clear, snapshot=lambda: list(IN_MEMORY))

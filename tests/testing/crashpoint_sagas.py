"""Sagas for the crash points' tests, with participants that outlive a process.

The participants keep their effects in a SQLite file (``$CRASHPOINT_LEDGER``), one row
per effect with its idempotency key: a sound participant applies a key once; the broken
ones append whatever the key (the bug ``check_crash_points`` must find).
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import attrs

from sagaflow import Retry, StepContext, parallel, saga, step, timer, wait
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


@saga(name="cp_order")
@attrs.define
class Order:
    """Reserve stock, charge the card (retried once), ship (the pivot)."""

    amount: int = 30

    @step
    def reserve(self, ctx: StepContext) -> None:
        apply(ctx, "stock", -1)

    @reserve.compensate
    def release(self, ctx: StepContext) -> None:
        undo(ctx, "stock")

    @step(retry=Retry(attempts=3, backoff=0.01, jitter=0))
    def charge(self, ctx: StepContext) -> None:
        apply(ctx, "card", self.amount)

    @charge.compensate
    def refund(self, ctx: StepContext) -> None:
        undo(ctx, "card")

    @step(pivot=True)
    def ship(self, ctx: StepContext) -> None:
        apply(ctx, "courier", 1)


@saga(name="cp_broken_charge")
@attrs.define
class BrokenCharge:
    """The card is charged again when the charge runs again (no idempotency key)."""

    amount: int = 30

    @step
    def reserve(self, ctx: StepContext) -> None:
        apply(ctx, "stock", -1)

    @reserve.compensate
    def release(self, ctx: StepContext) -> None:
        undo(ctx, "stock")

    @step
    def charge(self, ctx: StepContext) -> None:
        apply(ctx, "card", self.amount, check_key=False)

    @charge.compensate
    def refund(self, ctx: StepContext) -> None:
        undo(ctx, "card")

    @step(pivot=True)
    def ship(self, ctx: StepContext) -> None:
        apply(ctx, "courier", 1)


@saga(name="cp_broken_refund")
@attrs.define
class BrokenRefund:
    """Sound forward steps, no pivot (the last step fails in the failing plan, so every
    compensation runs); the refund is paid again when it runs again."""

    amount: int = 30

    @step
    def reserve(self, ctx: StepContext) -> None:
        apply(ctx, "stock", -1)

    @reserve.compensate
    def release(self, ctx: StepContext) -> None:
        undo(ctx, "stock")

    @step
    def charge(self, ctx: StepContext) -> None:
        apply(ctx, "card", self.amount)

    @charge.compensate
    def refund(self, ctx: StepContext) -> None:
        undo(ctx, "card", check_key=False)

    @step
    def book(self, ctx: StepContext) -> None:
        apply(ctx, "courier", 1)

    @book.compensate
    def cancel(self, ctx: StepContext) -> None:
        undo(ctx, "courier")


@saga(name="cp_async_order")
@attrs.define
class AsyncOrder:
    """:class:`Order` with coroutine steps (recovered with ``arecover``)."""

    amount: int = 30

    @step
    async def reserve(self, ctx: StepContext) -> None:
        apply(ctx, "stock", -1)

    @reserve.compensate
    async def release(self, ctx: StepContext) -> None:
        undo(ctx, "stock")

    @step
    async def charge(self, ctx: StepContext) -> None:
        apply(ctx, "card", self.amount)

    @charge.compensate
    async def refund(self, ctx: StepContext) -> None:
        undo(ctx, "card")

    @step(pivot=True)
    async def ship(self, ctx: StepContext) -> None:
        apply(ctx, "courier", 1)


def order_case(amount: int = 30) -> SagaCase:
    """A factory returning a :class:`SagaCase` that carries its own setup and snapshot
    (run in the child that imported it)."""
    return SagaCase(Order(amount), setup=reset, snapshot=balances)


def not_a_saga() -> Any:
    return object()


@saga(name="cp_packing")
@attrs.define
class Packing:
    """A parallel group (two members on threads) and a fan-out over two lines, between
    a compensatable step and a last step (the failing plan fails it)."""

    lines: list[str] = attrs.Factory(lambda: ["a", "b"])

    pack = parallel()

    @step
    def reserve(self, ctx: StepContext) -> None:
        apply(ctx, "stock", -1)

    @reserve.compensate
    def release(self, ctx: StepContext) -> None:
        undo(ctx, "stock")

    @pack.step
    def box(self, ctx: StepContext) -> None:
        apply(ctx, "boxes", 1)

    @box.compensate
    def unbox(self, ctx: StepContext) -> None:
        undo(ctx, "boxes")

    @pack.step
    def label(self, ctx: StepContext) -> None:
        apply(ctx, "labels", 1)

    @label.compensate
    def unlabel(self, ctx: StepContext) -> None:
        undo(ctx, "labels")

    @step(each="lines", key=lambda line: line)
    def pick(self, line: str, ctx: StepContext) -> None:
        apply(ctx, f"line-{line}", 1)

    @pick.compensate
    def unpick(self, line: str, ctx: StepContext) -> None:
        undo(ctx, f"line-{line}")

    @step
    def close(self, ctx: StepContext) -> None:
        apply(ctx, "closed", 1)

    @close.compensate
    def reopen(self, ctx: StepContext) -> None:
        undo(ctx, "closed")


HOUR = 3600.0
DAY = 24 * HOUR


@attrs.frozen
class Approval:
    """What an approver answers (a signal's payload)."""

    by: str


@saga(name="cp_approved_order")
@attrs.define
class ApprovedOrder:
    """Reserve, wait a day for an approval (its handler books it with a participant),
    cool off an hour (a timer whose handler has an effect), ship (the pivot). With no
    approval the wait runs out and the reservation is released. ``idempotent=False``:
    the handler books the approval again when it runs again (the bug)."""

    approved_by: str = ""
    idempotent: bool = True

    @step
    def reserve(self, ctx: StepContext) -> None:
        apply(ctx, "stock", -1)

    @reserve.compensate
    def release(self, ctx: StepContext) -> None:
        undo(ctx, "stock")

    @wait("decision", payload=Approval, timeout=DAY)
    def approval(self, decision: Approval, ctx: StepContext) -> None:
        apply(ctx, f"approved-by-{decision.by}", 1, check_key=self.idempotent)
        self.approved_by = decision.by

    @timer(after=HOUR)
    def cooling_off(self, ctx: StepContext) -> None:
        apply(ctx, "cooled", 1)

    @step(pivot=True)
    def ship(self, ctx: StepContext) -> None:
        apply(ctx, "courier", 1)


@saga(name="cp_voiding_charge")
@attrs.define
class VoidingCharge:
    """Each attempt of the charge is its own payment (keyed by attempt), and a retry
    voids the attempt before it: right after one crash, a double charge after two
    (the recovery cut off too), as the attempt before the last is never voided."""

    amount: int = 30

    @step
    def reserve(self, ctx: StepContext) -> None:
        apply(ctx, "stock", -1)

    @reserve.compensate
    def release(self, ctx: StepContext) -> None:
        undo(ctx, "stock")

    @step(pivot=True)
    def charge(self, ctx: StepContext) -> None:
        if ctx.attempt > 1:  # BUG: only the attempt just before is voided
            void(f"{ctx.idempotency_key}#{ctx.attempt - 1}")
        put(f"{ctx.idempotency_key}#{ctx.attempt}", "card", self.amount)


@saga(name="cp_async_approved_order")
@attrs.define
class AsyncApprovedOrder:
    """:class:`ApprovedOrder` with coroutine steps and handlers (``asignal``,
    ``aresume_due``, ``arecover``)."""

    approved_by: str = ""

    @step
    async def reserve(self, ctx: StepContext) -> None:
        apply(ctx, "stock", -1)

    @reserve.compensate
    async def release(self, ctx: StepContext) -> None:
        undo(ctx, "stock")

    @wait("decision", payload=Approval, timeout=DAY)
    async def approval(self, decision: Approval, ctx: StepContext) -> None:
        apply(ctx, f"approved-by-{decision.by}", 1)
        self.approved_by = decision.by

    @timer(after=HOUR)
    async def cooling_off(self, ctx: StepContext) -> None:
        apply(ctx, "cooled", 1)

    @step(pivot=True)
    async def ship(self, ctx: StepContext) -> None:
        apply(ctx, "courier", 1)

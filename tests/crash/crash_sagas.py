"""The crash suite's saga, its participants, and the kill switch.

Imported by the test (to list the kill points) and by the processes it kills
(``crash_child.py``, and ``sagaflow recover --import crash_sagas``).

- :class:`CrashOrder`: five steps (s1-s4 compensatable, s5 the pivot). s2 fails its
  first attempt and is retried after a short backoff (so a run has a "waiting to
  retry" checkpoint too); on the failing path s4 is refused and s3, s2, s1 are undone.
- :class:`Ledger`: the participants' own SQLite file. Each effect is committed together
  with its idempotency key (``INSERT OR IGNORE``), so a call repeated with the same key
  changes nothing: the net effect of every step is exactly once however often it runs.
  ``calls`` counts the calls that reached it, to show the repeats happened.
- :class:`Kill`: this process SIGKILLs itself at the Nth store write (before or after
  it commits) or the Nth participant call (before its effect, or after the effect is
  committed but before the call returns); :class:`KillingStore` counts the writes.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import attrs

from sagaflow import Orchestrator, Retry, saga, step
from sagaflow.stores.sqlite import SQLiteStore

T = TypeVar("T")

STEPS = ("s1", "s2", "s3", "s4", "s5")
AMOUNTS = {"s1": 1, "s2": 10, "s3": 100, "s4": 1_000, "s5": 10_000}
LEDGER_ENV = "SAGAFLOW_CRASH_LEDGER"


class Refused(Exception):
    """s4's participant refuses the order (the failing path)."""


# --------------------------------------------------------------------------- killing

@attrs.define
class Point:
    """A place to die: the ``n``th ``kind`` ("write" or "call") of a process, ``when``
    "before" or "after" it. ``label`` says what happens there (for test ids)."""

    kind: str
    n: int
    when: str
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.kind[0]}{self.n:02}-{self.when}-{self.label}"


class Kill:
    """Counts this process's store writes and participant calls; dies at ``point``.

    ``seen`` (when not ``None``) collects a label per write and call: the census of a
    run without a kill, from which the test takes every point.
    """

    def __init__(self, point: Point | None = None, census: bool = False) -> None:
        self.point = point
        self.writes = 0
        self.calls = 0
        self.seen: list[Point] | None = [] if census else None

    def _check(self, kind: str, n: int, when: str) -> None:
        p = self.point
        if p is not None and p.kind == kind and p.n == n and p.when == when:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # pragma: no cover - the signal is delivered at once

    def write(self, label: Callable[[], str], do: Callable[[], T]) -> T:
        self.writes += 1
        n = self.writes
        self._check("write", n, "before")
        result = do()
        if self.seen is not None:
            text = label()
            self.seen += [Point("write", n, "before", text), Point("write", n, "after", text)]
        self._check("write", n, "after")
        return result

    def call_started(self, key: str) -> int:
        self.calls += 1
        n = self.calls
        self._check("call", n, "before")
        if self.seen is not None:
            self.seen.append(Point("call", n, "before", key))
        return n

    def effect_applied(self, n: int, key: str) -> None:
        if self.seen is not None:
            self.seen.append(Point("call", n, "after", key))
        self._check("call", n, "after")


KILL = Kill()


def _label(record: Any) -> str:
    last = record.history[-1]
    name = type(last).__name__
    return f"{name}-{last.step}" if last.step else name


class KillingStore(SQLiteStore):
    """A SQLite store whose writes go through :data:`KILL`; ``only`` narrows recovery
    to one saga (the randomized run recovers one saga at a time)."""

    only: str | None = None

    def create(self, record: Any) -> Any:
        return KILL.write(lambda: "create", lambda: super(KillingStore, self).create(record))

    def save(self, record: Any) -> None:
        KILL.write(lambda: _label(record), lambda: super(KillingStore, self).save(record))

    def scan(self, **filters: Any) -> Iterator[Any]:
        for stored in super().scan(**filters):
            if self.only is None or stored.saga_id == self.only:
                yield stored


# --------------------------------------------------------------------------- participants

class Ledger:
    """The participants' state: effects keyed by idempotency key, in their own file."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self.lock = threading.Lock()  # recovery under arecover calls from worker threads
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")  # survives the process dying
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, saga_id TEXT NOT NULL,"
            " step TEXT NOT NULL, direction TEXT NOT NULL, delta INTEGER NOT NULL)"
        )
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, n INTEGER NOT NULL)"
        )

    def _in_transaction(self, key: str, body: Callable[[], None]) -> None:
        with self.lock:
            c = self.conn
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute("INSERT INTO calls (key, n) VALUES (?, 1) "
                          "ON CONFLICT(key) DO UPDATE SET n = n + 1", (key,))
                body()
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def apply(self, key: str, saga_id: str, step_name: str) -> None:
        """The forward effect of ``step_name``, once per key."""
        self._in_transaction(key, lambda: self.conn.execute(
            "INSERT OR IGNORE INTO effects VALUES (?, ?, ?, 'forward', ?)",
            (key, saga_id, step_name, AMOUNTS[step_name]),
        ))

    def undo(self, key: str, forward_key: str, saga_id: str, step_name: str) -> None:
        """Undo the forward effect, once per key; nothing to undo if it never happened."""

        def body() -> None:
            found = self.conn.execute(
                "SELECT delta FROM effects WHERE key = ?", (forward_key,)
            ).fetchone()
            delta = 0 if found is None else -found[0]
            self.conn.execute(
                "INSERT OR IGNORE INTO effects VALUES (?, ?, ?, 'compensate', ?)",
                (key, saga_id, step_name, delta),
            )

        self._in_transaction(key, body)

    def effects(self, saga_id: str) -> dict[str, int]:
        """key -> delta of every effect of the saga."""
        rows = self.conn.execute(
            "SELECT key, delta FROM effects WHERE saga_id = ?", (saga_id,)
        ).fetchall()
        return dict(rows)

    def calls(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT key, n FROM calls").fetchall())


_ledger: Ledger | None = None
_ledger_guard = threading.Lock()


def ledger() -> Ledger:
    """This process's ledger, opened on first use (after any fork) from $SAGAFLOW_CRASH_LEDGER."""
    global _ledger
    with _ledger_guard:
        if _ledger is None:
            _ledger = Ledger(os.environ[LEDGER_ENV])
        return _ledger


def use_ledger(value: Ledger | None) -> None:
    global _ledger
    _ledger = value


def _forward(ctx: Any, name: str, refuse: bool) -> None:
    key = ctx.idempotency_key
    n = KILL.call_started(key)
    if name == "s2" and ctx.attempt == 1:
        raise ConnectionError("s2: the participant is not reachable yet")
    if refuse:
        raise Refused(f"{name}: refused")
    ledger().apply(key, ctx.saga_id, name)
    KILL.effect_applied(n, key)


def _undo(ctx: Any, name: str) -> None:
    key = ctx.idempotency_key
    n = KILL.call_started(key)
    ledger().undo(key, ctx.forward_key, ctx.saga_id, name)
    KILL.effect_applied(n, key)


# --------------------------------------------------------------------------- the saga

@saga(name="crash_order")
@attrs.define
class CrashOrder:
    fail: bool = False  #: the failing path: s4 is refused, s3..s1 are compensated

    @step
    def s1(self, ctx: Any) -> None:
        _forward(ctx, "s1", False)

    @s1.compensate
    def u1(self, ctx: Any) -> None:
        _undo(ctx, "s1")

    @step(retry=Retry(attempts=2, backoff=0.01, jitter=0))
    def s2(self, ctx: Any) -> None:
        _forward(ctx, "s2", False)

    @s2.compensate
    def u2(self, ctx: Any) -> None:
        _undo(ctx, "s2")

    @step
    def s3(self, ctx: Any) -> None:
        _forward(ctx, "s3", False)

    @s3.compensate
    def u3(self, ctx: Any) -> None:
        _undo(ctx, "s3")

    @step
    def s4(self, ctx: Any) -> None:
        _forward(ctx, "s4", self.fail)

    @s4.compensate
    def u4(self, ctx: Any) -> None:
        _undo(ctx, "s4")

    @step(pivot=True)
    def s5(self, ctx: Any) -> None:
        _forward(ctx, "s5", False)


class SkippingClock:
    """The real time when the process made it, moved only by sleeping, and a retry's
    backoff skipped, not slept: a run makes the same checkpoints every time. (A wall
    clock read just after a real sleep could come out a hair early and add a second
    "waiting" checkpoint; one read after a slow checkpoint on a busy machine could find
    the backoff already over and save the retry with its next start, one checkpoint
    fewer.)"""

    def __init__(self) -> None:
        self.started = time.time()
        self.skipped = 0.0

    def now(self) -> float:
        return self.started + self.skipped

    def sleep(self, seconds: float) -> None:
        self.skipped += seconds

    async def asleep(self, seconds: float) -> None:
        self.skipped += seconds


def census(fail: bool) -> list[Point]:
    """Every kill point of one run of the path (``fail``), from a run that is not killed."""
    global KILL
    saved = KILL
    KILL = Kill(census=True)
    use_ledger(Ledger(":memory:"))
    try:
        with Orchestrator(KillingStore(":memory:"), clock=SkippingClock()) as orch:
            orch.run(CrashOrder(fail=fail), "census")
            orch.store.close()  # type: ignore[attr-defined]
        assert KILL.seen is not None
        return KILL.seen
    finally:
        KILL = saved
        use_ledger(None)


def expected_effects(saga_id: str, fail: bool) -> dict[str, int]:
    """The net effects a run must leave in the ledger, key by key."""
    if not fail:
        return {f"{saga_id}:{s}:forward": AMOUNTS[s] for s in STEPS}
    done = ("s1", "s2", "s3")
    return {
        **{f"{saga_id}:{s}:forward": AMOUNTS[s] for s in done},
        **{f"{saga_id}:{s}:compensate": -AMOUNTS[s] for s in done},
    }


def set_kill(point: Point | None) -> None:
    """Arm this process's kill switch (in a child, before it runs anything)."""
    global KILL
    KILL = Kill(point)

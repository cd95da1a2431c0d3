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
- :class:`Kill`: this process SIGKILLs itself at the Nth store write (before it, after
  it committed, or, for a write that is one transaction of the store's own such as a
  stored signal, inside it: its statements done, not committed) or the Nth participant
  call (before its effect, or after the effect is committed but before the call
  returns); :class:`KillingWrites` counts the writes of a SQLite store
  (:class:`KillingStore`) or a PostgreSQL one (:func:`open_killing`).

The waiting sagas' crash tests (``crash_waits.py``) use the same kill switch, stores,
participant and ledger.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
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
    "before" or "after" it (or "inside" a write's transaction, before its commit).
    ``label`` says what happens there (for test ids)."""

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
        self.inside = False
        self.current: int | None = None
        self.seen: list[Point] | None = [] if census else None

    def _check(self, kind: str, n: int, when: str) -> None:
        p = self.point
        if p is not None and p.kind == kind and p.n == n and p.when == when:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # pragma: no cover - the signal is delivered at once

    def write(self, label: Callable[[], str], do: Callable[[], T]) -> T:
        n = self._begin()
        result = do()
        self._end(n, label)
        return result

    async def awrite(self, label: Callable[[], str], do: Callable[[], Awaitable[T]]) -> T:
        n = self._begin()
        result = await do()
        self._end(n, label)
        return result

    def uncommitted(self) -> None:
        """Inside the transaction of the write in progress (if any): its statements are
        done, its commit is not (a kill here must leave nothing of it)."""
        if self.current is not None:
            self.inside = True
            self._check("write", self.current, "inside")

    def _begin(self) -> int:
        self.writes += 1
        self.current = self.writes
        self.inside = False
        self._check("write", self.writes, "before")
        return self.writes

    def _end(self, n: int, label: Callable[[], str]) -> None:
        self.current = None
        if self.seen is not None:
            text = label()
            self.seen.append(Point("write", n, "before", text))
            if self.inside:
                self.seen.append(Point("write", n, "inside", text))
            self.seen.append(Point("write", n, "after", text))
        self._check("write", n, "after")

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


class KillingWrites:
    """A store whose writes go through :data:`KILL` (mixed into a store class).

    ``only`` narrows recovery and the parked sagas found due to one saga (the tests
    keep many sagas in one store and act on one at a time). ``label`` names a saved
    checkpoint in the census.
    """

    only: str | None = None
    label: Callable[[Any], str] = staticmethod(_label)

    def create(self, record: Any) -> Any:
        return KILL.write(lambda: "create", lambda: super(KillingWrites, self).create(record))

    async def acreate(self, record: Any) -> Any:
        return await KILL.awrite(
            lambda: "create", lambda: super(KillingWrites, self).acreate(record)
        )

    def save(self, record: Any, **kw: Any) -> None:
        KILL.write(lambda: self.label(record),
                   lambda: super(KillingWrites, self).save(record, **kw))

    async def asave(self, record: Any, **kw: Any) -> None:
        await KILL.awrite(lambda: self.label(record),
                          lambda: super(KillingWrites, self).asave(record, **kw))

    def add_signal(self, saga_id: str, name: str, signal_id: str, payload: str,
                   at: float) -> Any:
        def do() -> Any:
            return super(KillingWrites, self).add_signal(  # type: ignore[misc]
                saga_id, name, signal_id, payload, at
            )

        return KILL.write(lambda: f"signal-{name}", do)

    def _transact(self, work: Callable[[Any], T]) -> T:
        def then_maybe_die(run: Any) -> T:
            result = work(run)
            KILL.uncommitted()
            return result

        return super()._transact(then_maybe_die)  # type: ignore[misc, no-any-return]

    def scan(self, **filters: Any) -> Iterator[Any]:
        for stored in super().scan(**filters):  # type: ignore[misc]
            if self.only is None or stored.saga_id == self.only:
                yield stored

    def due(self, now: float, limit: int = 100) -> list[str]:
        found: list[str] = super().due(now, limit)  # type: ignore[misc]
        return [sid for sid in found if self.only is None or sid == self.only]


class KillingStore(KillingWrites, SQLiteStore):
    """A SQLite store whose writes go through :data:`KILL`."""


_killing_postgres: type | None = None


def killing_class(store: str) -> type:
    """The killing store class for ``store``: a SQLite file's, or (a ``postgresql://``
    URL) PostgreSQL's, imported on first use (a harness asks before it forks)."""
    global _killing_postgres
    if not store.startswith("postgresql://"):
        return KillingStore
    if _killing_postgres is None:
        from sagaflow.stores.postgres import PostgresStore

        class KillingPostgresStore(KillingWrites, PostgresStore):
            """A PostgreSQL store whose writes go through :data:`KILL`."""

        _killing_postgres = KillingPostgresStore
    return _killing_postgres


def open_killing(store: str, synchronous: str = "FULL") -> Any:
    """A killing store: a SQLite file's (``store`` a path) or PostgreSQL's (``store`` a
    ``postgresql://`` URL, its ``schema=`` option taken out of it)."""
    cls = killing_class(store)
    if cls is KillingStore:
        return KillingStore(store, synchronous=synchronous)
    base, _, query = store.partition("?")
    options = urllib.parse.parse_qsl(query)
    schema = dict(options).get("schema")
    kept = urllib.parse.urlencode([(k, v) for k, v in options if k != "schema"])
    return cls(f"{base}?{kept}" if kept else base, schema=schema)


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

    def apply(self, key: str, saga_id: str, step_name: str, amount: int | None = None) -> None:
        """The forward effect of ``step_name`` (``amount``, by default its entry in
        :data:`AMOUNTS`), once per key."""
        delta = AMOUNTS[step_name] if amount is None else amount
        self._in_transaction(key, lambda: self.conn.execute(
            "INSERT OR IGNORE INTO effects VALUES (?, ?, ?, 'forward', ?)",
            (key, saga_id, step_name, delta),
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


def participant(
    ctx: Any, name: str, amount: int | None = None, fail: Callable[[], None] | None = None
) -> None:
    """A participant's call for step ``name``, keyed by ``ctx.idempotency_key``: a kill
    point before it and one after its effect is committed; ``fail`` (when given) may
    raise once the call reached the participant, before any effect."""
    key = ctx.idempotency_key
    n = KILL.call_started(key)
    if fail is not None:
        fail()
    ledger().apply(key, ctx.saga_id, name, amount)
    KILL.effect_applied(n, key)


def undo(ctx: Any, name: str) -> None:
    """The participant undoes what the forward call of step ``name`` did (if anything)."""
    key = ctx.idempotency_key
    n = KILL.call_started(key)
    ledger().undo(key, ctx.forward_key, ctx.saga_id, name)
    KILL.effect_applied(n, key)


def _forward(ctx: Any, name: str, refuse: bool) -> None:
    def fail() -> None:
        if name == "s2" and ctx.attempt == 1:
            raise ConnectionError("s2: the participant is not reachable yet")
        if refuse:
            raise Refused(f"{name}: refused")

    participant(ctx, name, None, fail)


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
        undo(ctx, "s1")

    @step(retry=Retry(attempts=2, backoff=0.01, jitter=0))
    def s2(self, ctx: Any) -> None:
        _forward(ctx, "s2", False)

    @s2.compensate
    def u2(self, ctx: Any) -> None:
        undo(ctx, "s2")

    @step
    def s3(self, ctx: Any) -> None:
        _forward(ctx, "s3", False)

    @s3.compensate
    def u3(self, ctx: Any) -> None:
        undo(ctx, "s3")

    @step
    def s4(self, ctx: Any) -> None:
        _forward(ctx, "s4", self.fail)

    @s4.compensate
    def u4(self, ctx: Any) -> None:
        undo(ctx, "s4")

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

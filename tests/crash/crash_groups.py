"""Parallel groups and fan-outs under SIGKILL: the sagas, the kill switch by name, what a
killed process does, and what must hold after recovery. Shared by the SQLite crash
test (``tests/crash/test_crash_groups.py``) and the PostgreSQL one
(``tests/postgres/test_kill_groups.py``); the stores, the participant and its ledger
are :mod:`crash_sagas`'.

:func:`define` makes the saga for one compensation order ("concurrent" or
"reverse"): ``s1`` (a step), the group ``book`` of ``a``, ``b``, ``c`` (all at once),
the fan-out ``pick`` over six items (two at a time), the pivot ``confirm``. Every
forward call and every compensation is a participant effect keyed by its idempotency
key. A *path*: "happy" (it completes), "group" (``c`` is refused: the group fails, ``a``
and ``b`` and ``s1`` are undone), "fanout" (item ``i4`` is refused mid-way: the items
done, the group, ``s1`` undone).

Members run concurrently, so a run's writes and calls come in no fixed order: a kill
point is named, not counted. :class:`NamedKill` dies
- around a participant's call of key K: ``before`` it, ``inside`` its transaction
  (statements done, not committed: the effect is lost), ``after`` its commit (the effect
  is done, no checkpoint knows it);
- around the first checkpoint of this process that holds the token T (``a=RUNNING``:
  the write-ahead save of ``a``'s start; ``pick[i3]=COMPLETED``: the one that settles
  that item; ``b~COMPENSATED``: ``b``'s compensation recorded): ``before`` the write,
  ``after`` its commit (a checkpoint is one statement, committed as it runs: there is no
  "inside" to it; were it a transaction, :meth:`NamedKill.uncommitted` would name one).

:func:`census` lists every point a run of a path passes (a run with the sync driver,
killed nowhere); a run with the async driver, or a failing one whose members race,
may pass one by another way or not at all (then nothing is killed and the run ends).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import crash_sagas
from crash_sagas import Kill, Ledger, Point, SkippingClock, participant, undo

from sagaflow import Orchestrator, SagaStatus, events, parallel, saga, step
from sagaflow.records import CompensationStatus, StepStatus

T = TypeVar("T")

PATHS = ("happy", "group", "fanout")
MODES = ("concurrent", "reverse")
ITEMS = [f"i{n}" for n in range(1, 7)]
AMOUNT = {"s1": 1, "a": 10, "b": 100, "c": 1_000, "confirm": 100_000,
          **{f"pick[{i}]": 10_000 for i in ITEMS}}
REFUSED = {"happy": "", "group": "c", "fanout": "pick[i4]"}


def define(mode: str) -> type:
    """The saga whose group and fan-out compensate in ``mode``."""

    @saga(name=f"crash_groups_{mode}")
    @attrs.define
    class GroupOrder:
        path: str = "happy"
        items: list[str] = attrs.field(factory=lambda: list(ITEMS))

        book = parallel(compensate=mode)

        @step
        def s1(self, ctx: Any) -> None:
            self._do(ctx, "s1")

        @s1.compensate
        def u1(self, ctx: Any) -> None:
            undo(ctx, "s1")

        @book.step
        def a(self, ctx: Any) -> None:
            self._do(ctx, "a")

        @a.compensate
        def ua(self, ctx: Any) -> None:
            undo(ctx, "a")

        @book.step
        def b(self, ctx: Any) -> None:
            self._do(ctx, "b")

        @b.compensate
        def ub(self, ctx: Any) -> None:
            undo(ctx, "b")

        @book.step
        def c(self, ctx: Any) -> None:
            self._do(ctx, "c")

        @c.compensate
        def uc(self, ctx: Any) -> None:
            undo(ctx, "c")

        @step(each="items", key=lambda item: item, limit=2, compensate=mode)
        def pick(self, item: str, ctx: Any) -> None:
            self._do(ctx, f"pick[{item}]")

        @pick.compensate
        def unpick(self, item: str, ctx: Any) -> None:
            undo(ctx, f"pick[{item}]")

        @step(pivot=True)
        def confirm(self, ctx: Any) -> None:
            self._do(ctx, "confirm")

        def _do(self, ctx: Any, name: str) -> None:
            def fail() -> None:
                if name == REFUSED[self.path]:
                    raise crash_sagas.Refused(f"{name}: refused")

            participant(ctx, name, AMOUNT[name], fail)

    return GroupOrder


SAGAS = {mode: define(mode) for mode in MODES}


# --------------------------------------------------------------------------- killing

def tokens(record: Any) -> set[str]:
    """What a checkpoint of ``record`` holds, step by step: ``name=STATUS`` and, once a
    compensation began, ``name~STATUS``."""
    found = set()
    for s in record.steps:
        if s.status is not StepStatus.PENDING:
            found.add(f"{s.name}={s.status.value}")
        if s.compensation not in (CompensationStatus.NOT_NEEDED, CompensationStatus.PENDING):
            found.add(f"{s.name}~{s.compensation.value}")
    return found


def _label(record: Any) -> str:
    return " ".join(sorted(tokens(record)))


class NamedKill(Kill):
    """:class:`crash_sagas.Kill` with points named by key or token (see the module's
    docstring); the census (``census=True``) lists every point a run passes, once."""

    def __init__(self, point: Point | None = None, census: bool = False) -> None:
        super().__init__(point, census)
        self.known: set[str] = set()  # tokens of this process's earlier checkpoints
        self.fresh: set[str] = set()  # tokens new in the write in progress
        self.named: set[tuple[str, str, str]] = set()

    def _see(self, kind: str, name: str, when: str) -> None:
        if self.seen is not None and (kind, name, when) not in self.named:
            self.named.add((kind, name, when))
            self.seen.append(Point(kind, 0, when, name))
        p = self.point
        if p is not None and p.kind == kind and p.when == when and p.label == name:
            super()._check(kind, p.n, when)

    def _write_begin(self, label: str) -> None:
        self.fresh = set(label.split()) - self.known
        self.inside = False
        self.current = 1
        for token in sorted(self.fresh):
            self._see("write", token, "before")

    def _write_end(self) -> None:
        self.current = None
        for token in sorted(self.fresh):
            if self.inside:
                self._see("write", token, "inside")
            self._see("write", token, "after")
        self.known |= self.fresh
        self.fresh = set()

    def write(self, label: Callable[[], str], do: Callable[[], T]) -> T:
        self._write_begin(label())
        result = do()
        self._write_end()
        return result

    async def awrite(self, label: Callable[[], str], do: Callable[[], Awaitable[T]]) -> T:
        self._write_begin(label())
        result = await do()
        self._write_end()
        return result

    def uncommitted(self) -> None:
        if self.current is not None:
            self.inside = True
            for token in sorted(self.fresh):
                self._see("write", token, "inside")

    def call_started(self, key: str) -> int:
        self._see("call", _short(key), "before")
        return 0

    def effect_pending(self, key: str) -> None:
        self._see("call", _short(key), "inside")

    def effect_applied(self, n: int, key: str) -> None:
        self._see("call", _short(key), "after")


def _short(key: str) -> str:
    """A key without its saga id: ``a:forward``, ``pick[i3]:compensate``."""
    return key.split(":", 1)[1]


class NamedLedger(Ledger):
    """The ledger, with a kill point inside each effect's transaction."""

    def _in_transaction(self, key: str, body: Callable[[], None]) -> None:
        def then_maybe_die() -> None:
            body()
            kill = crash_sagas.KILL
            if isinstance(kill, NamedKill):
                kill.effect_pending(key)

        super()._in_transaction(key, then_maybe_die)


def open_store(store: str) -> Any:
    """The killing store of ``store`` (a SQLite file or a ``postgresql://`` URL with its
    ``schema=``), its checkpoints labelled by :func:`tokens`."""
    opened = crash_sagas.open_killing(store)
    opened.label = _label
    return opened


# --------------------------------------------------------------------------- one process

def _snapshot(store: Any, saga_id: str) -> dict[str, Any] | None:
    record = store.load(saga_id)
    if record is None:
        return None
    return {"status": record.status.value,
            "steps": {s.name: [s.status.value, s.compensation.value] for s in record.steps}}


def perform(store_path: str, job: dict[str, Any]) -> dict[str, Any] | None:
    """Run (``"action": "run"``) or recover (``"recover"``) ``job``'s saga with its
    driver, in this process, its kill switch armed at ``job["point"]``; what a recovery
    found in the store before it began."""
    p = job["point"]
    crash_sagas.KILL = NamedKill(None if p is None else Point(p[0], 0, p[2], p[1]))
    crash_sagas.use_ledger(NamedLedger(os.environ[crash_sagas.LEDGER_ENV]))
    store = open_store(store_path)
    cls = SAGAS[job["mode"]]
    orch = Orchestrator(store, sagas=list(SAGAS.values()), clock=SkippingClock())
    sync = job["driver"] == "sync"
    if job["action"] == "run":
        saga_obj = cls(path=job["path"])
        if sync:
            orch.run(saga_obj, job["saga_id"])
        else:
            asyncio.run(orch.arun(saga_obj, job["saga_id"]))
        return None
    found = _snapshot(store, job["saga_id"])
    store.only = job["saga_id"]
    report = orch.recover() if sync else asyncio.run(orch.arecover())
    if report.skipped:
        raise RuntimeError(f"recovery skipped {report.skipped}")
    return {"found": found, "resumed": {k: v.value for k, v in report.resumed.items()}}


# --------------------------------------------------------------------------- the census

def census(path: str, mode: str) -> list[Point]:
    """Every named point a run of ``path`` passes (sync driver, killed nowhere)."""
    saved = crash_sagas.KILL
    kill = crash_sagas.KILL = NamedKill(census=True)
    crash_sagas.use_ledger(NamedLedger(":memory:"))
    try:
        store = open_store(":memory:")
        with Orchestrator(store, clock=SkippingClock()) as orch:
            orch.run(SAGAS[mode](path=path), "census")
            store.close()
        assert kill.seen is not None
        return kill.seen
    finally:
        crash_sagas.KILL = saved
        crash_sagas.use_ledger(None)


@attrs.frozen
class Case:
    path: str
    mode: str
    driver: str
    point: Point

    @property
    def id(self) -> str:
        p = self.point
        return f"{self.driver}-{self.path}-{self.mode}-{p.kind}-{p.label}-{p.when}"

    @property
    def saga_id(self) -> str:
        return "g-" + self.id.replace("~", "_").replace(":", ".")  # a key splits at ":"


def cases(points: dict[tuple[str, str], list[Point]], drivers: tuple[str, ...]) -> list[Case]:
    """Every point of every path and mode, with each driver ("happy" takes one mode:
    nothing is compensated)."""
    return [
        Case(path, mode, driver, p)
        for (path, mode), found in points.items()
        for p in found
        for driver in drivers
    ]


def job(saga_id: str, case: Case, action: str, point: Point | None) -> dict[str, Any]:
    return {"saga": "groups", "saga_id": saga_id, "action": action, "path": case.path,
            "mode": case.mode, "driver": case.driver,
            "point": None if point is None else [point.kind, point.label, point.when]}


# --------------------------------------------------------------------------- the checks

TERMINAL = {"happy": SagaStatus.COMPLETED, "group": SagaStatus.COMPENSATED,
            "fanout": SagaStatus.COMPENSATED}
#: the steps whose effect a failing path certainly made (then undid): the others of
#: ``AMOUNT`` may have run or not (members racing the refused one), never "confirm".
#: (an item still running when ``i4`` fails may be cut off by the kill, then not run again)
CERTAIN = {"group": {"s1"}, "fanout": {"s1", "a", "b", "c"}}


class Outcome:
    """What the store and the ledger hold once every recovery is over."""

    def __init__(self, store: Any, ledger: Path) -> None:
        for cls in SAGAS.values():
            store.register(cls)
        self.records = {st.saga_id: store.decode(st) for st in store.scan()}
        conn = sqlite3.connect(ledger)
        self.effects: dict[str, dict[str, int]] = {}
        for key, saga_id, delta in conn.execute("SELECT key, saga_id, delta FROM effects"):
            self.effects.setdefault(saga_id, {})[key] = delta
        self.calls = dict(conn.execute("SELECT key, n FROM calls").fetchall())
        conn.close()

    def check(self, saga_id: str, path: str) -> Any:
        """The saga ended as its path does; every effect exactly once (completed) or
        made and undone once (compensated); every member ran to completion and was
        undone at most once, by the keys its record names. The record (or None: it
        never began, and did nothing)."""
        record = self.records.get(saga_id)
        effects = self.effects.get(saga_id, {})
        if record is None:
            assert effects == {}, effects
            return None
        assert record.status is TERMINAL[path], (saga_id, record.status, record.history)
        # The keys the record names (a member's own, an item's `pick[key]`) are those
        # the participants were called with.
        names = {s.name for s in record.steps}
        items = {f"pick[{i}]" for i in ITEMS}
        assert names - items == {"s1", "a", "b", "c", "pick", "confirm"}
        assert names & items == (set() if path == "group" else items)
        for key in effects:
            assert key.split(":")[1] in names, key
            assert self.calls[key] >= 1
        made = {k.split(":")[1]: v for k, v in effects.items() if k.endswith(":forward") and v}
        if path == "happy":
            assert effects == {f"{saga_id}:{n}:forward": v for n, v in AMOUNT.items()}, effects
        else:
            assert CERTAIN[path] <= set(made), (made, record.history)
            assert "confirm" not in made and REFUSED[path] not in made
            for name, v in made.items():
                assert v == AMOUNT[name]
                assert effects[f"{saga_id}:{name}:compensate"] == -v, (name, effects)
            assert {k: v for k, v in effects.items() if v and k.endswith(":compensate")} == {
                f"{saga_id}:{n}:compensate": -v for n, v in made.items()
            }
            assert sum(effects.values()) == 0
        for kind in (events.StepCompleted, events.CompensationCompleted):
            done = [e.step for e in record.history if isinstance(e, kind)]
            assert len(done) == len(set(done)), (kind.__name__, done)  # each at most once
        return record

    def check_case(self, case: Case, reports: dict[str, list[dict[str, Any]]]) -> None:
        """One case of the matrix: its run killed at its point, then one recovery."""
        sid = case.saga_id
        ran, recovered = reports[sid]
        racing = case.driver == "async" or case.path != "happy"
        assert ran["killed"] or racing, ran
        record = self.check(sid, case.path)
        found = recovered["report"]["found"]
        if record is None:
            assert found is None and ran["killed"]
            return
        # What was saved as finished was not run again: its participant was called once.
        for name, (status, compensation) in found["steps"].items():
            if name in AMOUNT and status == "COMPLETED":
                assert self.calls[f"{sid}:{name}:forward"] == 1, (name, found)
            if name in AMOUNT and compensation == "COMPENSATED":
                assert self.calls[f"{sid}:{name}:compensate"] == 1, (name, found)
        p = case.point
        if ran["killed"] and p.kind == "call" and not racing:
            key = f"{sid}:{p.label}"
            # Cut off after its effect: run again with the same key, the first effect
            # kept; cut off before it, or inside it (rolled back): run once more, once.
            assert self.calls[key] == (2 if p.when == "after" else 1), (key, found)
        if ran["killed"] and p.kind == "write" and p.when != "after" and not racing:
            # A checkpoint that never committed: the store holds the turn before it.
            token = p.label
            name, sep, status = token.partition("=") if "=" in token else token.partition("~")
            held = found["steps"].get(name)  # None: an item not yet appended
            assert held is None or held[0 if sep == "=" else 1] != status, (token, held)


def run_matrix(store: str | Path, ledger: Path, where: Path,
               todo: list[Case]) -> dict[str, list[dict[str, Any]]]:
    """Each case: its run killed at its point, then a fresh process recovering it; the
    two jobs' results by saga id."""
    from crash_jobs import jobs as run_jobs

    plan = []
    for case in todo:
        plan.append(job(case.saga_id, case, "run", case.point))
        plan.append(job(case.saga_id, case, "recover", None))
    results: dict[str, list[dict[str, Any]]] = {}
    for result in run_jobs(store, ledger, plan, where):
        results.setdefault(result["saga_id"], []).append(result)
    return results


def run_chained(store: str | Path, ledger: Path, where: Path, todo: list[Case],
                points: dict[tuple[str, str], list[Point]], rng: Any) -> list[str]:
    """Each case killed at its point, then its recoveries killed in turn at random
    points of its path (one or two in a row), then one recovery to the end; the saga
    ids."""
    from crash_jobs import jobs as run_jobs

    plan = []
    for case in todo:
        sid = "c" + case.saga_id
        plan.append(job(sid, case, "run", case.point))
        for _ in range(rng.choice((1, 2))):
            plan.append(job(sid, case, "recover", rng.choice(points[case.path, case.mode])))
        plan.append(job(sid, case, "recover", None))
    run_jobs(store, ledger, plan, where)
    return ["c" + case.saga_id for case in todo]

"""Waiting sagas under SIGKILL: the saga, its scripts, what a killed process does, and
what must hold after recovery. Shared by the SQLite crash test
(``tests/crash/test_crash_waits.py``) and the PostgreSQL one
(``tests/postgres/test_kill_waits.py``); the kill switch, the killing stores, the
participant and its ledger are :mod:`crash_sagas`'.

:class:`WaitOrder` reserves (a participant effect, compensated), waits for a
``decision`` signal (a typed payload; the handler logs the decision with a participant
and records it on the saga, or rejects), waits an hour on a durable timer (whose handler
has a participant effect), waits up to an hour for a ``note`` (on_timeout="continue"),
and charges (the pivot).

A *path* is a script of *phases*, each a process of its own on a virtual clock that
the script moves: run the saga, send a signal (``Orchestrator.signal``), or resume
what is due (``resume_due``). The *census* runs every path once without a kill and
lists the kill points of each phase: before and after every store write (the signal's
row, inside its transaction too: statements done, no commit), before every
participant call and after its effect. A *case* kills one phase at one point; then a
fresh process recovers (``recover``, then ``resume_due`` until nothing is due) at the
same time (the "late" path: after the wait's timeout), the client retries what it was
doing (the same signal with the same ``signal_id``: a duplicate, ignored, if it was
stored; refused if the saga it finished is over, as the store contract says), and the
script goes on.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import crash_sagas
from crash_jobs import jobs as run_jobs
from crash_sagas import Kill, Ledger, Point, participant, undo

from sagaflow import (
    AlreadyExecuting,
    Orchestrator,
    SagaRejected,
    SagaStatus,
    SignalRefused,
    WaitTimedOut,
    events,
    saga,
    step,
    timer,
    wait,
)
from sagaflow.testing import VirtualClock

T0 = 1_700_000_000.0
HOUR = 3600.0
DAY = 86_400.0


@attrs.frozen
class Decision:
    approved: bool
    by: str
    limit: int = 0


@attrs.frozen
class Note:
    text: str


@saga(name="crash_waits", key="order")
@attrs.define
class WaitOrder:
    order: str
    log: list[str] = attrs.field(factory=list)  #: what each handler was handed, in order
    limit: int = 0
    note: str = ""

    @step
    def reserve(self, ctx: Any) -> None:
        participant(ctx, "reserve", 1)

    @reserve.compensate
    def release(self, ctx: Any) -> None:
        undo(ctx, "reserve")

    @wait("decision", payload=Decision, timeout=timedelta(days=1))
    def approval(self, decision: Decision, ctx: Any) -> None:
        participant(ctx, "approval", 10 if decision.approved else 20)  # logged once
        if not decision.approved:
            raise SagaRejected(f"refused by {decision.by}")
        self.log.append(f"decision:{decision.by}")
        self.limit = decision.limit

    @timer(after=timedelta(hours=1))
    def cool_off(self, ctx: Any) -> None:
        participant(ctx, "cool_off", 100)
        self.log.append("cool_off")

    @wait("note", payload=Note, timeout=timedelta(hours=1), on_timeout="continue")
    def remark(self, note: Note, ctx: Any) -> None:
        self.log.append(f"note:{note.text}")
        self.note = note.text

    @step(pivot=True)
    def charge(self, ctx: Any) -> None:
        participant(ctx, "charge", 1_000)


# --------------------------------------------------------------------------- the scripts

APPROVE = {"approved": True, "by": "ann", "limit": 500}
REFUSE = {"approved": False, "by": "bob"}
EARLY = {"text": "early"}


@attrs.frozen
class Phase:
    """One process of a script: ``action`` ("run", "signal", "due") at ``at`` seconds
    after :data:`T0`; a signal's ``name`` and ``payload``. Killed, the phase is recovered
    (and the client's call made again) at ``recovered_at`` (default: ``at``)."""

    action: str
    at: float
    name: str = ""
    payload: dict[str, Any] | None = None
    recovered_at: float | None = None

    @property
    def id(self) -> str:
        return self.name or self.action


PATHS: dict[str, tuple[Phase, ...]] = {
    # approved; the note never comes: its wait runs out and the saga goes on
    "approved": (Phase("run", 0), Phase("signal", 60, "decision", APPROVE),
                 Phase("due", 60 + HOUR), Phase("due", 60 + 2 * HOUR)),
    # the note comes early (parked at the decision), kept until the saga reaches its wait
    "early": (Phase("run", 0), Phase("signal", 30, "note", EARLY),
              Phase("signal", 60, "decision", APPROVE), Phase("due", 60 + HOUR)),
    # approved, but its sender killed once the signal is stored and the saga recovered
    # only after the decision's timeout: it came in time, so it is delivered
    "late": (Phase("run", 0), Phase("signal", 60, "decision", APPROVE, DAY + 120),
             Phase("due", DAY + 120 + HOUR), Phase("due", DAY + 120 + 2 * HOUR)),
    # a rejection by signal: compensated, the rejection the outcome
    "rejected": (Phase("run", 0), Phase("signal", 60, "decision", REFUSE)),
    # no decision within the day: compensated
    "expired": (Phase("run", 0), Phase("due", DAY)),
}

#: What each path ends as: status, the error's class, the saga's log, the net effect
#: of each participant key (by step and direction), the signals delivered, and the
#: milestones of its history in order (each exactly once).
EXPECTED: dict[str, dict[str, Any]] = {
    "approved": {
        "status": SagaStatus.COMPLETED, "error": None, "log": ["decision:ann", "cool_off"],
        "effects": {"reserve:forward": 1, "approval:forward": 10, "cool_off:forward": 100,
                    "charge:forward": 1_000},
        "delivered": ["decision"],
        "milestones": ["StepCompleted-reserve", "WaitStarted-approval",
                       "SignalDelivered-approval", "StepCompleted-approval",
                       "WaitStarted-cool_off", "StepCompleted-cool_off", "WaitStarted-remark",
                       "WaitExpired-remark", "StepCompleted-charge", "SagaCompleted"],
    },
    "early": {
        "status": SagaStatus.COMPLETED, "error": None,
        "log": ["decision:ann", "cool_off", "note:early"],
        "effects": {"reserve:forward": 1, "approval:forward": 10, "cool_off:forward": 100,
                    "charge:forward": 1_000},
        "delivered": ["note", "decision"],
        "milestones": ["StepCompleted-reserve", "WaitStarted-approval",
                       "SignalDelivered-approval", "StepCompleted-approval",
                       "WaitStarted-cool_off", "StepCompleted-cool_off", "WaitStarted-remark",
                       "SignalDelivered-remark", "StepCompleted-remark", "StepCompleted-charge",
                       "SagaCompleted"],
    },
    "rejected": {
        "status": SagaStatus.COMPENSATED, "error": SagaRejected, "log": [],
        "effects": {"reserve:forward": 1, "approval:forward": 20, "reserve:compensate": -1},
        "delivered": ["decision"],
        "milestones": ["StepCompleted-reserve", "WaitStarted-approval",
                       "SignalDelivered-approval", "StepRejected-approval",
                       "CompensationCompleted-reserve", "SagaCompensated"],
    },
    "expired": {
        "status": SagaStatus.COMPENSATED, "error": WaitTimedOut, "log": [],
        "effects": {"reserve:forward": 1, "reserve:compensate": -1},
        "delivered": [],
        "milestones": ["StepCompleted-reserve", "WaitStarted-approval", "WaitExpired-approval",
                       "CompensationCompleted-reserve", "SagaCompensated"],
    },
}
TERMINAL = {s.value for s in SagaStatus if s.is_terminal}
EXPECTED["late"] = EXPECTED["approved"]
_MILESTONES = (
    events.StepCompleted, events.WaitStarted, events.SignalDelivered, events.WaitExpired,
    events.StepRejected, events.CompensationCompleted, events.SagaCompleted,
    events.SagaCompensated, events.SagaFailed,
)


def _name(event: Any) -> str:
    kind = type(event).__name__
    return f"{kind}-{event.step}" if event.step else kind


def signal_id(saga_id: str, name: str) -> str:
    """The caller's id of signal ``name`` to ``saga_id``: the same when it is sent again."""
    return f"{saga_id}/{name}"


# --------------------------------------------------------------------------- in the child

def _payload(name: str, given: dict[str, Any]) -> Any:
    return Decision(**given) if name == "decision" else Note(**given)


def _act(orch: Orchestrator, job: dict[str, Any]) -> dict[str, Any]:
    """Do ``job``'s action with the sync API, or the async one (``"driver": "async"``:
    ``arun``, ``asignal``, ``aresume_due``, ``arecover``); what the test needs to know."""
    if job.get("driver") == "async":
        def call(name: str, *args: Any, **kw: Any) -> Any:
            return asyncio.run(getattr(orch, "a" + name)(*args, **kw))
    else:
        def call(name: str, *args: Any, **kw: Any) -> Any:
            return getattr(orch, name)(*args, **kw)

    def settle_due() -> None:
        for _ in range(20):
            if not call("resume_due"):
                return
        raise AssertionError("resume_due kept finding sagas due")

    sid, action = job["saga_id"], job["action"]
    out: dict[str, Any] = {}
    if action == "run":
        try:
            call("run", WaitOrder(order=sid), sid)
        except AlreadyExecuting:
            if not job.get("retry"):
                raise
    elif action == "signal":
        name = job["name"]
        before = len(orch.store.signals(sid))
        try:
            call("signal", sid, name, _payload(name, job["payload"]),
                 signal_id=signal_id(sid, name))
        except SignalRefused as exc:
            # Sent again once the saga finished (the first one, taken, finished it): a
            # finished saga refuses every signal (the store contract), this one too.
            if not (job.get("retry") and orch.get(sid).status.is_terminal):
                raise
            out["refused"] = str(exc)
        out["stored"] = len(orch.store.signals(sid)) > before
    elif action == "due":
        settle_due()
    elif action == "recover":
        report = call("recover")
        assert not report.skipped, report.skipped
        settle_due()
    else:
        raise ValueError(f"unknown action {action!r}")
    return out


def _snapshot(store: Any, saga_id: str) -> dict[str, Any]:
    """The saga as the store holds it, and its signals."""
    record = store.load(saga_id)
    return {
        "status": None if record is None else record.status.value,
        "state": None if record is None else record.state,
        "waiting": None if record is None else record.waiting,
        "marks": {} if record is None else dict(record.signal_marks),
        "signals": [[s.name, s.signal_id, s.seq] for s in store.signals(saga_id)],
    }


def act_on(store: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Do ``job`` on ``store`` (narrowed to the job's saga) at the job's time; what
    it did, and the saga's state after it."""
    store.only = job["saga_id"]
    with Orchestrator(store, sagas=[WaitOrder], clock=VirtualClock(T0 + job["at"])) as orch:
        out = _act(orch, job)
    return {**out, **_snapshot(store, job["saga_id"])}


def perform(store_arg: str, job: dict[str, Any]) -> dict[str, Any]:
    """A job in a process of its own (``crash_child.py``): open the store, act, close."""
    store = crash_sagas.open_killing(store_arg, synchronous=job.get("synchronous", "FULL"))
    try:
        return act_on(store, job)
    finally:
        store.close()


# --------------------------------------------------------------------------- the census

def _span(saved: dict[str, int]) -> Callable[[Any], str]:
    """A checkpoint's label: the events it adds (the first and the last, if many)."""

    def label(record: Any) -> str:
        new = record.history[saved.get(record.saga_id, 0):]
        saved[record.saga_id] = len(record.history)
        names = [_name(e) for e in new] or ["nothing new"]
        return names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"

    return label


def census() -> dict[str, list[list[Point]]]:
    """Every path run once without a kill, each phase as a fresh process would count:
    the kill points of each phase of each path."""
    out: dict[str, list[list[Point]]] = {}
    crash_sagas.use_ledger(Ledger(":memory:"))
    store = crash_sagas.open_killing(":memory:")
    store.label = _span({})
    try:
        for path, phases in PATHS.items():
            out[path] = []
            for phase in phases:
                crash_sagas.KILL = Kill(census=True)
                act_on(store, job("census-" + path, phase))
                seen = crash_sagas.KILL.seen
                assert seen is not None
                out[path].append(seen)
    finally:
        crash_sagas.KILL = Kill()
        crash_sagas.use_ledger(None)
        store.close()
    return out


# --------------------------------------------------------------------------- the test's side

@attrs.frozen
class Case:
    """Path ``path`` killed in phase ``phase`` (an index) at ``point``."""

    path: str
    phase: int
    point: Point

    @property
    def id(self) -> str:
        return f"{self.path}-{self.phase}{PATHS[self.path][self.phase].id}-{self.point.id}"

    def saga_id(self, tag: str) -> str:
        return f"{tag}-{self.id}"


def job(saga_id: str, phase: Phase, point: Point | None = None, **more: Any) -> dict[str, Any]:
    return {
        "saga": "waits", "saga_id": saga_id, "action": phase.action, "at": phase.at,
        "name": phase.name, "payload": phase.payload,
        "point": None if point is None else [point.kind, point.n, point.when], **more,
    }


def committed(phase: Phase, point: Point) -> bool:
    """Whether a signal phase killed at ``point`` got its signal's row committed (the
    row is the phase's first write)."""
    return not (point.kind == "write" and point.n == 1 and point.when in ("before", "inside"))


def all_cases(points: dict[str, list[list[Point]]]) -> list[Case]:
    """Every kill point of every phase; of the "late" path, only its signal phase's once
    the signal's row committed (the rest is the "approved" path's)."""
    return [
        Case(path, k, p)
        for path, phases in points.items() for k, seen in enumerate(phases) for p in seen
        if path != "late" or (k == 1 and committed(PATHS[path][k], p))
    ]


def representative(case: Case) -> bool:
    """The boundaries of the new checkpoints, kept in the default (fast) SQLite run: a
    signal stored (before, inside and after its commit), the checkpoint that consumes a
    signal, a timer's firing, a wait's time running out, parking, and a handler cut off
    after its participant's effect; the deep profile runs every boundary."""
    p = case.point
    if p.kind == "call":
        return p.when == "after" and (":approval:" in p.label or ":cool_off:" in p.label)
    return any(word in p.label for word in (
        "signal-", "SignalDelivered", "StepStarted-cool_off", "WaitExpired", "WaitStarted",
    ))


#: Fewer still, for the default PostgreSQL run (a process there costs more): each new
#: checkpoint's boundaries on one path. (path, phase) -> the points' ids, less labels.
FEW: dict[tuple[str, int], tuple[str, ...]] = {
    ("approved", 1): ("w01-before", "w01-inside", "w01-after",  # the signal's row
                      "c01-after",  # the handler's effect done, not consumed
                      "w02-before", "w02-after"),  # the checkpoint that consumes it
    ("approved", 2): ("w01-before", "w01-after"),  # the timer fired
    ("approved", 3): ("w01-after",),  # the note's wait ran out: it goes on
    ("early", 1): ("w01-inside", "w01-after"),  # an early signal's row
    ("early", 3): ("w02-after", "w03-before"),  # reached the wait / consumed the early one
    ("late", 1): ("w01-after",),  # stored in time, recovered after the timeout
    ("rejected", 1): ("w01-after", "w02-before"),  # a rejection stored / not yet consumed
    ("expired", 1): ("w01-before",),  # the decision's wait ran out: compensate
}


def few(case: Case) -> bool:
    p = case.point
    return f"{p.kind[0]}{p.n:02}-{p.when}" in FEW.get((case.path, case.phase), ())


def script(
    case: Case, saga_id: str, driver: str = "sync", rng: random.Random | None = None
) -> list[dict[str, Any]]:
    """The jobs of ``case``: the phases before the one killed; that one, killed at its
    point; a fresh process that recovers at that time; the client doing again what was
    cut off (the same signal id); the phases after. With ``rng``, the recovery is killed
    too, at a random point (up to twice in a row; a point it does not reach is no kill),
    before one recovers."""
    more = {"driver": driver}
    phases = PATHS[case.path]
    killed = phases[case.phase]
    later = killed.at if killed.recovered_at is None else killed.recovered_at
    recover = Phase("recover", later)
    chained = []
    for i in range(0 if rng is None else rng.choice((1, 1, 2))):
        assert rng is not None
        kind = rng.choice(("write", "call"))
        when = rng.choice(("before", "inside", "after") if kind == "write" else ("before", "after"))
        point = Point(kind, rng.randint(1, 3 if kind == "write" else 2), when)
        chained.append(job(saga_id, recover, point, role=f"recovery {i + 1}", **more))
    return [
        *(job(saga_id, p, **more) for p in phases[:case.phase]),
        job(saga_id, killed, case.point, role="killed", **more),
        *chained,
        job(saga_id, recover, role="recovered", **more),
        job(saga_id, attrs.evolve(killed, at=later), retry=True, role="retried", **more),
        *(job(saga_id, p, **more) for p in phases[case.phase + 1:]),
    ]


def run_cases(
    store: str | Path, ledger: Path, where: Path, driver: str, cases: list[Case],
    rng: random.Random | None = None, tag: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Every case's script with the ``driver`` ("sync" or "async") API (recoveries
    killed in turn, with ``rng``: see :func:`script`), one after another in one harness
    process, each saga's id tagged with ``tag`` (default: the driver); by saga id, the
    reports of its killed, recovering and retrying jobs."""
    tag = driver if tag is None else tag
    todo = [j for case in cases for j in script(case, case.saga_id(tag), driver, rng)]
    out: dict[str, dict[str, Any]] = {}
    for result in run_jobs(store, ledger, todo, where):
        if "role" in result:
            out.setdefault(result["saga_id"], {})[result["role"]] = result
    return out


def run_matrix(store: str | Path, ledger: Path, where: Path,
               cases: list[tuple[str, Case]]) -> dict[str, dict[str, Any]]:
    """:func:`run_cases` of each ``(driver, case)``, the cases of each driver together."""
    reports: dict[str, dict[str, Any]] = {}
    for driver in dict.fromkeys(d for d, _ in cases):
        reports |= run_cases(store, ledger, where, driver, [c for d, c in cases if d == driver])
    return reports


def run_chained(store: str | Path, ledger: Path, where: Path, cases: list[Case],
                rng: random.Random, open_store: Callable[[], Any]) -> None:
    """``cases`` with each driver, their recoveries killed in turn (see :func:`script`),
    then checked (``open_store()``: a store on what they wrote, to read it)."""
    for driver in ("sync", "async"):
        tag = f"chained-{driver}"
        reports = run_cases(store, ledger, where, driver, cases, rng, tag)
        chained = [r for jobs in reports.values() for role, r in jobs.items()
                   if role.startswith("recovery ")]
        assert sum(r["killed"] for r in chained) >= len(cases) // 4, chained
        with open_store() as opened:
            found = Outcome(opened, ledger)
            for case in cases:
                saga_id = case.saga_id(tag)
                found.check(case, saga_id, reports[saga_id])


class Outcome:
    """What a store and the ledger hold once every script has run."""

    def __init__(self, store: Any, ledger: Path) -> None:
        store.register(WaitOrder)
        self.store = store
        conn = Ledger(str(ledger)).conn
        self.effects: dict[str, dict[str, int]] = {}
        for key, saga_id, delta in conn.execute("SELECT key, saga_id, delta FROM effects"):
            self.effects.setdefault(saga_id, {})[key] = delta
        self.calls: dict[str, int] = dict(conn.execute("SELECT key, n FROM calls").fetchall())
        conn.close()

    def check_case(self, reports: dict[str, dict[str, Any]], driver: str, case: Case) -> None:
        """:meth:`check` of ``case`` run with ``driver`` (``reports``: :func:`run_matrix`'s)."""
        saga_id = case.saga_id(driver)
        self.check(case, saga_id, reports[saga_id])

    def check(self, case: Case, saga_id: str, reports: dict[str, Any]) -> None:
        """The case's saga ended as its path does, each signal delivered once, each
        timer fired once, each participant effect exactly once, its history in order;
        and what the kill and the recovery left in between is right. ``reports``: its
        jobs' results by role (its recoveries may have been killed too)."""
        killed, recovered, retried = reports["killed"], reports["recovered"], reports["retried"]
        assert killed["killed"], killed
        self._check_between(case, saga_id, recovered["report"], retried["report"])

        expected = EXPECTED[case.path]
        record = self.store.load(saga_id)
        assert record is not None, saga_id
        assert record.status is expected["status"], (saga_id, record.status, record.error)
        if expected["error"] is None:
            assert record.error is None, record.error
        else:
            assert isinstance(record.error, expected["error"]), record.error
        assert record.waiting is None and record.wake_at is None
        assert record.data.log == expected["log"]  # each handler's record exactly once
        if "decision:ann" in expected["log"]:
            assert record.data.limit == 500
        assert record.data.note == ("early" if case.path == "early" else "")

        # Each participant effect exactly once (keys are unique: one row each), and no
        # other: a handler or step cut off after its effect ran again with the same key.
        effects = self.effects.get(saga_id, {})
        want = {f"{saga_id}:{k}": v for k, v in expected["effects"].items()}
        assert {k: v for k, v in effects.items() if v} == want, effects
        # A call runs once more per kill at most (its process died after the call);
        # a kill after its effect made it run again.
        kills = sum(1 for r in reports.values() if r["killed"])
        for key in effects:
            assert 1 <= self.calls[key] <= 1 + kills, (key, self.calls[key], kills)
        p = case.point
        if p.kind == "call" and p.when == "after":
            key = saga_id + p.label.removeprefix("census-" + case.path)
            assert self.calls[key] >= 2, (key, self.calls[key])

        # The history: milestones in order, each once; time never goes back.
        history = record.history
        assert type(history[0]) is events.SagaStarted
        assert [_name(e) for e in history if isinstance(e, _MILESTONES)] == expected["milestones"]
        times = [e.at for e in history]
        assert times == sorted(times), times
        fired = [e for e in history if isinstance(e, events.StepStarted) and e.step == "cool_off"]
        if case.path in ("rejected", "expired"):
            assert fired == []
        else:  # the timer fired (its checkpoint), again only after a kill cut its handler off
            assert 1 <= len(fired) <= 1 + kills, fired

        # Each signal stored once (the one sent again was ignored), each delivered once,
        # in the order it came; the marks are at the delivered ones.
        signals = self.store.signals(saga_id)
        sent = [p.name for p in PATHS[case.path] if p.action == "signal"]
        assert [s.name for s in signals] == sent
        assert [s.signal_id for s in signals] == [signal_id(saga_id, n) for n in sent]
        delivered = [e for e in history if isinstance(e, events.SignalDelivered)]
        by_name = {s.name: s for s in signals}
        assert sorted((e.signal, e.signal_id, e.seq) for e in delivered) == sorted(
            (n, by_name[n].signal_id, by_name[n].seq) for n in expected["delivered"]
        )
        assert record.signal_marks == {n: by_name[n].seq for n in expected["delivered"]}

    def _check_between(self, case: Case, saga_id: str, recovered: dict[str, Any],
                       retried: dict[str, Any]) -> None:
        """What the recovery found: a signal whose store returned (committed) is there
        and, if the saga waits for it, delivered; one cut off before its commit is not
        there at all. The client's second send is stored only if the first was not."""
        phase = PATHS[case.path][case.phase]
        p = case.point
        if phase.action == "run":
            created = not (p.kind == "write" and p.n == 1 and p.when == "before")
            assert (recovered["status"] is not None) is created, recovered
            return
        if phase.action != "signal":
            return
        sid = signal_id(saga_id, phase.name)
        stored = committed(phase, p)
        present = [s for s in recovered["signals"] if s[1] == sid]
        assert len(present) == (1 if stored else 0), recovered
        if stored and phase.name == "decision":
            # The saga waits for it: recovery delivered it (with no second send).
            assert recovered["marks"].get("decision") == present[0][2], recovered
            assert recovered["waiting"] != "decision", recovered
        if not stored:
            assert recovered["marks"].get(phase.name) is None, recovered
        # Sent again: stored only if the first was not; else a duplicate, ignored, or,
        # if the first finished the saga, refused (a finished saga takes no signals).
        assert retried["stored"] is (not stored), retried
        if "refused" in retried:
            assert stored and recovered["status"] in TERMINAL, (recovered, retried)

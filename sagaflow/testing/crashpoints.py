"""Crash points: SIGKILL a saga at every checkpoint and effect, recover it, check the world.

:func:`check_crash_points` runs the user's saga in a child process once per *crash
point* and kills it there with SIGKILL:

- before each checkpoint is written, and after it committed;
- after each step's or compensation's function returned (its participants' effect is
  done) and before the checkpoint that records it.

A fresh process then recovers it (``Orchestrator.recover``; ``arecover`` for async
sagas; a saga killed before its first checkpoint is run again under the same id, as
its caller would). Each point must leave the saga in the terminal state of an
uninterrupted run of the same plan, and the participants in the same state (the
user's ``snapshot()``): every net effect exactly once. That holds only if every step
and compensation is idempotent on its ``ctx.idempotency_key`` (a call cut short runs
again with the same key), which is what this finds out.

The points of a plan are the ones an uninterrupted run passes (its *reference* run).
Plans are :class:`~sagaflow.testing.FailurePlan` values whose steps or compensations
raise or reject; by default, nothing goes wrong, and a step fails so that every
compensation runs (and is crashed in too).

A saga that waits is taken to its end in the killed process and in its recovery alike:
each wait gets what the plan's ``signals=`` send, early, while it waits, late, refused or
with another one after (again, with the same signal ids, after a crash), a timer or an
unanswered wait has the virtual clock moved to its wake time. ``depth=N`` kills each
recovery at the points of its own run too, N levels deep (chained crashes).

A plan whose pivot fails is checked everywhere but where the crash cut the pivot off:
its outcome is unknown there, so the saga rightly ends FAILED for an operator instead of
compensating; those points are ``"excluded"`` (FAILED checked, effects not compared).

The participants' state must outlive a process (a file, a database): ``setup()``
resets it before each point, ``snapshot()`` reads it after recovery. Both run in the
calling process; a factory that returns a :class:`~sagaflow.testing.SagaCase` may carry
its own, run in the child that imported the factory. Each point gets a store of its own
(a SQLite file in a temporary folder, or a PostgreSQL schema, dropped afterwards).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import attrs

from ._crashchild import decode, encode
from .plan import FailurePlan

__all__ = ["CrashPoint", "CrashPointResult", "CrashPointsReport", "check_crash_points"]


@attrs.frozen
class CrashPoint:
    """A place a run of a plan is killed.

    ``kind`` is ``"checkpoint"`` (``when`` ``"before"`` it is written or ``"after"`` it
    committed; ``what``: the events it records), ``"effect"`` (``when`` ``"after"``:
    the function ``what``, ``"step:forward"`` or ``"step:compensate"``, returned, and no
    checkpoint records it yet) or ``"signal"`` (``when`` ``"before"`` or ``"after"``
    the row of signal ``what`` is stored, in its own transaction). ``occurrence``: the
    how-manieth time that ``what`` happens in the run (a retried step's second effect
    is occurrence 2). ``seq``: its position in the plan's run, from 1; ``checkpoint``:
    the number of the write (from 1, 0 for an effect or a signal).
    """

    plan: int
    plan_text: str
    seq: int
    kind: str
    when: str
    what: str
    occurrence: int = 1
    checkpoint: int = 0

    @property
    def name(self) -> str:
        """The point in words, without its plan."""
        again = f" (#{self.occurrence})" if self.occurrence > 1 else ""
        if self.kind == "effect":
            return f"after {self.what}{again} took effect, before its checkpoint"
        if self.kind == "signal":
            return f"{self.when} signal {self.what!r}{again} is stored"
        return f"{self.when} checkpoint {self.checkpoint} ({self.what}){again}"

    def __str__(self) -> str:
        return f"[{self.plan_text}] {self.seq}: {self.name}"


@attrs.frozen
class CrashPointResult:
    """What killing the run at ``point`` and recovering it gave.

    ``outcome``: ``"ok"``; ``"failed"`` (``problems`` says how); ``"not reached"``
    (this run ended without passing the point: a run whose points depend on timing,
    such as a parallel group's; not a failure); or ``"excluded"``: the crash cut the
    pivot off, which then failed, so its outcome is unknown and the saga rightly ends
    FAILED for an operator (checked) where an uninterrupted run compensates (the
    participants' state is not compared). ``status``: the saga's status after
    recovery. ``chain``: chained crashes (``depth`` above 1): the point each recovery
    in turn was killed at too (its ``plan`` and ``plan_text`` the run's, ``seq`` its
    place in that recovery's own run), before a last recovery ran to the end.
    """

    point: CrashPoint
    outcome: str
    status: str | None = None
    problems: tuple[str, ...] = ()
    seconds: float = 0.0
    chain: tuple[CrashPoint, ...] = ()

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"

    @property
    def recovery(self) -> CrashPoint | None:
        """The point the first recovery was killed at (a chained crash), if any."""
        return self.chain[0] if self.chain else None

    @property
    def where(self) -> str:
        """Where the run (and its recoveries) was killed, in words, with the plan."""
        return str(self.point) + "".join(
            f"; recovery{'' if n == 1 else f' {n}'} killed at {p.seq}: {p.name}"
            for n, p in enumerate(self.chain, 1)
        )


@attrs.frozen
class CrashPointsReport:
    """Every crash point of every plan, in run order, and what each gave."""

    saga: str
    store: str
    plans: tuple[str, ...]
    references: tuple[str, ...]  #: each plan's terminal status, uninterrupted
    points: tuple[CrashPointResult, ...]
    effects_checked: bool
    seconds: float
    #: why the effects were not checked ("" when they were): no snapshot, or the
    #: participants' state lives in the process (:data:`IN_PROCESS`)
    unchecked_because: str = ""

    @property
    def ok(self) -> bool:
        """Whether no point broke an invariant."""
        return not self.failures

    @property
    def failures(self) -> tuple[CrashPointResult, ...]:
        return tuple(r for r in self.points if not r.ok)

    @property
    def first_failure(self) -> CrashPointResult | None:
        """The earliest failing point in run order (plans in the order given): the one
        to debug first, as later ones often fail for the same reason."""
        failures = self.failures
        return failures[0] if failures else None

    def describe(self) -> str:
        """A table of every point, then what went wrong at each failing one."""
        failed = len(self.failures)
        head = (f"crash points of saga {self.saga!r} on {self.store}: {len(self.points)} "
                f"point(s), {failed} failed")
        if not self.effects_checked:
            why = self.unchecked_because or NO_SNAPSHOT
            head += f" (participants' effects not checked: {why.splitlines()[0]})"
        lines = [head + f", {self.seconds:.1f} s"]
        for i, (text, status) in enumerate(zip(self.plans, self.references, strict=True)):
            lines.append(f"plan {i}: {text} -> {status}")
        rows = [("plan", "#", "crash point", "after recovery", "result")]
        rows += [(str(r.point.plan), str(r.point.seq), _name(r), r.status or "-",
                  r.outcome) for r in self.points]
        widths = [max(len(row[c]) for row in rows) for c in range(5)]
        for row in rows:
            lines.append("  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip())
        excluded = [r for r in self.points if r.outcome == "excluded"]
        if excluded:
            lines.append(
                f"excluded: {len(excluded)} point(s) cut the pivot off, which then failed: "
                "its outcome is unknown, so the saga ends FAILED for an operator (checked) "
                "where an uninterrupted run compensates; the participants' state is not "
                "compared there"
            )
        first = self.first_failure
        if first is not None:
            lines.append(f"first failure: {first.where}")
            for r in self.failures:
                lines.append(f"- {r.where}:")
                lines += ["    " + line for p in r.problems for line in p.splitlines()]
        return "\n".join(lines)

    def assert_ok(self) -> None:
        """Raise ``AssertionError`` with :meth:`describe` unless every point passed."""
        if not self.ok:
            raise AssertionError(self.describe())


def _name(result: CrashPointResult) -> str:
    return result.point.name + "".join(
        f" / recovery{'' if n == 1 else f' {n}'} {p.seq}: {p.name}"
        for n, p in enumerate(result.chain, 1)
    )


def _factory_path(saga: str | Callable[..., Any]) -> str:
    """``"module:qualname"`` of ``saga``, checked to import back as itself."""
    if isinstance(saga, str):
        return saga
    module = getattr(saga, "__module__", None)
    qualname = getattr(saga, "__qualname__", None)
    if not callable(saga) or module is None or qualname is None or "<" in qualname:
        raise ValueError(
            f"check_crash_points needs a saga factory it can import in a child process: "
            f"a module-level class or function, or its 'module:callable' name; got {saga!r}"
        )
    if module == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is None:
            raise ValueError(
                f"{saga!r} is defined in a script: move it into a module, or name it "
                "as 'module:callable'"
            )
        module = spec.name
    return f"{module}:{qualname}"


class _Child:
    """The child that forks the runs (``python -m sagaflow.testing._crashchild``)."""

    def __init__(self, env: Mapping[str, str] | None, log: IO[str]) -> None:
        path = [p for p in sys.path if p] + [os.environ.get("PYTHONPATH", "")]
        environ = {**os.environ, **(env or {}),
                   "PYTHONPATH": os.pathsep.join(p for p in path if p)}
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sagaflow.testing._crashchild"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            env=environ, cwd=os.getcwd(),
        )

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the crash points' child process died:\n{self._tail()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            if reply.get("bad_input"):
                raise ValueError(reply["error"])
            raise RuntimeError(f"the crash points' child process failed: {reply['error']}\n"
                               f"{reply['traceback']}")
        return reply

    def _tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class _Stores:
    """A store of its own per point: a SQLite file in ``folder``, or a schema of the
    PostgreSQL database at ``url`` (dropped by :meth:`close`)."""

    def __init__(self, url: str | None, folder: Path) -> None:
        self.url = url
        self.folder = folder
        self.schemas: list[str] = []
        self.token = os.urandom(4).hex()
        if url is not None and not url.startswith(("postgresql://", "postgres://",
                                                     "postgresql+psycopg://")):
            raise ValueError(
                f"store must be a 'postgresql://...' URL (or None: a SQLite file per point), "
                f"got {url!r}"
            )

    @property
    def kind(self) -> str:
        return "SQLite" if self.url is None else "PostgreSQL"

    def new(self, name: str) -> str:
        if self.url is None:
            # a process killed with SIGKILL loses nothing a WAL commit wrote: only a
            # power cut needs FULL's fsync per commit, which would cost most of a point
            return f"sqlite:///{self.folder / name}.db?synchronous=NORMAL"
        schema = f"crash_{self.token}_{len(self.schemas)}"
        self.schemas.append(schema)
        base, _, query = self.url.partition("?")
        options = [(k, v) for k, v in urllib.parse.parse_qsl(query) if k != "schema"]
        options.append(("schema", schema))
        return f"{base}?{urllib.parse.urlencode(options)}"

    def close(self) -> None:
        if self.url is None or not self.schemas:
            return
        import psycopg
        from psycopg import sql

        base, _, query = self.url.partition("?")
        options = [(k, v) for k, v in urllib.parse.parse_qsl(query)
                   if k not in ("schema", "pool_size", "max_batch")]
        conninfo = f"{base}?{urllib.parse.urlencode(options)}" if options else base
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for schema in self.schemas:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(schema)))


def check_crash_points(
    saga: str | Callable[..., Any],
    *,
    kwargs: Mapping[str, Any] | None = None,
    snapshot: Callable[[], Any] | None = None,
    setup: Callable[[], Any] | None = None,
    plans: Iterable[FailurePlan[Any]] | None = None,
    store: str | None = None,
    saga_id: str = "crash-point",
    env: Mapping[str, str] | None = None,
    fail_fast: bool = False,
    timeout: float = 60.0,
    depth: int = 1,
) -> CrashPointsReport:
    """Kill a run of the saga at each crash point, recover it, check the saga and the world.

    ``saga``: what builds a fresh saga instance (or :class:`SagaCase`) in the child:
    ``"module:callable"``, or a module-level class or function (a saga class with
    defaults is one); called with ``kwargs`` (pickled to the child). ``snapshot()``
    reads the participants' state and ``setup()`` resets it, in this process (as
    :func:`assert_compensations_idempotent` takes them); the participants must keep it
    outside the process (a file, a database). ``plans``: the runs to crash (see the
    module's doc; default: nothing goes wrong, and one step fails so that every
    compensation runs). ``store``: ``None`` for a SQLite file per point, or a
    ``postgresql://`` URL (a schema per point, dropped afterwards). ``env``: more
    environment for the child (it gets this one's, and this ``sys.path``).
    ``fail_fast``: stop at the first failing point. ``timeout``: seconds a child may
    take before it is stopped (SIGALRM). ``depth=N`` (from 1): chained crashes too:
    after each point, the recovery is killed at each point of its own run in turn, and
    so on N-1 times, and a last recovery must still end right (a recovery must be as
    idempotent as the run). The runs multiply by about a recovery's points per level:
    a one-step saga's 7 points take 7, 39, 171 and 703 runs at depths 1 to 4 (3 s,
    13 s, 60 s, 6 min on a busy two-core machine).

    A saga with waits and timers runs on a virtual clock: the plan's ``signals=``
    (:class:`SignalPlan`) are sent as :func:`run_plan` sends them (``Arrival.EARLY``
    once the record is written, ``AT_WAIT`` once the saga parked there, ``LATE`` once
    its time ran out, ``NEVER``; ``twice``, ``another``, ``refused``), and again, same
    ids, by the recovery's sender after a crash; the clock moves to each timer's (or
    unanswered wait's) wake time; the points include each signal's row being stored.
    A failing pivot: see the module's doc (its unknown-outcome points are excluded).

    Returns the report; it raises nothing for failing points (see
    :meth:`CrashPointsReport.assert_ok`), only ``ValueError`` for bad input.
    """
    factory = _factory_path(saga)
    for name, fn in (("snapshot", snapshot), ("setup", setup)):
        if fn is not None and not callable(fn):
            raise ValueError(f"{name} must be a callable or None, got {fn!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth is a whole number from 1 (a crash per point; 2: and one "
                         f"at each point of each recovery, and so on), got {depth!r}")
    plan_list = None if plans is None else list(plans)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sagaflow-crash-") as folder, open(
        Path(folder) / "child.log", "w+", encoding="utf-8"
    ) as log:
        stores = _Stores(store, Path(folder))
        child = _Child(env, log)
        try:
            loaded = child.ask(op="load", factory=factory, kwargs=encode(dict(kwargs or {})),
                               plans=encode(plan_list), saga_id=saga_id, timeout=timeout)
            effects = snapshot is not None or bool(loaded["case_snapshot"])
            unchecked = "" if effects else NO_SNAPSHOT
            run = _Runner(child, stores, setup, snapshot, depth, fail_fast)
            results: list[CrashPointResult] = []
            references: list[str] = []
            for index, text in enumerate(loaded["plans"]):
                ref = run.reference(index, text, loaded["saga"], effects)
                if ref.lost:
                    effects = False
                    unchecked = f"{IN_PROCESS}\n{ref.lost}"
                references.append(ref.status)
                if any(run.down(point, ref, (), results) for point in ref.points):
                    break
        finally:
            child.close()
            stores.close()
    return CrashPointsReport(
        saga=loaded["saga"], store=stores.kind, plans=tuple(loaded["plans"]),
        references=tuple(references), points=tuple(results), effects_checked=effects,
        seconds=time.monotonic() - started, unchecked_because=unchecked,
    )


#: why a report's effects were not checked
NO_SNAPSHOT = "no snapshot of the participants"
IN_PROCESS = ("the participants' state did not outlive the process that ran the saga "
              "(kept in memory?): keep it in a file or a database, or the crash points "
              "cannot see what a crash does to it")


@attrs.frozen
class _Reference:
    status: str
    snapshot: Any
    points: tuple[CrashPoint, ...]
    has_snapshot: bool
    #: how the snapshot in the run's process differs from the one after it ended
    #: ("": no difference): the participants' state lives in the process
    lost: str = ""


class _Runner:
    def __init__(self, child: _Child, stores: _Stores, setup: Callable[[], Any] | None,
                 snapshot: Callable[[], Any] | None, depth: int, fail_fast: bool) -> None:
        self.child = child
        self.stores = stores
        self.setup = setup
        self.snapshot = snapshot
        self.depth = depth
        self.fail_fast = fail_fast

    def _go(self, plan: int, name: str, point: CrashPoint | None,
            chain: tuple[CrashPoint, ...] = (), census: bool = False
            ) -> tuple[dict[str, Any], Any]:
        if self.setup is not None:
            self.setup()
        reply = self.child.ask(op="point", plan=plan, store=self.stores.new(name),
                               point=_target(point), chain=[_target(p) for p in chain],
                               census=census)
        seen = decode(reply["snapshot"]) if reply["snapshot"] is not None else None
        if self.snapshot is not None:
            seen = self.snapshot()
        return reply, seen

    def reference(self, plan: int, text: str, saga: str, compare: bool = True
                  ) -> _Reference:
        """The plan's uninterrupted run; ``compare``: its effects are to be compared
        (they must outlive the process)."""
        reply, seen = self._go(plan, f"p{plan}-reference", None)
        if reply["exit"] != 0 or reply["run"] is None:
            raise RuntimeError(
                f"saga {saga!r} under plan {plan} ({text}) did not run to its end without "
                f"a crash (exit {reply['exit']}):\n{self.child._tail()}"
            )
        points = _points(plan, text, reply["run"]["points"])
        has = compare and (self.snapshot is not None or reply["snapshot"] is not None)
        inside = reply["run"].get("inside")
        lost = ""
        if has and inside is not None and decode(inside) != seen:
            # the effects died with the process that made them: every point would
            # compare the state before the run with itself, and pass
            has, lost = False, _differences(decode(inside), seen, (
                "in the process that ran the saga", "once it ended"))
        return _Reference(reply["run"]["status"], seen, points, has, lost)

    def down(self, point: CrashPoint, ref: _Reference, chain: tuple[CrashPoint, ...],
             results: list[CrashPointResult]) -> bool:
        """Crash ``point`` (each recovery killed at ``chain`` in turn), then, below
        ``depth``, each point of the last recovery's own run too, depth first, into
        ``results``; whether to stop (``fail_fast`` and a failure)."""
        census = len(chain) + 1 < self.depth
        name = f"p{point.plan}-{point.seq}" + "".join(f"-r{p.seq}" for p in chain)
        reply, seen = self._go(point.plan, name, point, chain, census)
        result = self._judge(point, chain, ref, reply, seen)
        results.append(result)
        if self.fail_fast and not result.ok:
            return True
        if not census or result.outcome == "not reached":
            return False
        below = _points(point.plan, point.plan_text,
                        (reply["recovery"] or {}).get("points") or [])
        return any(self.down(point, ref, (*chain, then), results) for then in below)

    def _judge(self, point: CrashPoint, chain: tuple[CrashPoint, ...], ref: _Reference,
               reply: dict[str, Any], seen: Any) -> CrashPointResult:
        seconds = reply["seconds"]
        if chain and reply["chain"] and not reply["chain"][-1] and (
            reply["recovery_exit"] == 0
        ):
            return CrashPointResult(point, "not reached", reply["recovery"]["status"], (),
                                    seconds, chain)
        if not reply["killed"]:
            if reply["exit"] == 0:
                status = None if reply["run"] is None else reply["run"]["status"]
                return CrashPointResult(point, "not reached", status, (), seconds, chain)
            return CrashPointResult(point, "failed", None, (
                f"the run ended with exit status {reply['exit']} before reaching the point "
                f"(see the traceback above in the child's stderr):\n{self.child._tail()}",
            ), seconds)
        recovery = reply["recovery"]
        if recovery is None:
            return CrashPointResult(point, "failed", None, (
                f"recovery crashed (exit status {reply.get('recovery_exit')}):\n"
                f"{self.child._tail()}",
            ), seconds, chain)
        problems: list[str] = []
        status = recovery["status"]
        if recovery["skipped"]:
            problems.append(f"recovery left the saga alone: {recovery['skipped']}")
        # the pivot cut off, then failed: FAILED for an operator, whatever the effects
        unknown = recovery["pivot_unknown"] and ref.status != "FAILED"
        if status != ref.status and not unknown:
            terminal = status in ("COMPLETED", "COMPENSATED", "FAILED")
            problems.append(
                f"the saga ended {status}, not {ref.status} as an uninterrupted run does"
                if terminal else
                f"the saga did not reach a terminal state after recovery: it is {status}"
            )
        if ref.has_snapshot and seen != ref.snapshot and not unknown:
            problems.append(
                "the participants' state differs from an uninterrupted run's (an effect "
                "ran twice, or not at all: is every step and compensation idempotent on "
                "ctx.idempotency_key?):\n" + _differences(ref.snapshot, seen)
            )
        outcome = "failed" if problems else "excluded" if unknown else "ok"
        return CrashPointResult(point, outcome, status, tuple(problems), seconds, chain)


def _points(plan: int, text: str, seen: list[dict[str, Any]]) -> tuple[CrashPoint, ...]:
    """The points a run (or a recovery) reported passing, in its order."""
    return tuple(
        CrashPoint(plan, text, seq, p["kind"], p["when"], p["what"], p["occurrence"],
                   p["checkpoint"])
        for seq, p in enumerate(seen, 1)
    )


def _target(point: CrashPoint | None) -> dict[str, Any] | None:
    """The point as the child's kill switch names it."""
    if point is None:
        return None
    return {"kind": point.kind, "when": point.when, "what": point.what,
            "occurrence": point.occurrence}


def _differences(expected: Any, got: Any,
                 said: tuple[str, str] = ("without a crash", "after this one")) -> str:
    """How the snapshot after a crash differs from the uninterrupted run's (key by key
    for dicts); ``said``: what each of the two is."""
    first, second = said
    if isinstance(expected, dict) and isinstance(got, dict):
        keys = list(expected) + [k for k in got if k not in expected]
        return "\n".join(
            f"{k!r}: {expected.get(k, '<missing>')!r} {first}, "
            f"{got.get(k, '<missing>')!r} {second}"
            for k in keys if expected.get(k, "<missing>") != got.get(k, "<missing>")
        )
    return f"{first}: {expected!r}\n{second}: {got!r}"

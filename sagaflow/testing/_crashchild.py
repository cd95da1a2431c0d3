"""The process :func:`sagaflow.testing.check_crash_points` talks to, and the ones it kills.

Run as ``python -m sagaflow.testing._crashchild``; reads one JSON request a line on stdin,
answers one JSON line each on the stdout it was started with (whatever the user's code
prints goes to stderr). It imports the user's saga factory once and opens nothing; for
each crash point it forks a process that runs the saga and SIGKILLs itself at the
point, then forks a fresh process that recovers the saga (``Orchestrator.recover``, or
``arecover`` for async sagas). Forking from a process that has imported everything makes
each of those processes cost milliseconds instead of an interpreter start; neither
inherits any saga state, store or connection.

Requests: ``{"op": "load", "factory", "kwargs", "plans", "saga_id", "timeout"}`` (pickled
values base64-encoded) and ``{"op": "point", "plan", "store", "point", "chain",
"census"}`` (``point`` ``null``: the reference run, which lists the crash points it
passed; ``chain``: the points recoveries are killed at in turn; ``census``: the last
recovery lists its points). Each process takes a waiting saga to its end as the plan
says (:func:`_settle`).

How a point is reached: the saga runs on a *shadow* spec (:meth:`Orchestrator.spec_for`
and :meth:`Orchestrator.drive`, the seam the toolkit's harness uses too) whose step and
compensation functions are wrapped: after the user's function returns, its effect is
done and no checkpoint records it yet (an ``effect`` point). The store's ``create`` and
``save`` (and their async twins) are wrapped on the instance: before a checkpoint is
written, and after it committed (``checkpoint`` points). A point is named by what
happens there and how many times that happened before, so it is the same point in
every run of the plan. The plan's injected failures (a step that raises or rejects for
good, transient failures, compensations that fail) are raised by the same wrappers,
before the user's function runs: a call that raises took no effect.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import json
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any, TextIO

import attrs

from ..context import Direction, StepContext
from ..engine import new_record
from ..errors import SagaRejected, SignalRefused
from ..orchestrator import Orchestrator
from ..records import SagaRecord
from ..spec import SagaSpec, StepKind, spec_of
from ..stores import open_store
from ..stores.base import Store
from .clock import VirtualClock
from .harness import UNFIT_PAYLOAD
from .plan import Arrival, FailurePlan, Fault, InjectedFault, SagaCase, SignalPlan

#: the clock's start in every process: the run and its recovery read the same times
_EPOCH = 1_700_000_000.0


def encode(value: Any) -> str:
    """A value as text for a JSON line (pickled, base64)."""
    return base64.b64encode(pickle.dumps(value)).decode("ascii")


def decode(text: str) -> Any:
    """What :func:`encode` made."""
    return pickle.loads(base64.b64decode(text))


def resolve(path: str) -> Callable[..., Any]:
    """The callable named ``"package.module:attr.attr"``."""
    module_name, colon, attr = path.partition(":")
    if not colon or not module_name or not attr:
        raise ValueError(
            f"a saga factory is named 'module:callable' (e.g. 'shop.sagas:Order'), got {path!r}"
        )
    found: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        found = getattr(found, part)
    if not callable(found):
        raise ValueError(f"{path!r} names {found!r}, which is not callable")
    return found  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the kill switch


class Switch:
    """Where this process dies (``target``), and, in the reference run, every point it
    passes (``seen``). A point is ``{"kind", "when", "what", "occurrence"}``."""

    def __init__(self, target: dict[str, Any] | None = None, census: bool = False) -> None:
        self.target = target
        self.seen: list[dict[str, Any]] | None = [] if census else None
        self.counts: Counter[tuple[str, str]] = Counter()
        self.told: dict[str, int] = {}
        self.lock = threading.Lock()  # group members run on threads

    def next(self, kind: str, what: str) -> int:
        with self.lock:
            self.counts[(kind, what)] += 1
            return self.counts[(kind, what)]

    def at(self, kind: str, when: str, what: str, occurrence: int, n: int = 0) -> None:
        if self.seen is not None:
            with self.lock:
                self.seen.append({"kind": kind, "when": when, "what": what,
                                  "occurrence": occurrence, "checkpoint": n})
        t = self.target
        if t is not None and (t["kind"], t["when"], t["what"], t["occurrence"]) == (
            kind, when, what, occurrence
        ):
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # pragma: no cover - the signal is delivered at once

    def events(self, record: SagaRecord, fresh: bool) -> str:
        """What the checkpoint about to be written records: the events added since the
        last one (the whole history for the first)."""
        with self.lock:
            start = 0 if fresh else self.told.get(record.saga_id, 0)
            if start > len(record.history):
                start = 0
            self.told[record.saga_id] = len(record.history)
        new = record.history[start:]
        names = [f"{type(e).__name__} {e.step}" if getattr(e, "step", None)
                 else type(e).__name__ for e in new]
        return ", ".join(names) or "no new event"


SWITCH = Switch()
_writes = 0


def _checkpoint(what: str, do: Callable[[], Any]) -> Any:
    global _writes
    _writes += 1
    n = _writes
    occurrence = SWITCH.next("checkpoint", what)
    SWITCH.at("checkpoint", "before", what, occurrence, n)
    result = do()
    SWITCH.at("checkpoint", "after", what, occurrence, n)
    return result


async def _acheckpoint(what: str, do: Callable[[], Any]) -> Any:
    global _writes
    _writes += 1
    n = _writes
    occurrence = SWITCH.next("checkpoint", what)
    SWITCH.at("checkpoint", "before", what, occurrence, n)
    result = await do()
    SWITCH.at("checkpoint", "after", what, occurrence, n)
    return result


def _stored(name: str, do: Callable[[], Any]) -> Any:
    """A signal's row written (its own transaction, not a checkpoint of the saga's)."""
    occurrence = SWITCH.next("signal", name)
    SWITCH.at("signal", "before", name, occurrence)
    result = do()
    SWITCH.at("signal", "after", name, occurrence)
    return result


def watch_writes(store: Store) -> Store:
    """``store`` with its checkpoint writes and signal rows going through
    :data:`SWITCH` (the methods wrapped on this instance only: any store class works)."""
    create, save = store.create, store.save
    acreate, asave = store.acreate, store.asave

    def w_create(record: SagaRecord, *a: Any, **kw: Any) -> Any:
        return _checkpoint(SWITCH.events(record, True), lambda: create(record, *a, **kw))

    def w_save(record: SagaRecord, *a: Any, **kw: Any) -> Any:
        return _checkpoint(SWITCH.events(record, False), lambda: save(record, *a, **kw))

    async def w_acreate(record: SagaRecord, *a: Any, **kw: Any) -> Any:
        return await _acheckpoint(SWITCH.events(record, True),
                                  lambda: acreate(record, *a, **kw))

    async def w_asave(record: SagaRecord, *a: Any, **kw: Any) -> Any:
        return await _acheckpoint(SWITCH.events(record, False),
                                  lambda: asave(record, *a, **kw))

    add_signal, aadd_signal = store.add_signal, store.aadd_signal
    inside: list[bool] = []  # a store's async twin may call its sync one: one point

    def w_add_signal(saga_id: str, name: str, *a: Any, **kw: Any) -> Any:
        if inside:
            return add_signal(saga_id, name, *a, **kw)
        return _stored(name, lambda: add_signal(saga_id, name, *a, **kw))

    async def w_aadd_signal(saga_id: str, name: str, *a: Any, **kw: Any) -> Any:
        occurrence = SWITCH.next("signal", name)
        SWITCH.at("signal", "before", name, occurrence)
        inside.append(True)
        try:
            result = await aadd_signal(saga_id, name, *a, **kw)
        finally:
            inside.pop()
        SWITCH.at("signal", "after", name, occurrence)
        return result

    store.add_signal = w_add_signal  # type: ignore[method-assign]
    store.aadd_signal = w_aadd_signal  # type: ignore[method-assign]
    store.create = w_create  # type: ignore[method-assign]
    store.save = w_save  # type: ignore[method-assign]
    store.acreate = w_acreate  # type: ignore[method-assign]
    store.asave = w_asave  # type: ignore[method-assign]
    return store


# --------------------------------------------------------------------------- the shadow spec


def _inject(plan: FailurePlan[Any], direction: Direction, ctx: StepContext) -> None:
    """Raise what ``plan`` makes this call raise (before the user's function: no effect)."""
    name = ctx.step
    if direction is Direction.FORWARD:
        if ctx.attempt <= plan.transient_failures(name):
            raise InjectedFault(f"injected: {name} fails attempt {ctx.attempt}")
        fault = plan.fault_of(name)
        if fault is Fault.REJECTS:
            raise SagaRejected(f"injected: {name} rejects the saga")
        if fault is Fault.RAISES:
            raise InjectedFault(f"injected: {name} fails for good")
    else:
        if plan.compensation_always_fails(name) or ctx.attempt <= plan.compensation_failures(
            name
        ):
            raise InjectedFault(f"injected: {name}'s compensation fails attempt {ctx.attempt}")


def _wrap(fn: Callable[..., Any], direction: Direction, is_async: bool,
          plan: FailurePlan[Any]) -> Callable[..., Any]:
    if is_async:

        async def acall(saga: Any, *args: Any) -> Any:
            ctx: StepContext = args[-1]  # a fan-out's call: (saga, item, ctx)
            what = f"{ctx.step}:{direction.value}"
            _inject(plan, direction, ctx)
            result = await fn(saga, *args)
            SWITCH.at("effect", "after", what, SWITCH.next("effect", what))
            return result

        return acall

    def call(saga: Any, *args: Any) -> Any:
        ctx: StepContext = args[-1]
        what = f"{ctx.step}:{direction.value}"
        _inject(plan, direction, ctx)
        result = fn(saga, *args)
        SWITCH.at("effect", "after", what, SWITCH.next("effect", what))
        return result

    return call


def shadow(spec: SagaSpec, plan: FailurePlan[Any]) -> SagaSpec:
    """``spec`` with every step and compensation wrapped (same fingerprint)."""
    steps = []
    for s in spec.steps:
        fn = _wrap(s.fn, Direction.FORWARD, s.is_async, plan)
        comp = None if s.compensation is None else _wrap(
            s.compensation, Direction.COMPENSATE, s.compensation_is_async, plan
        )
        steps.append(attrs.evolve(s, fn=fn, compensation=comp))
    return attrs.evolve(spec, steps=tuple(steps), forward=tuple(s.fn for s in steps),
                        compensations=tuple(s.compensation for s in steps))


class ShadowOrchestrator(Orchestrator):
    """Runs and recovers the saga on its shadow spec."""

    def __init__(self, store: Store, spec: SagaSpec) -> None:
        super().__init__(store, sagas=[spec.cls], clock=VirtualClock(_EPOCH), rand=lambda: 0.5)
        self.shadow = spec

    def spec_for(self, record: SagaRecord) -> SagaSpec:
        if record.saga_name == self.shadow.name:
            return self.shadow
        return super().spec_for(record)


# --------------------------------------------------------------------------- plans


_UNSUPPORTED = ("effect", "transient_effect", "compensation_effect", "deadline",
                "cut", "cut_effect", "order")


def check_plan(plan: Any, spec: SagaSpec) -> FailurePlan[Any]:
    """``plan`` if crash points can run it, else a ``ValueError`` naming what does not fit."""
    if not isinstance(plan, FailurePlan):
        raise ValueError(f"plans holds FailurePlan values, got {plan!r}")
    plan.validate(spec)
    default: FailurePlan[Any] = FailurePlan()
    odd = [name for name in _UNSUPPORTED if getattr(plan, name) != getattr(default, name)]
    if plan.step is not None and plan.fault not in (Fault.RAISES, Fault.REJECTS):
        odd.append(f"fault={plan.fault!r}")
    if plan.transient and plan.transient_fault is not Fault.RAISES:
        odd.append(f"transient_fault={plan.transient_fault!r}")
    odd += [f"faults[{n!r}]={f!r}" for n, f in plan.faults
            if f not in (Fault.RAISES, Fault.REJECTS)]
    if odd:
        raise ValueError(
            f"{plan!r}: crash points run a plan's steps and compensations that raise or "
            f"reject (step=, transient=, compensation_transient=, compensation_fails=, "
            f"faults= with Fault.RAISES or Fault.REJECTS) and its signals (signals=), not "
            f"{', '.join(odd)}: drop them (timeouts, cancellations, deadlines and effects "
            "cut short are run_plan's)"
        )
    return plan


def default_plans(spec: SagaSpec) -> list[FailurePlan[Any]]:
    """Nothing goes wrong; and, if the saga has compensations, the latest step before
    the pivot fails for good, so that every compensation before it runs."""
    plans: list[FailurePlan[Any]] = [FailurePlan()]
    end = len(spec.steps) if spec.pivot_index is None else spec.pivot_index
    for s in reversed(spec.steps[:end]):
        if s.wait is not None or s.kind is StepKind.RETRIABLE:
            continue
        if any(p.compensation is not None for p in spec.steps[: s.index]
               if p.group is None or p.group != s.group):
            plans.append(FailurePlan(step=s.name))
        break
    return plans


# --------------------------------------------------------------------------- the processes


class Subject:
    """The user's saga: its factory, plans and shadow specs (one per plan)."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.factory = resolve(request["factory"])
        self.kwargs: dict[str, Any] = decode(request["kwargs"])
        self.saga_id: str = request["saga_id"]
        self.timeout = int(max(1, request["timeout"]))
        case = self.make()
        self.spec = spec_of(case.saga)
        given = decode(request["plans"])
        waits = [s.name for s in self.spec.steps if s.wait is not None and s.wait.signal]
        if given is None and waits:
            raise ValueError(
                f"saga {self.spec.name!r} waits ({', '.join(waits)}): crash points do not "
                "cover waits without plans that say what each one receives: give plans=["
                f"FailurePlan(signals=[SignalPlan({waits[0]!r}, payload)])] (or "
                "arrives=Arrival.NEVER: its time runs out)"
            )
        plans = default_plans(self.spec) if given is None else list(given)
        if not plans:
            raise ValueError("plans is empty: give at least one FailurePlan (or None)")
        self.plans = [check_plan(p, self.spec) for p in plans]
        self.shadows = [shadow(self.spec, p) for p in self.plans]
        self.has_snapshot = case.snapshot is not None

    def make(self) -> SagaCase:
        try:
            made = self.factory(**self.kwargs)
        except TypeError as exc:
            raise ValueError(
                f"calling the saga factory {self.factory!r} with kwargs {self.kwargs!r} "
                f"failed: {exc}: give kwargs=... or a factory that builds the saga"
            ) from exc
        if isinstance(made, SagaCase):
            return made
        try:
            return SagaCase(made)
        except TypeError:
            raise ValueError(
                f"the saga factory {self.factory!r} returned {made!r}: it must return a "
                "saga instance (a class decorated with @saga) or a SagaCase"
            ) from None

    def loaded(self) -> dict[str, Any]:
        return {"saga": self.spec.name, "plans": [p.describe() for p in self.plans],
                "case_snapshot": self.has_snapshot}


def fork(work: Callable[[], Any], timeout: int) -> tuple[Any, int]:
    """Run ``work`` in a forked process; what it returned (JSON through a pipe:
    ``None`` if it died first) and how it ended (its exit status, 3 if it raised, or
    minus the signal that ended it). ``timeout``: seconds before SIGALRM ends it.
    (sagaflow's own crash tests fork their jobs with it too.)"""
    sys.stdout.flush()
    sys.stderr.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        code = 0
        try:
            signal.alarm(timeout)  # a hang ends the process, never the caller
            report = work()
            with os.fdopen(write, "w", encoding="utf-8") as out:
                json.dump(report, out)
        except BaseException:
            traceback.print_exc()
            code = 3
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    with os.fdopen(read, encoding="utf-8") as reported:
        text = reported.read()  # to its end: the child's exit (or death) closes it
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    return (json.loads(text) if text else None), code


def _sends(spec: SagaSpec, p: SignalPlan, saga_id: str) -> list[tuple[str, Any, str]]:
    """What the plan ``p`` sends to its wait, in order, as ``(name, payload, signal_id)``
    (as :func:`~sagaflow.testing.run_plan` does): a payload that does not fit first
    (``refused``: refused, nothing stored), the signal, the same again (``twice``),
    another one of its own id (``another``). Fixed ids, so whatever a crash makes the
    sender send again is a duplicate."""
    wait = spec.step(p.step).wait
    assert wait is not None and wait.signal is not None
    name, sid = wait.signal, f"{saga_id}/{p.step}"
    out = [(name, UNFIT_PAYLOAD, f"{sid}/unfit")] if p.refused else []
    if p.sends:
        out += [(name, p.payload, sid)] * (2 if p.twice else 1)
        out += [(name, p.payload, f"{sid}/2")] if p.another else []
    return out


def _send(orch: Orchestrator, is_async: bool, saga_id: str,
          sends: list[tuple[str, Any, str]]) -> None:
    """Send each of ``sends``; a refusal (a payload that does not fit, a saga that has
    finished) is what the plan means to happen, and stores nothing."""
    for name, payload, sid in sends:
        with contextlib.suppress(SignalRefused):
            _call(orch, is_async, "signal", saga_id, name, payload, signal_id=sid)


def _early(orch: ShadowOrchestrator, plan: FailurePlan[Any], saga_id: str) -> None:
    """Send the signals the plan sends before the saga reaches their waits (in the
    order of the waits), the saga's record being there."""
    spec = orch.shadow
    for s in spec.steps:
        p = plan.signal_plan(s.name)
        if p is not None and p.arrives is Arrival.EARLY:
            _send(orch, spec.is_async, saga_id, _sends(spec, p, saga_id))


def _start(orch: ShadowOrchestrator, spec: SagaSpec, saga: Any, saga_id: str,
           plan: FailurePlan[Any]) -> str:
    """Run ``saga`` under ``saga_id`` on the shadow spec, as ``Orchestrator.run`` does,
    its early signals sent once its record is written; its status."""
    record = new_record(spec, saga, saga_id, orch.clock.now())
    if spec.is_async:

        async def go() -> str:
            existing = await orch.store.acreate(record)
            if existing is not None:
                return str(existing.status.value)
            for s in spec.steps:
                p = plan.signal_plan(s.name)
                if p is not None and p.arrives is Arrival.EARLY:
                    for name, payload, sid in _sends(spec, p, saga_id):
                        with contextlib.suppress(SignalRefused):
                            await orch.asignal(saga_id, name, payload, signal_id=sid)
            return (await orch.adrive(spec, record)).status.value

        return asyncio.run(go())
    existing = orch.store.create(record)
    if existing is not None:
        return existing.status.value
    _early(orch, plan, saga_id)
    return orch.drive(spec, record).status.value


def _call(orch: Orchestrator, is_async: bool, name: str, *args: Any, **kw: Any) -> Any:
    """``orch.name(...)``, or for an async saga ``orch.aname(...)`` run to its end."""
    if is_async:
        return asyncio.run(getattr(orch, "a" + name)(*args, **kw))
    return getattr(orch, name)(*args, **kw)


def _settle(orch: ShadowOrchestrator, plan: FailurePlan[Any], saga_id: str) -> str:
    """Take the parked saga to its end as the plan says, as a sender that does not know
    about the crash would, each process sending each wait's signals once (:func:`_sends`;
    same ids in a recovery, so what was stored already is a duplicate): a wait the plan
    sends to while it waits gets them once it started (what came after the first, such
    as ``another``, is sent again too in a recovery of a saga that moved on); one whose
    signal comes late, once its time ran out and the saga moved on (parked again or
    ended); a payload that does not fit goes while its wait waits. A wait that gets
    nothing, and a timer, have the clock moved to their wake time and are resumed. The
    saga's status at the end."""
    spec = orch.shadow
    done: set[tuple[str, str]] = set()  # (wait, "sent" | "late" | "unfit") this process did
    for _ in range(10 * len(spec.steps) + 10):
        record = orch.store.load(saga_id)
        if record is None:
            break
        seen = {(type(e).__name__, e.step) for e in record.history}
        due = [(p, "late" if p.arrives is Arrival.LATE else "sent") for p in plan.signals
               if (p.arrives is Arrival.AT_WAIT and ("WaitStarted", p.step) in seen)
               or (p.arrives is Arrival.LATE and ("WaitExpired", p.step) in seen)]
        due = [(p, how) for p, how in due if (p.step, how) not in done]
        if due:  # to the saga waiting, or moved on: kept, or refused once it finished
            for p, how in due:
                done.add((p.step, how))
                _send(orch, spec.is_async, saga_id, [
                    s for s in _sends(spec, p, saga_id)
                    if how == "sent" or s[1] is not UNFIT_PAYLOAD])
            continue
        if record.status.is_terminal:
            break
        orch.clock.advance_to(max(e.at for e in record.history))  # type: ignore[attr-defined]
        # a signal stored before a crash, or a timer already due, is taken here
        if _call(orch, spec.is_async, "resume_due"):
            continue
        started = [e.step for e in record.history
                   if type(e).__name__ == "WaitStarted" and e.step is not None]
        wanted = None if not record.waiting or not started else plan.signal_plan(started[-1])
        if wanted is not None and wanted.refused and not wanted.arrives.delivers and (
            (wanted.step, "unfit") not in done
        ):
            done.add((wanted.step, "unfit"))
            _send(orch, spec.is_async, saga_id, _sends(spec, wanted, saga_id)[:1])
        if record.wake_at is None:
            break  # neither parked nor finished: the caller reports its status
        orch.clock.advance_to(record.wake_at)  # type: ignore[attr-defined]
        _call(orch, spec.is_async, "resume_due")
    record = orch.store.load(saga_id)
    return "NOT STARTED" if record is None else record.status.value


def _run(subject: Subject, plan: int, store_url: str, case: SagaCase,
         target: dict[str, Any] | None) -> dict[str, Any]:
    global SWITCH
    SWITCH = Switch(target, census=target is None)
    spec = subject.shadows[plan]
    store = watch_writes(open_store(store_url))
    orch = ShadowOrchestrator(store, spec)
    _start(orch, spec, case.saga, subject.saga_id, subject.plans[plan])
    status = _settle(orch, subject.plans[plan], subject.saga_id)
    _close(orch)
    # The uninterrupted run's snapshot, taken in the process that made the effects: the
    # parent compares it with one taken after this process ended, to tell participants
    # whose state dies with the process (nothing a crash does could be seen).
    inside = None if target is not None or case.snapshot is None else encode(case.snapshot())
    return {"status": status, "points": SWITCH.seen, "inside": inside}


def _recover(subject: Subject, plan: int, store_url: str, target: dict[str, Any] | None,
             census: bool) -> dict[str, Any]:
    """Recover the saga in this (fresh) process and take it to its end as the run
    would have; killed at ``target`` if it gets there; ``census``: list its points.
    The plan's early signals are sent again first (their sender may have been cut off
    too). ``pivot_unknown``: the saga ended FAILED as its pivot, cut off by a crash,
    then failed: an outcome the engine cannot know, held for an operator."""
    global SWITCH
    SWITCH = Switch(target, census=census)
    spec = subject.shadows[plan]
    orch = ShadowOrchestrator(watch_writes(open_store(store_url)), spec)
    found = orch.store.load(subject.saga_id)
    if found is not None:  # recover at the time the last checkpoint was written
        orch.clock.advance_to(max(e.at for e in found.history))  # type: ignore[attr-defined]
        SWITCH.told[found.saga_id] = len(found.history)  # name its points by what is new
        _early(orch, subject.plans[plan], subject.saga_id)
    report = asyncio.run(orch.arecover()) if spec.is_async else orch.recover()
    rerun = orch.store.load(subject.saga_id) is None
    if rerun:  # killed before its record was written: the caller runs it again, same id
        _start(orch, spec, subject.make().saga, subject.saga_id, subject.plans[plan])
    status = _settle(orch, subject.plans[plan], subject.saga_id)
    final = orch.store.load(subject.saga_id)
    pivot = spec.pivot_index
    unknown = (final is not None and pivot is not None and status == "FAILED"
               and final.steps[pivot].timed_out)
    _close(orch)
    return {"status": status, "rerun": rerun, "points": SWITCH.seen,
            "pivot_unknown": unknown,
            "skipped": {sid: str(err) for sid, err in report.skipped.items()}}


def _close(orch: Orchestrator) -> None:
    orch.close()
    close = getattr(orch.store, "close", None)
    if close is not None:
        close()


def point(subject: Subject, request: dict[str, Any]) -> dict[str, Any]:
    """One crash point (or, ``point`` null, the reference run): run, kill, recover.
    ``chain``: points each recovery in turn is killed at (a chained crash) before one
    runs to its end; ``census``: that last recovery lists the points it passed."""
    plan, url, target = request["plan"], request["store"], request["point"]
    chain = request.get("chain") or []
    census = bool(request.get("census"))
    case = subject.make()
    if case.setup is not None:
        case.setup()
    started = time.monotonic()
    ran, code = fork(lambda: _run(subject, plan, url, case, target), subject.timeout)
    killed = code == -signal.SIGKILL
    reply: dict[str, Any] = {"run": ran, "exit": code, "killed": killed, "recovery": None,
                             "chain": []}
    if killed:
        for then in chain:
            def again(t: dict[str, Any] = then) -> dict[str, Any]:
                return _recover(subject, plan, url, t, False)

            recovered, rcode = fork(again, subject.timeout)
            reply["chain"].append(rcode == -signal.SIGKILL)
            if rcode != -signal.SIGKILL:  # it ended without reaching its point
                reply["recovery"] = recovered
                reply["recovery_exit"] = rcode
                break
        else:
            recovered, rcode = fork(lambda: _recover(subject, plan, url, None, census),
                                    subject.timeout)
            reply["recovery"] = recovered
            reply["recovery_exit"] = rcode
    reply["snapshot"] = None if case.snapshot is None else encode(case.snapshot())
    reply["seconds"] = round(time.monotonic() - started, 4)
    return reply


def serve(requests: TextIO, answers: TextIO) -> None:
    subject: Subject | None = None
    for line in requests:
        request = json.loads(line)
        try:
            if request["op"] == "load":
                subject = Subject(request)
                reply = subject.loaded()
            else:
                assert subject is not None, "load before point"
                reply = point(subject, request)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}",
                     "bad_input": isinstance(exc, ValueError),
                     "traceback": traceback.format_exc()}
        answers.write(json.dumps(reply) + "\n")
        answers.flush()


def main() -> None:
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # the user's prints go to stderr, never into the answers
    sys.stdout = sys.stderr
    serve(sys.stdin, answers)


if __name__ == "__main__":
    main()

"""Running a choreography under a :class:`~sagaflow.testing.DeliveryPlan`: the flow's
start events published, the outbox relayed, every message handed to every participant
as the plan says, on real stores (and a real Redis with ``redis_url=``), on a virtual
clock; what happened is a :class:`~sagaflow.testing.ChoreographyRun`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import attrs

from ..choreography import Participant, UnknownInstance, message_for
from ..choreography import choreography_of as _chor_of
from ..context import Direction
from ..messages import Message
from ..orchestrator import Orchestrator
from ..outbox import Relay
from ..records import SagaRecord
from ..runtime import Threads
from ..spec import SagaSpec, spec_of
from ..stores import MemoryStore, OutboxStore
from .choreography import (
    COMPENSATE,
    FORWARD,
    MAX_DEADLINE_ROUNDS,
    WORKER,
    ChoreoCall,
    ChoreographyCase,
    ChoreographyTrace,
    Delivered,
    Delivery,
    DeliveryPlan,
    Parked,
    ProcessDied,
    Published,
    Sent,
    event_types,
)
from .choreography_invariants import check_choreography
from .clock import VirtualClock
from .plan import InjectedFault

__all__ = [
    "ChoreographyRun",
    "run_choreography",
]


@attrs.frozen(eq=False)
class ChoreographyRun(ChoreographyTrace):
    """One run of a choreography under a plan (a :class:`ChoreographyTrace`) that checks
    itself: ``run_choreography(case, plan).check()``."""

    def check(self, only: Iterable[int] | None = None) -> ChoreographyRun:
        """:func:`~sagaflow.testing.check_choreography` on this run; returns it."""
        check_choreography(self, only=only)
        return self
# --- running ----------------------------------------------------------------------------


class _Injector:
    """The shadow spec: the flow's functions wrapped to inject the plan's faults and
    record every call, whoever makes it (``who``: set by the runner)."""

    def __init__(self, spec: SagaSpec, plan: DeliveryPlan) -> None:
        self.spec = spec
        self.plan = plan
        self.who = WORKER
        self.calls: list[ChoreoCall] = []
        self._counts: dict[tuple[str, str, Direction], int] = {}
        self._crashed: set[tuple[str, str, Direction]] = set()
        steps = []
        for s in spec.steps:
            comp = None if s.compensation is None else self._wrap(s.name, COMPENSATE,
                                                                   s.compensation)
            steps.append(attrs.evolve(s, fn=self._wrap(s.name, FORWARD, s.fn), compensation=comp))
        self.shadow = attrs.evolve(
            spec, steps=tuple(steps), forward=tuple(s.fn for s in steps),
            compensations=tuple(s.compensation for s in steps),
        )

    def _wrap(self, step: str, direction: Direction, fn: Callable[..., Any]) -> Any:
        plan = self.plan
        forward = direction is FORWARD
        transient = dict(plan.transient if forward else plan.compensation_transient).get(step, 0)
        crash = dict(plan.crash).get(step) if forward else (
            True if step in plan.compensation_crash else None)
        fails = forward and plan.fails == step

        def call(data: Any, ctx: Any) -> None:
            key = (ctx.saga_id, step, direction)
            n = self._counts[key] = self._counts.get(key, 0) + 1
            rec = ChoreoCall(len(self.calls) + 1, self.who, ctx.saga_id, step, direction,
                             ctx.attempt, ctx.idempotency_key)
            self.calls.append(rec)
            if fails or (forward and n <= transient):
                rec.injected = "raises"
                rec.error = InjectedFault(f"injected: {step} ({'for good' if fails else n})")
                raise rec.error
            # only a participant dies: the worker's deadline compensation is not planned
            dies = crash is not None and key not in self._crashed and self.who != WORKER
            if dies and not crash:
                self._crashed.add(key)
                rec.injected = "crash"
                raise ProcessDied(f"{self.who} dies in {step}")
            try:
                fn(data, ctx)
            except Exception as exc:
                rec.error = exc
                raise
            rec.effect = True
            if dies:
                self._crashed.add(key)
                rec.injected = "crash+effect"
                raise ProcessDied(f"{self.who} dies in {step}, after its effect")
            if not forward and n <= transient:
                rec.injected = "lost reply"
                rec.error = InjectedFault(f"injected: undoing {step} took effect, reply lost")
                raise rec.error
            rec.ok = True

        call.__name__ = getattr(fn, "__name__", step)
        call.__qualname__ = getattr(fn, "__qualname__", step)
        return call


class _Orchestrator(Orchestrator):
    """An orchestrator that runs the flow on the shadow spec (its participants do, and
    the worker that resumes it at its deadline)."""

    def __init__(self, store: Any, shadow: SagaSpec, clock: VirtualClock) -> None:
        super().__init__(store, clock=clock, rand=lambda: 0.5)
        self.shadow = shadow

    def spec_for(self, record: SagaRecord) -> SagaSpec:
        if record.saga_name == self.shadow.name:
            super().spec_for(record)  # a changed definition is still refused
            return self.shadow
        return super().spec_for(record)


class _Network:
    """Between the publishers and the transport: applies the plan's deliveries to each
    message the first time it is published."""

    def __init__(self, run: _Runner) -> None:
        self.run = run
        self.seen: set[str] = set()
        self.after_next: list[tuple[Message, str]] = []
        self.after_deadline: list[Message] = []
        self.lost: list[Message] = []

    def publish(self, messages: Sequence[Message], hows: Sequence[str]) -> None:
        out: list[tuple[Message, str]] = []
        held, self.after_next = self.after_next, []
        fresh = False
        for m, how in zip(messages, hows, strict=True):
            event = self.run.event_name(m)
            self.run.published.append(Published(m.id, event, m.saga_id, m.body, how))
            if m.id in self.seen:
                out.append((m, how))
                continue
            self.seen.add(m.id)
            fresh = True
            d = self.run.plan.delivery(event)
            if d is Delivery.NEVER:
                self.lost.append(m)
            elif d is Delivery.AFTER_DEADLINE:
                self.after_deadline.append(m)
            elif d is Delivery.OUT_OF_ORDER:
                self.after_next.append((m, d.value))
            else:
                out.append((m, how))
                if d is Delivery.TWICE:
                    out.append((m, d.value))
                elif d is Delivery.LATE:
                    self.after_next.append((m, d.value))
        if fresh:
            out += held  # what waited for the next message comes after it
        else:
            self.after_next = held + self.after_next
        self.send(out)

    def send(self, items: Sequence[tuple[Message, str]]) -> None:
        for m, how in items:
            self.run.sent.append(Sent(m.id, self.run.event_name(m), how))
        if items:
            self.run.transport.send([m for m, _ in items])

    def release_held(self) -> bool:
        """Send what waited for a next message that never came; whether anything went."""
        held, self.after_next = self.after_next, []
        self.send(held)
        return bool(held)

    def release_late(self) -> bool:
        held, self.after_deadline = self.after_deadline, []
        self.send([(m, Delivery.AFTER_DEADLINE.value) for m in held])
        return bool(held)

    def withheld(self, saga_id: str, start_ids: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(m.id for m in (*self.lost, *self.after_deadline)
                     if m.saga_id == saga_id or start_ids.get(m.id) == saga_id)


class _Memory:
    """The in-process transport: one queue per participant (its own consumer group);
    a message whose participant died is delivered to it again first."""

    name = "memory"

    def __init__(self, run: _Runner) -> None:
        self.run = run
        self.queues: dict[str, list[Message]] = {n: [] for n in run.names}

    def send(self, messages: Sequence[Message]) -> None:
        for q in self.queues.values():
            q.extend(messages)

    def round(self) -> int:
        moved = 0
        for name, q in self.queues.items():
            if q:
                m = q.pop(0)
                moved += 1
                if not self.run.deliver(name, m):
                    q.insert(0, m)  # never acknowledged: delivered again
        return moved

    def close(self) -> None:
        pass


class _Redis:
    """A real Redis stream: each participant a consumer group; a participant that dies
    leaves its message pending (no XACK), and its next process claims it."""

    name = "redis"

    def __init__(self, run: _Runner, url: str, stream: str) -> None:
        from ..brokers.redis import RedisStreams

        self.run = run
        self.streams = RedisStreams(url, stream)
        self.consumers = {n: self._consumer(n) for n in run.names}

    def _consumer(self, name: str) -> Any:
        c = self.streams.consumer(name, f"{name}-{next(self.run.processes)}", claim_after=0,
                                  max_deliveries=1000, batch=1)
        c.ensure_group()
        return c

    def send(self, messages: Sequence[Message]) -> None:
        self.streams.publish(list(messages))

    def round(self) -> int:
        moved = 0
        for name in list(self.consumers):
            died = [False]

            def handle(m: Message, name: str = name, died: list[bool] = died) -> None:
                if not self.run.deliver(name, m):
                    died[0] = True
                    raise ProcessDied(name)  # out of the consumer: no XACK

            try:
                moved += self.consumers[name].consume_once(handle)
            except ProcessDied:
                moved += 1
                self.consumers[name].close()
                self.consumers[name] = self._consumer(name)  # a new process of it
        return moved

    def close(self) -> None:
        for c in self.consumers.values():
            c.close()
        self.streams.close()


class _Runner:
    def __init__(self, case: ChoreographyCase, plan: DeliveryPlan, store: str,
                 redis_url: str | None, stream: str | None) -> None:
        self.case = case
        self.plan = plan
        self.flow = case.flow
        self.spec = spec_of(case.flow)
        self.chor = _chor_of(case.flow)
        self.names = list(self.chor.participants)
        self.types = {t: n for n, t in event_types(case.flow).items()}
        self.clock = VirtualClock()
        self.injector = _Injector(self.spec, plan)
        self.processes = itertools.count(1)
        self.deliveries: list[Delivered] = []
        self.published: list[Published] = []
        self.sent: list[Sent] = []
        self.parks: list[Parked] = []
        self._dir: str | None = None
        if store == "memory":
            shared = MemoryStore()
            self.store_for: Callable[[], Any] = lambda: shared
        elif store == "sqlite":
            self._dir = tempfile.mkdtemp(prefix="sagaflow-choreo-", dir=_scratch())
            url = f"sqlite:///{self._dir}/sagas.db"
            self.store_for = lambda: url
        else:
            self.store_for = lambda: store
        self.worker = self._orchestrator()
        self.parts = {n: self._participant(n) for n in self.names}
        self.network = _Network(self)
        self.relay = Relay(self.worker.store, _Publisher(self), batch=100)
        self.transport: _Memory | _Redis = (
            _Memory(self) if redis_url is None else _Redis(self, redis_url, stream or (
                f"sagaflow-choreo-{next(_streams)}")))

    def _orchestrator(self) -> _Orchestrator:
        made = _Orchestrator(self.store_for(), self.injector.shadow, self.clock)
        made.register(self.flow)
        # The call threads are shared by every run's orchestrators: starting a thread
        # for each process of each run would be most of a run's time.
        made.runtime.threads = _THREADS
        return made

    def _participant(self, name: str) -> Participant:
        p = Participant(self._orchestrator(), self.flow, name)
        p.spec = self.injector.shadow  # the participant runs the shadow spec's functions
        return p

    def event_name(self, m: Message) -> str:
        return m.type.rsplit(":", 1)[-1].rsplit(".", 1)[-1]

    def deliver(self, name: str, m: Message) -> bool:
        """Hand ``m`` to participant ``name``; False if its process died (then it has
        a new one, and the message must be delivered to it again)."""
        p = self.parts[name]
        self.injector.who = name
        seq = len(self.deliveries) + 1
        event = self.event_name(m)
        try:
            handled = p.handle(m)
        except ProcessDied as exc:
            self.deliveries.append(Delivered(seq, m.id, event, name, "died", str(exc)))
            _close(p.orchestrator)
            self.parts[name] = self._participant(name)
            return False
        except UnknownInstance as exc:
            self.deliveries.append(Delivered(seq, m.id, event, name, "dead-letter", str(exc)))
            return True
        except Exception as exc:
            self.deliveries.append(Delivered(seq, m.id, event, name, "error",
                                             f"{type(exc).__name__}: {exc}"))
            return True
        finally:
            self.injector.who = WORKER
        self.deliveries.append(Delivered(seq, m.id, event, name, handled.outcome,
                                         handled.reason or "", handled.step))
        return True

    def relay_all(self) -> int:
        total = 0
        for _ in range(1000):
            n = self.relay.relay_once()
            total += n
            if n == 0 and not self.relay.failures:
                return total
        raise RuntimeError(f"the relay does not drain: {self.relay.last_error!r}")

    def records(self) -> dict[str, SagaRecord]:
        out: dict[str, SagaRecord] = {}
        for event in self.case.starts:
            sid = self.chor.saga_id(self.case.correlation(event))
            record = self.worker.store.load(sid)
            if record is not None:
                out[sid] = record
        return out

    def run(self) -> ChoreographyRun:
        case = self.case
        before = {self.case.correlation(e): case.effects(self.case.correlation(e))
                  for e in case.starts} if case.effects is not None else {}
        starts = [message_for(e, f"start:{self.case.correlation(e)}") for e in case.starts]
        self.start_ids = {m.id: self.chor.saga_id(self.case.correlation(e))
                          for m, e in zip(starts, case.starts, strict=True)}
        self.network.publish(starts, ["start"] * len(starts))
        rounds = 0
        for _ in range(100_000):
            if self.relay_all() + self.transport.round():
                continue
            if self.network.release_held():
                continue
            unfinished = [r for r in self.records().values() if not r.status.is_terminal]
            if not unfinished and not self.network.after_deadline:
                break
            if rounds >= MAX_DEADLINE_ROUNDS:
                break
            for r in unfinished:
                self.parks.append(Parked(r.saga_id, r.status, r.waiting, r.wake_at,
                                         self.network.withheld(r.saga_id, self.start_ids)))
            times = [t for r in unfinished for t in (r.wake_at, r.deadline_at) if t is not None]
            self.clock.advance_to(max(times, default=self.clock.time + (
                self.spec.deadline or 0.0)) + 1.0)
            rounds += 1
            self.worker.resume_due()
            self.network.release_late()
        else:  # pragma: no cover - a flow that never settles
            raise RuntimeError("the choreography did not settle in 100,000 rounds")
        records = self.records()
        effects: dict[str, tuple[Any, Any, Any]] = {}
        if case.effects is not None:
            after = {cid: case.effects(cid) for cid in before}
            quiet = after if self.plan.is_quiet else _quiet(case)  # (runs the world anew)
            effects = {cid: (before[cid], after[cid], quiet.get(cid)) for cid in before}
        outbox = cast("OutboxStore", self.worker.store)  # every store of sagaflow's is one
        pending = outbox.outbox_stats().pending
        return ChoreographyRun(
            case, self.plan, self.spec, self.transport.name, tuple(self.injector.calls),
            tuple(self.deliveries), tuple(self.published), tuple(self.sent), records,
            tuple(self.parks), effects, pending, rounds,
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.close()
        for p in self.parts.values():
            _close(p.orchestrator)
        _close(self.worker)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


_streams = itertools.count(1)
_THREADS = Threads()


def _close(orchestrator: Orchestrator) -> None:
    """Close ``orchestrator``, leaving the shared call threads running."""
    orchestrator.runtime.threads = Threads()
    orchestrator.close()


def _scratch() -> str | None:
    """Where a run's SQLite file goes: memory-backed ``/dev/shm`` when there is one (the
    same SQLite code and file format; its commits cost no disk flush), else the temp dir."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


class _Publisher:
    """What the relay publishes to: the network, which dies once after publishing a
    batch holding a type the plan republishes (so the relay publishes it again)."""

    def __init__(self, run: _Runner) -> None:
        self.run = run
        self.planned: set[str] = set()  # ids whose first publish killed the relay
        self.again: set[str] = set()  # ids in a batch the relay died after publishing

    def publish(self, messages: Sequence[Message]) -> None:
        redo = [m.id for m in messages if self.run.event_name(m) in self.run.plan.republished
                and m.id not in self.planned]
        hows = ["republished" if m.id in self.again else "relay" for m in messages]
        self.run.network.publish(messages, hows)
        if redo:  # the whole batch goes again
            self.planned.update(redo)
            self.again.update(m.id for m in messages)
            raise InjectedFault("the relay dies after the broker took the batch")


def _quiet(case: ChoreographyCase) -> dict[str, Any]:
    """Each instance's effects after the run where nothing goes wrong (once per case)."""
    if "quiet" not in case._cache:
        run = run_choreography(case, DeliveryPlan(), store="memory")
        case._cache["quiet"] = {cid: after for cid, (_, after, _) in run.effects.items()}
    quiet: dict[str, Any] = case._cache["quiet"]
    return quiet


def run_choreography(
    case: ChoreographyCase,
    plan: DeliveryPlan | None = None,
    *,
    store: str = "sqlite",
    redis_url: str | None = None,
    stream: str | None = None,
) -> ChoreographyRun:
    """Run ``case``'s instances under ``plan``, to the end, and return the run.

    ``store``: ``"sqlite"`` (a SQLite file of the run's own: each participant and the
    worker on its own connection, as separate services are), ``"memory"`` (faster), or a
    store URL. ``redis_url``: deliver through a real Redis stream (``stream``: its name,
    default a fresh one) instead of in-process queues.
    """
    plan = DeliveryPlan() if plan is None else plan
    if not isinstance(plan, DeliveryPlan):
        raise TypeError(f"plan must be a DeliveryPlan, got {plan!r}")
    if not isinstance(case, ChoreographyCase):
        raise TypeError(f"case must be a ChoreographyCase, got {case!r}")
    plan.validate(case.flow)
    if case.setup is not None:
        case.setup()
    runner = _Runner(case, plan, store, redis_url, stream)
    try:
        return runner.run()
    finally:
        runner.close()

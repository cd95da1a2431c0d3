"""Testing choreographed sagas and the outbox: delivery plans, a runner, invariants.

A choreography's steps run in its participants, each when an event reaches it, so what
goes wrong is mostly *delivery*: an event comes twice, late, out of order or never, a
participant dies half-way through a step (after its effect, before its checkpoint) and
the event is delivered to it again, the relay dies after publishing and publishes again.

- :class:`DeliveryPlan`: which step fails (for good, or a few times), which participant
  dies where, and how each event type is delivered (:class:`Delivery`).
- :func:`run_choreography`: the flow's start events published, the outbox relayed (the
  real :class:`~sagaflow.outbox.Relay`), every message handed to every
  :class:`~sagaflow.Participant` per the plan, each participant on its own orchestrator
  over one real store (a SQLite file by default), on a virtual clock; when the events
  stop, the clock runs past the deadlines and a worker resumes what is due. Over a
  real Redis too (``redis_url=``): then each participant is a consumer group, and one
  that dies leaves its message pending (no XACK) for the next consumer to claim.
- :func:`check_choreography`: the invariants (:data:`CHOREOGRAPHY_INVARIANTS`) on the
  :class:`ChoreographyRun`; :class:`ChoreographyViolation` names the broken ones and
  shows the deliveries and calls.
- :func:`~sagaflow.testing.choreography_plans` (hypothesis): plans drawn from the flow.

The user's code is not changed: faults are injected around the flow's own functions (a
shadow spec the participants run), and what the participants did to the world is read
through the case's ``effects(correlation)``.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import attrs

from ..choreography import FlowFailed, Participant, UnknownInstance, message_for
from ..choreography import choreography_of as _chor_of
from ..context import Direction
from ..messages import Message
from ..orchestrator import Orchestrator
from ..outbox import Relay
from ..records import SagaRecord, SagaStatus
from ..runtime import Threads
from ..spec import SagaSpec, spec_of
from ..stores import MemoryStore, OutboxStore
from .clock import VirtualClock
from .invariants import Violation
from .plan import InjectedFault

__all__ = [
    "CHOREOGRAPHY_INVARIANTS",
    "ChoreographyCase",
    "ChoreographyRun",
    "ChoreographyViolation",
    "ChoreoCall",
    "Delivered",
    "Delivery",
    "DeliveryPlan",
    "ProcessDied",
    "Published",
    "Sent",
    "check_choreography",
    "event_types",
    "run_choreography",
]

FORWARD = Direction.FORWARD
COMPENSATE = Direction.COMPENSATE
#: who performs the deadline's compensation (``resume_due``), in a run's calls
WORKER = "worker"
#: How many times, at most, a run moves the clock past the deadlines when the events stop.
MAX_DEADLINE_ROUNDS = 3


class Delivery(enum.Enum):
    """How the messages of one event type reach the participants in a plan's run."""

    ONCE = "once"  #: delivered once, in its turn
    TWICE = "twice"  #: delivered, then again at once (same id): a redelivery
    #: delivered, and again (same id) after the message published next: a stale redelivery
    LATE = "late"
    #: held back and delivered after the message published next (it overtakes this one)
    OUT_OF_ORDER = "out_of_order"
    #: held back until the instance's deadline passed and a worker resumed it
    AFTER_DEADLINE = "after_deadline"
    NEVER = "never"  #: lost: never delivered (the deadline must compensate the instance)

    def __repr__(self) -> str:
        return f"Delivery.{self.name}"

    @property
    def withholds(self) -> bool:
        """Whether the message is not there when the instance waits for it."""
        return self in (Delivery.AFTER_DEADLINE, Delivery.NEVER)


class ProcessDied(BaseException):
    """A participant's process dies in the middle of a call (a plan's crash).

    A ``BaseException``, so that nothing in sagaflow takes it for the call's error: the
    call is never settled, its checkpoint never made, and its message never acknowledged.
    """


def _pairs(value: Mapping[str, Any] | Iterable[tuple[str, Any]] | None, what: str,
           kind: type | tuple[type, ...]) -> tuple[tuple[str, Any], ...]:
    items = value.items() if isinstance(value, Mapping) else (value or ())
    out: dict[str, Any] = {}
    for item in items:
        try:
            name, v = item
        except (TypeError, ValueError):
            raise ValueError(f"{what} maps a name to a value, got item {item!r}") from None
        if not isinstance(name, str) or isinstance(v, bool) is not (kind is bool) or (
            not isinstance(v, kind)
        ):
            raise ValueError(f"{what}: {name!r} -> {v!r} is not a name -> {kind!r}")
        if isinstance(v, int) and not isinstance(v, bool) and v < 0:
            raise ValueError(f"{what}[{name!r}] must be >= 0, got {v!r}")
        if v or v is False:
            out[name] = v
    return tuple(sorted(out.items()))


def _counts(value: Any) -> tuple[tuple[str, int], ...]:
    return _pairs(value, "a count of failures", int)


def _crashes(value: Any) -> tuple[tuple[str, bool], ...]:
    return _pairs(value, "crash (after its effect?)", bool)


def _deliveries(value: Any) -> tuple[tuple[str, Delivery], ...]:
    pairs = _pairs(value, "deliveries", Delivery)
    return tuple((n, d) for n, d in pairs if d is not Delivery.ONCE)


def _set(value: Iterable[str] | None) -> frozenset[str]:
    if isinstance(value, str):
        raise ValueError(f"a set of names is wanted: write {{{value!r}}}")
    names = frozenset(value or ())
    if any(not isinstance(n, str) for n in names):
        raise ValueError(f"a set of names (str) is wanted, got {sorted(map(repr, names))}")
    return names


def event_types(flow: type) -> dict[str, type]:
    """The event types a choreography's messages carry, by class name: its start event,
    every step's and compensation's, and :class:`~sagaflow.FlowFailed`."""
    chor = _chor_of(flow)
    found: dict[str, type] = {chor.start.__name__: chor.start}
    for r in chor.roles:
        found[r.emits.__name__] = r.emits
    found[FlowFailed.__name__] = FlowFailed
    for r in reversed(chor.roles):
        if r.compensation_emits is not None:
            found[r.compensation_emits.__name__] = r.compensation_emits
    return found


@attrs.frozen(repr=False)
class DeliveryPlan:
    """What goes wrong in one run of a choreography; the default: nothing.

    - ``fails``: the step that fails for good (raises on every attempt): the instance
      compensates through :class:`~sagaflow.FlowFailed`.
    - ``transient``: step -> how many attempts raise (before taking effect) before one works.
    - ``crash``: step -> the participant's process dies once during it, after the step
      took effect (``True``) or before (``False``); its message is delivered again.
    - ``compensation_transient``: step -> how many attempts of its compensation take
      effect and then fail (a lost reply) before one works: a compensation that is not
      idempotent shows.
    - ``compensation_crash``: steps whose compensation's participant dies once after the
      compensation took effect (its message is delivered again).
    - ``deliveries``: event type name (``"StockReserved"``, ``"FlowFailed"``) ->
      :class:`Delivery`, for each message of that type the first time it is published.
    - ``republished``: event type names whose messages the relay publishes twice (it
      dies after the broker took them, before marking them relayed): same id, same body.
    """

    fails: str | None = None
    transient: tuple[tuple[str, int], ...] = attrs.field(default=(), converter=_counts)
    crash: tuple[tuple[str, bool], ...] = attrs.field(default=(), converter=_crashes)
    compensation_transient: tuple[tuple[str, int], ...] = attrs.field(
        default=(), converter=_counts)
    compensation_crash: frozenset[str] = attrs.field(default=frozenset(), converter=_set)
    deliveries: tuple[tuple[str, Delivery], ...] = attrs.field(default=(), converter=_deliveries)
    republished: frozenset[str] = attrs.field(default=frozenset(), converter=_set)

    def delivery(self, event_type: str) -> Delivery:
        """How messages of ``event_type`` (a class name) are delivered."""
        return dict(self.deliveries).get(event_type, Delivery.ONCE)

    @property
    def is_quiet(self) -> bool:
        """Whether nothing at all goes wrong."""
        return self == DeliveryPlan()

    @property
    def withholds(self) -> bool:
        """Whether some event type's messages are withheld (after the deadline, or lost)."""
        return any(d.withholds for _, d in self.deliveries)

    def validate(self, flow: type) -> None:
        """Raise ``ValueError`` naming every way this plan does not fit ``flow``."""
        spec = spec_of(flow)
        steps = [s.name for s in spec.steps]
        undoable = [s.name for s in spec.steps if s.compensation is not None]
        types = event_types(flow)
        problems: list[str] = []

        def check(names: Iterable[str], known: Sequence[str], what: str) -> None:
            for n in sorted(names):
                if n not in known:
                    problems.append(f"{what} names {n!r}, which {spec.name} does not have "
                                    f"(it has: {', '.join(known) or 'none'})")

        check([self.fails] if self.fails is not None else [], steps, "fails")
        check([n for n, _ in self.transient] + [n for n, _ in self.crash], steps, "a step fault")
        check([n for n, _ in self.compensation_transient] + sorted(self.compensation_crash),
              undoable, "a compensation fault")
        check([n for n, _ in self.deliveries] + sorted(self.republished), list(types),
              "an event type")
        start = _chor_of(flow).start.__name__
        if self.delivery(start).withholds:
            problems.append(f"the start event {start} cannot be withheld: no instance would "
                            "exist to have a deadline")
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise ValueError(f"{self!r} does not fit choreography {spec.name!r}:\n{lines}")

    def __repr__(self) -> str:
        parts: list[str] = []
        if self.fails is not None:
            parts.append(f"fails={self.fails!r}")
        for name in ("transient", "crash", "compensation_transient", "deliveries"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={dict(value)!r}")
        for name in ("compensation_crash", "republished"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={set(sorted(value))!r}")
        return f"DeliveryPlan({', '.join(parts)})"

    def describe(self) -> str:
        """The plan in words."""
        said: list[str] = []
        for n, k in self.transient:
            said.append(f"{n} raises {k}x then works")
        if self.fails is not None:
            said.append(f"{self.fails} fails for good")
        for n, effect in self.crash:
            said.append(f"{n}'s participant dies {'after' if effect else 'before'} its effect")
        for n, k in self.compensation_transient:
            said.append(f"{n}'s compensation takes effect then fails {k}x")
        for n in sorted(self.compensation_crash):
            said.append(f"{n}'s compensation's participant dies after its effect")
        for n, d in self.deliveries:
            said.append(f"{n} delivered {d.value.replace('_', ' ')}")
        for n in sorted(self.republished):
            said.append(f"the relay publishes {n} twice")
        return "; ".join(said) or "nothing goes wrong"


@attrs.frozen
class ChoreographyCase:
    """A choreography, the start events of the instances a run starts, and the world.

    ``setup`` puts the participants' world back as it was (before every run);
    ``effects(correlation)`` pictures what the participants did for one instance (a
    comparable value): a compensated instance must leave it as before, a completed one as
    the run where nothing goes wrong does, so an effect made twice shows. ``allow_step_errors``:
    a step may fail on its own (a declined card in the start event).
    """

    flow: type
    starts: tuple[Any, ...] = attrs.field(converter=tuple)
    setup: Callable[[], object] | None = None
    effects: Callable[[str], object] | None = None
    allow_step_errors: bool = False
    _cache: dict[str, Any] = attrs.field(factory=dict, init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        chor = _chor_of(self.flow)  # raises TypeError naming the fix
        if not self.starts:
            raise ValueError("a ChoreographyCase needs at least one start event")
        for event in self.starts:
            if not isinstance(event, chor.start):
                raise TypeError(f"starts must be {chor.start.__qualname__} events (the flow's "
                                f"start), got {event!r}")
        ids = [self.correlation(e) for e in self.starts]
        if len(set(ids)) != len(ids):
            raise ValueError(f"the start events must correlate different instances, got {ids}")

    def correlation(self, event: Any) -> str:
        """The correlation value of ``event``."""
        return str(getattr(event, _chor_of(self.flow).correlation))


@attrs.define
class ChoreoCall:
    """One call of a step or compensation, as a participant (or the worker) made it.

    ``injected``: ``"-"``, ``"raises"``, ``"crash"`` (died before the effect),
    ``"crash+effect"``, ``"lost reply"`` (took effect, then failed); ``ok``: the call
    returned to sagaflow normally; ``effect``: the user's function ran through.
    """

    seq: int
    who: str
    saga_id: str
    step: str
    direction: Direction
    attempt: int
    key: str
    injected: str = "-"
    effect: bool = False
    ok: bool = False
    error: BaseException | None = None

    def __str__(self) -> str:
        what = self.step if self.direction is FORWARD else f"undo {self.step}"
        how = "ok" if self.ok else ("died" if self.injected.startswith("crash") else "failed")
        eff = " +effect" if self.effect else ""
        inj = "" if self.injected == "-" else f" [{self.injected}]"
        err = f" {type(self.error).__name__}: {self.error}" if self.error is not None else ""
        return (f"{self.seq:3} {self.who:>10} {self.saga_id} {what} #{self.attempt}"
                f"{inj} {how}{eff}{err}")


@attrs.frozen
class Delivered:
    """One message handed to one participant, and what came of it: ``"ran"``,
    ``"ignored"`` (``reason``), ``"not-mine"``, ``"died"``, ``"dead-letter"``, ``"error"``."""

    seq: int
    message_id: str
    event: str
    participant: str
    outcome: str
    reason: str = ""
    step: str | None = None

    def __str__(self) -> str:
        what = self.outcome + (f" {self.step}" if self.step else "")
        why = f": {self.reason}" if self.reason else ""
        return f"{self.seq:3} {self.event} ({self.message_id}) -> {self.participant}: {what}{why}"


@attrs.frozen
class Published:
    """A message the relay (or the run, for a start event) published: ``how`` is
    ``"relay"``, ``"republished"`` (again, after the relay died) or ``"start"``."""

    message_id: str
    event: str
    saga_id: str
    body: str
    how: str


@attrs.frozen
class Sent:
    """A message put on the transport (what the plan let through, and its copies):
    ``how`` is the publisher's, or the plan's :class:`Delivery` value for a copy or a
    held-back message."""

    message_id: str
    event: str
    how: str


@attrs.frozen
class Parked:
    """An unfinished instance when the events stopped, before the clock passed its deadline."""

    saga_id: str
    status: SagaStatus
    waiting: str | None
    wake_at: float | None
    withheld: tuple[str, ...]  #: the messages of this instance the plan held back


@attrs.frozen(eq=False)
class ChoreographyRun:
    """One run of a choreography under a :class:`DeliveryPlan`, for the invariants."""

    case: ChoreographyCase
    plan: DeliveryPlan
    spec: SagaSpec
    transport: str
    calls: tuple[ChoreoCall, ...]
    deliveries: tuple[Delivered, ...]
    published: tuple[Published, ...]
    sent: tuple[Sent, ...]
    records: Mapping[str, SagaRecord]
    parks: tuple[Parked, ...]
    effects: Mapping[str, tuple[Any, Any, Any]]  #: correlation -> (before, after, quiet run's)
    pending_outbox: int
    deadline_rounds: int

    def check(self, only: Iterable[int] | None = None) -> ChoreographyRun:
        """:func:`check_choreography` on this run; returns it."""
        check_choreography(self, only=only)
        return self

    def status(self, correlation: str) -> SagaStatus | None:
        """The final status of the instance correlated by ``correlation``."""
        record = self.records.get(_chor_of(self.case.flow).saga_id(correlation))
        return None if record is None else record.status

    def describe(self) -> str:
        """The run, message by message and call by call."""
        lines = [f"plan: {self.plan!r}", f"      ({self.plan.describe()})",
                 f"transport: {self.transport}"]
        for sid, r in self.records.items():
            err = f" ({r.error})" if r.error is not None else ""
            lines.append(f"instance {sid}: {r.status.value}{err}")
        lines.append("sent to the participants:")
        lines += [f"    {p.message_id} {p.event} [{p.how}]" for p in self.sent]
        lost = sorted({p.message_id for p in self.published} - {p.message_id for p in self.sent})
        if lost:
            lines.append(f"published and never delivered: {', '.join(lost)}")
        lines.append("deliveries:")
        lines += [f"  {d}" for d in self.deliveries if d.outcome != "not-mine"]
        lines.append("calls:")
        lines += [f"  {c}" for c in self.calls]
        return "\n".join(lines)


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


# --- the invariants ----------------------------------------------------------------------

#: Every invariant :func:`check_choreography` checks, by number.
CHOREOGRAPHY_INVARIANTS: dict[int, str] = {
    1: "every instance ends terminal; one unfinished when the events stop is parked (a wake "
    "time set), waiting for an event the plan withheld, and its deadline compensates it "
    "(a compensating one of a flow with no compensation deadline stays parked)",
    2: "a plan where nothing goes wrong completes every instance, compensating nothing",
    3: "an instance that compensates has every step that took effect compensated exactly "
    "once, newest first, and none that did not (one cut short by a dying participant may "
    "be: its outcome is unknown); a completed one has nothing compensated",
    4: "no effect doubled: each instance's net effect is the quiet run's when it completed, "
    "none when it compensated",
    5: "every event an instance recorded is published under its outbox id, every "
    "publication of an id carries the same event, nothing else is published, and the "
    "outbox is empty at the end",
    6: "each call is made by its step's participant (a compensation: or the worker at the "
    "deadline), with one idempotency key per step and direction over every redelivery",
    7: "handlers only run, ignore (saying why) or pass on a message; a step fails only "
    "where the plan says",
}


class ChoreographyViolation(AssertionError):
    """A choreography run broke invariants; ``violations`` lists them, ``run`` is it."""

    def __init__(self, run: ChoreographyRun, violations: Sequence[Violation]) -> None:
        self.run = run
        self.violations = tuple(violations)
        body = "\n".join(str(v) for v in self.violations)
        super().__init__(f"the choreography {run.spec.name} broke "
                         f"{len(self.violations)} invariant(s):\n{body}\n\n{run.describe()}")

    @property
    def numbers(self) -> list[int]:
        """The numbers of the broken invariants."""
        return sorted({v.number for v in self.violations})


def check_choreography(run: ChoreographyRun, only: Iterable[int] | None = None) -> None:
    """Raise :class:`ChoreographyViolation` unless ``run`` keeps every invariant in
    :data:`CHOREOGRAPHY_INVARIANTS` (``only``: just these numbers)."""
    wanted = set(CHOREOGRAPHY_INVARIANTS) if only is None else set(only)
    found: list[Violation] = []
    for number, check in _CHECKS.items():
        if number in wanted:
            found += [Violation(number, CHOREOGRAPHY_INVARIANTS[number], d) for d in check(run)]
    if found:
        raise ChoreographyViolation(run, found)


def _left_for_an_operator(run: ChoreographyRun, p: Parked) -> bool:
    """Whether ``p`` is a compensating instance parked for a withheld event with no time
    to wake at: its flow has no compensation deadline, so it waits (a stalled incident)
    for its event or an operator; nothing in the flow may end it."""
    return (p.status is SagaStatus.COMPENSATING and p.waiting is not None
            and p.wake_at is None and bool(p.withheld)
            and run.spec.compensation_deadline is None)


def _c1_settles(run: ChoreographyRun) -> list[str]:
    out: list[str] = []
    left: set[str] = set()
    for p in run.parks:
        if _left_for_an_operator(run, p):
            left.add(p.saga_id)
        elif p.waiting is None or p.wake_at is None:
            out.append(f"{p.saga_id} is {p.status.value} when the events stop, but not parked "
                       f"(waiting={p.waiting!r}, wake_at={p.wake_at!r}): nothing would wake it")
        elif not p.withheld:
            out.append(f"{p.saga_id} is {p.status.value} when the events stop, though the "
                       "plan withheld none of its messages")
    for sid, r in run.records.items():
        if not r.status.is_terminal and sid not in left:
            out.append(f"{sid} ends {r.status.value} after {run.deadline_rounds} passes of "
                       "its deadline")
    for e in run.case.starts:
        sid = _chor_of(run.case.flow).saga_id(run.case.correlation(e))
        if sid not in run.records:
            out.append(f"{sid} was never created")
    return list(dict.fromkeys(out))  # once, however many times the clock passed


def _c2_quiet(run: ChoreographyRun) -> list[str]:
    if not run.plan.is_quiet or run.case.allow_step_errors:
        return []
    return [f"{sid} ends {r.status.value} under a plan where nothing goes wrong"
            for sid, r in run.records.items() if r.status is not SagaStatus.COMPLETED]


def _by_instance(run: ChoreographyRun) -> dict[str, list[ChoreoCall]]:
    out: dict[str, list[ChoreoCall]] = {}
    for c in run.calls:
        out.setdefault(c.saga_id, []).append(c)
    return out


def _c3_compensation(run: ChoreographyRun) -> list[str]:
    out = []
    calls = _by_instance(run)
    for sid, r in run.records.items():
        mine = calls.get(sid, [])
        undone = [c.step for c in mine if c.direction is COMPENSATE and c.ok]
        if r.status is SagaStatus.COMPLETED:
            if undone:
                out.append(f"{sid} COMPLETED, yet compensated {undone}")
            continue
        if r.status is not SagaStatus.COMPENSATED:
            continue
        took = {c.step for c in mine if c.direction is FORWARD and c.effect}
        # a call its participant died in, or one still running when its timeout gave up
        # on it, may have taken effect, as far as sagaflow knows
        unknown = {c.step for c in mine if c.direction is FORWARD and (
            c.injected.startswith("crash") or (not c.ok and c.error is None))} - took
        order = [s.name for s in reversed(run.spec.steps) if s.compensation is not None]
        expected = [n for n in order if n in took]
        allowed = [n for n in order if n in took or n in unknown]
        if [n for n in undone if n in took] != expected or any(
            n not in allowed for n in undone
        ) or undone != [n for n in allowed if n in undone]:
            maybe = f" (and maybe {sorted(unknown)}, cut short)" if unknown else ""
            out.append(f"{sid} COMPENSATED: the steps that took effect ({sorted(took)}){maybe} "
                       f"call for compensations {expected}, newest first, each once; it "
                       f"made {undone}")
    return out


def _c4_effects(run: ChoreographyRun) -> list[str]:
    out = []
    chor = _chor_of(run.case.flow)
    for cid, (before, after, quiet) in run.effects.items():
        r = run.records.get(chor.saga_id(cid))
        if r is None:
            continue
        if r.status is SagaStatus.COMPENSATED and after != before:
            out.append(f"{cid} COMPENSATED but its effects went from {before!r} to {after!r}")
        elif r.status is SagaStatus.COMPLETED and quiet is not None and after != quiet:
            out.append(f"{cid} COMPLETED with effects {after!r}; the quiet run leaves {quiet!r}")
    return out


def _c5_outbox(run: ChoreographyRun) -> list[str]:
    out = []
    expected = {f"{sid}:{i}": type(e).__name__ for sid, r in run.records.items()
                for i, e in enumerate(r.events)}
    bodies: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for p in run.published:
        if p.how == "start":
            continue
        bodies.setdefault(p.message_id, set()).add(p.body)
        if p.how == "relay":  # a republished one repeats a batch the relay died after
            counts[p.message_id] = counts.get(p.message_id, 0) + 1
    missing = sorted(set(expected) - set(bodies))
    extra = sorted(set(bodies) - set(expected))
    if missing:
        out.append(f"recorded events never published: {missing}")
    if extra:
        out.append(f"published, but no instance recorded them: {extra}")
    for mid, seen in bodies.items():
        if len(seen) > 1:
            out.append(f"{mid} was published with {len(seen)} different bodies")
    for mid, n in counts.items():
        if n != 1:
            out.append(f"the relay published {mid} {n} times (not after dying)")
    again = {p.message_id for p in run.published if p.how == "republished"}
    for t in sorted(run.plan.republished):
        if any(e == t for e in expected.values()) and not any(
            expected.get(m) == t for m in again
        ):
            out.append(f"the plan republishes {t}, but the relay never published it again")
    if run.pending_outbox:
        out.append(f"{run.pending_outbox} message(s) left in the outbox")
    return out


def _c6_who(run: ChoreographyRun) -> list[str]:
    out = []
    roles = {r.name: r for r in _chor_of(run.case.flow).roles}
    keys: dict[tuple[str, str, Direction], set[str]] = {}
    for c in run.calls:
        keys.setdefault((c.saga_id, c.step, c.direction), set()).add(c.key)
        role = roles[c.step]
        allowed = {role.participant} | ({WORKER} if c.direction is COMPENSATE else set())
        if c.who not in allowed:
            out.append(f"call {c.seq} ({c.direction.value} {c.step} of {c.saga_id}) was made "
                       f"by {c.who}, not {role.participant}")
    for (sid, step, d), seen in keys.items():
        if len(seen) > 1:
            out.append(f"{d.value} {step} of {sid} ran under keys {sorted(seen)}")
    return out


def _c7_handlers(run: ChoreographyRun) -> list[str]:
    out = [f"delivery {d.seq}: {d.participant} raised on {d.event} ({d.message_id}): {d.reason}"
           for d in run.deliveries if d.outcome == "error"]
    out += [f"delivery {d.seq}: {d.participant} dead-lettered {d.event}: {d.reason}"
            for d in run.deliveries if d.outcome == "dead-letter"]
    out += [f"delivery {d.seq}: {d.participant} ignored {d.event} without saying why"
            for d in run.deliveries if d.outcome == "ignored" and not d.reason]
    if not run.case.allow_step_errors:
        out += [f"call {c.seq}: {c.step} of {c.saga_id} failed on its own: {c.error!r}"
                for c in run.calls if c.error is not None and c.injected == "-"]
    return out


_CHECKS: dict[int, Callable[[ChoreographyRun], list[str]]] = {
    1: _c1_settles, 2: _c2_quiet, 3: _c3_compensation, 4: _c4_effects, 5: _c5_outbox,
    6: _c6_who, 7: _c7_handlers,
}

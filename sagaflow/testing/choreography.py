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

This module holds the plans and what a run records; the runner is
:mod:`.choreography_harness`, the invariants :mod:`.choreography_invariants`.

The user's code is not changed: faults are injected around the flow's own functions (a
shadow spec the participants run), and what the participants did to the world is read
through the case's ``effects(correlation)``.
"""


from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..choreography import FlowFailed
from ..choreography import choreography_of as _chor_of
from ..context import Direction
from ..records import SagaRecord, SagaStatus
from ..spec import SagaSpec, spec_of

__all__ = [
    "ChoreographyCase",
    "ChoreographyTrace",
    "ChoreoCall",
    "Delivered",
    "Delivery",
    "DeliveryPlan",
    "Parked",
    "ProcessDied",
    "Published",
    "Sent",
    "event_types",
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
class ChoreographyTrace:
    """What one run of a choreography under a :class:`DeliveryPlan` did: what the
    invariants read (the runner's :class:`~sagaflow.testing.ChoreographyRun` is one that
    checks itself)."""

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

"""What a diagram shows, before any syntax: the machine's states and transitions, and a run.

The states and transitions are read from the class's own ``transitions`` machine
(``spec.machine``), never re-derived from the steps, so the picture is the machine
every run is checked against; the steps only annotate it (kind, guard, compensation,
and what a wait waits for: its signal, payload class and timeout, or a timer's time).
A run (a :class:`~sagaflow.SagaRecord` or :class:`~sagaflow.SagaResult`) adds what it
did: the transitions it took are its recorded ``path`` (the engine appends every state
change), its outcomes per state come from its step records.

A parallel group's state is drawn as a fork bar, its members (each a node with its
own kind and compensation, :attr:`Model.members`), and a join bar; a fan-out as its step
marked with the field it runs over and its limit (the multiplication sign, ``lines
(≤10)``). A run colours each member by its own step record, and notes a fan-out's items
by status.

Everything here is in a stable order (no ids, times or set order), so the text formats
built from it are byte-stable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import attrs

from .._choreodefs import CHOREOGRAPHY_ATTRIBUTE
from ..clock import duration
from ..errors import SagaRejected
from ..machine import COMPENSATED, COMPLETED, FAILED, NOT_STARTED, compensation_state
from ..records import CompensationStatus, SagaRecord, SagaResult, SagaStatus, StepStatus
from ..spec import (
    GroupSpec,
    SagaSpec,
    StepKind,
    StepSpec,
    WaitSpec,
    callable_name,
    is_saga,
    spec_of,
)

__all__ = ["TERMINALS", "Edge", "Model", "Node", "Run", "duration", "model_of"]

#: The three ends, in the order they are drawn.
TERMINALS = (COMPLETED, COMPENSATED, FAILED)
# Triggers in the order a reader meets them; edges are sorted by it for stable output.
_TRIGGER_ORDER = (
    "start", "advance", "skip", "timeout", "fail", "compensate", "undone", "undo_failed",
    "retry",
)
# The state a finished run without a recorded path ends in (a record written before
# sagaflow recorded paths: the migration of a version-1 store gives it an empty path).
_END_OF = {
    SagaStatus.COMPLETED: COMPLETED,
    SagaStatus.COMPENSATED: COMPENSATED,
    SagaStatus.FAILED: FAILED,
}

Diagrammable = Any  # a saga class or instance, a SagaSpec, a SagaRecord or a SagaResult


@attrs.frozen
class Edge:
    """One transition of the machine; ``guard`` is its second label line: ``""``,
    ``"unless is_large"`` (a skip), ``"on signal approval"`` (a wait's advance) or
    ``"3d → compensate"`` (a wait's timeout)."""

    source: str
    trigger: str
    dest: str
    guard: str


@attrs.frozen
class Node:
    """One state: its role (start, step, wait, timer, group, compensating, completed,
    compensated, failed, other), the label lines after its name, and its step, if any.
    A group's member is a node too (role step, ``group`` set), named by its step: it is
    no state of its own (the saga is at its group)."""

    state: str
    role: str
    lines: tuple[str, ...]
    step: StepSpec | None
    #: a group's node (role group) or a member's: the group
    group: GroupSpec | None = None


@attrs.frozen
class Run:
    """What a run did: an outcome and a note per state it touched, the transitions it
    took, and where it is now."""

    title: str
    current: str
    outcomes: dict[str, str]  # state -> done, skipped, failed, waiting, rejected, ...
    notes: dict[str, str]  # state -> a short line about what happened there
    taken: frozenset[tuple[str, str, str]]


@attrs.frozen
class Model:
    """A saga's machine as a diagram draws it, and the run drawn on it (if any)."""

    spec: SagaSpec
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    run: Run | None
    #: the groups' members, in step order (drawn between their group's fork and join)
    members: tuple[Node, ...] = ()

    @property
    def title(self) -> str:
        return self.spec.name if self.run is None else self.run.title


def model_of(obj: Diagrammable, saga: object | None = None) -> Model:
    """The model of ``obj``: a saga class (or instance, or SagaSpec), or a run of one.

    ``saga`` names a run's class when the run's data is not an instance of it.
    """
    spec, run = _resolve(obj, saga)
    states = [str(s) for s in spec.machine.states]
    members = tuple(
        Node(s.name, "step", tuple(_step_lines(s)), s, spec.groups[s.group])
        for s in spec.steps
        if s.group is not None
    )
    return Model(spec, tuple(_nodes(spec, states)), tuple(_edges(spec, states)), run, members)


def join_of(group: str) -> str:
    """The id of a group's join bar (a group's fork bar is its state); no state or step
    can have it: a name is an identifier."""
    return f"{group}/join"


def group_lines(g: GroupSpec) -> list[str]:
    """What a group says of itself: how many at once, and how it is undone."""
    limit = "all at once" if g.limit is None else f"≤{g.limit} at once"
    lines = [f"parallel, {limit}"]
    if g.after_pivot:
        lines.append("after the pivot: retried, never undone")
    else:
        lines.append(f"undo {g.compensation.value}")
    return lines


def _fan_out_line(s: StepSpec) -> str | None:
    if s.each is None:
        return None
    limit = "" if s.each.limit is None else f" (≤{s.each.limit})"
    return f"\u00d7{s.each.field}{limit}"  # the multiplication sign: times the field


def _step_lines(s: StepSpec) -> list[str]:
    """What a step's (or member's) node says: its kind, fan-out, guard, compensation."""
    lines: list[str] = []
    fan = _fan_out_line(s)
    if fan is not None:
        lines.append(fan)
    if s.kind is StepKind.PIVOT:
        lines.append("pivot (point of no return)")
    elif s.kind is StepKind.RETRIABLE:
        n = s.retry.attempts
        lines.append(f"retriable (up to {n} attempt{'s' if n != 1 else ''})")
    elif s.kind is StepKind.READONLY:
        lines.append("readonly")
    if s.guard_name is not None:
        lines.append(f"when {s.guard_name}")
    if s.group is not None and s.compensation_name is not None:
        lines.append(f"undo by {s.compensation_name}")
    return lines


def _resolve(obj: Diagrammable, saga: object | None) -> tuple[SagaSpec, Run | None]:
    if isinstance(obj, (SagaRecord, SagaResult)):
        source = saga if saga is not None else obj.data
        if isinstance(source, SagaSpec):
            spec = source
        elif is_saga(source):
            spec = spec_of(source)
        else:
            raise TypeError(
                f"cannot tell which saga class made the run {obj.saga_id!r} (its data is "
                f"{type(obj.data).__name__}): pass it, draw(run, saga=TheSagaClass)"
            )
        if obj.saga_name != spec.name:
            raise ValueError(
                f"the run {obj.saga_id!r} is of saga {obj.saga_name!r}, not {spec.name!r}: "
                "pass the saga class that made it (saga=...)"
            )
        if isinstance(obj, SagaRecord) and obj.fingerprint != spec.fingerprint:
            raise ValueError(
                f"the record {obj.saga_id!r} was made by another definition of "
                f"{spec.name!r} (fingerprint {obj.fingerprint}, the class has "
                f"{spec.fingerprint}): its steps changed since; draw it with that version"
            )
        return spec, _run_of(spec, obj)
    if isinstance(obj, SagaSpec):
        return obj, None
    if is_saga(obj):
        return spec_of(obj), None
    raise TypeError(
        "a diagram is drawn from a saga class (or instance), a SagaSpec, a SagaRecord or a "
        f"SagaResult; got {obj!r}: decorate the class with @sagaflow.saga"
    )


# --------------------------------------------------------------------------- the machine

def _edges(spec: SagaSpec, states: Sequence[str]) -> list[Edge]:
    """Every transition of the machine, in a stable order."""
    order = {s: i for i, s in enumerate(states)}
    waits = {s.name: s.wait for s in spec.steps if s.wait is not None}
    events = _choreography_events(spec)
    edges: list[Edge] = []
    for trigger, event in spec.machine.events.items():
        for source, transitions in event.transitions.items():
            for t in transitions:
                guards = [
                    ("if " if c.target else "unless ") + _guard_name(c.func)
                    for c in getattr(t, "conditions", ())
                ]
                if trigger == "retry" and not guards:
                    guards = ["by an operator"]
                wait = waits.get(str(source))
                if wait is not None and trigger in ("advance", "timeout"):
                    guards = [_wait_edge(wait, trigger)]
                label = ", ".join(guards)
                if events:
                    label = events.get((str(source), str(trigger)), label)
                edges.append(Edge(str(source), str(trigger), str(t.dest), label))
    rank = {t: i for i, t in enumerate(_TRIGGER_ORDER)}
    edges.sort(
        key=lambda e: (
            order.get(e.source, len(order)),
            rank.get(e.trigger, len(rank)),
            e.trigger,
            order.get(e.dest, len(order)),
        )
    )
    return edges


def _choreography_events(spec: SagaSpec) -> dict[tuple[str, str], str]:
    """A choreography's edges carry the event published when they are taken: by
    (source, trigger); empty for an orchestrated saga (its diagrams do not change)."""
    chor = spec.cls.__dict__.get(CHOREOGRAPHY_ATTRIBUTE)
    if chor is None:
        return {}
    out = {(NOT_STARTED, "start"): chor.start.__name__}
    for role in chor.roles:
        out[(role.name, "advance")] = role.emits.__name__
        for trigger in ("fail", "compensate", "timeout"):
            out[(role.name, trigger)] = "FlowFailed"
        if role.compensation_emits is not None:
            out[(compensation_state(role.name), "undone")] = role.compensation_emits.__name__
    return out


def _wait_edge(wait: WaitSpec, trigger: str) -> str:
    """The second label line of a wait's ``advance`` (what it waited for) or ``timeout``
    (how long, and what then) edge."""
    if trigger == "timeout":
        return f"{duration(wait.timeout or 0)} → {wait.on_timeout.value}"
    return f"on signal {wait.signal}" if wait.signal is not None else _when_due(wait)


def _when_due(timer: WaitSpec) -> str:
    """When a timer fires: ``after 1h``, ``after <callable>`` or ``at <callable>``."""
    if timer.at is not None:
        return f"at {callable_name(timer.at)}"
    after = timer.after
    return f"after {callable_name(after) if callable(after) else duration(after or 0)}"


def _wait_lines(wait: WaitSpec) -> list[str]:
    """What a wait's node says: its signal and payload class and timeout, or its time."""
    if wait.signal is None:
        return [f"timer: {_when_due(wait)}"]
    payload = f" ({wait.payload.__name__})" if wait.payload is not None else ""
    return [
        f"signal {wait.signal}{payload}",
        f"timeout {duration(wait.timeout or 0)} → {wait.on_timeout.value}",
    ]


def _guard_name(func: object) -> str:
    # The machine keeps a guard by name; a callable (never the case today) by its name.
    return func if isinstance(func, str) else str(getattr(func, "__name__", "guard"))


def _nodes(spec: SagaSpec, states: Sequence[str]) -> list[Node]:
    by_state: dict[str, tuple[str, StepSpec]] = {}
    by_group = {g.name: g for g in spec.groups}
    for s in spec.steps:
        if s.group is not None:
            continue
        role = "step" if s.wait is None else "timer" if s.wait.is_timer else "wait"
        by_state[s.name] = (role, s)
        if s.compensation is not None:
            by_state[compensation_state(s.name)] = ("compensating", s)
    undo_of = {compensation_state(g.name): g for g in spec.groups}
    chor = spec.cls.__dict__.get(CHOREOGRAPHY_ATTRIBUTE)
    participants = {} if chor is None else {r.name: r.participant for r in chor.roles}
    nodes = []
    for state in states:
        if state in by_group:
            g = by_group[state]
            nodes.append(Node(state, "group", tuple(group_lines(g)), None, g))
        elif state in undo_of:
            g = undo_of[state]
            comps = [
                s.compensation_name for s in spec.steps[g.first : g.last + 1]
                if s.compensation_name is not None
            ]
            said = (f"undo by {', '.join(comps)}", f"{g.compensation.value}")
            nodes.append(Node(state, "compensating", said, None, g))
        elif state == NOT_STARTED:
            nodes.append(Node(state, "start", (), None))
        elif state in TERMINALS:
            nodes.append(Node(state, state, (), None))
        elif state in by_state:
            role, s = by_state[state]
            lines: list[str] = []
            if role in ("wait", "timer") and s.wait is not None:  # its kind goes unsaid
                lines += _wait_lines(s.wait)
                if s.guard_name is not None:
                    lines.append(f"when {s.guard_name}")
            elif role == "step":
                lines += _step_lines(s)
            else:
                lines.append(f"undo by {s.compensation_name}")
                if s.each is not None:
                    lines.append(f"each item, {s.each.compensation.value}")
            if s.name in participants:  # a choreography: who runs it
                lines.insert(0, f"by {participants[s.name]}")
            nodes.append(Node(state, role, tuple(lines), s))
        else:  # a state this module does not know yet: drawn plainly, never dropped
            nodes.append(Node(state, "other", (), None))
    return nodes


# --------------------------------------------------------------------------- a run

def _run_of(spec: SagaSpec, obj: SagaRecord | SagaResult) -> Run:
    """What a run did: the path it recorded, and each state's outcome from its steps."""
    names = [s.name for s in spec.steps]
    if [s.name for s in obj.steps[: len(names)]] != names:
        raise ValueError(
            f"the record of saga {obj.saga_id!r} has steps {[s.name for s in obj.steps]}, "
            f"but {spec.name!r} has {names}: pass the saga class that made it (saga=...)"
        )
    path = list(obj.path)
    if isinstance(obj, SagaRecord):
        current = obj.state
    elif path:
        current = path[-1][2]
    else:
        current = _END_OF.get(obj.status, NOT_STARTED)
    outcomes: dict[str, str] = {}
    notes: dict[str, str] = {}
    if path:
        outcomes[NOT_STARTED] = "started"
    cut_short = obj.status is not SagaStatus.RUNNING  # a step left RUNNING was interrupted
    steps = {s.name: s for s in spec.steps}
    for name, sr in zip(names, obj.steps[: len(names)], strict=True):
        attempts = f"{sr.attempts} attempts" if sr.attempts > 1 else ""
        wait = steps[name].wait
        if sr.status is StepStatus.WAITING:
            outcomes[name], notes[name] = "waiting", _parked(obj)
        elif sr.status is StepStatus.REJECTED:
            outcomes[name] = "rejected"
            notes[name] = ", ".join(filter(None, ["REJECTED", _short(sr.error, 60)]))
        elif sr.status is StepStatus.EXPIRED:
            outcomes[name] = "expired"
            waited = f"no signal within {duration(wait.timeout)}" if (
                wait is not None and wait.timeout is not None) else ""
            notes[name] = ", ".join(filter(None, ["TIMED OUT", waited]))
        elif sr.status is StepStatus.COMPLETED:
            outcomes[name], notes[name] = "done", ", ".join(filter(None, ["done", attempts]))
        elif sr.status is StepStatus.SKIPPED:
            outcomes[name], notes[name] = "skipped", "skipped"
        elif sr.status in (StepStatus.FAILED, StepStatus.TIMED_OUT):
            what = "TIMED OUT" if sr.status is StepStatus.TIMED_OUT else "FAILED"
            outcomes[name] = "failed"
            notes[name] = ", ".join(filter(None, [what, attempts, _short(sr.error)]))
        elif sr.status is StepStatus.RUNNING:
            attempt = max(sr.attempts, 1)
            outcomes[name] = "failed" if cut_short else "running"
            notes[name] = f"{'interrupted' if cut_short else 'running'}, attempt {attempt}"
        undo = compensation_state(name)
        if sr.compensation is CompensationStatus.COMPENSATED:
            outcomes[undo], notes[undo] = "undone", "undone"
        elif sr.compensation is CompensationStatus.FAILED:
            outcomes[undo] = "undo_failed"
            notes[undo] = ", ".join(
                filter(None, ["COULD NOT BE UNDONE", _short(sr.compensation_error)])
            )
        elif sr.compensation is CompensationStatus.RUNNING:
            outcomes[undo], notes[undo] = "undoing", "undoing"
        elif sr.compensation is CompensationStatus.PENDING:
            outcomes[undo], notes[undo] = "pending", "to undo"
    _groups_run(spec, obj, outcomes, notes)
    if current in TERMINALS:
        outcomes[current] = "reached"
    if obj.resolution:
        notes[current] = f"resolved by hand: {_short(obj.resolution)}"
    title = f"{spec.name}: saga {obj.saga_id} {obj.status.value}"
    if isinstance(obj.error, SagaRejected):
        title += f" (rejected at {obj.error.step})" if obj.error.step else " (rejected)"
    elif outcomes.get(current) == "waiting":
        title += f", parked at {current}"
    return Run(title, current, outcomes, notes, frozenset(path))


#: a group's outcome from its members', the first that any member has
_GROUP_OUTCOME = ("failed", "rejected", "running", "waiting", "done", "skipped")
_UNDO_OUTCOME = ("undo_failed", "undoing", "pending", "undone")


def _groups_run(
    spec: SagaSpec, obj: SagaRecord | SagaResult, outcomes: dict[str, str], notes: dict[str, str]
) -> None:
    """A run's groups (from their members' outcomes) and fan-outs (their items by status).
    A member's undo shows on the member (it has no compensating state of its own)."""
    for g in spec.groups:
        names = [s.name for s in spec.steps[g.first : g.last + 1]]
        undo = compensation_state(g.name)
        undos = [outcomes.pop(compensation_state(n), None) for n in names]
        for n, u, in zip(names, undos, strict=True):
            if u is not None:
                notes[n] = ", ".join(filter(None, [notes.get(n), notes.pop(
                    compensation_state(n), None)]))
                outcomes[n] = u
        forward = [outcomes.get(n) for n in names]
        for o in _GROUP_OUTCOME:
            if o in forward and (o not in ("done", "skipped") or None not in forward):
                outcomes[g.name] = o
                break
        for o in _UNDO_OUTCOME:
            if o in undos:
                outcomes[undo] = o
                break
    for s in spec.steps:
        if s.each is None or s.index >= len(obj.steps):
            continue
        sr = obj.steps[s.index]
        items = obj.steps[sr.first_item : sr.first_item + sr.items] if sr.items else []
        if not items:
            continue
        count: dict[str, int] = {}
        for item in items:
            word = item.status.value.lower().replace("_", " ")
            if item.compensation in (CompensationStatus.COMPENSATED, CompensationStatus.FAILED):
                word = "undone" if item.compensation is CompensationStatus.COMPENSATED else (
                    "could not be undone")
            count[word] = count.get(word, 0) + 1
        said = ", ".join(f"{n} {word}" for word, n in count.items())
        notes[s.name] = ", ".join(filter(None, [notes.get(s.name), f"{len(items)} items: {said}"]))


def _parked(obj: SagaRecord | SagaResult) -> str:
    """A parked saga's note at its wait: parked, and (from a record) until when at most."""
    wake = obj.wake_at if isinstance(obj, SagaRecord) else None
    if wake is None:
        return "parked"
    return "parked until " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(wake))


def _short(text: str | None, limit: int = 48) -> str:
    if not text:
        return ""
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 3] + "..."

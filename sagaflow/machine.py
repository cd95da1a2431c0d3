"""A saga class's one state machine, built with ``transitions`` from its steps.

States: ``not_started``; one state per forward step (named as the step: the saga is at
that step) or parallel group; ``compensating_<step>`` per compensatable step (or group:
the reverse chain); and the
terminal ``completed``, ``compensated`` and ``failed``. Triggers:

- ``start``: ``not_started`` to the first step;
- ``advance``: a step is done, on to the next step (or ``completed``);
- ``skip``: a conditional step's guard is false, on to the next step;
- ``compensate``: a step before or at the pivot failed (or the deadline passed, or the
  run was cancelled): to the newest step that needs undoing, or ``compensated`` when
  there is none;
- ``fail``: a retriable step (after the pivot) failed for good, or the pivot timed out
  (it may have taken effect, so it can be neither undone nor assumed undone): to
  ``failed``;
- ``undone`` / ``undo_failed``: a compensation succeeded / failed for good: on to the
  next compensation, or to ``compensated`` (all undone) or ``failed`` (something could
  not be undone);
- ``retry``: an operator retries a FAILED saga: from ``failed`` back to a compensation
  that failed, or to the retriable step (or the pivot) that failed;
- ``timeout``: a wait's time ran out before its signal: on to the next step
  (``on_timeout='continue'``), into the compensation chain (``'compensate'``) or to
  ``failed`` (``'fail'``).

Parallel groups and fan-outs. The forward chain is made of units (:func:`units_of`):
consecutive members of one group are ONE unit, its state named by the group (the saga is
"at" the group while its members run at once); every other step, a fan-out included, is
a unit named by the step. A group's compensating state ``compensating_<group>`` exists
when any member has a compensation (its members are undone there, as a block); a
fan-out's ``compensating_<step>`` undoes its items. Members' guards skip inside the group
(no ``skip`` edge); a group after the pivot (retriable or readonly members: its
``after_pivot``) takes ``fail`` to ``failed`` and ``retry`` back, as a retriable step
does. Walking back for the next compensation, a unit stops the walk only when it
certainly left something to undo: an unconditional compensatable step, a group with an
unconditional compensatable member; never a fan-out (its collection may be empty).

A wait (``@wait``, ``@timer``) is a state like a step's: ``advance`` leaves it when its
signal (or its time) came and its handler returned. A rejection (``SagaRejected``, a
business "no") takes the edges of a failure, ``compensate`` (or ``fail`` after the
pivot): what tells it apart is the run's outcome, not its path.

The machine is built once per class with ``model=None``; runs never add a model.
Instead each run checks every state change against :func:`build_machine`'s set of
allowed ``(source, trigger, destination)``, read off this machine: the ``transitions``
graph is the single source of truth, at the cost of a set lookup per change.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from transitions import Machine

from .spec import GroupSpec, OnTimeout, StepKind, StepSpec

__all__ = [
    "COMPENSATED",
    "COMPENSATING_PREFIX",
    "COMPLETED",
    "FAILED",
    "NOT_STARTED",
    "RESERVED_NAMES",
    "TERMINAL_STATES",
    "Unit",
    "build_machine",
    "check_graph",
    "compensation_state",
    "is_reserved",
    "units_of",
]

NOT_STARTED = "not_started"
COMPLETED = "completed"
COMPENSATED = "compensated"
FAILED = "failed"
TERMINAL_STATES = frozenset({COMPLETED, COMPENSATED, FAILED})
#: State names of every machine; a step may not be called by one of them.
RESERVED_NAMES = frozenset({NOT_STARTED, *TERMINAL_STATES})
#: A step's compensating state is this prefix and the step's name.
COMPENSATING_PREFIX = "compensating_"

Edge = tuple[str, str, str]


def compensation_state(step: str) -> str:
    """The state a saga is in while it compensates ``step``."""
    return COMPENSATING_PREFIX + step


def is_reserved(name: str) -> bool:
    """Whether a step called ``name`` would clash with a state every machine has."""
    return name in RESERVED_NAMES or name.startswith(COMPENSATING_PREFIX)


@attrs.frozen
class Unit:
    """A state of the forward chain: one step, or a parallel group's members (run at
    once). ``undo``: it has a compensating state (a group: any member has a
    compensation); ``certain``: once it ran, something is certainly left to undo (an
    unconditional compensatable step, a group with an unconditional compensatable
    member; never a fan-out, whose collection may be empty)."""

    name: str
    steps: tuple[StepSpec, ...]
    group: GroupSpec | None
    undo: bool
    certain: bool

    @property
    def step(self) -> StepSpec:
        return self.steps[0]


def units_of(steps: Sequence[StepSpec], groups: Sequence[GroupSpec] = ()) -> list[Unit]:
    """The forward chain: consecutive members of one group make one unit (named by the
    group); every other step (a fan-out too) is a unit named by the step."""
    units: list[Unit] = []
    i = 0
    while i < len(steps):
        s = steps[i]
        if s.group is None:
            undo = s.compensation is not None
            certain = undo and s.when is None and s.each is None
            units.append(Unit(s.name, (s,), None, undo, certain))
            i += 1
            continue
        g = groups[s.group]
        j = i
        while j < len(steps) and steps[j].group == s.group:
            j += 1
        members = tuple(steps[i:j])
        undo = any(m.compensation is not None for m in members)
        certain = any(m.compensation is not None and m.when is None for m in members)
        units.append(Unit(g.name, members, g, undo, certain))
        i = j
    return units


def _undo_targets(units: Sequence[Unit], below: int) -> list[str]:
    """States a compensation chain can go to after unit ``below`` (exclusive).

    Walking back, every unit with a compensation is a possible next one; one that may
    have left nothing to undo (a conditional step, a fan-out of perhaps no items, a group
    whose compensatable members are all conditional) lets the walk go on past it; it
    stops at the first that certainly did. If it never stops, nothing may be left.
    """
    targets: list[str] = []
    for u in reversed(units[:below]):
        if not u.undo:
            continue
        targets.append(compensation_state(u.name))
        if u.certain:
            return targets
    targets.append("")  # stands for: nothing left to undo
    return targets


def build_machine(
    saga_name: str, steps: Sequence[StepSpec], groups: Sequence[GroupSpec] = ()
) -> tuple[Machine, frozenset[Edge]]:
    """The ``transitions`` machine of a saga and its allowed (source, trigger, dest)."""
    units = units_of(steps, groups)
    forward = [u.name for u in units]
    states = [NOT_STARTED, *forward]
    states += [compensation_state(u.name) for u in units if u.undo]
    states += [COMPLETED, COMPENSATED, FAILED]

    # (source, trigger, dest, guard that must be false): the guard is a skip's ``when``
    moves: list[tuple[str, str, str, str | None]] = [(NOT_STARTED, "start", forward[0], None)]
    for i, u in enumerate(units):
        s = u.step
        nxt = forward[i + 1] if i + 1 < len(units) else COMPLETED
        moves.append((u.name, "advance", nxt, None))
        if u.group is None and s.when is not None:
            moves.append((u.name, "skip", nxt, s.guard_name))
        # A step that timed out may have taken effect, so its own compensation comes first
        # (a group's: a member that failed or timed out, or its completed members).
        targets = [compensation_state(u.name)] if u.undo else []
        targets += _undo_targets(units, i)
        undo = [dest or COMPENSATED for dest in dict.fromkeys(targets)]
        if u.group is None and s.wait is not None and s.wait.signal is not None:
            on_timeout = s.wait.on_timeout
            if on_timeout is OnTimeout.CONTINUE:
                moves.append((u.name, "timeout", nxt, None))
            elif on_timeout is OnTimeout.FAIL:
                moves.append((u.name, "timeout", FAILED, None))
            else:
                moves += [(u.name, "timeout", dest, None) for dest in undo]
        if (u.group is not None and u.group.after_pivot) or (
            u.group is None and s.kind is StepKind.RETRIABLE
        ):
            moves.append((u.name, "fail", FAILED, None))
            continue
        if u.group is None and s.kind is StepKind.PIVOT:
            # A pivot that timed out may have taken effect: neither way is safe.
            moves.append((u.name, "fail", FAILED, None))
        for dest in undo:
            moves.append((u.name, "compensate", dest, None))
    for i, u in enumerate(units):
        if not u.undo:
            continue
        source = compensation_state(u.name)
        for dest in _undo_targets(units, i):
            if dest:
                moves.append((source, "undone", dest, None))
                moves.append((source, "undo_failed", dest, None))
            else:
                moves.append((source, "undone", COMPENSATED, None))
                # Reached when an earlier (newer) compensation had already failed.
                moves.append((source, "undone", FAILED, None))
                moves.append((source, "undo_failed", FAILED, None))
    for u in units:
        if u.undo:
            moves.append((FAILED, "retry", compensation_state(u.name), None))
        elif (u.group is not None and u.group.after_pivot) or (
            u.group is None and u.step.kind in (StepKind.RETRIABLE, StepKind.PIVOT)
        ):
            moves.append((FAILED, "retry", u.name, None))

    machine = Machine(
        model=None, states=states, initial=NOT_STARTED, auto_transitions=False, name=saga_name
    )
    # Events and transitions made with the machine's own classes, as add_transition
    # would make them, without its per-call argument handling: that halves decoration.
    events = machine.events
    for source, trigger, dest, unless in moves:
        event = events.get(trigger)
        if event is None:
            event = events[trigger] = machine.event_cls(trigger, machine)
        event.add_transition(
            machine.transition_cls(source, dest, unless=None if unless is None else [unless])
        )
    allowed = frozenset(
        (source, trigger, t.dest)
        for trigger, event in events.items()
        for source, ts in event.transitions.items()
        for t in ts
        if t.dest is not None  # internal transitions have none; sagaflow makes none
    )
    return machine, allowed


def check_graph(states: Sequence[str], allowed: frozenset[tuple[str, str, str]]) -> list[str]:
    """Problems with the machine's graph: states a run cannot reach, or cannot leave
    for a terminal state. ``failed`` may be unreachable (nothing can fail for good).

    The machine is built from validated steps, so a problem here is a bug in sagaflow;
    checking once per class makes sure no run can ever be trapped.
    """
    forward: dict[str, set[str]] = {state: set() for state in states}
    backward: dict[str, set[str]] = {state: set() for state in states}
    for source, _, dest in allowed:
        forward[source].add(dest)
        backward[dest].add(source)

    def closure(start: set[str], edges: dict[str, set[str]]) -> set[str]:
        seen = set(start)
        todo = list(start)
        while todo:
            for nxt in edges[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = closure({NOT_STARTED}, forward)
    finishing = closure(set(TERMINAL_STATES), backward)
    problems = [
        f"state {state!r} cannot be reached from {NOT_STARTED!r}"
        for state in states
        if state not in reachable and state != FAILED
    ]
    problems += [
        f"state {state!r} cannot reach a terminal state"
        for state in states
        if state not in finishing
    ]
    return problems

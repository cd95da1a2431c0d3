"""A saga class's one state machine, built with ``transitions`` from its steps.

States: ``not_started``; one state per forward step (named as the step: the saga is at
that step); ``compensating_<step>`` per compensatable step (the reverse chain); and the
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

from transitions import Machine

from .spec import OnTimeout, StepKind, StepSpec

__all__ = [
    "COMPENSATED",
    "COMPENSATING_PREFIX",
    "COMPLETED",
    "FAILED",
    "NOT_STARTED",
    "RESERVED_NAMES",
    "TERMINAL_STATES",
    "build_machine",
    "check_graph",
    "compensation_state",
    "is_reserved",
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


def _undo_targets(steps: Sequence[StepSpec], below: int) -> list[str]:
    """States a compensation chain can go to after index ``below`` (exclusive).

    Walking back, every compensatable step is a possible next one; a conditional one
    may have been skipped, so the walk goes on past it, and stops at the first
    unconditional one (it certainly ran). If it never stops, nothing may be left.
    """
    targets: list[str] = []
    for s in reversed(steps[:below]):
        if s.compensation is None:
            continue
        targets.append(compensation_state(s.name))
        if s.when is None:
            return targets
    targets.append("")  # stands for: nothing left to undo
    return targets


def build_machine(saga_name: str, steps: Sequence[StepSpec]) -> tuple[Machine, frozenset[Edge]]:
    """The ``transitions`` machine of a saga and its allowed (source, trigger, dest)."""
    forward = [s.name for s in steps]
    states = [NOT_STARTED, *forward]
    states += [compensation_state(s.name) for s in steps if s.compensation is not None]
    states += [COMPLETED, COMPENSATED, FAILED]

    # (source, trigger, dest, guard that must be false): the guard is a skip's ``when``
    moves: list[tuple[str, str, str, str | None]] = [(NOT_STARTED, "start", forward[0], None)]
    for i, s in enumerate(steps):
        nxt = forward[i + 1] if i + 1 < len(steps) else COMPLETED
        moves.append((s.name, "advance", nxt, None))
        if s.when is not None:
            moves.append((s.name, "skip", nxt, s.guard_name))
        # A step that timed out may have taken effect, so its own compensation comes first.
        targets = [compensation_state(s.name)] if s.compensation is not None else []
        targets += _undo_targets(steps, i)
        undo = [dest or COMPENSATED for dest in dict.fromkeys(targets)]
        if s.wait is not None and s.wait.signal is not None:
            on_timeout = s.wait.on_timeout
            if on_timeout is OnTimeout.CONTINUE:
                moves.append((s.name, "timeout", nxt, None))
            elif on_timeout is OnTimeout.FAIL:
                moves.append((s.name, "timeout", FAILED, None))
            else:
                moves += [(s.name, "timeout", dest, None) for dest in undo]
        if s.kind is StepKind.RETRIABLE:
            moves.append((s.name, "fail", FAILED, None))
            continue
        if s.kind is StepKind.PIVOT:
            # A pivot that timed out may have taken effect: neither way is safe.
            moves.append((s.name, "fail", FAILED, None))
        for dest in undo:
            moves.append((s.name, "compensate", dest, None))
    for i, s in enumerate(steps):
        if s.compensation is None:
            continue
        source = compensation_state(s.name)
        for dest in _undo_targets(steps, i):
            if dest:
                moves.append((source, "undone", dest, None))
                moves.append((source, "undo_failed", dest, None))
            else:
                moves.append((source, "undone", COMPENSATED, None))
                # Reached when an earlier (newer) compensation had already failed.
                moves.append((source, "undone", FAILED, None))
                moves.append((source, "undo_failed", FAILED, None))
    for s in steps:
        if s.compensation is not None:
            moves.append((FAILED, "retry", compensation_state(s.name), None))
        elif s.kind in (StepKind.RETRIABLE, StepKind.PIVOT):
            moves.append((FAILED, "retry", s.name, None))

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

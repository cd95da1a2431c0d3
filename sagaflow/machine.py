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
  that failed, or to the retriable step (or the pivot) that failed.

The machine is built once per class with ``model=None``; runs never add a model.
Instead each run checks every state change against :func:`build_machine`'s set of
allowed ``(source, trigger, destination)``, read off this machine: the ``transitions``
graph is the single source of truth, at the cost of a set lookup per change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from transitions import Machine

if TYPE_CHECKING:
    from .definition import StepSpec

__all__ = [
    "COMPENSATED",
    "COMPLETED",
    "FAILED",
    "NOT_STARTED",
    "TERMINAL_STATES",
    "build_machine",
    "check_graph",
    "compensation_state",
]

NOT_STARTED = "not_started"
COMPLETED = "completed"
COMPENSATED = "compensated"
FAILED = "failed"
TERMINAL_STATES = frozenset({COMPLETED, COMPENSATED, FAILED})


def compensation_state(step: str) -> str:
    """The state a saga is in while it compensates ``step``."""
    return "compensating_" + step


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


def build_machine(
    saga_name: str, steps: Sequence[StepSpec]
) -> tuple[Machine, frozenset[tuple[str, str, str]]]:
    """The ``transitions`` machine of a saga and its allowed (source, trigger, dest)."""
    from .definition import StepKind

    forward = [s.name for s in steps]
    states = [NOT_STARTED, *forward]
    states += [compensation_state(s.name) for s in steps if s.compensation is not None]
    states += [COMPLETED, COMPENSATED, FAILED]

    transitions: list[dict[str, object]] = [
        {"trigger": "start", "source": NOT_STARTED, "dest": forward[0]}
    ]
    for i, s in enumerate(steps):
        nxt = forward[i + 1] if i + 1 < len(steps) else COMPLETED
        transitions.append({"trigger": "advance", "source": s.name, "dest": nxt})
        if s.when is not None:
            transitions.append(
                {"trigger": "skip", "source": s.name, "dest": nxt, "unless": [s.guard_name]}
            )
        if s.kind is StepKind.RETRIABLE:
            transitions.append({"trigger": "fail", "source": s.name, "dest": FAILED})
            continue
        if s.kind is StepKind.PIVOT:
            # A pivot that timed out may have taken effect: neither way is safe.
            transitions.append({"trigger": "fail", "source": s.name, "dest": FAILED})
        # A step that timed out may have taken effect, so its own compensation comes first.
        targets = [compensation_state(s.name)] if s.compensation is not None else []
        targets += _undo_targets(steps, i)
        for dest in dict.fromkeys(targets):
            transitions.append(
                {"trigger": "compensate", "source": s.name, "dest": dest or COMPENSATED}
            )
    for i, s in enumerate(steps):
        if s.compensation is None:
            continue
        source = compensation_state(s.name)
        for dest in _undo_targets(steps, i):
            if dest:
                transitions.append({"trigger": "undone", "source": source, "dest": dest})
                transitions.append({"trigger": "undo_failed", "source": source, "dest": dest})
            else:
                transitions.append({"trigger": "undone", "source": source, "dest": COMPENSATED})
                # Reached when an earlier (newer) compensation had already failed.
                transitions.append({"trigger": "undone", "source": source, "dest": FAILED})
                transitions.append({"trigger": "undo_failed", "source": source, "dest": FAILED})

    for s in steps:
        if s.compensation is not None:
            transitions.append(
                {"trigger": "retry", "source": FAILED, "dest": compensation_state(s.name)}
            )
        elif s.kind in (StepKind.RETRIABLE, StepKind.PIVOT):
            transitions.append({"trigger": "retry", "source": FAILED, "dest": s.name})

    machine = Machine(
        model=None,
        states=states,
        transitions=transitions,
        initial=NOT_STARTED,
        auto_transitions=False,
        name=saga_name,
    )
    allowed = frozenset(
        (source, trigger, t.dest)
        for trigger, event in machine.events.items()
        for source, ts in event.transitions.items()
        for t in ts
        if t.dest is not None
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

"""Diagrams of a saga's state machine: DOT, Mermaid, SVG and PNG, and a run's place in it.

The states and transitions are read from the class's own ``transitions`` machine
(``spec.machine``), never re-derived from the steps, so the picture is the machine
every run is checked against. The steps only annotate it: kind, guard, compensation.

Given a run (a :class:`~sagaflow.SagaRecord` or :class:`~sagaflow.SagaResult`) the same
diagram shows the path taken: steps done, skipped, failed; compensations done, failed
or still pending; the current state outlined. DOT and Mermaid are plain text and need
nothing; SVG and PNG are laid out by Graphviz, through ``pygraphviz`` (its wheels
bundle Graphviz) or else a ``dot`` binary on PATH.

Text output is byte-stable (no ids, times or set order), so generated files can be
checked into a repository and tested for staleness.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import attrs

from . import events as ev
from .definition import SagaSpec, StepKind, StepSpec, is_saga, spec_of
from .errors import GraphvizNotFound
from .machine import COMPENSATED, COMPLETED, FAILED, NOT_STARTED, compensation_state
from .records import CompensationStatus, SagaRecord, SagaResult, SagaStatus, StepRecord, StepStatus

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "GraphvizNotFound",
    "diagram",
    "format_for",
    "render",
    "to_dot",
    "to_mermaid",
    "write",
]

Format = Literal["dot", "mermaid", "svg", "png"]
#: The formats :func:`render` knows, text first.
FORMATS: tuple[Format, ...] = ("dot", "mermaid", "svg", "png")
#: The file suffix :func:`write` and the CLI use for each format.
SUFFIXES: dict[str, str] = {"dot": ".dot", "mermaid": ".mmd", "svg": ".svg", "png": ".png"}
_FORMAT_OF_SUFFIX = {
    ".dot": "dot",
    ".gv": "dot",
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".svg": "svg",
    ".png": "png",
}
# --------------------------------------------------------------------------- the graph

@attrs.frozen
class _Edge:
    source: str
    trigger: str
    dest: str
    guard: str  # "" or "unless is_large" / "if is_large", read off the transition


@attrs.frozen
class _Node:
    state: str
    role: str  # start, step, compensating, completed, compensated, failed, other
    lines: tuple[str, ...]  # label lines after the state name
    step: StepSpec | None


@attrs.frozen
class _Run:
    """What a run did, as diagram styling: outcome per state, transitions taken."""

    title: str
    current: str
    outcomes: dict[str, str]  # state -> done, skipped, failed, running, undone, ...
    notes: dict[str, str]  # state -> a short line about what happened there
    taken: frozenset[tuple[str, str, str]]


# Triggers in the order a reader meets them; edges are sorted by it for stable output.
_TRIGGER_ORDER = (
    "start", "advance", "skip", "fail", "compensate", "undone", "undo_failed", "retry"
)
_TERMINALS = (COMPLETED, COMPENSATED, FAILED)


def _guard_name(func: object) -> str:
    name = func if isinstance(func, str) else getattr(func, "__name__", None) or repr(func)
    # A callable object's repr carries its address: drop it so output stays byte-stable.
    return re.sub(r" at 0x[0-9A-Fa-f]+", "", str(name))


def _edges(spec: SagaSpec) -> tuple[list[str], list[_Edge]]:
    """The machine's states (in its order) and every transition, in a stable order."""
    machine = spec.machine
    states = [str(s) for s in machine.states]
    order = {s: i for i, s in enumerate(states)}
    edges: list[_Edge] = []
    for trigger, event in machine.events.items():
        for source, transitions in event.transitions.items():
            for t in transitions:
                guards = [
                    ("if " if c.target else "unless ") + _guard_name(c.func)
                    for c in getattr(t, "conditions", ())
                ]
                if trigger == "retry" and not guards:
                    guards = ["by an operator"]
                edges.append(_Edge(str(source), str(trigger), str(t.dest), ", ".join(guards)))
    rank = {t: i for i, t in enumerate(_TRIGGER_ORDER)}
    edges.sort(
        key=lambda e: (
            order.get(e.source, len(order)),
            rank.get(e.trigger, len(rank)),
            e.trigger,
            order.get(e.dest, len(order)),
        )
    )
    return states, edges


def _nodes(spec: SagaSpec, states: Sequence[str]) -> list[_Node]:
    by_state: dict[str, tuple[str, StepSpec]] = {}
    for s in spec.steps:
        by_state[s.name] = ("step", s)
        if s.compensation is not None:
            by_state[compensation_state(s.name)] = ("compensating", s)
    nodes = []
    for state in states:
        if state == NOT_STARTED:
            nodes.append(_Node(state, "start", (), None))
        elif state in _TERMINALS:
            nodes.append(_Node(state, state, (), None))
        elif state in by_state:
            role, s = by_state[state]
            lines: list[str] = []
            if role == "step":
                if s.kind is StepKind.PIVOT:
                    lines.append("pivot (point of no return)")
                elif s.kind is StepKind.RETRIABLE:
                    n = s.retry.attempts
                    lines.append(f"retriable (up to {n} attempt{'s' if n != 1 else ''})")
                elif s.kind is StepKind.READONLY:
                    lines.append("readonly")
                if s.guard_name is not None:
                    lines.append(f"when {_guard_name(s.guard_name)}")
            else:
                lines.append(f"undo by {s.compensation_name}")
            nodes.append(_Node(state, role, tuple(lines), s))
        else:  # a state this module does not know yet: drawn plainly, never dropped
            nodes.append(_Node(state, "other", (), None))
    return nodes


# --------------------------------------------------------------------------- a run

def _short(text: str | None, limit: int = 48) -> str:
    if not text:
        return ""
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def _from_steps(
    spec: SagaSpec, obj: SagaRecord | SagaResult
) -> tuple[dict[str, str], dict[str, str], set[tuple[str, str, str]], str]:
    """Each state's outcome and note, and the path and end state rebuilt from step records.

    The engine's rules make this exact: forward steps run in order until one does not
    complete (or skip); compensation then visits, newest first, the steps marked for
    undoing, each undone or not; a retriable step's failure goes straight to ``failed``.
    """
    steps: Sequence[StepRecord] = obj.steps
    status = obj.status
    if [s.name for s in steps] != [s.name for s in spec.steps]:
        raise ValueError(
            f"the record of saga {obj.saga_id!r} has steps "
            f"{[s.name for s in steps]}, but {spec.name!r} has "
            f"{[s.name for s in spec.steps]}: pass the saga class that made it (saga=...)"
        )
    outcomes: dict[str, str] = {}
    notes: dict[str, str] = {}
    taken: set[tuple[str, str, str]] = set()
    names = [s.name for s in spec.steps]

    def go(source: str, trigger: str, dest: str) -> str:
        taken.add((source, trigger, dest))
        return dest

    state = NOT_STARTED
    if status is not SagaStatus.NOT_STARTED:
        outcomes[NOT_STARTED] = "started"
        state = go(NOT_STARTED, "start", names[0])
    stopped: int | None = None
    for i, sr in enumerate(steps):
        if state != names[i]:
            break
        nxt = names[i + 1] if i + 1 < len(names) else COMPLETED
        attempts = f"{sr.attempts} attempts" if sr.attempts > 1 else ""
        if sr.status is StepStatus.COMPLETED:
            outcomes[state] = "done"
            notes[state] = ", ".join(filter(None, ["done", attempts]))
            state = go(state, "advance", nxt)
        elif sr.status is StepStatus.SKIPPED:
            outcomes[state] = "skipped"
            notes[state] = "skipped"
            state = go(state, "skip", nxt)
        else:
            stopped = i
            if sr.status in (StepStatus.FAILED, StepStatus.TIMED_OUT):
                outcomes[state] = "failed"
                what = "TIMED OUT" if sr.status is StepStatus.TIMED_OUT else "FAILED"
                notes[state] = ", ".join(filter(None, [what, attempts, _short(sr.error)]))
            elif sr.status is StepStatus.RUNNING:
                outcomes[state] = "running"
                notes[state] = f"running, attempt {max(sr.attempts, 1)}"
            break

    if stopped is not None and status in (
        SagaStatus.COMPENSATING,
        SagaStatus.COMPENSATED,
        SagaStatus.FAILED,
    ):
        if spec.steps[stopped].kind is StepKind.RETRIABLE:
            state = go(state, "fail", FAILED)
        else:
            undo = [
                j
                for j in range(len(steps) - 1, -1, -1)
                if steps[j].compensation is not CompensationStatus.NOT_NEEDED
            ]
            if not undo:
                state = go(state, "compensate", COMPENSATED)
            else:
                state = go(state, "compensate", compensation_state(names[undo[0]]))
                any_failed = False
                for k, j in enumerate(undo):
                    sr = steps[j]
                    here = compensation_state(names[j])
                    if sr.compensation is CompensationStatus.COMPENSATED:
                        trigger, outcome, note = "undone", "undone", "undone"
                    elif sr.compensation is CompensationStatus.FAILED:
                        any_failed = True
                        trigger, outcome = "undo_failed", "undo_failed"
                        note = ", ".join(
                            filter(None, ["COULD NOT BE UNDONE", _short(sr.compensation_error)])
                        )
                    else:
                        running = sr.compensation is CompensationStatus.RUNNING
                        outcomes[here] = "undoing" if running else "pending"
                        notes[here] = "undoing" if running else "to undo"
                        for later in undo[k + 1 :]:
                            outcomes[compensation_state(names[later])] = "pending"
                            notes[compensation_state(names[later])] = "to undo"
                        break
                    outcomes[here] = outcome
                    notes[here] = note
                    end = FAILED if any_failed else COMPENSATED
                    nxt = compensation_state(names[undo[k + 1]]) if k + 1 < len(undo) else end
                    state = go(here, trigger, nxt)

    if status is not SagaStatus.RUNNING:
        for i, sr in enumerate(steps):
            if sr.status is StepStatus.RUNNING:  # cut short: cancelled while waiting
                outcomes[names[i]] = "failed"
                notes[names[i]] = f"interrupted, attempt {max(sr.attempts, 1)}"
    return outcomes, notes, taken, state


def _run_of(spec: SagaSpec, obj: SagaRecord | SagaResult) -> _Run:
    """What a run did, drawn: outcomes from its step records, its path from its history.

    The history replays the exact path, operator retries included; when it cannot (a
    history this module does not understand), the path rebuilt from the step records
    is used, and for a record its own ``state`` is the current state.
    """
    outcomes, notes, taken, state = _from_steps(spec, obj)
    status = obj.status
    replayed = _replay(spec, obj.history)
    if isinstance(obj, SagaRecord):
        fits = replayed is not None and replayed[1] == obj.state
    else:  # a result has no state: its status, or the rebuilt path, must agree
        fits = replayed is not None and _agrees(replayed[1], status)
        fits = fits and (status.is_terminal or (replayed is not None and replayed[1] == state))
    if fits and replayed is not None:
        taken, state = set(replayed[0]), replayed[1]
    elif isinstance(obj, SagaRecord):
        state = obj.state
    if state in _TERMINALS:
        outcomes[state] = "reached"
    if getattr(obj, "resolution", None):
        notes[state] = f"resolved by hand: {_short(obj.resolution)}"
    label = f"{spec.name}: saga {obj.saga_id} {status.value}"
    return _Run(label, state, outcomes, notes, frozenset(taken))


_STATUS_STATES = {
    SagaStatus.COMPLETED: {COMPLETED},
    SagaStatus.COMPENSATED: {COMPENSATED},
    SagaStatus.FAILED: {FAILED},
}


def _agrees(state: str, status: SagaStatus) -> bool:
    """Whether a replayed end state fits a run's status (a result has no state)."""
    expected = _STATUS_STATES.get(status)
    return state not in _TERMINALS if expected is None else state in expected


def _replay(
    spec: SagaSpec, history: Sequence[ev.LifecycleEvent]
) -> tuple[list[tuple[str, str, str]], str] | None:
    """The transitions a run took, replayed from its lifecycle events; ``None`` when the
    history does not make a path of this machine (then the step records are used).

    A move's destination shows in the event after it (the next step or compensation
    started, or the saga's end), its trigger in the event before it (a failure, an
    undo done or failed, an operator's retry).
    """
    names = [s.name for s in spec.steps]
    kinds = {s.name: s.kind for s in spec.steps}
    following = {n: names[i + 1] if i + 1 < len(names) else COMPLETED for i, n in enumerate(names)}
    path: list[tuple[str, str, str]] = []
    state = NOT_STARTED
    pending: str | None = None

    def go(trigger: str | None, dest: str) -> None:
        nonlocal state, pending
        if trigger is None:  # no event named it: the one move the machine has here
            forward = "fail" if dest == FAILED else "compensate"
            trigger = forward if state in kinds else "undone"
        path.append((state, trigger, dest))
        state, pending = dest, None

    for event in history:
        step = event.step
        if isinstance(event, ev.SagaStarted):
            if state == NOT_STARTED and names:
                go("start", names[0])
        elif isinstance(event, ev.StepStarted) and step is not None:
            if state != step:
                go(pending or "advance", step)
        elif isinstance(event, ev.StepCompleted) and step in following:
            go("advance", following[step])
        elif isinstance(event, ev.StepSkipped) and step in following:
            go("skip", following[step])
        elif isinstance(event, ev.StepFailed) and step in kinds:
            if kinds[step] is StepKind.RETRIABLE:
                go("fail", FAILED)
            else:
                pending = "compensate"
        elif isinstance(event, ev.CompensationStarted) and step is not None:
            if state != compensation_state(step):
                go(pending, compensation_state(step))
        elif isinstance(event, ev.CompensationCompleted):
            pending = "undone"
        elif isinstance(event, ev.CompensationFailed):
            pending = "undo_failed"
        elif isinstance(event, ev.OperatorAction) and event.action == "retry":
            pending = "retry"
        elif isinstance(event, ev.SagaCompensated) and state != COMPENSATED:
            go(pending, COMPENSATED)
        elif isinstance(event, ev.SagaFailed) and state != FAILED:
            go(pending, FAILED)
    if not all(move in spec.transitions for move in path):
        return None
    return path, state


# --------------------------------------------------------------------------- DOT

_FONT = "Helvetica"
_ROLE_STYLE: dict[str, dict[str, str]] = {
    "start": {"shape": "ellipse", "style": "filled", "fillcolor": "#ffffff", "color": "#5f6368"},
    "step": {"fillcolor": "#e8f0fe", "color": "#3c6bc4"},
    "compensating": {
        "style": "rounded,filled,dashed",
        "fillcolor": "#fff4e0",
        "color": "#b26a00",
    },
    "completed": {"peripheries": "2", "fillcolor": "#d4edda", "color": "#2e7d32"},
    "compensated": {"peripheries": "2", "fillcolor": "#fff3cd", "color": "#b26a00"},
    "failed": {"peripheries": "2", "fillcolor": "#f8d7da", "color": "#c62828"},
    "other": {"fillcolor": "#ffffff", "color": "#5f6368"},
}
_KIND_STYLE: dict[StepKind, dict[str, str]] = {
    StepKind.READONLY: {"fillcolor": "#f1f3f4", "color": "#5f6368"},
    StepKind.PIVOT: {"fillcolor": "#dbe6fb", "color": "#1a3d8f", "penwidth": "2",
                     "peripheries": "2"},
    StepKind.RETRIABLE: {"fillcolor": "#ede7f6", "color": "#5e35b1"},
}
_TRIGGER_STYLE: dict[str, dict[str, str]] = {
    "start": {"color": "#3c6bc4"},
    "advance": {"color": "#3c6bc4"},
    "skip": {"color": "#5f6368", "style": "dashed"},
    "fail": {"color": "#c62828"},
    "compensate": {"color": "#b26a00", "style": "dashed"},
    "undone": {"color": "#b26a00"},
    "undo_failed": {"color": "#c62828", "style": "dashed"},
    "retry": {"color": "#6a1b9a", "style": "dotted"},
}
_LAYOUT = {"start": {"weight": "10"}, "advance": {"weight": "10"}, "skip": {"weight": "2"}}
_OUTCOME_STYLE: dict[str, dict[str, str]] = {
    "started": {"fillcolor": "#ffffff", "color": "#202124", "penwidth": "2"},
    "done": {"fillcolor": "#c8e6c9", "color": "#2e7d32", "penwidth": "2"},
    "skipped": {"fillcolor": "#eeeeee", "color": "#757575", "style": "rounded,filled,dashed"},
    "failed": {"fillcolor": "#ffcdd2", "color": "#c62828", "penwidth": "3"},
    "running": {"fillcolor": "#bbdefb", "color": "#1565c0", "penwidth": "2"},
    "undone": {"fillcolor": "#ffe0b2", "color": "#b26a00", "penwidth": "2"},
    "undo_failed": {"fillcolor": "#ffcdd2", "color": "#c62828", "penwidth": "3"},
    "undoing": {"fillcolor": "#ffe0b2", "color": "#1565c0", "penwidth": "2"},
    "pending": {"fillcolor": "#ffffff", "color": "#b26a00", "style": "rounded,filled,dotted"},
}
_UNVISITED = {"fillcolor": "#fafafa", "color": "#bdbdbd", "fontcolor": "#9e9e9e"}
_CURRENT = {"color": "#1565c0", "penwidth": "4"}


def _q(text: str) -> str:
    """A DOT double-quoted string; newlines become centred line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r", "").replace("\n", "\\n") + '"'


def _attrs(values: dict[str, str]) -> str:
    return ", ".join(f"{k}={_q(v)}" for k, v in values.items())


def _node_style(node: _Node) -> dict[str, str]:
    style = dict(_ROLE_STYLE[node.role])
    if node.role == "step" and node.step is not None:
        style.update(_KIND_STYLE.get(node.step.kind, {}))
    return style


def _dot(spec: SagaSpec, run: _Run | None) -> str:
    states, edges = _edges(spec)
    nodes = _nodes(spec, states)
    title = spec.name if run is None else run.title
    out = [
        f"digraph {_q(spec.name)} {{",
        f"  graph [{_attrs({'label': title, 'labelloc': 't', 'fontname': _FONT, 'fontsize': '14', 'rankdir': 'LR', 'nodesep': '0.35', 'ranksep': '0.55'})}];",  # noqa: E501
        f"  node [{_attrs({'shape': 'box', 'style': 'rounded,filled', 'fontname': _FONT, 'fontsize': '11'})}];",  # noqa: E501
        f"  edge [{_attrs({'fontname': _FONT, 'fontsize': '9'})}];",
    ]
    for node in nodes:
        style = _node_style(node)
        lines = [node.state, *node.lines]
        if run is not None:
            outcome = run.outcomes.get(node.state)
            if outcome == "reached":
                style["penwidth"] = "3"
            elif outcome is not None:
                style.update(_OUTCOME_STYLE[outcome])
            else:
                style.update(_UNVISITED)
            if node.state in run.notes:
                lines.append(run.notes[node.state])
            if node.state == run.current:
                style.update(_CURRENT)
                lines.append("<< current state >>")
        style = {"label": "\n".join(lines), **style}
        out.append(f"  {_q(node.state)} [{_attrs(style)}];")
    # A step and its compensating state share a column: the undo chain reads backwards
    # under the forward chain.
    known = set(states)
    for s in spec.steps:
        twin = compensation_state(s.name)
        if s.name in known and twin in known:
            out.append(f"  {{ rank=same; {_q(s.name)}; {_q(twin)}; }}")
    # ...and the chain ends where it began: compensated and failed at the left.
    ends = [s for s in (NOT_STARTED, COMPENSATED, FAILED) if s in known]
    if len(ends) > 1:
        out.append(f"  {{ rank=same; {'; '.join(_q(s) for s in ends)}; }}")
    for e in edges:
        label = e.trigger if not e.guard else f"{e.trigger}\n{e.guard}"
        style = {"label": label, **_TRIGGER_STYLE.get(e.trigger, {})}
        # Only the forward moves lay the graph out (a straight line, left to right);
        # the others are drawn where their ends fall.
        style.update(_LAYOUT.get(e.trigger, {"constraint": "false"}))
        if run is not None:
            if (e.source, e.trigger, e.dest) in run.taken:
                style.update({"penwidth": "3", "fontcolor": style.get("color", "#000000")})
            else:
                style.update({"color": "#d0d0d0", "fontcolor": "#b0b0b0"})
        out.append(f"  {_q(e.source)} -> {_q(e.dest)} [{_attrs(style)}];")
    out.append("}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- Mermaid

# Words Mermaid's state diagram grammar reserves; a state named so gets another id.
_MERMAID_WORDS = frozenset(
    {"state", "note", "direction", "class", "classDef", "style", "end", "as", "left",
     "right", "of", "click", "accTitle", "accDescr", "hide", "empty", "description",
     "TB", "BT", "LR", "RL", "stateDiagram", "stateDiagram-v2"}
)
# Class name and style per node look; class names differ from every state name a saga
# can have (steps are identifiers, these are camelCase with a suffix no step would take).
_MERMAID_CLASS = {
    "start": "startState fill:#ffffff,stroke:#5f6368",
    "step": "forwardStep fill:#e8f0fe,stroke:#3c6bc4",
    "readonly": "readonlyStep fill:#f1f3f4,stroke:#5f6368",
    "pivot": "pivotStep fill:#dbe6fb,stroke:#1a3d8f,stroke-width:3px",
    "retriable": "retriableStep fill:#ede7f6,stroke:#5e35b1",
    "compensating": "compensatingStep fill:#fff4e0,stroke:#b26a00,stroke-dasharray:5 3",
    "completed": "completedEnd fill:#d4edda,stroke:#2e7d32",
    "compensated": "compensatedEnd fill:#fff3cd,stroke:#b26a00",
    "failed": "failedEnd fill:#f8d7da,stroke:#c62828",
    "other": "otherState fill:#ffffff,stroke:#5f6368",
    # a run's outcomes (the keys of _Run.outcomes, prefixed)
    "run:started": "ranStarted fill:#ffffff,stroke:#202124,stroke-width:2px",
    "run:done": "ranDone fill:#c8e6c9,stroke:#2e7d32,stroke-width:2px",
    "run:skipped": "ranSkipped fill:#eeeeee,stroke:#757575,stroke-dasharray:4 3",
    "run:failed": "ranFailed fill:#ffcdd2,stroke:#c62828,stroke-width:3px",
    "run:running": "ranRunning fill:#bbdefb,stroke:#1565c0,stroke-width:4px",
    "run:undone": "ranUndone fill:#ffe0b2,stroke:#b26a00,stroke-width:2px",
    "run:undo_failed": "ranUndoFailed fill:#ffcdd2,stroke:#c62828,stroke-width:3px",
    "run:undoing": "ranUndoing fill:#ffe0b2,stroke:#1565c0,stroke-width:4px",
    "run:pending": "ranPending fill:#ffffff,stroke:#b26a00,stroke-dasharray:2 2",
    "run:unvisited": "notVisited fill:#fafafa,stroke:#bdbdbd,color:#9e9e9e",
    "run:reached:completed": "reachedCompleted fill:#d4edda,stroke:#1565c0,stroke-width:4px",
    "run:reached:compensated": "reachedCompensated fill:#fff3cd,stroke:#1565c0,stroke-width:4px",
    "run:reached:failed": "reachedFailed fill:#f8d7da,stroke:#1565c0,stroke-width:4px",
}


def _m(text: str) -> str:
    """Text safe inside a Mermaid label: entity codes for what the grammar would read."""
    table = {"#": "#35;", ";": "#59;", "<": "#lt;", ">": "#gt;", ":": "#58;", '"': "#quot;"}
    return "".join(table.get(ch, ch) for ch in " ".join(text.split()))


def _mermaid_ids(states: Sequence[str]) -> dict[str, str]:
    ids: dict[str, str] = {}
    used: set[str] = set()
    for state in states:
        ident = re.sub(r"\W", "_", state) or "state_"
        if ident in _MERMAID_WORDS or ident[0].isdigit():
            ident = f"s_{ident}"
        while ident in used:
            ident += "_"
        used.add(ident)
        ids[state] = ident
    return ids


def _mermaid_look(node: _Node, run: _Run | None) -> str:
    """The key in _MERMAID_CLASS of the one class a node gets."""
    if run is None:
        if node.role == "step" and node.step is not None and node.step.kind in _KIND_STYLE:
            return node.step.kind.value
        return node.role
    outcome = run.outcomes.get(node.state)
    if outcome == "reached":
        return f"run:reached:{node.role}"
    if outcome is None and node.state == run.current:
        outcome = "running"
    if outcome is None:
        # terminals keep their colour so the three ends stay readable
        return node.role if node.role in _TERMINALS else "run:unvisited"
    return f"run:{outcome}"


def _mermaid(spec: SagaSpec, run: _Run | None) -> str:
    states, edges = _edges(spec)
    nodes = _nodes(spec, states)
    ids = _mermaid_ids(states)
    title = spec.name if run is None else run.title
    out = [
        "stateDiagram-v2",
        f"    %% {' '.join(title.split())} (sagaflow)",
        "    direction LR",
    ]
    for node in nodes:
        ident = ids[node.state]
        if ident != node.state:
            out.append(f'    state "{_m(node.state)}" as {ident}')
    out.append(f"    [*] --> {ids[spec.machine.initial]}")
    for e in edges:
        label = e.trigger if not e.guard else f"{e.trigger} ({e.guard})"
        if run is not None and (e.source, e.trigger, e.dest) in run.taken:
            label += " ✔"
        out.append(f"    {ids[e.source]} --> {ids[e.dest]} : {_m(label)}")
    for state in states:
        if state in _TERMINALS:
            out.append(f"    {ids[state]} --> [*]")
    for node in nodes:
        lines = list(node.lines)
        if run is not None and node.state in run.notes:
            lines.append(run.notes[node.state])
        if run is not None and node.state == run.current:
            lines.append("current state")
        for line in lines:
            out.append(f"    {ids[node.state]} : {_m(line)}")
    classes: dict[str, list[str]] = {}
    for node in nodes:
        classes.setdefault(_mermaid_look(node, run), []).append(ids[node.state])
    for look in classes:
        out.append(f"    classDef {_MERMAID_CLASS[look]}")
    for look, members in classes.items():
        out.append(f"    class {','.join(members)} {_MERMAID_CLASS[look].split()[0]}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- SVG / PNG

def _load_pygraphviz() -> Any:
    """The ``pygraphviz`` module, or ``None`` with the reason when it cannot be used."""
    try:
        import pygraphviz
    except (ImportError, OSError) as exc:  # OSError: a wheel whose bundled library fails
        return exc
    return pygraphviz


def _find_dot() -> str | None:
    """The path of a Graphviz ``dot`` binary on PATH, or ``None``."""
    return shutil.which("dot")


def _draw(dot: str, fmt: str) -> bytes:
    """Lay out ``dot`` and render it as ``fmt`` (svg or png) with whichever Graphviz works."""
    why: list[str] = []
    pgv = _load_pygraphviz()
    if isinstance(pgv, BaseException):
        why.append(f"pygraphviz: {type(pgv).__name__}: {pgv}")
    else:
        # Draw to bytes (path=None): pygraphviz 2.0.4 crashed drawing into io.BytesIO.
        data = pgv.AGraph(string=dot).draw(format=fmt, prog="dot")
        return bytes(data)
    binary = _find_dot()
    if binary is None:
        why.append("no `dot` on PATH")
        raise GraphvizNotFound(fmt, why)
    import graphviz

    return bytes(graphviz.Source(dot, engine="dot").pipe(format=fmt))


# --------------------------------------------------------------------------- the API

Diagrammable = Any  # a saga class or instance, a SagaSpec, a SagaRecord or a SagaResult


def _resolve(obj: Diagrammable, saga: object | None) -> tuple[SagaSpec, _Run | None]:
    if isinstance(obj, (SagaRecord, SagaResult)):
        source = saga if saga is not None else obj.data
        if isinstance(source, SagaSpec):
            spec = source
        elif is_saga(source):
            spec = spec_of(source)
        else:
            raise TypeError(
                f"cannot tell which saga class made the run {obj.saga_id!r} (its data is "
                f"{type(obj.data).__name__}): pass it, diagram(run, saga=TheSagaClass)"
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


def to_dot(obj: Diagrammable, *, saga: object | None = None) -> str:
    """The DOT source of ``obj``'s machine (a run's path styled when ``obj`` is a run)."""
    spec, run = _resolve(obj, saga)
    return _dot(spec, run)


def to_mermaid(obj: Diagrammable, *, saga: object | None = None) -> str:
    """The Mermaid ``stateDiagram-v2`` of ``obj``'s machine (a run's path styled)."""
    spec, run = _resolve(obj, saga)
    return _mermaid(spec, run)


def _check_format(fmt: object) -> Format:
    if fmt not in FORMATS:
        raise ValueError(
            f"unknown diagram format {fmt!r}: use one of {', '.join(FORMATS)}"
        )
    return fmt


@overload
def render(
    obj: Diagrammable, format: Literal["dot", "mermaid", "svg"] = ..., *, saga: object = ...
) -> str: ...


@overload
def render(obj: Diagrammable, format: Literal["png"], *, saga: object = ...) -> bytes: ...


@overload
def render(obj: Diagrammable, format: str, *, saga: object = ...) -> str | bytes: ...


def render(obj: Diagrammable, format: str = "dot", *, saga: object | None = None) -> str | bytes:
    """Draw ``obj``: a saga class (or instance, or SagaSpec), or a run of one.

    ``format`` is ``"dot"``, ``"mermaid"`` or ``"svg"`` (text, returned as ``str``) or
    ``"png"`` (``bytes``). A run (:class:`~sagaflow.SagaRecord` or
    :class:`~sagaflow.SagaResult`) is drawn with its path and current state; ``saga``
    names its class when the run's data is not an instance of it. SVG and PNG need
    Graphviz (see :class:`GraphvizNotFound`).
    """
    fmt = _check_format(format)
    spec, run = _resolve(obj, saga)
    if fmt == "mermaid":
        return _mermaid(spec, run)
    dot = _dot(spec, run)
    if fmt == "dot":
        return dot
    data = _draw(dot, fmt)
    return data.decode("utf-8") if fmt == "svg" else data


def format_for(path: str | Path) -> Format:
    """The format a file's suffix asks for (``.dot``/``.gv``, ``.mmd``, ``.svg``, ``.png``)."""
    suffix = Path(path).suffix.lower()
    try:
        return _FORMAT_OF_SUFFIX[suffix]  # type: ignore[return-value]
    except KeyError:
        known = ", ".join(sorted(_FORMAT_OF_SUFFIX))
        raise ValueError(
            f"cannot tell the diagram format of {str(path)!r}: name the file with one of "
            f"{known}, or pass format=..."
        ) from None


def write(
    obj: Diagrammable,
    path: str | Path,
    format: str | None = None,
    *,
    saga: object | None = None,
) -> Path:
    """Render ``obj`` into ``path`` (format from the suffix unless given); return the path.

    Text is written as UTF-8 with ``\\n`` line ends on every platform, so files are
    byte-identical wherever they are generated.
    """
    target = Path(path)
    fmt = _check_format(format) if format is not None else format_for(target)
    data = render(obj, fmt, saga=saga)
    target.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return target


def diagram(
    obj: Diagrammable,
    format: str | None = None,
    *,
    output: str | Path | None = None,
    saga: object | None = None,
) -> str | bytes:
    """Draw ``obj`` (see :func:`render`); with ``output``, also write it there.

    The format defaults to the one ``output``'s suffix names, else ``"dot"``:
    ``diagram(UnbundleSaga, "mermaid")``, ``diagram(result, output="run.svg")``.
    """
    if format is None:
        format = "dot" if output is None else format_for(output)
    data = render(obj, format, saga=saga)
    if output is not None:
        Path(output).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return data


def write_all(
    sagas: Iterable[type],
    folder: str | Path,
    formats: Sequence[str] = ("svg", "mermaid", "dot"),
    *,
    on_write: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Write each saga's diagram as ``<saga name><suffix>`` in ``folder``, per format.

    Two sagas with the same name would overwrite each other's files: that is an error.
    Everything is rendered before anything is written, so a failure leaves the folder
    as it was.
    """
    for fmt in formats:
        _check_format(fmt)
    out = Path(folder)
    planned: dict[Path, str | bytes] = {}
    owner: dict[str, str] = {}
    for cls in sagas:
        spec = spec_of(cls)
        where = f"{cls.__module__}.{cls.__qualname__}"
        stem = file_stem(spec.name)
        if stem in owner:
            raise ValueError(
                f"sagas {owner[stem]} and {where} both draw to {stem}.*: give one "
                "another name with @saga(name=...)"
            )
        owner[stem] = where
        for fmt in formats:
            planned[out / (stem + SUFFIXES[fmt])] = render(spec, fmt)
    out.mkdir(parents=True, exist_ok=True)
    for path, data in planned.items():
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        if on_write is not None:
            on_write(path)
    return list(planned)


def file_stem(name: str) -> str:
    """A saga name made safe as a file name (letters, digits, ``_ . -``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "saga"

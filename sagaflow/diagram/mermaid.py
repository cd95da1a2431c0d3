"""A model as Mermaid ``stateDiagram-v2`` text (GitHub renders it in Markdown).

The same picture as the DOT one, in Mermaid's words: one class (fill and stroke) per
node look (Mermaid draws every state as a box: a wait is told by its teal class and its
lines), the run's taken transitions ticked, its current state said in the node. A
parallel group is a ``<<fork>>`` state (the group's), its members, and a ``<<join>>``
state the group's transitions leave from; its limit and undo order are said in a note.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..spec import StepKind
from .model import TERMINALS, Model, Node, Run, join_of

__all__ = ["to_mermaid_source"]

# Words Mermaid's state diagram grammar reserves; a state named so gets another id.
_WORDS = frozenset(
    {"state", "note", "direction", "class", "classDef", "style", "end", "as", "left",
     "right", "of", "click", "accTitle", "accDescr", "hide", "empty", "description",
     "TB", "BT", "LR", "RL", "stateDiagram", "stateDiagram-v2"}
)
# Class name and style per node look; class names differ from every state name a saga
# can have (steps are identifiers, these are camelCase with a suffix no step would take).
_CLASS = {
    "start": "startState fill:#ffffff,stroke:#5f6368",
    "step": "forwardStep fill:#e8f0fe,stroke:#3c6bc4",
    "readonly": "readonlyStep fill:#f1f3f4,stroke:#5f6368",
    "pivot": "pivotStep fill:#dbe6fb,stroke:#1a3d8f,stroke-width:3px",
    "retriable": "retriableStep fill:#ede7f6,stroke:#5e35b1",
    "wait": "waitState fill:#e0f2f1,stroke:#00796b,stroke-width:3px",
    "timer": "timerState fill:#e1f5fe,stroke:#0277bd,stroke-width:3px",
    "compensating": "compensatingStep fill:#fff4e0,stroke:#b26a00,stroke-dasharray:5 3",
    "completed": "completedEnd fill:#d4edda,stroke:#2e7d32",
    "compensated": "compensatedEnd fill:#fff3cd,stroke:#b26a00",
    "failed": "failedEnd fill:#f8d7da,stroke:#c62828",
    "other": "otherState fill:#ffffff,stroke:#5f6368",
    # a run's outcomes (the keys of Run.outcomes, prefixed)
    "run:started": "ranStarted fill:#ffffff,stroke:#202124,stroke-width:2px",
    "run:done": "ranDone fill:#c8e6c9,stroke:#2e7d32,stroke-width:2px",
    "run:skipped": "ranSkipped fill:#eeeeee,stroke:#757575,stroke-dasharray:4 3",
    "run:failed": "ranFailed fill:#ffcdd2,stroke:#c62828,stroke-width:3px",
    "run:running": "ranRunning fill:#bbdefb,stroke:#1565c0,stroke-width:4px",
    "run:waiting": "ranWaiting fill:#b2dfdb,stroke:#1565c0,stroke-width:4px",
    "run:rejected": "ranRejected fill:#f8bbd0,stroke:#ad1457,stroke-width:3px",
    "run:expired": "ranExpired fill:#ffccbc,stroke:#d84315,stroke-width:3px",
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


def _ids(states: Sequence[str]) -> dict[str, str]:
    ids: dict[str, str] = {}
    used: set[str] = set()
    for state in states:
        ident = re.sub(r"\W", "_", state) or "state_"
        if ident in _WORDS or ident[0].isdigit():
            ident = f"s_{ident}"
        while ident in used:
            ident += "_"
        used.add(ident)
        ids[state] = ident
    return ids


def _look(node: Node, run: Run | None) -> str:
    """The key in _CLASS of the one class a node gets."""
    if run is None:
        step = node.step
        if node.role == "step" and step is not None and step.kind is not StepKind.COMPENSATABLE:
            return str(step.kind.value)
        return node.role
    outcome = run.outcomes.get(node.state)
    if outcome == "reached":
        return f"run:reached:{node.role}"
    if outcome is None and node.state == run.current:
        outcome = "running"
    if outcome is None:
        # terminals keep their colour so the three ends stay readable
        return node.role if node.role in TERMINALS else "run:unvisited"
    return f"run:{outcome}"


def to_mermaid_source(model: Model) -> str:
    """The Mermaid ``stateDiagram-v2`` text of ``model``."""
    run = model.run
    groups = [node for node in model.nodes if node.role == "group"]
    joins = [join_of(g.state) for g in groups]
    ids = _ids([node.state for node in model.nodes] + [m.state for m in model.members] + joins)
    out = [
        "stateDiagram-v2",
        f"    %% {' '.join(model.title.split())} (sagaflow)",
        "    direction LR",
    ]
    for node in model.nodes:
        ident = ids[node.state]
        if node.role == "group":
            out.append(f"    state {ident} <<fork>>")
            out.append(f"    state {ids[join_of(node.state)]} <<join>>")
        elif ident != node.state:
            out.append(f'    state "{_m(node.state)}" as {ident}')
    for m in model.members:
        if ids[m.state] != m.state:
            out.append(f'    state "{_m(m.state)}" as {ids[m.state]}')
    out.append(f"    [*] --> {ids[model.spec.machine.initial]}")
    for g in groups:
        for m in model.members:
            if m.group is not None and m.group.name == g.state:
                out.append(f"    {ids[g.state]} --> {ids[m.state]}")
                out.append(f"    {ids[m.state]} --> {ids[join_of(g.state)]}")
        said = ", ".join(g.lines)
        current = ", current state" if run is not None and run.current == g.state else ""
        out.append(f"    note left of {ids[g.state]} : {_m(g.state + ': ' + said + current)}")
    grouped = {g.state for g in groups}
    for e in model.edges:
        label = e.trigger if not e.guard else f"{e.trigger} ({e.guard})"
        if run is not None and (e.source, e.trigger, e.dest) in run.taken:
            label += " ✔"
        source = ids[join_of(e.source)] if e.source in grouped else ids[e.source]
        out.append(f"    {source} --> {ids[e.dest]} : {_m(label)}")
    for node in model.nodes:
        if node.state in TERMINALS:
            out.append(f"    {ids[node.state]} --> [*]")
    for node in [*model.nodes, *model.members]:
        if node.role == "group":
            continue  # a fork bar: said in its note
        lines = list(node.lines)
        if run is not None and node.state in run.notes:
            lines.append(run.notes[node.state])
        if run is not None and node.state == run.current:
            lines.append("current state")
        for line in lines:
            out.append(f"    {ids[node.state]} : {_m(line)}")
    classes: dict[str, list[str]] = {}
    for node in [*model.nodes, *model.members]:
        if node.role != "group":  # fork and join bars keep Mermaid's own look
            classes.setdefault(_look(node, run), []).append(ids[node.state])
    for look in classes:
        out.append(f"    classDef {_CLASS[look]}")
    for look, members in classes.items():
        out.append(f"    class {','.join(members)} {_CLASS[look].split()[0]}")
    return "\n".join(out) + "\n"

"""A model as DOT, built with the ``graphviz`` package (it quotes and escapes every name).

Forward steps run left to right; each compensating state sits in its step's column, so
the undo chain reads backwards under the forward chain; waits and timers are teal and
blue hexagons, their ``timeout`` edges dashed teal; a run's path is drawn bold, the rest
greyed, and its current state (a parked saga's wait, too) outlined in blue. A parallel
group is a dashed box (its name, limit and undo order): a fork bar (its state), its
members, a join bar; the group's transitions leave from the join bar.
"""

from __future__ import annotations

from typing import cast

import graphviz

from ..machine import COMPENSATED, FAILED, NOT_STARTED, compensation_state
from ..spec import StepKind
from .model import Model, Node, join_of

__all__ = ["to_dot_source"]

_FONT = "Helvetica"
_ROLE_STYLE: dict[str, dict[str, str]] = {
    "start": {"shape": "ellipse", "style": "filled", "fillcolor": "#ffffff", "color": "#5f6368"},
    "step": {"fillcolor": "#e8f0fe", "color": "#3c6bc4"},
    # a hexagon, as close to the label as it goes: a wait is wide enough as it is
    "wait": {"shape": "hexagon", "style": "filled", "margin": "0.02,0.02", "fillcolor": "#e0f2f1",
             "color": "#00796b", "penwidth": "2"},
    "timer": {"shape": "hexagon", "style": "filled", "margin": "0.02,0.02",
              "fillcolor": "#e1f5fe", "color": "#0277bd", "penwidth": "2"},
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
    "timeout": {"color": "#00796b", "style": "dashed"},
    "fail": {"color": "#c62828"},
    "compensate": {"color": "#b26a00", "style": "dashed"},
    "undone": {"color": "#b26a00"},
    "undo_failed": {"color": "#c62828", "style": "dashed"},
    "retry": {"color": "#6a1b9a", "style": "dotted"},
}
# Only the forward moves lay the graph out (a straight line, left to right); the others
# are drawn where their ends fall.
_LAYOUT = {"start": {"weight": "10"}, "advance": {"weight": "10"}, "skip": {"weight": "2"}}
_OUTCOME_STYLE: dict[str, dict[str, str]] = {
    "started": {"fillcolor": "#ffffff", "color": "#202124", "penwidth": "2"},
    "done": {"fillcolor": "#c8e6c9", "color": "#2e7d32", "penwidth": "2"},
    "skipped": {"fillcolor": "#eeeeee", "color": "#757575", "style": "rounded,filled,dashed"},
    "failed": {"fillcolor": "#ffcdd2", "color": "#c62828", "penwidth": "3"},
    "running": {"fillcolor": "#bbdefb", "color": "#1565c0", "penwidth": "2"},
    "waiting": {"fillcolor": "#b2dfdb", "color": "#00796b", "penwidth": "2"},
    "rejected": {"fillcolor": "#f8bbd0", "color": "#ad1457", "penwidth": "3"},
    "expired": {"fillcolor": "#ffccbc", "color": "#d84315", "penwidth": "3"},
    "undone": {"fillcolor": "#ffe0b2", "color": "#b26a00", "penwidth": "2"},
    "undo_failed": {"fillcolor": "#ffcdd2", "color": "#c62828", "penwidth": "3"},
    "undoing": {"fillcolor": "#ffe0b2", "color": "#1565c0", "penwidth": "2"},
    "pending": {"fillcolor": "#ffffff", "color": "#b26a00", "style": "rounded,filled,dotted"},
    "reached": {"penwidth": "3"},
}
_UNVISITED = {"fillcolor": "#fafafa", "color": "#bdbdbd", "fontcolor": "#9e9e9e"}
_CURRENT = {"color": "#1565c0", "penwidth": "4"}
_TAKEN = {"penwidth": "3"}
_NOT_TAKEN = {"color": "#d0d0d0", "fontcolor": "#b0b0b0"}


def to_dot_source(model: Model) -> str:
    """The DOT text of ``model``."""
    run = model.run
    graph = graphviz.Digraph(
        graphviz.escape(model.spec.name),  # a saga's name is any text: never HTML
        graph_attr={"label": _label(model.title), "labelloc": "t", "fontname": _FONT,
                    "fontsize": "14", "rankdir": "LR", "nodesep": "0.35", "ranksep": "0.55"},
        node_attr={"shape": "box", "style": "rounded,filled", "fontname": _FONT,
                   "fontsize": "11"},
        edge_attr={"fontname": _FONT, "fontsize": "9"},
    )
    members: dict[str, list[Node]] = {}
    for m in model.members:
        if m.group is not None:
            members.setdefault(m.group.name, []).append(m)
    for node in model.nodes:
        if node.role == "group":
            _group(graph, node, members.get(node.state, []), model)
            continue
        style = _node_style(node)
        lines = [node.state, *node.lines]
        if run is not None:
            outcome = run.outcomes.get(node.state)
            style.update(_UNVISITED if outcome is None else _OUTCOME_STYLE[outcome])
            if node.state in run.notes:
                lines.append(run.notes[node.state])
            if node.state == run.current:
                style.update(_CURRENT)
                lines.append("<< current state >>")
        graph.node(node.state, _label(*lines), **style)
    states = {node.state for node in model.nodes}
    for s in model.spec.steps:  # a step and its compensating state share a column
        twin = compensation_state(s.name)
        if s.name in states and twin in states:
            _same_rank(graph, [s.name, twin])
    # (Not a group's: its fork bar is in the group's box, and Graphviz takes a node
    # ranked with one outside its box out of the box.)
    # ...and the chain ends where it began: compensated and failed at the left
    ends = [s for s in (NOT_STARTED, COMPENSATED, FAILED) if s in states]
    if len(ends) > 1:
        _same_rank(graph, ends)
    for e in model.edges:
        style = {
            **_TRIGGER_STYLE.get(e.trigger, {}),
            **_LAYOUT.get(e.trigger, {"constraint": "false"}),
        }
        if run is not None:
            if (e.source, e.trigger, e.dest) in run.taken:
                style.update({**_TAKEN, "fontcolor": style.get("color", "#000000")})
            else:
                style.update(_NOT_TAKEN)
        lines = [e.trigger, e.guard] if e.guard else [e.trigger]
        source = join_of(e.source) if e.source in members else e.source
        graph.edge(source, e.dest, _label(*lines), **style)
    return str(graph.source)


_BAR = {"shape": "box", "style": "filled", "label": "", "width": "0.08", "height": "0.7",
        "fixedsize": "true", "fillcolor": "#202124", "color": "#202124"}
_MEMBER_EDGE = {"color": "#3c6bc4", "arrowsize": "0.6", "weight": "10"}


def _group(graph: graphviz.Digraph, node: Node, members: list[Node], model: Model) -> None:
    """A group: a dashed box holding its fork bar (its state), members and join bar."""
    run = model.run
    fork, join = node.state, join_of(node.state)
    bar = dict(_BAR)
    if run is not None and node.state == run.current:
        bar.update({"fillcolor": "#1565c0", "color": "#1565c0"})
    with graph.subgraph(name=f"cluster_{node.state}") as box:
        label = [node.state, *node.lines]
        if run is not None and node.state == run.current:
            label.append("<< current state >>")
        box.attr(label=_label(*label), style="rounded,dashed", color="#3c6bc4",
                 fontname=_FONT, fontsize="11")
        box.node(fork, **bar)
        for m in members:
            style = _node_style(m)
            lines = [m.state, *m.lines]
            if run is not None:
                outcome = run.outcomes.get(m.state)
                style.update(_UNVISITED if outcome is None else _OUTCOME_STYLE[outcome])
                if m.state in run.notes:
                    lines.append(run.notes[m.state])
            box.node(m.state, _label(*lines), **style)
        box.node(join, **_BAR)
    for m in members:
        graph.edge(fork, m.state, **_MEMBER_EDGE)
        graph.edge(m.state, join, **_MEMBER_EDGE)


def _label(*lines: str) -> str:
    """A DOT label: backslashes and angle brackets literal, the lines centred."""
    # nohtml: a label that happens to read <...> is text, not an HTML-like label
    return cast(str, graphviz.nohtml("\\n".join(graphviz.escape(line) for line in lines)))


def _node_style(node: Node) -> dict[str, str]:
    style = dict(_ROLE_STYLE[node.role])
    if node.role == "step" and node.step is not None:
        style.update(_KIND_STYLE.get(node.step.kind, {}))
    return style


def _same_rank(graph: graphviz.Digraph, states: list[str]) -> None:
    with graph.subgraph() as row:
        row.attr(rank="same")
        for state in states:
            row.node(state)

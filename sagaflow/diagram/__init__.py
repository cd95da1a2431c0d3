"""Diagrams of a saga's state machine: DOT, Mermaid, SVG and PNG, and a run's place in it.

:mod:`~sagaflow.diagram.model` reads the class's machine (and a run's recorded path);
:mod:`~sagaflow.diagram.dot` and :mod:`~sagaflow.diagram.mermaid` write it as text;
:mod:`~sagaflow.diagram.render` draws SVG and PNG through Graphviz and writes files.
"""

from ..errors import GraphvizNotFound
from .render import (
    FORMATS,
    SUFFIXES,
    draw,
    file_stem,
    format_for,
    render,
    to_dot,
    to_mermaid,
    write,
    write_all,
)

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "GraphvizNotFound",
    "draw",
    "file_stem",
    "format_for",
    "render",
    "to_dot",
    "to_mermaid",
    "write",
    "write_all",
]

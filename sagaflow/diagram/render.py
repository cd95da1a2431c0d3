"""Diagrams as text or pictures, and in files: :func:`render`, :func:`write`, :func:`diagram`.

DOT and Mermaid are text and need nothing. SVG and PNG are laid out by Graphviz:
through ``pygraphviz``, whose wheels bundle Graphviz (the ``render`` extra), or else a
``dot`` binary on PATH (through the ``graphviz`` package); with neither,
:class:`~sagaflow.GraphvizNotFound` names both ways. Text output is byte-stable, so
generated files can be checked into a repository and tested for staleness.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import graphviz

from ..errors import GraphvizNotFound
from ..spec import spec_of
from . import fonts
from .dot import to_dot_source
from .mermaid import to_mermaid_source
from .model import Diagrammable, model_of

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "draw",
    "file_stem",
    "format_for",
    "render",
    "to_dot",
    "to_mermaid",
    "write",
    "write_all",
]

Format = Literal["dot", "mermaid", "svg", "png"]
#: The formats :func:`render` knows, text first.
FORMATS: tuple[Format, ...] = ("dot", "mermaid", "svg", "png")
#: The file suffix :func:`write` and the CLI use for each format.
SUFFIXES: dict[str, str] = {"dot": ".dot", "mermaid": ".mmd", "svg": ".svg", "png": ".png"}
_FORMAT_OF_SUFFIX: dict[str, Format] = {
    ".dot": "dot",
    ".gv": "dot",
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".svg": "svg",
    ".png": "png",
}


def to_dot(obj: Diagrammable, *, saga: object | None = None) -> str:
    """The DOT source of ``obj``'s machine (a run's path styled when ``obj`` is a run)."""
    return to_dot_source(model_of(obj, saga))


def to_mermaid(obj: Diagrammable, *, saga: object | None = None) -> str:
    """The Mermaid ``stateDiagram-v2`` of ``obj``'s machine (a run's path styled)."""
    return to_mermaid_source(model_of(obj, saga))


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
    Graphviz (see :class:`~sagaflow.GraphvizNotFound`).
    """
    fmt = _check_format(format)
    model = model_of(obj, saga)
    if fmt == "mermaid":
        return to_mermaid_source(model)
    dot = to_dot_source(model)
    if fmt == "dot":
        return dot
    data = _draw(dot, fmt)
    return data.decode("utf-8") if fmt == "svg" else data


def format_for(path: str | Path) -> Format:
    """The format a file's suffix asks for (``.dot``/``.gv``, ``.mmd``, ``.svg``, ``.png``)."""
    suffix = Path(path).suffix.lower()
    try:
        return _FORMAT_OF_SUFFIX[suffix]
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
    _write(target, render(obj, fmt, saga=saga))
    return target


def draw(
    obj: Diagrammable,
    format: str | None = None,
    *,
    output: str | Path | None = None,
    saga: object | None = None,
) -> str | bytes:
    """Draw ``obj`` (see :func:`render`); with ``output``, also write it there.

    The format defaults to the one ``output``'s suffix names, else ``"dot"``:
    ``draw(UnbundleSaga, "mermaid")``, ``draw(result, output="run.svg")``.
    """
    if format is None:
        format = "dot" if output is None else format_for(output)
    data = render(obj, format, saga=saga)
    if output is not None:
        _write(Path(output), data)
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
        _write(path, data)
        if on_write is not None:
            on_write(path)
    return list(planned)


def file_stem(name: str) -> str:
    """A saga name made safe as a file name (letters, digits, ``_ . -``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "saga"


def _write(path: Path, data: str | bytes) -> None:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def _check_format(fmt: object) -> Format:
    for known in FORMATS:
        if fmt == known:
            return known
    raise ValueError(f"unknown diagram format {fmt!r}: use one of {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- Graphviz

def _load_pygraphviz() -> Any:
    """The ``pygraphviz`` module, or the reason (an exception) when it cannot be used.

    Imported here first in the process, its bundled fontconfig is given the system's
    configuration before anything draws (see :mod:`sagaflow.diagram.fonts`).
    """
    first = "pygraphviz" not in sys.modules
    try:
        import pygraphviz
    except (ImportError, OSError) as exc:  # OSError: a wheel whose bundled library fails
        return exc
    if first:
        fonts.load_system_config(pygraphviz)
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
        return bytes(pgv.AGraph(string=dot).draw(format=fmt, prog="dot"))
    if _find_dot() is None:
        why.append("no `dot` on PATH")
        raise GraphvizNotFound(fmt, why)
    return bytes(graphviz.Source(dot, engine="dot").pipe(format=fmt))

"""Diagrams: DOT and Mermaid read off the machine, runs drawn with their path, SVG/PNG rendered."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pygraphviz
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagaflow import (
    GraphvizNotFound,
    Orchestrator,
    Retry,
    SagaRecord,
    SagaRejected,
    SagaResult,
    SagaStatus,
    StepKind,
    StepStatus,
    events,
    saga,
    spec_of,
    step,
    timer,
    wait,
)
from sagaflow import draw as sagaflow_draw
from sagaflow.cli import load
from sagaflow.definition import StepDef
from sagaflow.diagram import (
    draw,
    file_stem,
    format_for,
    render,
    to_dot,
    to_mermaid,
    write,
)
from sagaflow.machine import compensation_state
from sagaflow.testing import VirtualClock

# import_module, not `import sagaflow.diagram.render as ...`: that form reads the
# package's attribute, which is the render() function the package exports.
render_module = importlib.import_module("sagaflow.diagram.render")
ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "python -m sagaflow diagram examples --all --prune --output diagrams"
ONCE = Retry(attempts=1)


def needs_approval(s: FeatureSaga) -> bool:
    return s.approval


@saga
@attrs.define
class FeatureSaga:
    """Every feature a diagram shows: readonly, conditional, compensatable, pivot, retriable.

    ``fail`` names the steps whose forward call fails, ``stuck`` the compensations that do.
    """

    approval: bool = True
    fail: frozenset[str] = frozenset()
    stuck: frozenset[str] = frozenset()

    def _forward(self, name: str) -> None:
        if name in self.fail:
            raise ConnectionError(f"{name} is down")

    def _undo(self, name: str) -> None:
        if name in self.stuck:
            raise RuntimeError(f"cannot undo {name}")

    @step(readonly=True, timeout=None)
    def validate(self, ctx):
        self._forward(ctx.step)

    @step(when=needs_approval, timeout=None)
    def approve(self, ctx):
        self._forward(ctx.step)

    @approve.compensate(retry=ONCE, timeout=None)
    def cancel_approval(self, ctx):
        self._undo(ctx.step)

    @step(timeout=None)
    def modify(self, ctx):
        self._forward(ctx.step)

    @modify.compensate(retry=ONCE, timeout=None)
    def restore(self, ctx):
        self._undo(ctx.step)

    @step(timeout=None)
    def charge(self, ctx):
        self._forward(ctx.step)

    @charge.compensate(retry=ONCE, timeout=None)
    def refund(self, ctx):
        self._undo(ctx.step)

    @step(pivot=True, timeout=None)
    def commit(self, ctx):
        self._forward(ctx.step)

    @step(retriable=True, retry=ONCE, timeout=None)
    def notify(self, ctx):
        self._forward(ctx.step)


SPEC = spec_of(FeatureSaga)
FORWARD = [s.name for s in SPEC.steps]
UNDOABLE = [s.name for s in SPEC.steps if s.compensation is not None]


# --------------------------------------------------------------------------- parsing

def dot_nodes(dot: str) -> dict[str, dict[str, str]]:
    """state -> its attributes, as Graphviz reads the DOT (in the order declared)."""
    graph = pygraphviz.AGraph(string=dot)  # kept alive while its nodes are read
    return {str(n): dict(n.attr) for n in graph.nodes()}


def dot_edges(dot: str) -> list[tuple[str, str, str, dict[str, str]]]:
    """(source, trigger, dest, attributes) per edge, as Graphviz reads the DOT."""
    graph = pygraphviz.AGraph(string=dot)  # kept alive while its edges are read
    return [
        (str(e[0]), e.attr["label"].split("\\n")[0], str(e[1]), dict(e.attr))
        for e in graph.edges()
    ]


def label(attributes: dict[str, str]) -> list[str]:
    """A node's or edge's label lines."""
    return attributes["label"].split("\\n")


MERMAID_EDGE = re.compile(r"^    (\w+) --> (\w+) : (.+)$")


def mermaid_edges(text: str) -> list[tuple[str, str, str]]:
    return [
        (m[1], m[3].split(" ")[0], m[2])
        for line in text.splitlines()
        if (m := MERMAID_EDGE.match(line))
    ]


# Label text: no raw ':' ';' '#' (Mermaid would read them); entity codes such as #lt; are
# what sagaflow writes instead, and Mermaid decodes them before parsing.
LABEL = r"(?:[^:;#\n]|#\w+;)+"
# Every line a generated Mermaid state diagram may have.
MERMAID_LINE = re.compile(
    r"^(stateDiagram-v2"
    r"|    %% .*"
    r"|    direction LR"
    r"|    \[\*\] --> \w+"
    r"|    \w+ --> \[\*\]"
    rf"|    \w+ --> \w+ : {LABEL}"
    rf"|    \w+ : {LABEL}"
    r'|    state "[^"]+" as \w+'
    r"|    classDef \w+ [\w#:,.\- ]+"
    r"|    class \w+(,\w+)* \w+)$"
)


def assert_valid_mermaid(text: str) -> None:
    assert text.endswith("\n")
    for line in text.splitlines():
        assert MERMAID_LINE.match(line), f"not a line sagaflow should write: {line!r}"
    used = {m[1] for line in text.splitlines() if (m := re.match(r"^    class \S+ (\w+)$", line))}
    defined = {m[1] for line in text.splitlines() if (m := re.match(r"^    classDef (\w+)", line))}
    assert used == defined


# --------------------------------------------------------------------------- the class view

def test_dot_has_every_state_and_every_transition_of_the_machine():
    dot = render(FeatureSaga, "dot")
    assert list(dot_nodes(dot)) == list(SPEC.machine.states)
    assert dot.startswith("digraph FeatureSaga {")
    edges = dot_edges(dot)
    assert {(s, t, d) for s, t, d, _ in edges} == SPEC.transitions
    assert len(edges) == len(SPEC.transitions)  # each transition drawn once


def test_mermaid_has_every_state_and_every_transition_of_the_machine():
    text = render(FeatureSaga, "mermaid")
    assert_valid_mermaid(text)
    edges = mermaid_edges(text)
    assert set(edges) == SPEC.transitions
    assert len(edges) == len(SPEC.transitions)
    lines = text.splitlines()
    assert "    [*] --> not_started" in lines
    for end in ("completed", "compensated", "failed"):
        assert f"    {end} --> [*]" in lines


def test_the_class_view_marks_guard_pivot_retriable_and_the_compensation_chain():
    dot = render(FeatureSaga)
    nodes = dot_nodes(dot)
    assert label(nodes["approve"]) == ["approve", "when needs_approval"]
    assert label(nodes["commit"]) == ["commit", "pivot (point of no return)"]
    assert nodes["commit"]["peripheries"] == "2"
    assert label(nodes["notify"]) == ["notify", "retriable (up to 1 attempt)"]
    assert label(nodes["validate"]) == ["validate", "readonly"]
    assert label(nodes["compensating_modify"]) == ["compensating_modify", "undo by restore"]
    assert "dashed" in nodes["compensating_modify"]["style"]
    assert nodes["completed"]["fillcolor"] == "#d4edda"  # green
    assert nodes["compensated"]["fillcolor"] == "#fff3cd"  # amber
    assert nodes["failed"]["fillcolor"] == "#f8d7da"  # red
    skips = [e for e in dot_edges(dot) if e[1] == "skip"]
    assert len(skips) == 1
    assert label(skips[0][3]) == ["skip", "unless needs_approval"]
    text = render(FeatureSaga, "mermaid")
    assert "    approve --> modify : skip (unless needs_approval)" in text
    assert "    commit : pivot (point of no return)" in text
    assert "    notify : retriable (up to 1 attempt)" in text
    assert "    class compensating_approve,compensating_modify,compensating_charge " \
        "compensatingStep" in text


def test_text_output_is_byte_stable_across_processes():
    here = render(FeatureSaga, "dot") + render(FeatureSaga, "mermaid")
    code = (
        "import sys; sys.path[:0] = [{root!r}, {tests!r}];"
        "from test_diagram import FeatureSaga; from sagaflow.diagram import render;"
        "sys.stdout.write(render(FeatureSaga, 'dot') + render(FeatureSaga, 'mermaid'))"
    ).format(root=str(ROOT), tests=str(ROOT / "tests"))
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        there = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        ).stdout
        assert there == here


class Guard:
    """A callable object: its repr has an address, which must not reach a diagram."""

    def __call__(self, s: object) -> bool:
        return True


def guarded_saga(guard: object) -> type:
    @saga(name="Guarded")
    @attrs.define
    class Guarded:
        @step(when=guard, timeout=None)
        def only(self, ctx):
            pass

        @only.compensate
        def undo_only(self, ctx):
            pass

    return Guarded


def test_odd_guard_names_stay_stable_and_escaped():
    first, second = guarded_saga(Guard()), guarded_saga(Guard())
    assert render(first) == render(second)
    assert render(first, "mermaid") == render(second, "mermaid")
    assert "0x" not in render(first)
    lam = render(guarded_saga(lambda s: True), "mermaid")
    assert "skip (unless #lt;lambda#gt;)" in lam
    assert_valid_mermaid(lam)


def svg_texts(svg: str) -> list[str]:
    """Every line of text an SVG drawing shows."""
    return [el.text or "" for el in ET.fromstring(svg.encode()).iter(
        "{http://www.w3.org/2000/svg}text")]


def test_names_and_notes_that_dot_would_misread_are_drawn_as_written():
    # A guard's name, a saga's name and a step's error with what DOT gives a meaning:
    # quotes, backslashes (\n, \l are DOT's line breaks), braces, <...> (HTML labels).
    def guard(s: object) -> bool:
        return True

    guard.__name__ = 'is "big" \\ {yes} <b>'
    odd = '<i>Odd \\l "saga"</i>'

    @saga(name=odd)
    @attrs.define
    class Odd:
        @step(when=guard, timeout=None)
        def first(self, ctx):
            raise ValueError('C:\\new "path"\nsecond line')

        @first.compensate
        def undo_first(self, ctx):
            pass

    svg = render(Odd, "svg")
    texts = svg_texts(svg)
    assert odd in texts
    assert 'when is "big" \\ {yes} <b>' in texts
    assert 'unless is "big" \\ {yes} <b>' in texts
    graph = pygraphviz.AGraph(string=render(Odd, "dot"))  # and DOT reads it back
    assert graph.graph_attr["label"] == graphviz_escaped(odd)
    result = Orchestrator().run(Odd())
    assert result.status is SagaStatus.COMPENSATED
    texts = svg_texts(render(result, "svg"))
    assert 'FAILED, ValueError: C:\\new "path" second line' in texts
    assert_valid_mermaid(render(result, "mermaid"))


def graphviz_escaped(text: str) -> str:
    """How DOT keeps a literal label: its backslashes doubled."""
    return text.replace("\\", "\\\\")


@st.composite
def saga_shapes(draw: st.DrawFn) -> list[tuple[str, StepKind, bool]]:
    """(name, kind, conditional) per step, in an order @saga accepts."""
    before = draw(
        st.lists(
            st.tuples(st.sampled_from([StepKind.COMPENSATABLE, StepKind.READONLY]), st.booleans()),
            min_size=0,
            max_size=4,
        )
    )
    pivot = draw(st.booleans()) or not before
    after = draw(st.lists(st.booleans(), max_size=2)) if pivot else []
    shape = [(kind, cond) for kind, cond in before]
    if pivot:
        shape.append((StepKind.PIVOT, draw(st.booleans())))
    shape += [(StepKind.RETRIABLE, cond) for cond in after]
    return [(f"s{i}", kind, cond) for i, (kind, cond) in enumerate(shape)]


def build_saga(shape: list[tuple[str, StepKind, bool]]) -> type:
    """A saga class of the given shape, made without a class body."""
    qualname = "Shaped"
    body: dict[str, object] = {"__qualname__": qualname, "__module__": __name__}

    def fn(self, ctx):
        pass

    for name, kind, cond in shape:
        forward = _named(fn, f"{qualname}.{name}")
        made = StepDef(
            fn=forward,
            timeout=None,
            when=(lambda s: True) if cond else None,
            readonly=kind is StepKind.READONLY,
            pivot=kind is StepKind.PIVOT,
            retriable=kind is StepKind.RETRIABLE,
        )
        body[name] = made
        if kind is StepKind.COMPENSATABLE:
            body[f"undo_{name}"] = made.compensate(_named(fn, f"{qualname}.undo_{name}"))
    return saga(type(qualname, (), body))


def _named(fn, qualname: str):
    def copy(self, ctx):
        return fn(self, ctx)

    copy.__qualname__ = qualname
    copy.__name__ = qualname.rpartition(".")[2]
    return copy


@given(saga_shapes())
def test_any_saga_shape_is_drawn_exactly_as_generated(shape):
    spec = spec_of(build_saga(shape))
    dot, text = render(spec, "dot"), render(spec, "mermaid")
    assert list(dot_nodes(dot)) == list(spec.machine.states)
    assert {(s, t, d) for s, t, d, _ in dot_edges(dot)} == spec.transitions
    assert set(mermaid_edges(text)) == spec.transitions
    assert_valid_mermaid(text)
    assert render(spec, "dot") == dot


# --------------------------------------------------------------------------- SVG and PNG

def test_svg_is_real_svg_with_every_state():
    svg = render(FeatureSaga, "svg")
    root = ET.fromstring(svg.encode())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    ns = {"svg": "http://www.w3.org/2000/svg"}
    titles = {
        g.find("svg:title", ns).text
        for g in root.iter("{http://www.w3.org/2000/svg}g")
        if g.get("class") == "node"
    }
    assert titles == set(SPEC.machine.states)
    edges = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "edge"]
    assert len(edges) == len(SPEC.transitions)


def test_png_is_a_real_picture(tmp_path):
    png = render(FeatureSaga, "png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 300 and height > 100
    assert len(png) > 10_000
    path = write(FeatureSaga, tmp_path / "feature.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rendering_prints_no_fontconfig_warning(tmp_path):
    # pygraphviz's bundled fontconfig (2.13) used to parse the system's newer template
    # files (/usr/share/fontconfig/conf.avail) and warn about <reset-dirs> on stderr.
    code = (
        f"import sys; sys.path[:0] = [{str(ROOT)!r}];"
        "from examples.quickstart import TransferSaga; from sagaflow.diagram import render;"
        "assert render(TransferSaga, 'png')[:4] == b'\\x89PNG'; render(TransferSaga, 'svg')"
    )
    env = {**os.environ, "HOME": str(tmp_path)}  # a fresh user: no font cache of its own
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Fontconfig" not in done.stderr, done.stderr
    assert done.stderr == ""


DOT_PROGRAM = '''#!{python}
"""`dot -K<engine> -T<format>` reading DOT on stdin, run by the Graphviz the pygraphviz
wheel bundles: a real Graphviz behind the `dot` command line, for machines without one."""
import sys
import pygraphviz
fmt = next(arg[2:] for arg in sys.argv[1:] if arg.startswith("-T"))
graph = pygraphviz.AGraph(string=sys.stdin.read())
sys.stdout.buffer.write(graph.draw(format=fmt, prog="dot"))
'''


def test_without_pygraphviz_a_dot_on_path_renders(monkeypatch, tmp_path):
    program = tmp_path / "dot"
    program.write_text(DOT_PROGRAM.format(python=sys.executable), encoding="utf-8")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(render_module, "_load_pygraphviz", lambda: ImportError("not installed"))
    svg = render(FeatureSaga, "svg")
    titles = {el.text for el in ET.fromstring(svg.encode()).iter("{http://www.w3.org/2000/svg}title")}
    assert set(SPEC.machine.states) <= titles
    assert render(FeatureSaga, "png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_pygraphviz_or_dot_the_error_names_both_fixes(monkeypatch):
    monkeypatch.setattr(render_module, "_load_pygraphviz", lambda: ImportError("no pygraphviz"))
    monkeypatch.setattr(render_module, "_find_dot", lambda: None)
    with pytest.raises(GraphvizNotFound) as caught:
        render(FeatureSaga, "svg")
    message = str(caught.value)
    assert "pip install 'sagaflow[render]'" in message
    assert "`dot`" in message and "PATH" in message
    assert isinstance(caught.value, RuntimeError)
    # text formats need nothing
    assert render(FeatureSaga, "dot").startswith("digraph")
    assert render(FeatureSaga, "mermaid").startswith("stateDiagram-v2")


# --------------------------------------------------------------------------- a run

def run(saga_obj: object) -> tuple[SagaResult, SagaRecord]:
    orchestrator = Orchestrator()
    result = orchestrator.run(saga_obj)
    record = orchestrator.store.load(result.saga_id)
    assert record is not None
    return result, record


def taken(dot: str) -> set[tuple[str, str, str]]:
    return {(s, t, d) for s, t, d, attrs_ in dot_edges(dot) if attrs_.get("penwidth") == "3"}


def current(dot: str) -> str:
    [state] = [s for s, a in dot_nodes(dot).items() if "<< current state >>" in label(a)]
    return state


def test_a_failed_saga_shows_what_was_and_was_not_undone():
    # commit (the pivot) fails; refunding works, restoring works, cancelling the
    # approval does not: the saga ends FAILED.
    result, record = run(FeatureSaga(fail=frozenset({"commit"}), stuck=frozenset({"approve"})))
    assert result.status is SagaStatus.FAILED
    dot = render(record)
    nodes = dot_nodes(dot)
    graph = pygraphviz.AGraph(string=dot)
    title = graph.graph_attr["label"]
    assert title.startswith("FeatureSaga: saga") and title.endswith(" FAILED")
    for done in ("validate", "approve", "modify", "charge"):
        assert nodes[done]["fillcolor"] == "#c8e6c9", done  # green: done
    assert nodes["commit"]["fillcolor"] == "#ffcdd2"
    assert label(nodes["commit"])[-1].startswith("FAILED, ConnectionError")
    assert nodes["compensating_charge"]["fillcolor"] == "#ffe0b2"
    assert label(nodes["compensating_charge"])[-1] == "undone"
    assert nodes["compensating_modify"]["fillcolor"] == "#ffe0b2"
    assert nodes["compensating_approve"]["fillcolor"] == "#ffcdd2"
    assert "COULD NOT BE UNDONE, RuntimeError: cannot undo approve" in label(
        nodes["compensating_approve"]
    )
    assert nodes["notify"]["fillcolor"] == "#fafafa"  # never reached
    assert current(dot) == "failed" == record.state
    assert taken(dot) == {
        ("not_started", "start", "validate"),
        ("validate", "advance", "approve"),
        ("approve", "advance", "modify"),
        ("modify", "advance", "charge"),
        ("charge", "advance", "commit"),
        ("commit", "compensate", "compensating_charge"),
        ("compensating_charge", "undone", "compensating_modify"),
        ("compensating_modify", "undone", "compensating_approve"),
        ("compensating_approve", "undo_failed", "failed"),
    }
    # the result (no state of its own) draws the same picture as the record
    assert render(result) == dot
    text = render(record, "mermaid")
    assert_valid_mermaid(text)
    assert "    compensating_approve --> failed : undo_failed ✔" in text
    assert re.search(r"^    class compensating_approve ranUndoFailed$", text, re.M)
    assert re.search(r"^    class compensating_modify,compensating_charge ranUndone$", text, re.M)
    assert re.search(r"^    class commit ranFailed$", text, re.M)
    assert re.search(r"^    class failed reachedFailed$", text, re.M)


def test_a_skipped_step_and_a_retriable_failure():
    result, record = run(FeatureSaga(approval=False, fail=frozenset({"notify"})))
    assert result.status is SagaStatus.FAILED
    dot = render(result)
    assert ("approve", "skip", "modify") in taken(dot)
    assert ("notify", "fail", "failed") in taken(dot)
    assert not any(t == "compensate" for _, t, _ in taken(dot))
    assert "skipped" in label(dot_nodes(dot)["approve"])
    assert render(record) == dot


def test_a_completed_saga():
    _, record = run(FeatureSaga())
    dot = render(record)
    assert current(dot) == "completed"
    assert all(t in ("start", "advance") for _, t, _ in taken(dot))
    assert len(taken(dot)) == len(FORWARD) + 1


def test_a_running_saga_shows_where_it_is():
    drawn: dict[str, str] = {}

    def listener(event: events.LifecycleEvent) -> None:
        record = orchestrator.store.load(event.saga_id)
        if isinstance(event, events.StepStarted) and event.step == "charge":
            drawn["running"] = render(record)
            drawn["running_mermaid"] = render(record, "mermaid")
        if isinstance(event, events.CompensationStarted) and event.step == "modify":
            drawn["compensating"] = render(record)

    orchestrator = Orchestrator(listeners=[listener])
    orchestrator.run(FeatureSaga(fail=frozenset({"commit"})))
    assert current(drawn["running"]) == "charge"
    assert "running, attempt 1" in label(dot_nodes(drawn["running"])["charge"])
    assert re.search(r"^    class charge ranRunning$", drawn["running_mermaid"], re.M)
    assert current(drawn["compensating"]) == "compensating_modify"
    nodes = dot_nodes(drawn["compensating"])
    assert "undone" in label(nodes["compensating_charge"])
    assert "to undo" in label(nodes["compensating_approve"])


def test_a_deadline_between_steps_compensates_from_the_step_not_started():
    clock = VirtualClock()

    @saga(deadline=10)
    @attrs.define
    class Slow:
        @step(timeout=None)
        def first(self, ctx):
            clock.advance(20)

        @first.compensate
        def undo_first(self, ctx):
            pass

        @step(timeout=None)
        def second(self, ctx):
            pass

        @second.compensate
        def undo_second(self, ctx):
            pass

    orchestrator = Orchestrator(clock=clock)
    result = orchestrator.run(Slow())
    assert result.status is SagaStatus.COMPENSATED
    dot = render(orchestrator.store.load(result.saga_id))
    assert ("second", "compensate", "compensating_first") in taken(dot)
    assert render(result) == dot


@given(
    approval=st.booleans(),
    fail=st.frozensets(st.sampled_from(FORWARD)),
    stuck=st.frozensets(st.sampled_from(UNDOABLE)),
)
def test_any_run_is_drawn_as_a_path_of_the_machine_ending_where_the_record_is(
    approval, fail, stuck
):
    result, record = run(FeatureSaga(approval, fail, stuck))
    dot = render(record)
    path = taken(dot)
    assert path <= SPEC.transitions
    # the taken transitions form one chain from not_started to the record's state
    out = {}
    for s, _, d in path:
        assert s not in out, f"two transitions taken from {s}"
        out[s] = d
    here, seen = "not_started", 0
    while here in out:
        here, seen = out[here], seen + 1
    assert seen == len(path)
    assert here == record.state == current(dot)
    assert render(result) == dot
    assert path == set(record.path)  # what the engine recorded, drawn as it is
    assert_valid_mermaid(render(result, "mermaid"))


def test_an_operator_retry_is_drawn_with_its_detour_through_failed():
    orchestrator = Orchestrator()
    first = orchestrator.run(FeatureSaga(fail=frozenset({"commit"}), stuck=frozenset({"approve"})))
    assert first.status is SagaStatus.FAILED
    record = orchestrator.store.load(first.saga_id)
    record.data.stuck = frozenset()  # the operator fixed the approval service
    assert orchestrator.retry(first.saga_id).status is SagaStatus.COMPENSATED
    dot = render(record)
    assert {
        ("compensating_approve", "undo_failed", "failed"),
        ("failed", "retry", "compensating_approve"),
        ("compensating_approve", "undone", "compensated"),
    } <= taken(dot)
    assert current(dot) == "compensated" == record.state
    retries = [e for e in dot_edges(dot) if e[1] == "retry"]
    assert retries and all(label(e[3]) == ["retry", "by an operator"] for e in retries)

    second = orchestrator.run(FeatureSaga(fail=frozenset({"notify"})))
    record = orchestrator.store.load(second.saga_id)
    record.data.fail = frozenset()
    assert orchestrator.retry(second.saga_id).status is SagaStatus.COMPLETED
    dot = render(record)
    assert {
        ("notify", "fail", "failed"),
        ("failed", "retry", "notify"),
        ("notify", "advance", "completed"),
    } <= taken(dot)
    assert current(dot) == "completed"


def test_a_resolved_saga_says_so():
    orchestrator = Orchestrator()
    result = orchestrator.run(FeatureSaga(fail=frozenset({"notify"})))
    resolved = orchestrator.resolve(result.saga_id, "notified the customer by phone")
    failed = dot_nodes(render(resolved))["failed"]
    assert "resolved by hand: notified the customer by phone" in label(failed)


def test_the_path_drawn_is_the_one_the_run_recorded():
    result, record = run(FeatureSaga(fail=frozenset({"charge"})))
    full = render(record)
    record.history.clear()  # the history plays no part: the path is read, not re-derived
    assert render(record) == full
    assert render(attrs.evolve(result, history=())) == full
    assert taken(full) == set(record.path)
    # a record from before paths were recorded (a migrated version-1 store): no path is
    # drawn, and the record's own state is where it is
    record.path.clear()
    old = render(record)
    assert taken(old) == set() and current(old) == record.state == "compensated"
    assert current(render(attrs.evolve(result, path=()))) == "compensated"


# --------------------------------------------------------------------------- the API

def test_render_takes_a_class_an_instance_or_a_spec():
    assert render(FeatureSaga) == render(FeatureSaga()) == render(SPEC) == to_dot(FeatureSaga)
    assert render(FeatureSaga, "mermaid") == to_mermaid(SPEC)


def test_bad_input_gets_a_clear_error():
    with pytest.raises(TypeError, match=r"decorate the class with @sagaflow\.saga"):
        render(object())
    with pytest.raises(ValueError, match="unknown diagram format 'jpeg'"):
        render(FeatureSaga, "jpeg")
    with pytest.raises(ValueError, match="cannot tell the diagram format"):
        write(FeatureSaga, "x.txt")
    result, record = run(FeatureSaga())
    stray = attrs.evolve(result, data={"not": "a saga"})
    with pytest.raises(TypeError, match="saga=TheSagaClass"):
        render(stray)
    assert render(stray, saga=FeatureSaga) == render(result)
    other = guarded_saga(Guard())
    with pytest.raises(ValueError, match="is of saga 'FeatureSaga', not 'Guarded'"):
        render(result, saga=other)
    record.fingerprint = "0" * 16
    with pytest.raises(ValueError, match="another definition"):
        render(record)


def test_write_and_draw_pick_the_format_from_the_suffix(tmp_path):
    for suffix, fmt in ((".dot", "dot"), (".gv", "dot"), (".mmd", "mermaid"), (".svg", "svg")):
        path = write(FeatureSaga, tmp_path / f"f{suffix}")
        assert format_for(path) == fmt
        assert path.read_text(encoding="utf-8") == render(FeatureSaga, fmt)
    out = tmp_path / "d.mmd"
    assert draw(FeatureSaga, output=out) == out.read_text(encoding="utf-8")
    assert out.read_text(encoding="utf-8").startswith("stateDiagram-v2")
    assert draw(FeatureSaga) == render(FeatureSaga, "dot")
    assert file_stem("Order saga/v2") == "Order_saga_v2"


def test_the_diagram_package_is_not_shadowed_by_a_function_of_the_same_name():
    # `import sagaflow.diagram as d` once gave the function `diagram`, not the package
    # (sagaflow/__init__ rebound the attribute): one name, one thing.
    import sagaflow.diagram as package

    assert isinstance(package, type(importlib))
    assert package.draw is sagaflow_draw


# --------------------------------------------------------------------------- diagrams/

def test_diagrams_folder_is_up_to_date(monkeypatch):
    """diagrams/ holds every example saga's DOT, Mermaid and SVG; regenerate it when stale."""
    monkeypatch.syspath_prepend(str(ROOT))
    found = load("examples")
    sagas, errors = found.sagas, found.errors
    assert not errors, errors
    assert sagas, "no example sagas found"
    folder = ROOT / "diagrams"
    expected: set[str] = set()
    stale: list[str] = []
    for cls in sagas:
        stem = file_stem(spec_of(cls).name)
        for fmt, suffix in (("dot", ".dot"), ("mermaid", ".mmd")):
            expected.add(stem + suffix)
            path = folder / (stem + suffix)
            if not path.is_file():
                stale.append(f"{path.name} is missing")
            elif path.read_bytes() != render(cls, fmt).encode("utf-8"):
                stale.append(f"{path.name} differs from {cls.__module__}.{cls.__qualname__}")
        expected.add(stem + ".svg")
        if not (folder / (stem + ".svg")).is_file():
            stale.append(f"{stem}.svg is missing")
    extra = sorted(
        p.name
        for p in folder.glob("*")
        if p.suffix in (".dot", ".mmd", ".svg", ".png") and p.name not in expected
    )
    stale += [f"{name} belongs to no example saga" for name in extra]
    assert not stale, f"diagrams/ is stale ({'; '.join(stale)}): run `{REGENERATE}`"


def test_readme_shows_the_unbundle_saga_diagram():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.partition("## Diagrams and the sagaflow command")[2]
    assert section, "README lacks the section '## Diagrams and the sagaflow command'"
    assert REGENERATE in section
    if (ROOT / "diagrams" / "UnbundleSaga.mmd").is_file():
        mermaid = (ROOT / "diagrams" / "UnbundleSaga.mmd").read_text(encoding="utf-8")
        assert f"```mermaid\n{mermaid}```" in section, (
            "README's Mermaid block differs from diagrams/UnbundleSaga.mmd: copy the file "
            "into the block"
        )
        assert "(diagrams/UnbundleSaga.svg)" in section


# --------------------------------------------------------------------------- waits

@attrs.frozen
class Decision:
    approved: bool
    by: str
    reason: str = ""


def large(s: WaitingSaga) -> bool:
    return s.amount > 100


def renewal(s: WaitingSaga) -> datetime:
    return datetime(2030, 1, 1, tzinfo=UTC)


@saga(key="order_id")
@attrs.define
class WaitingSaga:
    """A wait for a typed signal (conditional, compensates on timeout), a timer, and after
    the pivot a wait that goes on when its time runs out and a timer at a time."""

    order_id: str = "o-1"
    amount: int = 500

    @step(timeout=None)
    def reserve(self, ctx):
        pass

    @reserve.compensate(timeout=None)
    def release(self, ctx):
        pass

    @wait("approval", payload=Decision, timeout=timedelta(days=3), when=large)
    def approval(self, decision: Decision, ctx):
        if not decision.approved:
            raise SagaRejected(f"refused by {decision.by}: {decision.reason}")

    @timer(after=timedelta(hours=1, minutes=30))
    def cool_off(self, ctx):
        pass

    @step(pivot=True, timeout=None)
    def charge(self, ctx):
        pass

    @wait("delivered", timeout=45, on_timeout="continue")
    def delivered(self, ctx):
        pass

    @timer(at=renewal)
    def renew(self, ctx):
        pass


WAITING = spec_of(WaitingSaga)
TEAL = "#00796b"


def graph_title(dot: str) -> str:
    graph = pygraphviz.AGraph(string=dot)  # kept alive while its label is read
    return str(graph.graph_attr["label"])


def edge_labels(dot: str) -> dict[tuple[str, str, str], list[str]]:
    return {(s, t, d): label(a) for s, t, d, a in dot_edges(dot)}


def test_a_wait_is_drawn_as_a_wait_with_its_signal_payload_and_timeout():
    dot = render(WaitingSaga)
    nodes = dot_nodes(dot)
    approval = nodes["approval"]
    assert label(approval) == [
        "approval", "signal approval (Decision)", "timeout 3d → compensate", "when large",
    ]
    assert approval["shape"] == "hexagon" and approval["color"] == TEAL
    assert label(nodes["delivered"]) == ["delivered", "signal delivered", "timeout 45s → continue"]
    # a step is still a rounded box, and a wait does not say "readonly" or "retriable"
    assert nodes["reserve"].get("shape", "box") == "box"
    assert label(nodes["cool_off"]) == ["cool_off", "timer: after 1h30m"]
    assert nodes["cool_off"]["shape"] == "hexagon" and nodes["cool_off"]["color"] != TEAL
    assert label(nodes["renew"]) == ["renew", "timer: at renewal"]
    # every transition of the machine, each once, the timeouts among them
    edges = dot_edges(dot)
    assert {(s, t, d) for s, t, d, _ in edges} == WAITING.transitions
    assert len(edges) == len(WAITING.transitions)
    labels = edge_labels(dot)
    assert labels[("approval", "timeout", "compensating_reserve")] == ["timeout", "3d → compensate"]
    assert labels[("delivered", "timeout", "renew")] == ["timeout", "45s → continue"]
    assert labels[("approval", "advance", "cool_off")] == ["advance", "on signal approval"]
    assert labels[("approval", "skip", "cool_off")] == ["skip", "unless large"]
    assert labels[("cool_off", "advance", "charge")] == ["advance", "after 1h30m"]
    assert labels[("renew", "advance", "completed")] == ["advance", "at renewal"]
    timeouts = [a for s, t, d, a in edges if t == "timeout"]
    assert timeouts and all(a["color"] == TEAL and a["style"] == "dashed" for a in timeouts)


def test_a_wait_in_mermaid_has_its_own_class_and_labelled_timeout_edges():
    text = render(WaitingSaga, "mermaid")
    assert_valid_mermaid(text)
    assert set(mermaid_edges(text)) == WAITING.transitions
    lines = text.splitlines()
    for line in (
        "    approval --> compensating_reserve : timeout (3d → compensate)",
        "    approval --> cool_off : advance (on signal approval)",
        "    approval --> cool_off : skip (unless large)",
        "    delivered --> renew : timeout (45s → continue)",
        "    approval : signal approval (Decision)",
        "    approval : timeout 3d → compensate",
        "    cool_off : timer#58; after 1h30m",
        "    class approval,delivered waitState",
        "    class cool_off,renew timerState",
    ):
        assert line in lines, line
    assert "    approval : readonly" not in lines


def test_a_wait_in_svg_and_png_is_a_hexagon():
    ns = "{http://www.w3.org/2000/svg}"
    root = ET.fromstring(render(WaitingSaga, "svg").encode())
    shapes = {}
    for g in root.iter(f"{ns}g"):
        if g.get("class") == "node":
            title = g.find(f"{ns}title").text
            polygon = g.find(f"{ns}polygon")
            shapes[title] = None if polygon is None else len(polygon.get("points").split())
    assert shapes["approval"] == shapes["cool_off"] == 7  # six corners, closed
    assert shapes["reserve"] is None  # a rounded box is a path
    assert "signal approval (Decision)" in svg_texts(render(WaitingSaga, "svg"))
    png = render(WaitingSaga, "png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png != render(FeatureSaga, "png")


def parked(saga_obj: WaitingSaga) -> tuple[Orchestrator, str]:
    clock = VirtualClock(datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp())
    orchestrator = Orchestrator(clock=clock)
    result = orchestrator.run(saga_obj)
    assert result.status is SagaStatus.RUNNING
    return orchestrator, result.saga_id


def test_a_parked_saga_is_drawn_at_its_wait_until_when():
    orchestrator, saga_id = parked(WaitingSaga())
    record = orchestrator.store.load(saga_id)
    dot = render(record)
    assert current(dot) == "approval" == record.state
    node = dot_nodes(dot)["approval"]
    assert node["fillcolor"] == "#b2dfdb" and node["shape"] == "hexagon"
    assert "parked until 2026-12-10 12:00 UTC" in label(node)
    assert graph_title(dot).endswith("RUNNING, parked at approval")
    assert taken(dot) == {("not_started", "start", "reserve"), ("reserve", "advance", "approval")}
    # the snapshot, which has no wake time, draws it parked too
    result = orchestrator.get(saga_id)
    assert result.step("approval").status is StepStatus.WAITING
    assert "parked" in label(dot_nodes(render(result))["approval"])
    text = render(record, "mermaid")
    assert_valid_mermaid(text)
    assert re.search(r"^    class approval ranWaiting$", text, re.M)
    assert "    approval : current state" in text.splitlines()

    # at its timer next, after the signal
    after = orchestrator.signal(saga_id, "approval", Decision(True, "ann"))
    record = orchestrator.store.load(saga_id)
    assert after.status is SagaStatus.RUNNING and current(render(record)) == "cool_off"
    assert "parked until 2026-12-07 13:30 UTC" in label(dot_nodes(render(record))["cool_off"])
    assert ("approval", "advance", "cool_off") in taken(render(record))


def test_a_rejected_saga_shows_the_rejection_and_its_reason():
    orchestrator, saga_id = parked(WaitingSaga())
    result = orchestrator.signal(saga_id, "approval", Decision(False, "bob", "over budget"))
    assert result.status is SagaStatus.COMPENSATED
    dot = render(orchestrator.store.load(saga_id))
    node = dot_nodes(dot)["approval"]
    assert node["fillcolor"] == "#f8bbd0"
    assert label(node)[-1] == "REJECTED, refused by bob: over budget"
    assert graph_title(dot).endswith("COMPENSATED (rejected at approval)")
    assert ("approval", "compensate", "compensating_reserve") in taken(dot)
    assert current(dot) == "compensated"
    assert render(result) == dot
    text = render(result, "mermaid")
    assert_valid_mermaid(text)
    assert re.search(r"^    class approval ranRejected$", text, re.M)


def test_a_wait_that_timed_out_shows_its_timeout_edge_taken():
    orchestrator, saga_id = parked(WaitingSaga())
    orchestrator.clock.advance(3 * 86_400)
    assert orchestrator.resume_due() == {saga_id: SagaStatus.COMPENSATED}
    dot = render(orchestrator.store.load(saga_id))
    node = dot_nodes(dot)["approval"]
    assert node["fillcolor"] == "#ffccbc"
    assert label(node)[-1] == "TIMED OUT, no signal within 3d"
    assert ("approval", "timeout", "compensating_reserve") in taken(dot)
    assert re.search(r"^    class approval ranExpired$", render(orchestrator.get(saga_id),
                     "mermaid"), re.M)


def test_a_skipped_wait_is_drawn_like_a_skipped_step():
    orchestrator, saga_id = parked(WaitingSaga(amount=5))  # parks at the timer instead
    dot = render(orchestrator.store.load(saga_id))
    assert ("approval", "skip", "cool_off") in taken(dot)
    assert "skipped" in label(dot_nodes(dot)["approval"])
    assert current(dot) == "cool_off"


@st.composite
def waiting_shapes(draw: st.DrawFn) -> list[tuple[str, str, str]]:
    """(name, what, on_timeout) per step: a step, a wait or a timer, before and after a
    pivot; a wait's on_timeout is one its side of the pivot allows."""
    what = st.sampled_from(["step", "wait", "timer"])
    before = draw(st.lists(what, max_size=3))
    after = draw(st.lists(what, max_size=2))
    shape = [(w, draw(st.sampled_from(["compensate", "continue", "fail"]))) for w in before]
    shape.append(("pivot", ""))
    shape += [(w, draw(st.sampled_from(["continue", "fail"]))) for w in after]
    return [(f"s{i}", w, t) for i, (w, t) in enumerate(shape)]


def build_waiting_saga(shape: list[tuple[str, str, str]], conditional: bool) -> type:
    qualname = "Waits"
    body: dict[str, object] = {"__qualname__": qualname, "__module__": __name__}

    def fn(self, ctx):
        pass

    when = large if conditional else None
    pivot_seen = False
    for name, what, on_timeout in shape:
        forward = _named(fn, f"{qualname}.{name}")
        if what == "pivot":
            pivot_seen = True
            body[name] = StepDef(fn=forward, timeout=None, pivot=True)
        elif what == "wait":
            body[name] = wait(f"sig_{name}", timeout=60, on_timeout=on_timeout, when=when)(
                forward)
        elif what == "timer":
            body[name] = timer(after=30, when=when)(forward)
        else:
            made = StepDef(fn=forward, timeout=None, retriable=pivot_seen, when=when)
            body[name] = made
            if not pivot_seen:
                body[f"undo_{name}"] = made.compensate(_named(fn, f"{qualname}.undo_{name}"))
    body["__annotations__"] = {"amount": int}
    body["amount"] = 0
    return saga(type(qualname, (), body))


@given(waiting_shapes(), st.booleans())
def test_any_saga_with_waits_is_drawn_exactly_as_generated(shape, conditional):
    spec = spec_of(build_waiting_saga(shape, conditional))
    dot, text = render(spec, "dot"), render(spec, "mermaid")
    assert list(dot_nodes(dot)) == list(spec.machine.states)
    assert {(s, t, d) for s, t, d, _ in dot_edges(dot)} == spec.transitions
    assert set(mermaid_edges(text)) == spec.transitions
    assert_valid_mermaid(text)
    waits = [s for s in spec.steps if s.wait is not None]
    nodes = dot_nodes(dot)
    for s in waits:
        assert nodes[s.name]["shape"] == "hexagon"
    for s, t, _, a in dot_edges(dot):
        if t == "timeout":
            assert label(a)[1].endswith(spec.step(s).wait.on_timeout.value)


def test_compensation_state_names_match_the_machine():
    # The diagram's rank grouping and labels rely on this naming.
    for s in SPEC.steps:
        if s.compensation is not None:
            assert compensation_state(s.name) in SPEC.machine.states

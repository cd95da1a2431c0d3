"""``sagaflow new saga``: write a saga package (saga, rules kept apart) and its tests.

The layout, under a folder ``root``::

    <package>/__init__.py   re-exports the saga class
    <package>/saga.py       the saga: one step per name, each with its compensation
    <package>/rules.py      the business rules: pure functions, no sagaflow import
    tests/test_<package>.py tests of the rules and of the saga, passing as generated

The templates are Python strings in this module (no package data to ship). Nothing
is ever overwritten: when any target file exists, nothing is written.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import attrs

from ..errors import ScaffoldError
from ..machine import COMPENSATING_PREFIX, RESERVED_NAMES, is_reserved

__all__ = ["DEFAULT_STEPS", "Plan", "ScaffoldError", "create", "plan"]

#: Steps of a saga scaffolded without ``--steps``.
DEFAULT_STEPS = ("reserve", "charge", "confirm")
# Names the generated class uses for itself; a step may not take them.
_TAKEN = frozenset({"request_id"})


@attrs.frozen
class Plan:
    """What :func:`create` will write: the names it chose and every file's text."""

    class_name: str
    package: str
    module: str  # the dotted name the saga module is imported by
    files: dict[Path, str]


def _words(name: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return [w for w in re.split(r"[_\W]+", spaced) if w]


def names_for(name: str) -> tuple[str, str]:
    """The class name and the package name for ``NAME``.

    ``OnboardClientSaga``, ``OnboardClient`` and ``onboard_client`` all give
    ``("OnboardClientSaga", "onboard_client")``.
    """
    words = _words(name)
    if not words or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise ScaffoldError(
            f"saga name {name!r} is not a Python name: use letters, digits and underscores, "
            "starting with a letter, e.g. OnboardClientSaga or onboard_client"
        )
    if words[-1].lower() == "saga" and len(words) > 1:
        words = words[:-1]
    class_name = "".join(w[:1].upper() + w[1:] for w in words) + "Saga"
    package = "_".join(w.lower() for w in words)
    if keyword.iskeyword(package) or package in sys.stdlib_module_names or package in {
        "sagaflow",
        "tests",
        "test",
    }:
        raise ScaffoldError(
            f"the package for {name!r} would be called {package!r}, which is taken (a Python "
            "keyword, a standard library module or a common folder): choose another NAME"
        )
    return class_name, package


def parse_steps(text: str | Sequence[str]) -> list[str]:
    """Step names from ``"a,b,c"`` (or a list), checked: identifiers, unique, not reserved."""
    raw = text.split(",") if isinstance(text, str) else list(text)
    steps = [s.strip() for s in raw if s.strip()]
    if not steps:
        raise ScaffoldError("--steps names no step: give a comma-separated list, e.g. a,b,c")
    seen: set[str] = set()
    for s in steps:
        if not s.isidentifier() or keyword.iskeyword(s) or s.startswith("_"):
            raise ScaffoldError(
                f"step name {s!r} is not a usable method name: use a Python identifier "
                "that does not start with '_', e.g. reserve_stock"
            )
        if is_reserved(s):
            raise ScaffoldError(
                f"step name {s!r} is reserved for the state machine "
                f"({', '.join(sorted(RESERVED_NAMES))}, {COMPENSATING_PREFIX}*): rename it"
            )
        if s in _TAKEN:
            raise ScaffoldError(f"step name {s!r} is a field of the generated saga: rename it")
        if s in seen:
            raise ScaffoldError(f"step {s!r} is listed twice: give each step its own name")
        seen.add(s)
    for s in steps:
        if f"undo_{s}" in seen:
            raise ScaffoldError(
                f"step 'undo_{s}' would clash with the compensation of step {s!r}: rename it"
            )
    return steps


def _package_prefix(root: Path) -> str:
    """The dotted package ``root`` is inside (``""`` when it is a plain folder)."""
    parts: list[str] = []
    folder = root.resolve()
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)


def plan(
    name: str,
    steps: str | Sequence[str] = DEFAULT_STEPS,
    root: str | Path = ".",
    pivot: str | None = None,
) -> Plan:
    """Choose the names and render every file, writing nothing."""
    class_name, package = names_for(name)
    step_names = parse_steps(steps)
    if pivot is not None and pivot not in step_names:
        raise ScaffoldError(
            f"--pivot {pivot!r} is not one of the steps ({', '.join(step_names)}): "
            "name one of them"
        )
    folder = Path(root)
    prefix = _package_prefix(folder)
    dotted = f"{prefix}.{package}" if prefix else package
    pivot_at = step_names.index(pivot) if pivot is not None else None
    files = {
        folder / package / "__init__.py": _init_text(class_name, package),
        folder / package / "saga.py": _saga_text(class_name, dotted, step_names, pivot_at),
        folder / package / "rules.py": _rules_text(class_name),
        folder / "tests" / f"test_{package}.py": _test_text(
            class_name, dotted, step_names, pivot_at
        ),
    }
    if not (folder / "tests").exists():
        # A package, so that pytest puts `root` on sys.path and the test imports the saga.
        files[folder / "tests" / "__init__.py"] = ""
    return Plan(class_name, package, f"{dotted}.saga", files)


def create(
    name: str,
    steps: str | Sequence[str] = DEFAULT_STEPS,
    root: str | Path = ".",
    pivot: str | None = None,
) -> Plan:
    """Write the saga package and its test under ``root``; never overwrite a file."""
    made = plan(name, steps, root, pivot)
    existing = [p for p in made.files if p.exists()]
    if existing:
        listed = ", ".join(str(p) for p in existing)
        raise ScaffoldError(
            f"not overwriting {listed}: choose another NAME or --path, or move them away"
        )
    for path, text in made.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    return made


# --------------------------------------------------------------------------- templates

def _init_text(class_name: str, package: str) -> str:
    return (
        f'"""The {class_name} saga: ``saga.py`` runs it, ``rules.py`` decides."""\n\n'
        f"from .saga import {class_name}\n\n"
        f'__all__ = ["{class_name}"]\n'
    )


def _rules_text(class_name: str) -> str:
    return textwrap.dedent(
        f'''\
        """Business rules of {class_name}: pure functions of plain data.

        The rules decide and the saga acts. Keep this module free of I/O and of any
        sagaflow import, so the rules are tested alone and reused anywhere.
        """

        from __future__ import annotations


        def problems(request_id: str) -> list[str]:
            """What is wrong with a request; empty when it may go ahead."""
            found: list[str] = []
            if not request_id.strip():
                found.append("request_id is empty")
            return found
        '''
    )


def _title(step: str) -> str:
    return step.replace("_", " ").capitalize()


def _step_text(step: str, index: int, pivot_at: int | None) -> str:
    check = ""
    if index == 0:
        check = (
            "        wrong = rules.problems(self.request_id)\n"
            "        if wrong:  # fails the step: the saga compensates what it did\n"
            '            raise ValueError("; ".join(wrong))\n'
        )
    call = "        PARTICIPANT.do(ctx.idempotency_key, ctx.step)\n"
    if pivot_at is not None and index == pivot_at:
        return (
            "    @step(pivot=True, timeout=10.0)\n"
            f"    def {step}(self, ctx: StepContext) -> None:\n"
            f'        """{_title(step)}: the point of no return. TODO: call the real service."""\n'
            f"{check}{call}"
        )
    if pivot_at is not None and index > pivot_at:
        return (
            "    @step(retriable=True, timeout=10.0, retry=Retry(attempts=5, backoff=0.5))\n"
            f"    def {step}(self, ctx: StepContext) -> None:\n"
            f'        """{_title(step)}: after the pivot, retried, never undone. TODO: '
            'call the real service."""\n'
            f"{check}{call}"
        )
    return (
        "    @step(timeout=10.0)\n"
        f"    def {step}(self, ctx: StepContext) -> None:\n"
        f'        """{_title(step)}. TODO: call the real service."""\n'
        f"{check}{call}"
        "\n"
        f"    @{step}.compensate\n"
        f"    def undo_{step}(self, ctx: StepContext) -> None:\n"
        f'        """Undo {step}: idempotent, and fine when there is nothing to undo."""\n'
        "        PARTICIPANT.undo(forward_key(ctx))\n"
    )


def _saga_text(class_name: str, dotted: str, steps: list[str], pivot_at: int | None) -> str:
    retry = " Retry," if pivot_at is not None and pivot_at < len(steps) - 1 else ""
    body = "\n".join(_step_text(s, i, pivot_at) for i, s in enumerate(steps))
    module = f"{dotted}.saga"
    head = textwrap.dedent(
        f'''\
        """{class_name}: TODO say in one line what it does.

        Generated by ``sagaflow new saga``. The steps call their participants (services,
        stores) through ``PARTICIPANT``, a stand-in to replace with real clients. Each
        compensation undoes its step: it must be idempotent and tolerate "nothing to
        undo". Business rules live in ``rules.py``, which never imports sagaflow.

            sagaflow check {module}
            sagaflow diagram {module}:{class_name} --output {class_name}.svg
        """

        from __future__ import annotations

        import attrs
        from sagaflow import Direction,{retry} StepContext, saga, step
        from sagaflow.context import idempotency_key

        from . import rules


        class Participant:
            """Stands in for the services the steps call: replace it with real clients.

            It deduplicates on the idempotency key, as a real participant must, so a
            retried or recovered call changes nothing the second time.
            """

            def __init__(self) -> None:
                self.applied: dict[str, str] = {{}}  # idempotency key -> step
                self.failing: set[str] = set()  # steps that fail, for tests

            def do(self, key: str, step: str) -> None:
                if step in self.failing:
                    raise ConnectionError(f"{{step}}: participant unavailable")
                self.applied.setdefault(key, step)

            def undo(self, key: str) -> None:
                self.applied.pop(key, None)  # nothing to undo is fine


        PARTICIPANT = Participant()


        def forward_key(ctx: StepContext) -> str:
            """The idempotency key the forward call of ``ctx.step`` used: what to undo."""
            return idempotency_key(ctx.saga_id, ctx.step, Direction.FORWARD)


        @saga
        @attrs.define
        class {class_name}:
            """One run's data, kept in its record: what the steps need, and what a
            compensation needs to undo its step (an id a service returned, a price before
            a change)."""

            request_id: str

        '''
    )
    return head + body


def _test_text(class_name: str, dotted: str, steps: list[str], pivot_at: int | None) -> str:
    undoable = steps if pivot_at is None else steps[: pivot_at + 1]
    after = [] if pivot_at is None else steps[pivot_at + 1 :]
    text = textwrap.dedent(
        f'''\
        """Tests of {class_name} and its rules (generated by ``sagaflow new saga``)."""

        from __future__ import annotations

        from collections.abc import Iterator

        import pytest
        from sagaflow import Orchestrator, SagaStatus, spec_of
        from sagaflow.testing import VirtualClock

        from {dotted} import rules
        from {dotted}.saga import PARTICIPANT, {class_name}

        STEPS = {json.dumps(steps)}


        @pytest.fixture(autouse=True)
        def fresh_participant() -> Iterator[None]:
            PARTICIPANT.applied.clear()
            PARTICIPANT.failing.clear()
            yield
            PARTICIPANT.applied.clear()
            PARTICIPANT.failing.clear()


        def run(saga: {class_name}) -> SagaStatus:
            # A virtual clock: retry backoff costs no real time.
            return Orchestrator(clock=VirtualClock()).run(saga).status


        def test_rules_accept_a_request() -> None:
            assert rules.problems("request-1") == []


        def test_rules_reject_an_empty_request() -> None:
            assert rules.problems("  ") == ["request_id is empty"]


        def test_the_steps_run_in_order() -> None:
            assert [s.name for s in spec_of({class_name}).steps] == STEPS


        def test_it_completes() -> None:
            assert run({class_name}("request-1")) is SagaStatus.COMPLETED
            assert sorted(PARTICIPANT.applied.values()) == sorted(STEPS)


        def test_a_rejected_request_changes_nothing() -> None:
            assert run({class_name}("")) is SagaStatus.COMPENSATED
            assert PARTICIPANT.applied == {{}}


        @pytest.mark.parametrize("failing", {json.dumps(undoable)})
        def test_a_failure_undoes_every_step_before_it(failing: str) -> None:
            PARTICIPANT.failing.add(failing)
            assert run({class_name}("request-1")) is SagaStatus.COMPENSATED
            assert PARTICIPANT.applied == {{}}
        '''
    )
    if after:
        text += textwrap.dedent(
            f'''\


            @pytest.mark.parametrize("failing", {json.dumps(after)})
            def test_after_the_pivot_a_failure_waits_for_an_operator(failing: str) -> None:
                PARTICIPANT.failing.add(failing)
                assert run({class_name}("request-1")) is SagaStatus.FAILED
                # nothing is undone after the point of no return
                assert set(PARTICIPANT.applied.values()) == set(STEPS[: STEPS.index(failing)])
            '''
        )
    return text

"""``sagaflow verify``: the quality gates of users' sagas, as one command for their CI.

For each saga class a target names, the gates (seed 003's "every step has a compensation
or a reason, timeouts set, idempotency in place, tests pass"):

- ``definition``: ``@saga`` accepted the class (every step compensated or declared
  readonly, pivot or retriable; signatures, retries, groups...);
- ``graph``: its state machine (every state reachable and able to finish), as
  ``sagaflow check`` checks it;
- ``timeouts``: every call has a time limit (steps, compensations, signal waits);
- ``plans``: N generated failure plans (:func:`~sagaflow.testing.failure_plans`) run
  with every invariant held (:func:`~sagaflow.testing.check_invariants`), the first
  failure shrunk to its smallest plan;
- ``idempotency``: a compensation run twice changes nothing
  (:func:`~sagaflow.testing.assert_compensations_idempotent`), and one run with nothing
  to undo neither raises nor changes anything;
- ``crash points`` (``--crash``, slower): killed at each checkpoint and recovered;
- ``diagrams`` (``--diagrams DIR``): the committed diagrams are what ``sagaflow diagram``
  would write now.

Instances come from the saga module's ``example_sagas()`` (a hypothesis strategy of
instances or :class:`~sagaflow.testing.SagaCase`) or else from the class's fields
(:func:`~sagaflow.testing.saga_cases`). Exit status 0 when every gate passes, 1 when
one fails, 2 when the target or an option is wrong.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import click

from ..choreography import is_choreography
from ..diagram import SUFFIXES, file_stem, render
from ..machine import check_graph
from ..spec import SagaSpec, spec_of
from ..testing.plan import SagaCase
from .loader import load
from .problems import CliError, one_line
from .text import columns

__all__ = ["verify"]

PASS, FAIL, SKIP = "pass", "FAIL", "skip"


@attrs.frozen
class Gate:
    """One gate's verdict on one saga: ``result`` is pass, FAIL or skip."""

    gate: str
    result: str
    detail: str


@attrs.frozen
class Verdict:
    """Every gate of one saga (``where``: ``module:Class``, or the module that failed)."""

    where: str
    name: str
    gates: tuple[Gate, ...]

    @property
    def ok(self) -> bool:
        return all(g.result != FAIL for g in self.gates)


@click.command()
@click.argument("target")
@click.option("--plans", "n_plans", type=click.IntRange(min=0), default=100, show_default=True,
              help="Generated failure plans per saga (0: skip the gate).")
@click.option("--crash", is_flag=True,
              help="Also kill each saga at every crash point and recover it (slower).")
@click.option("--diagrams", type=click.Path(path_type=Path), default=None,
              help="Folder of committed diagrams (<saga name>.dot/.mmd/.svg) to check "
              "against what `sagaflow diagram` would write now.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="A table per saga, or one JSON document.")
def verify(target: str, n_plans: int, crash: bool, diagrams: Path | None, fmt: str) -> None:
    """Run the quality gates on the sagas of TARGET (MODULE, MODULE:CLASS or a package).

    Per saga: the definition and graph checks, timeouts, N generated failure plans with
    every invariant, the idempotency of compensations, the crash points (--crash) and
    the freshness of the committed diagrams (--diagrams DIR). Instances come from the
    module's example_sagas() (a hypothesis strategy of instances or SagaCase), else
    from the class's fields. Exit status 0 when every gate passes, 1 when one fails,
    2 when TARGET or an option is wrong.

    \b
    Examples:
      sagaflow verify examples.quickstart
      sagaflow verify myapp.sagas:OrderSaga --plans 500 --crash --diagrams docs/diagrams
    """
    if diagrams is not None and not diagrams.is_dir():
        raise CliError(
            f"--diagrams {diagrams}: no such folder; give the folder your diagrams are "
            "committed in (written by `sagaflow diagram PACKAGE --all --output DIR`)"
        )
    crash_check = _crash_points() if crash else None
    found = load(target)
    verdicts = [
        Verdict(module, module, (Gate("definition", FAIL, _problems(error)),))
        for module, error in found.errors
    ]
    for cls in found.sagas:
        verdicts.append(_verify(cls, n_plans, crash_check, diagrams))
    if fmt == "json":
        click.echo(json.dumps(
            {"ok": all(v.ok for v in verdicts), "sagas": [_as_json(v) for v in verdicts]},
            indent=2,
        ))
    else:
        for v in verdicts:
            head = v.where if v.name == v.where else f"{v.where} (saga {v.name!r})"
            click.echo(f"{head}: {'ok' if v.ok else 'FAILED'}")
            rows = [["gate", "result", "detail"]]
            rows += [[g.gate, g.result, _first_line(g.detail)] for g in v.gates]
            for line in columns(rows, indent="  "):
                click.echo(line)
            for g in v.gates:
                if g.result == FAIL and _first_line(g.detail) != g.detail:
                    click.echo(f"\n  {g.gate}:")
                    click.echo("\n".join("    " + line for line in g.detail.splitlines()))
            click.echo("")
        failed = [v for v in verdicts if not v.ok]
        n = len(verdicts)
        noun = "saga" if n == 1 else "sagas"
        if failed:
            click.echo(f"{n} {noun} verified: {len(failed)} failed "
                       f"({', '.join(v.name for v in failed)})")
        else:
            click.echo(f"{n} {noun} verified: every gate passed")
    if not all(v.ok for v in verdicts):
        raise SystemExit(1)


def _verify(cls: type, n_plans: int, crash_check: Callable[..., Any] | None,
            diagrams: Path | None) -> Verdict:
    spec = spec_of(cls)
    where = f"{cls.__module__}:{cls.__qualname__}"
    gates = [Gate("definition", PASS, f"{_count(len(spec.steps), 'step')} accepted by @saga")]
    gates.append(_graph(spec))
    gates.append(_timeouts(spec))
    cases, why = _cases(cls)
    if n_plans == 0:
        gates.append(Gate("plans", SKIP, "--plans 0"))
    elif cases is None:
        gates.append(Gate("plans", FAIL, why))
    else:
        gates.append(_plans(cls, cases, n_plans))
    gates += _idempotency(cls, cases, why)
    if crash_check is not None:
        gates.append(_crash(cls, crash_check, cases, why))
    else:
        gates.append(Gate("crash points", SKIP, "give --crash (slower)"))
    if diagrams is not None:
        gates.append(_diagrams(cls, spec, diagrams))
    else:
        gates.append(Gate("diagrams", SKIP, "give --diagrams DIR"))
    return Verdict(where, spec.name, tuple(gates))


def _graph(spec: SagaSpec) -> Gate:
    trapped = check_graph(list(spec.machine.states), spec.transitions)
    if trapped:
        return Gate("graph", FAIL, "\n".join(trapped))
    return Gate("graph", PASS, f"{len(spec.machine.states)} states, all reachable and able "
                "to finish")


def _timeouts(spec: SagaSpec) -> Gate:
    """Every call that can hang has a time limit: a step, a compensation, a signal wait."""
    missing: list[str] = []
    for s in spec.steps:
        if s.wait is not None:
            if s.wait.signal is not None and s.wait.timeout is None:
                missing.append(f"wait {s.name!r} waits for {s.wait.signal!r} forever: "
                               "give it timeout=SECONDS")
            continue
        if s.timeout is None:
            missing.append(f"step {s.name!r} has timeout=None: give it timeout=SECONDS")
        if s.compensation is not None and s.compensation_timeout is None:
            missing.append(f"compensation {s.compensation_name!r} has timeout=None: give "
                           f"@{s.name}.compensate(timeout=SECONDS)")
    if missing:
        return Gate("timeouts", FAIL, "\n".join(missing))
    return Gate("timeouts", PASS, "every step, compensation and wait has a time limit")


def _cases(cls: type) -> tuple[Any, str]:
    """The strategy of the saga's instances, or ``None`` and how to give one."""
    try:
        from ..testing import saga_cases
    except ImportError as exc:
        raise CliError(
            f"sagaflow verify needs hypothesis ({one_line(exc)}): pip install "
            "'sagaflow[test]' or 'hypothesis'"
        ) from None
    try:
        cases = saga_cases(cls)
        # one instance built now, so a saga that cannot be built says so once, here
        _first(cases, lambda _: True, 1)
    except Exception as exc:
        return None, (
            f"cannot build instances of {cls.__qualname__}: {one_line(exc)}; define "
            f"example_sagas() in {cls.__module__} returning a hypothesis strategy of "
            "instances (or SagaCase with setup and snapshot), or register strategies for "
            "its fields' types (hypothesis.strategies.register_type_strategy)"
        )
    return cases, ""


def _plans(cls: type, cases: Any, n: int) -> Gate:
    from hypothesis import HealthCheck, Verbosity, given, settings

    from ..testing import InvariantViolation, check_invariants, failure_plans, run_plan

    ran = [0]

    @settings(max_examples=n, database=None, deadline=None, derandomize=True,
              report_multiple_bugs=False,
              verbosity=Verbosity.quiet, suppress_health_check=list(HealthCheck))
    @given(case=cases, plan=failure_plans(cls))
    def every_plan(case: Any, plan: Any) -> None:
        ran[0] += 1
        check_invariants(run_plan(case, plan))

    try:
        every_plan()
    except InvariantViolation as exc:
        run: Any = exc.run
        broken = "; ".join(f"[{v.number}] {v.name}" for v in exc.violations)
        return Gate("plans", FAIL, f"broke {broken} under {run.plan!r} (smallest plan "
                    f"found)\n{exc}")
    except Exception as exc:
        return Gate("plans", FAIL, f"a run raised {one_line(exc)} (not an invariant: the "
                    "saga's code or its example_sagas())")
    return Gate("plans", PASS, f"{_count(ran[0], 'generated failure plan')} run, every "
                "invariant kept")


def _idempotency(cls: type, cases: Any, why: str) -> list[Gate]:
    from ..testing import (
        assert_compensations_idempotent,
        assert_compensations_tolerate_nothing_to_undo,
    )

    spec = spec_of(cls)
    names = [s.compensation_name for s in spec.steps if s.compensation is not None]
    if not names:
        return [Gate("idempotency", PASS, "no compensations")]
    if cases is None:
        return [Gate("idempotency", FAIL, why)]
    case = _one_case(cases)
    gates: list[Gate] = []
    if case.snapshot is None:
        gates.append(Gate(
            "idempotency", SKIP,
            f"no snapshot of the participants: return SagaCase(saga, setup, snapshot) from "
            f"example_sagas() in {cls.__module__}",
        ))
    else:
        gates.append(_direct("idempotency", assert_compensations_idempotent, case,
                             f"{_count(len(names), 'compensation')} run twice: no change"))
    gates.append(_direct("nothing to undo", assert_compensations_tolerate_nothing_to_undo,
                         case, f"{_count(len(names), 'compensation')} run with nothing to undo"))
    return gates


def _direct(gate: str, check: Callable[..., None], case: Any, passed: str) -> Gate:
    try:
        check(case)
    except AssertionError as exc:
        text = str(exc)
        if text.startswith("could not bring saga"):  # its inputs, not its compensations
            return Gate(gate, SKIP, f"{text.splitlines()[0]}: give example_sagas() whose "
                        "instances run forward")
        return Gate(gate, FAIL, text)
    except Exception as exc:
        return Gate(gate, FAIL, one_line(exc))
    return Gate(gate, PASS, passed)


def _one_case(cases: Any) -> Any:
    """The first instance drawn (the same on every run) whose run with nothing going
    wrong completes (the direct checks run its steps forward), else the first one."""
    from ..records import SagaStatus
    from ..testing import SagaCase, run_plan

    def completes(case: Any) -> bool:
        try:
            return run_plan(case).status is SagaStatus.COMPLETED
        except Exception:
            return False

    case = _first(cases, completes, 30)
    if case is None:
        case = _first(cases, lambda _: True, 1)
    return case if isinstance(case, SagaCase) else SagaCase(case)


def _first(cases: Any, accept: Callable[[Any], bool], tries: int) -> Any:
    """The first of ``tries`` draws that ``accept`` takes, or ``None``."""
    found = _draws(cases, accept, tries, 1)
    return found[0] if found else None


def _draws(cases: Any, accept: Callable[[Any], bool], tries: int, n: int) -> list[Any]:
    """Up to ``n`` different draws (by ``repr``) of ``tries`` that ``accept`` takes, in
    the order drawn: a fixed order (the simplest first), never shrunk
    (``hypothesis.find`` would run ``accept`` over and over to shrink what it found)."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings

    found: dict[str, Any] = {}

    @settings(database=None, max_examples=tries, derandomize=True, deadline=None,
              phases=[Phase.generate], verbosity=Verbosity.quiet,
              suppress_health_check=list(HealthCheck))
    @given(cases)
    def look(case: Any) -> None:
        if len(found) < n and repr(case) not in found and accept(case):
            found[repr(case)] = case

    look()
    return list(found.values())


def _crash_points() -> Callable[..., Any]:
    from .. import testing

    check = getattr(testing, "check_crash_points", None)
    if check is None:
        raise CliError(
            "--crash needs sagaflow.testing.check_crash_points, which this sagaflow does "
            "not have: upgrade sagaflow, or drop --crash"
        )
    return check  # type: ignore[no-any-return]


def _crash(cls: type, check: Callable[..., Any], cases: Any, why: str) -> Gate:
    """Kill the saga at each crash point and recover it (``check_crash_points``). The
    instance is the one the idempotency checks use, handed to the child pickled
    (:func:`crash_case`): the child must not run the saga to choose one, since
    a recovery calls the factory too and the participants outlive the process."""
    if is_choreography(cls):
        return Gate("crash points", SKIP, "a choreography's steps run in its participants, "
                    "not in one process to kill: crash them with run_choreography("
                    "case, DeliveryPlan(crash=...)) (sagaflow.testing)")
    if cases is None:
        return Gate("crash points", FAIL, why)
    where = f"{cls.__module__}:{cls.__qualname__}"
    case = _one_case(cases)
    instance = case.saga
    try:
        pickle.dumps(instance)
    except Exception:  # the child draws the first instance itself
        instance = None
    try:
        report = check(f"{__name__}:crash_case", kwargs={"saga": where, "instance": instance},
                       plans=_crash_plans(cls, case))
    except ValueError as exc:  # a plan the harness cannot crash, say
        text = " ".join(str(exc).split())
        return Gate("crash points", SKIP, text.removeprefix("ValueError: "))
    except Exception as exc:
        return Gate("crash points", FAIL, one_line(exc))
    if report.ok:
        killed = f"{_count(len(report.points), 'crash point')} killed and recovered"
        if not report.effects_checked:  # only the terminal status could be compared
            why = report.unchecked_because.splitlines()[0]
            return Gate("crash points", PASS, f"{killed}, each ending as without a crash "
                        f"(effects not compared: {why})")
        return Gate("crash points", PASS, f"{killed}, every net effect once")
    first = report.first_failure
    return Gate("crash points", FAIL, f"first failure: {first.point.name}\n"
                f"{report.describe()}")


#: the most plans with signals sent a crashed saga is run under: one per path through the
#: saga the payloads take (a decision's other branch, a reply that is ready, a step that
#: does something else with what the signal said)
CRASH_PATHS = 3


def _crash_plans(cls: type, case: SagaCase) -> list[Any] | None:
    """What the crashed runs of a saga with signal waits receive (``None``: the crash
    points' own plans): every signal sent while its wait waits, with payloads drawn as
    the plans gate draws them (the simplest first), one plan for each different path
    they take the saga on (up to :data:`CRASH_PATHS`: found by running ``case`` once per
    draw, uninterrupted; a path is the calls made and the participants' snapshot after
    them); the first path's signals sent early and twice (a client retrying); and none
    at all (each wait's time runs out). A payload that cannot be drawn leaves the
    last."""
    from hypothesis import strategies as st

    from ..testing import Arrival, FailurePlan, SignalPlan, run_plan
    from ..testing.strategies import payloads_for

    spec = spec_of(cls)
    waits = [s for s in spec.steps if s.wait is not None and s.wait.signal is not None]
    if not waits:
        return None
    never: FailurePlan[Any] = FailurePlan(
        signals=[SignalPlan(s.name, arrives=Arrival.NEVER) for s in waits]
    )
    payloads = payloads_for(cls)
    sent = st.tuples(*(payloads[s.wait.signal] for s in waits if s.wait and s.wait.signal))
    paths: dict[Any, FailurePlan[Any]] = {}

    def new_path(drawn: tuple[Any, ...]) -> bool:
        plan: FailurePlan[Any] = FailurePlan(
            signals=[SignalPlan(s.name, p) for s, p in zip(waits, drawn, strict=True)]
        )
        try:
            run = run_plan(case, plan)
        except Exception:  # the plans gate reports a saga that cannot run
            return False
        # what a crash could break differs: the calls made, or what they left behind
        path = (run.result.status, tuple((c.step, c.direction) for c in run.calls),
                repr(run.after))
        if path in paths:
            return False
        paths[path] = plan
        return True

    _draws(sent, new_path, 50, CRASH_PATHS)
    if not paths:
        return [never]
    # and the first path's signals as a client that retries sends them: before the
    # saga reaches its wait (kept for it), and each again (the same signal id)
    first = next(iter(paths.values()))
    early: FailurePlan[Any] = FailurePlan(signals=[
        attrs.evolve(p, arrives=Arrival.EARLY, twice=True) for p in first.signals
    ])
    return [*paths.values(), early, never]


def crash_case(saga: str, instance: Any = None) -> Any:
    """A :class:`~sagaflow.testing.SagaCase` of the saga class at ``module:QualName``
    with the ``setup`` and ``snapshot`` of its cases (they run in the child
    ``check_crash_points`` calls this in) and ``instance`` (else the first drawn)."""
    cls = load(saga).one()
    cases, why = _cases(cls)
    if cases is None:
        raise ValueError(why)
    first = _first(cases, lambda _: True, 1)
    case = first if isinstance(first, SagaCase) else SagaCase(first)
    return case if instance is None else attrs.evolve(case, saga=instance)


def _diagrams(cls: type, spec: SagaSpec, folder: Path) -> Gate:
    """DOT and Mermaid compared byte for byte with what ``sagaflow diagram`` writes now;
    an SVG or PNG is drawn from the DOT (Graphviz's output varies by version)."""
    stem = file_stem(spec.name)
    fix = f"run `sagaflow diagram {cls.__module__} --all --output {folder}`"
    stale: list[str] = []
    checked: list[str] = []
    for fmt in ("dot", "mermaid"):
        path = folder / (stem + SUFFIXES[fmt])
        if not path.is_file():
            continue
        checked.append(path.name)
        if path.read_bytes() != render(cls, fmt).encode("utf-8"):
            stale.append(f"{path} differs from the saga's diagram now")
    if not checked:
        drawn = [p.name for p in _drawings(folder, stem)]
        what = f" (only {', '.join(drawn)}, which cannot be compared)" if drawn else ""
        return Gate("diagrams", FAIL, f"no {stem}.dot or {stem}.mmd in {folder}{what}: {fix}")
    if stale:
        return Gate("diagrams", FAIL, f"stale: {'; '.join(stale)}: {fix}")
    return Gate("diagrams", PASS, f"{', '.join(checked)} fresh")


def _drawings(folder: Path, stem: str) -> Iterator[Path]:
    for fmt in ("svg", "png"):
        path = folder / (stem + SUFFIXES[fmt])
        if path.is_file():
            yield path


def _problems(error: Exception) -> str:
    lines = [str(error).splitlines()[0]]
    lines += [f"- {p}" for p in getattr(error, "problems", ())]
    return "\n".join(lines)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _as_json(v: Verdict) -> dict[str, Any]:
    return {
        "saga": v.where,
        "name": v.name,
        "ok": v.ok,
        "gates": [attrs.asdict(g) for g in v.gates],
    }

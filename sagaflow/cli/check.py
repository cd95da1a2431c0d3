"""``sagaflow check``: import and validate sagas, and print each one's steps."""

from __future__ import annotations

import click

from ..machine import check_graph
from ..policy import Retry
from ..spec import SagaSpec, StepKind, StepSpec, callable_name, spec_of
from .loader import load
from .problems import describe_problems
from .text import columns

__all__ = ["check"]


@click.command()
@click.argument("target")
def check(target: str) -> None:
    """Validate the sagas of TARGET and list their steps.

    TARGET is MODULE:CLASS, a module, or a package (every module in it). For each
    saga: its steps with kind, guard, timeout, retry and compensation, its parallel
    groups (members, limit, compensation order) and fan-outs (field, limit), and the checks
    of its state machine (every state reachable, and able to finish). Exit status 0
    when every saga is valid, 1 with every problem listed when one is not, 2 when
    TARGET cannot be loaded.
    """
    found = load(target)
    problems = 0
    for cls in found.sagas:
        for line in _describe(cls):
            click.echo(line)
        spec = spec_of(cls)
        trapped = check_graph(list(spec.machine.states), spec.transitions)
        for p in trapped:
            click.echo(f"  problem: {p}")
        problems += len(trapped)
        click.echo("")
    if found.errors:
        click.echo(describe_problems(found.errors))
        problems += sum(len(e.problems) for _, e in found.errors)
    n = len(found.sagas) + len(found.errors)
    noun = "saga" if n == 1 else "sagas"
    if problems:
        click.echo(f"{n} {noun} checked: {problems} problem{'s' if problems != 1 else ''}")
        raise SystemExit(1)
    click.echo(f"{n} {noun} checked: no problems")


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:g}s"


def _retry(policy: Retry) -> str:
    if policy.attempts == 1:
        return "no retry"
    text = f"{policy.attempts} attempts, {policy.backoff:g}s"
    if policy.multiplier != 1:
        text += f" x{policy.multiplier:g}"
    if policy.retry_on != (Exception,):
        text += " on " + "/".join(t.__name__ for t in policy.retry_on)
    return text


def _undo(s: StepSpec) -> str:
    """How step ``s`` is undone: its compensation, or why it has none."""
    if s.compensation_name is not None:
        return (
            f"{s.compensation_name} (timeout {_seconds(s.compensation_timeout)}, "
            f"{_retry(s.compensation_retry)})"
        )
    if s.kind is StepKind.READONLY:
        return "- (readonly: nothing to undo)"
    if s.kind is StepKind.PIVOT:
        return "- (pivot: point of no return)"
    return "- (retriable: never undone)"


def _describe(cls: type) -> list[str]:
    spec = spec_of(cls)
    head = f"{cls.__module__}:{cls.__qualname__}"
    if spec.name != cls.__qualname__:
        head += f" (saga {spec.name!r})"
    n = len(spec.steps)
    lines = [
        f"{head}: {n} step{'s' if n != 1 else ''}, deadline {_seconds(spec.deadline)}, "
        f"compensation deadline {_seconds(spec.compensation_deadline)}, "
        f"fingerprint {spec.fingerprint}",
    ]
    rows = [["#", "step", "kind", "when", "timeout", "retry", "compensation"]]
    for s in spec.steps:
        comp = _undo(s)
        rows.append([
            str(s.index + 1),
            s.name + (" [async]" if s.is_async else ""),
            s.kind.value,
            s.guard_name or "-",
            _seconds(s.timeout),
            _retry(s.retry),
            comp,
        ])
    return lines + columns(rows, indent="  ") + _groups(spec)


def _groups(spec: SagaSpec) -> list[str]:
    """The saga's parallel groups (members, limit, compensation order) and fan-outs
    (field, limit, key, compensation order); nothing for a saga without them."""
    lines: list[str] = []
    if spec.groups:
        lines.append("  parallel groups:")
    for g in spec.groups:
        members = ", ".join(s.name for s in spec.steps[g.first : g.last + 1])
        limit = "all at once" if g.limit is None else f"{g.limit} at once"
        undo = (
            "after the pivot: never undone" if g.after_pivot
            else f"undone {g.compensation.value}"
        )
        lines.append(f"    {g.name}: {members} ({limit}, {undo})")
    fan_outs = [s for s in spec.steps if s.each is not None]
    if fan_outs:
        lines.append("  fan-outs:")
    for s in fan_outs:
        e = s.each
        assert e is not None
        limit = "all at once" if e.limit is None else f"{e.limit} at once"
        key = "position" if e.key is None else callable_name(e.key)
        undo = f", undone {e.compensation.value}" if s.compensation is not None else ""
        lines.append(f"    {s.name}: each item of {e.field} ({limit}, key {key}{undo})")
    return lines

"""Helpers shared by the examples' tests (a module name no other test directory uses)."""

from __future__ import annotations

from examples.console import Demo
from sagaflow import Direction, SagaResult, StepContext, events, spec_of
from sagaflow.stores import Store


class Captured(Demo):
    """A demo whose output goes to ``lines`` instead of the terminal; ``store`` is shared
    by its orchestrators (``None``: a fresh MemoryStore each)."""

    def __init__(self, store: Store | None = None) -> None:
        self.lines: list[str] = []
        super().__init__(self.lines.append, store)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def make_ctx(saga: object, saga_id: str, step: str, compensate: bool = True) -> StepContext:
    """The ``ctx`` the orchestrator would pass to ``step`` (or its compensation)."""
    direction = Direction.COMPENSATE if compensate else Direction.FORWARD
    return StepContext(saga_id, spec_of(saga).name, step, direction, 1, None, None, 0.0)


def compensation_order(result: SagaResult) -> list[str | None]:
    """The steps whose compensation completed, in the order they completed."""
    return [e.step for e in result.history if isinstance(e, events.CompensationCompleted)]


def verify_gates(target: str, *options: str) -> dict[str, dict[str, tuple[str, str]]]:
    """``sagaflow verify TARGET --plans 0 OPTIONS --format json`` run in this process:
    by saga name then gate, the gate's result and detail."""
    import json

    from click.testing import CliRunner

    from sagaflow.cli import main

    ran = CliRunner().invoke(main, ["verify", target, "--plans", "0", *options,
                                    "--format", "json"])
    report = json.loads(ran.output)
    return {s["name"]: {g["gate"]: (g["result"], g["detail"]) for g in s["gates"]}
            for s in report["sagas"]}


def crash_verified(target: str) -> dict[str, tuple[str, str]]:
    """``sagaflow verify TARGET --plans 0 --crash`` on one saga (the plans gate is the
    property test's): its gates' results and details by name. Every gate but plans and
    diagrams must pass (not skip), the crash points with the effects compared."""
    [gates] = verify_gates(target, "--crash").values()
    assert {name: result for name, (result, _) in gates.items()} == {
        "definition": "pass", "graph": "pass", "timeouts": "pass", "plans": "skip",
        "idempotency": "pass", "nothing to undo": "pass", "crash points": "pass",
        "diagrams": "skip",
    }, gates
    detail = gates["crash points"][1]
    assert detail.endswith("killed and recovered, every net effect once"), detail
    return gates

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

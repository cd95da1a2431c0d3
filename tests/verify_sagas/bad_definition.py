"""BROKEN (definition gate): a step with no compensation and no declared kind."""

from __future__ import annotations

from sagaflow import StepContext, saga, step


@saga(name="undeclared")
class Undeclared:
    @step(timeout=5)
    def charge(self, ctx: StepContext) -> None:
        pass

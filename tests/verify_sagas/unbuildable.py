"""BROKEN (plans gate): hypothesis cannot build the saga's field, and the module has no
``example_sagas()``: verify says how to give instances."""

from __future__ import annotations

from sagaflow import StepContext, saga, step


class Connection:
    def __init__(self, dsn):  # type: ignore[no-untyped-def]  # nothing to infer it from
        self.dsn = dsn


@saga(name="needs_a_connection")
class NeedsAConnection:
    connection: Connection

    @step(readonly=True, timeout=5)
    def look(self, ctx: StepContext) -> None:
        pass

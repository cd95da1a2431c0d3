"""The sagaflow pytest plugin's fixtures, imported explicitly until the ``pytest11``
entry point is installed (``pytest_plugins`` is only allowed in the root conftest)."""

from sagaflow.testing.pytest_plugin import (  # noqa: F401
    run_saga_plan,
    saga_orchestrator,
    virtual_clock,
)

"""Shared fixtures: a way to run a saga sync or async, with the same assertions."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings

from sagaflow import Orchestrator, SagaResult

settings.register_profile("default", max_examples=100, deadline=None)
settings.register_profile(
    "deep", max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("SAGAFLOW_PROFILE", "default"))

Runner = Callable[..., SagaResult]


@pytest.fixture(params=["sync", "async"])
def drive(request: pytest.FixtureRequest) -> Runner:
    """Run a saga with ``orchestrator.run`` or ``asyncio.run(orchestrator.arun(...))``."""

    def run(orchestrator: Orchestrator, saga: object, saga_id: str | None = None) -> SagaResult:
        if request.param == "sync":
            return orchestrator.run(saga, saga_id)
        return asyncio.run(orchestrator.arun(saga, saga_id))

    return run

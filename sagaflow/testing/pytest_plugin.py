"""The sagaflow pytest plugin: fixtures for testing sagas (``pytest11`` entry point).

- ``virtual_clock``: a fresh :class:`~sagaflow.testing.VirtualClock`.
- ``saga_orchestrator``: an :class:`~sagaflow.Orchestrator` on a fresh memory store and
  the ``virtual_clock``, with jitter fixed at the middle of its band (closed after).
- ``run_saga_plan``: :func:`~sagaflow.testing.run_plan` followed by
  :func:`~sagaflow.testing.check_invariants`; returns the
  :class:`~sagaflow.testing.PlanRun`.
- ``crash_points``: :func:`~sagaflow.testing.check_crash_points`, failing the test
  with the report's table unless every crash point passed; returns the report.

Installed with sagaflow, this module is loaded by every pytest session, so it imports
nothing beyond sagaflow's core at import time (hypothesis is a test extra).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ..orchestrator import Orchestrator
from ..stores import MemoryStore
from .clock import VirtualClock
from .crashpoints import CrashPointsReport, check_crash_points
from .harness import PlanRun, run_plan
from .invariants import check_invariants

__all__ = ["crash_points", "run_saga_plan", "saga_orchestrator", "virtual_clock"]


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """A clock whose time moves only when the code under test sleeps."""
    return VirtualClock()


@pytest.fixture
def saga_orchestrator(virtual_clock: VirtualClock) -> Iterator[Orchestrator]:
    """An orchestrator on a memory store and the virtual clock; backoff costs no time."""
    orchestrator = Orchestrator(MemoryStore(), clock=virtual_clock, rand=lambda: 0.5)
    try:
        yield orchestrator
    finally:
        orchestrator.close()


@pytest.fixture
def run_saga_plan() -> Callable[..., PlanRun]:
    """``run_saga_plan(saga, plan=None, *, extra=(), allow_step_errors=None, **run_options)``:
    run ``saga`` under ``plan`` and check every invariant; returns the run."""

    def run(saga: Any, plan: Any = None, *, extra: Any = (),
            allow_step_errors: bool | None = None,
            **options: Any) -> PlanRun:
        outcome = run_plan(saga, plan, **options)
        check_invariants(outcome, extra=extra, allow_step_errors=allow_step_errors)
        return outcome

    return run


@pytest.fixture
def crash_points() -> Callable[..., CrashPointsReport]:
    """``crash_points(saga, **options)``: :func:`~sagaflow.testing.check_crash_points`
    (same arguments); the test fails with the report's table unless every point passed."""

    def check(saga: Any, **options: Any) -> CrashPointsReport:
        report = check_crash_points(saga, **options)
        report.assert_ok()
        return report

    return check

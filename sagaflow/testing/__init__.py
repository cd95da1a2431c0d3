"""Tools to test sagas: failure plans, fault injection on a virtual clock, invariants.

- :class:`FailurePlan`: what goes wrong in one run (and, :class:`SignalPlan`, what each
  wait receives); :func:`failure_plans` draws them from a saga class (hypothesis).
- :func:`run_plan` / :func:`arun_plan`: run a saga instance under a plan, with no change
  to its code, on a :class:`VirtualClock`; returns a :class:`PlanRun`.
- :func:`check_invariants`: raise :class:`InvariantViolation` (an ``AssertionError``
  that names the broken invariant and shows the trace) unless the run is sound.
- :func:`saga_state_machine`: a hypothesis ``RuleBasedStateMachine`` that drives runs
  call by call, injecting failures as rules.
- :func:`assert_compensations_idempotent`: a second compensation must change nothing.
- :func:`check_crash_points`: SIGKILL a run at every checkpoint and effect, recover it
  in a fresh process, and check the saga's end and the participants' state.

Choreography and the outbox: :class:`DeliveryPlan` (a step fails, a participant dies, an
event comes twice, late, out of order, after the deadline or never, the relay publishes
again), :func:`run_choreography` (the flow's participants on a real store, in-process or
over Redis), :func:`check_choreography`, and :func:`choreography_plans`.

The names that need hypothesis (:func:`failure_plans`, :func:`saga_cases`,
:func:`saga_state_machine`, :func:`register_strategies`, :func:`choreography_plans`) are
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .clock import VirtualClock
from .crashpoints import CrashPoint, CrashPointResult, CrashPointsReport, check_crash_points
from .harness import Harness, PlanRun, arun_plan, run_plan
from .idempotency import (
    assert_compensations_idempotent,
    assert_compensations_tolerate_nothing_to_undo,
)
from .invariants import INVARIANTS, InvariantViolation, Violation, check_invariants
from .plan import Arrival, DeadlinePass, FailurePlan, Fault, InjectedFault, SagaCase, SignalPlan
from .trace import CallRecord, Outcome, ParkSeen, SentSignal, Trace

if TYPE_CHECKING:
    from .stateful import saga_state_machine
    from .strategies import failure_plans, register_strategies, saga_cases

__all__ = [
    "INVARIANTS",
    "Arrival",
    "CallRecord",
    "CrashPoint",
    "CrashPointResult",
    "CrashPointsReport",
    "DeadlinePass",
    "FailurePlan",
    "Fault",
    "Harness",
    "InjectedFault",
    "InvariantViolation",
    "Outcome",
    "ParkSeen",
    "PlanRun",
    "SagaCase",
    "SentSignal",
    "SignalPlan",
    "Trace",
    "VirtualClock",
    "Violation",
    "arun_plan",
    "assert_compensations_idempotent",
    "assert_compensations_tolerate_nothing_to_undo",
    "check_crash_points",
    "check_invariants",
    "failure_plans",
    "register_strategies",
    "run_plan",
    "saga_cases",
    "saga_state_machine",
]

_LAZY = {
    "failure_plans": "strategies",
    "register_strategies": "strategies",
    "saga_cases": "strategies",
    "saga_state_machine": "stateful",
}

# --- choreography and the outbox (issue 13, issue 15) -------------------------------------
from .choreography import ChoreographyCase, Delivery, DeliveryPlan  # noqa: E402
from .choreography_harness import ChoreographyRun, run_choreography  # noqa: E402
from .choreography_invariants import (  # noqa: E402
    CHOREOGRAPHY_INVARIANTS,
    ChoreographyViolation,
    check_choreography,
)

if TYPE_CHECKING:
    from .choreography_strategies import choreography_plans

__all__ += [
    "CHOREOGRAPHY_INVARIANTS", "ChoreographyCase", "ChoreographyRun",
    "ChoreographyViolation", "Delivery", "DeliveryPlan", "check_choreography",
    "choreography_plans", "run_choreography",
]
_LAZY["choreography_plans"] = "choreography_strategies"


def __getattr__(name: str) -> Any:
    # hypothesis is a test dependency: import it only when a name that needs it is used
    if name in _LAZY:
        import importlib

        # hypothesis first: importing it runs its entry point, which imports .strategies;
        # imported from inside .strategies, that finds the module half made and fails
        importlib.import_module("hypothesis")
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

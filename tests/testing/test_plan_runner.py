"""run_plan: fault injection with no change to the saga, on a virtual clock, three drivers."""

from __future__ import annotations

import asyncio

import pytest
from testing_sagas import PAYMENTS, STOCK, Shop, Trip, reset_world, world

from sagaflow import SagaDeadlineExceeded, SagaStatus, StepTimeout, events
from sagaflow.testing import (
    DeadlinePass,
    FailurePlan,
    Fault,
    InjectedFault,
    SagaCase,
    VirtualClock,
    arun_plan,
    run_plan,
)

DRIVERS = ["engine", "sync", "async"]


def calls(run) -> list[tuple[str, int, str]]:
    return [(c.label, c.attempt, c.reported) for c in run.calls]


def kinds(run) -> list[str]:
    return [type(e).__name__ for e in run.result.history]


def shop(quantity: int = 1) -> SagaCase:
    return SagaCase(Shop("ann", quantity), reset_world, world)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_quiet_plan_completes(driver: str) -> None:
    run = run_plan(shop(), FailurePlan(), driver=driver)
    assert run.status is SagaStatus.COMPLETED and run.driver == driver
    assert calls(run) == [(n, 1, "ok") for n in ("reserve", "check", "charge", "ship", "notify")]
    assert run.result.events == (("charged", "ann"),)
    run.check()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_failing_step_is_injected_without_calling_the_user_function(driver: str) -> None:
    run = run_plan(shop(7), FailurePlan(step="ship"), driver=driver)
    assert run.status is SagaStatus.COMPENSATED
    assert calls(run) == [
        ("reserve", 1, "ok"), ("check", 1, "ok"), ("approve", 1, "ok"), ("charge", 1, "ok"),
        ("ship", 1, "error"),
        ("undo charge", 1, "ok"), ("undo approve", 1, "ok"), ("undo reserve", 1, "ok"),
    ]
    ship = run.calls[4]
    assert not ship.ran_user and isinstance(ship.error, InjectedFault)
    assert isinstance(ship.error, ConnectionError)  # what retry policies retry
    assert run.before == run.after == {k: {} for k in run.before}
    run.check()


@pytest.mark.parametrize("driver", DRIVERS)
def test_transient_failures_retry_with_exact_backoff_on_the_virtual_clock(driver: str) -> None:
    clock = VirtualClock()
    run = run_plan(shop(), FailurePlan(transient={"reserve": 2}), driver=driver, clock=clock,
                   rand=0.25)
    assert run.status is SagaStatus.COMPLETED
    assert calls(run)[:3] == [("reserve", 1, "error"), ("reserve", 2, "error"),
                              ("reserve", 3, "ok")]
    # Retry(attempts=3, backoff=0.5), multiplier 2, jitter 0.1, rand 0.25: 0.475, 0.95
    assert clock.sleeps == pytest.approx([0.475, 0.95])
    assert {c.key for c in run.calls if c.step == "reserve"} == {f"{run.saga_id}:reserve:forward"}
    run.check()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_timeout_after_effect_is_compensated(driver: str) -> None:
    plan = FailurePlan(step="charge", fault=Fault.TIMES_OUT, effect=True)
    run = run_plan(shop(), plan, driver=driver)
    assert run.status is SagaStatus.COMPENSATED
    assert isinstance(run.result.error, StepTimeout)
    charge = [c for c in run.calls if c.step == "charge" and c.label == "charge"]
    assert [c.reported for c in charge] == ["timeout"] and charge[0].ran_user
    assert calls(run)[-2:] == [("undo charge", 1, "ok"), ("undo reserve", 1, "ok")]
    assert PAYMENTS.snapshot() == {} and STOCK.snapshot() == {}
    run.check()


def test_timeouts_cost_virtual_time_only() -> None:
    clock = VirtualClock()
    plan = FailurePlan(step="flight", fault=Fault.TIMES_OUT)  # 3 attempts of 10 s
    run = run_plan(SagaCase(Trip(), reset_world, world), plan, clock=clock, rand=0.0)
    assert run.status is SagaStatus.COMPENSATED
    assert clock.jumps == [10.0, 10.0, 10.0]
    assert clock.sleeps == pytest.approx([1.8, 3.6])  # backoff 2 s, x2, jitter -10%
    assert clock.elapsed == pytest.approx(35.4)
    run.check()


@pytest.mark.parametrize("driver", ["engine", "async"])
def test_deadline_passing_before_a_step_compensates_without_starting_it(driver: str) -> None:
    plan = FailurePlan(deadline=DeadlinePass("hotel"))
    run = run_plan(SagaCase(Trip(), reset_world, world), plan, driver=driver)
    assert run.status is SagaStatus.COMPENSATED
    assert isinstance(run.result.error, SagaDeadlineExceeded)
    assert calls(run) == [("flight", 1, "ok"), ("undo flight", 1, "ok")]
    assert run.deadline_fired is not None and run.deadline_fired[0] == "hotel"
    run.check()


@pytest.mark.parametrize("driver", ["engine", "async"])
@pytest.mark.parametrize("effect", [False, True])
def test_deadline_passing_during_a_step_cuts_it_short(driver: str, effect: bool) -> None:
    plan = FailurePlan(deadline=DeadlinePass("hotel", during=True, effect=effect))
    run = run_plan(SagaCase(Trip(), reset_world, world), plan, driver=driver)
    assert run.status is SagaStatus.COMPENSATED
    err = run.result.error
    assert isinstance(err, SagaDeadlineExceeded) and err.step == "hotel"
    assert calls(run) == [("flight", 1, "ok"), ("hotel", 1, "timeout"),
                          ("undo hotel", 1, "ok"), ("undo flight", 1, "ok")]
    assert run.calls[1].ran_user is effect
    assert run.before == run.after
    run.check()


@pytest.mark.parametrize("driver", ["engine", "async"])
def test_cancellation_during_a_step_compensates_it_too(driver: str) -> None:
    plan = FailurePlan(step="charge", fault=Fault.CANCELLED, effect=True)
    run = run_plan(shop(), plan, driver=driver)
    assert run.status is SagaStatus.COMPENSATED and run.cancelled
    assert calls(run)[-3:] == [("charge", 1, "cancelled"), ("undo charge", 1, "ok"),
                               ("undo reserve", 1, "ok")]
    assert "SagaCancelled" in type(run.result.error).__name__
    run.check()


def test_the_sync_driver_cannot_cancel() -> None:
    with pytest.raises(ValueError, match="needs driver='async' or 'engine'"):
        run_plan(shop(), FailurePlan(step="charge", fault=Fault.CANCELLED), driver="sync")


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_compensation_failing_for_good_ends_failed_and_the_rest_still_run(driver: str) -> None:
    plan = FailurePlan(step="ship", compensation_fails={"charge"}, compensation_effect=True)
    run = run_plan(shop(), plan, driver=driver, rand=0.5)
    assert run.status is SagaStatus.FAILED
    assert [c for c in calls(run) if c[0] == "undo charge"] == [
        ("undo charge", n, "error") for n in (1, 2, 3, 4)
    ]
    assert calls(run)[-1] == ("undo reserve", 1, "ok")
    run.check()


def test_the_drivers_agree_call_for_call() -> None:
    plans = [
        FailurePlan(step="charge", transient={"reserve": 1}, compensation_transient={"reserve": 2}),
        FailurePlan(step="notify"),
        FailurePlan(step="reserve", fault=Fault.TIMES_OUT, effect=True),
        FailurePlan(transient={"charge": 1}, step="ship"),
    ]
    for plan in plans:
        runs = [run_plan(shop(7), plan, driver=d, saga_id="same") for d in DRIVERS]
        for run in runs:
            run.check()
        assert len({tuple(calls(r)) for r in runs}) == 1, plan
        assert len({tuple(kinds(r)) for r in runs}) == 1, plan
        assert len({r.status for r in runs}) == 1, plan


def test_setup_and_snapshot_wrap_the_run() -> None:
    seen: list[str] = []
    case = SagaCase(Shop(), lambda: seen.append("setup"), lambda: seen.append("snap") or len(seen))
    run = run_plan(case)
    assert seen == ["setup", "snap", "snap"] and (run.before, run.after) == (2, 3)


def test_arun_plan_runs_in_the_caller_s_loop() -> None:
    async def main() -> None:
        run = await arun_plan(SagaCase(Trip(), reset_world, world),
                              FailurePlan(step="hotel"))
        assert run.status is SagaStatus.COMPENSATED
        run.check()
        run = await arun_plan(SagaCase(Trip(), reset_world, world), driver="async")
        assert run.status is SagaStatus.COMPLETED
        with pytest.raises(ValueError, match="use run_plan for sync"):
            await arun_plan(Trip(), driver="sync")

    asyncio.run(main())


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="does not have"):
        run_plan(Shop(), FailurePlan(step="nope"))
    with pytest.raises(ValueError, match="driver must be one of"):
        run_plan(Shop(), driver="threads")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="has async steps"):
        run_plan(Trip(), driver="sync")
    with pytest.raises(TypeError, match="plan must be a FailurePlan"):
        run_plan(Shop(), "ship")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a saga class"):
        run_plan(object())
    with pytest.raises(TypeError, match="needs an instance of a saga class"):
        SagaCase(Shop)


def test_history_records_what_happened() -> None:
    run = run_plan(shop(), FailurePlan(step="charge"))
    retrying = [e for e in run.result.history if isinstance(e, events.StepRetrying)]
    assert [e.step for e in retrying] == ["charge"]  # charge retries ConnectionError once

"""What only the async driver does: cancellation, coroutine timeouts, many sagas at once."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from sagaflow import (
    CompensationStatus,
    Orchestrator,
    SagaCancelled,
    SagaDeadlineExceeded,
    SagaStatus,
    StepStatus,
    StepTimeout,
    saga,
    step,
)


def test_async_step_timeout_cancels_the_coroutine_and_compensates_it() -> None:
    seen: list[str] = []

    @saga
    class T:
        @step(timeout=0.05)
        async def pay(self, ctx):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                seen.append("pay cancelled")
                raise

        @pay.compensate
        async def refund(self, ctx):
            seen.append("refund")

    result = asyncio.run(Orchestrator().arun(T()))
    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepTimeout)
    assert seen == ["pay cancelled", "refund"]


def test_a_step_raising_timeouterror_itself_is_an_error_not_a_timeout() -> None:
    @saga
    class T:
        @step(timeout=5)
        async def pay(self, ctx):
            raise TimeoutError("gateway said timeout")

        @pay.compensate
        async def refund(self, ctx): ...

    result = asyncio.run(Orchestrator().arun(T()))
    assert not isinstance(result.error, StepTimeout)
    assert result.step("pay").status is StepStatus.FAILED and not result.step("pay").timed_out
    assert result.step("pay").compensation is CompensationStatus.NOT_NEEDED


def test_saga_deadline_cancels_the_running_coroutine() -> None:
    seen: list[str] = []

    @saga(deadline=0.05)
    class D:
        @step
        async def a(self, ctx):
            seen.append("a")

        @a.compensate
        async def ua(self, ctx):
            seen.append("ua")

        @step(timeout=None)
        async def b(self, ctx):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                seen.append("b cancelled")
                raise

        @b.compensate
        async def ub(self, ctx):
            seen.append("ub")

    result = asyncio.run(Orchestrator().arun(D()))
    assert isinstance(result.error, SagaDeadlineExceeded)
    assert seen == ["a", "b cancelled", "ub", "ua"]


def make_cancellable(seen: list[str], started: asyncio.Event, slow_compensation: bool = False):
    @saga
    class C:
        @step
        async def a(self, ctx):
            seen.append("a")

        @a.compensate
        async def ua(self, ctx):
            if slow_compensation:
                started.set()
                await asyncio.sleep(0.05)
            seen.append("ua")

        @step(timeout=None)
        async def b(self, ctx):
            seen.append("b")
            if not slow_compensation:
                started.set()
                await asyncio.sleep(10)
            else:
                raise ValueError("b fails")

        @b.compensate
        async def ub(self, ctx):
            seen.append("ub")

    return C


def test_cancelling_arun_compensates_shielded_then_propagates() -> None:
    seen: list[str] = []

    async def main():
        started = asyncio.Event()
        orchestrator = Orchestrator()
        task = asyncio.create_task(orchestrator.arun(make_cancellable(seen, started)(), "c1"))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return orchestrator.get("c1")

    record = asyncio.run(main())
    # b was in flight: its outcome is unknown, so it is compensated too, newest first
    assert seen == ["a", "b", "ub", "ua"]
    assert record.status is SagaStatus.COMPENSATED
    assert isinstance(record.error, SagaCancelled) and record.error.step == "b"
    assert record.step("b").status is StepStatus.TIMED_OUT


def test_cancellation_during_compensation_waits_for_it_then_propagates() -> None:
    seen: list[str] = []

    async def main():
        started = asyncio.Event()
        orchestrator = Orchestrator()
        saga_cls = make_cancellable(seen, started, slow_compensation=True)
        task = asyncio.create_task(orchestrator.arun(saga_cls(), "c2"))
        await started.wait()  # the compensation of a is running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return orchestrator.get("c2")

    record = asyncio.run(main())
    assert seen == ["a", "b", "ua"]
    assert record.status is SagaStatus.COMPENSATED
    assert record.step("a").compensation is CompensationStatus.COMPENSATED


def test_async_listeners_are_awaited_and_their_errors_logged(caplog) -> None:
    got: list[str] = []

    async def listener(event):
        await asyncio.sleep(0)
        got.append(type(event).__name__)

    async def broken(event):
        raise RuntimeError("async listener bug")

    @saga
    class S:
        @step(readonly=True)
        async def a(self, ctx): ...

    with caplog.at_level(logging.ERROR, logger="sagaflow"):
        result = asyncio.run(Orchestrator(listeners=[listener, broken]).arun(S()))
    assert got == ["SagaStarted", "StepStarted", "StepCompleted", "SagaCompleted"]
    assert result.status is SagaStatus.COMPLETED
    assert "async listener bug" in caplog.text


def test_thousand_concurrent_sagas_some_failing_all_correct() -> None:
    rng = random.Random(7)
    plan = {f"s{i}": rng.choice([None, "a", "b", "c"]) for i in range(1000)}
    ledger: dict[str, list[str]] = {sid: [] for sid in plan}

    @saga
    class Many:
        fail_at: str | None = None

        @step
        async def a(self, ctx):
            await asyncio.sleep(0)
            ledger[ctx.saga_id].append("a")
            if self.fail_at == "a":
                raise ValueError("a")

        @a.compensate
        async def ua(self, ctx):
            await asyncio.sleep(0)
            ledger[ctx.saga_id].append("ua")

        @step
        async def b(self, ctx):
            await asyncio.sleep(0)
            ledger[ctx.saga_id].append("b")
            if self.fail_at == "b":
                raise ValueError("b")

        @b.compensate
        async def ub(self, ctx):
            await asyncio.sleep(0)
            ledger[ctx.saga_id].append("ub")

        @step(pivot=True)
        async def c(self, ctx):
            await asyncio.sleep(0)
            ledger[ctx.saga_id].append("c")
            if self.fail_at == "c":
                raise ValueError("c")

    async def main():
        orchestrator = Orchestrator()
        results = await asyncio.gather(
            *(orchestrator.arun(Many(fail), sid) for sid, fail in plan.items())
        )
        return orchestrator, results

    orchestrator, results = asyncio.run(main())
    expected_calls = {
        None: ["a", "b", "c"],
        "a": ["a"],
        "b": ["a", "b", "ua"],
        "c": ["a", "b", "c", "ub", "ua"],
    }
    for result in results:
        fail = plan[result.saga_id]
        assert ledger[result.saga_id] == expected_calls[fail], result.saga_id
        want = SagaStatus.COMPLETED if fail is None else SagaStatus.COMPENSATED
        assert result.status is want
    assert len(orchestrator.history()) == 1000 and orchestrator.running() == []


def test_a_shorter_timeout_after_a_longer_one_still_fires_on_time() -> None:
    # One timer serves every call of a run; a call with a shorter limit must move it.
    @saga
    class Mixed:
        @step(timeout=30)
        async def a(self, ctx): ...

        @a.compensate
        async def ua(self, ctx): ...

        @step(timeout=0.05)
        async def b(self, ctx):
            await asyncio.sleep(10)

        @b.compensate
        async def ub(self, ctx): ...

    async def main():
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await Orchestrator().arun(Mixed())
        return result, loop.time() - started

    result, took = asyncio.run(main())
    assert isinstance(result.error, StepTimeout) and result.error.step == "b"
    assert took < 5  # not a's 30 s


def test_timer_left_over_from_a_finished_call_never_cancels_a_later_one() -> None:
    # a's limit is 0.05 s; b (no limit) runs past it: b must not be cancelled.
    @saga
    class Later:
        @step(timeout=0.05)
        async def a(self, ctx): ...

        @a.compensate
        async def ua(self, ctx): ...

        @step(timeout=None)
        async def b(self, ctx):
            await asyncio.sleep(0.15)

        @b.compensate
        async def ub(self, ctx): ...

    result = asyncio.run(Orchestrator().arun(Later()))
    assert result.status is SagaStatus.COMPLETED

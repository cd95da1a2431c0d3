"""A group member cancelled in flight (a sibling failed, or the run was cancelled) has
its failure recorded once: by the driver that abandons it, not again by the engine's
``interrupt`` (which recorded "StepFailed 'stock'" twice)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

import attrs
from group_sagas import async_booking_case, careless_case

from sagaflow import Orchestrator, SagaStatus, events, parallel, saga
from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.testing import FailurePlan, Fault, arun_plan


def failed(history: list[events.SagaEvent]) -> Counter[str]:
    return Counter(e.step for e in history if isinstance(e, events.StepFailed))


def test_a_member_cancelled_with_the_run_fails_once_under_the_harness() -> None:
    plan = FailurePlan(step="stock", fault=Fault.CANCELLED)
    for case in (careless_case, async_booking_case):
        for driver in ("engine", "async"):
            run = asyncio.run(arun_plan(case(), plan, driver=driver))  # type: ignore[arg-type]
            counts = failed(run.result.history)
            assert counts["stock"] == 1, (case.__name__, driver, counts)
            assert max(counts.values()) == 1, (case.__name__, driver, counts)


@saga(name="cancel_once_group")
class Group:
    fail: bool = True
    undone: list[str] = attrs.field(factory=list)

    g = parallel()

    @g.step
    async def first(self, ctx):
        pass

    @first.compensate
    async def undo_first(self, ctx):
        self.undone.append("first")

    @g.step(readonly=True)
    async def second(self, ctx):
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("second fails")
        await asyncio.sleep(3600)

    @g.step(timeout=60)
    async def slow(self, ctx):
        await asyncio.sleep(3600)  # cancelled: a sibling failed, or the run was

    @slow.compensate
    async def undo_slow(self, ctx):
        self.undone.append("slow")


def test_a_coroutine_member_cancelled_when_a_sibling_fails_is_recorded_once(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "sagas.db")

    async def main() -> None:
        result = await Orchestrator(store).arun(Group(), saga_id="g-1")
        assert result.status is SagaStatus.COMPENSATED
        assert failed(result.history) == {"second": 1, "slow": 1}
        stored = await store.aload("g-1")
        assert stored is not None and failed(stored.history) == {"second": 1, "slow": 1}
        assert sorted(result.data.undone) == ["first", "slow"]

    asyncio.run(asyncio.wait_for(main(), 30))


def test_members_cancelled_with_the_run_are_each_recorded_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "sagas.db")

    async def main() -> None:
        task = asyncio.ensure_future(Orchestrator(store).arun(Group(fail=False), saga_id="g-2"))
        while (record := await store.aload("g-2")) is None or not record.history or not any(
            isinstance(e, events.StepStarted) and e.step == "slow" for e in record.history
        ):
            await asyncio.sleep(0.001)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        stored = await store.aload("g-2")
        assert stored is not None and stored.status is SagaStatus.COMPENSATED
        assert failed(stored.history) == {"second": 1, "slow": 1}

    asyncio.run(asyncio.wait_for(main(), 30))

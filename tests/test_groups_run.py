"""Parallel groups and fan-outs at run time: sync and async, in memory and on SQLite."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import attrs
import pytest

from sagaflow import (
    CompensationStatus,
    Orchestrator,
    Retry,
    SagaRejected,
    SagaResult,
    SagaStatus,
    StepStatus,
    events,
    parallel,
    saga,
    spec_of,
    step,
)
from sagaflow.engine import Batch, new_record, next_command, settle
from sagaflow.errors import SagaDeadlineExceeded
from sagaflow.stores import MemoryStore
from sagaflow.stores.sqlite import SQLiteStore

Runner = Callable[..., SagaResult]  # the conftest's `drive` fixture
LOG: list[str] = []
_lock = threading.Lock()


def log(entry: str) -> None:
    with _lock:
        LOG.append(entry)


@pytest.fixture(autouse=True)
def _clear() -> None:
    LOG.clear()
    Order.fail = set()
    Order.barrier = None


@saga
class Order:
    order_id: str
    booked: list[str] = attrs.field(factory=list)

    fail: ClassVar[set[str]] = set()  # members that fail (the tests set it)
    barrier: ClassVar[threading.Barrier | None] = None  # members wait for each other on it

    book = parallel()

    @step
    def validate(self, ctx):
        log("validate")

    @validate.compensate
    def unvalidate(self, ctx):
        log("unvalidate")

    @book.step
    def stock(self, ctx):
        self._member("stock", ctx)

    @stock.compensate
    def release_stock(self, ctx):
        log("undo stock")

    @book.step
    def payment(self, ctx):
        self._member("payment", ctx)

    @payment.compensate
    def refund(self, ctx):
        log("undo payment")

    @book.step
    def shipping(self, ctx):
        self._member("shipping", ctx)

    @shipping.compensate
    def cancel_shipping(self, ctx):
        log("undo shipping")

    @step(pivot=True)
    def confirm(self, ctx):
        log("confirm")

    def _member(self, name: str, ctx) -> None:
        if Order.barrier is not None:
            Order.barrier.wait()
        log(f"{name} {ctx.idempotency_key}")
        if name in Order.fail:
            raise RuntimeError(f"{name} is down")
        self.booked.append(name)


def _undone(entries: list[str]) -> list[str]:
    return [e for e in entries if e.startswith("undo") or e == "unvalidate"]


@pytest.fixture(params=["memory", "sqlite"])
def orchestrator(request: pytest.FixtureRequest, tmp_path: Path) -> Orchestrator:
    if request.param == "memory":
        return Orchestrator(MemoryStore())
    return Orchestrator(SQLiteStore(tmp_path / "sagas.db"))


def test_all_members_succeed_and_the_saga_goes_on_after_the_join(
    orchestrator: Orchestrator, drive: Runner
) -> None:
    Order.barrier = threading.Barrier(3, timeout=10)  # only passes if all three run at once
    result = drive(orchestrator, Order("o-1"), "o-1")
    assert result.status is SagaStatus.COMPLETED, result.error
    assert sorted(result.data.booked) == ["payment", "shipping", "stock"]
    assert LOG[0] == "validate" and LOG[-1] == "confirm"
    assert sorted(LOG[1:4]) == [
        "payment o-1:payment:forward", "shipping o-1:shipping:forward", "stock o-1:stock:forward"
    ]
    assert [s.status for s in result.steps] == [StepStatus.COMPLETED] * 5
    states = [dest for _, _, dest in result.path]
    assert states == ["validate", "book", "confirm", "completed"]
    started = [e.step for e in result.history if isinstance(e, events.StepStarted)]
    assert started[0] == "validate" and sorted(started[1:4]) == ["payment", "shipping", "stock"]


def test_a_member_failing_compensates_the_completed_members_then_the_steps_before(
    orchestrator: Orchestrator, drive: Runner
) -> None:
    Order.fail = {"payment"}
    result = drive(orchestrator, Order("o-2"), "o-2")
    assert result.status is SagaStatus.COMPENSATED
    assert "payment is down" in str(result.error)
    assert result.step("payment").status is StepStatus.FAILED
    assert result.step("payment").compensation is CompensationStatus.NOT_NEEDED
    undone = _undone(LOG)
    # the two members that completed are undone (in any order), then the step before
    assert sorted(undone[:2]) == ["undo shipping", "undo stock"]
    assert undone[2:] == ["unvalidate"]
    assert "confirm" not in LOG
    assert [dest for _, _, dest in result.path][-3:] == [
        "compensating_book", "compensating_validate", "compensated"
    ]


@saga
class Limited:
    n: int
    running: int = 0
    most: int = 0

    group = parallel(limit=2)

    @group.step(readonly=True)
    def a(self, ctx):
        self._work()

    @group.step(readonly=True)
    def b(self, ctx):
        self._work()

    @group.step(readonly=True)
    def c(self, ctx):
        self._work()

    @group.step(readonly=True)
    def d(self, ctx):
        self._work()

    def _work(self) -> None:
        with _lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.02)
        with _lock:
            self.running -= 1


def test_no_more_members_run_at_once_than_the_limit(drive: Runner) -> None:
    result = drive(Orchestrator(MemoryStore()), Limited(4))
    assert result.ok
    assert result.data.most == 2


@saga
class AsyncGroup:
    n: int
    order: list[str] = attrs.field(factory=list)

    g = parallel()

    @g.step
    async def first(self, ctx):
        await self._meet("first")

    @first.compensate
    async def undo_first(self, ctx):
        self.order.append("undo first")

    @g.step(readonly=True)
    async def second(self, ctx):
        await self._meet("second")
        if self.n == 1:
            raise RuntimeError("second fails")

    @g.step(timeout=5)
    async def slow(self, ctx):
        self.order.append("slow started")
        await asyncio.sleep(3600)  # cancelled when the group fails

    @slow.compensate
    async def undo_slow(self, ctx):
        self.order.append("undo slow")

    async def _meet(self, name: str) -> None:
        # Both coroutines must be in flight together to get past this.
        self.order.append(name)
        while not {"first", "second"} <= set(self.order):
            await asyncio.sleep(0.001)


def test_async_members_are_tasks_running_at_once() -> None:
    orchestrator = Orchestrator(MemoryStore())
    LOG.clear()

    async def main() -> None:
        result = await orchestrator.arun(AsyncGroup(1))
        assert result.status is SagaStatus.COMPENSATED
        # the slow member was cancelled when 'second' failed: its outcome is unknown,
        # so it is compensated, and so is 'first', which completed
        slow = result.step("slow")
        assert slow.status is StepStatus.TIMED_OUT and slow.timed_out
        assert slow.compensation is CompensationStatus.COMPENSATED
        assert result.step("first").compensation is CompensationStatus.COMPENSATED
        assert sorted(e for e in result.data.order if e.startswith("undo")) == [
            "undo first", "undo slow"
        ]

    asyncio.run(asyncio.wait_for(main(), 30))


@saga
class Flaky:
    n: int
    tries: int = 0

    g = parallel()

    @g.step(readonly=True, retry=Retry(attempts=3, backoff=0.001))
    def flaky(self, ctx):
        self.tries += 1
        if self.tries < 3:
            raise ConnectionError("try again")

    @g.step(readonly=True)
    def steady(self, ctx):
        pass


def test_a_member_retries_on_its_own(drive: Runner) -> None:
    result = drive(Orchestrator(MemoryStore()), Flaky(1))
    assert result.ok, result.error
    assert result.step("flaky").attempts == 3
    assert result.step("steady").attempts == 1
    retrying = [e for e in result.history if isinstance(e, events.StepRetrying)]
    assert [e.step for e in retrying] == ["flaky", "flaky"]


@saga
class TimesOut:
    n: int

    g = parallel()

    @g.step(timeout=0.05)
    def stuck(self, ctx):
        time.sleep(0.5)

    @stuck.compensate
    def undo_stuck(self, ctx):
        log("undo stuck")

    @g.step
    def quick(self, ctx):
        log("quick")

    @quick.compensate
    def undo_quick(self, ctx):
        log("undo quick")


def test_a_member_that_times_out_is_unknown_and_compensated(drive: Runner) -> None:
    result = drive(Orchestrator(MemoryStore()), TimesOut(1))
    assert result.status is SagaStatus.COMPENSATED
    stuck = result.step("stuck")
    assert stuck.status is StepStatus.TIMED_OUT and stuck.timed_out
    assert sorted(_undone(LOG)) == ["undo quick", "undo stuck"]


@saga
class Reverse:
    n: int

    g = parallel(limit=1, compensate="reverse")

    @g.step
    def one(self, ctx):
        log("one")

    @one.compensate
    def undo_one(self, ctx):
        log("undo one")

    @g.step
    def two(self, ctx):
        log("two")

    @two.compensate
    def undo_two(self, ctx):
        log("undo two")

    @g.step
    def three(self, ctx):
        log("three")

    @three.compensate
    def undo_three(self, ctx):
        log("undo three")

    @step(readonly=True)
    def after(self, ctx):
        raise RuntimeError("after fails")


def test_reverse_order_undoes_the_last_to_complete_first(drive: Runner) -> None:
    result = drive(Orchestrator(MemoryStore()), Reverse(1))
    assert result.status is SagaStatus.COMPENSATED
    done = [e for e in LOG if not e.startswith("undo")]
    assert done == ["one", "two", "three"]  # limit=1: one at a time, in order
    assert _undone(LOG) == ["undo three", "undo two", "undo one"]


@attrs.frozen
class Line:
    sku: str
    qty: int


@saga
class Batch_:
    batch_id: str
    lines: list[Line]
    picked: list[str] = attrs.field(factory=list)
    bad: str = ""

    @step(each="lines", key=lambda line: line.sku, limit=2)
    def pick(self, line, ctx):
        log(f"pick {line.sku} {ctx.idempotency_key}")
        if line.sku == self.bad:
            raise RuntimeError(f"no {line.sku} left")
        with _lock:
            self.picked.append(line.sku)

    @pick.compensate
    def unpick(self, line, ctx):
        log(f"undo pick {line.sku} {ctx.idempotency_key}")

    @step(pivot=True)
    def ship(self, ctx):
        log("ship")


LINES = [Line("a", 1), Line("b", 2), Line("c", 3), Line("d", 4)]


def test_a_fan_out_applies_its_step_to_each_item_under_the_items_key(
    orchestrator: Orchestrator, drive: Runner
) -> None:
    result = drive(orchestrator, Batch_("b-1", list(LINES)), "b-1")
    assert result.ok, result.error
    assert sorted(result.data.picked) == ["a", "b", "c", "d"]
    assert sorted(e for e in LOG if e.startswith("pick")) == [
        f"pick {x} b-1:pick[{x}]:forward" for x in "abcd"
    ]
    names = [s.name for s in result.steps]
    assert names == ["pick", "ship", "pick[a]", "pick[b]", "pick[c]", "pick[d]"]
    assert result.step("pick").items == 4 and result.step("pick").first_item == 2
    assert all(result.step(f"pick[{x}]").status is StepStatus.COMPLETED for x in "abcd")
    assert LOG[-1] == "ship"


def test_a_failed_item_compensates_the_items_that_completed_with_their_item(
    orchestrator: Orchestrator, drive: Runner
) -> None:
    result = drive(orchestrator, Batch_("b-2", list(LINES), bad="c"), "b-2")
    assert result.status is SagaStatus.COMPENSATED
    assert "no c left" in str(result.error)
    pick_c = result.step("pick[c]")
    assert pick_c.status is StepStatus.FAILED
    undone = sorted(e for e in LOG if e.startswith("undo"))
    # what completed, and what was cut short while running (async: cancelled when 'c'
    # failed; its outcome is unknown), is undone with its own item and key
    did = [
        x for x in "abcd"
        if result.step(f"pick[{x}]").status is StepStatus.COMPLETED
        or result.step(f"pick[{x}]").timed_out
    ]
    assert undone == [f"undo pick {x} b-2:pick[{x}]:compensate" for x in did]
    assert "c" not in did and "ship" not in LOG
    # limit=2: 'd' may not have started at all; what never started is not undone
    for x in "abcd":
        if result.step(f"pick[{x}]").status is StepStatus.PENDING:
            assert result.step(f"pick[{x}]").compensation is CompensationStatus.NOT_NEEDED


def test_a_fan_out_over_no_items_completes(drive: Runner) -> None:
    result = drive(Orchestrator(MemoryStore()), Batch_("b-3", []))
    assert result.ok
    assert result.step("pick").status is StepStatus.COMPLETED
    assert LOG == ["ship"]


def test_items_with_one_key_fail_the_fan_out_with_the_fix(drive: Runner) -> None:
    result = drive(Orchestrator(MemoryStore()), Batch_("b-4", [Line("a", 1), Line("a", 2)]))
    assert result.status is SagaStatus.COMPENSATED
    assert "have one key" in str(result.error) and "key=" in str(result.error)
    assert not LOG


def test_a_field_that_is_not_a_list_fails_the_fan_out_with_the_fix(drive: Runner) -> None:
    result = drive(Orchestrator(MemoryStore()), Batch_("b-5", {"a": 1}))  # type: ignore[arg-type]
    assert result.status is SagaStatus.COMPENSATED
    assert "not a list or tuple" in str(result.error)


@saga
class Rejecting:
    n: int

    g = parallel()

    @g.step
    def ok(self, ctx):
        log("ok")

    @ok.compensate
    def undo_ok(self, ctx):
        log("undo ok")

    @g.step(readonly=True)
    def no(self, ctx):
        raise SagaRejected("credit limit reached")


def test_a_member_rejecting_the_saga_compensates_with_the_outcome_rejected(
    drive: Runner,
) -> None:
    result = drive(Orchestrator(MemoryStore()), Rejecting(1))
    assert result.status is SagaStatus.COMPENSATED
    assert result.outcome == "rejected"
    assert result.step("no").status is StepStatus.REJECTED


@saga
class AfterPivot:
    n: int
    fails: int = 1

    @step(pivot=True)
    def commit(self, ctx):
        log("commit")

    notify = parallel()

    @notify.step(retriable=True, retry=Retry(attempts=1))
    def email(self, ctx):
        if self.fails:
            self.fails -= 1
            raise RuntimeError("smtp down")
        log("email")

    @notify.step(retriable=True)
    def sms(self, ctx):
        log("sms")


def test_a_group_after_the_pivot_fails_for_an_operator_who_retries_it() -> None:
    orchestrator = Orchestrator(MemoryStore())
    result = orchestrator.run(AfterPivot(1), "p-1")
    assert result.status is SagaStatus.FAILED
    assert result.step("email").status is StepStatus.FAILED
    assert result.step("sms").status is StepStatus.COMPLETED
    assert "undo" not in " ".join(LOG)
    again = orchestrator.retry("p-1")
    assert again.ok, again.error
    assert again.step("email").status is StepStatus.COMPLETED
    assert LOG.count("sms") == 1  # the member that completed is not run again
    assert [dest for _, _, dest in again.path][-3:] == ["failed", "notify", "completed"]


@saga(deadline=0.2)
class Late:
    n: int

    g = parallel()

    @g.step(timeout=None)
    def slow(self, ctx):
        time.sleep(1)

    @slow.compensate
    def undo_slow(self, ctx):
        log("undo slow")


def test_the_saga_deadline_cuts_a_group_short(drive: Runner) -> None:
    result = drive(Orchestrator(MemoryStore()), Late(1))
    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, SagaDeadlineExceeded)
    assert result.step("slow").timed_out
    assert _undone(LOG) == ["undo slow"]


# --- durability -------------------------------------------------------------------------


def _crash_mid_group(path: Path) -> str:
    """A run cut off inside the group: every member started (saved), 'stock' settled
    and saved, the process gone."""
    spec = spec_of(Order)
    store = SQLiteStore(path)
    record = new_record(spec, Order("o-9"), "o-9", 0.0)
    store.save(record)
    first = next_command(spec, record, 1.0)
    assert first is not None and not isinstance(first, Batch)
    settle(spec, record, first, 1.0)  # validate
    batch = next_command(spec, record, 2.0)
    assert isinstance(batch, Batch) and len(batch.calls) == 3
    store.save(record)  # write-ahead: three members started
    stock = next(c for c in batch.calls if spec.steps[c.index].name == "stock")
    settle(spec, record, stock, 3.0)
    store.save(record)
    store.close()
    return "o-9"


def test_recovery_resumes_only_the_members_that_had_not_finished(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    saga_id = _crash_mid_group(path)
    orchestrator = Orchestrator(SQLiteStore(path), sagas=[Order, Batch_])
    report = orchestrator.recover()
    assert saga_id in report.resumed
    result = orchestrator.get(saga_id)
    assert result is not None and result.ok, result and result.error
    ran = sorted(e for e in LOG if not e.startswith("undo"))
    # stock had finished: not run again; the two cut off run again under the same keys
    assert ran == ["confirm", "payment o-9:payment:forward", "shipping o-9:shipping:forward"]
    assert result.step("payment").attempts == 2 and result.step("payment").timed_out


def test_recovery_of_a_fan_out_whose_items_changed_quarantines_that_saga(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sagas.db"
    spec = spec_of(Batch_)
    store = SQLiteStore(path)
    record = new_record(spec, Batch_("b-9", list(LINES)), "b-9", 0.0)
    batch = next_command(spec, record, 1.0)
    assert isinstance(batch, Batch) and len(batch.calls) == 2
    store.save(record)
    record.data.lines.append(Line("e", 5))  # the collection changes under the run
    store.save(record)
    store.close()
    orchestrator = Orchestrator(SQLiteStore(path), sagas=[Order, Batch_])
    report = orchestrator.recover()
    assert "b-9" in report.quarantined
    assert "4 items" in report.quarantined["b-9"] and "5 items" in report.quarantined["b-9"]
    assert not LOG


def test_members_checkpoint_together(tmp_path: Path) -> None:
    """Ten members that end together are saved together, not one save each."""

    @saga
    class Ten:
        n: int
        done: int = 0

        g = parallel()

        @g.step(readonly=True)
        async def m0(self, ctx):
            await self._go()

        @g.step(readonly=True)
        async def m1(self, ctx):
            await self._go()

        @g.step(readonly=True)
        async def m2(self, ctx):
            await self._go()

        @g.step(readonly=True)
        async def m3(self, ctx):
            await self._go()

        @g.step(readonly=True)
        async def m4(self, ctx):
            await self._go()

        @g.step(readonly=True)
        async def m5(self, ctx):
            await self._go()

        @g.step(readonly=True)
        async def m6(self, ctx):
            await self._go()

        @g.step(readonly=True)
        async def m7(self, ctx):
            await self._go()

        @g.step(readonly=True)
        async def m8(self, ctx):
            await self._go()

        @g.step(readonly=True)
        async def m9(self, ctx):
            await self._go()


        async def _go(self) -> None:
            self.done += 1
            while self.done < 10:  # all ten end in the same turn of the loop
                await asyncio.sleep(0)

    orchestrator = Orchestrator(SQLiteStore(tmp_path / "sagas.db"))
    result = asyncio.run(orchestrator.arun(Ten(1), "ten"))
    assert result.ok
    record = orchestrator.store.load("ten")
    assert record is not None
    # start, the ten members started, the ten settled with the saga completed: 3 saves
    assert record.version <= 4, record.version


@saga
class Uneven:
    n: int
    over: ClassVar[threading.Event] = threading.Event()

    g = parallel()

    @g.step(readonly=True)
    def fails_fast(self, ctx):
        raise RuntimeError("fails fast")

    @g.step
    def takes_a_while(self, ctx):
        time.sleep(0.2)
        log("took a while")
        Uneven.over.set()

    @takes_a_while.compensate
    def undo_while(self, ctx):
        log("undo while")


def test_sync_lets_running_members_finish_and_counts_them() -> None:
    result = Orchestrator(MemoryStore()).run(Uneven(1))
    assert result.status is SagaStatus.COMPENSATED
    member = result.step("takes_a_while")
    assert member.status is StepStatus.COMPLETED and not member.timed_out
    assert LOG == ["took a while", "undo while"]


def test_async_lets_a_member_on_a_thread_finish_and_counts_it() -> None:
    """A plain def member runs on a call thread, which cannot be stopped: when the
    group fails it is let finish (as under the sync driver), so that its undo never
    runs before its effect lands. (Coroutine members are cancelled: AsyncGroup.)"""
    Uneven.over.clear()
    result = asyncio.run(Orchestrator(MemoryStore()).arun(Uneven(1)))
    assert result.status is SagaStatus.COMPENSATED
    member = result.step("takes_a_while")
    assert member.status is StepStatus.COMPLETED and not member.timed_out
    assert LOG == ["took a while", "undo while"]
    assert Uneven.over.wait(10)  # the abandoned call ends on its own (before the next test)


@saga
class Held:
    n: int
    gate: ClassVar[threading.Event] = threading.Event()
    started: ClassVar[threading.Event] = threading.Event()

    g = parallel()

    @g.step
    def held(self, ctx):
        Held.started.set()
        Held.gate.wait(10)
        log("held done")

    @held.compensate
    def undo_held(self, ctx):
        log("undo held")

    @g.step
    def other(self, ctx):
        log("other")

    @other.compensate
    def undo_other(self, ctx):
        log("undo other")


def test_an_operator_cancels_a_running_group() -> None:
    Held.gate.clear()
    Held.started.clear()
    orchestrator = Orchestrator(MemoryStore())
    outcome: list[object] = []
    runner = threading.Thread(target=lambda: outcome.append(orchestrator.run(Held(1), "h-1")))
    runner.start()
    assert Held.started.wait(10)
    orchestrator.cancel("h-1", note="customer called")
    Held.gate.set()
    runner.join(10)
    (result,) = outcome
    assert result.status is SagaStatus.COMPENSATED  # type: ignore[attr-defined]
    assert "cancelled" in str(result.error)  # type: ignore[attr-defined]
    assert sorted(_undone(LOG)) == ["undo held", "undo other"]
    actions = [e for e in result.history if isinstance(e, events.OperatorAction)]  # type: ignore[attr-defined]
    assert [a.note for a in actions] == ["customer called"]


@saga
class UndoFails:
    batch_id: str
    items: list[str]
    broken: ClassVar[set[str]] = set()

    g = parallel()

    @g.step
    def hold(self, ctx):
        log("hold")

    @hold.compensate(retry=Retry(attempts=1))
    def unhold(self, ctx):
        if "hold" in UndoFails.broken:
            raise RuntimeError("unhold is down")
        log("undo hold")

    @g.step
    def tag(self, ctx):
        log("tag")

    @tag.compensate
    def untag(self, ctx):
        log("undo tag")

    @step(each="items", limit=1)
    def apply(self, item, ctx):
        if item == "boom":
            raise RuntimeError("boom")
        log(f"apply {item}")

    @apply.compensate(retry=Retry(attempts=1))
    def unapply(self, item, ctx):
        if item in UndoFails.broken:
            raise RuntimeError(f"unapply {item} is down")
        log(f"undo apply {item}")


def test_failed_compensations_in_a_group_and_a_fan_out_are_retried_by_an_operator() -> None:
    UndoFails.broken = {"hold", "x"}
    orchestrator = Orchestrator(MemoryStore())
    result = orchestrator.run(UndoFails("u-1", ["x", "y", "boom"]), "u-1")
    assert result.status is SagaStatus.FAILED
    assert result.step("hold").compensation is CompensationStatus.FAILED
    assert result.step("apply[0]").compensation is CompensationStatus.FAILED
    assert result.step("apply[1]").compensation is CompensationStatus.COMPENSATED
    assert result.step("apply").compensation is CompensationStatus.FAILED
    assert result.step("tag").compensation is CompensationStatus.COMPENSATED
    failures = result.error.failures  # type: ignore[union-attr]
    assert set(failures) == {"hold", "apply[0]"}
    UndoFails.broken = set()
    LOG.clear()
    again = orchestrator.retry("u-1", note="participants are back")
    assert again.status is SagaStatus.COMPENSATED, again.error
    assert sorted(LOG) == ["undo apply x", "undo hold"]  # only what had failed, once each
    assert again.step("apply").compensation is CompensationStatus.COMPENSATED


class Opaque:
    """Not something a store can keep."""


@saga
class Unstorable:
    batch_id: str
    lines: list[Line] = attrs.field(factory=list)

    @step
    def load(self, ctx):
        self.lines = [Opaque()]  # type: ignore[list-item]
        log("load")

    @load.compensate
    def unload(self, ctx):
        log("undo load")

    @step(each="lines")
    def pick(self, line, ctx):
        log("pick")

    @pick.compensate
    def unpick(self, line, ctx):
        log("undo pick")


def test_a_collection_that_cannot_be_stored_fails_that_saga_not_the_process(
    tmp_path: Path, drive: Runner
) -> None:
    result = drive(Orchestrator(SQLiteStore(tmp_path / "sagas.db")), Unstorable("u-2"))
    assert result.status is SagaStatus.COMPENSATED
    assert "cannot be stored" in str(result.error)
    assert LOG == ["load", "undo load"]  # no item ran


@saga
class AsyncTimeouts:
    n: int

    g = parallel()

    @g.step(timeout=0.05)
    async def hangs(self, ctx):
        await asyncio.sleep(10)

    @hangs.compensate
    async def undo_hangs(self, ctx):
        log("undo hangs")

    @g.step(timeout=5)
    async def own_timeout(self, ctx):
        if self.n == 2:
            raise TimeoutError("the participant's own timeout")

    @own_timeout.compensate
    async def undo_own(self, ctx):
        log("undo own")


def test_an_async_member_past_its_timeout_is_cancelled_unknown_and_undone() -> None:
    result = asyncio.run(Orchestrator(MemoryStore()).arun(AsyncTimeouts(1)))
    assert result.status is SagaStatus.COMPENSATED
    hangs = result.step("hangs")
    assert hangs.status is StepStatus.TIMED_OUT and hangs.timed_out
    assert "timed out after 0.05s" in (hangs.error or "")
    assert sorted(_undone(LOG)) == ["undo hangs", "undo own"]


def test_a_members_own_timeout_error_is_an_ordinary_failure() -> None:
    result = asyncio.run(Orchestrator(MemoryStore()).arun(AsyncTimeouts(2)))
    assert result.status is SagaStatus.COMPENSATED
    own = result.step("own_timeout")
    assert own.status is StepStatus.FAILED and not own.timed_out
    assert "the participant's own timeout" in (own.error or "")


@saga
class Siblings:
    """Five async members that end at the same moment (each returns at once)."""

    n: int = 0
    g = parallel()

    @g.step(readonly=True)
    async def a(self, ctx): ...

    @g.step(readonly=True)
    async def b(self, ctx): ...

    @g.step(readonly=True)
    async def c(self, ctx): ...

    @g.step(readonly=True)
    async def d(self, ctx): ...

    @g.step(readonly=True)
    async def e(self, ctx): ...


def test_async_members_ending_together_are_recorded_in_the_order_they_started() -> None:
    # the tasks that end in one turn came back as a set, whose order follows where the
    # tasks sit in memory: the history (and what a demo prints) changed from run to run
    async def completions() -> list[str]:
        heard: list[str] = []
        orchestrator = Orchestrator(MemoryStore(), [
            lambda e: heard.append(e.step) if isinstance(e, events.StepCompleted) else None
        ])
        assert (await orchestrator.arun(Siblings())).status is SagaStatus.COMPLETED
        return heard

    async def main() -> None:
        for _ in range(30):
            assert await completions() == ["a", "b", "c", "d", "e"]

    asyncio.run(asyncio.wait_for(main(), 60))

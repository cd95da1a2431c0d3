"""Waits, signals, timers and business rejection (in memory, on a virtual clock)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import attrs
import pytest

from sagaflow import (
    Orchestrator,
    SagaDefinitionError,
    SagaNotFound,
    SagaRejected,
    SagaStatus,
    SignalRefused,
    StepStatus,
    WaitTimedOut,
    events,
    saga,
    spec_of,
    step,
    timer,
    wait,
)
from sagaflow.stores import MemoryStore
from sagaflow.stores.sqlite import SQLiteStore
from sagaflow.testing import VirtualClock

DAY = 86_400.0


@attrs.frozen
class Decision:
    approved: bool
    by: str
    reason: str = ""


LOG: list[str] = []


def needs_approval(s: Approval) -> bool:
    return s.amount > 100


@saga(key="order_id")
class Approval:
    order_id: str
    amount: int
    approved_by: str | None = None

    @step
    def reserve(self, ctx):
        LOG.append("reserve")

    @reserve.compensate
    def release(self, ctx):
        LOG.append("release")

    @wait("decision", payload=Decision, timeout=timedelta(days=3), when=needs_approval)
    def approval(self, decision: Decision, ctx):
        if not decision.approved:
            raise SagaRejected(f"refused by {decision.by}: {decision.reason}")
        self.approved_by = decision.by

    @step(pivot=True)
    def charge(self, ctx):
        LOG.append("charge")


@pytest.fixture(autouse=True)
def _clear_log():
    LOG.clear()


@pytest.fixture
def clock():
    return VirtualClock()


@pytest.fixture(params=["memory", "sqlite"])
def orch(clock, request, tmp_path):
    store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "w.db")
    with Orchestrator(store, clock=clock) as o:
        yield o
    close = getattr(store, "close", None)
    if close is not None:
        close()


def test_a_saga_parks_at_its_wait_and_a_signal_resumes_it_at_once(orch):
    parked = orch.run(Approval("o-1", 500), saga_id="s1")
    assert parked.status is SagaStatus.RUNNING
    assert parked.step("approval").status is StepStatus.WAITING
    assert parked.outcome == "waiting"
    assert LOG == ["reserve"]
    record = orch.store.load("s1")
    assert record.waiting == "decision" and record.wake_at is not None
    assert "s1" not in orch.runtime.live  # a row, not a run held in memory

    done = orch.signal("s1", "decision", Decision(True, "ann"))
    assert done.status is SagaStatus.COMPLETED
    assert done.data.approved_by == "ann"
    assert LOG == ["reserve", "charge"]
    kinds = [type(e).__name__ for e in done.history]
    order = [kinds.index(k) for k in ("WaitStarted", "SignalDelivered", "SagaCompleted")]
    assert order == sorted(order)
    assert ("approval", "advance", "charge") in done.path


def test_a_condition_false_skips_the_wait(orch):
    result = orch.run(Approval("o-2", 50))
    assert result.status is SagaStatus.COMPLETED
    assert result.step("approval").status is StepStatus.SKIPPED


def test_a_rejection_compensates_and_is_the_outcome(orch):
    orch.run(Approval("o-3", 500), saga_id="s3")
    result = orch.signal("s3", "decision", {"approved": False, "by": "bob", "reason": "too much"})
    assert result.status is SagaStatus.COMPENSATED
    assert result.outcome == "rejected"
    assert isinstance(result.error, SagaRejected)
    assert result.error.step == "approval"
    assert result.error.reason == "refused by bob: too much"
    assert result.step("approval").status is StepStatus.REJECTED
    assert LOG == ["reserve", "release"]
    rejected = [e for e in result.history if isinstance(e, events.StepRejected)]
    assert rejected and rejected[0].error == "refused by bob: too much"


def test_a_signal_sent_while_the_saga_runs_is_kept_until_its_wait(clock):
    with Orchestrator(MemoryStore(), clock=clock) as orch:

        @saga
        class Early:
            n: int = 0

            @step(readonly=True)
            def first(self, ctx):
                # The saga runs here now: the signal is stored and its driver told.
                assert orch.signal(ctx.saga_id, "go").status is SagaStatus.RUNNING

            @wait("go", timeout=60)
            def go(self, ctx):
                self.n += 1

        result = orch.run(Early(), saga_id="e1")
        assert result.status is SagaStatus.COMPLETED
        assert result.data.n == 1


def test_a_signal_before_the_saga_reaches_its_wait_is_delivered_when_it_does(orch, clock):
    @saga
    class Later:
        got: str | None = None

        @timer(after=10)
        def pause(self, ctx):
            pass

        @wait("hello", payload=Decision, timeout=60)
        def hello(self, d: Decision, ctx):
            self.got = d.by

    parked = orch.run(Later(), saga_id="l1")
    assert parked.step("pause").status is StepStatus.WAITING
    orch.signal("l1", "hello", Decision(True, "cy"))  # stored: the saga is at its timer
    assert orch.get("l1").status is SagaStatus.RUNNING
    clock.advance(10)
    assert orch.resume_due() == {"l1": SagaStatus.COMPLETED}
    assert orch.get("l1").data.got == "cy"


def test_no_answer_in_time_compensates(orch, clock):
    orch.run(Approval("o-4", 500), saga_id="s4")
    assert orch.resume_due() == {}  # not yet
    clock.advance(3 * DAY)
    assert orch.resume_due() == {"s4": SagaStatus.COMPENSATED}
    result = orch.get("s4")
    assert isinstance(result.error, WaitTimedOut)
    assert result.outcome == "timed-out"
    assert result.step("approval").status is StepStatus.EXPIRED
    assert LOG == ["reserve", "release"]
    assert ("approval", "timeout", "compensating_reserve") in result.path


def test_a_wait_may_go_on_when_its_time_runs_out(orch, clock):
    @saga
    class Patient:
        @wait("maybe", timeout=5, on_timeout="continue")
        def maybe(self, ctx):
            raise AssertionError("no signal came")

        @step(readonly=True)
        def after(self, ctx):
            LOG.append("after")

    orch.run(Patient(), saga_id="p1")
    clock.advance(5)
    assert orch.resume_due() == {"p1": SagaStatus.COMPLETED}
    assert LOG == ["after"]
    assert orch.get("p1").step("maybe").status is StepStatus.EXPIRED


def test_a_timer_fires_after_its_time_even_from_a_fresh_orchestrator(clock):
    store = MemoryStore()

    @saga
    class Cooling:
        fired_at: float = 0.0

        @timer(after=timedelta(hours=1))
        def cool_off(self, ctx):
            self.fired_at = ctx.deadline or 0.0
            LOG.append("fired")

    with Orchestrator(store, clock=clock) as first:
        assert first.run(Cooling(), saga_id="c1").status is SagaStatus.RUNNING
    clock.advance(3599)
    with Orchestrator(store, clock=clock, sagas=[Cooling]) as second:  # "after a restart"
        assert second.resume_due() == {}
        clock.advance(1)
        assert second.resume_due() == {"c1": SagaStatus.COMPLETED}
    assert LOG == ["fired"]


def test_duplicate_signals_are_ignored_and_each_is_delivered_once_in_order(orch):
    @saga
    class Twice:
        seen: list[str] = attrs.field(factory=list)

        @wait("note", payload=Decision, timeout=60)
        def one(self, d: Decision, ctx):
            self.seen.append(d.by)

        @wait("note", payload=Decision, timeout=60)
        def two(self, d: Decision, ctx):
            self.seen.append(d.by)

    orch.run(Twice(), saga_id="t1")
    orch.signal("t1", "note", Decision(True, "a"), signal_id="x")
    assert orch.get("t1").data.seen == ["a"]
    orch.signal("t1", "note", Decision(True, "a-again"), signal_id="x")  # duplicate id
    assert orch.get("t1").data.seen == ["a"]
    result = orch.signal("t1", "note", Decision(True, "b"), signal_id="y")
    assert result.status is SagaStatus.COMPLETED
    assert result.data.seen == ["a", "b"]
    assert [s.signal_id for s in orch.store.signals("t1")] == ["x", "y"]


def test_refused_signals_store_nothing(orch):
    with pytest.raises(SagaNotFound):
        orch.signal("nobody", "decision", Decision(True, "a"))
    orch.run(Approval("o-5", 500), saga_id="s5")
    with pytest.raises(SignalRefused, match="declares no wait for signal 'nope'"):
        orch.signal("s5", "nope")
    with pytest.raises(SignalRefused, match="payload does not fit"):
        orch.signal("s5", "decision", {"approved": "perhaps?", "by": 3, "extra": 1})
    with pytest.raises(SignalRefused, match="carries a Decision"):
        orch.signal("s5", "decision")
    assert orch.store.signals("s5") == []
    orch.signal("s5", "decision", Decision(True, "ann"))
    with pytest.raises(SignalRefused, match="COMPLETED: a finished saga takes no signals"):
        orch.signal("s5", "decision", Decision(True, "ann"))
    assert len(orch.store.signals("s5")) == 1


def test_a_signal_finds_its_saga_by_business_key(orch):
    orch.run(Approval("order-77", 500), saga_id="k1")
    orch.run(Approval("order-78", 500), saga_id="k2")
    sid = orch.find("order-77", Approval, "decision")
    assert sid == "k1"
    assert orch.signal(sid, "decision", Decision(True, "z")).status is SagaStatus.COMPLETED
    with pytest.raises(SignalRefused, match="no unfinished saga of Approval"):
        orch.find("order-77", Approval, "decision")


def test_the_saga_deadline_wakes_a_parked_saga_to_compensate(orch, clock):
    @saga(deadline=100)
    class Hurried:
        @step
        def book(self, ctx):
            LOG.append("book")

        @book.compensate
        def unbook(self, ctx):
            LOG.append("unbook")

        @wait("ok", timeout=DAY)
        def ok(self, ctx):
            pass

    orch.run(Hurried(), saga_id="h1")
    clock.advance(100)
    assert orch.resume_due() == {"h1": SagaStatus.COMPENSATED}
    assert LOG == ["book", "unbook"]


def test_an_operator_cancels_a_parked_saga(orch):
    orch.run(Approval("o-6", 500), saga_id="s6")
    result = orch.cancel("s6", "customer called")
    assert result.status is SagaStatus.COMPENSATED
    assert result.step("approval").status is StepStatus.FAILED
    assert orch.store.load("s6").waiting is None


def test_a_step_may_reject_and_is_not_retried(orch):
    from sagaflow import Retry

    calls = []

    @saga
    class Picky:
        @step
        def hold(self, ctx):
            LOG.append("hold")

        @hold.compensate
        def unhold(self, ctx):
            LOG.append("unhold")

        @step(readonly=True, retry=Retry(attempts=5, backoff=0))
        def check(self, ctx):
            calls.append(1)
            raise SagaRejected("customer is blocked")

    result = orch.run(Picky())
    assert result.status is SagaStatus.COMPENSATED
    assert result.error == result.error and isinstance(result.error, SagaRejected)
    assert len(calls) == 1
    assert LOG == ["hold", "unhold"]


def test_a_wait_after_the_pivot_fails_for_an_operator_when_its_time_runs_out(orch, clock):
    @saga
    class Late:
        @step(pivot=True)
        def ship(self, ctx):
            pass

        @wait("delivered", timeout=10)
        def delivered(self, ctx):
            pass

    assert spec_of(Late).steps[1].kind.value == "retriable"
    orch.run(Late(), saga_id="late")
    clock.advance(10)
    assert orch.resume_due() == {"late": SagaStatus.FAILED}
    assert isinstance(orch.get("late").error, WaitTimedOut)
    # An operator's retry waits again, with a fresh timeout.
    assert orch.retry("late").status is SagaStatus.RUNNING
    assert orch.signal("late", "delivered").status is SagaStatus.COMPLETED


def test_async_sagas_wait_and_resume_in_the_awaiting_task(clock):
    @saga
    class AsyncWait:
        by: str = ""

        @step(readonly=True)
        async def look(self, ctx):
            await asyncio.sleep(0)

        @wait("decision", payload=Decision, timeout=60)
        async def decided(self, d: Decision, ctx):
            self.by = d.by

    async def main():
        with Orchestrator(MemoryStore(), clock=clock) as orch:
            parked = await orch.arun(AsyncWait(), saga_id="a1")
            assert parked.status is SagaStatus.RUNNING
            done = await orch.asignal("a1", "decision", Decision(True, "dee"))
            assert done.status is SagaStatus.COMPLETED and done.data.by == "dee"

    asyncio.run(main())


# --- definitions ---------------------------------------------------------------------


def _problems(build) -> str:
    with pytest.raises(SagaDefinitionError) as info:
        build()
    return str(info.value)


def test_bad_wait_definitions_are_refused_with_their_fix():
    def no_timeout():
        @saga
        class A:
            @wait("x", timeout=None)  # type: ignore[arg-type]
            def x(self, ctx):
                pass

    assert "never waits for ever" in _problems(no_timeout)

    def bad_payload():
        @saga
        class B:
            @wait("x", payload=dict, timeout=1)
            def x(self, payload, ctx):
                pass

    assert "payload must be an attrs class" in _problems(bad_payload)

    def wrong_handler():
        @saga
        class C:
            @wait("x", payload=Decision, timeout=1)
            def x(self, ctx):
                pass

    assert "must take (self, payload, ctx)" in _problems(wrong_handler)

    def compensate_after_pivot():
        @saga
        class D:
            @step(pivot=True)
            def p(self, ctx):
                pass

            @wait("x", timeout=1, on_timeout="compensate")
            def x(self, ctx):
                pass

    assert "after the point of no return" in _problems(compensate_after_pivot)

    def bad_on_timeout():
        @saga
        class E:
            @wait("x", timeout=1, on_timeout="shrug")
            def x(self, ctx):
                pass

    assert "on_timeout must be one of" in _problems(bad_on_timeout)

    def timer_both():
        @saga
        class F:
            @timer(after=1, at=lambda s: 0)
            def t(self, ctx):
                pass

    assert "exactly one of after=" in _problems(timer_both)

    def bad_key():
        @saga(key="nope")
        class G:
            a: int = 0

            @step(readonly=True)
            def s(self, ctx):
                pass

    assert "@saga(key='nope') must name one of the saga's fields (a)" in _problems(bad_key)


def test_a_wait_is_a_state_of_the_machine_with_its_timeout_edges():
    spec = spec_of(Approval)
    assert "approval" in spec.machine.states
    assert ("approval", "timeout", "compensating_reserve") in spec.transitions
    assert ("approval", "advance", "charge") in spec.transitions
    assert ("approval", "skip", "charge") in spec.transitions
    assert spec.signals == {"decision": (1,)}
    assert spec.key == "order_id"


def test_recovery_leaves_parked_sagas_as_rows_and_resumes_the_due_ones(tmp_path, clock):
    """recover() decodes no parked saga whose time has not come (a damaged one is not
    even read), and resumes those whose signal or time came while no process ran."""
    import sqlite3

    path = tmp_path / "r.db"
    with SQLiteStore(path) as store, Orchestrator(store, clock=clock) as first:
        for sid in ("waits", "signalled", "late", "hurt"):
            assert first.run(Approval(sid, 500), saga_id=sid).status is SagaStatus.RUNNING
        # Signals stored by another process, which did not resume anything:
        store.add_signal("signalled", "decision", "sig-1", '{"approved": true, "by": "ann"}',
                         clock.now())
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE sagaflow_sagas SET steps = '{not json' WHERE saga_id = 'hurt'")
        raw.execute("UPDATE sagaflow_sagas SET wake_at = 0 WHERE saga_id = 'late'")
    LOG.clear()
    with SQLiteStore(path) as store, Orchestrator(store, clock=clock, sagas=[Approval]) as second:
        report = second.recover()
        assert report.resumed == {
            "signalled": SagaStatus.COMPLETED, "late": SagaStatus.COMPENSATED,
        }
        assert report.skipped == {} and report.quarantined == {}  # 'hurt' was not read
        assert second.get("signalled").data.approved_by == "ann"
        assert second.get("waits").status is SagaStatus.RUNNING
        assert store.quarantined() == []
        assert sorted(LOG) == ["charge", "release"]


def test_async_recovery_resumes_the_due_parked_sagas_too(clock):
    store = MemoryStore()
    with Orchestrator(store, clock=clock) as first:
        first.run(Approval("a", 500), saga_id="a")
        first.run(Approval("b", 500), saga_id="b")
    clock.advance(3 * DAY)

    async def recover():
        with Orchestrator(store, clock=clock, sagas=[Approval]) as second:
            return await second.arecover()

    report = asyncio.run(recover())
    assert report.resumed == {"a": SagaStatus.COMPENSATED, "b": SagaStatus.COMPENSATED}


def test_a_signal_stored_in_time_is_delivered_though_the_saga_is_resumed_late(orch, clock):
    """Across processes a parked saga is resumed when a worker gets to it: a signal stored
    before the timeout counts, even when the resume comes after it; one stored after the
    timeout does not (the wait expires; the late signal stays undelivered)."""
    orch.run(Approval("o-5", 500), saga_id="in-time")
    orch.run(Approval("o-6", 500), saga_id="too-late")
    clock.advance(3 * DAY - 60)
    orch.store.add_signal("in-time", "decision", "d-1", '{"approved": true, "by": "ann"}',
                          clock.now())
    clock.advance(120)
    orch.store.add_signal("too-late", "decision", "d-2", '{"approved": true, "by": "ann"}',
                          clock.now())
    assert orch.resume_due() == {"in-time": SagaStatus.COMPLETED,
                                 "too-late": SagaStatus.COMPENSATED}
    assert orch.get("in-time").data.approved_by == "ann"
    late = orch.get("too-late")
    assert isinstance(late.error, WaitTimedOut)
    assert late.step("approval").status is StepStatus.EXPIRED
    assert orch.store.load("too-late").signal_marks == {}


def test_a_signal_sent_again_after_it_finished_the_saga_is_ignored(orch):
    """Its sender may have died before signal() returned: it cannot tell its signal
    taken from one never taken, so it sends again, with the same id."""
    orch.run(Approval("o-7", 500), saga_id="again")
    done = orch.signal("again", "decision", Decision(True, "ann"), signal_id="d-7")
    assert done.status is SagaStatus.COMPLETED
    assert orch.signal("again", "decision", Decision(True, "ann"), signal_id="d-7").status \
        is SagaStatus.COMPLETED
    with pytest.raises(SignalRefused, match="a finished saga takes no signals"):
        orch.signal("again", "decision", Decision(True, "ann"), signal_id="d-8")
    with pytest.raises(SignalRefused):
        orch.signal("again", "decision", Decision(True, "ann"))
    assert [g.signal_id for g in orch.store.signals("again")] == ["d-7"]

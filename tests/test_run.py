"""The semantics table of DESIGN.md, one behaviour per test, under both drivers."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from sagaflow import (
    AlreadyExecuting,
    CompensationError,
    CompensationStatus,
    Direction,
    InvalidTransition,
    Orchestrator,
    Retry,
    SagaDeadlineExceeded,
    SagaStatus,
    StepError,
    StepStatus,
    StepTimeout,
    events,
    saga,
    spec_of,
    step,
)
from sagaflow.engine import transition
from sagaflow.testing import VirtualClock


class Log(list):
    """What the participants saw, in order."""


def kinds(result) -> list[str]:
    return [type(e).__name__ for e in result.history]


def make_saga(log: Log, *, fail: dict[str, int] | None = None, **options):
    """A 5-step saga: reserve(comp) -> check(readonly) -> charge(comp) -> ship(pivot)
    -> notify(retriable). ``fail`` maps a call name to how many times it raises first
    (``-1``: always)."""
    failures = dict(fail or {})
    retry = options.get("retry", Retry(attempts=1))
    comp_retry = options.get("comp_retry", Retry(attempts=3, backoff=0.5, jitter=0.0))

    def act(name: str, ctx) -> None:
        log.append((name, ctx.attempt, ctx.idempotency_key))
        left = failures.get(name, 0)
        if left:
            failures[name] = left - 1
            raise ConnectionError(f"{name} unavailable")

    @saga(name="shop")
    class Shop:
        order: str = "o-1"

        @step(retry=retry)
        def reserve(self, ctx):
            act("reserve", ctx)
            ctx.emit(("Reserved", self.order))

        @reserve.compensate(retry=comp_retry)
        def release(self, ctx):
            act("release", ctx)
            ctx.emit(("Released", self.order))

        @step(readonly=True)
        def check(self, ctx):
            act("check", ctx)

        @step(retry=retry)
        def charge(self, ctx):
            act("charge", ctx)
            ctx.emit(("Charged", self.order))

        @charge.compensate(retry=comp_retry)
        def refund(self, ctx):
            act("refund", ctx)
            ctx.emit(("Refunded", self.order))

        @step(pivot=True)
        def ship(self, ctx):
            act("ship", ctx)

        @step(retriable=True, retry=Retry(attempts=3, backoff=1.0, jitter=0.0))
        def notify(self, ctx):
            act("notify", ctx)

    return Shop


def calls(log: Log) -> list[str]:
    return [name for name, *_ in log]


def test_happy_path(drive) -> None:
    log = Log()
    result = drive(Orchestrator(), make_saga(log)(), "s-1")
    assert result.status is SagaStatus.COMPLETED and result.ok and result.error is None
    assert calls(log) == ["reserve", "check", "charge", "ship", "notify"]
    assert result.events == (("Reserved", "o-1"), ("Charged", "o-1"))
    assert kinds(result) == ["SagaStarted"] + ["StepStarted", "StepCompleted"] * 5 + [
        "SagaCompleted"
    ]
    assert all(s.status is StepStatus.COMPLETED and s.attempts == 1 for s in result.steps)
    assert result.steps_executed == result.total_steps == 5
    assert result.duration is not None and result.duration >= 0
    assert result.raise_for_status() is result


def test_step_retried_per_policy_with_backoff_and_same_key(drive) -> None:
    log = Log()
    clock = VirtualClock()
    Shop = make_saga(
        log, fail={"charge": 2}, retry=Retry(attempts=3, backoff=0.5, multiplier=3, jitter=0.0)
    )
    result = drive(Orchestrator(clock=clock), Shop(), "s-2")
    assert result.status is SagaStatus.COMPLETED
    charges = [entry for entry in log if entry[0] == "charge"]
    assert [a for _, a, _ in charges] == [1, 2, 3]
    assert {key for *_, key in charges} == {"s-2:charge:forward"}
    assert clock.sleeps == [0.5, 1.5]
    retrying = [e for e in result.history if isinstance(e, events.StepRetrying)]
    assert [(e.step, e.attempt, e.delay) for e in retrying] == [
        ("charge", 1, 0.5),
        ("charge", 2, 1.5),
    ]
    assert result.step("charge").attempts == 3


def test_error_the_policy_does_not_retry_fails_at_once(drive) -> None:
    log = Log()
    Shop = make_saga(log, fail={"charge": 1}, retry=Retry(attempts=5, retry_on=KeyError))
    result = drive(Orchestrator(clock=VirtualClock()), Shop())
    assert result.status is SagaStatus.COMPENSATED
    assert result.step("charge").attempts == 1


def test_exhausted_step_compensates_completed_steps_newest_first(drive) -> None:
    log = Log()
    Shop = make_saga(log, fail={"ship": -1})
    result = drive(Orchestrator(clock=VirtualClock()), Shop(), "s-3")
    assert result.status is SagaStatus.COMPENSATED
    assert calls(log) == ["reserve", "check", "charge", "ship", "refund", "release"]
    err = result.error
    assert isinstance(err, StepError) and not isinstance(err, StepTimeout)
    assert (err.step_index, err.step) == (3, "ship")
    assert isinstance(err.cause, ConnectionError) and err.__cause__ is err.cause
    assert result.step("check").compensation is CompensationStatus.NOT_NEEDED  # readonly
    assert result.step("charge").compensation is CompensationStatus.COMPENSATED
    assert result.events[-2:] == (("Refunded", "o-1"), ("Released", "o-1"))
    assert kinds(result)[-6:] == [
        "StepFailed",
        "CompensationStarted",
        "CompensationCompleted",
        "CompensationStarted",
        "CompensationCompleted",
        "SagaCompensated",
    ]
    with pytest.raises(StepError):
        result.raise_for_status()
    # The engine records every state change: the diagram of a run draws exactly this.
    assert result.path == (
        ("not_started", "start", "reserve"),
        ("reserve", "advance", "check"),
        ("check", "advance", "charge"),
        ("charge", "advance", "ship"),
        ("ship", "compensate", "compensating_charge"),
        ("compensating_charge", "undone", "compensating_reserve"),
        ("compensating_reserve", "undone", "compensated"),
    )
    assert set(result.path) <= spec_of(Shop).transitions


def test_first_step_failing_ends_compensated_with_nothing_to_undo(drive) -> None:
    log = Log()
    result = drive(Orchestrator(), make_saga(log, fail={"reserve": -1})())
    assert result.status is SagaStatus.COMPENSATED
    assert calls(log) == ["reserve"]
    assert kinds(result) == ["SagaStarted", "StepStarted", "StepFailed", "SagaCompensated"]


def test_timed_out_step_is_compensated_too_and_late_result_is_dropped(drive) -> None:
    release = threading.Event()
    log = Log()

    @saga
    class Slow:
        late_field: str = "untouched"

        @step
        def book(self, ctx):
            log.append("book")

        @book.compensate
        def unbook(self, ctx):
            log.append("unbook")

        @step(timeout=0.05)
        def pay(self, ctx):
            log.append("pay")
            release.wait(5)
            ctx.emit("late event")
            log.append("pay returned late")

        @pay.compensate
        def refund(self, ctx):
            log.append("refund")

    orchestrator = Orchestrator()
    result = drive(orchestrator, Slow(), "slow-1")
    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepTimeout) and result.error.timeout == 0.05
    assert log[:4] == ["book", "pay", "refund", "unbook"]  # the timed-out step first
    pay = result.step("pay")
    assert pay.status is StepStatus.TIMED_OUT and pay.timed_out
    assert pay.compensation is CompensationStatus.COMPENSATED
    history = orchestrator.get("slow-1").history
    release.set()
    for _ in range(100):
        if "pay returned late" in log:
            break
        time.sleep(0.01)
    assert "pay returned late" in log
    after = orchestrator.get("slow-1")
    assert after.events == () and after.history == history and after.status is result.status


def test_saga_deadline_abandons_running_step_and_compensates(drive) -> None:
    log = Log()
    release = threading.Event()

    @saga(deadline=0.1, compensation_deadline=10)
    class Deadline:
        @step
        def a(self, ctx):
            log.append("a")

        @a.compensate
        def ua(self, ctx):
            log.append(("ua", ctx.deadline is not None))

        @step  # its own timeout is 30 s: the saga deadline cuts it short
        def b(self, ctx):
            log.append(("b", round(ctx.timeout, 1)))
            release.wait(5)

        @b.compensate
        def ub(self, ctx):
            log.append("ub")

        @step
        def c(self, ctx):
            log.append("c")

        @c.compensate
        def uc(self, ctx): ...

    try:
        result = drive(Orchestrator(), Deadline())
    finally:
        release.set()
    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, SagaDeadlineExceeded) and result.error.step == "b"
    assert log == ["a", ("b", 0.1), "ub", ("ua", True)]
    assert result.step("c").status is StepStatus.PENDING


def test_deadline_passing_before_a_retry_starts_compensation(drive) -> None:
    log = Log()
    clock = VirtualClock()

    @saga(deadline=5.0)
    class Patient:
        @step
        def a(self, ctx):
            log.append("a")

        @a.compensate
        def ua(self, ctx):
            log.append("ua")

        @step(retry=Retry(attempts=5, backoff=2.0, multiplier=2, jitter=0))
        def b(self, ctx):
            log.append("b")
            raise ConnectionError("down")

        @b.compensate
        def ub(self, ctx):
            log.append("ub")

    result = drive(Orchestrator(clock=clock), Patient())
    # attempts at t=0, t=2; the next would be at t=6, past the deadline at t=5
    assert log == ["a", "b", "b", "ua"]
    assert clock.sleeps == [2.0]
    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, SagaDeadlineExceeded) and result.error.step == "b"
    assert isinstance(result.error.__cause__, ConnectionError)


def test_a_step_retrying_into_the_deadline_ends_with_saga_deadline_exceeded(drive) -> None:
    # As a user tried it: 10 attempts allowed, but the saga's 0.3 s run out after 3.
    tries: list[int] = []

    @saga(deadline=0.3)
    class Hurried:
        @step(retry=Retry(attempts=10, backoff=0.05, jitter=0.0))
        def call_partner(self, ctx):
            tries.append(ctx.attempt)
            raise ConnectionError("partner down")

        @call_partner.compensate
        def undo(self, ctx): ...

    result = drive(Orchestrator(clock=VirtualClock()), Hurried())
    assert tries == [1, 2, 3]  # delays 0.05, 0.1; the next (0.2) would end past 0.3
    assert result.status is SagaStatus.COMPENSATED
    error = result.error
    assert isinstance(error, SagaDeadlineExceeded)
    assert str(error) == "saga deadline of 0.3s passed during step 'call_partner'"
    assert isinstance(error.__cause__, ConnectionError)
    assert result.step("call_partner").error == "ConnectionError: partner down"
    with pytest.raises(SagaDeadlineExceeded):
        result.raise_for_status()


def test_a_compensation_retrying_into_its_deadline_says_so(drive) -> None:
    @saga(compensation_deadline=0.3)
    class Stubborn:
        @step
        def a(self, ctx): ...

        @a.compensate(retry=Retry(attempts=10, backoff=0.05, jitter=0.0))
        def ua(self, ctx):
            raise ConnectionError("ledger down")

        @step(pivot=True)
        def b(self, ctx):
            raise ValueError("no")

    result = drive(Orchestrator(clock=VirtualClock()), Stubborn())
    assert result.status is SagaStatus.FAILED
    assert result.step("a").compensation_error == (
        "ConnectionError: ledger down (no retry: the compensation deadline would pass first)"
    )


def test_compensation_retried_then_failing_for_good_is_recorded_others_still_run(drive) -> None:
    log = Log()
    clock = VirtualClock()
    Shop = make_saga(log, fail={"ship": -1, "refund": -1, "release": 2})
    result = drive(Orchestrator(clock=clock), Shop(), "s-4")
    assert result.status is SagaStatus.FAILED
    assert calls(log)[3:] == ["ship", "refund", "refund", "refund", "release", "release", "release"]
    err = result.error
    assert isinstance(err, CompensationError)
    assert err.failures == {"charge": "ConnectionError: refund unavailable"}
    assert isinstance(err.reason, StepError) and err.reason.step == "ship"
    assert "undo by hand" in str(err) and "charge" in str(err)
    assert result.step("charge").compensation is CompensationStatus.FAILED
    assert result.step("charge").compensation_attempts == 3
    assert result.step("reserve").compensation is CompensationStatus.COMPENSATED
    assert clock.sleeps == [0.5, 1.0, 0.5, 1.0]  # compensation backoff, jitter 0
    assert kinds(result)[-1] == "SagaFailed"
    with pytest.raises(CompensationError):
        result.raise_for_status()


def test_retriable_step_after_pivot_failing_for_good_compensates_nothing(drive) -> None:
    log = Log()
    clock = VirtualClock()
    result = drive(Orchestrator(clock=clock), make_saga(log, fail={"notify": -1})())
    assert result.status is SagaStatus.FAILED
    assert calls(log) == ["reserve", "check", "charge", "ship", "notify", "notify", "notify"]
    assert isinstance(result.error, StepError) and result.error.step == "notify"
    assert all(s.compensation is CompensationStatus.NOT_NEEDED for s in result.steps)
    assert clock.sleeps == [1.0, 2.0]


def test_retriable_step_recovers_by_retrying(drive) -> None:
    log = Log()
    result = drive(Orchestrator(clock=VirtualClock()), make_saga(log, fail={"notify": 2})())
    assert result.status is SagaStatus.COMPLETED
    assert result.step("notify").attempts == 3


def test_conditional_step_skipped_is_recorded_and_never_compensated(drive) -> None:
    log = Log()

    @saga
    class Cond:
        big: bool = False

        @step
        def a(self, ctx):
            log.append("a")

        @a.compensate
        def ua(self, ctx):
            log.append("ua")

        @step(when=lambda s: s.big)
        def approve(self, ctx):
            log.append("approve")

        @approve.compensate
        def unapprove(self, ctx):
            log.append("unapprove")

        @step
        def c(self, ctx):
            log.append("c")
            raise ValueError("no")

        @c.compensate
        def uc(self, ctx): ...

    result = drive(Orchestrator(), Cond(big=False))
    assert log == ["a", "c", "ua"]
    assert result.step("approve").status is StepStatus.SKIPPED
    assert result.step("approve").compensation is CompensationStatus.NOT_NEEDED
    assert "StepSkipped" in kinds(result)
    log.clear()
    result = drive(Orchestrator(), Cond(big=True))
    assert log == ["a", "approve", "c", "unapprove", "ua"]


def test_guard_that_raises_fails_its_step(drive) -> None:
    def broken(s):
        raise RuntimeError("guard broke")

    @saga
    class G:
        @step(readonly=True, when=broken)
        def a(self, ctx): ...

    result = drive(Orchestrator(), G())
    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error.cause, RuntimeError)


def test_same_saga_id_after_finish_returns_stored_result_without_running(drive) -> None:
    log = Log()
    orchestrator = Orchestrator()
    Shop = make_saga(log)
    first = drive(orchestrator, Shop(), "dup")
    second = drive(orchestrator, Shop(order="other"), "dup")
    assert calls(log).count("reserve") == 1
    assert second.status is first.status and second.events == first.events


def test_same_saga_id_while_running_raises_already_executing() -> None:
    orchestrator = Orchestrator()
    seen: list[BaseException] = []

    @saga
    class Inner:
        @step(readonly=True, timeout=None)
        def a(self, ctx):
            try:
                orchestrator.run(Inner(), ctx.saga_id)
            except AlreadyExecuting as exc:
                seen.append(exc)

    assert orchestrator.run(Inner(), "busy").status is SagaStatus.COMPLETED
    assert len(seen) == 1 and seen[0].saga_id == "busy" and "RUNNING" in str(seen[0])


def test_saga_id_of_another_saga_type_is_refused() -> None:
    orchestrator = Orchestrator()
    orchestrator.run(make_saga(Log())(), "shared")

    @saga
    class Else:
        @step(readonly=True)
        def a(self, ctx): ...

    with pytest.raises(Exception, match="belongs to a 'shop' saga, not 'Else'"):
        orchestrator.run(Else(), "shared")


def test_idempotency_key_is_stable_per_saga_step_and_direction(drive) -> None:
    log = Log()
    Shop = make_saga(log, fail={"ship": -1, "refund": 1})
    drive(Orchestrator(clock=VirtualClock()), Shop(), "key")
    keys = {(name, key) for name, _, key in log}
    assert keys == {
        ("reserve", "key:reserve:forward"),
        ("check", "key:check:forward"),
        ("charge", "key:charge:forward"),
        ("ship", "key:ship:forward"),
        ("refund", "key:charge:compensate"),
        ("release", "key:reserve:compensate"),
    }


def test_listeners_get_every_event_and_one_that_raises_is_logged(drive, caplog) -> None:
    got: list[str] = []

    def bad(event):
        raise RuntimeError("listener bug")

    orchestrator = Orchestrator(listeners=[bad, lambda e: got.append(type(e).__name__)])
    with caplog.at_level(logging.ERROR, logger="sagaflow"):
        result = drive(orchestrator, make_saga(Log())())
    assert result.status is SagaStatus.COMPLETED
    assert got == kinds(result)
    assert "listener" in caplog.text and "listener bug" in caplog.text


def test_domain_events_of_failed_attempts_are_dropped(drive) -> None:
    attempts = []

    @saga
    class E:
        @step(retry=Retry(attempts=2, backoff=0))
        def a(self, ctx):
            ctx.emit(f"attempt {ctx.attempt}")
            attempts.append(ctx.attempt)
            if ctx.attempt == 1:
                raise ConnectionError

        @a.compensate
        def ua(self, ctx): ...

    result = drive(Orchestrator(), E())
    assert result.events == ("attempt 2",)


def test_a_step_leaving_a_field_that_cannot_be_stored_is_undone_and_the_saga_ends(
    drive, tmp_path
) -> None:
    # As a user met it: the step took effect, then the save failed; the saga stayed
    # RUNNING for ever ("already executing" on a new run, recover failing the same way).
    undone: list[tuple[str, str, object]] = []

    @saga(name="leaky")
    class Leaky:
        handle: object = None

        @step
        def reserve(self, ctx): ...

        @reserve.compensate
        def release(self, ctx):
            undone.append(("release", ctx.forward_key, self.handle))

        @step
        def connect(self, ctx):
            self.handle = threading.Lock()  # not JSON: the save after this step fails

        @connect.compensate
        def disconnect(self, ctx):
            undone.append(("disconnect", ctx.forward_key, self.handle))

        @step(pivot=True)
        def ship(self, ctx): ...

    path = tmp_path / "sagas.db"
    with Orchestrator(f"sqlite:///{path}") as orchestrator:
        result = drive(orchestrator, Leaky(), "x")
        assert result.status is SagaStatus.COMPENSATED
        assert isinstance(result.error, StepError) and result.error.step == "connect"
        assert "field 'handle'" in str(result.error) and "outcome is unknown" in str(result.error)
        # its outcome is unknown: undone too, newest first; the fields as before the step
        assert undone == [("disconnect", "x:connect:forward", None),
                          ("release", "x:reserve:forward", None)]
        connect = result.step("connect")
        assert connect.status is StepStatus.FAILED and connect.timed_out
        assert connect.compensation is CompensationStatus.COMPENSATED
        assert drive(orchestrator, Leaky(), "x").status is SagaStatus.COMPENSATED  # no rerun
    with Orchestrator(f"sqlite:///{path}", sagas=[Leaky]) as reopened:
        stored = reopened.get("x")
        assert stored is not None and stored.status is SagaStatus.COMPENSATED
        assert reopened.recover().resumed == {}


def test_a_shorter_timeout_after_a_longer_one_is_watched_for_in_sync_runs() -> None:
    # The watcher used to sleep until a's deadline (an hour) while b overran.
    release = threading.Event()

    @saga
    class Mixed:
        @step(timeout=3600)
        def a(self, ctx):
            time.sleep(0.2)  # the watcher looks while a is in flight

        @a.compensate
        def ua(self, ctx): ...

        @step(timeout=0.05)
        def b(self, ctx):
            release.wait(60)

        @b.compensate
        def ub(self, ctx): ...

    outcome: list[object] = []
    runner = threading.Thread(target=lambda: outcome.append(Orchestrator().run(Mixed())))
    runner.start()
    runner.join(timeout=30)
    release.set()
    assert outcome, "the sync run did not time b out"
    result = outcome[0]
    assert isinstance(result.error, StepTimeout) and result.error.step == "b"


def test_invalid_transition_raises_from_the_machine() -> None:
    Shop = make_saga(Log())
    spec = spec_of(Shop)
    orchestrator = Orchestrator()
    record = orchestrator.store.load(orchestrator.run(Shop(), "t").saga_id)
    with pytest.raises(
        InvalidTransition, match="no transition 'advance' from 'completed' to 'ship'"
    ):
        transition(spec, record, "advance", "ship")
    # a record forced into a state the run cannot leave that way
    record.state = "reserve"
    with pytest.raises(InvalidTransition):
        transition(spec, record, "advance", "notify")


def test_invalid_transition_during_a_run_surfaces() -> None:
    log = Log()

    @saga
    class Corrupt:
        @step(timeout=None)
        def a(self, ctx):
            # something (a bug, a bad recovery) puts the record where it cannot advance
            orchestrator.store.load(ctx.saga_id).state = "completed"

        @a.compensate
        def ua(self, ctx):
            log.append("ua")

        @step(readonly=True)
        def b(self, ctx): ...

    orchestrator = Orchestrator()
    with pytest.raises(InvalidTransition, match="from 'completed' to 'b'"):
        orchestrator.run(Corrupt(), "c")


def test_monitoring_get_running_history() -> None:
    orchestrator = Orchestrator()
    gate = threading.Event()
    inside = threading.Event()

    @saga
    class Wait:
        @step(readonly=True, timeout=None)
        def a(self, ctx):
            inside.set()
            gate.wait(5)

        @step(readonly=True)
        def b(self, ctx): ...

    worker = threading.Thread(target=orchestrator.run, args=(Wait(), "w"))
    worker.start()
    inside.wait(5)
    snap = orchestrator.get("w")
    assert snap.status is SagaStatus.RUNNING and snap.steps_executed == 0
    assert snap.total_steps == 2 and snap.updated_at >= snap.created_at
    assert [r.saga_id for r in orchestrator.running()] == ["w"]
    assert orchestrator.history() == []
    gate.set()
    worker.join(5)
    assert orchestrator.running() == []
    done = orchestrator.history()
    assert [r.saga_id for r in done] == ["w"] and done[0].steps_executed == 2
    assert orchestrator.get("missing") is None


def test_keyboard_interrupt_in_a_step_is_never_swallowed() -> None:
    @saga
    class K:
        @step(readonly=True)
        def a(self, ctx):
            raise KeyboardInterrupt

    orchestrator = Orchestrator()
    with pytest.raises(KeyboardInterrupt):
        orchestrator.run(K(), "k")
    assert orchestrator.get("k").status is SagaStatus.RUNNING  # left for recovery


def test_compensation_timeout_is_retried() -> None:
    log = Log()

    @saga
    class CT:
        @step
        def a(self, ctx):
            log.append("a")

        @a.compensate(timeout=0.05, retry=Retry(attempts=2, backoff=0))
        def ua(self, ctx):
            log.append(("ua", ctx.attempt, ctx.direction))
            if ctx.attempt == 1:
                time.sleep(0.3)

        @step(readonly=True)
        def b(self, ctx):
            raise ValueError

    result = Orchestrator().run(CT())
    assert result.status is SagaStatus.COMPENSATED
    assert log == ["a", ("ua", 1, Direction.COMPENSATE), ("ua", 2, Direction.COMPENSATE)]


def test_run_refuses_async_sagas_and_async_listeners() -> None:
    @saga
    class A:
        @step(readonly=True)
        async def a(self, ctx): ...

    with pytest.raises(TypeError, match=r"async steps or compensations \(a\).*arun"):
        Orchestrator().run(A())

    async def listener(event): ...

    @saga
    class S:
        @step(readonly=True)
        def a(self, ctx): ...

    with pytest.raises(TypeError, match="async listeners"):
        Orchestrator(listeners=[listener]).run(S())
    with pytest.raises(TypeError, match="not a saga class"):
        Orchestrator().run(object())
    with pytest.raises(ValueError, match="saga_id must be a non-empty string"):
        Orchestrator().run(S(), "")


def test_an_abandoned_call_writing_late_does_not_touch_the_record(drive) -> None:
    release = threading.Event()
    wrote = threading.Event()

    @saga
    class Late:
        note: str = "before"

        @step(timeout=0.05)
        def slow(self, ctx):
            release.wait(5)
            self.note = "written late by the abandoned call"
            wrote.set()

        @slow.compensate
        def undo(self, ctx):
            assert ctx.forward_key == f"{ctx.saga_id}:slow:forward"

    orchestrator = Orchestrator()
    result = drive(orchestrator, Late(), "late")
    release.set()
    assert wrote.wait(5)
    assert result.status is SagaStatus.COMPENSATED
    assert orchestrator.get("late").data.note == "before"


def test_deadline_passing_while_a_retry_waits_fails_the_step_and_compensates() -> None:
    # As after a crash: the run resumes past its deadline with a retry still pending.
    class Oversleeping(VirtualClock):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds + 20)

    log = Log()

    @saga(deadline=10.0)
    class Waiting:
        @step
        def a(self, ctx):
            log.append("a")

        @a.compensate
        def ua(self, ctx):
            log.append("ua")

        @step(retry=Retry(attempts=3, backoff=1.0, jitter=0))
        def b(self, ctx):
            log.append("b")
            raise ConnectionError("down")

        @b.compensate
        def ub(self, ctx):
            log.append("ub")

    result = Orchestrator(clock=Oversleeping()).run(Waiting())
    assert log == ["a", "b", "ua"]
    b = result.step("b")
    assert b.status is StepStatus.FAILED and b.error == "ConnectionError: down"
    assert isinstance(result.error, SagaDeadlineExceeded)
    assert [type(e).__name__ for e in result.history][-5:] == [
        "StepRetrying", "StepFailed", "CompensationStarted", "CompensationCompleted",
        "SagaCompensated",
    ]


def test_a_pivot_that_times_out_ends_failed_for_an_operator(drive) -> None:
    # It may have taken effect: undoing what came before would be as wrong as going on.
    log = Log()
    release = threading.Event()

    @saga(name="pivoting")
    class Pivoting:
        @step
        def a(self, ctx):
            log.append("a")

        @a.compensate
        def ua(self, ctx):
            log.append("ua")

        @step(pivot=True, timeout=0.05)
        def commit(self, ctx):
            log.append(("commit", ctx.attempt))
            if ctx.attempt == 1:
                release.wait(5)

    orchestrator = Orchestrator()
    result = drive(orchestrator, Pivoting(), "pv")
    release.set()
    assert result.status is SagaStatus.FAILED and isinstance(result.error, StepTimeout)
    assert log == ["a", ("commit", 1)]  # nothing compensated
    assert result.step("a").compensation is CompensationStatus.NOT_NEEDED
    again = orchestrator.retry("pv", note="the ledger shows no commit: run it again")
    assert again.status is SagaStatus.COMPLETED
    assert log == ["a", ("commit", 1), ("commit", 1)]  # a fresh budget, the same key


def test_step_context_tells_the_call_its_limits(drive) -> None:
    seen = {}
    clock = VirtualClock()

    @saga(deadline=100.0)
    class Ctx:
        @step(timeout=5.0)
        def a(self, ctx):
            seen["forward"] = (ctx.saga_name, ctx.step, ctx.direction, ctx.attempt, ctx.timeout)
            seen["deadline"] = ctx.deadline - clock.now()
            seen["left"] = ctx.time_left
            clock.advance(2.0)
            seen["left later"] = ctx.time_left
            assert "Ctx" in repr(ctx) or "a" in repr(ctx)

        @a.compensate
        def ua(self, ctx): ...

    result = drive(Orchestrator(clock=clock), Ctx(), "ctx")
    assert result.ok
    assert seen["forward"] == ("Ctx", "a", Direction.FORWARD, 1, 5.0)
    assert seen["deadline"] == 100.0
    assert seen["left"] == 5.0 and seen["left later"] == 3.0


def test_the_sagaflow_logger_is_silent_unless_configured() -> None:
    logger = logging.getLogger("sagaflow")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)


def test_no_log_record_is_built_for_sagaflow_own_null_handler(caplog) -> None:
    # Warning events pass the logger's level check by default; only a real handler
    # makes a record worth building.
    built: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args, **kwargs):
        record = factory(*args, **kwargs)
        built.append(record)
        return record

    Shop = make_saga(Log(), fail={"ship": -1})
    logging.setLogRecordFactory(counting)
    try:
        root_handlers = logging.getLogger().handlers
        logging.getLogger().handlers = []  # pytest's own ones: as in a plain process
        try:
            assert Orchestrator().run(Shop()).status is SagaStatus.COMPENSATED
        finally:
            logging.getLogger().handlers = root_handlers
        assert [r for r in built if r.name == "sagaflow"] == []
        with caplog.at_level(logging.WARNING, logger="sagaflow"):
            caplog.handler.setLevel(logging.WARNING)
            Orchestrator().run(Shop())
        assert any("SagaCompensated" in r.getMessage() for r in caplog.records)
    finally:
        logging.setLogRecordFactory(factory)

"""Operator verbs: cancel, retry, resolve; and how stored sagas find their class."""

from __future__ import annotations

import threading

import pytest

from sagaflow import (
    CompensationStatus,
    CorruptRecord,
    OperatorError,
    Orchestrator,
    Retry,
    SagaCancelled,
    SagaDefinitionChanged,
    SagaNotFound,
    SagaStatus,
    StepError,
    StepStatus,
    UnknownSaga,
    events,
    saga,
    step,
)
from sagaflow.testing import VirtualClock

NO_RETRY = Retry(attempts=1)


def make(log: list[str], broken: set[str]):
    @saga(name="ops")
    class Ops:
        @step
        def a(self, ctx):
            log.append("a")

        @a.compensate(retry=NO_RETRY)
        def ua(self, ctx):
            log.append("ua")
            if "ua" in broken:
                raise ConnectionError("ua down")

        @step
        def b(self, ctx):
            log.append("b")
            if "b" in broken:
                raise ValueError("b fails")

        @b.compensate
        def ub(self, ctx): ...

        @step(pivot=True)
        def p(self, ctx):
            log.append("p")

        @step(retriable=True, retry=NO_RETRY)
        def r(self, ctx):
            log.append("r")
            if "r" in broken:
                raise ConnectionError("r down")

    return Ops


def actions(result) -> list[tuple[str, str | None]]:
    return [(e.action, e.note) for e in result.history if isinstance(e, events.OperatorAction)]


def test_retry_failed_compensations_then_compensated() -> None:
    log: list[str] = []
    broken = {"b", "ua"}
    orchestrator = Orchestrator(clock=VirtualClock())
    first = orchestrator.run(make(log, broken)(), "x")
    assert first.status is SagaStatus.FAILED and first.error.failures.keys() == {"a"}
    broken.discard("ua")  # the operator fixed the participant
    again = orchestrator.retry("x", note="gateway back")
    assert again.status is SagaStatus.COMPENSATED
    assert log == ["a", "b", "ua", "ua"]
    assert isinstance(again.error, StepError) and again.error.step == "b"
    assert again.step("a").compensation is CompensationStatus.COMPENSATED
    assert actions(again) == [("retry", "gateway back")]


def test_retry_failed_retriable_step_then_completed() -> None:
    log: list[str] = []
    broken = {"r"}
    orchestrator = Orchestrator()
    assert orchestrator.run(make(log, broken)(), "y").status is SagaStatus.FAILED
    broken.clear()
    again = orchestrator.retry("y")
    assert again.status is SagaStatus.COMPLETED and again.error is None
    assert log == ["a", "b", "p", "r", "r"]
    assert again.step("r").status is StepStatus.COMPLETED


def test_resolve_records_the_note_and_keeps_failed() -> None:
    orchestrator = Orchestrator()
    orchestrator.run(make([], {"r"})(), "z")
    resolved = orchestrator.resolve("z", note="sent the email by hand")
    assert resolved.status is SagaStatus.FAILED
    assert resolved.resolution == "sent the email by hand"
    assert actions(resolved) == [("resolve", "sent the email by hand")]
    with pytest.raises(OperatorError, match="needs a note"):
        orchestrator.resolve("z", note=" ")


def test_operator_verbs_refuse_the_wrong_status_and_unknown_ids() -> None:
    orchestrator = Orchestrator()
    orchestrator.run(make([], set())(), "done")
    with pytest.raises(OperatorError, match="only a FAILED saga can be retried"):
        orchestrator.retry("done")
    with pytest.raises(OperatorError, match="only a FAILED saga can be resolved"):
        orchestrator.resolve("done", "x")
    with pytest.raises(OperatorError, match="only a RUNNING saga can be cancelled"):
        orchestrator.cancel("done")
    with pytest.raises(SagaNotFound, match="no saga 'nope' in the store"):
        orchestrator.retry("nope")


def test_cancel_a_live_run_compensates_after_the_step_in_flight() -> None:
    log: list[str] = []
    inside, go_on = threading.Event(), threading.Event()

    @saga
    class Long:
        @step
        def a(self, ctx):
            log.append("a")

        @a.compensate
        def ua(self, ctx):
            log.append("ua")

        @step(timeout=None)
        def b(self, ctx):
            inside.set()
            go_on.wait(5)
            log.append("b")

        @b.compensate
        def ub(self, ctx):
            log.append("ub")

        @step
        def c(self, ctx):
            log.append("c")

        @c.compensate
        def uc(self, ctx): ...

    orchestrator = Orchestrator()
    results = []
    worker = threading.Thread(target=lambda: results.append(orchestrator.run(Long(), "L")))
    worker.start()
    inside.wait(5)
    snap = orchestrator.cancel("L", note="customer changed their mind")
    assert snap.status is SagaStatus.RUNNING
    go_on.set()
    worker.join(5)
    (result,) = results
    assert log == ["a", "b", "ub", "ua"]
    assert result.status is SagaStatus.COMPENSATED and isinstance(result.error, SagaCancelled)
    assert actions(result) == [("cancel", "customer changed their mind")]


def test_cancel_a_saga_no_process_runs_compensates_the_step_in_flight_too() -> None:
    log: list[str] = []

    @saga(name="crashy")
    class Crashy:
        crash: bool = True

        @step
        def a(self, ctx):
            log.append("a")

        @a.compensate
        def ua(self, ctx):
            log.append("ua")

        @step
        def b(self, ctx):
            log.append("b")
            if self.crash:
                raise KeyboardInterrupt  # the process dies mid-step

        @b.compensate
        def ub(self, ctx):
            log.append("ub")

    orchestrator = Orchestrator()
    with pytest.raises(KeyboardInterrupt):
        orchestrator.run(Crashy(), "k")
    assert orchestrator.get("k").status is SagaStatus.RUNNING
    result = orchestrator.cancel("k")
    assert log == ["a", "b", "ub", "ua"]
    assert result.status is SagaStatus.COMPENSATED
    assert result.step("b").timed_out and result.step("b").status is StepStatus.TIMED_OUT


def test_stored_saga_of_unknown_class_or_changed_definition_is_left_alone() -> None:
    orchestrator = Orchestrator()
    orchestrator.run(make([], {"r"})(), "f")
    record = orchestrator.store.load("f")

    stranger = Orchestrator(store=orchestrator.store)
    with pytest.raises(UnknownSaga, match="pass its class in Orchestrator"):
        stranger.retry("f")

    record.fingerprint = "0123456789abcdef"
    with pytest.raises(SagaDefinitionChanged, match="left untouched"):
        orchestrator.retry("f")
    assert record.status is SagaStatus.FAILED
    assert isinstance(record.history[-1], events.SagaFailed)

    def migrate(old, spec):
        old.fingerprint = spec.fingerprint
        return old

    # a migration maps the old definition onto the current one
    migrating = Orchestrator(store=orchestrator.store, migrations={"0123456789abcdef": migrate})
    migrating.register(make([], set()))
    assert migrating.retry("f").status is SagaStatus.COMPLETED


def test_a_damaged_saga_is_quarantined_by_a_verb_and_a_verb_that_goes_through_lifts_it(
    tmp_path,
) -> None:
    import sqlite3

    path = tmp_path / "sagas.db"
    Ops = make([], {"r"})
    with Orchestrator(store=f"sqlite:///{path}") as first:
        first.run(Ops(), "hurt")
        first.run(Ops(), "fine")
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE sagaflow_sagas SET cursor = 99 WHERE saga_id = 'hurt'")
    with Orchestrator(store=f"sqlite:///{path}", sagas=[Ops]) as second:
        with pytest.raises(CorruptRecord, match="hurt"):
            second.retry("hurt", note="try it")
        assert [(q.saga_id, "CorruptRecord" in q.reason) for q in second.quarantined()] == [
            ("hurt", True)
        ]
        # a decodable saga set aside (by hand here) is released by a verb that goes through
        second.store.quarantine("fine", "looked odd")
        assert second.resolve("fine", note="sent by hand").resolution == "sent by hand"
        assert [q.saga_id for q in second.quarantined()] == ["hurt"]
        # a verb that does not fit the saga's status leaves it set aside
        second.store.quarantine("fine", "looked odd")
        with pytest.raises(OperatorError):
            second.cancel("fine")
        assert {q.saga_id for q in second.quarantined()} == {"hurt", "fine"}
        assert second.unquarantine("fine") and not second.unquarantine("fine")


def test_a_sync_verb_on_an_async_saga_is_a_usage_error_not_a_quarantine() -> None:
    @saga
    class Later:
        @step
        async def a(self, ctx):
            raise ValueError("no")

        @a.compensate
        async def ua(self, ctx):
            raise ValueError("still no")

    import asyncio

    orchestrator = Orchestrator()
    asyncio.run(orchestrator.arun(Later(), "l"))
    with pytest.raises(TypeError, match="async steps"):
        orchestrator.retry("l")
    assert orchestrator.quarantined() == []


def test_retry_walks_through_compensations_already_done() -> None:
    log: list[str] = []
    stuck = {"c", "a"}

    @saga
    class Chain:
        @step
        def a(self, ctx): ...

        @a.compensate(retry=NO_RETRY)
        def ua(self, ctx):
            log.append("ua")
            if "a" in stuck:
                raise ConnectionError("a stuck")

        @step
        def b(self, ctx): ...

        @b.compensate(retry=NO_RETRY)
        def ub(self, ctx):
            log.append("ub")

        @step
        def c(self, ctx): ...

        @c.compensate(retry=NO_RETRY)
        def uc(self, ctx):
            log.append("uc")
            if "c" in stuck:
                raise ConnectionError("c stuck")

        @step(readonly=True)
        def d(self, ctx):
            raise ValueError("d fails")

    orchestrator = Orchestrator()
    first = orchestrator.run(Chain(), "chain")
    assert first.status is SagaStatus.FAILED and set(first.error.failures) == {"a", "c"}
    stuck.clear()
    again = orchestrator.retry("chain")
    assert again.status is SagaStatus.COMPENSATED
    assert log == ["uc", "ub", "ua", "uc", "ua"]  # b, undone already, is not run again
    assert [s.compensation for s in again.steps[:3]] == [CompensationStatus.COMPENSATED] * 3


def test_cancel_while_a_retry_waits_fails_that_step_and_compensates() -> None:
    log: list[str] = []
    orchestrator: Orchestrator

    class CancelWhileSleeping(VirtualClock):
        def sleep(self, seconds: float) -> None:
            orchestrator.cancel("w", note="stop retrying")
            super().sleep(seconds)

    @saga
    class Waits:
        @step
        def a(self, ctx):
            log.append("a")

        @a.compensate
        def ua(self, ctx):
            log.append("ua")

        @step(retry=Retry(attempts=5, backoff=1.0))
        def b(self, ctx):
            log.append("b")
            raise ConnectionError("down")

        @b.compensate
        def ub(self, ctx):
            log.append("ub")

    orchestrator = Orchestrator(clock=CancelWhileSleeping())
    result = orchestrator.run(Waits(), "w")
    assert log == ["a", "b", "ua"]  # b never took effect: only a is undone
    assert result.step("b").status is StepStatus.FAILED
    assert isinstance(result.error, SagaCancelled) and result.error.step == "b"
    assert actions(result) == [("cancel", "stop retrying")]


def test_listeners_hear_each_event_once_across_an_operator_retry() -> None:
    heard: list[str] = []
    broken = {"r"}
    orchestrator = Orchestrator(listeners=[lambda e: heard.append(type(e).__name__)])
    orchestrator.run(make([], broken)(), "once")
    broken.clear()
    result = orchestrator.retry("once")
    assert heard == [type(e).__name__ for e in result.history]


def test_async_operator_verbs() -> None:
    import asyncio

    stuck = {"ua"}

    @saga
    class AsyncOps:
        @step
        async def a(self, ctx): ...

        @a.compensate(retry=NO_RETRY)
        async def ua(self, ctx):
            if "ua" in stuck:
                raise ConnectionError("down")

        @step(readonly=True)
        async def b(self, ctx):
            raise ValueError("b fails")

    async def main():
        orchestrator = Orchestrator()
        first = await orchestrator.arun(AsyncOps(), "as")
        assert first.status is SagaStatus.FAILED
        with pytest.raises(TypeError, match="arun"):
            orchestrator.retry("as")  # sync verbs cannot run async steps...
        assert orchestrator.get("as").status is SagaStatus.FAILED  # ...and change nothing
        stuck.clear()
        return await orchestrator.aretry("as", note="ledger back")

    assert asyncio.run(main()).status is SagaStatus.COMPENSATED

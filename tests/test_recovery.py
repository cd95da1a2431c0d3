"""recover(): unfinished sagas resume from their last checkpoint (in-process crashes;
the real-process SIGKILL tests are in tests/crash/)."""

from __future__ import annotations

import asyncio

import pytest

from sagaflow import (
    CorruptRecord,
    Orchestrator,
    Retry,
    SagaDefinitionChanged,
    SagaQuarantined,
    SagaStatus,
    UnknownSaga,
    saga,
    step,
)
from sagaflow.stores import SQLiteStore

calls: list[tuple[str, str]] = []
crash_in: set[str] = set()


@saga(name="resumable")
class Resumable:
    order: str = "o"

    @step
    def reserve(self, ctx):
        calls.append(("reserve", ctx.idempotency_key))

    @reserve.compensate
    def release(self, ctx):
        calls.append(("release", ctx.idempotency_key))

    @step
    def charge(self, ctx):
        calls.append(("charge", ctx.idempotency_key))
        if "charge" in crash_in:
            crash_in.discard("charge")
            raise KeyboardInterrupt  # the process dies while the step runs

    @charge.compensate
    def refund(self, ctx):
        calls.append(("refund", ctx.idempotency_key))

    @step(pivot=True, retry=Retry(attempts=1))
    def ship(self, ctx):
        calls.append(("ship", ctx.idempotency_key))


@pytest.fixture(autouse=True)
def _clean():
    calls.clear()
    crash_in.clear()


def test_a_step_in_flight_at_the_crash_runs_again_with_the_same_key(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    crash_in.add("charge")
    with Orchestrator(store=url) as first, pytest.raises(KeyboardInterrupt):
        first.run(Resumable(), "r1")

    with Orchestrator(store=url, sagas=[Resumable]) as second:
        assert second.get("r1").status is SagaStatus.RUNNING
        report = second.recover()
        assert report.resumed == {"r1": SagaStatus.COMPLETED} and report.skipped == {}
        assert calls == [
            ("reserve", "r1:reserve:forward"),
            ("charge", "r1:charge:forward"),
            ("charge", "r1:charge:forward"),
            ("ship", "r1:ship:forward"),
        ]
        assert second.get("r1").step("charge").attempts == 2
        assert second.recover().resumed == {}  # nothing left to do


def test_async_recovery_resumes_many_at_once(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    with Orchestrator(store=url) as first:
        for i in range(20):
            crash_in.add("charge")
            with pytest.raises(KeyboardInterrupt):
                first.run(Resumable(f"o{i}"), f"s{i}")
    with Orchestrator(store=url, sagas=[Resumable]) as second:
        report = asyncio.run(second.arecover(concurrency=8))
    assert report.resumed == {f"s{i}": SagaStatus.COMPLETED for i in range(20)}


def test_unknown_changed_and_corrupt_sagas_are_reported_and_never_stop_the_others(
    tmp_path,
) -> None:
    path = tmp_path / "sagas.db"
    with Orchestrator(store=SQLiteStore(path)) as first:
        for sid in ("ok", "changed", "corrupt"):
            crash_in.add("charge")
            with pytest.raises(KeyboardInterrupt):
                first.run(Resumable(), sid)
    import sqlite3

    with sqlite3.connect(path) as raw:
        raw.execute(
            "UPDATE sagaflow_sagas SET fingerprint = 'feedfacefeedface' WHERE saga_id = 'changed'"
        )
        raw.execute("UPDATE sagaflow_sagas SET steps = '{not json' WHERE saga_id = 'corrupt'")

    with Orchestrator(store=SQLiteStore(path)) as stranger:
        report = stranger.recover()
        assert report.resumed == {}
        assert {type(e) for e in report.skipped.values()} == {UnknownSaga}

    with Orchestrator(store=SQLiteStore(path), sagas=[Resumable]) as second:
        report = second.recover()
    assert report.resumed == {"ok": SagaStatus.COMPLETED}
    assert isinstance(report.skipped["changed"], SagaDefinitionChanged)
    assert isinstance(report.skipped["corrupt"], CorruptRecord)
    assert "corrupt" in str(report.skipped["corrupt"])
    assert "not resumed" in report.describe()


@pytest.mark.parametrize(
    "damage",
    [
        "state = 'ship'",  # a state of the machine, but not where the cursor is
        "state = 'nowhere'",
        "state = 'completed'",
        "cursor = -1",  # as an index, the last step: the pivot
        "cursor = 99",
    ],
)
def test_a_damaged_position_is_refused_before_any_participant_call(tmp_path, damage) -> None:
    import sqlite3

    path = tmp_path / "sagas.db"
    with Orchestrator(store=SQLiteStore(path)) as first:
        for sid in ("damaged", "fine"):
            crash_in.add("charge")
            with pytest.raises(KeyboardInterrupt):
                first.run(Resumable(), sid)
    with sqlite3.connect(path) as raw:
        raw.execute(f"UPDATE sagaflow_sagas SET {damage} WHERE saga_id = 'damaged'")
        row = raw.execute("SELECT * FROM sagaflow_sagas WHERE saga_id = 'damaged'").fetchone()
    calls.clear()
    with Orchestrator(store=SQLiteStore(path), sagas=[Resumable]) as second:
        report = second.recover()
        assert report.resumed == {"fine": SagaStatus.COMPLETED}
        assert isinstance(report.skipped["damaged"], CorruptRecord)
        assert all(key.startswith("fine:") for _, key in calls)  # nothing of 'damaged' ran
        # set aside: the next recovery leaves it alone without reading it again
        assert "damaged" in report.quarantined
        again = second.recover()
        assert again.resumed == {} and isinstance(again.skipped["damaged"], SagaQuarantined)
        assert [q.saga_id for q in second.quarantined()] == ["damaged"]
    with sqlite3.connect(path) as raw:
        assert raw.execute(
            "SELECT * FROM sagaflow_sagas WHERE saga_id = 'damaged'"
        ).fetchone() == row


def _crashed(path, *ids: str) -> None:
    with Orchestrator(store=SQLiteStore(path)) as first:
        for sid in ids:
            crash_in.add("charge")
            with pytest.raises(KeyboardInterrupt):
                first.run(Resumable(), sid)


@pytest.mark.parametrize("how", ["recover", "arecover"])
def test_whatever_one_saga_raises_the_others_are_recovered(tmp_path, how) -> None:
    # A migration that blows up (a plain RuntimeError, not a sagaflow error) while one
    # saga is decoded; the engine refusing another one while it is driven.
    import sqlite3

    path = tmp_path / "sagas.db"
    _crashed(path, "a-migrating", "b-fine", "c-misplaced", "d-fine")
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE sagaflow_sagas SET fingerprint = 'feedfacefeedface' "
                    "WHERE saga_id = 'a-migrating'")
        raw.execute("UPDATE sagaflow_sagas SET state = 'ship' WHERE saga_id = 'c-misplaced'")

    def broken_migration(record, spec):
        raise RuntimeError("the migration has a bug")

    calls.clear()
    with Orchestrator(store=SQLiteStore(path), sagas=[Resumable],
                      migrations={"feedfacefeedface": broken_migration}) as second:
        if how == "recover":
            report = second.recover()
        else:
            report = asyncio.run(second.arecover(concurrency=2))
        assert report.resumed == {"b-fine": SagaStatus.COMPLETED,
                                  "d-fine": SagaStatus.COMPLETED}
        migrating = report.skipped["a-migrating"]
        assert isinstance(migrating, SagaQuarantined)
        assert isinstance(migrating.__cause__, RuntimeError)
        assert "the migration has a bug" in report.quarantined["a-migrating"]
        assert isinstance(report.skipped["c-misplaced"], CorruptRecord)
        assert set(report.quarantined) == {"a-migrating", "c-misplaced"}
        assert "2 quarantined" in report.describe()
        assert {key.split(":")[0] for _, key in calls} == {"b-fine", "d-fine"}
        # an operator lifts it once the cause is fixed
        assert second.unquarantine("a-migrating") is True
        assert second.unquarantine("a-migrating") is False
        second.migrations.clear()
        assert isinstance(second.recover().skipped["a-migrating"], SagaDefinitionChanged)


def test_history_and_running_leave_out_a_damaged_row_and_say_so(tmp_path, caplog) -> None:
    import sqlite3

    path = tmp_path / "sagas.db"
    _crashed(path, "run-1", "run-2")
    with Orchestrator(store=SQLiteStore(path)) as first:
        for sid in ("done-1", "done-2", "done-3"):
            first.run(Resumable(), sid)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE sagaflow_sagas SET cursor = 'x' WHERE saga_id IN ('done-2', 'run-1')")
    with (
        Orchestrator(store=SQLiteStore(path), sagas=[Resumable]) as second,
        caplog.at_level("WARNING", logger="sagaflow"),
    ):
        history = second.history()
        running = second.running()
        limited = second.history(limit=2)
    assert [r.saga_id for r in history] == ["done-3", "done-1"]
    assert [r.saga_id for r in limited] == ["done-3", "done-1"]
    assert [r.saga_id for r in running] == ["run-2"]
    left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert any("done-2" in m for m in left_out) and any("run-1" in m for m in left_out)


def test_recovery_is_recorded_and_listeners_hear_only_what_is_new(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    crash_in.add("charge")
    with Orchestrator(store=url) as first, pytest.raises(KeyboardInterrupt):
        first.run(Resumable(), "r2")
    heard: list[object] = []
    with Orchestrator(store=url, sagas=[Resumable], listeners=[heard.append]) as second:
        before = len(second.get("r2").history)
        second.recover()
        history = second.get("r2").history
    assert heard == list(history[before:])
    assert [(e.action, e.note) for e in history if type(e).__name__ == "OperatorAction"] == [
        ("recover", "resumed from its last checkpoint")
    ]


def test_an_attempt_cut_off_by_a_crash_is_undone_if_its_step_then_fails(tmp_path) -> None:
    # The first attempt may have charged before the process died; the rerun fails for
    # good: the charge must be refunded, not left in place.
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    crash_in.add("charge")

    @saga(name="resumable")
    class FailsOnRerun(Resumable):
        @step
        def charge(self, ctx):
            calls.append(("charge", ctx.idempotency_key))
            if "charge" in crash_in:
                crash_in.discard("charge")
                raise KeyboardInterrupt
            raise ValueError("card declined on the rerun")

        @charge.compensate
        def refund(self, ctx):
            calls.append(("refund", ctx.idempotency_key))

    with Orchestrator(store=url) as first, pytest.raises(KeyboardInterrupt):
        first.run(FailsOnRerun(), "r3")
    with Orchestrator(store=url, sagas=[FailsOnRerun]) as second:
        report = second.recover()
        assert report.resumed == {"r3": SagaStatus.COMPENSATED}
        assert second.get("r3").step("charge").timed_out
    assert [c for c, _ in calls] == ["reserve", "charge", "charge", "refund", "release"]

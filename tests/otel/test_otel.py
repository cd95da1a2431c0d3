"""sagaflow.otel: spans per run, step attempt and compensation attempt, the call's context
current where the step runs (so its own spans nest), a resumed run linked to its saga's
context, metrics; and nothing of OpenTelemetry without it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import otel_sagas
import pytest
from conftest import Otel
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode
from otel_sagas import (
    FAIL,
    GATE,
    SEEN,
    AsyncParty,
    AsyncTrip,
    Party,
    StuckTrip,
    Trip,
    UnlimitedTrip,
)

from sagaflow import Direction, Orchestrator, SagaStatus, spec_of
from sagaflow.engine import new_record
from sagaflow.otel import saga_context
from sagaflow.runner import astep_once, step_once
from sagaflow.runtime import Runtime
from sagaflow.stores import MemoryStore
from sagaflow.stores.sqlite import SQLiteStore


def _nested(otel: Otel) -> None:
    """Every span a call made itself is a child of that call's span."""
    calls = {s.context.span_id: s for s in otel.spans() if not s.name.startswith("user ")}
    users = otel.spans("user ")
    assert users and len(users) == len(SEEN)
    for user in users:
        parent = calls[user.parent.span_id]
        assert parent.name.split(" ", 1)[0] in ("step", "compensate"), parent.name
        assert user.context.trace_id == parent.context.trace_id


def test_a_run_is_one_saga_span_with_a_child_per_step(otel: Otel, drive) -> None:
    orch = Orchestrator(telemetry=otel.telemetry)
    result = drive(orch, Trip(), "t1")
    assert result.status is SagaStatus.COMPLETED
    run = otel.one("saga Trip")
    anchor = saga_context("t1")
    assert run.kind is SpanKind.INTERNAL
    assert (run.context.trace_id, run.parent.span_id) == (anchor.trace_id, anchor.span_id)
    assert dict(run.attributes) == {
        "sagaflow.saga.id": "t1", "sagaflow.saga.class": "Trip", "sagaflow.resumed": False,
        "sagaflow.status": "COMPLETED", "sagaflow.outcome": "completed",
    }
    assert run.status.status_code is StatusCode.UNSET
    steps = [s for s in otel.spans("step ")]
    assert [s.name for s in steps] == ["step reserve", "step pay", "step ship"]
    for s in steps:
        assert s.parent.span_id == run.context.span_id
        assert s.context.trace_id == run.context.trace_id
    assert dict(steps[1].attributes) == {
        "sagaflow.saga.id": "t1", "sagaflow.saga.class": "Trip", "sagaflow.step": "pay",
        "sagaflow.direction": "forward", "sagaflow.attempt": 1, "sagaflow.outcome": "ok",
        "code.function.name": "otel_sagas.Trip.pay",
    }
    _nested(otel)


@pytest.mark.parametrize("cls", [Trip, UnlimitedTrip])
def test_a_step_s_own_span_nests_under_its_span_on_any_thread(otel: Otel, drive, cls) -> None:
    # Trip's calls have limits (the sync driver runs them on a call thread), UnlimitedTrip's
    # none (on the caller's thread); under arun a plain def runs on a call thread.
    drive(Orchestrator(telemetry=otel.telemetry), cls(), "n1")
    assert [name for name, _, _ in SEEN][:2] == ["reserve", "pay"]
    _nested(otel)


def test_retries_are_one_span_per_attempt_and_a_failure_is_an_error(otel: Otel, drive) -> None:
    FAIL["pay"] = 1
    result = drive(Orchestrator(telemetry=otel.telemetry), Trip(), "r1")
    assert result.status is SagaStatus.COMPLETED
    pays = otel.spans("step pay")
    assert [(s.attributes["sagaflow.attempt"], s.attributes["sagaflow.outcome"])
            for s in pays] == [(1, "error"), (2, "ok")]
    failed = pays[0]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "builtins.ConnectionError"
    [event] = failed.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ConnectionError"
    assert event.attributes["exception.message"] == "pay unavailable"
    assert pays[1].status.status_code is StatusCode.UNSET


def test_compensation_attempts_are_spans_of_their_own(otel: Otel, drive) -> None:
    FAIL["pay"] = -1
    FAIL["release"] = 1
    result = drive(Orchestrator(telemetry=otel.telemetry), Trip(), "c1")
    assert result.status is SagaStatus.COMPENSATED
    names = [s.name for s in otel.spans() if not s.name.startswith("user ")]
    assert names == [
        "step reserve", "step pay", "step pay", "compensate reserve",
        "compensate reserve", "saga Trip",
    ]
    undo = otel.spans("compensate reserve")
    run = otel.one("saga Trip")
    for s in undo:
        assert s.attributes["sagaflow.direction"] == "compensate"
        assert s.attributes["code.function.name"] == "otel_sagas.Trip.release"
        assert s.parent.span_id == run.context.span_id
    assert [s.attributes["sagaflow.outcome"] for s in undo] == ["error", "ok"]
    assert run.attributes["sagaflow.outcome"] == "compensated"
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["error.type"] == "sagaflow.errors.StepError"
    _nested(otel)


def test_a_rejection_is_the_step_s_outcome_and_the_saga_s(otel: Otel, drive) -> None:
    FAIL["reject:pay"] = 1
    result = drive(Orchestrator(telemetry=otel.telemetry), Trip(), "j1")
    assert result.status is SagaStatus.COMPENSATED
    [pay] = otel.spans("step pay")
    assert pay.attributes["sagaflow.outcome"] == "rejected"
    assert pay.status.status_code is StatusCode.ERROR
    assert otel.one("saga Trip").attributes["sagaflow.outcome"] == "rejected"
    assert otel.counted("sagaflow.sagas.rejected") == {"Trip": 1}
    assert otel.counted("sagaflow.sagas.compensated") == {}


def test_async_steps_nest_and_a_timeout_is_the_outcome(otel: Otel) -> None:
    FAIL["hang"] = 1
    orch = Orchestrator(telemetry=otel.telemetry)
    result = asyncio.run(orch.arun(AsyncTrip(), "a1"))
    assert result.status is SagaStatus.COMPENSATED
    [pay] = otel.spans("step pay")
    assert pay.attributes["sagaflow.outcome"] == "timeout"
    assert pay.attributes["error.type"] == "timeout"
    assert pay.status.status_code is StatusCode.ERROR
    assert pay.events == ()  # the driver's cancellation is not the step's exception
    assert [s.name for s in otel.spans("compensate ")] == [
        "compensate pay", "compensate reserve"  # pay's effect is unknown: undone too
    ]
    _nested(otel)


class _Ended(SpanProcessor):
    """Tells when a span of a name ends."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.event = threading.Event()

    def on_end(self, span: ReadableSpan) -> None:
        if span.name == self.name:
            self.event.set()


def test_a_sync_call_abandoned_past_its_timeout_ends_its_span_when_it_returns(
    otel: Otel, drive
) -> None:
    ended = _Ended("step pay")
    otel.tracer_provider.add_span_processor(ended)
    result = drive(Orchestrator(telemetry=otel.telemetry), StuckTrip(), "s1")
    assert result.status is SagaStatus.FAILED  # a pivot whose effect is unknown
    assert not ended.event.is_set()  # the call still runs, abandoned
    GATE.set()
    assert ended.event.wait(30)
    [pay] = otel.spans("step pay")
    assert pay.attributes["sagaflow.outcome"] == "timeout"
    assert pay.status.status_code is StatusCode.ERROR
    assert otel.one("saga StuckTrip").attributes["sagaflow.outcome"] == "failed"
    _nested(otel)


@pytest.mark.parametrize(
    ("cls", "how"), [(Party, "sync"), (Party, "async"), (AsyncParty, "async")]
)
def test_group_members_and_fan_out_items_each_run_in_their_own_context(
    otel: Otel, cls: type, how: str
) -> None:
    orch = Orchestrator(telemetry=otel.telemetry)
    result = orch.run(cls(), "p1") if how == "sync" else asyncio.run(orch.arun(cls(), "p1"))
    assert result.status is SagaStatus.COMPLETED
    run = otel.one(f"saga {cls.__name__}")
    members = {s.name for s in otel.spans("step ")}
    assert {"step hall", "step band", "step invite"} <= members
    invites = otel.spans("step invite")
    assert sorted(s.attributes["sagaflow.item"] for s in invites) == [
        "invite[ann]", "invite[bob]", "invite[cy]"
    ]
    assert all(s.parent.span_id == run.context.span_id for s in invites)
    # each item's own span is under that item's span, not a sibling's
    users = {s.name: s for s in otel.spans("user invite ")}
    for s in invites:
        guest = s.attributes["sagaflow.item"][len("invite["):-1]
        assert users[f"user invite {guest}"].parent.span_id == s.context.span_id
    _nested(otel)


def test_failed_group_members_are_compensated_in_spans(otel: Otel, drive) -> None:
    FAIL["invite bob"] = -1
    result = drive(Orchestrator(telemetry=otel.telemetry), Party(), "p2")
    assert result.status is SagaStatus.COMPENSATED
    undone = sorted(s.name for s in otel.spans("compensate "))
    assert undone == [
        "compensate band", "compensate hall", "compensate invite", "compensate invite",
    ]
    items = sorted(s.attributes["sagaflow.item"] for s in otel.spans("compensate invite"))
    assert items == ["invite[ann]", "invite[cy]"]
    _nested(otel)


def test_metrics_count_sagas_by_class_and_measure_each_call(otel: Otel, drive) -> None:
    orch = Orchestrator(telemetry=otel.telemetry)
    drive(orch, Trip(), "m1")
    drive(orch, Trip(), "m2")
    FAIL["pay"] = -1
    drive(orch, Trip(), "m3")
    FAIL["release"] = -1
    drive(orch, Trip(), "m4")  # reserve cannot be undone: an operator's
    assert otel.counted("sagaflow.sagas.started") == {"Trip": 4}
    assert otel.counted("sagaflow.sagas.completed") == {"Trip": 2}
    assert otel.counted("sagaflow.sagas.compensated") == {"Trip": 1}
    assert otel.counted("sagaflow.sagas.failed") == {"Trip": 1}
    durations = {
        tuple(p.attributes[k] for k in (
            "sagaflow.saga.class", "sagaflow.step", "sagaflow.direction", "sagaflow.outcome"
        )): p.count
        for p in otel.points("sagaflow.step.duration")
    }
    assert durations == {
        ("Trip", "reserve", "forward", "ok"): 4,
        ("Trip", "pay", "forward", "ok"): 2,
        ("Trip", "pay", "forward", "error"): 4,
        ("Trip", "ship", "forward", "ok"): 2,
        ("Trip", "reserve", "compensate", "ok"): 1,
        ("Trip", "reserve", "compensate", "error"): 2,
    }
    assert all(p.sum >= 0 for p in otel.points("sagaflow.step.duration"))


def test_a_recovered_run_is_a_new_span_linked_to_the_saga_in_its_trace(
    otel: Otel, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    otel_sagas.CRASH.add("pay")
    with Orchestrator(store=url, telemetry=otel.telemetry) as first, pytest.raises(
        KeyboardInterrupt
    ):
        first.run(Trip(), "k1")
    crashed = otel.one("saga Trip")
    # the saga is left RUNNING for recovery; the run ended by the interrupt
    assert crashed.attributes["sagaflow.status"] == "RUNNING"
    assert crashed.attributes["sagaflow.outcome"] == "interrupted"
    assert crashed.status.status_code is StatusCode.ERROR
    assert otel.one("step pay").attributes["sagaflow.outcome"] == "interrupted"

    later = Otel()  # another process: its own SDK, its own telemetry
    try:
        with Orchestrator(store=url, sagas=[Trip], telemetry=later.telemetry) as second:
            assert second.recover().resumed == {"k1": SagaStatus.COMPLETED}
        resumed = later.one("saga Trip")
    finally:
        later.shutdown()
    anchor = saga_context("k1")
    assert resumed.attributes["sagaflow.resumed"] is True
    assert resumed.context.trace_id == crashed.context.trace_id == anchor.trace_id
    assert resumed.parent.span_id == crashed.parent.span_id == anchor.span_id
    [link] = resumed.links
    assert (link.context.trace_id, link.context.span_id) == (anchor.trace_id, anchor.span_id)
    assert link.attributes["sagaflow.link"] == "resumed"
    assert [(s.name, s.attributes["sagaflow.attempt"]) for s in later.spans("step ")] == [
        ("step pay", 2), ("step ship", 1)
    ]
    # the second process counts no new start, and the end
    assert later.counted("sagaflow.sagas.started") == {}
    assert later.counted("sagaflow.sagas.completed") == {"Trip": 1}
    assert otel.counted("sagaflow.sagas.started") == {"Trip": 1}


def test_the_caller_s_span_is_linked(otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("POST /trips") as request:
        Orchestrator(telemetry=otel.telemetry).run(Trip(), "l1")
    [link] = otel.one("saga Trip").links
    assert link.context.span_id == request.get_span_context().span_id
    assert link.attributes["sagaflow.link"] == "caller"


@pytest.mark.parametrize("how", ["sync", "async"])
def test_step_once_runs_its_call_in_a_span(otel: Otel, tmp_path: Path, how: str) -> None:
    # A choreography's participant moves an instance by one call: a run of one span.
    rt = Runtime(SQLiteStore(tmp_path / "once.db"), telemetry=otel.telemetry)
    spec = spec_of(Trip)
    record = new_record(spec, Trip(), "o1", rt.clock.now())
    rt.store.create(record)
    if how == "sync":
        step_once(rt, spec, record, (0, Direction.FORWARD))
        step_once(rt, spec, record, (1, Direction.FORWARD))
    else:
        asyncio.run(astep_once(rt, spec, record, (0, Direction.FORWARD)))
        asyncio.run(astep_once(rt, spec, record, (1, Direction.FORWARD)))
    runs = otel.spans("saga ")
    assert [r.attributes["sagaflow.resumed"] for r in runs] == [False, True]
    assert [s.name for s in otel.spans("step ")] == ["step reserve", "step pay"]
    for run, s in zip(runs, otel.spans("step "), strict=True):
        assert s.parent.span_id == run.context.span_id
    _nested(otel)
    rt.store.close()


def test_without_telemetry_nothing_of_opentelemetry_is_imported(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import sys
        import sagaflow
        from sagaflow import Orchestrator, saga, step

        @saga
        class Hello:
            @step(readonly=True)
            def greet(self, ctx):
                pass

        assert Orchestrator().run(Hello()).status.value == "COMPLETED"
        assert not [m for m in sys.modules if m.startswith("opentelemetry")], "imported"
        import sagaflow.otel  # the check above is a real one: this imports it
        assert "opentelemetry.trace" in sys.modules
        print("ok")
    """)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_memory_store_runs_are_traced_as_well(otel: Otel) -> None:
    Orchestrator(MemoryStore(), telemetry=otel.telemetry).run(Trip(), "x1")
    assert otel.one("saga Trip").attributes["sagaflow.saga.id"] == "x1"

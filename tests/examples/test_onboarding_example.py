"""Seed 002's onboarding saga: its events, its wait for the workspace service's reply,
its pivot, its retriable welcome email. The wait's tests run on the memory store and on
SQLite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from example_fixtures import Captured, compensation_order, crash_verified, make_ctx
from hypothesis import find, given, settings

from examples.onboarding import demo as scenarios
from examples.onboarding import services
from examples.onboarding.saga import (
    PROVISIONING_WINDOW,
    BillingProfileCreated,
    ClientOnboarded,
    NotificationSent,
    OnboardClientSaga,
    WorkspaceCreated,
    WorkspaceDeleted,
    on_client_onboarded,
    on_workspace_reply,
)
from examples.onboarding.services import (
    BillingUnavailable,
    ProvisioningFailed,
    WorkspaceReply,
    billing,
    notifications,
    workspaces,
)
from sagaflow import (
    CompensationStatus,
    OnTimeout,
    SagaStatus,
    StepError,
    StepKind,
    StepStatus,
    WaitTimedOut,
    events,
    spec_of,
)
from sagaflow.testing import (
    FailurePlan,
    SagaCase,
    SignalPlan,
    check_crash_points,
    run_plan,
    saga_cases,
)

X = ClientOnboarded("x", "X", "x@x.test", "starter")


@pytest.fixture(autouse=True)
def fresh_services() -> Iterator[None]:
    services.reset()
    yield
    services.reset()


def test_the_kinds_follow_the_seed() -> None:
    spec = spec_of(OnboardClientSaga)
    kinds = [(s.name, s.kind) for s in spec.steps]
    assert kinds == [
        ("create_workspace", StepKind.COMPENSATABLE),
        ("workspace_created", StepKind.READONLY),
        ("setup_billing", StepKind.PIVOT),
        ("send_welcome_email", StepKind.RETRIABLE),
    ]
    wait = spec.step("workspace_created").wait
    assert wait is not None and (wait.signal, wait.payload) == ("workspace", WorkspaceReply)
    assert wait.timeout == 15 * 60 and wait.on_timeout is OnTimeout.COMPENSATE


def test_happy_path_emits_the_seed_events_in_order(demo: Captured) -> None:
    result = scenarios.happy_path(demo)

    assert result.status is SagaStatus.COMPLETED
    assert result.saga_id == "onboard-acme"
    assert result.events == (
        WorkspaceCreated("acme", "ws-1"),
        BillingProfileCreated("acme", "bp-1", "team"),
        NotificationSent("acme", "msg-1"),
    )
    assert "tenant-acme" in workspaces.tenants
    assert notifications.outbox == [
        ("msg-1", "ops@acme.test", "Welcome to your team workspace, Acme Corp")
    ]
    assert result.duration == 40.0  # the workspace service took 40 s (virtual) to answer
    assert "workspace_created ⏸ parked: waits up to 15m for signal 'workspace'" in demo.text
    assert "← WorkspaceReply ws-1 ready, 40s later" in demo.text


def test_a_rejected_plan_deletes_the_workspace_and_tenant(demo: Captured) -> None:
    result = scenarios.billing_rejects(demo)

    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepError) and result.error.step == "setup_billing"
    assert result.step("setup_billing").attempts == 1  # a rejection is not retried
    assert compensation_order(result) == ["create_workspace"]
    assert [type(e) for e in result.events] == [WorkspaceCreated, WorkspaceDeleted]
    assert workspaces.active() == [] and workspaces.tenants == set()
    assert billing.profiles == {} and notifications.outbox == []


def test_billing_unavailable_is_retried_on_the_pivot(demo: Captured) -> None:
    billing.faults.fail("create_profile", BillingUnavailable("billing down"), times=2)
    result = scenarios.onboard(demo, X)

    assert result.status is SagaStatus.COMPLETED
    assert result.step("setup_billing").attempts == 3
    assert len(billing.profiles) == 1


def test_a_billing_answer_lost_after_the_profile_is_made_does_not_make_two(
    demo: Captured,
) -> None:
    billing.faults.fail("create_profile", BillingUnavailable("reset"), at="after")
    result = scenarios.onboard(demo, X)

    assert result.status is SagaStatus.COMPLETED
    assert list(billing.profiles) == ["bp-1"]


def test_a_flaky_mail_server_is_retried_after_the_pivot(demo: Captured) -> None:
    result = scenarios.mail_server_flaky(demo)

    assert result.status is SagaStatus.COMPLETED
    assert result.step("send_welcome_email").attempts == 3
    assert result.duration == 43.0  # the reply after 40 s, backoff 1 s then 2 s, virtual
    assert len(notifications.outbox) == 1
    assert [type(e) for e in result.events] == [
        WorkspaceCreated, BillingProfileCreated, NotificationSent,
    ]


def test_a_mail_server_down_for_good_fails_the_saga_and_undoes_nothing(demo: Captured) -> None:
    result = scenarios.mail_server_down(demo)

    assert result.status is SagaStatus.FAILED
    assert isinstance(result.error, StepError) and result.error.step == "send_welcome_email"
    assert result.step("send_welcome_email").status is StepStatus.FAILED
    assert result.step("send_welcome_email").attempts == 5
    assert all(s.compensation is CompensationStatus.NOT_NEEDED for s in result.steps)
    assert [w.client_id for w in workspaces.active()] == ["umbrella"]
    assert len(billing.profiles) == 1
    assert "finish it by hand; nothing was undone" in demo.text


def test_an_event_delivered_twice_runs_the_saga_once(demo: Captured) -> None:
    first, again = scenarios.delivered_twice(demo)

    assert again.status is SagaStatus.COMPLETED
    assert again.saga_id == first.saga_id == "onboard-hooli"
    assert [w.client_id for w in workspaces.active()] == ["hooli"]
    assert workspaces.faults.calls["create"] == 1
    assert len(notifications.outbox) == 1


def test_deleting_the_workspace_twice_leaves_the_same_state(demo: Captured) -> None:
    result = scenarios.billing_rejects(demo)
    saga: OnboardClientSaga = result.data
    ctx = make_ctx(saga, result.saga_id, "create_workspace")

    saga.delete_workspace(ctx)
    saga.delete_workspace(ctx)

    assert workspaces.active() == [] and workspaces.tenants == set()
    assert ctx._pending == [WorkspaceDeleted("globex", "ws-1")] * 2  # same answer twice


# --- the wait for the workspace service's reply (seed 002: ← [Event] WorkspaceCreated) ---


def test_the_saga_waits_for_the_workspace_service_and_its_reply_resumes_it(
    stored: Captured,
) -> None:
    orch = stored.orchestrator()
    parked = on_client_onboarded(orch, X)
    assert parked.status is SagaStatus.RUNNING
    assert parked.step("workspace_created").status is StepStatus.WAITING
    assert parked.events == ()  # WorkspaceCreated is the service's to say, not yet said
    record = orch.store.load("onboard-x")
    assert record is not None and record.waiting == "workspace"
    assert "onboard-x" not in orch.runtime.live  # a row in the store, nothing in memory
    assert workspaces.workspaces["ws-1"].status == "provisioning"
    assert billing.profiles == {}  # nothing goes on before the reply

    [reply] = workspaces.provision()
    assert reply == WorkspaceReply("x", "ws-1", True)
    result = on_workspace_reply(orch, reply)

    assert result.status is SagaStatus.COMPLETED
    assert [type(e) for e in result.events] == [
        WorkspaceCreated, BillingProfileCreated, NotificationSent,
    ]
    delivered = [e for e in result.history if isinstance(e, events.SignalDelivered)]
    assert [(e.signal, e.signal_id) for e in delivered] == [("workspace", "workspace-reply:ws-1")]
    # the same reply again (the bus redelivers): a duplicate of its id, ignored; nothing twice
    again = on_workspace_reply(orch, reply)
    assert again.status is SagaStatus.COMPLETED
    assert len(billing.profiles) == 1 and len(notifications.outbox) == 1
    assert len(orch.store.signals("onboard-x")) == 1


def test_a_failed_provisioning_deletes_the_workspace_and_its_tenant(stored: Captured) -> None:
    result = scenarios.provisioning_fails(stored)

    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepError) and result.error.step == "workspace_created"
    assert isinstance(result.error.cause, ProvisioningFailed)
    assert result.step("workspace_created").status is StepStatus.FAILED
    assert compensation_order(result) == ["create_workspace"]
    assert result.events == (WorkspaceDeleted("soylent", "ws-1"),)
    assert workspaces.active() == [] and workspaces.tenants == set()
    assert billing.profiles == {} and notifications.outbox == []


def test_no_reply_within_the_window_times_out_and_deletes_the_workspace(
    stored: Captured,
) -> None:
    workspaces.silent.add("x")
    orch = stored.orchestrator()
    assert on_client_onboarded(orch, X).status is SagaStatus.RUNNING
    assert workspaces.provision() == []  # the job is stuck: no reply
    orch.clock.advance(PROVISIONING_WINDOW.total_seconds() - 1)  # type: ignore[attr-defined]
    assert orch.resume_due() == {}
    orch.clock.advance(1)  # type: ignore[attr-defined]
    assert orch.resume_due() == {"onboard-x": SagaStatus.COMPENSATED}

    result = orch.get("onboard-x")
    assert result is not None
    assert isinstance(result.error, WaitTimedOut) and result.error.signal == "workspace"
    assert result.step("workspace_created").status is StepStatus.EXPIRED
    assert compensation_order(result) == ["create_workspace"]
    assert workspaces.active() == [] and workspaces.tenants == set()
    assert billing.profiles == {}


def test_the_demo_scenario_of_the_silent_service(stored: Captured) -> None:
    result = scenarios.no_reply(stored)
    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, WaitTimedOut)
    assert "workspace_created ⏱ no signal 'workspace' within 15m: compensate" in stored.text
    assert workspaces.active() == []


def test_verify_runs_the_idempotency_nothing_to_undo_and_crash_gates() -> None:
    gates = crash_verified("examples.onboarding")
    assert gates["idempotency"][1] == "1 compensation run twice: no change"
    assert gates["nothing to undo"][1] == "1 compensation run with nothing to undo"


def test_a_ready_workspace_is_crash_checked_through_billing_and_the_email() -> None:
    # verify's crash plans send a reply drawn at random (not ready: the saga compensates)
    # and none; this one sends a ready reply, so billing and the email are crashed too
    reply = WorkspaceReply("acme", "ws-1", ready=True)
    report = check_crash_points(
        "sagaflow.cli.verify:crash_case",
        kwargs={"saga": "examples.onboarding.saga:OnboardClientSaga"},
        plans=[FailurePlan(signals=[SignalPlan("workspace_created", reply)])],
    )
    report.assert_ok()
    assert report.references == ("COMPLETED",) and report.effects_checked
    crashed = {p.point.what for p in report.points}
    assert {"setup_billing:forward", "send_welcome_email:forward"} <= crashed


def test_the_cases_refuse_a_plan_billing_does_not_sell_and_delete_the_workspace() -> None:
    assert find(saga_cases(OnboardClientSaga), lambda c: c.saga.plan == "platinum")

    @settings(max_examples=20, database=None, deadline=None)
    @given(saga_cases(OnboardClientSaga))
    def each(case: SagaCase) -> None:
        reply = WorkspaceReply(case.saga.client_id, "ws-1", ready=True)
        plan = FailurePlan(signals=[SignalPlan("workspace_created", reply)])
        run = run_plan(case, plan).check()  # a compensated run leaves the snapshot as found
        if case.saga.plan == "platinum":
            assert run.result.status is SagaStatus.COMPENSATED
            assert "unknown plan 'platinum'" in str(run.result.error)
        else:
            assert run.result.status is SagaStatus.COMPLETED
            assert run.after["billing profiles"] == [("bp-1", (case.saga.client_id,
                                                               case.saga.plan))]

    each()

"""Seed 002's onboarding saga: its events, its pivot, its retriable welcome email."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from example_fixtures import Captured, compensation_order, make_ctx

from examples.onboarding import demo as scenarios
from examples.onboarding import services
from examples.onboarding.saga import (
    BillingProfileCreated,
    ClientOnboarded,
    NotificationSent,
    OnboardClientSaga,
    WorkspaceCreated,
    WorkspaceDeleted,
    on_client_onboarded,
)
from examples.onboarding.services import BillingUnavailable, billing, notifications, workspaces
from sagaflow import (
    CompensationStatus,
    SagaStatus,
    StepError,
    StepKind,
    StepStatus,
    spec_of,
)


@pytest.fixture(autouse=True)
def fresh_services() -> Iterator[None]:
    services.reset()
    yield
    services.reset()


def test_the_kinds_follow_the_seed() -> None:
    kinds = [(s.name, s.kind) for s in spec_of(OnboardClientSaga).steps]
    assert kinds == [
        ("create_workspace", StepKind.COMPENSATABLE),
        ("setup_billing", StepKind.PIVOT),
        ("send_welcome_email", StepKind.RETRIABLE),
    ]


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
    result = on_client_onboarded(demo.orchestrator(),
                                 ClientOnboarded("x", "X", "x@x.test", "starter"))

    assert result.status is SagaStatus.COMPLETED
    assert result.step("setup_billing").attempts == 3
    assert len(billing.profiles) == 1


def test_a_billing_answer_lost_after_the_profile_is_made_does_not_make_two(
    demo: Captured,
) -> None:
    billing.faults.fail("create_profile", BillingUnavailable("reset"), at="after")
    result = on_client_onboarded(demo.orchestrator(),
                                 ClientOnboarded("x", "X", "x@x.test", "starter"))

    assert result.status is SagaStatus.COMPLETED
    assert list(billing.profiles) == ["bp-1"]


def test_a_flaky_mail_server_is_retried_after_the_pivot(demo: Captured) -> None:
    result = scenarios.mail_server_flaky(demo)

    assert result.status is SagaStatus.COMPLETED
    assert result.step("send_welcome_email").attempts == 3
    assert result.duration == 3.0  # backoff 1 s then 2 s, virtual
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

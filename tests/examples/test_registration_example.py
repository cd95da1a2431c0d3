"""Seed 001's registration saga: its four scenarios, and the idempotency they rely on."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from example_fixtures import Captured, compensation_order, crash_verified, make_ctx, verify_gates
from hypothesis import find, given, settings

from examples._support import Voided
from examples.registration import demo as scenarios
from examples.registration import services
from examples.registration.saga import (
    TAKEN,
    AccountCreated,
    AccountDeleted,
    ConfirmationSent,
    PaymentCharged,
    PaymentRefunded,
    RegistrationSaga,
    manual_actions,
)
from sagaflow import (
    CompensationError,
    CompensationStatus,
    SagaStatus,
    StepError,
    StepStatus,
    events,
)
from sagaflow.testing import SagaCase, run_plan, saga_cases
from sagaflow.testing._crashchild import fork

PRICE = scenarios.PRICE


@pytest.fixture(autouse=True)
def fresh_services() -> Iterator[None]:
    services.reset()
    yield
    services.reset()


def test_scenario_1_complete_success(demo: Captured) -> None:
    result = scenarios.complete_success(demo)

    assert result.status is SagaStatus.COMPLETED
    assert result.error is None
    assert [type(e) for e in result.events] == [AccountCreated, PaymentCharged, ConfirmationSent]
    reg = result.data
    assert (reg.user_id, reg.transaction_id, reg.notification_id) == (123, 456, 789)
    assert [a.email for a in services.users.active()] == ["ada@example.com"]
    assert services.payments.net_charged(123) == PRICE
    assert len(services.notifications.outbox) == 1
    assert all(s.compensation is CompensationStatus.NOT_NEEDED for s in result.steps)
    assert "step 3/3 send_confirmation ✓" in demo.text


def test_scenario_2_notification_failure_rolls_back_in_reverse_order(demo: Captured) -> None:
    result = scenarios.notification_fails(demo)

    assert result.status is SagaStatus.COMPENSATED
    assert isinstance(result.error, StepError)
    assert result.error.step == "send_confirmation"
    assert "SMTP connection timeout" in str(result.error)
    assert compensation_order(result) == ["process_payment", "create_account"]
    assert [type(e) for e in result.events] == [
        AccountCreated, PaymentCharged, PaymentRefunded, AccountDeleted,
    ]
    assert services.users.active() == []
    assert services.payments.net_charged(123) == 0
    assert services.notifications.outbox == []
    assert "compensation 1/2 refund (undoes process_payment) ✓" in demo.text
    assert "compensation 2/2 delete_account (undoes create_account) ✓" in demo.text


def test_scenario_3_refund_fails_twice_then_succeeds_with_backoff(demo: Captured) -> None:
    result = scenarios.refund_fails_twice(demo)

    assert result.status is SagaStatus.COMPENSATED
    refund = result.step("process_payment")
    assert refund.compensation is CompensationStatus.COMPENSATED
    assert refund.compensation_attempts == 3
    delays = [e.delay for e in result.history if isinstance(e, events.CompensationRetrying)]
    assert delays == [2.0, 4.0]  # seed 001: "Retrying in 2s...", "Retrying in 4s..."
    assert result.duration == 6.0  # virtual time: the backoff, nothing else
    assert compensation_order(result) == ["process_payment", "create_account"]
    assert services.payments.net_charged(123) == 0
    assert services.payments.faults.calls["refund"] == 3
    assert "retrying in 2s" in demo.text and "retrying in 4s" in demo.text
    assert "✓ (attempt 3/5)" in demo.text


def test_scenario_4_refund_fails_for_good_needs_manual_action(demo: Captured) -> None:
    result = scenarios.refund_fails_for_good(demo)

    assert result.status is SagaStatus.FAILED
    error = result.error
    assert isinstance(error, CompensationError)
    assert list(error.failures) == ["process_payment"]
    assert "permanently down" in error.failures["process_payment"]
    assert isinstance(error.reason, StepError) and error.reason.step == "send_confirmation"
    refund = result.step("process_payment")
    assert refund.compensation is CompensationStatus.FAILED
    assert refund.compensation_attempts == 5
    # the remaining compensation still ran: the account is deleted
    assert result.step("create_account").compensation is CompensationStatus.COMPENSATED
    assert services.users.active() == []
    assert services.payments.net_charged(123) == PRICE  # the money an operator must return
    assert manual_actions(result) == [
        "Transaction 456 could not be refunded "
        "(GatewayError: payment gateway permanently down)",
        "Please refund $99.99 to user 123 manually",
        "User account 123 has been deleted",
    ]
    assert "[CRITICAL] Manual action required" in demo.text
    assert "Please refund $99.99 to user 123 manually" in demo.text


def test_declined_card_deletes_the_account_and_refunds_nothing(demo: Captured) -> None:
    result = scenarios.payment_declined(demo)

    assert result.status is SagaStatus.COMPENSATED
    assert result.step("process_payment").status is StepStatus.FAILED
    assert result.step("process_payment").compensation is CompensationStatus.NOT_NEEDED
    assert compensation_order(result) == ["create_account"]
    assert services.payments.faults.calls["refund"] == 0
    assert services.users.active() == []


def test_compensations_run_twice_leave_the_same_state(demo: Captured) -> None:
    result = scenarios.notification_fails(demo)
    reg: RegistrationSaga = result.data
    refunds = [c.refund_id for c in services.payments.charges.values()]
    deleted = [(a.user_id, a.deleted) for a in services.users.accounts.values()]

    undos = (("process_payment", reg.refund), ("create_account", reg.delete_account))
    for step_name, undo in undos:
        ctx = make_ctx(reg, result.saga_id, step_name)
        undo(ctx)
        undo(ctx)
        # a repeat reports what the first call did, so its events are the same
        assert len(ctx._pending) == 2 and ctx._pending[0] == ctx._pending[1]

    assert [c.refund_id for c in services.payments.charges.values()] == refunds
    assert [(a.user_id, a.deleted) for a in services.users.accounts.values()] == deleted


def test_a_refund_whose_answer_is_lost_is_retried_without_refunding_twice(
    demo: Captured,
) -> None:
    # The seed 000 "production hardening gap": the refund happens, its answer is lost, the
    # orchestrator retries; the retry must not refund again.
    services.notifications.faults.fail("send", services.SMTPError("SMTP connection timeout"))
    services.payments.faults.fail("refund", services.GatewayError("reset"), at="after")
    result = demo.run(demo.orchestrator(), RegistrationSaga("x@example.com", PRICE), "lost")

    assert result.status is SagaStatus.COMPENSATED
    assert result.step("process_payment").compensation_attempts == 2
    assert services.payments.faults.calls["refund"] == 2
    assert [c.refund_id for c in services.payments.charges.values()] == ["REF-789"]
    refunded = [e for e in result.events if isinstance(e, PaymentRefunded)]
    assert refunded == [PaymentRefunded("REF-789", PRICE)]


def test_a_refund_before_the_charge_arrives_voids_the_late_charge() -> None:
    key = "s1:process_payment:forward"
    assert services.payments.refund("s1:process_payment:compensate", key) is None
    with pytest.raises(Voided):
        services.payments.charge(key, 123, Decimal("5"))
    assert services.payments.charges == {}


def test_running_a_finished_saga_id_again_runs_nothing(demo: Captured) -> None:
    orch = demo.orchestrator()
    first = orch.run(RegistrationSaga("ada@example.com", PRICE), saga_id="once")
    again = orch.run(RegistrationSaga("ada@example.com", PRICE), saga_id="once")

    assert again.status is SagaStatus.COMPLETED
    assert again.data is first.data
    assert services.users.faults.calls["create_account"] == 1
    assert len(services.payments.charges) == 1


def test_verify_runs_the_idempotency_and_nothing_to_undo_gates() -> None:
    gates = verify_gates("examples.registration")["RegistrationSaga"]
    assert gates["idempotency"] == ("pass", "2 compensations run twice: no change")
    assert gates["nothing to undo"] == ("pass", "2 compensations run with nothing to undo")


def test_verify_crash_compares_the_services_state_after_each_crash() -> None:
    crash_verified("examples.registration")


def test_the_cases_services_state_outlives_the_process_that_changed_it() -> None:
    # what makes the crash gate compare anything: a killed child's effects are seen
    case = find(saga_cases(RegistrationSaga), lambda _: True)
    case.setup()
    before = case.snapshot()
    ran, code = fork(lambda: [services.users.create_account("k", "kate@example.com")], 30)
    assert code == 0 and ran == [124]
    assert case.snapshot()["active accounts"] == ["kate@example.com", TAKEN] != (
        before["active accounts"])
    services.reset()
    assert services.users.active() == []  # reset: in memory again, and empty


def test_the_cases_include_the_taken_email_which_the_rules_refuse() -> None:
    assert find(saga_cases(RegistrationSaga), lambda c: c.saga.email == TAKEN)

    @settings(max_examples=20, database=None, deadline=None)
    @given(saga_cases(RegistrationSaga))
    def each(case: SagaCase) -> None:
        result = run_plan(case).check().result  # run_plan calls the case's setup
        if case.saga.email == TAKEN:
            assert result.status is SagaStatus.COMPENSATED
            assert f"an account for {TAKEN} already exists" in str(result.error)
        else:
            assert result.status is SagaStatus.COMPLETED

    each()

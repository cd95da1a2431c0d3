"""Delivery plans for choreographies, the runner and the invariants, on the example order
(examples/choreography) over a SQLite file: each plan's fault happens as it says, and
the invariants read what happened."""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest
from choreo_sagas import order_case

from examples.choreography.saga import OrderCreated, OrderFlow
from sagaflow import SagaStatus
from sagaflow.testing import (
    CHOREOGRAPHY_INVARIANTS,
    ChoreographyCase,
    ChoreographyViolation,
    Delivery,
    DeliveryPlan,
    check_choreography,
    run_choreography,
)


def test_a_quiet_plan_completes_every_instance_each_event_once() -> None:
    run = run_choreography(order_case("25", "30")).check()
    assert run.status("o-0") is run.status("o-1") is SagaStatus.COMPLETED
    ran = [(d.participant, d.step) for d in run.deliveries if d.outcome == "ran"]
    assert ran.count(("payments", "charge")) == 2
    events = [p.event for p in run.published if p.message_id.startswith("OrderFlow:o-0")]
    assert events == ["StockReserved", "PaymentProcessed", "OrderConfirmed"]
    assert run.effects["o-0"] == ((False, None, False), (True, Decimal(25), True),
                                  (True, Decimal(25), True))


def test_a_step_failing_for_good_compensates_through_the_participants() -> None:
    run = run_choreography(order_case(), DeliveryPlan(fails="confirm")).check()
    assert run.status("o-0") is SagaStatus.COMPENSATED
    undone = [(c.who, c.step) for c in run.calls if c.direction.value == "compensate"]
    assert undone == [("payments", "charge"), ("inventory", "reserve_stock")]


def test_a_participant_dying_after_its_effect_gets_the_event_again() -> None:
    run = run_choreography(order_case(), DeliveryPlan(crash={"charge": True})).check()
    charges = [c for c in run.calls if c.step == "charge"]
    assert [(c.injected, c.effect, c.ok) for c in charges] == [
        ("crash+effect", True, False), ("-", True, True)]
    assert charges[0].key == charges[1].key  # the same idempotency key on redelivery
    died = [d for d in run.deliveries if d.outcome == "died"]
    assert [(d.participant, d.event) for d in died] == [("payments", "StockReserved")]
    assert run.status("o-0") is SagaStatus.COMPLETED


def test_an_event_twice_late_or_out_of_order_is_ignored_saying_why() -> None:
    plan = DeliveryPlan(deliveries={"OrderCreated": Delivery.TWICE,
                                    "StockReserved": Delivery.LATE,
                                    "PaymentProcessed": Delivery.OUT_OF_ORDER})
    run = run_choreography(order_case("25", "30"), plan).check()
    copies = [(s.message_id, s.how) for s in run.sent if s.how != "relay"]
    assert ("start:o-0", "twice") in copies and ("OrderFlow:o-0:0", "late") in copies
    ignored = {(d.event, d.reason) for d in run.deliveries if d.outcome == "ignored"}
    assert ("OrderCreated", "the instance is at step 'charge', not 'reserve_stock'") in ignored
    assert ("StockReserved", "the instance is at step 'confirm', not 'charge'") in ignored
    assert run.status("o-0") is run.status("o-1") is SagaStatus.COMPLETED


def test_a_lost_event_leaves_the_instance_parked_until_its_deadline_compensates_it() -> None:
    run = run_choreography(order_case(),
                           DeliveryPlan(deliveries={"PaymentProcessed": Delivery.NEVER})).check()
    (parked,) = run.parks
    assert parked.status is SagaStatus.RUNNING and parked.waiting == "choreography"
    assert parked.withheld == ("OrderFlow:o-0:1",)
    assert run.status("o-0") is SagaStatus.COMPENSATED
    assert "deadline" in str(run.records["OrderFlow:o-0"].error)


def test_an_event_after_the_deadline_is_ignored() -> None:
    run = run_choreography(order_case(),
                           DeliveryPlan(deliveries={"StockReserved": Delivery.AFTER_DEADLINE}))
    run.check()
    late = [d for d in run.deliveries if d.event == "StockReserved" and d.participant == "payments"]
    assert [d.outcome for d in late] == ["ignored"]
    assert run.status("o-0") is SagaStatus.COMPENSATED


def test_the_relay_dying_after_publishing_publishes_again_under_the_same_id() -> None:
    run = run_choreography(order_case(), DeliveryPlan(republished={"StockReserved"})).check()
    again = [p for p in run.published if p.event == "StockReserved"]
    assert [p.how for p in again] == ["relay", "republished"]
    assert again[0].message_id == again[1].message_id and again[0].body == again[1].body


def test_a_lost_reply_of_a_compensation_runs_it_again() -> None:
    plan = DeliveryPlan(fails="confirm", compensation_transient={"reserve_stock": 2},
                        compensation_crash={"charge"})
    run = run_choreography(order_case(), plan).check()
    undo = [(c.step, c.injected) for c in run.calls if c.direction.value == "compensate"]
    assert undo == [("charge", "crash+effect"), ("charge", "-"), ("reserve_stock", "lost reply"),
                    ("reserve_stock", "lost reply"), ("reserve_stock", "-")]


def test_the_memory_store_gives_the_same_run() -> None:
    plan = DeliveryPlan(fails="charge", crash={"reserve_stock": True})
    one = run_choreography(order_case(), plan).check()
    two = run_choreography(order_case(), plan, store="memory").check()
    assert [str(c) for c in one.calls] == [str(c) for c in two.calls]


def test_the_invariants_catch_what_is_wrong_in_a_run() -> None:
    run = run_choreography(order_case(), DeliveryPlan(fails="confirm"))
    calls = list(run.calls)
    # a compensation twice, under a key of its own; a step by the wrong participant
    calls.append(attrs.evolve(calls[-1], seq=len(calls) + 1, key="another"))
    calls[0] = attrs.evolve(calls[0], who="orders")
    broken = attrs.evolve(run, calls=tuple(calls), published=run.published[:-1],
                          effects={"o-0": ("before", "after", "quiet")})
    with pytest.raises(ChoreographyViolation) as caught:
        check_choreography(broken)
    assert caught.value.numbers == [3, 4, 5, 6]
    text = str(caught.value)
    assert "it made ['charge', 'reserve_stock', 'reserve_stock']" in text
    assert "recorded events never published: ['OrderFlow:o-0:4']" in text
    assert "was made by orders, not inventory" in text
    assert "compensate reserve_stock of OrderFlow:o-0 ran under keys ['OrderFlow:o-0:" \
        "reserve_stock:compensate', 'another']" in text
    assert "calls:" in text and "deliveries:" in text
    assert set(CHOREOGRAPHY_INVARIANTS) == {1, 2, 3, 4, 5, 6, 7}


def test_a_plan_that_does_not_fit_the_flow_is_refused_naming_each_problem() -> None:
    plan = DeliveryPlan(fails="ship", compensation_crash={"confirm"},
                        deliveries={"OrderCreated": Delivery.NEVER, "Nope": Delivery.TWICE})
    with pytest.raises(ValueError) as caught:
        run_choreography(order_case(), plan)
    text = str(caught.value)
    assert "fails names 'ship', which OrderFlow does not have" in text
    assert "a compensation fault names 'confirm'" in text
    assert "an event type names 'Nope'" in text
    assert "the start event OrderCreated cannot be withheld" in text
    with pytest.raises(ValueError, match=r"a set of names is wanted: write \{'x'\}"):
        DeliveryPlan(republished="x")
    with pytest.raises(TypeError, match="starts must be OrderCreated events"):
        ChoreographyCase(OrderFlow, ["x"])
    with pytest.raises(ValueError, match="must correlate different instances"):
        ChoreographyCase(OrderFlow, [OrderCreated("a", Decimal(1))] * 2)


def test_a_plan_says_what_it_does() -> None:
    plan = DeliveryPlan(fails="confirm", crash={"charge": False},
                        deliveries={"FlowFailed": Delivery.LATE}, republished={"StockReleased"})
    assert repr(plan) == ("DeliveryPlan(fails='confirm', crash={'charge': False}, "
                          "deliveries={'FlowFailed': Delivery.LATE}, "
                          "republished={'StockReleased'})")
    assert plan.describe() == ("confirm fails for good; charge's participant dies before its "
                               "effect; FlowFailed delivered late; the relay publishes "
                               "StockReleased twice")
    assert DeliveryPlan(deliveries={"X": Delivery.ONCE}).is_quiet


def test_the_readme_choreography_example_passes() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Testing your sagas\n", 1)[1].split("\n## ", 1)[0]
    (code,) = [block.split("```", 1)[0] for block in section.split("```python\n")[1:]
               if "run_choreography" in block]
    namespace: dict[str, object] = {"__name__": "readme_choreography_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    tests = [v for n, v in namespace.items() if n.startswith("test_") and callable(v)]
    assert len(tests) == 2
    for test in tests:
        test()


def test_a_compensating_instance_without_a_compensation_deadline_may_stay_parked() -> None:
    from sagaflow.testing.choreography import Parked

    run = run_choreography(order_case(), DeliveryPlan(fails="confirm"))
    record = attrs.evolve(run.records["OrderFlow:o-0"], status=SagaStatus.COMPENSATING)
    parked = Parked("OrderFlow:o-0", SagaStatus.COMPENSATING, "choreography", None,
                    ("OrderFlow:o-0:2",))
    waiting = attrs.evolve(run, records={"OrderFlow:o-0": record}, parks=(parked,))
    check_choreography(waiting, only=[1])  # parked for its lost FlowFailed: an operator's
    for wrong in (attrs.evolve(parked, waiting=None), attrs.evolve(parked, withheld=())):
        with pytest.raises(ChoreographyViolation, match="ends COMPENSATING"):
            check_choreography(attrs.evolve(waiting, parks=(wrong,)), only=[1])


def test_a_lost_flow_failed_leaves_the_instance_parked_compensating() -> None:
    run = run_choreography(order_case(), DeliveryPlan(
        fails="confirm", deliveries={"FlowFailed": Delivery.NEVER})).check()
    (parked, *_) = run.parks
    assert (parked.status, parked.waiting) == (SagaStatus.COMPENSATING, "choreography")
    assert run.status("o-0") is SagaStatus.COMPENSATING  # no compensation deadline: waits


def test_a_lost_compensation_event_fails_what_is_left_at_the_compensation_deadline() -> None:
    from choreo_sagas import CarefulBooking, office_case

    run = run_choreography(office_case(CarefulBooking), DeliveryPlan(
        fails="issue", deliveries={"Refunded": Delivery.NEVER})).check()
    assert run.status("b-1") is SagaStatus.FAILED

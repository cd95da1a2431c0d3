"""Seeds 002/003's order both ways, in one process: orchestrated, then choreographed.

The choreographed run is what three services would do, here in-process: each
participant (inventory, payments, orders) gets the events the relay publishes from the
outbox (:class:`~sagaflow.outbox.Handlers`) and reacts to its own; sagaflow tracks each
instance as a saga record (``sagaflow sagas list`` shows them, ``sagaflow diagram``
draws them with their position).
"""

from __future__ import annotations

from decimal import Decimal

from sagaflow import Orchestrator, Participant, SagaResult
from sagaflow.choreography import message_for
from sagaflow.messages import Message
from sagaflow.outbox import Handlers, Relay

from ..console import Demo
from . import saga
from .saga import OrderCreated, OrderFlow, OrderOrchestration, Services

__all__ = ["Town", "demo"]

PARTICIPANTS = ("inventory", "payments", "orders")


class Town:
    """The three services' participants on one orchestrator's store, the relay that
    publishes its outbox to them, and what each did (printed by the demo)."""

    def __init__(self, orch: Orchestrator, say=None) -> None:  # type: ignore[no-untyped-def]
        self.orch = orch
        self.say = say or (lambda line: None)
        self.handlers = Handlers()
        self.participants = [Participant(orch, OrderFlow, n) for n in PARTICIPANTS]
        for p in self.participants:
            self.handlers.on(object, self._to(p))
        self.relay = Relay(orch.store, self.handlers)

    def _to(self, p: Participant):  # type: ignore[no-untyped-def]
        def deliver(event: object, message: Message) -> None:
            handled = p.handle(message)
            if handled.outcome == "ran":
                what = "undid" if handled.compensation else "ran"
                self.say(f"{type(event).__name__} → {p.name} {what} {handled.step}")
            elif handled.outcome == "ignored":
                self.say(f"{type(event).__name__} → {p.name} ignored it: {handled.reason}")
        return deliver

    def order(self, order_id: str, amount: Decimal, message_id: str | None = None) -> SagaResult:
        """Publish OrderCreated and let the events flow until the outbox is empty."""
        self.handlers.publish([message_for(OrderCreated(order_id, amount), message_id)])
        while self.relay.relay_once():
            pass
        result = self.orch.get(f"OrderFlow:{order_id}")
        assert result is not None
        return result


def demo(d: Demo) -> list[SagaResult]:
    saga.services = Services()
    d.section("choreography (seeds 002/003): the same order, orchestrated and choreographed",
              "python -m examples choreography")
    orch = d.orchestrator()
    results = []
    d.scenario("1. orchestrated: one process calls inventory, payments, orders in turn")
    results.append(d.run(orch, OrderOrchestration("o-100", Decimal("25")), "orchestrated:o-100"))
    town = Town(orch, d.note)
    d.scenario("2. choreographed: each participant reacts to the event before its step")
    results.append(town.order("o-101", Decimal("25")))
    d.show(results[-1])
    d.scenario("3. choreographed, the card is declined: FlowFailed, then StockReleased")
    results.append(town.order("o-102", Decimal("5000")))
    d.show(results[-1])
    d.scenario("4. OrderCreated delivered again: the instance exists, nothing runs twice")
    town.order("o-101", Decimal("25"))
    d.note(f"services were called: {', '.join(saga.services.calls)}")
    return results

"""Seeds 002/003's order both ways (``examples/choreography``): the cases its
``example_sagas()`` gives the property tests and ``sagaflow verify``."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from example_fixtures import crash_verified, verify_gates
from hypothesis import find, given, settings

from examples.choreography import saga as order
from examples.choreography.saga import OrderFlow, OrderOrchestration, Services
from sagaflow import SagaStatus
from sagaflow.testing import SagaCase, run_plan, saga_cases
from sagaflow.testing._crashchild import fork


@pytest.fixture(autouse=True)
def fresh_services() -> Iterator[None]:
    yield
    order.services = Services()  # in memory again, for the demo's tests


def test_verify_runs_the_idempotency_nothing_to_undo_and_crash_gates() -> None:
    report = verify_gates("examples.choreography")
    for name in ("OrderFlow", "OrderOrchestration"):
        gates = report[name]
        assert gates["idempotency"] == ("pass", "2 compensations run twice: no change")
        assert gates["nothing to undo"] == ("pass", "2 compensations run with nothing to undo")
    # (OrderFlow's crash gate is skipped: its steps run in its participants, which
    # run_choreography crashes; tests/test_cli_verify.py)
    gates = crash_verified("examples.choreography.saga:OrderOrchestration")
    assert gates["crash points"][1].startswith("33 crash points")


@pytest.mark.parametrize("flow", [OrderOrchestration, OrderFlow])
def test_an_amount_over_the_limit_is_declined_and_the_stock_released(flow: type) -> None:
    assert find(saga_cases(flow), lambda c: c.saga.amount > Services().limit)

    @settings(max_examples=20, database=None, deadline=None)
    @given(saga_cases(flow))
    def each(case: SagaCase) -> None:
        run = run_plan(case).check()  # a compensated run leaves the snapshot as found
        if case.saga.amount > Services().limit:
            assert run.result.status is SagaStatus.COMPENSATED
            assert "over the card's limit" in str(run.result.error)
            assert run.after == run.before == {"reserved": [], "charged": [], "confirmed": []}
        else:
            assert run.result.status is SagaStatus.COMPLETED
            oid = case.saga.order_id
            assert run.after == {"reserved": [oid], "charged": [(oid, case.saga.amount)],
                                 "confirmed": [oid]}

    each()


def test_the_cases_services_state_outlives_the_process_that_changed_it() -> None:
    case = find(saga_cases(OrderOrchestration), lambda _: True)
    case.setup()
    ran, code = fork(lambda: order.services.charge("o-9", Decimal(5)), 30)
    assert (ran, code) == ("ch-o-9", 0)
    assert case.snapshot()["charged"] == [("o-9", Decimal(5))]

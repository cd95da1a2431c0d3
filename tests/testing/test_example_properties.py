"""Every example saga, property-tested: at least 500 generated failure plans each.

The saga classes are discovered in the ``examples`` package when the tests are
collected, so a new example is tested as soon as it exists. Each example module may
define ``example_sagas()``, a function returning a hypothesis strategy of saga instances
or of :class:`~sagaflow.testing.SagaCase` (a saga with ``setup``, which resets its
participants before every run, and ``snapshot``, which lets the toolkit check that a
compensated run leaves them as it found them). Without one, instances come from
``st.builds`` and a step may fail on its own (its inputs are arbitrary), so only the
framework's invariants are held.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from hypothesis import HealthCheck, given, settings

import examples
from sagaflow import is_saga, spec_of
from sagaflow.testing import SagaCase, failure_plans, run_plan, saga_cases

EXAMPLES = settings(
    max_examples=max(500, settings.default.max_examples),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def discover() -> list[type]:
    found: list[type] = []
    for info in pkgutil.walk_packages(examples.__path__, "examples."):
        if info.name.rsplit(".", 1)[-1] == "__main__":  # running it is the demo
            continue
        module = importlib.import_module(info.name)
        found += [
            value for value in vars(module).values()
            if isinstance(value, type) and is_saga(value) and value.__module__ == module.__name__
        ]
    return found


SAGAS = discover()


def test_every_example_saga_is_found() -> None:
    names = {cls.__name__ for cls in SAGAS}
    assert "TransferSaga" in names
    assert len(SAGAS) == len({spec_of(cls).name for cls in SAGAS})


@pytest.mark.parametrize("saga_class", SAGAS, ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
def test_example_saga_keeps_every_invariant(saga_class: type) -> None:
    cases = saga_cases(saga_class)  # the module's example_sagas(), else from its fields

    @EXAMPLES
    @given(case=cases, plan=failure_plans(saga_class))
    def check(case: SagaCase, plan) -> None:
        run_plan(case, plan).check()

    check()

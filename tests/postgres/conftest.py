"""Fixtures of the PostgreSQL tests: the session's throwaway cluster
(tests/postgres_cluster.py) and a fresh schema per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_cluster import drop_schema, fresh_schema, pg_url  # noqa: F401  (a fixture)

from sagaflow.stores.postgres import PostgresStore


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:  # noqa: F811
    """A schema of its own for this test, dropped afterwards."""
    name = fresh_schema()
    yield name
    drop_schema(pg_url, name)


@pytest.fixture
def store_url(pg_url: str, schema: str) -> str:  # noqa: F811
    """A ``postgresql://`` URL of this test's schema."""
    return f"{pg_url}&schema={schema}"


@pytest.fixture
def pg_store(pg_url: str, schema: str) -> Iterator[PostgresStore]:  # noqa: F811
    """A PostgresStore on this test's (empty) schema."""
    store = PostgresStore(pg_url, schema=schema)
    yield store
    store.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without ``-m``, this folder's slow tests are left out (``./run.sh deep`` runs them
    with ``-m "slow or not slow"``)."""
    if config.option.markexpr:
        return
    here = Path(__file__).resolve().parent
    slow = [i for i in items if i.get_closest_marker("slow") and here in i.path.parents]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [i for i in items if i not in slow]

"""Fixtures of the PostgreSQL tests: the session's throwaway cluster
(tests/postgres_cluster.py) and a fresh schema per test."""

from __future__ import annotations

from collections.abc import Iterator

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

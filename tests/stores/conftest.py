"""The store fixture: the contract suite runs against every store.

A new durable store joins by adding a parameter here. PostgreSQL runs in a throwaway
cluster started once per session (tests/postgres_cluster.py), a fresh schema per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_cluster import cluster_url, drop_schema, fresh_schema

from sagaflow.stores import MemoryStore, Store
from sagaflow.stores.sqlite import SQLiteStore

STORES = ["memory", "sqlite-full", "sqlite-normal", "postgres"]
DURABLE = ["sqlite-full", "sqlite-normal"]


def open_kind(kind: str, path: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite-full":
        return SQLiteStore(path / "sagas.db")
    if kind == "sqlite-normal":
        return SQLiteStore(path / "sagas.db", synchronous="NORMAL")
    raise ValueError(kind)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each store in turn, empty."""
    schema = None
    if request.param == "postgres":
        from sagaflow.stores.postgres import PostgresStore

        url = cluster_url(request.config)
        schema = fresh_schema()
        s: Store = PostgresStore(url, schema=schema)
    else:
        s = open_kind(request.param, tmp_path)
    yield s
    close = getattr(s, "close", None)
    if close is not None:
        close()
    if schema is not None:
        drop_schema(url, schema)


@pytest.fixture(params=DURABLE)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLiteStore]:
    """Each durable store in turn, empty; ``reopen()`` gives a second one on the same data."""
    s = open_kind(request.param, tmp_path)
    assert isinstance(s, SQLiteStore)
    yield s
    s.close()

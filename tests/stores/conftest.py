"""The store fixture: the contract suite runs against every store.

A new durable store (PostgreSQL) joins by adding a parameter here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sagaflow.stores import MemoryStore, Store
from sagaflow.stores.sqlite import SQLiteStore

STORES = ["memory", "sqlite-full", "sqlite-normal"]
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
    s = open_kind(request.param, tmp_path)
    yield s
    close = getattr(s, "close", None)
    if close is not None:
        close()


@pytest.fixture(params=DURABLE)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLiteStore]:
    """Each durable store in turn, empty; ``reopen()`` gives a second one on the same data."""
    s = open_kind(request.param, tmp_path)
    assert isinstance(s, SQLiteStore)
    yield s
    s.close()

"""Stores keep saga records: memory, SQLite (the embedded default), PostgreSQL; one protocol.

``PostgresStore`` is imported on first use, so ``import sagaflow`` works without psycopg.
"""

from typing import TYPE_CHECKING

from ._rows import StoredSaga
from ._sql import OutboxStats
from .base import OutboxStore, Quarantined, Store, Stored
from .memory import MemoryStore
from .sqlite import SQLiteStore
from .url import open_store

if TYPE_CHECKING:
    from .postgres import PostgresStore


def __getattr__(name: str) -> object:
    if name == "PostgresStore":
        from .url import postgres_module

        return postgres_module().PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MemoryStore",
    "OutboxStats",
    "OutboxStore",
    "PostgresStore",
    "Quarantined",
    "SQLiteStore",
    "Store",
    "Stored",
    "StoredSaga",
    "open_store",
]

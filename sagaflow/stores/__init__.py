"""Stores keep saga records: memory, SQLite (the embedded default); one protocol."""

from .base import Store, Stored
from .memory import MemoryStore
from .sqlite import SQLiteStore, StoredSaga
from .url import open_store

__all__ = ["MemoryStore", "SQLiteStore", "Store", "Stored", "StoredSaga", "open_store"]

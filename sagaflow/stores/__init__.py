"""Stores keep saga records: memory now; durable stores share the same protocol."""

from .base import Store
from .memory import MemoryStore

__all__ = ["MemoryStore", "Store"]

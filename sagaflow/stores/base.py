"""The store protocol: where runs are recorded, write-ahead.

A driver calls :meth:`Store.save` after every decision of the engine and before it acts
on it, so a step never starts before its "started" record is saved and its outcome is
saved before the next one starts. Records are plain data (see :mod:`sagaflow.records`);
durable stores serialize them, the memory store keeps the objects.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol, runtime_checkable

from ..records import SagaRecord, SagaStatus

__all__ = ["AsyncStoreMixin", "Store"]


@runtime_checkable
class Store(Protocol):
    """What the orchestrator needs of a store, sync and async."""

    def create(self, record: SagaRecord) -> SagaRecord | None:
        """Insert ``record`` unless its saga id exists; return the existing record if it does."""

    def save(self, record: SagaRecord) -> None:
        """Persist ``record`` (durably, for a durable store) before returning."""

    def load(self, saga_id: str) -> SagaRecord | None:
        """The record of ``saga_id``, or ``None``."""

    def query(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> list[SagaRecord]:
        """Records by status and saga name, most recently updated first."""

    async def acreate(self, record: SagaRecord) -> SagaRecord | None:
        """:meth:`create`, for the async driver."""

    async def asave(self, record: SagaRecord) -> None:
        """:meth:`save`, for the async driver."""

    async def aload(self, saga_id: str) -> SagaRecord | None:
        """:meth:`load`, for the async driver."""


class AsyncStoreMixin:
    """Async methods that call the sync ones: right for stores that never block."""

    def create(self, record: SagaRecord) -> SagaRecord | None:
        raise NotImplementedError  # pragma: no cover - provided by the store

    def save(self, record: SagaRecord) -> None:
        raise NotImplementedError  # pragma: no cover - provided by the store

    def load(self, saga_id: str) -> SagaRecord | None:
        raise NotImplementedError  # pragma: no cover - provided by the store

    async def acreate(self, record: SagaRecord) -> SagaRecord | None:
        return self.create(record)

    async def asave(self, record: SagaRecord) -> None:
        self.save(record)

    async def aload(self, saga_id: str) -> SagaRecord | None:
        return self.load(saga_id)

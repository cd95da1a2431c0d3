"""The in-memory store: records live as long as the process (tests, demos, short jobs)."""

from __future__ import annotations

from collections.abc import Collection

from ..records import SagaRecord, SagaStatus
from .base import AsyncStoreMixin

__all__ = ["MemoryStore"]


class MemoryStore(AsyncStoreMixin):
    """Keeps the live record objects in a dict; nothing survives the process."""

    def __init__(self) -> None:
        self._records: dict[str, SagaRecord] = {}

    def create(self, record: SagaRecord) -> SagaRecord | None:
        # dict.setdefault is atomic under the GIL: two threads starting the same id
        # cannot both insert.
        existing = self._records.setdefault(record.saga_id, record)
        return None if existing is record else existing

    def save(self, record: SagaRecord) -> None:
        record.version += 1
        self._records[record.saga_id] = record

    def load(self, saga_id: str) -> SagaRecord | None:
        return self._records.get(saga_id)

    def query(
        self,
        *,
        status: Collection[SagaStatus] | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> list[SagaRecord]:
        found = [
            r
            for r in list(self._records.values())
            if (status is None or r.status in status) and (name is None or r.saga_name == name)
        ]
        found.sort(key=lambda r: r.updated_at, reverse=True)
        return found if limit is None else found[:limit]

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._records)} sagas)"

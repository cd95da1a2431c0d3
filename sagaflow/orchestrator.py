"""The :class:`Orchestrator`: runs saga instances, sync or async, and answers about them."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from .clock import Clock, SystemClock
from .definition import SagaSpec, spec_of
from .engine import new_record
from .errors import AlreadyExecuting, SagaflowError
from .events import Listener, Listeners
from .records import SagaRecord, SagaResult, SagaStatus
from .runner import WorkerPool, run_async, run_sync
from .stores import MemoryStore, Store

__all__ = ["Orchestrator"]

_ACTIVE = (SagaStatus.NOT_STARTED, SagaStatus.RUNNING, SagaStatus.COMPENSATING)
_FINISHED = (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED)


class Orchestrator:
    """Runs sagas and keeps their records.

    ``store`` keeps the records (default: a fresh :class:`~sagaflow.stores.MemoryStore`);
    ``listeners`` are callables told every lifecycle event (``async def`` ones only under
    :meth:`arun`); ``clock`` and ``rand`` are for tests: a virtual clock, a fixed jitter.
    """

    def __init__(
        self,
        store: Store | None = None,
        listeners: Iterable[Listener] = (),
        *,
        clock: Clock | None = None,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self.store: Store = MemoryStore() if store is None else store
        self.listeners = Listeners(listeners)
        self.clock: Clock = SystemClock() if clock is None else clock
        self.rand: Callable[[], float] = random.random if rand is None else rand
        self._workers = WorkerPool()

    def run(self, saga: object, saga_id: str | None = None) -> SagaResult:
        """Run ``saga`` to its end on this thread; its result, whatever the outcome.

        Starting an id that is running raises :class:`~sagaflow.AlreadyExecuting`;
        an id that finished returns the stored result without running anything.
        """
        spec = spec_of(saga)
        if spec.is_async:
            names = ", ".join(
                s.name for s in spec.steps if s.is_async or s.compensation_is_async
            )
            raise TypeError(
                f"saga {spec.name!r} has async steps or compensations ({names}): "
                "run it with 'await orchestrator.arun(saga)'"
            )
        if self.listeners.async_:
            raise TypeError(
                f"async listeners {self.listeners.async_!r} can only be awaited under "
                "arun(): use arun(), or give this orchestrator sync listeners"
            )
        record = self._new(spec, saga, saga_id)
        existing = self.store.create(record)
        if existing is not None:
            return self._existing(spec, existing)
        run_sync(self, spec, record)
        return SagaResult.of(record)

    async def arun(self, saga: object, saga_id: str | None = None) -> SagaResult:
        """Run ``saga`` to its end in this task; see :meth:`run`.

        Cancelling the awaiting task while steps run makes the saga compensate (shielded
        from the cancellation), after which the cancellation propagates.
        """
        spec = spec_of(saga)
        record = self._new(spec, saga, saga_id)
        existing = await self.store.acreate(record)
        if existing is not None:
            return self._existing(spec, existing)
        await run_async(self, spec, record)
        return SagaResult.of(record)

    def get(self, saga_id: str) -> SagaResult | None:
        """A snapshot of the saga ``saga_id`` (running or finished), or ``None``."""
        record = self.store.load(saga_id)
        return None if record is None else SagaResult.of(record)

    def running(self, name: str | None = None) -> list[SagaResult]:
        """Snapshots of the sagas not yet finished, most recently updated first."""
        return [SagaResult.of(r) for r in self.store.query(status=_ACTIVE, name=name)]

    def history(self, name: str | None = None, limit: int | None = None) -> list[SagaResult]:
        """Snapshots of finished sagas, most recently finished first."""
        records = self.store.query(status=_FINISHED, name=name, limit=limit)
        return [SagaResult.of(r) for r in records]

    def close(self) -> None:
        """Stop idle worker threads (calls still running finish on their own)."""
        self._workers.close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _new(self, spec: SagaSpec, saga: object, saga_id: str | None) -> SagaRecord:
        if saga_id is None:
            saga_id = uuid.uuid4().hex
        elif not isinstance(saga_id, str) or not saga_id:
            raise ValueError(f"saga_id must be a non-empty string, got {saga_id!r}")
        return new_record(spec, saga, saga_id, self.clock.now())

    @staticmethod
    def _existing(spec: SagaSpec, record: SagaRecord) -> SagaResult:
        if record.saga_name != spec.name:
            raise SagaflowError(
                f"saga id {record.saga_id!r} belongs to a {record.saga_name!r} saga, not "
                f"{spec.name!r}: saga ids must be unique across saga types"
            )
        if not record.status.is_terminal:
            raise AlreadyExecuting(record.saga_id, record.status.value)
        return SagaResult.of(record)

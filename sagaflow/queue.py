"""Queued sagas, the client's side: :func:`enqueue` a saga for a worker to run,
:func:`wait` for its result.

A queue store (today: :class:`~sagaflow.stores.postgres.PostgresStore`) keeps the queue
beside the records; workers (:mod:`sagaflow.worker`) claim and run what is due. Nothing
here drives a saga, so the :class:`~sagaflow.Orchestrator` offers these as
``start``/``wait`` without knowing workers.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from .clock import Clock, SystemClock
from .engine import new_record
from .errors import SagaflowError, SagaNotFound
from .records import SagaRecord, SagaResult, SagaStatus
from .spec import spec_of

__all__ = [
    "QueueStore",
    "aenqueue",
    "enqueue",
    "enqueue_many",
    "new_saga_id",
    "queue_store",
    "wait",
    "wait_async",
]


@runtime_checkable
class QueueStore(Protocol):
    """A store that keeps a queue of sagas for workers (PostgreSQL)."""

    def enqueue(self, record: SagaRecord, run_at: float | None = None) -> SagaRecord | None:
        """Store ``record`` as due at ``run_at``; the existing record if its id exists."""

    def enqueue_many(
        self, records: Iterable[SagaRecord], run_at: float | None = None
    ) -> list[SagaRecord | None]:
        """:meth:`enqueue` for many records, committed together."""

    async def aenqueue(
        self, record: SagaRecord, run_at: float | None = None
    ) -> SagaRecord | None:
        """:meth:`enqueue` for async code."""

    def status_of(self, saga_id: str) -> SagaStatus | None:
        """The status of ``saga_id`` (``None``: no such saga): a cheap poll."""

    def load(self, saga_id: str) -> SagaRecord | None:
        """The record of ``saga_id``, or ``None``."""


def queue_store(store: object) -> QueueStore:
    """``store`` if it keeps a queue; a clear ``TypeError`` otherwise."""
    if isinstance(store, QueueStore):
        return store
    raise TypeError(
        f"queued sagas need the PostgreSQL store, not {store!r}: open one with "
        "open_store('postgresql://user@host/db')"
    )


def new_saga_id(saga_id: str | None) -> str:
    """``saga_id``, checked, or a new random one (128 bits; ``uuid4()`` costs 5x more)."""
    if saga_id is None:
        return os.urandom(16).hex()
    if not isinstance(saga_id, str) or not saga_id:
        raise ValueError(f"saga_id must be a non-empty string, got {saga_id!r}")
    return saga_id


def _queued_record(saga: object, saga_id: str | None, now: float) -> SagaRecord:
    return new_record(spec_of(saga), saga, new_saga_id(saga_id), now)


def _check_existing(record: SagaRecord, existing: SagaRecord | None) -> str:
    if existing is not None and existing.saga_name != record.saga_name:
        raise SagaflowError(
            f"saga id {record.saga_id!r} belongs to a {existing.saga_name!r} saga, not "
            f"{record.saga_name!r}: saga ids must be unique across saga types"
        )
    return record.saga_id


def enqueue(
    store: object,
    saga: object,
    saga_id: str | None = None,
    *,
    run_at: float | None = None,
    clock: Clock | None = None,
) -> str:
    """Store ``saga`` for a worker to run (from ``run_at``, default now); its saga id.

    Enqueueing an id that exists runs nothing again: the id is returned (a client may
    retry an enqueue safely), unless it belongs to another saga type.
    """
    queue = queue_store(store)
    record = _queued_record(saga, saga_id, (clock or SystemClock()).now())
    return _check_existing(record, queue.enqueue(record, run_at))


def enqueue_many(
    store: object, sagas: Iterable[object], *, clock: Clock | None = None
) -> list[str]:
    """:func:`enqueue` for many sagas (new ids), committed in one transaction."""
    queue = queue_store(store)
    now = (clock or SystemClock()).now()
    records = [_queued_record(saga, None, now) for saga in sagas]
    queue.enqueue_many(records)
    return [r.saga_id for r in records]


async def aenqueue(
    store: object,
    saga: object,
    saga_id: str | None = None,
    *,
    run_at: float | None = None,
    clock: Clock | None = None,
) -> str:
    """:func:`enqueue` for async code (group-committed with other writes)."""
    queue = queue_store(store)
    record = _queued_record(saga, saga_id, (clock or SystemClock()).now())
    return _check_existing(record, await queue.aenqueue(record, run_at))


def _result(queue: QueueStore, saga_id: str) -> SagaResult | None:
    status = queue.status_of(saga_id)
    if status is None:
        raise SagaNotFound(saga_id)
    if not status.is_terminal:
        return None
    record = queue.load(saga_id)
    if record is None:  # deleted in between
        raise SagaNotFound(saga_id)
    return SagaResult.of(record)


def _timed_out(saga_id: str, timeout: float, status: SagaStatus | None) -> TimeoutError:
    now = "unknown" if status is None else status.value
    return TimeoutError(
        f"saga {saga_id!r} did not finish within {timeout:g}s (it is {now}); wait again, "
        "or look at it with 'sagaflow sagas show'"
    )


def wait(
    store: object,
    saga_id: str,
    timeout: float | None = None,
    *,
    poll: float = 0.5,
) -> SagaResult:
    """The result of saga ``saga_id`` once it has finished (whoever runs it).

    Polls the store, from every few milliseconds up to every ``poll`` seconds. Raises
    :class:`~sagaflow.SagaNotFound` for an unknown id and ``TimeoutError`` after
    ``timeout`` seconds.
    """
    queue = queue_store(store)
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.005
    while True:
        found = _result(queue, saga_id)
        if found is not None:
            return found
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                assert timeout is not None
                raise _timed_out(saga_id, timeout, queue.status_of(saga_id))
            delay = min(delay, left)
        time.sleep(delay)
        delay = min(delay * 2, poll)


async def wait_async(
    store: object,
    saga_id: str,
    timeout: float | None = None,
    *,
    poll: float = 0.5,
) -> SagaResult:
    """:func:`wait` for async code (the store is read on a worker thread)."""
    queue = queue_store(store)
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.005
    while True:
        found = await asyncio.to_thread(_result, queue, saga_id)
        if found is not None:
            return found
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                assert timeout is not None
                status = await asyncio.to_thread(queue.status_of, saga_id)
                raise _timed_out(saga_id, timeout, status)
            delay = min(delay, left)
        await asyncio.sleep(delay)
        delay = min(delay * 2, poll)

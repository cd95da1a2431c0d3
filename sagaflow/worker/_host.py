"""What a worker and the ways it serves a store (:mod:`._file`, :mod:`._queue`) share:
the lease a step can read, the counts, the clock's :class:`Park`, and each side's view
of the other (:class:`Mode`, :class:`Host`), so that the modes never import the worker."""

from __future__ import annotations

import asyncio
import contextvars
from collections import Counter
from typing import Any, Protocol

import attrs

from ..clock import Clock
from ..errors import SagaflowError
from ..orchestrator import Orchestrator
from ..records import SagaStatus
from ..spec import SagaSpec

__all__ = ["LEASE", "Host", "Lease", "Mode", "Park", "WorkerStats", "current_lease"]


@attrs.define
class Lease:
    """The lease under which a PostgreSQL worker drives a saga: ``token`` is the saga's
    fence token from the claim (a re-claim by the same worker updates it), ``owner`` the
    worker's id. A participant that remembers the highest token it has seen for a saga
    can refuse calls carrying a lower one: they come from a worker that lost the saga."""

    saga_id: str
    token: int
    owner: str


LEASE: contextvars.ContextVar[Lease | None] = contextvars.ContextVar(
    "sagaflow_lease", default=None
)


def current_lease() -> Lease | None:
    """The lease of the saga whose step is running here, under a PostgreSQL
    :class:`Worker` (``None`` elsewhere)."""
    return LEASE.get()


@attrs.define
class WorkerStats:
    """What a worker did: sagas claimed (PostgreSQL), finished (by status), parked (at a
    wait, or until a retry is due), released (shutdown, errors), lost to another worker,
    quarantined (they cannot be decoded or driven: set aside until an operator acts);
    on SQLite, sagas recovered at start and parked sagas resumed; stalled sagas
    reported (``stalled_after``)."""

    claimed: int = 0
    finished: Counter[str] = attrs.field(factory=Counter)
    parked: int = 0
    released: int = 0
    lost: int = 0
    errors: int = 0
    quarantined: int = 0
    recovered: int = 0
    resumed: int = 0
    stalled: int = 0

    def describe(self) -> str:
        done = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.finished.items())) or "none"
        text = (
            f"claimed {self.claimed}; finished: {done}; parked {self.parked}; "
            f"released {self.released}; lost to other workers {self.lost}; errors {self.errors}; "
            f"quarantined {self.quarantined}"
        )
        if self.recovered or self.resumed:
            text += f"; recovered {self.recovered}; resumed {self.resumed}"
        if self.stalled:
            text += f"; stalled sagas reported {self.stalled}"
        return text

    def ended(self, status: SagaStatus) -> None:
        """Count a drive that returned: parked at a wait (still RUNNING), or finished."""
        if status is SagaStatus.RUNNING:
            self.parked += 1
        else:
            self.finished[status.value] += 1


class Park(SagaflowError):
    """Raised by the worker's clock instead of a sleep: a retry waiting longer than the
    worker holds one (PostgreSQL: the saga goes back to the queue, due then), or any
    retry once the worker is stopping (it resumes from its checkpoint later)."""

    def __init__(self, until: float) -> None:
        super().__init__(f"the worker let go of the saga until {until:.3f} (a retry's time)")
        self.until = until


class Mode(Protocol):
    """How a worker serves its store."""

    #: the store, and what the worker's orchestrator writes through (a store)
    store: Any
    view: Any
    #: a retry waiting longer than this lets go of its saga (infinity: slept)
    park_after: float

    async def serve(self) -> None:
        """Take and drive sagas until the worker is stopping."""

    def running(self) -> dict[Any, asyncio.Task[Any]]:
        """What the grace period waits for."""

    async def let_go(self, remaining: dict[Any, asyncio.Task[Any]]) -> None:
        """The grace period is over: make sure that the tasks ``remaining`` (about to be
        cancelled) can write nothing more."""

    async def finish(self) -> None:
        """The worker stopped: what it held is let go of (a lock, a thread)."""

    def close(self) -> None:
        """Let go of what the worker holds between runs (SQLite: the file's lock)."""


class Host(Protocol):
    """The worker as a mode sees it (:class:`~sagaflow.worker.Worker` is the one)."""

    id: str
    concurrency: int
    lease: float
    heartbeat: float
    poll: float
    park_after: float
    retry_later: float
    claim_batch: int
    stats: WorkerStats
    stopping: bool
    base_clock: Clock
    active: dict[str, asyncio.Task[None]]
    specs: dict[str, SagaSpec]
    wake: asyncio.Event | None
    orchestrator: Orchestrator

    def kinds(self) -> tuple[list[str], list[str]]:
        """The saga names and definition fingerprints this worker runs."""

    async def set_aside(self, sid: str, error: Exception) -> bool:
        """Quarantine ``sid`` if ``error`` says it cannot be decoded or driven."""

    def ended(self, sid: str) -> None:
        """The task driving ``sid`` is over."""

"""What a run is: :class:`SagaRecord` (what a store keeps) and :class:`SagaResult` (what users get).

Records are plain data: strings, numbers, enums, lists and the saga instance. The engine
mutates a record in place as the run goes; a result is a frozen snapshot of one.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from .errors import SagaflowError
from .events import LifecycleEvent

__all__ = [
    "OUTCOMES",
    "CompensationStatus",
    "SagaRecord",
    "SagaResult",
    "SagaStatus",
    "Signal",
    "StepRecord",
    "StepStatus",
    "outcome",
]


class SagaStatus(enum.Enum):
    """Where a saga run stands."""

    NOT_STARTED = "NOT_STARTED"
    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        """Whether the run is over (COMPLETED, COMPENSATED or FAILED)."""
        return self in _TERMINAL


_TERMINAL = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED})
_COMPLETED = SagaStatus.COMPLETED
_COMPENSATED = SagaStatus.COMPENSATED

#: A saga's outcome in one word: its status, told apart by why it ended (a business
#: rejection is not a failed step) and whether it waits. ``sagaflow sagas list`` shows
#: it and filters on it.
OUTCOMES = (
    "not-started", "running", "waiting", "compensating", "completed", "compensated",
    "rejected", "timed-out", "cancelled", "deadline", "failed",
)  # fmt: skip
#: The errors that name an outcome, by their class name (as the codec tags them).
_OUTCOME_OF_ERROR = {
    "SagaRejected": "rejected",
    "WaitTimedOut": "timed-out",
    "SagaCancelled": "cancelled",
    "SagaDeadlineExceeded": "deadline",
}
_UNFINISHED_OUTCOME = {
    SagaStatus.NOT_STARTED: "not-started",
    SagaStatus.RUNNING: "running",
    SagaStatus.COMPENSATING: "compensating",
}


def outcome(status: SagaStatus, error_type: str | None, parked: bool) -> str:
    """The word of :data:`OUTCOMES` for a saga of ``status`` whose error is of the class
    named ``error_type`` (``None``: no error), parked at a wait or not. A rejection
    after the pivot (status FAILED) is still "rejected"."""
    if not status.is_terminal:
        return "waiting" if parked else _UNFINISHED_OUTCOME[status]
    if status is _COMPLETED:
        return "completed"
    why = _OUTCOME_OF_ERROR.get(error_type or "")
    if why == "rejected":
        return why
    if status is SagaStatus.FAILED:
        return "failed"
    return why or "compensated"


def error_type(error: BaseException | None) -> str | None:
    """The class name :func:`outcome` reads of ``error``, as the codec tags it (the
    engine makes the errors that name an outcome itself: a rejection raised as a user's
    subclass of SagaRejected is recorded as a SagaRejected caused by it)."""
    return None if error is None else type(error).__name__


class StepStatus(enum.Enum):
    """The outcome of a forward step."""

    PENDING = "PENDING"  #: not reached
    RUNNING = "RUNNING"  #: an attempt is in flight (or the run waits to retry it)
    COMPLETED = "COMPLETED"
    SKIPPED = "SKIPPED"  #: a conditional step whose guard was false
    FAILED = "FAILED"  #: failed for good
    TIMED_OUT = "TIMED_OUT"  #: failed for good, and its outcome is unknown
    WAITING = "WAITING"  #: a wait: parked for its signal or its time
    REJECTED = "REJECTED"  #: it rejected the saga for a business reason (SagaRejected)
    EXPIRED = "EXPIRED"  #: a wait whose time ran out before its signal came


class CompensationStatus(enum.Enum):
    """Whether a step's effect was undone."""

    NOT_NEEDED = "NOT_NEEDED"
    PENDING = "PENDING"  #: scheduled: the saga is compensating and will get here
    RUNNING = "RUNNING"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"  #: could not be undone: an operator must finish it


@attrs.define(slots=True, weakref_slot=False)
class StepRecord:
    """One forward step of a run and, if it came to that, its compensation."""

    name: str
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    timed_out: bool = False  #: some attempt timed out: its effect is unknown
    compensation: CompensationStatus = CompensationStatus.NOT_NEEDED
    compensation_attempts: int = 0
    compensation_started_at: float | None = None
    compensation_finished_at: float | None = None
    compensation_error: str | None = None
    #: a parallel group's member or a fan-out's item waiting to retry: when (Unix time)
    wake_at: float | None = None
    #: a fan-out step: its items' records are ``record.steps[first_item:first_item +
    #: items]`` (after the saga's steps, appended when the fan-out started)
    first_item: int = 0
    items: int = 0

    @property
    def duration(self) -> float | None:
        """Seconds from the first attempt's start to the outcome."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def copy(self) -> StepRecord:
        """An independent copy (records are mutated in place by the engine)."""
        # Positional and explicit: attrs.evolve costs several times more, and results
        # copy every step record of a run.
        return StepRecord(
            self.name,
            self.status,
            self.attempts,
            self.started_at,
            self.finished_at,
            self.error,
            self.timed_out,
            self.compensation,
            self.compensation_attempts,
            self.compensation_started_at,
            self.compensation_finished_at,
            self.compensation_error,
            self.wake_at,
            self.first_item,
            self.items,
        )


@attrs.define(slots=True, eq=False)  # stores track records by weak reference
class SagaRecord:
    """One run of one saga instance, as a store keeps it.

    ``state`` is the run's state in the class's machine; ``cursor`` the forward step it
    is at (at a parallel group: its first member), or during compensation the position
    in ``undo`` (the step indices to compensate, newest first; a group's members
    together, in any order among themselves; a fan-out once, its items undone as a
    block). ``steps`` holds one record per step of the saga, then the fan-outs' item
    records (see :attr:`StepRecord.first_item`). ``wake_at`` is set while the run sleeps
    before a retry.
    ``path`` is every state change the run made, in order, as the machine's
    ``(source, trigger, destination)``: what a diagram of the run draws.
    """

    saga_id: str
    saga_name: str
    fingerprint: str
    data: Any
    steps: list[StepRecord]
    created_at: float
    status: SagaStatus = SagaStatus.NOT_STARTED
    state: str = "not_started"
    cursor: int = 0
    undo: list[int] = attrs.field(factory=list)
    wake_at: float | None = None
    deadline_at: float | None = None
    compensation_deadline_at: float | None = None
    updated_at: float = 0.0
    finished_at: float | None = None
    error: SagaflowError | None = None
    failures: dict[str, str] = attrs.field(factory=dict)
    events: list[Any] = attrs.field(factory=list)
    history: list[LifecycleEvent] = attrs.field(factory=list)
    version: int = 0
    resolution: str | None = None  #: an operator's note: this FAILED saga was handled by hand
    path: list[tuple[str, str, str]] = attrs.field(factory=list)
    #: Parked at a wait, holding nothing in any process: ``None`` when not parked; the
    #: signal's name it waits for; ``""`` for a timer (it wakes at ``wake_at`` only).
    waiting: str | None = None
    #: Per signal name, the arrival number (:attr:`Signal.seq`) of the last one delivered:
    #: a signal is delivered by the checkpoint that moves this mark, so exactly once.
    signal_marks: dict[str, int] = attrs.field(factory=dict)
    #: The business key the saga class declares (``@saga(key=...)``), as text: signals
    #: can find the saga by it.
    business_key: str | None = None

    @property
    def steps_executed(self) -> int:
        """Forward steps that completed."""
        return sum(1 for s in self.steps if s.status is StepStatus.COMPLETED)


@attrs.frozen
class Signal:
    """A signal as the store keeps it: durable once stored, delivered once.

    ``seq`` orders a saga's signals by arrival (it only grows); ``payload`` is the JSON
    text of the payload (the codec's encoding of the declared attrs class);
    ``signal_id`` is the caller's id (a second signal with it is ignored) or a fresh one.
    """

    saga_id: str
    seq: int
    name: str
    signal_id: str
    payload: str
    at: float


@attrs.frozen
class SagaResult:
    """A snapshot of a run: the answer of ``run``/``arun`` and of ``Orchestrator.get``.

    A finished saga is a result, not an exception: check ``status`` or call
    :meth:`raise_for_status`.
    """

    saga_id: str
    saga_name: str
    status: SagaStatus
    error: SagaflowError | None
    events: tuple[Any, ...]
    history: tuple[LifecycleEvent, ...]
    steps: tuple[StepRecord, ...]
    data: Any
    created_at: float
    updated_at: float
    finished_at: float | None
    resolution: str | None = None
    #: the state changes the run made, in order: ``(source, trigger, destination)``
    path: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def of(cls, record: SagaRecord) -> SagaResult:
        """A snapshot of ``record`` that later changes to the record do not touch.

        The step records of a COMPLETED or COMPENSATED saga are shared, not copied:
        nothing changes them any more (operators retry only FAILED sagas).
        """
        status = record.status
        if status is _COMPLETED or status is _COMPENSATED:
            steps = tuple(record.steps)
        else:
            steps = tuple([s.copy() for s in record.steps])
        return cls(
            record.saga_id,
            record.saga_name,
            status,
            record.error,
            tuple(record.events),
            tuple(record.history),
            steps,
            record.data,
            record.created_at,
            record.updated_at,
            record.finished_at,
            record.resolution,
            tuple(record.path),
        )

    @property
    def ok(self) -> bool:
        """Whether the saga completed."""
        return self.status is SagaStatus.COMPLETED

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish (``None`` while the saga runs)."""
        return None if self.finished_at is None else self.finished_at - self.created_at

    @property
    def steps_executed(self) -> int:
        """Forward steps that completed."""
        return sum(1 for s in self.steps if s.status is StepStatus.COMPLETED)

    @property
    def total_steps(self) -> int:
        """Forward steps the saga has."""
        return len(self.steps)

    def step(self, name: str) -> StepRecord:
        """The record of the step called ``name``."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"saga {self.saga_name!r} has no step {name!r}")

    @property
    def outcome(self) -> str:
        """The saga's outcome in one word (see :data:`OUTCOMES`): ``"rejected"`` when a
        step or a wait rejected it, ``"waiting"`` while it is parked at a wait, ..."""
        parked = any(s.status is StepStatus.WAITING for s in self.steps)
        return outcome(self.status, error_type(self.error), parked)

    def raise_for_status(self) -> SagaResult:
        """Return ``self`` if the saga completed; raise its error otherwise."""
        if self.status is SagaStatus.COMPLETED:
            return self
        if self.error is not None:
            raise self.error
        raise SagaflowError(f"saga {self.saga_id!r} is {self.status.value}, not COMPLETED")

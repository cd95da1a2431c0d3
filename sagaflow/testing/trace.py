"""What a run under test did, call by call: :class:`CallRecord`, :class:`Trace`, and their text.

The harness (:mod:`~sagaflow.testing.harness`) records a :class:`Trace`; the invariants
(:mod:`~sagaflow.testing.invariants`) read one. Both depend on this module, which
depends on neither.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..context import Direction
from ..errors import SagaRejected
from ..records import SagaResult, SagaStatus, Signal, StepStatus
from ..spec import SagaSpec
from .plan import FailurePlan, Fault

__all__ = [
    "SUCCEED",
    "CallRecord",
    "Outcome",
    "ParkSeen",
    "SentSignal",
    "Trace",
    "error_text",
    "diff",
    "format_signals",
    "format_trace",
]

FORWARD = Direction.FORWARD
COMPENSATE = Direction.COMPENSATE


@attrs.frozen
class Outcome:
    """What a call does: succeed (``fault is None``) or fail with ``fault``.

    ``effect``: whether the user's function runs before the failure shows (a success
    always runs it). ``cause`` says why, for the trace.
    """

    fault: Fault | None = None
    effect: bool = False
    cause: str = ""

    @property
    def calls_user(self) -> bool:
        return self.fault is None or self.effect

    def __str__(self) -> str:
        if self.fault is None:
            return "-"
        eff = "+effect" if self.effect else ""
        return f"{self.fault.value}{eff}"


SUCCEED = Outcome()


@attrs.define(slots=True, eq=False)
class CallRecord:
    """One call of a step or compensation, as the run made it.

    ``reported`` is what the orchestrator was told: ``"ok"``, ``"error"``,
    ``"timeout"`` or ``"cancelled"``; ``error`` the exception it saw (injected, or the
    user's own, ``user_error``). ``ran_user`` says whether the user's function ran.
    ``payload``: what a wait's handler was handed (the delivered signal's payload).
    """

    seq: int
    step: str
    index: int
    direction: Direction
    attempt: int
    key: str
    at: float
    timeout: float | None
    injected: Outcome
    ended: float | None = None
    ran_user: bool = False
    user_error: BaseException | None = None
    reported: str = "pending"
    error: BaseException | None = None
    emitted: tuple[Any, ...] = ()
    payload: Any = None
    #: the record the call settles: a member's step name, an item's ``"pick[a]"``
    #: (``""``: the step's own)
    name: str = ""

    @property
    def record_name(self) -> str:
        """The name of the record the call settles (the idempotency key's step part)."""
        return self.name or self.step

    @property
    def ok(self) -> bool:
        return self.reported == "ok"

    @property
    def rejected(self) -> bool:
        """Whether the call rejected the saga (raised :class:`~sagaflow.SagaRejected`)."""
        return self.reported == "error" and isinstance(self.error, SagaRejected)

    @property
    def label(self) -> str:
        name = self.record_name
        return name if self.direction is FORWARD else f"undo {name}"


@attrs.define(slots=True, eq=False)
class SentSignal:
    """One signal the run sent to its saga, and what ``signal()`` made of it.

    ``why`` says what the plan (or the rule) meant by it; ``step`` the wait it was meant
    for. ``fits``: its payload fits the declared class (a planned refusal's does not);
    ``finished``: the saga had finished when it was sent; ``rejects``: the payload is one
    that must be rejected. ``outcome``: ``"stored"``, ``"ignored"`` (a signal with its id
    was stored already) or ``"refused"`` (``error`` says why); ``kept_before`` /
    ``kept_after``: how many signals the store held for the saga around the call.
    """

    seq: int
    at: float
    name: str
    signal_id: str
    payload: Any
    why: str
    step: str | None = None
    fits: bool = True
    finished: bool = False
    rejects: bool = False
    outcome: str = "pending"
    error: BaseException | None = None
    kept_before: int = 0
    kept_after: int = 0

    def __str__(self) -> str:
        err = f": {self.error}" if self.error is not None else ""
        return (f"{self.name!r} id {self.signal_id!r} ({self.why}) "
                f"{_short_repr(self.payload)} -> {self.outcome}{err}")


@attrs.frozen
class ParkSeen:
    """The saga as it was seen parked at a wait (``until``: when the driver was told to
    wake it)."""

    at: float
    step: str
    signal: str | None
    until: float | None
    status: SagaStatus
    step_status: StepStatus
    state: str
    waiting: str | None
    wake_at: float | None


@attrs.frozen(eq=False)
class Trace:
    """One run of a saga: the result and everything seen on the way, call by call.

    What :func:`~sagaflow.testing.check_invariants` reads. ``plan`` is ``None`` for runs
    driven rule by rule (the stateful test). ``before`` / ``after`` are the
    participants' snapshots when a snapshot function was given.
    """

    spec: SagaSpec
    saga_id: str
    plan: FailurePlan[Any] | None
    driver: str
    result: SagaResult
    calls: tuple[CallRecord, ...]
    sleeps: tuple[float, ...]
    rand: float | None
    started_at: float
    deadline_at: float | None
    deadline_fired: tuple[str, float] | None
    cancelled: bool
    final_state: str
    compensation_deadline_at: float | None
    before: Any = None
    after: Any = None
    snapshotted: bool = False
    complete: bool = True
    allow_step_errors: bool = False
    sent: tuple[SentSignal, ...] = ()
    kept: tuple[Signal, ...] = ()
    signal_marks: tuple[tuple[str, int], ...] = ()
    parks: tuple[ParkSeen, ...] = ()

    @property
    def status(self) -> SagaStatus:
        return self.result.status

    def forward_calls(self, step: str | None = None) -> list[CallRecord]:
        return [c for c in self.calls if c.direction is FORWARD and step in (None, c.step)]

    def compensation_calls(self, step: str | None = None) -> list[CallRecord]:
        return [c for c in self.calls if c.direction is COMPENSATE and step in (None, c.step)]

    def table(self) -> str:
        """The calls as a compact table (times in virtual seconds from the start)."""
        return format_trace(self)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_signals(run: Trace) -> str:
    """The signals the run sent, one a line (times in virtual seconds from the start)."""
    if not run.sent:
        return "  (none)"
    return "\n".join(f"  {s.at - run.started_at:>8g}  {s}" for s in run.sent)


def error_text(error: BaseException | None) -> str:
    """An error's repr, cut to 100 characters."""
    if error is None:
        return "no error"
    text = repr(error)
    return text if len(text) <= 100 else text[:97] + "..."


def diff(before: Any, after: Any) -> str:
    """What differs between two snapshots of the participants, key by key for dicts."""
    if isinstance(before, dict) and isinstance(after, dict):
        lines = []
        for key in list(before) + [k for k in after if k not in before]:
            b, a = before.get(key, "<missing>"), after.get(key, "<missing>")
            if b != a:
                lines.append(f"{key!r}: before {b!r}, after {a!r}")
        return "\n".join(lines)
    return f"before: {before!r}\nafter:  {after!r}"


def format_trace(run: Trace) -> str:
    """The run's calls as a table: time, call, attempt, injected fault, user code, outcome."""
    t0 = run.started_at
    head = ("#", "t", "call", "try", "injected", "user fn", "reported", "idempotency key")
    rows = [head]
    for c in run.calls:
        if not c.ran_user:
            user = "not run"
        elif c.user_error is not None:
            user = f"raised {error_text(c.user_error)}"
        else:
            user = "ran"
        cause = str(c.injected)
        if c.injected.fault and c.injected.cause:
            cause += f" ({c.injected.cause})"
        if c.injected.fault is None and c.injected.cause:
            cause = c.injected.cause
        rows.append((str(c.seq), f"{c.at - t0:g}", c.label, str(c.attempt), cause, user,
                     c.reported, c.key))
    if len(rows) == 1:
        return "  (no calls)"
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    )

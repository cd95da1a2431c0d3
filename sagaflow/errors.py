"""The exception hierarchy: one root, usage errors also subclass the fitting builtin."""

from __future__ import annotations

from collections.abc import Sequence

from .clock import duration

__all__ = [
    "AlreadyExecuting",
    "CodecError",
    "CompensationError",
    "ConcurrentModification",
    "CorruptRecord",
    "GraphvizNotFound",
    "InvalidTransition",
    "LeaseLost",
    "OperatorError",
    "SagaCancelled",
    "SagaDeadlineExceeded",
    "SagaDefinitionChanged",
    "SagaDefinitionError",
    "SagaNotFound",
    "SagaQuarantined",
    "SagaRejected",
    "SagaflowError",
    "ScaffoldError",
    "SignalRefused",
    "StepError",
    "StepTimeout",
    "StoreError",
    "UnknownSaga",
    "UnknownSagaClass",
    "WaitTimedOut",
]


class SagaflowError(Exception):
    """Root of every error sagaflow raises or reports."""


class SagaDefinitionError(SagaflowError, TypeError):
    """A saga class is malformed; lists every problem found, each with its fix."""

    def __init__(self, saga: str, problems: Sequence[str]) -> None:
        self.saga = saga
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"saga {saga!r} has {len(self.problems)} definition {noun}:\n{lines}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.saga, self.problems))


class StepError(SagaflowError):
    """A forward step failed for good (its retries, if any, are exhausted)."""

    def __init__(self, step_index: int, step: str, cause: BaseException | str) -> None:
        self.step_index = step_index
        self.step = step
        self.cause = cause
        super().__init__(f"step {step_index + 1} {step!r} failed: {_describe(cause)}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.step_index, self.step, self.cause))


class StepTimeout(StepError):
    """A step ran past its timeout; its outcome is unknown (it may have taken effect)."""

    def __init__(self, step_index: int, step: str, timeout: float) -> None:
        self.timeout = timeout
        SagaflowError.__init__(self, f"step {step_index + 1} {step!r} timed out after {timeout:g}s")
        self.step_index = step_index
        self.step = step
        self.cause = f"timed out after {timeout:g}s"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.step_index, self.step, self.timeout))


class SagaDeadlineExceeded(SagaflowError):
    """The saga's deadline passed before its forward steps were done."""

    def __init__(self, deadline: float, step: str | None = None) -> None:
        self.deadline = deadline
        self.step = step
        where = f" during step {step!r}" if step else ""
        super().__init__(f"saga deadline of {deadline:g}s passed{where}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.deadline, self.step))


class SagaCancelled(SagaflowError):
    """The task running the saga was cancelled; the saga compensated before re-raising."""

    def __init__(self, step: str | None = None) -> None:
        self.step = step
        where = f" during step {step!r}" if step else ""
        super().__init__(f"saga cancelled{where}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.step,))


class SagaRejected(SagaflowError):
    """A business "no": raise it from a step or a wait's handler to reject the saga.

    A rejection is not a technical failure: it is never retried, the completed steps
    are compensated, and the saga ends COMPENSATED with this error as its outcome
    (FAILED, for an operator, when it comes after the pivot). ``step`` is filled in by
    the engine with the step or wait that rejected.
    """

    def __init__(self, reason: str, step: str | None = None) -> None:
        self.reason = reason
        self.step = step
        where = f" at {step!r}" if step else ""
        super().__init__(f"saga rejected{where}: {reason}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.reason, self.step))


class WaitTimedOut(SagaflowError):
    """A wait's time ran out before its signal came (the saga compensated or failed)."""

    def __init__(self, step: str, signal: str | None, timeout: float) -> None:
        self.step = step
        self.signal = signal
        self.timeout = timeout
        what = f"signal {signal!r}" if signal else "its timer"
        super().__init__(f"wait {step!r} timed out after {duration(timeout)} without {what}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.step, self.signal, self.timeout))


class SignalRefused(SagaflowError, ValueError):
    """A signal that cannot be delivered; nothing was stored.

    ``reason`` says why (the saga finished, does not wait for that name, the payload
    does not decode to the declared type, no saga has that business key) and the fix.
    """

    def __init__(self, saga_id: str | None, signal: str, reason: str) -> None:
        self.saga_id = saga_id
        self.signal = signal
        self.reason = reason
        whom = f"saga {saga_id!r}" if saga_id else "no saga"
        super().__init__(f"signal {signal!r} to {whom} refused: {reason}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.saga_id, self.signal, self.reason))


class CompensationError(SagaflowError):
    """Compensations failed for good: an operator must finish the undo by hand.

    ``failures`` maps each step whose compensation could not be done to the last
    error; ``reason`` is the error that made the saga compensate in the first place.
    """

    def __init__(
        self, failures: dict[str, str], reason: SagaflowError | None = None
    ) -> None:
        self.failures = dict(failures)
        self.reason = reason
        listed = "; ".join(f"{step}: {err}" for step, err in self.failures.items())
        why = f" (compensating after: {reason})" if reason else ""
        n = len(self.failures)
        noun = "compensation" if n == 1 else "compensations"
        super().__init__(f"{n} {noun} could not be done, undo by hand: {listed}{why}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.failures, self.reason))


class AlreadyExecuting(SagaflowError):
    """A saga with this id is already running; starting it again would run steps twice."""

    def __init__(self, saga_id: str, status: str = "RUNNING") -> None:
        self.saga_id = saga_id
        self.status = status
        super().__init__(
            f"saga {saga_id!r} is already executing (status {status}); "
            "wait for it or look it up with orchestrator.get(saga_id)"
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.saga_id, self.status))


class InvalidTransition(SagaflowError, RuntimeError):
    """The saga's state machine does not allow the requested state change."""

    def __init__(self, saga: str, source: str, trigger: str, dest: str) -> None:
        self.saga = saga
        self.source = source
        self.trigger = trigger
        self.dest = dest
        super().__init__(
            f"saga {saga!r}: the state machine has no transition {trigger!r} "
            f"from {source!r} to {dest!r}"
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.saga, self.source, self.trigger, self.dest))


class SagaNotFound(SagaflowError, KeyError):
    """No saga with this id is in the store."""

    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id
        super().__init__(f"no saga {saga_id!r} in the store")

    def __str__(self) -> str:  # KeyError would add quotes around the whole message
        return str(self.args[0])

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.saga_id,))


class SagaQuarantined(SagaflowError):
    """A saga is set aside (quarantined): it could not be decoded or driven, and it is
    neither recovered nor claimed until an operator acts (``retry``, ``resolve``,
    ``cancel`` or ``unquarantine``). ``reason`` says why."""

    def __init__(self, saga_id: str, reason: str) -> None:
        self.saga_id = saga_id
        self.reason = reason
        super().__init__(
            f"saga {saga_id!r} is quarantined ({reason}): an operator must act on it "
            "(retry, resolve, cancel, or unquarantine once the cause is fixed)"
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.saga_id, self.reason))


class UnknownSaga(SagaflowError, LookupError):
    """A stored saga's class is not registered with this orchestrator."""

    def __init__(self, saga_id: str, saga_name: str) -> None:
        self.saga_id = saga_id
        self.saga_name = saga_name
        super().__init__(
            f"saga {saga_id!r} is a {saga_name!r} saga, which this orchestrator does not "
            f"know: pass its class in Orchestrator(sagas=[...]) (or import its module "
            "with --import on the command line)"
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.saga_id, self.saga_name))


class SagaDefinitionChanged(SagaflowError):
    """A stored saga was started by a definition its class no longer has.

    Resuming it could run the wrong steps or compensate the wrong ones, so it is left
    untouched until an operator maps it (``Orchestrator(migrations=...)``).
    """

    def __init__(self, saga_id: str, saga_name: str, stored: str, current: str) -> None:
        self.saga_id = saga_id
        self.saga_name = saga_name
        self.stored = stored
        self.current = current
        super().__init__(
            f"saga {saga_id!r} ({saga_name}) was started with definition {stored}, but the "
            f"code now has {current} (steps added, removed, renamed or reordered): it is left "
            "untouched; finish it with the old code, or map it with "
            "Orchestrator(migrations={...})"
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.saga_id, self.saga_name, self.stored, self.current))


class CodecError(SagaflowError, TypeError):
    """A value cannot be stored as JSON (or would not load back as itself)."""


class CorruptRecord(SagaflowError, ValueError):
    """A stored record cannot be read back: ``saga_id`` names it, ``reason`` says why;
    ``column`` is the damaged column of the saga's row (``None``: not one column) and
    ``found`` what it holds, shortened."""

    def __init__(
        self, saga_id: str, reason: str, column: str | None = None, found: str | None = None
    ) -> None:
        self.saga_id = saga_id
        self.reason = reason
        self.column = column
        self.found = found
        where = ""
        if column is not None:
            where = f"column {column!r}" + ("" if found is None else f" holds {found}") + ": "
        super().__init__(f"saga {saga_id!r}: the stored record cannot be read: {where}{reason}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.saga_id, self.reason, self.column, self.found))


class StoreError(SagaflowError, RuntimeError):
    """The store cannot be used: not a database, a newer schema, closed."""


class ConcurrentModification(StoreError):
    """The saga changed in the store since this copy was loaded: someone else saved it.

    ``expected`` is this copy's version, ``found`` the store's (``None``: deleted).
    """

    def __init__(self, saga_id: str, expected: int, found: int | None) -> None:
        self.saga_id = saga_id
        self.expected = expected
        self.found = found
        if found is None:
            what = "it is no longer in the store (deleted?)"
        else:
            what = f"this copy is at version {expected}, the store has version {found}"
        super().__init__(
            f"saga {saga_id!r} was modified by someone else: {what}; load it again "
            "(store.load) and redo the change"
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.saga_id, self.expected, self.found))


class UnknownSagaClass(UnknownSaga):
    """A stored saga's class is neither registered with the store nor importable."""

    def __init__(self, saga_id: str, saga_name: str, data_type: str, reason: str) -> None:
        self.saga_id = saga_id
        self.saga_name = saga_name
        self.data_type = data_type
        SagaflowError.__init__(
            self,
            f"saga {saga_id!r} is a {saga_name!r} saga of class {data_type!r}, which "
            f"this store cannot load ({reason}): pass the class to store.register()"
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.saga_id, self.saga_name, self.data_type, "?"))


class OperatorError(SagaflowError, ValueError):
    """An operator action does not fit the saga's status."""


class LeaseLost(ConcurrentModification):
    """A worker wrote to a saga that another worker has taken over since it claimed it.

    Its lease expired (the worker was paused, cut off, or too slow to renew it) and the
    saga was claimed again: ``fence`` is the token this worker holds, ``current`` the
    saga's. Nothing was written; this worker must stop driving the saga.
    """

    def __init__(self, saga_id: str, fence: int, current: int | None) -> None:
        self.saga_id = saga_id
        self.expected = fence
        self.found = current
        self.fence = fence
        self.current = current
        StoreError.__init__(
            self,
            f"saga {saga_id!r} was taken over by another worker (this worker's lease "
            f"token is {fence}, the saga's is {current}): its lease expired before this "
            "write; nothing was written, and this worker must stop driving the saga",
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.saga_id, self.fence, self.current))


class ScaffoldError(SagaflowError, ValueError):
    """The scaffold cannot be written as asked: the message says why and what to do."""


INSTALL_HINT = (
    "pip install 'sagaflow[render]' (the pygraphviz wheels bundle Graphviz), "
    "or install Graphviz so that its `dot` program is on PATH"
)


class GraphvizNotFound(SagaflowError, RuntimeError):
    """SVG or PNG was asked for, but neither pygraphviz nor a ``dot`` binary is available."""

    def __init__(self, fmt: str, why: Sequence[str] = ()) -> None:
        self.format = fmt
        self.why = tuple(why)
        seen = f" ({'; '.join(self.why)})" if self.why else ""
        super().__init__(
            f"rendering {fmt.upper()} needs Graphviz, found neither way{seen}: {INSTALL_HINT}. "
            "DOT and Mermaid text need nothing: use format='dot' or 'mermaid'"
        )


def _describe(cause: BaseException | str) -> str:
    if isinstance(cause, str):
        return cause
    text = str(cause)
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__

"""What both drivers share: a saga marked as driven here, the context its calls get,
a signal handed to the wait it is parked at, the result of an id already stored."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..context import Direction, StepContext
from ..engine import (
    Call,
    Park,
    deliver,
    expire,
    in_time,
)
from ..errors import AlreadyExecuting, CodecError, SagaflowError
from ..records import SagaRecord, SagaResult, SagaStatus, Signal

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..spec import SagaSpec


__all__ = [
    "COMPENSATING",
    "FORWARD",
    "RUNNING",
    "context_of",
    "enter",
    "handover",
    "leave",
    "monotonic",
    "stored_result",
]

FORWARD = Direction.FORWARD
monotonic = time.monotonic
RUNNING = SagaStatus.RUNNING
COMPENSATING = SagaStatus.COMPENSATING


def enter(rt: Runtime, record: SagaRecord, spec: SagaSpec | None = None) -> None:
    """Mark ``record`` as driven here; a second driver of the same saga is refused.
    With ``spec``, the runtime's telemetry (if any) hears that the run begins."""
    if rt.live.setdefault(record.saga_id, record) is not record:
        raise AlreadyExecuting(record.saga_id)
    if rt.telemetry is not None and spec is not None:
        rt.telemetry.begin(spec, record)


def leave(
    rt: Runtime, record: SagaRecord, spec: SagaSpec | None = None,
    error: BaseException | None = None,
) -> None:
    """The run of ``record`` here is over (with ``spec``: the telemetry hears it, and
    ``error``: the exception the run ends by, raised out of the driver)."""
    if rt.telemetry is not None and spec is not None:
        rt.telemetry.end(spec, record, error)
    saga_id = record.saga_id
    if rt.live.get(saga_id) is record:  # a parked saga may be driven by another by now
        del rt.live[saga_id]
        if rt.pokes:
            rt.pokes.discard(saga_id)
    if rt.cancels:
        rt.cancels.pop(saga_id, None)


def context_of(spec: SagaSpec, record: SagaRecord, rt: Runtime) -> StepContext:
    return StepContext(
        record.saga_id, spec.name, "", FORWARD, 0, None, None, 0.0, rt.clock.now
    )


def handover(
    rt: Runtime, spec: SagaSpec, record: SagaRecord, park: Park, signal: Signal | None,
    now: float,
) -> tuple[Call, CodecError | None] | None:
    """The call of the handler ``signal`` goes to (the saga is parked at its wait), and
    the error if its payload no longer decodes to the declared class; ``None`` if no
    signal came (in time): the saga stays parked, or, if the wait's time has come, the
    wait has expired (:func:`~sagaflow.engine.expire`) and the engine is asked again.
    Written once for both drivers: only the store's read differs."""
    signal = in_time(park, signal)
    if signal is None:
        if park.expires:
            expire(spec, record, now)
        return None
    cls = spec.steps[record.cursor].wait.payload  # type: ignore[union-attr]
    payload: Any = None
    refused: CodecError | None = None
    if cls is not None:
        try:
            payload = rt.codec.load_payload(signal.payload, cls)
        except CodecError as exc:
            refused = exc
    return deliver(spec, record, signal, payload, now), refused


def stored_result(spec: SagaSpec, existing: SagaRecord) -> SagaResult:
    """What starting ``spec``'s saga under an id the store has already gives: the
    stored result once it finished, :class:`~sagaflow.AlreadyExecuting` while it runs;
    an id of another saga type is refused."""
    if existing.saga_name != spec.name:
        raise SagaflowError(
            f"saga id {existing.saga_id!r} belongs to a {existing.saga_name!r} saga, not "
            f"{spec.name!r}: saga ids must be unique across saga types"
        )
    if not existing.status.is_terminal:
        raise AlreadyExecuting(existing.saga_id, existing.status.value)
    return SagaResult.of(existing)

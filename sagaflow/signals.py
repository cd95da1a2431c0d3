"""Signals to waiting sagas: accepting one (checked, then stored durably) and resuming
the parked sagas a signal or their time has come for.

A signal is checked against the saga's definition before anything is stored (the saga
exists and is unfinished, it declares a wait for that name, the payload is of the
declared class), then stored by the store in one transaction with the check of the
saga's row. Delivery is the drivers' (:mod:`sagaflow.runner`): a parked saga looks for
its signal when it is resumed, here at once when it runs in this process, else by
whichever process resumes it (:func:`resume_due`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from .errors import (
    AlreadyExecuting,
    CodecError,
    ConcurrentModification,
    SagaNotFound,
    SignalRefused,
)
from .records import SagaRecord, SagaResult, SagaStatus, Signal
from .runner import adrive, drive
from .runtime import Runtime
from .spec import SagaSpec

#: A parked saga is RUNNING (at a wait), or a choreography between its events (RUNNING
#: or COMPENSATING).
_PARKABLE = (SagaStatus.RUNNING, SagaStatus.COMPENSATING)

__all__ = [
    "Accepted", "aaccept", "accept", "aresume", "aresume_due", "asend", "resume", "resume_due",
    "send",
]

SpecFor = Callable[[SagaRecord], SagaSpec]
#: What :func:`accept` leaves to resume: the stored signal (``None``: a duplicate).
Accepted = tuple[Signal | None, str]


def _payload_text(rt: Runtime, spec: SagaSpec, saga_id: str, name: str, payload: object) -> str:
    """The payload as stored text, checked against the class the saga's waits declare."""
    waits = spec.signals.get(name)
    if not waits:
        declared = ", ".join(repr(n) for n in spec.signals) or "none"
        raise SignalRefused(
            saga_id, name,
            f"{spec.name} declares no wait for signal {name!r} (its signals: {declared})",
        )
    wait = spec.steps[waits[0]].wait
    assert wait is not None
    cls = wait.payload
    if cls is None:
        if payload is not None:
            raise SignalRefused(
                saga_id, name, f"signal {name!r} of {spec.name} carries no payload: send none"
            )
        return "null"
    if payload is None:
        raise SignalRefused(
            saga_id, name, f"signal {name!r} of {spec.name} carries a {cls.__qualname__}: "
            "give one (or a dict of its fields)"
        )
    try:
        given = payload
        if isinstance(given, (str, Mapping)):
            given = rt.codec.load_payload(given, cls)
        return rt.codec.dump_payload(given, cls)
    except CodecError as exc:
        raise SignalRefused(saga_id, name, f"its payload does not fit: {exc}") from exc


def _prepared(
    rt: Runtime, spec_for: SpecFor, saga_id: str, name: str, payload: object,
    signal_id: str | None,
) -> tuple[tuple[str, str, str, str, float], SagaRecord]:
    """The arguments of the store's ``add_signal`` for a checked signal, and the saga's
    record as it was checked (what :func:`send` resumes, without reading it again)."""
    record = rt.store.load(saga_id)
    if record is None:
        raise SagaNotFound(saga_id)
    if record.status.is_terminal and (
        signal_id is None or all(g.signal_id != signal_id for g in rt.store.signals(saga_id))
    ):  # a signal sent again after it finished the saga is a duplicate: the store ignores it
        raise SignalRefused(
            saga_id, name, f"it is {record.status.value}: a finished saga takes no signals"
        )
    text = _payload_text(rt, spec_for(record), saga_id, name, payload)
    sid = signal_id if signal_id is not None else uuid.uuid4().hex
    return (saga_id, name, sid, text, rt.clock.now()), record


def accept(
    rt: Runtime,
    spec_for: SpecFor,
    saga_id: str,
    name: str,
    payload: object,
    signal_id: str | None,
) -> Signal | None:
    """Check and store a signal; the stored signal, or ``None`` for a duplicate id."""
    args, _ = _prepared(rt, spec_for, saga_id, name, payload, signal_id)
    return rt.store.add_signal(*args)


async def aaccept(
    rt: Runtime,
    spec_for: SpecFor,
    saga_id: str,
    name: str,
    payload: object,
    signal_id: str | None,
) -> Signal | None:
    """:func:`accept`, storing without blocking the loop."""
    args, _ = _prepared(rt, spec_for, saga_id, name, payload, signal_id)
    return await rt.store.aadd_signal(*args)


def send(
    rt: Runtime,
    spec_for: SpecFor,
    saga_id: str,
    name: str,
    payload: object,
    signal_id: str | None,
) -> SagaResult | None:
    """:func:`accept`, then :func:`resume` the saga from the record the check read (a
    parked saga does not change until a driver takes it: nothing to read again; if one
    did, the first checkpoint finds out and the saga is left to it)."""
    args, record = _prepared(rt, spec_for, saga_id, name, payload, signal_id)
    rt.store.add_signal(*args)
    return resume(rt, spec_for, saga_id, record)


async def asend(
    rt: Runtime,
    spec_for: SpecFor,
    saga_id: str,
    name: str,
    payload: object,
    signal_id: str | None,
) -> SagaResult | None:
    """:func:`send`, in the awaiting task."""
    args, record = _prepared(rt, spec_for, saga_id, name, payload, signal_id)
    await rt.store.aadd_signal(*args)
    return await aresume(rt, spec_for, saga_id, record)


def by_key(rt: Runtime, key: str, saga_name: str | None, name: str) -> str:
    """The one unfinished saga with business key ``key``; refused if none or several."""
    found = rt.store.by_key(key, saga_name)
    if not found:
        of = f" of {saga_name}" if saga_name else ""
        raise SignalRefused(None, name, f"no unfinished saga{of} has the business key {key!r}")
    if len(found) > 1:
        raise SignalRefused(
            None, name, f"{len(found)} unfinished sagas have the business key {key!r} "
            f"({', '.join(found[:5])}): give the saga's class, or signal one by its id"
        )
    return found[0]


def _parked(
    rt: Runtime, spec_for: SpecFor, saga_id: str, loaded: SagaRecord | None
) -> tuple[SagaSpec, SagaRecord] | None:
    """The parked saga ``saga_id`` to resume here (``loaded``: its record, just read),
    or ``None`` (not parked, or a driver here runs it: it is told to look again)."""
    if rt.poke(saga_id):
        return None
    # A record read before the signal was stored is as good while it stays parked;
    # one that was not parked yet may have parked since: read it again.
    record = loaded if loaded is not None and loaded.waiting is not None else (
        rt.store.load(saga_id)
    )
    if record is None or record.waiting is None or record.status not in _PARKABLE:
        return None
    return spec_for(record), record


def resume(
    rt: Runtime, spec_for: SpecFor, saga_id: str, loaded: SagaRecord | None = None
) -> SagaResult | None:
    """Drive parked saga ``saga_id`` on this thread until it parks again or ends; ``None``
    if it was not parked, is driven elsewhere, or has async steps (see :func:`aresume`).
    ``loaded``: its record, if the caller has just read it."""
    while True:
        found = _parked(rt, spec_for, saga_id, loaded)
        if found is None:
            return None
        spec, record = found
        if spec.is_async:
            return None
        try:
            return drive(rt, spec, record, len(record.history))
        except AlreadyExecuting:
            loaded = None
            continue  # a driver here took it meanwhile: poke it
        except ConcurrentModification:
            return None  # another process resumed it first


async def aresume(
    rt: Runtime, spec_for: SpecFor, saga_id: str, loaded: SagaRecord | None = None
) -> SagaResult | None:
    """:func:`resume`, in the awaiting task (any saga, async steps or not)."""
    while True:
        found = _parked(rt, spec_for, saga_id, loaded)
        if found is None:
            return None
        spec, record = found
        try:
            return await adrive(rt, spec, record, len(record.history))
        except AlreadyExecuting:
            loaded = None
            continue
        except ConcurrentModification:
            return None


def resume_due(
    rt: Runtime,
    spec_for: SpecFor,
    on_error: Callable[[str, Exception], None],
    saga_ids: Iterable[str],
) -> dict[str, SagaStatus]:
    """Resume the parked sagas ``saga_ids`` (those the store says are due: their time
    came or their signal arrived), on this thread; each one's status after it.
    ``on_error`` hears what one saga raised; the others go on."""
    out: dict[str, SagaStatus] = {}
    for saga_id in saga_ids:
        try:
            result = resume(rt, spec_for, saga_id)
        except Exception as exc:
            on_error(saga_id, exc)
            continue
        if result is not None:
            out[saga_id] = result.status
    return out


def aresume_due(
    rt: Runtime,
    spec_for: SpecFor,
    on_error: Callable[[str, Exception], None],
    saga_ids: Iterable[str],
) -> Coroutine[Any, Any, dict[str, SagaStatus]]:
    """:func:`resume_due`, in the awaiting task."""

    async def run() -> dict[str, SagaStatus]:
        out: dict[str, SagaStatus] = {}
        for saga_id in saga_ids:
            try:
                result = await aresume(rt, spec_for, saga_id)
            except Exception as exc:
                on_error(saga_id, exc)
                continue
            if result is not None:
                out[saga_id] = result.status
        return out

    return run()

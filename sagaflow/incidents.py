"""Incidents: the sagas that need an operator, and a hook that hears of them.

A saga needs an operator when it ended FAILED and no one resolved it (something could
not be undone, or a step after the pivot failed for good), when it was quarantined
(its record cannot be decoded or driven), or when it has stalled: RUNNING or
COMPENSATING, not parked at a wait, with no checkpoint for longer than a threshold (its
process died and nothing recovered it, or a call hangs past any timeout); or COMPENSATING,
parked with no wake time, as long (a choreography whose compensation event was lost and
that has no compensation deadline: nothing would ever wake it). A RUNNING saga parked at
a wait is not stalled however long it waits: a signal may come.

:func:`open_incidents` reads them from a store (what ``sagaflow sagas list --incidents``
shows); an :class:`~sagaflow.Orchestrator` given ``on_incident=`` calls it with each
incident it opens as it happens (a saga of its own ending FAILED, one it quarantines)
and :meth:`~sagaflow.Orchestrator.check_stalled` with each stalled saga it finds, so that
someone can be paged. Resolving the saga (``sagaflow sagas resolve``,
:meth:`~sagaflow.Orchestrator.resolve`), retrying it to an end, or lifting its
quarantine closes the incident: it is not open any more.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import attrs

from .errors import SagaflowError
from .records import SagaRecord, SagaStatus

__all__ = [
    "FAILED", "KINDS", "QUARANTINED", "STALLED", "Incident", "failed", "incident_of",
    "open_incidents",
]

FAILED = "failed"  #: ended FAILED, not resolved
QUARANTINED = "quarantined"  #: set aside: its record cannot be decoded or driven
STALLED = "stalled"  #: running, not waiting, and no checkpoint for too long
KINDS = (FAILED, QUARANTINED, STALLED)  #: every kind of incident

_UNFINISHED = frozenset({SagaStatus.RUNNING, SagaStatus.COMPENSATING})


@attrs.frozen
class Incident:
    """A saga that needs an operator: ``kind`` (:data:`FAILED`, :data:`QUARANTINED`,
    :data:`STALLED`), ``reason``, since when (``since``, Unix time), and what could not
    be undone (``not_undone``: the steps, members or items whose compensation failed, or
    the step after the pivot that failed). ``id`` is stable while the incident lasts:
    ``"{saga_id}/{kind}/{since in ms}"``."""

    id: str
    saga_id: str
    saga_name: str
    kind: str
    reason: str
    since: float
    not_undone: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, saga_id: str, saga_name: str, kind: str, reason: str, since: float,
        not_undone: Iterable[str] = (),
    ) -> Incident:
        return cls(f"{saga_id}/{kind}/{round(since * 1000)}", saga_id, saga_name, kind,
                   reason, since, tuple(not_undone))


def failed(record: SagaRecord) -> Incident | None:
    """The incident of a FAILED, unresolved saga's record (``None`` otherwise)."""
    if record.status is not SagaStatus.FAILED or record.resolution is not None:
        return None
    not_undone = list(record.failures)
    if not not_undone:  # a step after the pivot (or the pivot) failed for good
        not_undone = [
            s.name for s in record.steps
            if s.status.value in ("FAILED", "TIMED_OUT", "REJECTED", "EXPIRED")
        ][:1]
    reason = str(record.error) if record.error is not None else "failed"
    return Incident.of(record.saga_id, record.saga_name, FAILED, reason,
                       record.finished_at or record.updated_at, not_undone)


def open_incidents(
    store: Any, *, stalled_after: float | None = None, now: float | None = None,
) -> list[Incident]:
    """The incidents open in ``store``: FAILED sagas no one resolved, quarantined ones,
    and (with ``stalled_after`` seconds) stalled ones; oldest first."""
    found: list[Incident] = []
    aside = {q.saga_id: q for q in store.quarantined()}
    for q in aside.values():
        found.append(Incident.of(q.saga_id, q.saga_name or "?", QUARANTINED, q.reason, q.at))
    for stored in store.scan(status={SagaStatus.FAILED}):
        if stored.saga_id in aside:
            continue
        incident = _failed(store, stored)
        if incident is not None:
            found.append(incident)
    if stalled_after is not None:
        now = time.time() if now is None else now
        for stored in store.scan(status=_UNFINISHED, parked=False):
            incident = None if stored.saga_id in aside else _stalled(stored, stalled_after, now)
            if incident is not None:
                found.append(incident)
        for stored in store.scan(status={SagaStatus.COMPENSATING}, parked=True):
            if stored.saga_id not in aside and stored.wake_at is None:
                incident = _stalled(stored, stalled_after, now)
                if incident is not None:
                    found.append(incident)
    found.sort(key=lambda i: (i.since, i.saga_id))
    return found


def incident_of(
    store: Any, stored: Any, *, stalled_after: float | None = None, now: float | None = None,
) -> Incident | None:
    """The incident open for the one saga ``stored`` (as :func:`open_incidents` finds
    it), or ``None``: what a saga's page shows."""
    if stored.quarantined is not None:
        since = next((q.at for q in store.quarantined() if q.saga_id == stored.saga_id),
                     stored.updated_at)
        return Incident.of(stored.saga_id, stored.saga_name, QUARANTINED, stored.quarantined,
                           since)
    if stored.status == SagaStatus.FAILED.value:
        return _failed(store, stored)
    if stalled_after is None or SagaStatus(stored.status) not in _UNFINISHED or (
        stored.parked
        and (stored.status != SagaStatus.COMPENSATING.value or stored.wake_at is not None)
    ):
        return None
    return _stalled(stored, stalled_after, time.time() if now is None else now)


def _failed(store: Any, stored: Any) -> Incident | None:
    """The incident of a FAILED saga as stored (``None``: resolved)."""
    try:
        record = store.decode(stored, raw_data=True)
    except SagaflowError as exc:  # damaged: an operator must look at it all the more
        return Incident.of(stored.saga_id, stored.saga_name, FAILED,
                           f"FAILED, and its record cannot be read: {exc}", stored.updated_at)
    return failed(record)


def _stalled(stored: Any, after: float, now: float) -> Incident | None:
    """The incident of an unfinished saga quiet for ``after`` seconds or more: unparked,
    or COMPENSATING parked with no wake time (the caller picks those)."""
    quiet = now - stored.updated_at
    if quiet < after:
        return None
    if stored.parked:
        return Incident.of(
            stored.saga_id, stored.saga_name, STALLED,
            f"COMPENSATING, parked with no wake time and no checkpoint for {quiet:.0f}s "
            f"(more than {after:g}s): the event its compensation waits for may have been "
            "lost and no compensation deadline will wake it; redeliver that event to its "
            "participant, or finish the compensations by hand", stored.updated_at,
        )
    return Incident.of(
        stored.saga_id, stored.saga_name, STALLED,
        f"{stored.status} with no checkpoint for {quiet:.0f}s (more than {after:g}s): its "
        "process may have died; recover it, or look at the step it is in", stored.updated_at,
    )

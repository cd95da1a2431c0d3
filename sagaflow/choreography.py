"""Choreography with a map: a saga whose steps run in the participants' own services,
each when the event before it arrives, tracked by sagaflow as a saga record.

Declare it in one class (:func:`choreography`, :func:`step`); each service hosts a
:class:`Participant` for its own name and hands it the messages it consumes (from the
in-process :class:`~sagaflow.outbox.Handlers` or a broker's consumer). Handling a
message loads the instance by its correlation (the start event creates it), performs
exactly the one call the event triggers (:func:`sagaflow.runner.step_once`: the step
with its retries, timeout and idempotency key) and saves; the event the step emits goes
to the outbox in that checkpoint's transaction, and the relay publishes it to whoever
reacts next. A step failing for good makes the instance compensate: a
:class:`FlowFailed` event is published, and the participants undo their steps one after
another, each triggered by it or by the compensation event before.

Between its events an instance is parked (a row with a wake time: its deadline), so
recovery leaves it to its participants and a worker (or ``resume_due``) compensates it
once its deadline passes.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import attrs

from ._choreodefs import (
    CHOREOGRAPHY_ATTRIBUTE,
    ChoreographySpec,
    FlowFailed,
    Role,
    choreography,
    choreography_of,
    is_choreography,
    step,
)
from .codec import Codec, default_codec
from .context import Direction, StepContext
from .engine import Call, new_record
from .errors import SagaflowError
from .messages import Message
from .records import SagaRecord, SagaStatus, StepStatus
from .routing import UnknownCorrelation
from .runner import astep_once, step_once
from .spec import spec_of

__all__ = [
    "CHOREOGRAPHY_ATTRIBUTE",
    "ChoreographySpec",
    "FlowFailed",
    "Handled",
    "Participant",
    "Role",
    "UnknownInstance",
    "choreography",
    "choreography_of",
    "is_choreography",
    "message_for",
    "step",
]

log = logging.getLogger("sagaflow.choreography")

#: What ``record.waiting`` holds while an instance waits for its next event.
PARKED = "choreography"
_RUNNING = SagaStatus.RUNNING
_COMPENSATING = SagaStatus.COMPENSATING


class UnknownInstance(UnknownCorrelation):
    """An event for a choreography instance the store does not have (and that does not
    start one). A :class:`~sagaflow.routing.UnknownCorrelation`, so a
    :class:`~sagaflow.brokers.DeadLetter`: a consumer dead-letters it at once, with this
    error's text as the reason."""

    def __init__(
        self, flow: str, saga_id: str, event_type: str, message: Message | None = None
    ) -> None:
        self.flow = flow
        self.saga_id = saga_id
        self.event_type = event_type
        self.message = message  # type: ignore[assignment]
        self.reason = (
            f"no {flow} instance {saga_id!r} for a {event_type} event: it was never "
            "started (its start event did not arrive, or went to another store)"
        )
        Exception.__init__(self, self.reason)


@attrs.frozen
class Handled:
    """What :meth:`Participant.handle` did with a message.

    ``outcome``: ``"ran"`` (it performed ``step``, forward or compensating),
    ``"ignored"`` (a duplicate or late event: the instance is not at a step this
    participant runs for it; ``reason`` says why), or ``"not-mine"`` (no step of this
    participant reacts to that event type). ``status``: the instance's after it.
    """

    outcome: str
    saga_id: str | None = None
    step: str | None = None
    compensation: bool = False
    status: SagaStatus | None = None
    reason: str | None = None


class Participant:
    """The part of choreography ``flow`` that service ``name`` runs: its steps and
    compensations, performed when their trigger events arrive.

    ``orchestrator`` gives the store (where instances are tracked, and whose outbox the
    events this participant's steps emit go to), its listeners and clock.
    """

    def __init__(self, orchestrator: Any, flow: type, name: str) -> None:
        self.orchestrator = orchestrator
        self.flow = flow
        self.spec = spec_of(flow)
        self.choreography = choreography_of(flow)
        if name not in self.choreography.participants:
            known = ", ".join(repr(p) for p in self.choreography.participants)
            raise ValueError(
                f"{self.spec.name} has no participant {name!r} (its participants: {known})"
            )
        self.name = name
        orchestrator.register(flow)
        chor = self.choreography
        self._forward: dict[type, Role] = {
            r.trigger: r for r in chor.roles if r.participant == name
        }
        self._undoes = {r.index for r in chor.roles if r.participant == name and (
            r.compensation_emits is not None)}
        self._comp_triggers = chor.compensation_triggers if self._undoes else ()
        self._roles = {r.index: r for r in chor.roles}

    # --- handling ---------------------------------------------------------------------

    def handle(self, message: Message) -> Handled:
        """Handle one consumed message (sync steps only): see the class."""
        event = self.orchestrator.runtime.codec.load_event(message.body)
        return self.handle_event(event)

    async def ahandle(self, message: Message) -> Handled:
        """:meth:`handle`, in the awaiting task (async steps too)."""
        event = self.orchestrator.runtime.codec.load_event(message.body)
        return await self.ahandle_event(event)

    def handle_event(self, event: Any) -> Handled:
        """Handle a decoded event (as :class:`~sagaflow.outbox.Handlers` gives it)."""
        plan = self._plan(event)
        if isinstance(plan, Handled):
            return plan
        saga_id, role, compensating = plan
        rt = self.orchestrator.runtime
        record = rt.store.load(saga_id)
        if record is None:
            if role is None or role.index != 0 or type(event) is not self.choreography.start:
                raise UnknownInstance(self.spec.name, saga_id, type(event).__name__)
            record = self._new(event, saga_id)
            existing = rt.store.create(record)
            if existing is not None:
                record = existing
        else:
            record = self._spec_checked(record)
        expect, why = self._expect(record, role, compensating)
        if expect is None:
            return self._ignored(event, record, why)
        self._unpark(record)
        done = step_once(rt, self.spec, record, expect, self._check, self._before_save(record))
        return self._ran(event, record, done)

    async def ahandle_event(self, event: Any) -> Handled:
        """:meth:`handle_event`, in the awaiting task."""
        plan = self._plan(event)
        if isinstance(plan, Handled):
            return plan
        saga_id, role, compensating = plan
        rt = self.orchestrator.runtime
        record = await rt.store.aload(saga_id)
        if record is None:
            if role is None or role.index != 0 or type(event) is not self.choreography.start:
                raise UnknownInstance(self.spec.name, saga_id, type(event).__name__)
            record = self._new(event, saga_id)
            existing = await rt.store.acreate(record)
            if existing is not None:
                record = existing
        else:
            record = self._spec_checked(record)
        expect, why = self._expect(record, role, compensating)
        if expect is None:
            return self._ignored(event, record, why)
        self._unpark(record)
        done = await astep_once(
            rt, self.spec, record, expect, self._check, self._before_save(record)
        )
        return self._ran(event, record, done)

    # --- the parts --------------------------------------------------------------------

    def _plan(self, event: Any) -> tuple[str, Role | None, bool] | Handled:
        """(the instance's id, the forward role it triggers or ``None``, whether it may
        trigger a compensation), or ``not-mine``."""
        chor = self.choreography
        role = self._forward.get(type(event))
        compensating = bool(self._comp_triggers) and isinstance(event, self._comp_triggers)
        if role is None and not compensating:
            return Handled("not-mine")
        if isinstance(event, FlowFailed):
            if event.flow != chor.name:
                return Handled("not-mine")
            return chor.saga_id(event.correlation), role, compensating
        return chor.saga_id(getattr(event, chor.correlation)), role, compensating

    def _spec_checked(self, record: SagaRecord) -> SagaRecord:
        self.orchestrator.spec_for(record)  # an unknown class, a changed definition: raise
        return record

    def _new(self, event: Any, saga_id: str) -> SagaRecord:
        chor = self.choreography
        if chor.build is not None:
            data = chor.build(event)
        else:
            names = [f.name for f in attrs.fields(self.flow)]
            data = self.flow(**{n: getattr(event, n) for n in names if hasattr(event, n)})
        rt = self.orchestrator.runtime
        record = new_record(self.spec, data, saga_id, rt.clock.now())
        self._park(record)
        return record

    def _expect(
        self, record: SagaRecord, role: Role | None, compensating: bool
    ) -> tuple[tuple[int, Direction] | None, str]:
        """The call the event triggers at ``record`` now, or ``None`` and why not."""
        if record.status.is_terminal:
            return None, f"the instance is {record.status.value}"
        now = self.orchestrator.runtime.clock.now()
        if record.status is _RUNNING:
            if role is None:
                return None, "it is not compensating"
            if record.cursor != role.index:
                at = self.spec.steps[record.cursor].name
                return None, f"the instance is at step {at!r}, not {role.name!r}"
            sr = record.steps[role.index]
            if sr.status not in (StepStatus.PENDING, StepStatus.RUNNING):
                return None, f"step {role.name!r} is {sr.status.value}"
            if record.deadline_at is not None and now >= record.deadline_at:
                return None, "its deadline has passed: it is compensated when resumed"
            return (role.index, Direction.FORWARD), ""
        if record.status is _COMPENSATING and compensating:
            i = record.undo[record.cursor]
            if i in self._undoes:
                return (i, Direction.COMPENSATE), ""
            return None, f"it is undoing step {self.spec.steps[i].name!r}, not one of ours"
        return None, f"the instance is {record.status.value}"

    def _unpark(self, record: SagaRecord) -> None:
        if record.waiting == PARKED:
            record.waiting = None
            record.wake_at = None

    def _park(self, record: SagaRecord) -> None:
        """Between its events an instance is a parked row: woken at its deadline."""
        if record.status is not _RUNNING:  # only a RUNNING saga can be a parked row
            if record.waiting == PARKED:
                record.waiting = None
            return
        record.waiting = PARKED
        if record.wake_at is None and record.status is _RUNNING:
            record.wake_at = record.deadline_at

    def _before_save(self, record: SagaRecord) -> Any:
        was = record.status
        told = [False]

        def before_save(r: SagaRecord) -> None:
            if was is _RUNNING and r.status is not _RUNNING and (
                r.status is not SagaStatus.COMPLETED
            ) and not told[0]:
                told[0] = True
                failed = next((s.name for s in r.steps if s.status is StepStatus.FAILED), "")
                r.events.append(FlowFailed(
                    self.spec.name, str(getattr(r.data, self.choreography.correlation)),
                    failed, "failed" if r.error is None else str(r.error),
                ))
            self._park(r)

        return before_save

    def _check(self, call: Call, ctx: StepContext) -> BaseException | None:
        """The declared event was emitted; built from the correlation if not (and it
        can be); else the call fails."""
        role = self._roles[call.index]
        cls = role.emits if call.direction is Direction.FORWARD else role.compensation_emits
        if cls is None or any(isinstance(e, cls) for e in ctx.emitted):
            return None
        corr = self.choreography.correlation
        required = [
            f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING and f.init
        ]
        if required in ([corr], []):
            record = self.orchestrator.runtime.live.get(ctx.saga_id)
            value = getattr(record.data, corr) if record is not None else (
                ctx.saga_id.split(":", 1)[1]
            )
            ctx.emit(cls(**{corr: value}))
            return None
        forward = call.direction is Direction.FORWARD
        what = ctx.step if forward else f"the compensation of {ctx.step}"
        return SagaflowError(
            f"{what} must emit a {cls.__qualname__} (ctx.emit(...)): it has required fields "
            f"besides {corr!r} ({', '.join(required)}), so sagaflow cannot build it"
        )

    def _ignored(self, event: Any, record: SagaRecord, why: str) -> Handled:
        log.info("sagaflow: %s ignored a %s for %s: %s", self.name, type(event).__name__,
                 record.saga_id, why)
        return Handled("ignored", record.saga_id, None, False, record.status, why)

    def _ran(self, event: Any, record: SagaRecord, done: Call | None) -> Handled:
        if done is None:
            return Handled("ignored", record.saga_id, None, False, record.status,
                           "the engine wants something else of it")
        return Handled(
            "ran", record.saga_id, self.spec.steps[done.index].name,
            done.direction is Direction.COMPENSATE, record.status,
        )


def message_for(
    event: Any, id: str | None = None, codec: Codec | None = None, source: str = ""
) -> Message:
    """The :class:`~sagaflow.messages.Message` a service publishes for ``event`` (say the
    start event of a choreography, from outside any saga): its body the codec's JSON,
    under ``id`` (a fresh one by default; give the same id to a redelivery)."""
    codec = codec if codec is not None else default_codec
    body = codec.dump_event(event, _NoRecord(), 0)  # type: ignore[arg-type]
    tag = json.loads(body)
    kind = tag.get("$type", type(event).__name__) if isinstance(tag, dict) else type(tag).__name__
    return Message(id or uuid.uuid4().hex, str(kind), source, source, 0, body, time.time())


class _NoRecord:
    """What the codec names in an error about an event that is in no saga."""

    saga_name = "(none)"
    saga_id = "(an event published from outside a saga)"

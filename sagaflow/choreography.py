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

Between its events an instance is parked, RUNNING or COMPENSATING (a row with a wake
time: its deadline, or a retry's time), so recovery, workers and ``check_stalled`` leave
it to its participants. Whoever resumes a due instance (a worker, ``resume_due``,
recovery, an operator's verb: :func:`sagaflow.runner.drive` hands it to
:func:`sagaflow.runner._handoff.hand_off`) never makes its calls, which are the
participants'; it does what is due and publishes who acts next:

* past its deadline, compensation begins and a :class:`FlowFailed` is published: the
  participant of the newest completed step undoes it first, as after a step that failed
  (a step in flight then counts as possibly done, and its participant undoes it too);
* a retry that came due and that its participant did not make (it died in the backoff)
  is redelivered to that participant by a :class:`StepDue` naming it, and the row parks
  again until its deadline. A control event for one participant rather than the trigger
  published again: other consumers of the trigger would take a second copy of a domain
  event, under a new id;
* past its compensation deadline, the compensations not done fail (FAILED: an
  operator's); a COMPENSATING instance nobody told (an operator's cancel) gets its
  FlowFailed; a compensation that fails for good tells the next one's participant by a
  StepDue.

An event meant for a participant that it ignores (a duplicate, a late one, one out of
order) is noted in the instance's history (:class:`~sagaflow.events.EventIgnored`: the
message's id, why); compensation events, which every participant with compensations
hears, are only logged.
`when=` is refused at definition: a skipped step would publish nothing to react to.
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
    StepDue,
    choreography,
    choreography_of,
    is_choreography,
    step,
)
from .codec import Codec, default_codec
from .context import Direction, StepContext
from .engine import Call, new_record
from .errors import ConcurrentModification, SagaflowError
from .events import EventIgnored
from .messages import Message
from .records import CompensationStatus, SagaRecord, SagaStatus, StepStatus
from .routing import UnknownCorrelation
from .runner import astep_once, step_once
from .runner._handoff import PARKED, flow_failed, park, phase_deadline, step_due
from .spec import StepKind, spec_of

__all__ = [
    "CHOREOGRAPHY_ATTRIBUTE",
    "ChoreographySpec",
    "FlowFailed",
    "Handled",
    "Participant",
    "Role",
    "StepDue",
    "UnknownInstance",
    "choreography",
    "choreography_of",
    "is_choreography",
    "message_for",
    "step",
]

log = logging.getLogger("sagaflow.choreography")

_RUNNING = SagaStatus.RUNNING
_COMPENSATING = SagaStatus.COMPENSATING
_NOT_STARTED = SagaStatus.NOT_STARTED
#: Statuses a step's outcome leaves an instance in without its flow failing.
_GOING_ON = (_NOT_STARTED, _RUNNING, SagaStatus.COMPLETED)


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
        self._by_name = {r.name: r for r in chor.roles if r.participant == name}

    # --- handling ---------------------------------------------------------------------

    def handle(self, message: Message) -> Handled:
        """Handle one consumed message (sync steps only): see the class."""
        event = self.orchestrator.runtime.codec.load_event(message.body)
        return self.handle_event(event, message)

    async def ahandle(self, message: Message) -> Handled:
        """:meth:`handle`, in the awaiting task (async steps too)."""
        event = self.orchestrator.runtime.codec.load_event(message.body)
        return await self.ahandle_event(event, message)

    def handle_event(self, event: Any, message: Message | None = None) -> Handled:
        """Handle a decoded event (as :class:`~sagaflow.outbox.Handlers` gives it);
        ``message``: the message it came in (its id names it in the instance's history
        if it is ignored)."""
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
        expect, why = self._expect(record, role, compensating, event)
        if expect is None:
            return self._ignored(event, message, record, why)
        self._unpark(record, event)
        done = step_once(rt, self.spec, record, expect, self._check, self._before_save(record))
        return self._ran(event, record, done)

    async def ahandle_event(self, event: Any, message: Message | None = None) -> Handled:
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
        expect, why = self._expect(record, role, compensating, event)
        if expect is None:
            return await self._aignored(event, message, record, why)
        self._unpark(record, event)
        done = await astep_once(
            rt, self.spec, record, expect, self._check, self._before_save(record)
        )
        return self._ran(event, record, done)

    # --- the parts --------------------------------------------------------------------

    def _plan(self, event: Any) -> tuple[str, Role | None, bool] | Handled:
        """(the instance's id, the forward role it triggers or ``None``, whether it may
        trigger a compensation), or ``not-mine``."""
        chor = self.choreography
        if isinstance(event, StepDue):  # a retry due, redelivered to its participant
            if event.flow != chor.name or event.participant != self.name:
                return Handled("not-mine")
            role = None if event.compensation else self._by_name.get(event.step)
            return chor.saga_id(event.correlation), role, event.compensation
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
        self, record: SagaRecord, role: Role | None, compensating: bool, event: Any = None
    ) -> tuple[tuple[int, Direction] | None, str]:
        """The call the event triggers at ``record`` now, or ``None`` and why not."""
        status = record.status
        if status.is_terminal:
            return None, f"the instance is {status.value}"
        now = self.orchestrator.runtime.clock.now()
        if status is _RUNNING or status is _NOT_STARTED:  # not started: its first save died
            if role is None:
                return None, "it is not compensating"
            cursor = record.cursor if status is _RUNNING else 0
            if cursor != role.index:
                at = self.spec.steps[cursor].name
                return None, f"the instance is at step {at!r}, not {role.name!r}"
            sr = record.steps[role.index]
            if sr.status not in (StepStatus.PENDING, StepStatus.RUNNING):
                return None, f"step {role.name!r} is {sr.status.value}"
            if record.deadline_at is not None and now >= record.deadline_at and (
                self.spec.steps[role.index].kind is not StepKind.RETRIABLE
            ):
                return None, "its deadline has passed: it is compensated when resumed"
            return (role.index, Direction.FORWARD), ""
        if status is _COMPENSATING and compensating:
            i = record.undo[record.cursor]
            name = self.spec.steps[i].name
            if isinstance(event, StepDue) and event.step != name:
                return None, f"it is undoing step {name!r}, not {event.step!r}"
            if i in self._undoes:
                return (i, Direction.COMPENSATE), ""
            return None, f"it is undoing step {name!r}, not one of ours"
        return None, f"the instance is {status.value}"

    def _unpark(self, record: SagaRecord, event: Any = None) -> None:
        """The record as the engine knows it: not parked, its ``wake_at`` a retry's
        time or nothing (parked, it holds the deadline: see :func:`_park`)."""
        if record.waiting == PARKED:
            record.waiting = None
            if record.wake_at == phase_deadline(record):
                record.wake_at = None
        if isinstance(event, StepDue) and event.retry_at is not None and (
            record.wake_at is None
        ):
            # The last attempt failed and its retry came due: a retry, not an attempt
            # cut off (which may have taken effect).
            record.wake_at = event.retry_at

    def _park(self, record: SagaRecord) -> None:
        park(record)

    def _before_save(self, record: SagaRecord) -> Any:
        was = record.status
        cursor = record.cursor
        chor = self.choreography

        def before_save(r: SagaRecord) -> None:
            nonlocal was, cursor
            status = r.status
            if was is not _COMPENSATING and status is not was and status not in _GOING_ON:
                failed = next((s.name for s in r.steps if s.status is StepStatus.FAILED), "")
                r.events.append(flow_failed(chor, r, failed))
            elif was is _COMPENSATING and status is _COMPENSATING and r.cursor != cursor and (
                r.steps[r.undo[cursor]].compensation is CompensationStatus.FAILED
            ):
                # A compensation failed for good (it published nothing): the next one's
                # participant is told by name, or nobody would be.
                r.events.append(step_due(chor, self.spec, r, None))
            was, cursor = status, r.cursor
            park(r)

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

    def _ignored(
        self, event: Any, message: Message | None, record: SagaRecord, why: str
    ) -> Handled:
        """Note in the instance's history that ``event`` was ignored, and why."""
        told = self._note_ignored(event, message, record, why)
        if told is not None:
            try:
                self.orchestrator.runtime.store.save(record)
            except ConcurrentModification as exc:  # it moved meanwhile: noted in the log
                log.info("sagaflow: %s: %s", record.saga_id, exc)
            else:
                self.orchestrator.runtime.listeners.notify(record.history, told)
        return Handled("ignored", record.saga_id, None, False, record.status, why)

    async def _aignored(
        self, event: Any, message: Message | None, record: SagaRecord, why: str
    ) -> Handled:
        """:meth:`_ignored`, in the awaiting task."""
        told = self._note_ignored(event, message, record, why)
        if told is not None:
            try:
                await self.orchestrator.runtime.store.asave(record)
            except ConcurrentModification as exc:
                log.info("sagaflow: %s: %s", record.saga_id, exc)
            else:
                await self.orchestrator.runtime.listeners.anotify(record.history, told)
        return Handled("ignored", record.saga_id, None, False, record.status, why)

    def _note_ignored(
        self, event: Any, message: Message | None, record: SagaRecord, why: str
    ) -> int | None:
        """Append the :class:`~sagaflow.events.EventIgnored` entry for an event meant
        for this participant (the trigger of one of its steps, a StepDue naming it);
        what listeners heard before it. ``None``: not noted, only logged: a compensation
        event (each goes to every participant with compensations, most of which have
        nothing to do with it), or an instance driven in this process right now."""
        log.info("sagaflow: %s ignored a %s for %s: %s", self.name, type(event).__name__,
                 record.saga_id, why)
        rt = self.orchestrator.runtime
        if record.saga_id in rt.live or not (
            type(event) in self._forward or isinstance(event, StepDue)
        ):  # a compensation event: every participant with compensations hears each one
            return None
        told = len(record.history)
        record.history.append(EventIgnored(
            record.saga_id, self.spec.name, rt.clock.now(), None, 0, None,
            event_id=message.id if message is not None else "",
            event_type=type(event).__qualname__, participant=self.name, reason=why,
        ))
        record.updated_at = rt.clock.now()
        return told

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

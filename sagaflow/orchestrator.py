"""The :class:`Orchestrator`: runs saga instances, sync or async, and answers about them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from functools import partial
from typing import Any

import attrs

from . import engine, queue, signals
from .clock import Clock
from .engine import new_record
from .errors import (
    AlreadyExecuting,
    CodecError,
    CorruptRecord,
    InvalidTransition,
    OperatorError,
    SagaDefinitionChanged,
    SagaflowError,
    SagaNotFound,
    SagaQuarantined,
    StoreError,
    UnknownSaga,
)
from .events import LifecycleEvent, Listener, Listeners, OperatorAction, SagaFailed, logger
from .incidents import QUARANTINED, STALLED, Incident, failed, open_incidents
from .records import SagaRecord, SagaResult, SagaStatus
from .runner import adrive, drive, stored_result
from .runtime import Instrument, Runtime
from .spec import SagaSpec, spec_of
from .stores import MemoryStore, Store, Stored, open_store
from .stores.base import Quarantined

__all__ = ["Migration", "Orchestrator", "RecoveryReport"]

_ACTIVE = (SagaStatus.NOT_STARTED, SagaStatus.RUNNING, SagaStatus.COMPENSATING)
_ACTIVE_VALUES = frozenset(s.value for s in _ACTIVE)
_DUE_PAGE = 100  #: parked sagas read per query when recovery resumes the due ones
_FINISHED = (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED)
#: What says a saga itself cannot be decoded or driven (it is set aside for an operator),
#: as does any error that is not a SagaflowError; the other SagaflowErrors (a lost race,
#: an unknown class, a changed definition, a store that is down) leave it for a later try.
_BROKEN = (CorruptRecord, InvalidTransition, CodecError)

#: Turns a record started by an older definition into one the current class can run
#: (rename steps, reorder them, ...); returns the record, or ``None`` to leave it as is.
Migration = Callable[[SagaRecord, SagaSpec], "SagaRecord | None"]


@attrs.frozen
class RecoveryReport:
    """What :meth:`Orchestrator.recover` did: each saga resumed, with the status it
    reached, and each saga left alone, with the reason (unknown class, changed
    definition, a record that cannot be decoded or driven, run elsewhere).
    ``quarantined`` names the sagas among them that are set aside for an operator
    (now, or before this recovery), with why."""

    resumed: dict[str, SagaStatus] = attrs.field(factory=dict)
    skipped: dict[str, SagaflowError] = attrs.field(factory=dict)
    quarantined: dict[str, str] = attrs.field(factory=dict)

    def describe(self) -> str:
        """A few lines for a person."""
        lines = [f"recovered {len(self.resumed)} saga(s), left {len(self.skipped)} alone"]
        if self.quarantined:
            lines[0] += f" ({len(self.quarantined)} quarantined)"
        lines += [f"  {sid}: {status.value}" for sid, status in self.resumed.items()]
        lines += [f"  {sid}: not resumed: {err}" for sid, err in self.skipped.items()]
        return "\n".join(lines)


class Orchestrator:
    """Runs sagas and keeps their records.

    ``store`` keeps the records: a store object or a URL (``sqlite:///sagas.db``,
    ``memory://``; default: a fresh :class:`~sagaflow.stores.MemoryStore`);
    ``listeners`` are callables told every lifecycle event (``async def`` ones only under
    :meth:`arun`); ``sagas`` are the saga classes this orchestrator may resume or act on
    by id (every class it runs is added); ``migrations`` maps a definition fingerprint
    that the code no longer has to a :data:`Migration`. ``clock`` and ``rand`` are for
    tests: a virtual clock, a fixed jitter. ``telemetry``: spans and metrics of every
    run (``sagaflow.otel.Telemetry()``, the ``sagaflow[otel]`` extra).
    """

    def __init__(
        self,
        store: Store | str | None = None,
        listeners: Iterable[Listener] = (),
        *,
        sagas: Iterable[type] = (),
        migrations: Mapping[str, Migration] | None = None,
        clock: Clock | None = None,
        rand: Callable[[], float] | None = None,
        on_incident: Callable[[Incident], Any] | None = None,
        telemetry: Instrument | None = None,
    ) -> None:
        self._owns_store = isinstance(store, str)
        opened: Store = MemoryStore() if store is None else open_store(store)
        #: who hears of each incident this orchestrator opens (see sagaflow.incidents)
        self.on_incident = on_incident
        heard = list(listeners)
        if on_incident is not None:
            heard.append(self._failed)
        #: what the drivers use: the store, listeners, clock, jitter, threads, live runs
        self.runtime = Runtime(opened, Listeners(heard), clock, rand, telemetry)
        self.migrations: dict[str, Migration] = dict(migrations or {})
        self._specs: dict[str, SagaSpec] = {}
        for cls in sagas:
            self.register(cls)

    @property
    def store(self) -> Store:
        """Where the records are kept."""
        return self.runtime.store

    @property
    def listeners(self) -> Listeners:
        """Who hears the lifecycle events."""
        return self.runtime.listeners

    @property
    def clock(self) -> Clock:
        """The clock runs read (a virtual one in tests)."""
        return self.runtime.clock

    @property
    def rand(self) -> Callable[[], float]:
        """The draw that places each backoff in its jitter band."""
        return self.runtime.rand

    # --- running ----------------------------------------------------------------------

    def register(self, *classes: type) -> None:
        """Let this orchestrator resume and act on stored sagas of these classes."""
        for cls in classes:
            spec = spec_of(cls)
            self._specs[spec.name] = spec
        self.store.register(*classes)

    def run(self, saga: object, saga_id: str | None = None) -> SagaResult:
        """Run ``saga`` to its end on this thread; its result, whatever the outcome.

        Starting an id that is running raises :class:`~sagaflow.AlreadyExecuting`;
        an id that finished returns the stored result without running anything.
        """
        spec = self._spec_to_run(saga)
        self._check_sync(spec)
        record = self._new(spec, saga, saga_id)
        existing = self.runtime.store.create(record)
        if existing is not None:
            return stored_result(spec, existing)
        return drive(self.runtime, spec, record)

    async def arun(self, saga: object, saga_id: str | None = None) -> SagaResult:
        """Run ``saga`` to its end in this task; see :meth:`run`.

        Cancelling the awaiting task while steps run makes the saga compensate (shielded
        from the cancellation), after which the cancellation propagates.
        """
        spec = self._spec_to_run(saga)
        record = self._new(spec, saga, saga_id)
        existing = await self.runtime.store.acreate(record)
        if existing is not None:
            return stored_result(spec, existing)
        return await adrive(self.runtime, spec, record)

    def drive(self, spec: SagaSpec, record: SagaRecord, told: int = 0) -> SagaResult:
        """Drive a record (a stored saga, or one an operator verb of :mod:`sagaflow.engine`
        changed) to its end on this thread, saving and telling listeners as it goes;
        listeners hear its history from event ``told`` on; its result. ``spec`` is what
        :meth:`spec_for` gives for it (tests may pass one with faults injected)."""
        self._check_sync(spec)
        return drive(self.runtime, spec, record, told)

    def adrive(
        self, spec: SagaSpec, record: SagaRecord, told: int = 0
    ) -> Coroutine[Any, Any, SagaResult]:
        """:meth:`drive`, in the awaiting task: await what this returns (the driver's
        own coroutine, so that a saga in flight keeps no frame of this method)."""
        return adrive(self.runtime, spec, record, told)

    # --- signals and waiting sagas ----------------------------------------------------

    def signal(
        self, saga_id: str, name: str, payload: object = None, *, signal_id: str | None = None
    ) -> SagaResult:
        """Send signal ``name`` to saga ``saga_id``; its snapshot after it took it.

        ``payload`` is an instance of the class the saga's wait declares (or a dict of
        its fields, or their JSON text). The signal is durable when this returns; one that
        arrives before the saga reaches its wait is kept for it; a second signal with the
        same ``signal_id`` is ignored. A parked saga this process can drive is resumed
        here, on this thread, until it parks again or ends (async steps: use
        :meth:`asignal`); otherwise whoever resumes it delivers the signal. Refused with
        :class:`~sagaflow.SignalRefused` (nothing stored) for a finished saga, a name it
        declares no wait for, or a payload that does not fit; :class:`~sagaflow.SagaNotFound`
        for an unknown id.
        """
        resumed = signals.send(self.runtime, self.spec_for, saga_id, name, payload, signal_id)
        return resumed if resumed is not None else self._snapshot(saga_id)

    async def asignal(
        self, saga_id: str, name: str, payload: object = None, *, signal_id: str | None = None
    ) -> SagaResult:
        """:meth:`signal`, resuming the saga in this task."""
        resumed = await signals.asend(
            self.runtime, self.spec_for, saga_id, name, payload, signal_id
        )
        return resumed if resumed is not None else self._snapshot(saga_id)

    def find(self, key: str, saga: type | str | None = None, signal: str = "") -> str:
        """The id of the one unfinished saga (of class or name ``saga``) whose business key
        (``@saga(key=...)``) is ``key``: signal it without knowing its id. Refused with
        :class:`~sagaflow.SignalRefused` (naming ``signal``) when none or several match."""
        name = saga if isinstance(saga, str) or saga is None else spec_of(saga).name
        return signals.by_key(self.runtime, str(key), name, signal)

    def resume_due(self, limit: int = 100) -> dict[str, SagaStatus]:
        """Resume, on this thread, the parked sagas whose wait's time came (a timer, a
        timeout, the saga's deadline) or whose signal arrived; each one's status after.
        A worker's loop (or a scheduler) calls this; one saga's error never stops the
        others (it is logged, and a saga that cannot be driven is quarantined)."""
        due = self.store.due(self.clock.now(), limit)
        return signals.resume_due(self.runtime, self.spec_for, self._resume_failed, due)

    async def aresume_due(self, limit: int = 100) -> dict[str, SagaStatus]:
        """:meth:`resume_due`, in this task (sagas with async steps too)."""
        due = self.store.due(self.clock.now(), limit)
        return await signals.aresume_due(self.runtime, self.spec_for, self._resume_failed, due)

    def _resume_failed(self, saga_id: str, error: Exception) -> None:
        reason = self.set_aside(saga_id, error)
        if reason is None:
            logger.warning("parked saga %s was not resumed: %s", saga_id, error)

    # --- queueing (PostgreSQL: workers run what is started) ----------------------------

    def start(self, saga: object, saga_id: str | None = None) -> str:
        """Enqueue ``saga`` for a worker (``sagaflow worker``) to run; its saga id.

        Needs a queue store (PostgreSQL). Starting an id that exists runs nothing again.
        """
        self._spec_to_run(saga)
        return queue.enqueue(self.store, saga, saga_id, clock=self.clock)

    async def astart(self, saga: object, saga_id: str | None = None) -> str:
        """:meth:`start`, without blocking the event loop."""
        self._spec_to_run(saga)
        return await queue.aenqueue(self.store, saga, saga_id, clock=self.clock)

    def wait(self, saga_id: str, timeout: float | None = None) -> SagaResult:
        """The result of ``saga_id`` once it has finished, whichever worker ran it."""
        return queue.wait(self.store, saga_id, timeout)

    async def await_result(self, saga_id: str, timeout: float | None = None) -> SagaResult:
        """:meth:`wait`, without blocking the event loop."""
        return await queue.wait_async(self.store, saga_id, timeout)

    # --- looking ----------------------------------------------------------------------

    def get(self, saga_id: str) -> SagaResult | None:
        """A snapshot of the saga ``saga_id`` (running or finished), or ``None``."""
        record = self.store.load(saga_id)
        return None if record is None else SagaResult.of(record)

    def running(self, name: str | None = None) -> list[SagaResult]:
        """Snapshots of the sagas not yet finished, most recently updated first.

        A saga whose record cannot be read is left out (and logged with its id): one
        damaged row never hides the others."""
        return self._results(_ACTIVE, name, None)

    def history(self, name: str | None = None, limit: int | None = None) -> list[SagaResult]:
        """Snapshots of finished sagas, most recently finished first (at most ``limit``;
        a saga whose record cannot be read is left out and logged, as in :meth:`running`)."""
        return self._results(_FINISHED, name, limit)

    def _results(
        self, status: tuple[SagaStatus, ...], name: str | None, limit: int | None
    ) -> list[SagaResult]:
        results: list[SagaResult] = []
        store = self.store
        for stored in store.scan(status=status, name=name, newest_first=True):
            if limit is not None and len(results) >= limit:
                break
            try:
                results.append(SagaResult.of(store.decode(stored)))
            except Exception as exc:  # reading never writes: no quarantine here
                logger.warning("saga %s is left out: its record cannot be read: %s",
                               stored.saga_id, exc)
        return results

    # --- operator verbs ---------------------------------------------------------------

    def cancel(self, saga_id: str, note: str | None = None) -> SagaResult:
        """Make a RUNNING saga compensate, and return its snapshot.

        A saga this orchestrator is running compensates after the step in flight; one
        that no process runs (its process died) compensates now, on this thread, the
        step that was in flight included (its outcome is unknown).
        """
        if self.runtime.request_cancel(saga_id, note):
            return self._snapshot(saga_id)
        return self._operate(saga_id, engine.cancel, note)

    def retry(self, saga_id: str, note: str | None = None) -> SagaResult:
        """Run a FAILED saga's failed compensations (or failed retriable step or pivot)
        again, with a fresh retry budget."""
        return self._operate(saga_id, engine.retry, note)

    def resolve(self, saga_id: str, note: str) -> SagaResult:
        """Mark a FAILED saga as handled by hand; ``note`` says what was done."""
        return self._operate(saga_id, engine.resolve, note)  # drives nothing: it saves

    async def acancel(self, saga_id: str, note: str | None = None) -> SagaResult:
        """:meth:`cancel`, for sagas with async steps (or under a running loop)."""
        if self.runtime.request_cancel(saga_id, note):
            return self._snapshot(saga_id)
        return await self._aoperate(saga_id, engine.cancel, note)

    async def aretry(self, saga_id: str, note: str | None = None) -> SagaResult:
        """:meth:`retry`, for sagas with async steps (or under a running loop)."""
        return await self._aoperate(saga_id, engine.retry, note)

    async def aresolve(self, saga_id: str, note: str) -> SagaResult:
        """:meth:`resolve`, under a running loop."""
        return await self._aoperate(saga_id, engine.resolve, note)

    def unquarantine(self, saga_id: str, note: str | None = None) -> bool:
        """Lift the quarantine of ``saga_id`` (once what made it fail is fixed), so that
        recovery and workers take it again; whether it was quarantined.

        With ``note`` the lifting is recorded in the saga's history (an
        ``OperatorAction`` "unquarantine" with the note), which needs its record to be
        readable now: one that still cannot be decoded is refused with
        :class:`~sagaflow.errors.OperatorError` and stays quarantined."""
        if note is not None:
            stored = self.store.load_raw(saga_id)
            if stored is None:
                raise SagaNotFound(saga_id)
            if stored.quarantined is None:
                return False
            try:
                record = self.store.load(saga_id)
            except SagaflowError as exc:
                raise OperatorError(
                    f"saga {saga_id!r} still cannot be read ({exc}): fix that first; it "
                    "stays quarantined"
                ) from None
            assert record is not None
            record.history.append(OperatorAction(
                saga_id, record.saga_name, self.clock.now(), action="unquarantine", note=note,
            ))  # fmt: skip
            self.store.save(record)
        return self.store.unquarantine(saga_id)

    def quarantined(self) -> list[Quarantined]:
        """The sagas set aside for an operator, with why, the longest set aside first."""
        return self.store.quarantined()

    def set_aside(self, saga_id: str, error: BaseException) -> str | None:
        """If ``error`` (raised while saga ``saga_id`` was decoded or driven) says the
        saga itself cannot be decoded or driven, quarantine it in the store and return
        the reason; ``None`` for a passing trouble (a lost race, an unknown class, a
        changed definition, a store that is down), which a later try may not meet."""
        if isinstance(error, SagaflowError) and not isinstance(error, _BROKEN):
            return None
        reason = f"cannot be decoded or driven: {type(error).__name__}: {error}"
        try:
            self.store.quarantine(saga_id, reason)
        except (StoreError, SagaNotFound) as exc:
            logger.error("saga %s could not be quarantined (%s): %s", saga_id, exc, reason)
            return None
        logger.error("saga %s is quarantined, %s", saga_id, reason)
        if self.on_incident is not None:
            stored = self.store.load_raw(saga_id)
            name = stored.saga_name if stored is not None else "?"
            self._tell(Incident.of(saga_id, name, QUARANTINED, reason, self.clock.now()))
        return reason

    # --- incidents ----------------------------------------------------------------------

    def incidents(self, stalled_after: float | None = None) -> list[Incident]:
        """The incidents open in this orchestrator's store (see
        :func:`sagaflow.incidents.open_incidents`)."""
        return open_incidents(self.store, stalled_after=stalled_after, now=self.clock.now())

    def check_stalled(self, after: float) -> list[Incident]:
        """The sagas stalled for more than ``after`` seconds (RUNNING or COMPENSATING,
        not waiting, no checkpoint since): each is handed to ``on_incident``; a worker
        or a scheduler calls this now and then."""
        found = [
            i for i in open_incidents(self.store, stalled_after=after, now=self.clock.now())
            if i.kind == STALLED
        ]
        for incident in found:
            self._tell(incident)
        return found

    def _failed(self, event: LifecycleEvent) -> None:
        """A listener: a saga run here ended FAILED: its incident, to ``on_incident``."""
        if event.__class__ is not SagaFailed:
            return
        record = self.store.load(event.saga_id)
        incident = None if record is None else failed(record)
        if incident is not None:
            self._tell(incident)

    def _tell(self, incident: Incident) -> None:
        hook = self.on_incident
        if hook is None:
            return
        try:
            hook(incident)
        except Exception:  # like a listener's: logged, never in the saga's way
            logger.exception("on_incident failed on %s", incident.id)

    def _operate(
        self,
        saga_id: str,
        verb: Callable[[SagaSpec, SagaRecord, float, Any], None],
        note: str | None,
    ) -> SagaResult:
        """Apply an operator ``verb`` to a stored saga and drive it on (on this thread).

        A saga that cannot be decoded or driven is quarantined and the error raised;
        one the verb went through with is released from any quarantine."""
        spec, record, told = self._act(saga_id, verb, note, sync=True)
        try:
            self.drive(spec, record, told)
        except Exception as exc:
            self.set_aside(saga_id, exc)
            raise
        self.store.unquarantine(saga_id)
        return SagaResult.of(record)

    async def _aoperate(
        self,
        saga_id: str,
        verb: Callable[[SagaSpec, SagaRecord, float, Any], None],
        note: str | None,
    ) -> SagaResult:
        """:meth:`_operate`, driving in this task."""
        spec, record, told = self._act(saga_id, verb, note, sync=False)
        try:
            await self.adrive(spec, record, told)
        except Exception as exc:
            self.set_aside(saga_id, exc)
            raise
        self.store.unquarantine(saga_id)
        return SagaResult.of(record)

    def _act(
        self,
        saga_id: str,
        verb: Callable[[SagaSpec, SagaRecord, float, Any], None],
        note: str | None,
        sync: bool = True,
    ) -> tuple[SagaSpec, SagaRecord, int]:
        """Apply an operator ``verb`` to a stored saga; what listeners were told of it.

        ``sync``: the saga is driven on by this thread, so refuse an async saga before
        changing anything.
        """
        spec, record = self._stored(saga_id)
        if sync:
            self._check_sync(spec)
        told = len(record.history)
        try:
            verb(spec, record, self.clock.now(), note)
        except Exception as exc:  # an OperatorError leaves it be; a damaged record not
            self.set_aside(saga_id, exc)
            raise
        return spec, record, told

    # --- recovery ---------------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """Resume every unfinished saga of the registered classes, one after another.

        A step or compensation that was in flight when its process died runs again with
        the same idempotency key; a retry that was waiting waits out the rest of its
        delay; a deadline that passed meanwhile starts compensation. A saga whose class
        is unknown or whose definition changed (see ``migrations``) is left untouched
        and reported; one that cannot be decoded or driven is reported and quarantined
        (see :meth:`set_aside`); a quarantined one is reported and left alone. Whatever
        one saga raises, the others go on.
        """
        self._check_listeners()
        report = RecoveryReport()
        for stored in self._to_recover():
            found = self._recoverable(stored, report)
            if found is None:
                continue
            spec, record, told = found
            if spec.is_async:
                report.skipped[record.saga_id] = SagaflowError(
                    f"saga {record.saga_id!r} ({spec.name}) has async steps: recover it "
                    "with 'await orchestrator.arecover()'"
                )
                continue
            try:
                self.drive(spec, record, told)
            except Exception as exc:
                self._not_resumed(report, record.saga_id, exc)
            else:
                report.resumed[record.saga_id] = record.status
        report.resumed.update(signals.resume_due(
            self.runtime, self.spec_for, partial(self._not_resumed, report), self._due_ids()
        ))
        return report

    async def arecover(self, concurrency: int = 256) -> RecoveryReport:
        """:meth:`recover`, resuming up to ``concurrency`` sagas at once on this loop
        (a durable store then commits their checkpoints together)."""
        report = RecoveryReport()
        # Each saga is decoded when a resumer is free for it: no task, and no decoded
        # record waiting, per saga in the store.
        found = (self._recoverable(stored, report) for stored in self._to_recover())

        async def resumer() -> None:
            for each in found:  # shared: every resumer takes the next saga
                if each is None:
                    continue
                spec, record, told = each
                try:
                    await self.adrive(spec, record, told)
                except Exception as exc:
                    self._not_resumed(report, record.saga_id, exc)
                else:
                    report.resumed[record.saga_id] = record.status

        await asyncio.gather(*(resumer() for _ in range(max(1, concurrency))))
        report.resumed.update(await signals.aresume_due(
            self.runtime, self.spec_for, partial(self._not_resumed, report), self._due_ids()
        ))
        return report

    def _to_recover(self) -> list[Stored]:
        """The unfinished sagas that are not parked (read from their own index: the
        parked ones, which may be most, are not read), and the parked ones set aside
        (to report them as before)."""
        found = list(self.store.scan(status=_ACTIVE, parked=False))
        for held in self.store.quarantined():
            stored = self.store.load_raw(held.saga_id)
            if stored is not None and stored.parked and stored.status in _ACTIVE_VALUES:
                found.append(stored)
        return found

    def _due_ids(self) -> Iterator[str]:
        """The parked sagas due now (their time came, or their signal), each once: what
        recovery resumes of the sagas it left as rows."""
        seen: set[str] = set()
        while True:
            page = [sid for sid in self.store.due(self.clock.now(), _DUE_PAGE) if sid not in seen]
            if not page:
                return
            seen.update(page)
            yield from page

    def _recoverable(
        self, stored: Stored, report: RecoveryReport
    ) -> tuple[SagaSpec, SagaRecord, int] | None:
        """The spec and decoded record of ``stored`` (its history so far: what listeners
        heard already), or ``None`` (reported) if it is quarantined, unknown, changed,
        cannot be decoded, or already running here. The resumption is recorded in its
        history."""
        sid = stored.saga_id
        if sid in self.runtime.live:
            return None
        if stored.quarantined is not None:
            report.skipped[sid] = SagaQuarantined(sid, stored.quarantined)
            report.quarantined[sid] = stored.quarantined
            return None
        if stored.parked:
            return None  # a row until its signal or time comes: see _due_ids
        try:
            spec = self._specs.get(stored.saga_name)
            if spec is None:
                raise UnknownSaga(sid, stored.saga_name)
            record = self.store.decode(stored, spec.cls)
            spec = self.spec_for(record)
        except Exception as exc:
            self._not_resumed(report, sid, exc)
            return None
        told = len(record.history)
        record.history.append(
            OperatorAction(sid, spec.name, self.clock.now(), action="recover",
                           note="resumed from its last checkpoint")
        )
        return spec, record, told

    def _not_resumed(self, report: RecoveryReport, saga_id: str, error: Exception) -> None:
        """Report what one saga raised; set it aside if it cannot be decoded or driven."""
        reason = self.set_aside(saga_id, error)
        if reason is not None:
            report.quarantined[saga_id] = reason
        if not isinstance(error, SagaflowError):
            failure = SagaQuarantined(saga_id, reason or f"{type(error).__name__}: {error}")
            failure.__cause__ = error
            error = failure
        report.skipped[saga_id] = error
        if reason is None:
            logger.warning("saga %s was not resumed: %s", saga_id, error)

    # --- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Stop idle worker threads (calls still running finish on their own), and
        close the store if this orchestrator opened it from a URL."""
        self.runtime.close()
        close = getattr(self.store, "close", None)
        if self._owns_store and close is not None:
            close()

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------

    def _spec_to_run(self, saga: object) -> SagaSpec:
        spec = spec_of(saga)
        if self._specs.get(spec.name) is not spec:
            self.register(spec.cls)  # the class run last is the one to resume
        return spec

    def _check_sync(self, spec: SagaSpec) -> None:
        if spec.is_async:
            names = ", ".join(
                s.name for s in spec.steps if s.is_async or s.compensation_is_async
            )
            raise TypeError(
                f"saga {spec.name!r} has async steps or compensations ({names}): "
                "run it with 'await orchestrator.arun(saga)'"
            )
        self._check_listeners()

    def _check_listeners(self) -> None:
        if self.listeners.async_:
            raise TypeError(
                f"async listeners {self.listeners.async_!r} can only be awaited under "
                "arun(): use arun(), or give this orchestrator sync listeners"
            )

    def _snapshot(self, saga_id: str) -> SagaResult:
        record = self.store.load(saga_id)
        if record is None:
            raise SagaNotFound(saga_id)
        return SagaResult.of(record)

    def spec_for(self, record: SagaRecord) -> SagaSpec:
        """The spec that can run ``record``, migrating it if the definition changed."""
        spec = self._specs.get(record.saga_name)
        if spec is None:
            raise UnknownSaga(record.saga_id, record.saga_name)
        if record.fingerprint != spec.fingerprint:
            migrate = self.migrations.get(record.fingerprint)
            migrated = None if migrate is None else migrate(record, spec)
            if migrated is None or migrated.fingerprint != spec.fingerprint:
                raise SagaDefinitionChanged(
                    record.saga_id, record.saga_name, record.fingerprint, spec.fingerprint
                )
            if migrated is not record:  # a new record: the caller holds the old object
                for field in attrs.fields(SagaRecord):
                    setattr(record, field.name, getattr(migrated, field.name))
        return spec

    def _stored(self, saga_id: str) -> tuple[SagaSpec, SagaRecord]:
        """The spec and record of a stored saga; one that cannot be decoded is
        quarantined (and the error raised)."""
        if saga_id in self.runtime.live:
            raise AlreadyExecuting(saga_id)
        try:
            record = self.store.load(saga_id)
            if record is None:
                raise SagaNotFound(saga_id)
            return self.spec_for(record), record
        except Exception as exc:
            self.set_aside(saga_id, exc)
            raise

    def _new(self, spec: SagaSpec, saga: object, saga_id: str | None) -> SagaRecord:
        return new_record(spec, saga, queue.new_saga_id(saga_id), self.clock.now())


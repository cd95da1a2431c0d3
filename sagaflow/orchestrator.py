"""The :class:`Orchestrator`: runs saga instances, sync or async, and answers about them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from . import engine, queue
from .clock import Clock
from .definition import SagaSpec, spec_of
from .engine import new_record
from .errors import (
    AlreadyExecuting,
    SagaDefinitionChanged,
    SagaflowError,
    SagaNotFound,
    UnknownSaga,
)
from .events import Listener, Listeners, OperatorAction
from .records import SagaRecord, SagaResult, SagaStatus
from .runner import adrive, drive
from .runtime import Runtime
from .stores import MemoryStore, Store, Stored, open_store

__all__ = ["Migration", "Orchestrator", "RecoveryReport"]

_ACTIVE = (SagaStatus.NOT_STARTED, SagaStatus.RUNNING, SagaStatus.COMPENSATING)
_FINISHED = (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED)

#: Turns a record started by an older definition into one the current class can run
#: (rename steps, reorder them, ...); returns the record, or ``None`` to leave it as is.
Migration = Callable[[SagaRecord, SagaSpec], "SagaRecord | None"]


@attrs.frozen
class RecoveryReport:
    """What :meth:`Orchestrator.recover` did: each saga resumed, with the status it
    reached, and each saga left alone, with the reason (unknown class, changed
    definition, unreadable record, run elsewhere)."""

    resumed: dict[str, SagaStatus] = attrs.field(factory=dict)
    skipped: dict[str, SagaflowError] = attrs.field(factory=dict)

    def describe(self) -> str:
        """A few lines for a person."""
        lines = [f"recovered {len(self.resumed)} saga(s), left {len(self.skipped)} alone"]
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
    tests: a virtual clock, a fixed jitter.
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
    ) -> None:
        self._owns_store = isinstance(store, str)
        opened: Store = MemoryStore() if store is None else open_store(store)
        #: what the drivers use: the store, listeners, clock, jitter, threads, live runs
        self.runtime = Runtime(opened, Listeners(listeners), clock, rand)
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
            return self._existing(spec, existing)
        drive(self.runtime, spec, record)
        return SagaResult.of(record)

    async def arun(self, saga: object, saga_id: str | None = None) -> SagaResult:
        """Run ``saga`` to its end in this task; see :meth:`run`.

        Cancelling the awaiting task while steps run makes the saga compensate (shielded
        from the cancellation), after which the cancellation propagates.
        """
        spec = self._spec_to_run(saga)
        record = self._new(spec, saga, saga_id)
        existing = await self.runtime.store.acreate(record)
        if existing is not None:
            return self._existing(spec, existing)
        await adrive(self.runtime, spec, record)
        return SagaResult.of(record)

    def drive(self, spec: SagaSpec, record: SagaRecord, told: int = 0) -> None:
        """Drive a record (a stored saga, or one an operator verb of :mod:`sagaflow.engine`
        changed) to its end on this thread, saving and telling listeners as it goes;
        listeners hear its history from event ``told`` on. ``spec`` is what
        :meth:`spec_for` gives for it (tests may pass one with faults injected)."""
        self._check_sync(spec)
        drive(self.runtime, spec, record, told)

    async def adrive(self, spec: SagaSpec, record: SagaRecord, told: int = 0) -> None:
        """:meth:`drive`, in this task."""
        await adrive(self.runtime, spec, record, told)

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
        """Snapshots of the sagas not yet finished, most recently updated first."""
        return [SagaResult.of(r) for r in self.store.query(status=_ACTIVE, name=name)]

    def history(self, name: str | None = None, limit: int | None = None) -> list[SagaResult]:
        """Snapshots of finished sagas, most recently finished first."""
        records = self.store.query(status=_FINISHED, name=name, limit=limit)
        return [SagaResult.of(r) for r in records]

    # --- operator verbs ---------------------------------------------------------------

    def cancel(self, saga_id: str, note: str | None = None) -> SagaResult:
        """Make a RUNNING saga compensate, and return its snapshot.

        A saga this orchestrator is running compensates after the step in flight; one
        that no process runs (its process died) compensates now, on this thread, the
        step that was in flight included (its outcome is unknown).
        """
        if self.runtime.request_cancel(saga_id, note):
            return self._snapshot(saga_id)
        spec, record, told = self._act(saga_id, engine.cancel, note)
        self.drive(spec, record, told)
        return SagaResult.of(record)

    def retry(self, saga_id: str, note: str | None = None) -> SagaResult:
        """Run a FAILED saga's failed compensations (or failed retriable step or pivot)
        again, with a fresh retry budget."""
        spec, record, told = self._act(saga_id, engine.retry, note)
        self.drive(spec, record, told)
        return SagaResult.of(record)

    def resolve(self, saga_id: str, note: str) -> SagaResult:
        """Mark a FAILED saga as handled by hand; ``note`` says what was done."""
        spec, record, told = self._act(saga_id, engine.resolve, note)
        self.drive(spec, record, told)  # saves the record, tells listeners; runs nothing
        return SagaResult.of(record)

    async def acancel(self, saga_id: str, note: str | None = None) -> SagaResult:
        """:meth:`cancel`, for sagas with async steps (or under a running loop)."""
        if self.runtime.request_cancel(saga_id, note):
            return self._snapshot(saga_id)
        spec, record, told = self._act(saga_id, engine.cancel, note, sync=False)
        await self.adrive(spec, record, told)
        return SagaResult.of(record)

    async def aretry(self, saga_id: str, note: str | None = None) -> SagaResult:
        """:meth:`retry`, for sagas with async steps (or under a running loop)."""
        spec, record, told = self._act(saga_id, engine.retry, note, sync=False)
        await self.adrive(spec, record, told)
        return SagaResult.of(record)

    async def aresolve(self, saga_id: str, note: str) -> SagaResult:
        """:meth:`resolve`, under a running loop."""
        spec, record, told = self._act(saga_id, engine.resolve, note, sync=False)
        await self.adrive(spec, record, told)
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
        verb(spec, record, self.clock.now(), note)
        return spec, record, told

    # --- recovery ---------------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """Resume every unfinished saga of the registered classes, one after another.

        A step or compensation that was in flight when its process died runs again with
        the same idempotency key; a retry that was waiting waits out the rest of its
        delay; a deadline that passed meanwhile starts compensation. A saga whose class
        is unknown, whose definition changed (see ``migrations``), or whose record
        cannot be read is left untouched and reported.
        """
        report = RecoveryReport()
        for stored in list(self.store.scan(status=_ACTIVE)):
            found = self._recoverable(stored, report)
            if found is None:
                continue
            spec, record, told = found
            try:
                self.drive(spec, record, told)
            except SagaflowError as exc:  # e.g. another process took it over meanwhile
                report.skipped[record.saga_id] = exc
            else:
                report.resumed[record.saga_id] = record.status
        return report

    async def arecover(self, concurrency: int = 256) -> RecoveryReport:
        """:meth:`recover`, resuming up to ``concurrency`` sagas at once on this loop
        (a durable store then commits their checkpoints together)."""
        report = RecoveryReport()
        gate = asyncio.Semaphore(concurrency)

        async def resume(spec: SagaSpec, record: SagaRecord, told: int) -> None:
            async with gate:
                try:
                    await self.adrive(spec, record, told)
                except SagaflowError as exc:
                    report.skipped[record.saga_id] = exc
                else:
                    report.resumed[record.saga_id] = record.status

        tasks = []
        for stored in list(self.store.scan(status=_ACTIVE)):
            found = self._recoverable(stored, report)
            if found is not None:
                tasks.append(asyncio.ensure_future(resume(*found)))
        if tasks:
            await asyncio.gather(*tasks)
        return report

    def _recoverable(
        self, stored: Stored, report: RecoveryReport
    ) -> tuple[SagaSpec, SagaRecord, int] | None:
        """The spec and decoded record of ``stored`` (its history so far: what listeners
        heard already), or ``None`` (reported) if it is unknown, changed, unreadable, or
        already running here. The resumption is recorded in its history."""
        sid = stored.saga_id
        if sid in self.runtime.live:
            return None
        try:
            spec = self._specs.get(stored.saga_name)
            if spec is None:
                raise UnknownSaga(sid, stored.saga_name)
            record = self.store.decode(stored, spec.cls)
            spec = self.spec_for(record)
        except SagaflowError as exc:
            report.skipped[sid] = exc
            return None
        told = len(record.history)
        record.history.append(
            OperatorAction(sid, spec.name, self.clock.now(), action="recover",
                           note="resumed from its last checkpoint")
        )
        return spec, record, told

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
        if saga_id in self.runtime.live:
            raise AlreadyExecuting(saga_id)
        record = self.store.load(saga_id)
        if record is None:
            raise SagaNotFound(saga_id)
        return self.spec_for(record), record

    def _new(self, spec: SagaSpec, saga: object, saga_id: str | None) -> SagaRecord:
        return new_record(spec, saga, queue.new_saga_id(saga_id), self.clock.now())

    @staticmethod
    def _existing(spec: SagaSpec, record: SagaRecord) -> SagaResult:
        if record.saga_name != spec.name:
            raise SagaflowError(
                f"saga id {record.saga_id!r} belongs to a {record.saga_name!r} saga, not "
                f"{spec.name!r}: saga ids must be unique across saga types"
            )
        if not record.status.is_terminal:
            raise AlreadyExecuting(record.saga_id, record.status.value)
        return SagaResult.of(record)

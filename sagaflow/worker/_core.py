"""The :class:`Worker`: what every worker does whatever its store (options, the
orchestrator it drives sagas with, running until stopped, the grace period), and the
mode that serves its store (:mod:`._queue`: PostgreSQL; :mod:`._file`: SQLite)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..clock import Clock, SystemClock
from ..events import Listener
from ..incidents import STALLED, Incident
from ..orchestrator import Migration, Orchestrator
from ..runtime import Instrument
from ..spec import SagaSpec, spec_of
from ..stores import Store
from ..stores.sqlite import SQLiteStore
from ..stores.url import open_store
from ._host import Lease, Mode, Park, WorkerStats, current_lease

__all__ = ["Lease", "Worker", "WorkerStats", "current_lease"]

log = logging.getLogger("sagaflow.worker")


class ParkingClock:
    """The worker's clock: short sleeps are slept; a longer one (or any, once the
    worker is stopping) parks the saga instead of holding it."""

    def __init__(self, base: Clock, worker: Worker) -> None:
        self.base = base
        self.worker = worker

    def now(self) -> float:
        return self.base.now()

    def sleep(self, seconds: float) -> None:
        self.base.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        worker = self.worker
        if worker.stopping or seconds > worker.mode.park_after:
            raise Park(self.base.now() + seconds)
        stopping = worker.stopping_event
        if stopping is None or not isinstance(self.base, SystemClock):
            await self.base.asleep(seconds)
            if worker.stopping:
                raise Park(self.base.now())
            return
        until = self.base.now() + seconds
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stopping.wait()
        if worker.stopping:
            raise Park(until)


_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_STALLED_EVERY = 60.0  #: the longest interval between two looks for stalled sagas


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


class Worker:
    """Runs sagas in the background from a SQLite file (one worker per file) or a
    PostgreSQL database (a queue: any number of workers), ``concurrency`` at once.

    ``store`` is a :class:`~sagaflow.stores.sqlite.SQLiteStore`, a
    :class:`~sagaflow.stores.postgres.PostgresStore`, or a URL of either; ``sagas`` the
    saga classes this worker runs (it takes only those, and only at their current
    definitions or one that ``migrations`` maps). ``poll``: an idle worker looks at the
    store at least this often, for sagas whose time came (signals and new sagas wake it
    at once: PostgreSQL notifies, SQLite is watched every 10 ms). ``grace`` is how long
    a stopping worker lets running sagas finish. ``listeners`` and ``clock`` are the
    :class:`~sagaflow.Orchestrator`'s.

    PostgreSQL only: ``lease`` is how long a claim lasts without a heartbeat (seconds):
    a dead worker's sagas are taken over that long after its last heartbeat, every
    ``heartbeat`` seconds (default: a third of ``lease``); a retry waiting longer than
    ``park_after`` goes back to the queue; ``retry_later``: when a saga that could not
    be run is tried again; ``claim_batch``: sagas claimed at once.

    Incidents: ``on_incident`` hears of each incident the worker opens (a saga it runs
    ending FAILED, one it quarantines; see :mod:`sagaflow.incidents`), and each is
    logged. With ``stalled_after`` (seconds) the worker also looks for stalled sagas
    (:meth:`Orchestrator.check_stalled`: RUNNING or COMPENSATING, not waiting, no
    checkpoint for that long; its own or any other in the store) every
    ``stalled_every`` seconds (default: half of ``stalled_after``, at most a minute),
    and reports each one once while it stays stalled, not at every look: once across
    every worker sharing the store (the first to claim it in the store reports it), and
    once more only when the saga moved on and stalled anew.

    ``telemetry``: what traces and measures the sagas this worker runs (the
    :class:`~sagaflow.Orchestrator`'s; :class:`sagaflow.otel.Telemetry`).
    """

    def __init__(
        self,
        store: Store | str,
        sagas: Iterable[type] = (),
        *,
        concurrency: int = 64,
        lease: float = 30.0,
        heartbeat: float | None = None,
        poll: float = 0.5,
        park_after: float = 1.0,
        grace: float = 30.0,
        retry_later: float = 60.0,
        claim_batch: int | None = None,
        listeners: Iterable[Listener] = (),
        migrations: Mapping[str, Migration] | None = None,
        clock: Clock | None = None,
        worker_id: str | None = None,
        on_incident: Callable[[Incident], Any] | None = None,
        stalled_after: float | None = None,
        stalled_every: float | None = None,
        telemetry: Instrument | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
        if lease <= 0:
            raise ValueError(f"lease must be > 0 seconds, got {lease!r}")
        heartbeat = lease / 3 if heartbeat is None else heartbeat
        if not 0 < heartbeat < lease:
            raise ValueError(
                f"heartbeat must be > 0 and shorter than the lease ({lease:g}s), got "
                f"{heartbeat!r}: a lease must be renewed before it expires"
            )
        if not poll > 0:
            raise ValueError(f"poll must be > 0 seconds, got {poll!r}")
        if stalled_after is not None and not stalled_after > 0:
            raise ValueError(f"stalled_after must be > 0 seconds, got {stalled_after!r}")
        if stalled_every is not None and not stalled_every > 0:
            raise ValueError(f"stalled_every must be > 0 seconds, got {stalled_every!r}")
        self.stalled_after = None if stalled_after is None else float(stalled_after)
        self.stalled_every = float(
            stalled_every if stalled_every is not None
            else min((stalled_after or 0.0) / 2, _STALLED_EVERY)
        )
        self.on_incident = on_incident
        #: the stalled incidents still open that this worker has claimed or seen
        #: claimed (each asked of the store once)
        self._paged: set[str] = set()
        #: how many times the worker has looked for stalled sagas
        self.stall_checks = 0
        self.id = worker_id or _worker_id()
        self.concurrency = concurrency
        self.lease = float(lease)
        self.heartbeat = float(heartbeat)
        self.poll = float(poll)
        self.park_after = float(park_after)
        self.grace = float(grace)
        self.retry_later = float(retry_later)
        self.claim_batch = claim_batch if claim_batch is not None else concurrency
        self.stats = WorkerStats()
        self.stopping = False
        self._grace_override: float | None = None
        self.base_clock: Clock = SystemClock() if clock is None else clock
        #: saga id -> the task driving it
        self.active: dict[str, asyncio.Task[None]] = {}
        self.specs: dict[str, SagaSpec] = {}
        self.migrations = dict(migrations or {})
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopping_event: asyncio.Event | None = None
        #: set when the worker has something to look at: a saga ended, a wake-up, a stop
        self.wake: asyncio.Event | None = None

        self._owns_store = isinstance(store, str)
        opened = open_store(store) if isinstance(store, str) else store
        try:
            self.mode: Mode = _mode_for(opened, self)
        except BaseException:
            close = getattr(opened, "close", None)
            if self._owns_store and close is not None:
                close()
            raise
        self.store = self.mode.store
        self.orchestrator = Orchestrator(
            self.mode.view,
            listeners,
            migrations=self.migrations,
            clock=ParkingClock(self.base_clock, self),
            on_incident=self._page if on_incident or stalled_after else None,
            telemetry=telemetry,
        )
        self.register(*sagas)

    def register(self, *classes: type) -> None:
        """Run sagas of these classes too."""
        for cls in classes:
            spec = spec_of(cls)
            self.specs[spec.name] = spec
        self.orchestrator.register(*classes)

    def kinds(self) -> tuple[list[str], list[str]]:
        """The saga names and definition fingerprints this worker runs."""
        fingerprints = [s.fingerprint for s in self.specs.values()] + list(self.migrations)
        return list(self.specs), fingerprints

    # --- running ------------------------------------------------------------------

    def run(self, *, handle_signals: bool = True) -> WorkerStats:
        """Serve until :meth:`stop` (or SIGTERM / SIGINT, with ``handle_signals``, on the
        main thread): the blocking form of :meth:`serve`, for a worker process."""

        async def main() -> WorkerStats:
            loop = asyncio.get_running_loop()
            if handle_signals:
                for sig in _SIGNALS:
                    loop.add_signal_handler(sig, self._on_signal, sig)
            return await self.serve()

        if threading.current_thread() is not threading.main_thread():
            handle_signals = False  # only the main thread may handle signals
        if not handle_signals:
            return asyncio.run(main())
        # Until the loop handles them: a signal during start-up stops the worker too.
        before = {sig: signal.signal(sig, self._on_early_signal) for sig in _SIGNALS}
        try:
            return asyncio.run(main())
        finally:
            for sig, handler in before.items():
                signal.signal(sig, handler)

    def _on_early_signal(self, sig: int, frame: object) -> None:
        self._on_signal(sig)

    def _on_signal(self, sig: int) -> None:
        if self.stopping:
            log.warning("worker %s: second %s, letting go of everything now", self.id, sig)
            self.stop(grace=0.0)
        else:
            log.info("worker %s: %s, stopping (grace %gs)", self.id, sig, self.grace)
            self.stop()

    def stop(self, grace: float | None = None) -> None:
        """Stop taking sagas; let running sagas finish for ``grace`` seconds (default:
        the worker's), then let go of the rest. Safe from any thread; returns at once."""
        if grace is not None:
            self._grace_override = grace
        loop = self._loop
        if loop is None:
            self.stopping = True
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to stop
            loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        self.stopping = True
        if self.stopping_event is not None:
            self.stopping_event.set()
        if self.wake is not None:
            self.wake.set()

    async def serve(self) -> WorkerStats:
        """Take and run sagas until :meth:`stop`; returns what was done."""
        if not self.specs:
            raise ValueError(
                "this worker knows no saga classes: pass them as Worker(store, sagas=[...]) "
                "(or --import their module on the command line)"
            )
        self._loop = asyncio.get_running_loop()
        self.stopping_event = asyncio.Event()
        self.wake = asyncio.Event()
        if self.stopping:
            self._stop_now()
        log.info("worker %s: serving %s", self.id, ", ".join(sorted(self.specs)))
        watch = None
        if self.stalled_after is not None:
            watch = asyncio.get_running_loop().create_task(self._watch_stalled())
        try:
            await self.mode.serve()
            await self._shutdown()
        finally:
            if watch is not None:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
            try:
                await self.mode.finish()
            finally:
                self._loop = None
                if self._owns_store:
                    self.orchestrator.close()
                    self.store.close()
        log.info("worker %s: stopped; %s", self.id, self.stats.describe())
        return self.stats

    def close(self) -> None:
        """Let go of the store without serving (a worker that :meth:`serve` ran lets go
        of it when it stops): the SQLite file's lock; the store if opened from a URL."""
        self.mode.close()
        if self._owns_store:
            self.orchestrator.close()
            self.store.close()

    async def _shutdown(self) -> None:
        """Let running sagas finish for the grace period, then let go of the rest."""
        tasks = [t for t in self.mode.running().values() if not t.done()]
        wake = self.wake
        assert wake is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        if tasks:
            log.info("worker %s: waiting up to %gs for %d running saga(s)",
                     self.id, self._grace(), len(tasks))
        while True:
            pending = [t for t in tasks if not t.done()]
            left = start + self._grace() - loop.time()
            if not pending or left <= 0:
                break
            wake.clear()  # set again by a saga ending, or by stop(grace=...)
            woken = loop.create_task(wake.wait())
            await asyncio.wait([*pending, woken], timeout=left,
                               return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
        remaining = {key: t for key, t in self.mode.running().items() if not t.done()}
        if not remaining:
            return
        log.warning("worker %s: letting go of %d saga(s) still running", self.id, len(remaining))
        # First, so that the cancelled runs' compensations cannot write.
        await self.mode.let_go(remaining)
        for task in remaining.values():
            task.cancel()
        await asyncio.gather(*remaining.values(), return_exceptions=True)

    # --- incidents ------------------------------------------------------------------

    async def _watch_stalled(self) -> None:
        """Look for stalled sagas every ``stalled_every`` seconds until stopping."""
        stopping = self.stopping_event
        assert stopping is not None and self.stalled_after is not None
        while not self.stopping:
            try:
                await asyncio.to_thread(self.check_stalled)
            except Exception as exc:  # a store that is down: look again next time
                log.warning("worker %s: looking for stalled sagas failed: %s", self.id, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.stalled_every):
                    await stopping.wait()

    def check_stalled(self) -> list[Incident]:
        """The sagas stalled now (``stalled_after``); those not reported yet are handed
        to ``on_incident`` (and logged). One that moved on and stalls again is a new
        incident (its id names when it last moved)."""
        assert self.stalled_after is not None
        found = self.orchestrator.check_stalled(self.stalled_after)
        self._paged &= {i.id for i in found}  # the closed ones are forgotten
        self.stall_checks += 1
        log.debug("worker %s: looked for stalled sagas: %d stalled", self.id, len(found))
        return found

    def _page(self, incident: Incident) -> None:
        """The orchestrator's ``on_incident``: log it and pass it on, a stalled saga
        once while it stays stalled, by whichever worker sharing the store claims it
        first (a row of its own in the store: the saga's record, which its driver may
        still be saving, is never written). A claim the store fails is tried again at
        the next look."""
        if incident.kind == STALLED:
            if incident.id in self._paged:
                return
            try:
                mine = self.store.claim_incident(incident, self.id)
            except Exception as exc:  # the store is down: the next look tries again
                log.warning("worker %s: could not claim %s in the store: %s", self.id,
                            incident.id, exc)
                return
            self._paged.add(incident.id)  # this worker's or another's: asked once
            if not mine:
                log.debug("worker %s: another worker claimed %s", self.id,
                          incident.id)
                return
            self.stats.stalled += 1
        log.warning("worker %s: incident %s (%s, saga %s): %s", self.id, incident.id,
                    incident.kind, incident.saga_id, incident.reason)
        if self.on_incident is not None:
            self.on_incident(incident)

    def _grace(self) -> float:
        return self.grace if self._grace_override is None else self._grace_override

    async def set_aside(self, sid: str, error: Exception) -> bool:
        """Quarantine ``sid`` if ``error`` says it cannot be decoded or driven."""
        reason = await asyncio.to_thread(self.orchestrator.set_aside, sid, error)
        if reason is None:
            return False
        self.stats.quarantined += 1
        return True

    def ended(self, sid: str) -> None:
        """The task driving ``sid`` is over: the worker looks again."""
        self.active.pop(sid, None)
        if self.wake is not None:
            self.wake.set()

    def __repr__(self) -> str:
        return f"Worker({self.id!r}, {len(self.active)} running, {self.store!r})"


def _mode_for(store: Any, worker: Worker) -> Mode:
    """How ``worker`` serves ``store``; a clear ``TypeError`` for a store it cannot."""
    if isinstance(store, SQLiteStore):
        from ._file import FileMode

        return FileMode(worker, store)
    # Only a PostgresStore needs psycopg, and only then is it imported.
    postgres = sys.modules.get("sagaflow.stores.postgres")
    if postgres is not None and isinstance(store, (postgres.PostgresStore, postgres.FencedStore)):
        from ._queue import QueueMode

        return QueueMode(worker, store)
    raise TypeError(
        f"a worker serves a SQLite file (one worker per file: open_store('sqlite:///sagas.db')) "
        f"or a PostgreSQL database (many workers: 'postgresql://user@host/db'), not {store!r}"
    )

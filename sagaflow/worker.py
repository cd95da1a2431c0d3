"""Workers: queued sagas run by any number of processes, on any number of machines,
sharing one PostgreSQL database and nothing else.

A client *enqueues* a saga (:func:`~sagaflow.queue.enqueue`: the record is stored, due
now, held by nobody) and may :func:`~sagaflow.queue.wait` for its result. A
:class:`Worker` (or ``sagaflow worker --store URL --import MODULE``) claims due sagas
and drives them with the orchestrator's public drive (:meth:`Orchestrator.adrive`), many
at once on one event loop:

- **claim**: ``FOR UPDATE SKIP LOCKED`` picks due sagas that no live lease holds, so
  concurrent workers never wait for each other nor take the same saga; each claim sets
  the saga's ``owner``, starts a lease of ``lease`` seconds (the database's clock) and
  bumps the saga's *fence* token.
- **heartbeat**: a thread renews the leases of every saga this worker holds every
  ``heartbeat`` seconds, as long as the event loop is alive (a loop stuck for a whole
  lease stops renewing, so that its sagas are taken over).
- **fencing**: every save carries the token the worker claimed the saga with
  (:meth:`~sagaflow.stores.postgres.PostgresStore.fenced`). A worker that was paused
  or cut off past its lease, whose saga another worker has claimed since, fails its
  next write (:class:`~sagaflow.LeaseLost`) and writes nothing. Steps
  may read the token too (:func:`current_lease`), to pass it on to a participant that
  checks it.
- **takeover**: a dead worker's sagas are claimed again once their leases expire; the
  step that was in flight runs again with the same idempotency key (at-least-once).
- **wake-ups**: a retry that must wait longer than ``park_after`` seconds releases its
  saga to the queue, due when the retry is, for any worker to pick up then; a saga past
  its deadline is compensated by whichever worker claims it next.
- **quarantine**: a saga that cannot be decoded or driven (a damaged row) is set aside
  (:meth:`Orchestrator.set_aside`) and released: no worker claims it again until an
  operator acts, instead of every few seconds for ever.
- **shutdown**: :meth:`Worker.stop` (SIGTERM, SIGINT under :meth:`Worker.run`) stops
  claiming, releases sagas waiting for a retry, gives the running ones ``grace``
  seconds to finish, then releases the rest (a second signal: at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping

import attrs

from .clock import Clock, SystemClock
from .errors import ConcurrentModification, LeaseLost, StoreError
from .events import Listener
from .orchestrator import Migration, Orchestrator
from .queue import aenqueue, enqueue, enqueue_many, wait, wait_async
from .spec import SagaSpec, spec_of
from .stores import Store
from .stores.url import open_store, postgres_module

postgres_module()  # without psycopg: an ImportError that says how to install it

from .stores.postgres import (  # noqa: E402
    FencedStore,
    PostgresStore,
    PostgresStoredSaga,
)

# The clients' functions live in sagaflow.queue; they are named here too, beside the
# workers that run what they enqueue.
__all__ = [
    "Lease",
    "Worker",
    "WorkerStats",
    "aenqueue",
    "current_lease",
    "enqueue",
    "enqueue_many",
    "wait",
    "wait_async",
]

log = logging.getLogger("sagaflow.worker")


@attrs.define
class Lease:
    """The lease under which this worker drives a saga: ``token`` is the saga's fence
    token from the claim (a re-claim by the same worker updates it), ``owner`` the
    worker's id. A participant that remembers the highest token it has seen for a saga
    can refuse calls carrying a lower one: they come from a worker that lost the saga."""

    saga_id: str
    token: int
    owner: str


_lease: contextvars.ContextVar[Lease | None] = contextvars.ContextVar(
    "sagaflow_lease", default=None
)


def current_lease() -> Lease | None:
    """The lease of the saga whose step is running here, under a :class:`Worker`
    (``None`` elsewhere)."""
    return _lease.get()


@attrs.define
class WorkerStats:
    """What a worker did: sagas claimed, finished (by status), parked until a retry
    is due, released (shutdown, errors), lost to another worker, quarantined (they
    cannot be decoded or driven: set aside until an operator acts)."""

    claimed: int = 0
    finished: Counter[str] = attrs.field(factory=Counter)
    parked: int = 0
    released: int = 0
    lost: int = 0
    errors: int = 0
    quarantined: int = 0

    def describe(self) -> str:
        done = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.finished.items())) or "none"
        return (
            f"claimed {self.claimed}; finished: {done}; parked {self.parked}; "
            f"released {self.released}; lost to other workers {self.lost}; errors {self.errors}; "
            f"quarantined {self.quarantined}"
        )


class _Park(Exception):
    """Raised by the worker's clock instead of a long sleep: the record is saved with
    its ``wake_at``, so the saga goes back to the queue, due then."""

    def __init__(self, until: float) -> None:
        super().__init__(until)
        self.until = until


class _ParkingClock:
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
        if worker.stopping or seconds > worker.park_after:
            raise _Park(self.base.now() + seconds)
        stopping = worker._stopping_event
        if stopping is None or not isinstance(self.base, SystemClock):
            await self.base.asleep(seconds)
            if worker.stopping:
                raise _Park(self.base.now())
            return
        until = self.base.now() + seconds
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stopping.wait()
        if worker.stopping:
            raise _Park(until)


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


class Worker:
    """Claims queued sagas from a PostgreSQL store and runs them, ``concurrency`` at once.

    ``store`` is a :class:`~sagaflow.stores.postgres.PostgresStore` or its URL;
    ``sagas`` the saga classes this worker runs (it claims only those, and only at
    their current definitions or one that ``migrations`` maps). ``lease`` is how long
    a claim lasts without a heartbeat (seconds): a dead worker's sagas are taken over
    that long after its last heartbeat, every ``heartbeat`` seconds (default: a third of
    ``lease``). ``poll`` is how often an idle worker looks for due sagas; a retry
    waiting longer than ``park_after`` goes back to the queue; ``grace`` is how long a
    stopping worker lets running sagas finish. ``listeners`` and ``clock`` are the
    :class:`~sagaflow.Orchestrator`'s.
    """

    def __init__(
        self,
        store: PostgresStore | str,
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
        self._owns_store = isinstance(store, str)
        opened = open_store(store) if isinstance(store, str) else store
        try:
            self.store: PostgresStore = _postgres_store(opened)
        except TypeError:
            close = getattr(opened, "close", None)
            if self._owns_store and close is not None:
                close()
            raise
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
        self._base_clock: Clock = SystemClock() if clock is None else clock
        #: saga id -> lease token of the sagas this worker holds (read by every save)
        self._tokens: dict[str, int] = {}
        self._leases: dict[str, Lease] = {}
        self._active: dict[str, asyncio.Task[None]] = {}
        self._specs: dict[str, SagaSpec] = {}
        self._migrations = dict(migrations or {})
        self._fenced: FencedStore = self.store.fenced(self._tokens)
        self.orchestrator = Orchestrator(
            self._fenced,
            listeners,
            migrations=self._migrations,
            clock=_ParkingClock(self._base_clock, self),
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping_event: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._tick = time.monotonic()
        self._heartbeat_stop = threading.Event()
        self.register(*sagas)

    def register(self, *classes: type) -> None:
        """Run sagas of these classes too."""
        for cls in classes:
            spec = spec_of(cls)
            self._specs[spec.name] = spec
        self.orchestrator.register(*classes)

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
            log.warning("worker %s: second %s, releasing everything now", self.id, sig)
            self.stop(grace=0.0)
        else:
            log.info("worker %s: %s, stopping (grace %gs)", self.id, sig, self.grace)
            self.stop()

    def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let running sagas finish for ``grace`` seconds (default: the
        worker's), then release the rest. Safe from any thread; returns at once."""
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
        if self._stopping_event is not None:
            self._stopping_event.set()
        if self._wake is not None:
            self._wake.set()

    async def serve(self) -> WorkerStats:
        """Claim and run sagas until :meth:`stop`; returns what was done."""
        if not self._specs:
            raise ValueError(
                "this worker knows no saga classes: pass them as Worker(store, sagas=[...]) "
                "(or --import their module on the command line)"
            )
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stopping_event = asyncio.Event()
        self._wake = asyncio.Event()
        if self.stopping:
            self._stop_now()
        self._tick = time.monotonic()
        self._heartbeat_stop.clear()
        beat = threading.Thread(target=self._heartbeat, name=f"sagaflow-heartbeat:{self.id}",
                                daemon=True)
        beat.start()
        ticker = loop.create_task(self._ticker())
        log.info("worker %s: serving %s", self.id, ", ".join(sorted(self._specs)))
        try:
            await self._claim_loop()
            await self._shutdown()
        finally:
            ticker.cancel()
            self._heartbeat_stop.set()
            await asyncio.to_thread(beat.join)
            self._loop = None
            if self._owns_store:
                self.orchestrator.close()
                self.store.close()
        log.info("worker %s: stopped; %s", self.id, self.stats.describe())
        return self.stats

    async def _claim_loop(self) -> None:
        wake = self._wake
        assert wake is not None
        # Claim in batches: a quarter of the slots free at least (one, when idle).
        threshold = max(1, min(self.claim_batch, self.concurrency) // 4)
        next_claim = 0.0  # when the queue was found drained: not before this
        while not self.stopping:
            free = self.concurrency - len(self._active)
            now = time.monotonic()
            if free >= threshold and now >= next_claim:
                want = min(free, self.claim_batch)
                claimed = await self._claim(want)
                if len(claimed) == want:
                    continue  # there may be more due
                next_claim = now + self.poll
            timeout = max(0.0, next_claim - time.monotonic()) if free >= threshold else self.poll
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await wake.wait()

    async def _claim(self, n: int) -> list[PostgresStoredSaga]:
        names = list(self._specs)
        fingerprints = [s.fingerprint for s in self._specs.values()] + list(self._migrations)
        try:
            claimed = await asyncio.to_thread(
                self.store.claim, self.id, n, lease=self.lease, now=self._base_clock.now(),
                names=names, fingerprints=fingerprints, exclude=list(self._active),
            )
        except StoreError as exc:
            self.stats.errors += 1
            log.warning("worker %s: claiming failed, will retry: %s", self.id, exc)
            return []
        for stored in claimed:
            self._start(stored)
        return claimed

    def _start(self, stored: PostgresStoredSaga) -> None:
        sid = stored.saga_id
        self.stats.claimed += 1
        self._tokens[sid] = stored.fence
        held = self._leases.get(sid)
        if held is not None:
            # Our own lease had lapsed and nobody took the saga: the drive goes on,
            # under the new token.
            held.token = stored.fence
            return
        lease = self._leases[sid] = Lease(sid, stored.fence, self.id)
        assert self._loop is not None
        self._active[sid] = self._loop.create_task(self._drive(stored, lease))

    async def _drive(self, stored: PostgresStoredSaga, lease: Lease) -> None:
        sid = stored.saga_id
        _lease.set(lease)  # this task's context: its steps (and their threads) see it
        orch = self.orchestrator
        try:
            try:
                spec = self._specs[stored.saga_name]
                record = self.store.decode(stored, spec.cls)
                spec = orch.spec_for(record)
            except Exception as exc:  # a damaged record, a changed definition
                self.stats.errors += 1
                if await self._set_aside(sid, exc):
                    await self._release(sid, lease, self._base_clock.now())
                    return
                log.error("worker %s: cannot run saga %s, retrying in %gs: %s",
                          self.id, sid, self.retry_later, exc)
                await self._release(sid, lease, self._base_clock.now() + self.retry_later)
                return
            # Listeners hear what happens from here on; a saga's first claim also tells
            # them how it started (its client, which enqueued it, told nobody).
            told = 0 if stored.fence <= 1 else len(record.history)
            await orch.adrive(spec, record, told)
            self.stats.finished[record.status.value] += 1
        except _Park as park:
            self.stats.parked += 1
            await self._release(sid, lease, park.until)
        except LeaseLost as exc:
            self.stats.lost += 1
            log.warning("worker %s: %s", self.id, exc)
        except ConcurrentModification as exc:  # an operator acted on it meanwhile
            self.stats.errors += 1
            log.warning("worker %s: %s; leaving it to be claimed afresh", self.id, exc)
            await self._release(sid, lease, self._base_clock.now())
        except Exception as exc:
            self.stats.errors += 1
            if await self._set_aside(sid, exc):  # it cannot be driven: not claimed again
                await self._release(sid, lease, self._base_clock.now())
                return
            # the store failed, say: resume later
            log.exception("worker %s: saga %s failed to run, releasing it: %s", self.id, sid, exc)
            await self._release(sid, lease, self._base_clock.now() + min(self.retry_later, 5.0))
        finally:
            if self._leases.get(sid) is lease:
                del self._leases[sid]
                self._tokens.pop(sid, None)
            self._active.pop(sid, None)
            if self._wake is not None:
                self._wake.set()

    async def _set_aside(self, sid: str, error: Exception) -> bool:
        """Quarantine ``sid`` if ``error`` says it cannot be decoded or driven."""
        reason = await asyncio.to_thread(self.orchestrator.set_aside, sid, error)
        if reason is None:
            return False
        self.stats.quarantined += 1
        return True

    async def _release(self, sid: str, lease: Lease, run_at: float) -> None:
        try:
            if await asyncio.to_thread(self.store.release, sid, lease.token, run_at):
                self.stats.released += 1
        except StoreError as exc:  # the lease will lapse instead
            log.warning("worker %s: could not release saga %s: %s", self.id, sid, exc)

    async def _shutdown(self) -> None:
        """Let running sagas finish for the grace period, then release the rest."""
        tasks = list(self._active.values())
        wake = self._wake
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
        remaining = {sid: t for sid, t in self._active.items() if not t.done()}
        if not remaining:
            return
        log.warning("worker %s: releasing %d saga(s) still running", self.id, len(remaining))
        now = self._base_clock.now()
        for sid in remaining:
            lease = self._leases.get(sid)
            if lease is not None:
                # Released first, so that the cancelled run's compensation cannot write.
                await self._release(sid, lease, now)
        for task in remaining.values():
            task.cancel()
        await asyncio.gather(*remaining.values(), return_exceptions=True)

    def _grace(self) -> float:
        return self.grace if self._grace_override is None else self._grace_override

    async def _ticker(self) -> None:
        while True:
            self._tick = time.monotonic()
            await asyncio.sleep(self.heartbeat / 2)

    def _heartbeat(self) -> None:
        """Renew the leases of the sagas held, while the event loop is alive."""
        pause = self.heartbeat
        while not self._heartbeat_stop.wait(pause):
            pause = self.heartbeat
            held = dict(self._tokens)
            if not held:
                continue
            stalled = time.monotonic() - self._tick
            if stalled > self.lease:
                log.error("worker %s: event loop stuck for %.1fs; not renewing leases",
                          self.id, stalled)
                continue
            try:
                renewed = self.store.renew(
                    self.id, list(held), lease=self.lease, now=self._base_clock.now()
                )
            except StoreError as exc:
                log.warning("worker %s: heartbeat failed, trying again: %s", self.id, exc)
                pause = min(self.heartbeat, 0.1)
                continue
            for sid, token in held.items():
                if sid not in renewed and self._tokens.get(sid) == token:
                    # Finished a moment ago, or taken over: then its next save fails.
                    log.debug("worker %s: the lease on saga %s was not renewed", self.id, sid)

    def __repr__(self) -> str:
        return f"Worker({self.id!r}, {len(self._active)} running, {self.store!r})"


def _postgres_store(store: Store | PostgresStore | FencedStore) -> PostgresStore:
    if isinstance(store, PostgresStore):
        return store
    if isinstance(store, FencedStore):
        return store.store
    raise TypeError(
        f"queued sagas need the PostgreSQL store, not {store!r}: open one with "
        "open_store('postgresql://user@host/db')"
    )

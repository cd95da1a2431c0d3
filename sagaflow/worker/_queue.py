"""PostgreSQL: workers share a queue (see :mod:`sagaflow.worker`): claims under a
lease, heartbeats, fenced saves, takeover, sagas released to the queue when they park
or wait for a long retry, and wake-ups by ``LISTEN``/``NOTIFY``."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Any

from ..errors import ConcurrentModification, LeaseLost, StoreError
from ..stores.postgres import FencedStore, PostgresStore, PostgresStoredSaga
from ._host import LEASE, Host, Lease, Park

__all__ = ["QueueMode"]

log = logging.getLogger("sagaflow.worker")

#: How soon to look again when a saga is due but could not be claimed (another worker's
#: claim of it was in flight; its lease ends a moment later by the database's clock).
_AGAIN = 0.05
#: How long before a saga is due the worker wakes, to claim it at that very moment: the
#: event loop's sleeps end up to a millisecond late (its timeouts are whole milliseconds).
_LEAD = 0.002
#: Longest a timer's claim is sent before its time (to be back with it at that time).
_EARLY_MAX = 0.005
#: Longest pause between attempts to listen again after the connection failed.
_LISTEN_BACKOFF = 5.0


class QueueMode:
    """How a worker serves a PostgreSQL store: it claims due sagas, many workers side
    by side (see :mod:`sagaflow.worker`)."""

    def __init__(self, worker: Host, store: PostgresStore | FencedStore) -> None:
        self.worker = worker
        self.store: PostgresStore = store.store if isinstance(store, FencedStore) else store
        #: saga id -> lease token of the sagas this worker holds (read by every save)
        self.tokens: dict[str, int] = {}
        self.leases: dict[str, Lease] = {}
        self.view: FencedStore = self.store.fenced(self.tokens)
        self.park_after = worker.park_after
        #: when the next saga is due (worker's clock); -inf: look now
        self._due = -math.inf
        #: the earliest time notified since the last look began
        self._told = math.inf
        #: when the next saga was due at the last look at the queue (next_due)
        self._next = -math.inf
        #: how long before a timer's time its claim is sent (a claim's round trip, as
        #: measured: an average of the last few)
        self._early = 0.0
        self._looked = -math.inf  # when the worker last claimed (monotonic)
        self._tick = time.monotonic()
        self._heartbeat_stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._background: list[asyncio.Task[None]] = []
        #: set once the worker listens for notifications
        self.listening = threading.Event()

    # --- serving ------------------------------------------------------------------

    async def serve(self) -> None:
        w = self.worker
        loop = asyncio.get_running_loop()
        self._tick = time.monotonic()
        self._heartbeat_stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True,
                                      name=f"sagaflow-heartbeat:{w.id}")
        self._beat.start()
        self._background = [loop.create_task(self._ticker()), loop.create_task(self._listen())]
        await self._claim_loop()

    def running(self) -> dict[Any, asyncio.Task[Any]]:
        return dict(self.worker.active)

    async def let_go(self, remaining: dict[Any, asyncio.Task[Any]]) -> None:
        now = self.worker.base_clock.now()
        for sid in remaining:
            lease = self.leases.get(sid)
            if lease is not None:
                await self._release(sid, lease, now)

    async def finish(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background = []
        self.listening.clear()
        self._heartbeat_stop.set()
        if self._beat is not None:
            await asyncio.to_thread(self._beat.join)

    def close(self) -> None:
        pass

    # --- claiming -----------------------------------------------------------------

    async def _claim_loop(self) -> None:
        w = self.worker
        wake = w.wake
        assert wake is not None
        clock = w.base_clock
        # Claim in batches: a quarter of the slots free at least (one, when idle).
        threshold = max(1, min(w.claim_batch, w.concurrency) // 4)
        while not w.stopping:
            free = w.concurrency - len(w.active)
            now = clock.now()
            lead = _LEAD + self._early
            polled = time.monotonic() >= self._looked + w.poll
            if free >= threshold and (self._due <= now + lead or polled):
                self._looked = time.monotonic()
                self._told = math.inf  # what is notified from here on counts
                want = min(free, w.claim_batch)
                # Due in a moment (a timer): claimed for that very moment.
                at = self._due if now < self._due <= now + lead else None
                claimed = await self._claim(want, at)
                if at is not None:
                    now = at
                if len(claimed) == want:
                    continue  # there may be more due
                if claimed and not polled and self._next > now:
                    # What was due is claimed; the next one the queue held is not due
                    # yet and cannot have come sooner unnoticed (what makes a saga due
                    # sooner notifies; the poll looks for the rest): no need to look.
                    due = self._next
                else:
                    if claimed:
                        await asyncio.sleep(0)  # the drives start (their first query) first
                    due = self._next = await self._next_due()
                if due <= now and not claimed:
                    # Due, but not to be claimed yet: another worker was claiming it,
                    # or the lease it is under ends a moment later by the database's clock.
                    due = now + min(w.poll, _AGAIN)
                # Told meanwhile (its commit may have come after the claim): look again.
                self._due = min(due, self._told)
            if free >= threshold:
                # Until the next saga is due, or the poll interval: a notification, a
                # saga ending or a stop wakes the worker sooner.
                timeout = min(self._due - _LEAD - self._early - clock.now(),
                              self._looked + w.poll - time.monotonic())
            else:
                timeout = w.poll  # no slot free: a saga ending wakes the worker
            wake.clear()
            if timeout > 0:
                try:
                    async with asyncio.timeout(timeout):
                        await wake.wait()
                except TimeoutError:
                    pass

    async def _claim(self, n: int, at: float | None = None) -> list[PostgresStoredSaga]:
        """Claim up to ``n`` due sagas and start driving them; ``at``: not before then
        (a moment away: slept on the claim's thread, to the clock's precision, not to
        the event loop's millisecond)."""
        w = self.worker
        names, fingerprints = w.kinds()
        exclude = list(w.active)
        clock = w.base_clock

        def claim() -> list[PostgresStoredSaga]:
            if at is None:
                return self.store.claim(w.id, n, lease=w.lease, now=clock.now(),
                                        names=names, fingerprints=fingerprints,
                                        exclude=exclude)
            # As of ``at``, a claim's round trip before it (the claim's due time is the
            # worker's clock's, as ever); the sagas are driven from ``at`` on.
            if (left := at - self._early - clock.now()) > 0:
                clock.sleep(left)
            started = time.monotonic()
            claimed = self.store.claim(w.id, n, lease=w.lease, now=max(at, clock.now()),
                                       names=names, fingerprints=fingerprints,
                                       exclude=exclude)
            took = min(time.monotonic() - started, _EARLY_MAX)
            self._early += (took - self._early) / 4
            if (left := at - clock.now()) > 0:
                clock.sleep(left)
            return claimed

        try:
            claimed = await asyncio.to_thread(claim)
        except StoreError as exc:
            w.stats.errors += 1
            log.warning("worker %s: claiming failed, will retry: %s", w.id, exc)
            return []
        for stored in claimed:
            self._start(stored)
        return claimed

    async def _next_due(self) -> float:
        """When the next saga this worker could claim is due (infinity: none is)."""
        w = self.worker
        names, fingerprints = w.kinds()
        try:
            due = await asyncio.to_thread(self.store.next_due, names, fingerprints,
                                          list(w.active))
        except StoreError as exc:
            log.warning("worker %s: looking at the queue failed, will retry: %s", w.id, exc)
            return w.base_clock.now() + w.poll
        return math.inf if due is None else due

    def _notice(self, due: float) -> None:
        """A saga is due at ``due`` (a notification, or one this worker released)."""
        self._told = min(self._told, due)
        if due < self._due:
            self._due = due
            if self.worker.wake is not None:
                self.worker.wake.set()

    async def _listen(self) -> None:
        """Hear the notifications of the store's channel, and listen again (with a
        growing pause) whenever the connection fails: the poll is the fallback."""
        w = self.worker
        pause = 0.1
        while True:
            try:
                async for due in self.store.wakeups():
                    if due == -math.inf:
                        log.info("worker %s: listening for wake-ups on %r", w.id,
                                 self.store.channel)
                        self.listening.set()
                        pause = 0.1
                    self._notice(due)
            except StoreError as exc:
                log.warning("worker %s: not hearing wake-ups, polling until it does again: %s",
                            w.id, exc)
            self.listening.clear()
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LISTEN_BACKOFF, w.poll)

    # --- driving ------------------------------------------------------------------

    def _start(self, stored: PostgresStoredSaga) -> None:
        w = self.worker
        sid = stored.saga_id
        w.stats.claimed += 1
        self.tokens[sid] = stored.fence
        held = self.leases.get(sid)
        if held is not None:
            # Our own lease had lapsed and nobody took the saga: the drive goes on,
            # under the new token.
            held.token = stored.fence
            return
        lease = self.leases[sid] = Lease(sid, stored.fence, w.id)
        w.active[sid] = asyncio.get_running_loop().create_task(self._drive(stored, lease))

    async def _drive(self, stored: PostgresStoredSaga, lease: Lease) -> None:
        w = self.worker
        sid = stored.saga_id
        again: float | None = None  # parked: when it is due again
        LEASE.set(lease)  # this task's context: its steps (and their threads) see it
        orch = w.orchestrator
        clock = w.base_clock
        try:
            try:
                spec = w.specs[stored.saga_name]
                record = self.store.decode(stored, spec.cls)
                spec = orch.spec_for(record)
            except Exception as exc:  # a damaged record, a changed definition
                w.stats.errors += 1
                if await w.set_aside(sid, exc):
                    again = await self._release(sid, lease, clock.now())
                    return
                log.error("worker %s: cannot run saga %s, retrying in %gs: %s",
                          w.id, sid, w.retry_later, exc)
                again = await self._release(sid, lease, clock.now() + w.retry_later)
                return
            # Listeners hear what happens from here on; a saga's first claim also tells
            # them how it started (its client, which enqueued it, told nobody).
            told = 0 if stored.fence <= 1 else len(record.history)
            await orch.adrive(spec, record, told)
            w.stats.ended(record.status)
            if record.waiting is not None:  # parked (a wait, a choreography): a row until due
                again = await self._park(sid, lease, record.wake_at)
        except Park as park:
            w.stats.parked += 1
            again = await self._release(sid, lease, park.until)
        except LeaseLost as exc:
            w.stats.lost += 1
            log.warning("worker %s: %s", w.id, exc)
        except ConcurrentModification as exc:  # an operator acted on it meanwhile
            w.stats.errors += 1
            log.warning("worker %s: %s; leaving it to be claimed afresh", w.id, exc)
            again = await self._release(sid, lease, clock.now())
        except Exception as exc:
            w.stats.errors += 1
            if await w.set_aside(sid, exc):  # it cannot be driven: not claimed again
                again = await self._release(sid, lease, clock.now())
                return
            # the store failed, say: resume later
            log.exception("worker %s: saga %s failed to run, releasing it: %s", w.id, sid, exc)
            again = await self._release(sid, lease, clock.now() + min(w.retry_later, 5.0))
        finally:
            if self.leases.get(sid) is lease:
                del self.leases[sid]
                self.tokens.pop(sid, None)
            w.ended(sid)
            # Only now, with the saga no longer this worker's own (a claim leaves out
            # the sagas it runs): a notification of it heard before was spent on a
            # claim that could not take it.
            if again is not None and math.isfinite(again):
                self._notice(again)

    async def _release(self, sid: str, lease: Lease, run_at: float) -> float | None:
        """Release ``sid``, due at ``run_at``; ``run_at`` if it was released (the drive
        notices it once the saga is no longer its own), else ``None``."""
        w = self.worker
        try:
            if await asyncio.to_thread(self.store.release, sid, lease.token, run_at):
                w.stats.released += 1
                return run_at
        except StoreError as exc:  # the lease will lapse instead
            log.warning("worker %s: could not release saga %s: %s", w.id, sid, exc)
        return None

    async def _park(self, sid: str, lease: Lease, wake_at: float | None) -> float | None:
        """Release ``sid``, parked at a wait: due at ``wake_at``, or now if its signal
        came meanwhile (:meth:`~sagaflow.stores.postgres.PostgresStore.park`); when it
        is due again (``None``: not released)."""
        w = self.worker
        try:
            due = await asyncio.to_thread(self.store.park, sid, lease.token, wake_at,
                                          w.base_clock.now())
        except StoreError as exc:  # the lease will lapse: the next claim parks it again
            log.warning("worker %s: could not release parked saga %s: %s", w.id, sid, exc)
            return None
        if due is not None:
            w.stats.released += 1
        return due

    # --- leases -------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            self._tick = time.monotonic()
            await asyncio.sleep(self.worker.heartbeat / 2)

    def _heartbeat(self) -> None:
        """Renew the leases of the sagas held, while the event loop is alive."""
        w = self.worker
        pause = w.heartbeat
        while not self._heartbeat_stop.wait(pause):
            pause = w.heartbeat
            held = dict(self.tokens)
            if not held:
                continue
            stalled = time.monotonic() - self._tick
            if stalled > w.lease:
                log.error("worker %s: event loop stuck for %.1fs; not renewing leases",
                          w.id, stalled)
                continue
            try:
                renewed = self.store.renew(
                    w.id, list(held), lease=w.lease, now=w.base_clock.now()
                )
            except StoreError as exc:
                log.warning("worker %s: heartbeat failed, trying again: %s", w.id, exc)
                pause = min(w.heartbeat, 0.1)
                continue
            for sid, token in held.items():
                if sid not in renewed and self.tokens.get(sid) == token:
                    # Finished a moment ago, or taken over: then its next save fails.
                    log.debug("worker %s: the lease on saga %s was not renewed", w.id, sid)

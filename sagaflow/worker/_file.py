"""SQLite: one worker per file (see :mod:`sagaflow.worker`). It recovers the sagas
interrupted in the file when it starts, then resumes parked sagas when their signal is
stored (by any process) or their time comes.

What it looks at, and how often: a thread asks every :data:`WATCH` seconds whether
another connection committed (``PRAGMA data_version``, on a connection of its own: no
table is read), and wakes the event loop if one did. Only then does the loop read the
signals stored since the newest it saw (SQLite numbers them in commit order) and the
earliest wake time of the parked sagas (an index); it sleeps until that wake time, or
the poll interval. Nothing here is per waiting saga: a parked saga is a row, and idle
the worker costs the same for 10 or 100,000 of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import os
import threading
import time
from typing import Any

from .. import signals
from ..errors import StoreError
from ..records import SagaRecord
from ..stores.sqlite import Changes, SQLiteStore
from ._host import Host, Park

__all__ = ["WATCH", "FileMode", "lock_path"]

log = logging.getLogger("sagaflow.worker")

#: Seconds between two looks at whether the database changed.
WATCH = 0.01
#: How long before a saga's wake time the worker wakes, to resume it at that very time.
_LEAD = 0.002
#: Sagas that failed to resume (not set aside: the store failed, say) are tried again
#: after this long at most; the worker remembers that many of them at most.
_COOL = 5.0
_COOLING_MAX = 10_000
_RECOVERY = "(recovery)"  # the key of the start-up recovery among the running tasks


def lock_path(path: str) -> str:
    """The lock file beside the SQLite database ``path`` that its worker holds."""
    return f"{path}-worker.lock"


class FileMode:
    """How a worker serves a SQLite file: the one worker of that file."""

    def __init__(self, worker: Host, store: SQLiteStore) -> None:
        if store.path in ("", ":memory:"):
            raise TypeError(
                "a worker serves a SQLite file, not an in-memory database (which only the "
                "process that opened it can see): open_store('sqlite:///sagas.db')"
            )
        if store.readonly:
            raise TypeError(f"{store!r} is read-only: a worker writes to its store")
        self.worker = worker
        self.store = store
        self.view = _Gate(store)
        self.park_after = math.inf  # no queue to put a retry back on: it is slept
        self._lock: int | None = None
        self._watcher: threading.Thread | None = None
        self._watching = False
        self._changed = False  # the database changed since the worker last read signals
        self._seq = 0  # the newest signal seen
        self._pending: dict[str, None] = {}  # signalled sagas waiting for a free slot
        self._cooling: dict[str, float] = {}  # saga id -> not before (monotonic)
        self._look = True  # read the wake times again
        self._recovery: asyncio.Task[None] | None = None
        self._hold()

    # --- the file's lock ----------------------------------------------------------

    def _hold(self) -> None:
        """Take the lock beside the database (``flock``: the kernel lets go of it when
        the process ends, however it ends); a clear error if a worker holds it."""
        if self._lock is not None:
            return
        path = lock_path(os.path.abspath(self.store.path))
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreError(
                f"another sagaflow worker ({holder}) serves {self.store.path!r}: a SQLite "
                f"file has one worker (it holds {path}); stop that one first, or use "
                "PostgreSQL for many workers"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"worker {self.worker.id}\n".encode())
        self._lock = fd

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # the lock goes with the descriptor
            self._lock = None

    # --- serving ------------------------------------------------------------------

    async def serve(self) -> None:
        w = self.worker
        self._hold()
        self.view.shut = False
        store = self.store
        wake = w.wake
        assert wake is not None
        # What is signalled from here on is heard; what came before, recovery resumes.
        changes = store.watch()
        self._seq = store.last_signal()
        self._changed = False
        loop = asyncio.get_running_loop()
        self._watching = True
        self._watcher = threading.Thread(target=self._watch, args=(changes, loop, wake),
                                         name=f"sagaflow-watch:{w.id}", daemon=True)
        self._watcher.start()
        self._recovery = loop.create_task(self._recover())
        self._look = True
        clock = w.base_clock
        names, fingerprints = w.kinds()
        log.info("worker %s: watching %s for signals and wake times", w.id, store.path)
        next_wake = -math.inf
        looked = time.monotonic()
        while not w.stopping:
            if self._changed:
                self._changed = False
                try:
                    ids, self._seq = store.signalled(self._seq, names, fingerprints)
                except StoreError as exc:
                    log.warning("worker %s: reading new signals failed, will retry: %s",
                                w.id, exc)
                    self._changed = True
                    await asyncio.sleep(min(w.poll, _COOL))
                    continue
                else:
                    self._pending.update(dict.fromkeys(ids))
                    self._look = True
            self._start_pending()
            free = w.concurrency - len(w.active)
            mono = time.monotonic()
            if mono >= looked + w.poll:
                self._look = True  # the fallback: as if something had changed
            if free > 0 and (self._look or next_wake <= clock.now() + _LEAD):
                if 0 < (left := next_wake - clock.now()) <= _LEAD:
                    # A moment before a saga's time: slept to the clock's precision (the
                    # event loop's timeouts are whole milliseconds).
                    await asyncio.to_thread(clock.sleep, left)
                looked, self._look = mono, False
                next_wake = self._resume_due(free, names, fingerprints)
            # Until the next wake time (a moment before) or the poll interval; a change, a
            # saga ending or a stop wakes the worker sooner.
            wait = min(next_wake - _LEAD - clock.now(), looked + w.poll - time.monotonic())
            wake.clear()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await wake.wait()

    def _watch(self, changes: Changes, loop: asyncio.AbstractEventLoop,
               wake: asyncio.Event) -> None:
        """The watcher thread: every :data:`WATCH` seconds, whether another connection
        committed; if so, wake the worker's loop. (A thread sleeping between two looks
        costs less than a turn of the event loop.)"""
        try:
            while self._watching:
                time.sleep(WATCH)
                try:
                    changed = changes.changed()
                except Exception as exc:  # the file is gone, say: the poll goes on
                    log.warning("worker %s: cannot watch the database: %s", self.worker.id, exc)
                    time.sleep(self.worker.poll)
                    changed = True
                if changed:
                    with contextlib.suppress(RuntimeError):  # the loop has closed
                        loop.call_soon_threadsafe(self._on_change, wake)
        finally:
            changes.close()

    def _on_change(self, wake: asyncio.Event) -> None:
        self._changed = True
        wake.set()

    def _start_pending(self) -> None:
        """Resume the signalled sagas, as slots are free (one being resumed already is
        resumed again when that ends: the signal may have come after it looked)."""
        w = self.worker
        for sid in list(self._pending):
            if len(w.active) >= w.concurrency:
                return
            if sid not in w.active:
                del self._pending[sid]
                self._start(sid)

    def _resume_due(self, free: int, names: list[str], fingerprints: list[str]) -> float:
        """Resume up to ``free`` parked sagas whose time came; when the next one is due
        (infinity: none; ``-inf``: more are due than there were slots)."""
        w = self.worker
        now = time.monotonic()
        for sid, until in list(self._cooling.items()):
            if until <= now:
                del self._cooling[sid]
        busy = {*w.active, *w.orchestrator.runtime.live, *self._cooling}
        try:
            rows = self.store.waking(free + 1, names, fingerprints, busy)
        except StoreError as exc:
            log.warning("worker %s: reading wake times failed, will retry: %s", w.id, exc)
            return w.base_clock.now() + min(w.poll, _COOL)
        now_clock = w.base_clock.now()
        due = [sid for sid, at in rows if at <= now_clock][:free]
        for sid in due:
            self._start(sid)
        nxt = rows[len(due)][1] if len(rows) > len(due) else math.inf
        if self._cooling:
            # A saga cooling down is looked at again when it may be tried again.
            soonest = min(self._cooling.values()) - now + now_clock
            nxt = min(nxt, soonest)
        return nxt

    def _start(self, sid: str) -> None:
        w = self.worker
        w.active[sid] = asyncio.get_running_loop().create_task(self._resume(sid))

    async def _resume(self, sid: str) -> None:
        """Resume parked saga ``sid`` (nothing if it is not parked any more, or a driver
        here runs it: that one is told to look again)."""
        w = self.worker
        orch = w.orchestrator
        try:
            result = await signals.aresume(orch.runtime, orch.spec_for, sid)
            if result is not None:
                w.stats.resumed += 1
                w.stats.ended(result.status)
        except Park:
            pass  # the worker is stopping: it resumes at the next start
        except Exception as exc:
            w.stats.errors += 1
            if not await w.set_aside(sid, exc):
                log.warning("worker %s: parked saga %s was not resumed, trying again in "
                            "%gs: %s", w.id, sid, _COOL, exc)
                if len(self._cooling) < _COOLING_MAX:
                    self._cooling[sid] = time.monotonic() + _COOL
        finally:
            self._look = True  # it parked again, ended, or failed: its wake time moved
            w.ended(sid)

    async def _recover(self) -> None:
        """Resume the sagas that a process left half-way through (a crash, a stop), and
        the parked ones due meanwhile (:meth:`Orchestrator.arecover`)."""
        w = self.worker
        try:
            report = await w.orchestrator.arecover(concurrency=w.concurrency)
        except StoreError as exc:
            log.error("worker %s: recovery failed: %s", w.id, exc)
            return
        w.stats.recovered += len(report.resumed)
        for status in report.resumed.values():
            w.stats.ended(status)
        if report.resumed or report.skipped:
            log.info("worker %s: %s", w.id, report.describe().replace("\n", "; "))
        self._look = True
        if w.wake is not None:
            w.wake.set()

    def running(self) -> dict[Any, asyncio.Task[Any]]:
        tasks: dict[Any, asyncio.Task[Any]] = dict(self.worker.active)
        if self._recovery is not None:
            tasks[_RECOVERY] = self._recovery
        return tasks

    async def let_go(self, remaining: dict[Any, asyncio.Task[Any]]) -> None:
        # No lease to hand back: the runs left are stopped from writing, so their
        # cancellation cannot compensate; each stays at its last checkpoint.
        self.view.shut = True
        self.worker.stats.released += len(remaining) - (_RECOVERY in remaining)

    async def finish(self) -> None:
        if self._recovery is not None and not self._recovery.done():
            self.view.shut = True
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        self._recovery = None
        self._watching = False
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.join)
            self._watcher = None
        self._pending.clear()
        self.close()


class _Gate:
    """The SQLite store as the worker's orchestrator sees it: once ``shut`` (the grace
    period is over), no save goes through, so that a run let go of stays at its last
    checkpoint. Everything else goes straight to the store."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.shut = False

    def _check(self, record: SagaRecord) -> None:
        if self.shut:
            raise StoreError(
                f"saga {record.saga_id}: the worker stopped before it finished; it resumes "
                "from its last checkpoint when a worker starts on the file again"
            )

    def save(self, record: SagaRecord) -> None:
        self._check(record)
        self.store.save(record)

    async def asave(self, record: SagaRecord) -> None:
        self._check(record)
        await self.store.asave(record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def __repr__(self) -> str:
        return f"_Gate({self.store!r})"


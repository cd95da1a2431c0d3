"""Group commit: many checkpoints, one transaction, each caller released when its own
row is committed.

A write is encoded when it is submitted (the engine mutates the record as soon as the
caller goes on) and queued. Sync callers (threads) write the queue themselves: alone,
a caller writes its own row at once; otherwise it takes the pending writes, its own
among them, and commits them together, so one sync to disk serves them all.

Async callers (tasks of any event loop): the first write queued in a turn of the loop
schedules a drain for the end of that turn, when every task that was ready has queued
its own checkpoint; they are committed together. Where a commit costs the loop next to
nothing (SQLite without a sync to disk per commit) the drain writes them on the loop's
thread; otherwise writer threads do, one per *lane* (a connection of the store's own
and its lock), so that the loop runs on during the sync to disk or the round trip, and
each waiting task is woken on its own loop (one wake-up per loop and batch). A saga
alone (no other async saga to share a commit with) is written on its loop's thread
too, without the round trip to a writer thread that would only add to its commit: at
once, but for its first write (which waits for the turn to end, in case other sagas
are starting with it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import StoreError

__all__ = ["Committer", "Lane", "Write"]

log = logging.getLogger("sagaflow.stores")


class Write:
    """One pending write: the saga's row and the rows to append to its lists' tables.

    The dialect that writes it sets ``inserted`` (a create that inserted the row) or
    ``error`` (a lost race, a refused value, a failed connection: that caller's own).
    """

    __slots__ = (
        "alone", "create", "done", "error", "events", "expected", "fence", "future",
        "history", "inserted", "loop", "narrow", "outbox", "path", "replay", "row",
        "run_at", "terminal", "tracked",
    )  # fmt: skip

    def __init__(
        self,
        create: bool,
        row: tuple[Any, ...],
        expected: int,
        history: list[tuple[Any, ...]],
        events: list[tuple[Any, ...]],
        path: list[tuple[Any, ...]],
        replay: bool,
    ) -> None:
        self.create = create
        self.row = row
        self.expected = expected  #: the version the store must have (a save's)
        self.history = history  #: rows to append to sagaflow_history
        self.events = events  #: rows to append to sagaflow_events
        self.path = path  #: rows to append to sagaflow_path
        #: rows to insert into sagaflow_outbox: the domain events this write first records
        self.outbox: Sequence[tuple[Any, ...]] = ()
        #: the store's state of the saga was not known: the rows are every spilled item,
        #: and the writer skips those already stored
        self.replay = replay
        self.narrow = False  #: the STATIC columns are as stored: the UPDATE may skip them
        self.fence: int | None = None  #: the lease token the saga must still have
        self.run_at: float | None = None  #: an enqueued saga: when a worker may take it
        self.terminal = False  #: the saga is over (it leaves the queue)
        self.alone = False  #: no other async saga was running in the store
        self.done = False
        self.error: BaseException | None = None
        self.inserted = False
        self.future: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tracked: Any = None  #: what the store has once a create is known to be new


class Lane:
    """A connection that writes (the dialect opens it) and the lock of whoever uses it."""

    __slots__ = ("conn", "lock")

    def __init__(self, conn: Any = None) -> None:
        self.conn = conn
        self.lock = threading.Lock()


class Committer:
    """The queue of a store's pending writes and who writes them.

    ``write(batch, lane)`` writes a batch in one transaction on ``lane`` and gives each
    item its outcome; ``closed()`` is the error to raise once the store is closed (or
    ``None``). Lane 0 serves sync callers (and its writer thread); with more lanes, one
    batch executes while another commits.
    """

    def __init__(
        self,
        write: Callable[[list[Write], Lane], None],
        lanes: Sequence[Lane],
        max_batch: int,
        name: str,
        closed: Callable[[], StoreError | None],
        on_loop: bool = False,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        self.pending: collections.deque[Write] = collections.deque()
        self.lanes = list(lanes)
        self._write = write
        self._max_batch = max_batch
        self._name = name
        self._closed = closed
        self._stopping = False
        self._wakeup = threading.Event()
        self._threads: list[threading.Thread] = []
        self._guard = threading.Lock()
        # Sync callers whose write another lane took wait here for it to be done.
        self._done = threading.Condition()
        self._waiting = 0
        self._on_loop = on_loop  #: async writes are committed on their loop's thread
        # Loops that have a drain of the queue scheduled (one each: a loop closed before
        # its drain ran leaves the others unaffected).
        self._draining: set[asyncio.AbstractEventLoop] = set()

    # -- sync callers ------------------------------------------------------------------

    def submit(self, items: Sequence[Write]) -> None:
        """Write ``items`` and return once each has its outcome (``error`` set, or not).

        Alone (nothing queued, lane 0 free), one item is written at once; otherwise the
        items are queued and this thread writes batches until they are done."""
        lane = self.lanes[0]
        if len(items) == 1 and not self.pending and lane.lock.acquire(blocking=False):
            try:
                if not self.pending:  # still alone: no queue, no batch to gather
                    self._run([items[0]], lane)
                    return
            finally:
                lane.lock.release()
        pending = self.pending
        pending.extend(items)
        try:
            for item in items:
                while not item.done:
                    with lane.lock:
                        if not item.done:
                            self._drain(lane)
                    if not item.done and item not in pending:
                        self._wait(item)  # another lane has it in flight
        except BaseException:
            for item in items:
                if not item.done:
                    with contextlib.suppress(ValueError):  # taken: it will be written
                        pending.remove(item)
            raise

    def _wait(self, item: Write) -> None:
        with self._done:
            self._waiting += 1
            try:
                while not item.done:
                    self._done.wait(0.05)
            finally:
                self._waiting -= 1

    # -- async callers -----------------------------------------------------------------

    def submit_async(
        self, item: Write, alone: bool = False, first: bool = True
    ) -> asyncio.Future[None] | None:
        """Queue ``item``; the future is done once it is written (or failed). ``None``:
        written already. ``alone``: no other async saga has checkpoints to share the
        commit; but at a saga's ``first`` write others may be starting on the same turn
        of the loop: it waits for that turn to end, then is written on the loop if it
        is still alone."""
        item.alone = alone
        if alone and not first and not self.pending and not self._stopping:
            lane = self.lanes[0]
            if lane.lock.acquire(blocking=False):
                try:
                    if not self.pending:
                        self._run([item], lane)
                        return None
                finally:
                    lane.lock.release()
        loop = asyncio.get_running_loop()
        item.loop = loop
        item.future = loop.create_future()
        self.pending.append(item)
        if self._stopping:  # closed meanwhile, by another thread: nobody would write it
            with contextlib.suppress(ValueError):
                self.pending.remove(item)
                raise self._closed() or StoreError("the store is closed")
        # At the end of this turn of the loop, every task that was ready has queued its
        # checkpoint: they go together (here, or to a writer thread).
        if loop not in self._draining:
            self._draining.add(loop)
            loop.call_soon(self._drain_on_loop, loop)
        return item.future

    def _drain_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit what is pending, on the loop's thread: every task that was ready in
        the loop's last turn has queued its checkpoint by now. Where a commit would
        hold the loop (a sync to disk, a round trip), only a write still alone is
        written here; the writer threads take the rest, as they do if a sync caller
        holds the lane."""
        self._draining.discard(loop)
        lane = self.lanes[0]
        pending = self.pending
        while pending:
            if not self._on_loop and not (len(pending) == 1 and pending[0].alone):
                self._wake()
                return
            if not lane.lock.acquire(blocking=False):
                self._wake()
                return
            try:
                self._drain(lane, loop)
            finally:
                lane.lock.release()

    def _wake(self) -> None:
        """Wake the writer threads (started on first use)."""
        if not self._threads:
            self._start()
        # Still set: a writer has not woken yet and will take this item too (it clears
        # the event before it drains). Skipping set() saves a lock under load.
        if not self._wakeup.is_set():
            self._wakeup.set()

    def _start(self) -> None:
        with self._guard:
            if self._threads:
                return
            for k, lane in enumerate(self.lanes):
                thread = threading.Thread(
                    target=self._serve, args=(lane,), name=f"{self._name}-writer-{k}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)

    def _serve(self, lane: Lane) -> None:
        while True:
            self._wakeup.wait()
            self._wakeup.clear()
            while self.pending:
                with lane.lock:
                    try:
                        self._drain(lane)
                    except Exception:  # the batch's waiters have their error: go on
                        log.exception("sagaflow: the %s writer failed", self._name)
            if self._stopping:
                return

    # -- writing -----------------------------------------------------------------------

    def _drain(self, lane: Lane, here: asyncio.AbstractEventLoop | None = None) -> None:
        """Write one batch of pending items in one transaction. Hold ``lane.lock``;
        ``here`` is the event loop whose thread this is, if any."""
        pending = self.pending
        batch: list[Write] = []
        try:
            while len(batch) < self._max_batch:
                batch.append(pending.popleft())
        except IndexError:
            pass
        if batch:
            self._run(batch, lane, here)

    def _run(
        self, batch: list[Write], lane: Lane, here: asyncio.AbstractEventLoop | None = None
    ) -> None:
        try:
            self._write(batch, lane)
        except BaseException as exc:  # interrupted before COMMIT: nothing was written
            for item in batch:
                if item.error is None:
                    item.error = StoreError(f"the write was interrupted: {exc!r}")
            raise
        finally:
            self._complete(batch, here)

    def _complete(self, batch: list[Write], here: asyncio.AbstractEventLoop | None) -> None:
        """Release the waiters: sync ones see ``done``; async ones get their future set
        on their own loop (one wake-up per loop, not per item)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[Write]] = {}
        for item in batch:
            item.done = True
            if item.loop is not None:
                by_loop.setdefault(item.loop, []).append(item)
        for loop, items in by_loop.items():
            if loop is here:  # written on this loop's thread: no wake-up needed
                _resolve(items)
                continue
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, items)
        if self._waiting:
            with self._done:
                self._done.notify_all()

    # -- shutdown ----------------------------------------------------------------------

    def close(self) -> None:
        """Write what is pending, stop the writer threads."""
        self._stopping = True
        self._wakeup.set()
        for thread in self._threads:
            thread.join()
        for lane in self.lanes:
            with lane.lock:
                while self.pending:
                    self._drain(lane)


def _resolve(items: list[Write]) -> None:
    for item in items:
        future = item.future
        if future is None or future.done():  # its waiter was cancelled
            continue
        if item.error is not None:
            future.set_exception(item.error)
        else:
            future.set_result(None)

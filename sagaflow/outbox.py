"""Relaying the outbox: a saga's domain events, published after their checkpoint commits.

A step's events (``ctx.emit``) are written to the store's outbox in the transaction of
the checkpoint that records the step (see :class:`~sagaflow.stores.OutboxStore`). A
:class:`Relay` reads them from there and hands them, in order, to a
:class:`~sagaflow.messages.Publisher`: :class:`Handlers` in this process, or a broker
(:mod:`sagaflow.brokers`). A message is marked relayed only once the publisher returned,
so a crash at any point publishes it again later: at least once, in order per saga, each
delivery under the same :attr:`~sagaflow.messages.Message.id` (``"{saga_id}:{seq}"``),
which consumers deduplicate on. An event of an attempt that failed is never published:
it is not in the record either.

Run a relay next to an orchestrator::

    relay = Relay(orchestrator.store, handlers)
    relay.start()          # a thread: relays until relay.stop()
    ...
    relay.stop()

or ``relay.run(stop=event)`` in a thread of one's own, ``await relay.arun(stop)`` on an
event loop, ``relay.drain()`` (everything now, e.g. in tests). The relay wakes at once on
a commit of the same store object in this process, and on PostgreSQL at any process's
(``LISTEN``/``NOTIFY``); else it polls every ``poll`` seconds. A publisher that fails is
retried with the ``retry`` policy's backoff (its ``attempts`` are not a limit: nothing is
ever dropped from the outbox); ``relay.last_error`` says why.

Lifecycle events (SagaCompleted, SagaCompensated...) go to the outbox too, the same way,
once the store is told which: ``store.publish_lifecycle(SagaCompleted, SagaFailed)``
(their ids are ``"{saga_id}:h{n}"``, ``n`` their place in the saga's history).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .codec import Codec, default_codec
from .messages import Message, Publisher
from .policy import Retry, backoff_delay

__all__ = ["Handlers", "Relay"]

log = logging.getLogger("sagaflow.outbox")

#: The default backoff of a relay whose publisher fails: 0.5 s, doubling, at most 30 s.
DEFAULT_RETRY = Retry(attempts=1_000_000, backoff=0.5, multiplier=2.0, max_delay=30.0)


class Relay:
    """Publishes a store's outbox to ``publisher``, ``batch`` messages at a time.

    ``retry``: the backoff after a failed publish (its ``backoff``, ``multiplier``,
    ``max_delay`` and ``jitter``); ``poll``: the longest wait between looks at the
    outbox when nothing wakes the relay.
    """

    def __init__(
        self,
        store: Any,
        publisher: Publisher,
        *,
        batch: int = 100,
        retry: Retry | None = None,
        poll: float = 1.0,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch!r}")
        if poll <= 0:
            raise ValueError(f"poll must be > 0, got {poll!r}")
        for name in ("relay_outbox", "on_outbox"):
            if not callable(getattr(store, name, None)):
                raise TypeError(f"{store!r} has no outbox (it has no {name}())")
        self.store = store
        self.publisher = publisher
        self.batch = batch
        self.retry = retry if retry is not None else DEFAULT_RETRY
        self.poll = poll
        self.published = 0  #: messages published by this relay
        self.failures = 0  #: publishes that failed in a row (0 after a success)
        self.last_error: BaseException | None = None  #: why the last publish failed
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one batch ---------------------------------------------------------------------

    def relay_once(self) -> int:
        """Publish the next batch; how many messages. A publish that fails marks none
        (the error is counted against them in the outbox and kept in
        :attr:`last_error`), and returns 0: the loops wait :meth:`delay` before the next
        try."""
        try:
            n: int = self.store.relay_outbox(self.publisher.publish, self.batch)
        except Exception as exc:
            self.failures += 1
            self.last_error = exc
            log.warning("sagaflow: relaying the outbox failed (%d in a row): %r",
                        self.failures, exc)
            return 0
        self.failures = 0
        self.published += n
        return n

    def drain(self) -> int:
        """Relay until the outbox is empty or a publish fails; how many were published."""
        total = 0
        while True:
            n = self.relay_once()
            total += n
            if n < self.batch:
                return total

    def delay(self) -> float:
        """How long to wait before the next try: the backoff after failures in a row."""
        if not self.failures:
            return 0.0
        return backoff_delay(self.retry, self.failures)

    # -- loops -------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Relay until ``stop`` is set (or :meth:`stop` is called): a batch at a time,
        waiting for a wake-up (a commit that wrote messages; PostgreSQL: a
        notification) or ``poll`` seconds when there is nothing, and the backoff after
        a failed publish."""
        stop = stop if stop is not None else self._stop
        unsubscribe = self.store.on_outbox(self._wake.set)
        listener = _Listener.of(self.store, self._wake, stop)
        try:
            while not stop.is_set() and not self._stop.is_set():
                self._wake.clear()
                n = self.relay_once()
                if self.failures:
                    self._sleep(stop, self.delay(), wakeable=False)
                elif n < self.batch:
                    self._sleep(stop, self.poll, wakeable=True)
        finally:
            unsubscribe()
            if listener is not None:
                listener.close()

    def _sleep(self, stop: threading.Event, seconds: float, wakeable: bool) -> None:
        end = time.monotonic() + seconds
        while not stop.is_set() and not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            if wakeable:
                if self._wake.wait(min(left, 0.2)):
                    return
            else:
                stop.wait(min(left, 0.2))

    def start(self) -> Relay:
        """Run the relay on a daemon thread of its own (until :meth:`stop`)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="sagaflow-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the loop (:meth:`start`'s thread, or :meth:`run` without a ``stop``)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    async def arun(self, stop: asyncio.Event | None = None) -> None:
        """:meth:`run` on an event loop (the store's calls on a worker thread) until
        ``stop`` is set or the task is cancelled."""
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(woken.set)

        unsubscribe = self.store.on_outbox(wake)
        done = threading.Event()
        # PostgreSQL: a listening thread wakes this loop too.
        relay_wake = _Forward(wake)
        listener = _Listener.of(self.store, relay_wake, done)
        try:
            while stop is None or not stop.is_set():
                woken.clear()
                n = await asyncio.to_thread(self.relay_once)
                if self.failures:
                    wait: float = self.delay()
                elif n < self.batch:
                    wait = self.poll
                else:
                    continue
                waiters = [asyncio.ensure_future(woken.wait())] if not self.failures else []
                if stop is not None:
                    waiters.append(asyncio.ensure_future(stop.wait()))
                if waiters:
                    await asyncio.wait(
                        waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in waiters:
                        task.cancel()
                else:
                    await asyncio.sleep(wait)
        finally:
            done.set()
            unsubscribe()
            if listener is not None:
                listener.close()


class _Forward:
    """An object with ``set()`` that calls ``fn`` (what a listener wakes)."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.set = fn


class _Listener:
    """PostgreSQL: a thread that ``LISTEN``s on the store's outbox channel and wakes the
    relay at each notification (any process's checkpoint that wrote messages)."""

    def __init__(self, store: Any, wake: Any, stop: threading.Event) -> None:
        self.store, self.wake, self.stop = store, wake, stop
        self._closed = threading.Event()
        self.listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sagaflow-relay-listen",
                                        daemon=True)
        self._thread.start()

    @classmethod
    def of(cls, store: Any, wake: Any, stop: threading.Event) -> _Listener | None:
        inner = getattr(store, "store", store)  # a FencedStore's store
        if not hasattr(inner, "outbox_channel") or not hasattr(inner, "conninfo"):
            return None
        return cls(inner, wake, stop)

    def _run(self) -> None:
        import psycopg
        from psycopg import sql

        pause = 0.1
        while not self._done():
            try:
                with psycopg.connect(self.store.conninfo, autocommit=True,
                                     connect_timeout=10) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(
                        sql.Identifier(self.store.outbox_channel)))
                    self.listening.set()
                    self.wake.set()  # what was written before may not have been told
                    pause = 0.1
                    while not self._done():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self.wake.set()
            except Exception as exc:  # a connection lost: listen again, after a pause
                self.listening.clear()
                log.info("sagaflow: the relay's LISTEN failed, again in %.1fs: %r", pause, exc)
                self._closed.wait(pause)
                pause = min(pause * 2, 5.0)

    def _done(self) -> bool:
        return self._closed.is_set() or self.stop.is_set()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5.0)


class Handlers:
    """A :class:`~sagaflow.messages.Publisher` that delivers to functions in this process.

    ``handlers.on(EventClass, fn)`` calls ``fn(event, message)`` for each message whose
    event (decoded with the codec) is an instance of ``EventClass``; ``on("object", fn)``
    (a type name: the message's :attr:`~sagaflow.messages.Message.type`) for events
    that are plain values. Handlers run in the order of the messages. A handler that
    raises means the batch is not delivered: the relay publishes it again later,
    from the first message of the batch (handlers that already had a message may get it
    again, under the same id: be idempotent, keyed by that id).
    """

    def __init__(self, codec: Codec | None = None) -> None:
        self.codec = codec if codec is not None else default_codec
        self._by_class: list[tuple[type, Callable[[Any, Message], Any]]] = []
        self._by_type: dict[str, list[Callable[[Any, Message], Any]]] = {}

    def on(
        self, kind: type | str, fn: Callable[[Any, Message], Any] | None = None
    ) -> Any:
        """Register ``fn`` for events of ``kind`` (a class, or a message type name);
        usable as a decorator (``@handlers.on(Charged)``)."""

        def register(f: Callable[[Any, Message], Any]) -> Callable[[Any, Message], Any]:
            if isinstance(kind, str):
                self._by_type.setdefault(kind, []).append(f)
            elif isinstance(kind, type):
                self._by_class.append((kind, f))
            else:
                raise TypeError(f"handlers are for an event class or a type name, not {kind!r}")
            return f

        return register if fn is None else register(fn)

    def publish(self, messages: Sequence[Message]) -> None:
        """Deliver each message to its handlers, in order; raise if one of them raises."""
        for message in messages:
            event = self.codec.load_event(message.body)
            for f in self._by_type.get(message.type, ()):
                f(event, message)
            for cls, f in self._by_class:
                if isinstance(event, cls):
                    f(event, message)

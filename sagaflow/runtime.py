"""What the drivers need to run sagas in this process: the :class:`Runtime`.

A runtime holds the store, the listeners, the clock, the random draw of backoff
jitter, the threads that plain ``def`` calls run on, and the sagas being driven here
(with the operators' cancel requests for them). The drivers (:mod:`sagaflow.runner`)
take one; the :class:`~sagaflow.Orchestrator` and the :class:`~sagaflow.worker.Worker`
make one. Nothing here knows the orchestrator.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .clock import Clock, SystemClock
from .codec import Codec, default_codec
from .events import Listeners
from .records import SagaRecord
from .stores.base import Store

if TYPE_CHECKING:
    from .engine import Call
    from .spec import SagaSpec

__all__ = ["CallThread", "Instrument", "Runtime", "Threads"]

_allocate = threading.Lock


class CallThread:
    """A daemon thread that performs one plain ``def`` call at a time.

    The caller waits for the call at most its timeout. Giving up *abandons* the thread:
    the call finishes on its own, its result is dropped and the thread ends. Daemon
    threads, so that an abandoned call never holds up the interpreter's exit.
    """

    __slots__ = ("_delivered", "_done", "_go", "_guard", "_job", "_result", "abandoned")

    def __init__(self) -> None:
        self._go = _allocate()
        self._go.acquire()
        self._done = _allocate()
        self._done.acquire()
        self._guard = _allocate()
        self._job: tuple[Any, ...] | None = None
        self._result: BaseException | None = None
        self._delivered = False
        self.abandoned = False
        threading.Thread(target=self._serve, name="sagaflow-call", daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._go.acquire()
            job = self._job
            if job is None:
                return
            fn, args, context, notify = job
            self._job = None
            try:
                context.run(fn, *args)
                result: BaseException | None = None
            except BaseException as exc:  # handed to the caller, which re-raises non-Exceptions
                result = exc
            with self._guard:
                if self.abandoned:
                    return  # nobody waits for this late result: drop it, end the thread
                self._result = result
                self._delivered = True
                if notify is None:
                    self._done.release()
                else:
                    notify()

    def start(
        self, fn: Callable[..., Any], args: tuple[Any, ...], notify: Callable[[], Any] | None
    ) -> None:
        """Begin ``fn(*args)``; its end is told by ``notify()`` (run on this thread)
        or, without one, seen by :meth:`poll`."""
        self._delivered = False
        self._job = (fn, args, contextvars.copy_context(), notify)
        self._go.release()

    def poll(self, timeout: float) -> bool:
        """Whether the call ended within ``timeout`` seconds (without giving up)."""
        return self._done.acquire(timeout=max(timeout, 0.0))

    def give_up(self) -> bool:
        """Stop waiting for the call; True if its result had already been delivered."""
        with self._guard:
            if self._delivered:
                return True
            self.abandoned = True
            return False

    @property
    def result(self) -> BaseException | None:
        """What the call raised (``None``: it returned)."""
        return self._result

    def stop(self) -> None:
        """End an idle thread."""
        self._job = None
        self._go.release()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Threads:
    """Idle call threads kept for reuse; an abandoned one is never reused."""

    __slots__ = ("_idle",)

    def __init__(self) -> None:
        self._idle: list[CallThread] = []

    def take(self) -> CallThread:
        """An idle thread, or a new one."""
        try:
            return self._idle.pop()
        except IndexError:
            return CallThread()

    def put(self, thread: CallThread) -> None:
        """Return a thread whose call ended."""
        self._idle.append(thread)

    async def acall(
        self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None
    ) -> tuple[BaseException | None, bool]:
        """``(error, finished)`` of ``fn(*args)`` run on a call thread within
        ``timeout``: a plain ``def`` step under ``arun`` never blocks the event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        thread = self.take()
        thread.start(fn, args, lambda: loop.call_soon_threadsafe(_wake, future))
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            if not thread.give_up():
                return None, False
        except BaseException:
            thread.give_up()
            raise
        self._idle.append(thread)
        return thread.result, True

    def close(self) -> None:
        """End the idle threads (calls still running finish on their own)."""
        while self._idle:
            self._idle.pop().stop()


class Instrument(Protocol):
    """What the drivers tell a runtime's telemetry (:class:`sagaflow.otel.Telemetry`):
    a run of a saga begins and ends (the runner's ``enter``/``leave``), and each call is made
    through what :meth:`wrap` gives, so that whatever the call does runs inside the
    call's own context (its span, made current in the thread or task the call runs on).
    The drivers decide nothing here: the seam only wraps."""

    def begin(self, spec: SagaSpec, record: SagaRecord) -> None:
        """A driver begins a run of ``record`` (its first, or a resumed one)."""

    def end(
        self, spec: SagaSpec, record: SagaRecord, error: BaseException | None = None
    ) -> None:
        """The run that :meth:`begin` began is over (the saga ended, parked, or the
        driver was interrupted: ``error``, the exception raised out of it)."""

    def wrap(
        self, fn: Callable[..., Any], is_async: bool, spec: SagaSpec, record: SagaRecord,
        call: Call,
    ) -> Callable[..., Any]:
        """``fn`` (a coroutine function when ``is_async``) wrapped to run as ``call``."""


class Runtime:
    """The store, listeners, clock, jitter draw and call threads that runs share, and
    the sagas driven here now.

    ``live`` maps the id of each saga a driver is running in this process to its record
    (at most one run per id); ``cancels`` holds an operator's cancel request (its note)
    for a live saga until its driver turns it into compensation between two calls;
    ``pokes`` the live sagas a signal came for while they ran (:meth:`poke`,
    :meth:`let_go`). ``codec`` encodes and decodes signals' payloads (the store's, so
    that the types registered with it count). ``telemetry``: what traces and measures
    the runs (:class:`sagaflow.otel.Telemetry`; ``None``: nothing, at no cost).
    """

    __slots__ = (
        "_lock", "cancels", "clock", "codec", "listeners", "live", "pokes", "rand", "store",
        "telemetry", "threads",
    )  # fmt: skip

    def __init__(
        self,
        store: Store,
        listeners: Listeners | None = None,
        clock: Clock | None = None,
        rand: Callable[[], float] | None = None,
        telemetry: Instrument | None = None,
    ) -> None:
        self.store = store
        self.telemetry = telemetry
        self.listeners = Listeners() if listeners is None else listeners
        self.clock: Clock = SystemClock() if clock is None else clock
        self.rand: Callable[[], float] = random.random if rand is None else rand
        self.threads = Threads()
        self.live: dict[str, SagaRecord] = {}
        self.cancels: dict[str, str | None] = {}
        self.pokes: set[str] = set()
        self._lock = threading.Lock()
        codec = getattr(store, "codec", None)
        self.codec: Codec = codec if isinstance(codec, Codec) else default_codec

    def traced(
        self, fn: Callable[..., Any], is_async: bool, spec: SagaSpec, record: SagaRecord,
        call: Call,
    ) -> Callable[..., Any]:
        """``fn``, as ``call`` is to make it: wrapped by the telemetry, or itself (without
        telemetry a call costs one attribute test). Every driver, group member and
        fan-out item makes its call through this."""
        tel = self.telemetry
        return fn if tel is None else tel.wrap(fn, is_async, spec, record, call)

    def poke(self, saga_id: str) -> bool:
        """A signal was stored for ``saga_id``: tell its driver here to look again before
        it lets go of the saga. False if no driver here runs it (the caller resumes it)."""
        with self._lock:
            if saga_id in self.live:
                self.pokes.add(saga_id)
                return True
            return False

    def let_go(self, record: SagaRecord) -> bool:
        """``record``'s driver parked it: stop driving it, unless a signal came for it
        meanwhile (then False: the driver looks for it). Between this and :meth:`poke`
        no signal is missed: one of them sees the other."""
        with self._lock:
            if record.saga_id in self.pokes:
                self.pokes.discard(record.saga_id)
                return False
            if self.live.get(record.saga_id) is record:
                del self.live[record.saga_id]
            return True

    def request_cancel(self, saga_id: str, note: str | None) -> bool:
        """Ask the driver of live saga ``saga_id`` to compensate after its call in
        flight; False if no driver here runs it."""
        self.cancels[saga_id] = note
        if saga_id not in self.live:  # checked after the write: a run ending now drops it
            self.cancels.pop(saga_id, None)
            return False
        return True

    def close(self) -> None:
        """End the idle call threads."""
        self.threads.close()

"""Routing incoming events to sagas: sagas started by events, replies that satisfy waits.

A :class:`Router` takes :class:`~sagaflow.messages.Message`\\s (from the outbox's relay in
this process, or from a broker's consumer) and acts on each by its event's class::

    router = Router(orchestrator)
    router.start(OrderPlaced, Fulfilment, build=lambda e: Fulfilment(order_id=e.order_id))
    router.signal(PaymentReply, "payment", key=lambda e: e.order_id, saga=Fulfilment)

    Relay(store, router).start()                     # in process: router is a Publisher
    consumer.consume(router.handle, stop)            # a broker (sync sagas)
    await aconsumer.consume(router.ahandle, stop)    # a broker, asyncio

* A **start** route runs a new saga under the id ``f"{saga_name}:{message.id}"``: the
  event's id is stable on every delivery, so a redelivered event finds the saga it
  started and never starts a second one (a finished saga: its stored result; one still
  running, here or in a process that died, :class:`~sagaflow.AlreadyExecuting`: it was
  handled; recovery or a worker resumes a saga whose process died).
* A **signal** route sends signal ``name`` to the saga the event correlates to: found by
  its business key (``key=``, :meth:`~sagaflow.Orchestrator.find`) or named directly
  (``saga_id=``), under ``signal_id=message.id``, so a redelivered reply is ignored; a
  reply that comes before the saga reaches its wait is kept for it, as signals are. A
  reply redelivered after its saga finished (no unfinished saga has the key any more) is
  known by the finished saga's record, which holds that signal id: a duplicate to any
  router, one in a process that did not see the first too.
* :meth:`Router.handle` and :meth:`Router.ahandle` (async steps) decide alike
  (``_act``: what a route does with a message; ``_failed``: what an error means for
  it); only running or signalling the saga differs.
* A message that can never be routed raises an :class:`Unroutable` (a
  :class:`sagaflow.brokers.DeadLetter`): :class:`NoRoute`, :class:`Undecodable`,
  :class:`UnknownCorrelation`, :class:`ReplyRefused`, each saying why; a broker's consumer
  dead-letters it at once with that reason. Any other error (a store that is down) is
  raised as it is: the message is delivered again later.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from .brokers import DeadLetter
from .codec import Codec, default_codec
from .codec.values import StoredValue
from .errors import AlreadyExecuting, SagaflowError, SagaNotFound, SignalRefused
from .messages import Message
from .records import SagaResult
from .spec import is_saga, spec_of
from .stores._sql import event_type

__all__ = [
    "NoRoute",
    "ReplyRefused",
    "Router",
    "Undecodable",
    "UnknownCorrelation",
    "Unroutable",
    "message_of",
]

log = logging.getLogger("sagaflow.routing")

_SEEN = 10_000  #: message ids a router remembers having handled


class Unroutable(DeadLetter, SagaflowError):
    """A message that can never be routed; ``str(exc)`` says why. A
    :class:`~sagaflow.brokers.DeadLetter`: a consumer dead-letters it at once."""

    def __init__(self, message: Message, reason: str) -> None:
        self.message = message
        self.reason = reason
        super().__init__(f"{reason} (message {message.id!r}, type {message.type!r})")


class NoRoute(Unroutable):
    """No route of the router takes the message's event class."""


class Undecodable(Unroutable):
    """The message's body does not decode into an event."""


class UnknownCorrelation(Unroutable):
    """A reply for which no saga is found (no unfinished saga with its business key,
    no saga with its id)."""


class ReplyRefused(Unroutable):
    """The saga refused the reply's signal (it finished, it declares no wait for that
    name, the payload does not fit)."""


@attrs.frozen
class _Start:
    cls: type
    saga: type
    build: Callable[[Any], object]


@attrs.frozen
class _Signal:
    cls: type
    name: str
    key: Callable[[Any], object] | None
    saga_id: Callable[[Any], str] | None
    saga: type | str | None
    payload: Callable[[Any], object]


_Route = _Start | _Signal


@attrs.frozen
class _Act:
    """What a route does with a message: start ``saga`` under ``saga_id``, or send it
    signal ``name`` with ``payload``."""

    start: bool
    saga_id: str
    saga: object = None
    name: str = ""
    payload: object = None


def _event_itself(event: Any) -> Any:
    return event


def _no_payload(event: Any) -> None:
    return None


class Router:
    """Routes messages to sagas run by ``orchestrator`` (see the module's doc).

    ``ignore_unrouted``: a message no route takes is acknowledged and dropped instead of
    raising :class:`NoRoute` (for a consumer reading a stream that carries other
    services' events too). :meth:`publish` (the outbox's side) always skips those.
    """

    def __init__(self, orchestrator: Any, *, ignore_unrouted: bool = False) -> None:
        self.orchestrator = orchestrator
        self.ignore_unrouted = ignore_unrouted
        self._routes: list[_Route] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        #: what :meth:`publish` skipped as unroutable, newest last (at most 1000)
        self.unrouted: deque[Unroutable] = deque(maxlen=1000)

    @property
    def codec(self) -> Codec:
        runtime = getattr(self.orchestrator, "runtime", None)
        codec = getattr(runtime, "codec", None)
        return codec if isinstance(codec, Codec) else default_codec

    # -- routes ------------------------------------------------------------------------

    def start(
        self, event: type, saga: type, *, build: Callable[[Any], object] | None = None
    ) -> Router:
        """Start a ``saga`` for each event of class ``event``: ``build(event)`` makes the
        saga instance (default: ``saga(**fields of the event that saga has)``)."""
        _check_class(event, "event")
        if not is_saga(saga):
            raise TypeError(f"{saga!r} is not a saga class (decorate it with @saga)")
        self.orchestrator.register(saga)
        self._routes.append(_Start(event, saga, build if build is not None else _by_fields(saga)))
        return self

    def signal(
        self,
        event: type,
        name: str,
        *,
        key: Callable[[Any], object] | None = None,
        saga_id: Callable[[Any], str] | None = None,
        saga: type | str | None = None,
        payload: Callable[[Any], object] | None = None,
    ) -> Router:
        """Send signal ``name`` for each event of class ``event`` to the saga found by
        ``key(event)`` (its business key; ``saga``: only sagas of that class or name) or
        by ``saga_id(event)``. ``payload(event)`` is the signal's payload; by default the
        event itself, or none when ``saga`` is a class whose wait ``name`` takes none."""
        _check_class(event, "event")
        if (key is None) == (saga_id is None):
            raise TypeError("give the reply's correlation: key=... (a business key) "
                            "or saga_id=... (the saga's id), one of them")
        if payload is None:
            payload = _event_itself
            if isinstance(saga, type):
                spec = spec_of(saga)
                waits = spec.signals.get(name)
                if not waits:
                    declared = ", ".join(repr(n) for n in spec.signals) or "none"
                    raise TypeError(f"{spec.name} declares no wait for signal {name!r} "
                                    f"(its signals: {declared})")
                wait = spec.steps[waits[0]].wait
                if wait is not None and wait.payload is None:
                    payload = _no_payload
        if isinstance(saga, type):
            self.orchestrator.register(saga)
        self._routes.append(_Signal(event, name, key, saga_id, saga, payload))
        return self

    def routes_for(self, event: object) -> list[_Route]:
        return [r for r in self._routes if isinstance(event, r.cls)]

    # -- handling ----------------------------------------------------------------------

    def handle(self, message: Message) -> SagaResult | None:
        """Route ``message`` on this thread (sagas with sync steps); the result of the
        last saga it started or signalled, ``None`` if it was a duplicate (or dropped)."""
        routes, event = self._routes_of(message)
        if routes is None:
            return None
        orch = self.orchestrator
        result = None
        for route in routes:
            act = self._act(message, route, event)
            if act is None:
                continue
            try:
                result = (orch.run(act.saga, act.saga_id) if act.start else
                          orch.signal(act.saga_id, act.name, act.payload, signal_id=message.id))
            except Exception as exc:
                self._failed(message, act, exc)  # a redelivery, or raised as what it means
                result = None
        self._remember(message.id)
        return result

    async def ahandle(self, message: Message) -> SagaResult | None:
        """:meth:`handle` in the awaiting task (sagas with async steps too): the same
        decisions (:meth:`_act`, :meth:`_failed`), the saga run or signalled here."""
        routes, event = self._routes_of(message)
        if routes is None:
            return None
        orch = self.orchestrator
        result = None
        for route in routes:
            act = self._act(message, route, event)
            if act is None:
                continue
            try:
                result = await (orch.arun(act.saga, act.saga_id) if act.start else orch.asignal(
                    act.saga_id, act.name, act.payload, signal_id=message.id))
            except Exception as exc:
                self._failed(message, act, exc)  # a redelivery, or raised as what it means
                result = None
        self._remember(message.id)
        return result

    def on_event(self, event: object, message: Message) -> SagaResult | None:
        """:meth:`handle`, as an outbox :class:`~sagaflow.outbox.Handlers` handler:
        ``handlers.on(OrderPlaced, router.on_event)``."""
        return self.handle(message)

    def publish(self, messages: Sequence[Message]) -> None:
        """A :class:`~sagaflow.messages.Publisher`: ``Relay(store, router)``. Handles each
        message in order; an unroutable one is skipped (logged, kept in
        :attr:`unrouted`): the outbox carries every saga's events, routed or not. Any
        other error is raised: the relay delivers the batch again (duplicates are
        ignored)."""
        for message in messages:
            try:
                self.handle(message)
            except Unroutable as exc:
                self.unrouted.append(exc)
                level = logging.DEBUG if isinstance(exc, NoRoute) else logging.WARNING
                log.log(level, "sagaflow: not routed: %s", exc)

    # -- internals ---------------------------------------------------------------------

    def _routes_of(self, message: Message) -> tuple[list[_Route] | None, Any]:
        if message.id in self._seen:
            self._seen.move_to_end(message.id)
            return None, None  # handled by this router already: a redelivery
        try:
            event = self.codec.load_event(message.body)
        except Exception as exc:
            raise Undecodable(message, f"its body does not decode: {exc}") from exc
        routes = [] if isinstance(event, StoredValue) else self.routes_for(event)
        if not routes:
            if self.ignore_unrouted:
                return None, None
            known = ", ".join(sorted({r.cls.__qualname__ for r in self._routes})) or "none"
            kind = event.type if isinstance(event, StoredValue) else type(event).__qualname__
            raise NoRoute(message, f"no route for {kind} events (routed: {known})")
        return routes, event

    def _act(self, message: Message, route: _Route, event: Any) -> _Act | None:
        """What ``route`` does with ``message``: start a saga, or signal one; ``None``
        when there is nothing to do (a reply its saga took already)."""
        if isinstance(route, _Start):
            saga = route.build(event)
            return _Act(True, f"{spec_of(saga).name}:{message.id}", saga)
        if route.saga_id is not None:
            saga_id = str(route.saga_id(event))
        else:
            assert route.key is not None
            key = str(route.key(event))
            try:
                saga_id = str(self.orchestrator.find(key, route.saga, route.name))
            except SignalRefused as exc:
                if self._took(message, key, route.saga):
                    return None
                raise UnknownCorrelation(message, f"unknown correlation: {exc.reason}") from exc
        return _Act(False, saga_id, None, route.name, route.payload(event))

    def _took(self, message: Message, key: str, saga: type | str | None) -> bool:
        """Whether a saga with business key ``key`` took ``message`` as a signal already
        (then it finished: no unfinished saga has the key): a redelivered reply, which a
        router that did not see the first finds in the saga's record."""
        store = self.orchestrator.store
        name = saga if isinstance(saga, str) or saga is None else spec_of(saga).name
        for saga_id in store.by_key(key, name, unfinished=False):
            if any(s.signal_id == message.id for s in store.signals(saga_id)):
                log.debug("sagaflow: %s was taken by %s already", message.id, saga_id)
                return True
        return False

    def _failed(self, message: Message, act: _Act, error: Exception) -> None:
        """What running or signalling ``act``'s saga raised: nothing for a redelivery
        (the saga it started is still running, here or in a process that died: recovery
        or a worker resumes it), else the error it means for the message is raised."""
        if act.start:
            if isinstance(error, AlreadyExecuting):
                log.debug("sagaflow: %s already started saga %s", message.id, act.saga_id)
                return None
            raise error
        if isinstance(error, SagaNotFound):
            raise UnknownCorrelation(message, f"unknown correlation: {error}") from error
        if isinstance(error, SignalRefused):
            raise ReplyRefused(message, f"signal {act.name!r} refused: {error}") from error
        raise error

    def _remember(self, message_id: str) -> None:
        self._seen[message_id] = None
        while len(self._seen) > _SEEN:
            self._seen.popitem(last=False)


def _check_class(cls: object, what: str) -> None:
    if not isinstance(cls, type):
        raise TypeError(f"route by an {what} class, not {cls!r}")


def _by_fields(saga: type) -> Callable[[Any], object]:
    names = [f.name for f in attrs.fields(saga)] if attrs.has(saga) else None

    def build(event: Any) -> object:
        if names is None or not attrs.has(type(event)):
            raise TypeError(f"give build= to make a {saga.__qualname__} from a "
                            f"{type(event).__qualname__}")
        values = attrs.asdict(event, recurse=False)
        return saga(**{n: values[n] for n in names if n in values})

    return build


def message_of(
    event: object,
    id: str,
    *,
    saga_id: str = "",
    saga_name: str = "",
    seq: int = 0,
    at: float = 0.0,
    codec: Codec | None = None,
) -> Message:
    """A :class:`~sagaflow.messages.Message` carrying ``event`` under ``id``, as the
    outbox writes one: for a participant that is no saga replying by a broker (publish
    it with the broker's publisher), and for tests."""
    body = (codec or default_codec)._values.dumps_value(event)
    return Message(id=id, type=event_type(body), saga_id=saga_id, saga_name=saga_name,
                   seq=seq, body=body, at=at)


"""Redis Streams: a :class:`~sagaflow.messages.Publisher` and a consumer with groups.

Needs the ``redis`` client: ``pip install 'sagaflow[redis]'``. Nothing else of sagaflow
imports this module, so ``import sagaflow`` never imports ``redis``.

::

    from sagaflow.brokers.redis import RedisStreams

    streams = RedisStreams("redis://localhost:6379/0")       # stream "sagaflow:events"
    streams.publish(messages)                                # what an outbox relay calls

    consumer = streams.consumer("billing")                   # group "billing"
    consumer.consume(handle, stop)                           # handle(message) per message

Each message is one stream entry whose fields are the :class:`~sagaflow.messages.Message`'s
(``id``, ``type``, ``saga_id``, ``saga_name``, ``seq``, ``body``, ``at``). A batch is added
in one ``MULTI``/``EXEC``, so it lands whole or not at all; a connection error is raised
(the relay tries the batch again later, so a message can be in the stream twice, under
the same ``id``).

A consumer belongs to a consumer group (created with the stream if missing, reading from
the stream's start). It reads new entries with ``XREADGROUP``, calls the handler and
``XACK``\\s the entry once the handler returns. An entry whose handler raised, or that a
consumer that died was holding, stays pending; once it has been pending for
``claim_after`` seconds any consumer of the group takes it over (``XAUTOCLAIM``) and
handles it again. An entry delivered more than ``max_deliveries`` times, one whose fields
do not decode into a message, one whose type is not in ``types`` (when given) and one
whose handler raised :class:`~sagaflow.brokers.DeadLetter` is added to the dead-letter
stream ``<stream>:dead`` with the reason and acknowledged: the consumer goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

try:
    import redis
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sagaflow.brokers.redis needs the redis client: pip install 'sagaflow[redis]'"
    ) from exc

from sagaflow.brokers import DeadLetter, Handler
from sagaflow.messages import Message

__all__ = [
    "DEFAULT_STREAM",
    "AsyncRedisConsumer",
    "AsyncRedisStreams",
    "RedisConsumer",
    "RedisStreams",
    "dead_stream",
]

log = logging.getLogger("sagaflow.brokers.redis")

#: The stream messages are published to unless told otherwise.
DEFAULT_STREAM = "sagaflow:events"

_FIELDS = ("id", "type", "saga_id", "saga_name", "seq", "body", "at")
_Entry = tuple[bytes, dict[bytes, bytes] | None]


def dead_stream(stream: str) -> str:
    """The dead-letter stream of ``stream``: ``"<stream>:dead"``."""
    return f"{stream}:dead"


def _fields(message: Message) -> dict[str, str]:
    return {
        "id": message.id,
        "type": message.type,
        "saga_id": message.saga_id,
        "saga_name": message.saga_name,
        "seq": str(message.seq),
        "body": message.body,
        "at": repr(message.at),
    }


def decode(fields: dict[bytes, bytes]) -> Message:
    """The message in a stream entry's fields; :class:`ValueError` saying why if it is
    not one (a field missing, not UTF-8, ``seq`` or ``at`` not a number)."""
    text: dict[str, str] = {}
    for name in _FIELDS:
        raw = fields.get(name.encode())
        if raw is None:
            raise ValueError(f"field {name!r} is missing")
        try:
            text[name] = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"field {name!r} is not UTF-8: {exc}") from None
    try:
        seq = int(text["seq"])
    except ValueError:
        raise ValueError(f"field 'seq' is not an integer: {text['seq']!r}") from None
    try:
        at = float(text["at"])
    except ValueError:
        raise ValueError(f"field 'at' is not a number: {text['at']!r}") from None
    return Message(
        id=text["id"], type=text["type"], saga_id=text["saga_id"],
        saga_name=text["saga_name"], seq=seq, body=text["body"], at=at,
    )


class RedisStreams:
    """Publishes messages to the Redis stream ``stream`` at ``url``.

    ``maxlen``, when given, trims the stream to about that many entries as it grows
    (``XADD MAXLEN ~``): entries no consumer group has read yet can be trimmed too, so
    size it generously. ``options`` go to :meth:`redis.Redis.from_url` (timeouts, retry,
    TLS...).
    """

    def __init__(
        self,
        url: str,
        stream: str = DEFAULT_STREAM,
        *,
        maxlen: int | None = None,
        **options: Any,
    ) -> None:
        self.url = url
        self.stream = stream
        self.maxlen = maxlen
        self._options = options
        self.client: Any = redis.Redis.from_url(url, **options)

    def publish(self, messages: Sequence[Message]) -> None:
        """Add ``messages`` to the stream, in order, in one transaction (all or none).

        Raises the client's error (:class:`redis.exceptions.ConnectionError` when the
        server is down) and then none of them is added.
        """
        if not messages:
            return
        with self.client.pipeline(transaction=True) as pipe:
            for message in messages:
                pipe.xadd(self.stream, _fields(message), maxlen=self.maxlen)
            pipe.execute()

    def consumer(
        self,
        group: str,
        name: str | None = None,
        **settings: Any,
    ) -> RedisConsumer:
        """A :class:`RedisConsumer` of this stream in ``group`` (on its own connection)."""
        return RedisConsumer(self.url, group, name, stream=self.stream, **settings,
                             **self._options)

    def close(self) -> None:
        """Close the connections."""
        self.client.close()

    def __enter__(self) -> RedisStreams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ConsumerBase:
    """What the sync and the async consumer share: settings and decisions, no I/O.

    A consumer ``name`` of consumer group ``group`` of ``stream``.

    ``name`` defaults to ``<host>:<pid>:<n>``, different for every consumer. ``claim_after``
    (seconds) is how long an entry must have been pending before another consumer takes
    it over: longer than a handler normally takes. ``max_deliveries`` is how many times
    an entry is handed out before it is dead-lettered. ``types``, when given, are the
    message types this consumer handles; others are dead-lettered as unknown. ``batch``
    is how many entries one read takes, ``block`` how long (seconds) :meth:`consume`
    waits for new ones before looking for abandoned ones again.
    """

    _names = itertools.count(1)

    def __init__(
        self,
        url: str,
        group: str,
        name: str | None = None,
        *,
        stream: str = DEFAULT_STREAM,
        claim_after: float = 60.0,
        max_deliveries: int = 5,
        types: Collection[str] | None = None,
        batch: int = 10,
        block: float = 1.0,
        start: str = "0",
        **options: Any,
    ) -> None:
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self.url = url
        self.group = group
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{next(self._names)}"
        self.stream = stream
        self.dead = dead_stream(stream)
        self.claim_after = claim_after
        self.max_deliveries = max_deliveries
        self.types = frozenset(types) if types is not None else None
        self.batch = batch
        self.block = block
        self.start = start
        self.client: Any = self._connect(url, options)
        self._errors: OrderedDict[bytes, str] = OrderedDict()
        self._group_ready = False

    def _connect(self, url: str, options: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _verdict(
        self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int
    ) -> tuple[Message | None, str]:
        """The entry's message, or ``None`` and why it is to be dead-lettered."""
        if deliveries > self.max_deliveries:
            last = self._errors.pop(entry_id, None)
            reason = f"delivered {deliveries} times (max_deliveries={self.max_deliveries})"
            return None, reason if last is None else f"{reason}; last error: {last}"
        try:
            message = decode(fields)
        except ValueError as exc:
            return None, f"does not decode: {exc}"
        if self.types is not None and message.type not in self.types:
            return None, f"unknown type {message.type!r}"
        return message, ""

    def _remember(self, entry_id: bytes, error: str) -> None:
        self._errors[entry_id] = error
        self._errors.move_to_end(entry_id)
        while len(self._errors) > 1000:
            self._errors.popitem(last=False)

    def _dead_fields(self, entry_id: bytes, reason: str, deliveries: int) -> dict[bytes, bytes]:
        return {
            b"reason": reason.encode(),
            b"stream": self.stream.encode(),
            b"entry": entry_id,
            b"group": self.group.encode(),
            b"consumer": self.name.encode(),
            b"deliveries": str(deliveries).encode(),
            b"dead_at": repr(time.time()).encode(),
        }



class RedisConsumer(_ConsumerBase):
    """A consumer ``name`` of consumer group ``group`` of ``stream`` (see
    :class:`_ConsumerBase` for the settings): :meth:`consume` until stopped, or one
    round at a time with :meth:`consume_once`."""

    def _connect(self, url: str, options: dict[str, Any]) -> Any:
        return redis.Redis.from_url(url, **options)

    # -- the group ---------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the group (and the stream) if missing, reading from ``start``."""
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.stream, self.group, id=self.start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    # -- consuming ---------------------------------------------------------------------

    def consume(self, handler: Handler, stop: threading.Event | None = None) -> None:
        """Handle messages until ``stop`` is set. A broker that cannot be reached is
        tried again with a growing pause (up to 30 s); the consumer never gives up."""
        stop = stop if stop is not None else threading.Event()
        pause = 0.1
        while not stop.is_set():
            try:
                self.consume_once(handler, block=self.block)
                pause = 0.1
            except redis.ConnectionError as exc:
                self._group_ready = False
                log.warning("redis at %s unreachable (%s); again in %.1fs", self.url, exc, pause)
                stop.wait(pause)
                pause = min(pause * 2, 30.0)

    def consume_once(self, handler: Handler, *, block: float | None = None) -> int:
        """One round: take over the entries pending longer than ``claim_after``, then
        read new ones (waiting up to ``block`` seconds for some; not at all if ``None``),
        handling each. Returns how many entries were handed to the handler or
        dead-lettered."""
        self.ensure_group()
        done = self._handle(self._claim(), handler, reclaimed=True)
        wait = None if block is None else max(1, int(block * 1000))
        if done and wait is not None:
            wait = None  # work was found: do not sit waiting for more
        reply = self.client.xreadgroup(
            self.group, self.name, {self.stream: ">"}, count=self.batch, block=wait
        )
        for _stream, entries in _stream_entries(reply):
            done += self._handle(entries, handler, reclaimed=False)
        return done

    def _claim(self) -> list[_Entry]:
        reply = self.client.xautoclaim(
            self.stream, self.group, self.name,
            min_idle_time=int(self.claim_after * 1000), start_id="0-0", count=self.batch,
        )
        claimed: list[_Entry] = list(reply[1])
        deleted = reply[2] if len(reply) > 2 else []
        if deleted:  # pending entries trimmed from the stream: nothing left to deliver
            self.client.xack(self.stream, self.group, *deleted)
        return claimed

    def _deliveries(self, ids: Sequence[bytes]) -> dict[bytes, int]:
        """How many times each of ``ids`` (pending) has been handed out."""
        if not ids:
            return {}
        with self.client.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
            replies = pipe.execute()
        return {p["message_id"]: int(p["times_delivered"]) for r in replies for p in r}

    def _handle(self, entries: Iterable[_Entry], handler: Handler, *, reclaimed: bool) -> int:
        entries = list(entries)
        counts = self._deliveries([e[0] for e in entries]) if reclaimed else {}
        done = 0
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream while pending (Redis < 7)
                self.client.xack(self.stream, self.group, entry_id)
                continue
            done += 1
            deliveries = counts.get(entry_id, 1)
            message, reason = self._verdict(entry_id, fields, deliveries)
            if message is None:
                self._dead_letter(entry_id, fields, reason, deliveries)
                continue
            try:
                handler(message)
            except DeadLetter as exc:
                self._dead_letter(entry_id, fields, f"handler: {exc}", deliveries)
                continue
            except Exception as exc:
                log.warning("handler failed on %s (%s): %r; it will be delivered again",
                            message.id, entry_id.decode(), exc)
                self._remember(entry_id, f"{type(exc).__name__}: {exc}")
                continue
            self._errors.pop(entry_id, None)
            self.client.xack(self.stream, self.group, entry_id)
        return done

    def _dead_letter(
        self, entry_id: bytes, fields: dict[bytes, bytes], reason: str, deliveries: int
    ) -> None:
        """Add the entry to ``<stream>:dead`` with why, and acknowledge it: one
        transaction, so it is never both lost and acknowledged."""
        extra = self._dead_fields(entry_id, reason, deliveries)
        log.warning("dead-lettering %s of %s: %s", entry_id.decode(), self.stream, reason)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead, {**fields, **extra})
            pipe.xack(self.stream, self.group, entry_id)
            pipe.execute()

    def dead_letters(self, count: int | None = None) -> list[dict[str, str]]:
        """The dead-letter stream's entries, oldest first, as text (undecodable bytes
        replaced), each with its ``reason``."""
        out = []
        for entry_id, fields in self.client.xrange(self.dead, count=count):
            row = {k.decode(errors="replace"): v.decode(errors="replace")
                   for k, v in fields.items()}
            row["dead_entry"] = entry_id.decode()
            out.append(row)
        return out

    def close(self) -> None:
        """Close the connection (a pending entry stays pending: another consumer of the
        group takes it over after ``claim_after``)."""
        with contextlib.suppress(Exception):
            self.client.close()

    def __enter__(self) -> RedisConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stream_entries(reply: Any) -> list[tuple[Any, list[_Entry]]]:
    """XREADGROUP's reply as ``[(stream, entries)]`` (RESP2 lists, RESP3 dicts)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(k, v[0] if v and isinstance(v[0], list) else v) for k, v in reply.items()]
    return [(stream, entries) for stream, entries in reply]


# -- asyncio ---------------------------------------------------------------------------


class AsyncRedisStreams:
    """:class:`RedisStreams` for asyncio (``redis.asyncio``): ``await publish(messages)``."""

    def __init__(
        self,
        url: str,
        stream: str = DEFAULT_STREAM,
        *,
        maxlen: int | None = None,
        **options: Any,
    ) -> None:
        import redis.asyncio

        self.url = url
        self.stream = stream
        self.maxlen = maxlen
        self._options = options
        self.client: Any = redis.asyncio.Redis.from_url(url, **options)

    async def publish(self, messages: Sequence[Message]) -> None:
        """Add ``messages`` in order, in one transaction; raises like
        :meth:`RedisStreams.publish`."""
        if not messages:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            for message in messages:
                pipe.xadd(self.stream, _fields(message), maxlen=self.maxlen)
            await pipe.execute()

    def consumer(self, group: str, name: str | None = None, **settings: Any) -> AsyncRedisConsumer:
        """An :class:`AsyncRedisConsumer` of this stream in ``group``."""
        return AsyncRedisConsumer(self.url, group, name, stream=self.stream, **settings,
                                  **self._options)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> AsyncRedisStreams:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncRedisConsumer(_ConsumerBase):
    """:class:`RedisConsumer` for asyncio: ``await consume(handler, stop)`` with an
    :class:`asyncio.Event`; ``handler`` may be a coroutine function."""

    def _connect(self, url: str, options: dict[str, Any]) -> Any:
        import redis.asyncio

        return redis.asyncio.Redis.from_url(url, **options)

    async def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.client.xgroup_create(self.stream, self.group, id=self.start,
                                            mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def consume(
        self, handler: Callable[[Message], object], stop: asyncio.Event | None = None
    ) -> None:
        """Handle messages until ``stop`` is set, waiting out a broker that is down."""
        stop = stop if stop is not None else asyncio.Event()
        pause = 0.1
        while not stop.is_set():
            try:
                await self.consume_once(handler, block=self.block)
                pause = 0.1
            except redis.ConnectionError as exc:
                self._group_ready = False
                log.warning("redis at %s unreachable (%s); again in %.1fs", self.url, exc, pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                pause = min(pause * 2, 30.0)

    async def consume_once(
        self, handler: Callable[[Message], object], *, block: float | None = None
    ) -> int:
        """One round, as :meth:`RedisConsumer.consume_once`."""
        await self.ensure_group()
        reply = await self.client.xautoclaim(
            self.stream, self.group, self.name,
            min_idle_time=int(self.claim_after * 1000), start_id="0-0", count=self.batch,
        )
        if len(reply) > 2 and reply[2]:
            await self.client.xack(self.stream, self.group, *reply[2])
        done = await self._handle(list(reply[1]), handler, reclaimed=True)
        wait = None if block is None or done else max(1, int(block * 1000))
        read = await self.client.xreadgroup(
            self.group, self.name, {self.stream: ">"}, count=self.batch, block=wait
        )
        for _stream, entries in _stream_entries(read):
            done += await self._handle(entries, handler, reclaimed=False)
        return done

    async def _handle(
        self, entries: list[_Entry], handler: Callable[[Message], object], *, reclaimed: bool
    ) -> int:
        counts: dict[bytes, int] = {}
        if reclaimed and entries:
            async with self.client.pipeline(transaction=False) as pipe:
                for entry_id, _ in entries:
                    pipe.xpending_range(self.stream, self.group, min=entry_id, max=entry_id,
                                        count=1)
                replies = await pipe.execute()
            counts = {p["message_id"]: int(p["times_delivered"]) for r in replies for p in r}
        done = 0
        for entry_id, fields in entries:
            if fields is None:
                await self.client.xack(self.stream, self.group, entry_id)
                continue
            done += 1
            deliveries = counts.get(entry_id, 1)
            message, reason = self._verdict(entry_id, fields, deliveries)
            if message is not None:
                try:
                    result = handler(message)
                    if inspect.isawaitable(result):
                        await result
                except DeadLetter as exc:
                    reason = f"handler: {exc}"
                except Exception as exc:
                    log.warning("handler failed on %s (%s): %r; it will be delivered again",
                                message.id, entry_id.decode(), exc)
                    self._remember(entry_id, f"{type(exc).__name__}: {exc}")
                    continue
                else:
                    self._errors.pop(entry_id, None)
                    await self.client.xack(self.stream, self.group, entry_id)
                    continue
            log.warning("dead-lettering %s of %s: %s", entry_id.decode(), self.stream, reason)
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xadd(self.dead, {**fields, **self._dead_fields(entry_id, reason, deliveries)})
                pipe.xack(self.stream, self.group, entry_id)
                await pipe.execute()
        return done

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()

    async def __aenter__(self) -> AsyncRedisConsumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

"""Brokers: where the outbox's messages go, and where consumers read them from.

An adapter is two small things. A :class:`~sagaflow.messages.Publisher` (``publish``:
every message of a batch delivered, in order, or an error and none is taken as
delivered) and a :class:`Consumer` (``consume(handler, stop)``: hand each message to
``handler``, acknowledge it once the handler returns). Delivery is at least once: a
handler may see a message twice, under the same :attr:`~sagaflow.messages.Message.id`,
and deduplicates on it.

A message that can never be handled (it does not decode, its type is unknown, it failed
too many times) goes to a dead-letter place of the broker with the reason, and the
consumer goes on. A handler can send a message there itself by raising
:class:`DeadLetter`.

Each adapter lives in its own module behind an extra, imported only when asked for:
``import sagaflow`` (and this package) never imports a broker's client.

* :mod:`sagaflow.brokers.redis`: Redis Streams (``pip install 'sagaflow[redis]'``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from sagaflow.messages import Message, Publisher

__all__ = ["Consumer", "DeadLetter", "Handler", "Message", "Publisher"]

#: What a consumer calls with each message; returning acknowledges it, raising leaves
#: it to be delivered again (or dead-lettered, for :class:`DeadLetter`).
Handler = Callable[[Message], object]


class DeadLetter(Exception):
    """Raised by a handler: this message can never be handled; dead-letter it with
    ``reason`` (``str(exc)``) instead of delivering it again."""


class Consumer(Protocol):
    """Reads messages from a broker and hands them to a handler, one at a time.

    ``consume`` runs until ``stop`` is set (or for ever without one). A message is
    acknowledged after ``handler`` returns; if the handler raises (or the consumer dies)
    it is delivered again later, to this consumer or another of its group.
    """

    def consume(self, handler: Handler, stop: threading.Event | None = None) -> None: ...

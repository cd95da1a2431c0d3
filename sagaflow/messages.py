"""What leaves a saga and what arrives from outside: :class:`Message` and :class:`Publisher`.

A step's domain events (``ctx.emit``) are written to the store's outbox in the
transaction of the checkpoint that records the step, and relayed from there after it
commits: at least once, in order per saga, each under a stable :attr:`Message.id` that
consumers deduplicate on. A :class:`Publisher` is where the relay hands them: handlers in
the process, or a broker. This module is the bottom of that chain: it imports nothing of
sagaflow, so the stores, the relay and the broker adapters can all depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

__all__ = ["Message", "Publisher"]


@attrs.frozen
class Message:
    """An event on its way out of (or into) sagaflow.

    ``id`` is stable, the same on every delivery: ``"{saga_id}:{seq}"`` for domain
    event number ``seq`` of saga ``saga_id``, ``"{saga_id}:h{seq}"`` for the lifecycle
    event at place ``seq`` of its history. ``type`` names the event's class as the
    codec tags it; ``body`` is its JSON text (the codec decodes it back). ``saga_id``
    and ``saga_name`` say which saga it is from (its correlation); ``at`` is when it
    was written (Unix time).
    """

    id: str
    type: str
    saga_id: str
    saga_name: str
    seq: int
    body: str
    at: float


class Publisher(Protocol):
    """Where a relay hands the outbox's messages: in order, all of them or an error.

    ``publish`` returns once every message is delivered (a broker acknowledged it, a
    handler returned); raising means none is taken as delivered, and the relay tries
    again later with the same messages. So a consumer may see a message twice, under
    the same id, and never not at all.
    """

    def publish(self, messages: Sequence[Message]) -> None: ...

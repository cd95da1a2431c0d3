"""The sagas of the groups benchmark (:mod:`benchmarks.groups`), built with
:class:`sagaflow.builder.SagaBuilder` at module level (so that their stored type path
imports): a parallel group of :data:`MEMBERS` members, the same calls as a sequential
saga, and a fan-out over a list beside the same list's calls as one step each.

Every member, step and item has a compensation that does nothing (they are
compensatable steps, the common case); none fails here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import attrs

from sagaflow.builder import SagaBuilder

#: Members of the groups (and steps of their sequential twins).
MEMBERS = 10
#: How long each member of the sleeping group waits (seconds).
SLEEP = 0.01
#: Items of the fan-out (and steps of its sequential twin).
ITEMS = 1000


@attrs.define
class Data:
    n: int = 0


@attrs.define
class Items:
    items: list[int] = attrs.field(factory=list)


async def nap(saga: Any, ctx: Any) -> None:
    await asyncio.sleep(SLEEP)


async def anoop(saga: Any, ctx: Any) -> None:
    return None


def noop(saga: Any, ctx: Any) -> None:
    return None


async def anoop_item(saga: Any, item: int, ctx: Any) -> None:
    return None


def _group(name: str, fn: Any, undo: Any, members: int = MEMBERS) -> type:
    """A saga that is one parallel group of ``members`` calls of ``fn``."""
    builder = SagaBuilder(name, data=Data, module=__name__)
    group = builder.group("together")
    for i in range(members):
        group.step(fn, name=f"m{i}", compensate=undo)
    return builder.build()


def _sequence(name: str, fn: Any, undo: Any, steps: int = MEMBERS,
              data: type = Data) -> type:
    """A saga of ``steps`` steps, each a call of ``fn``, one after another."""
    builder = SagaBuilder(name, data=data, module=__name__)
    for i in range(steps):
        builder.step(fn, name=f"s{i}", compensate=undo)
    return builder.build()


def _fan_out(name: str, limit: int | None) -> type:
    """A saga that is one fan-out over its ``items`` (``limit`` at once)."""
    builder = SagaBuilder(name, data=Items, module=__name__)
    builder.step(anoop_item, name="each", each="items", limit=limit, compensate=anoop_item)
    return builder.build()


# The names given are the classes' names here (the builder names a class after its saga).
BenchGroupNap = _group("BenchGroupNap", nap, anoop)
BenchGroupSync = _group("BenchGroupSync", noop, noop)
BenchSeqSync = _sequence("BenchSeqSync", noop, noop)
BenchGroupAsync = _group("BenchGroupAsync", anoop, anoop)
BenchSeqAsync = _sequence("BenchSeqAsync", anoop, anoop)
BenchFanOut10 = _fan_out("BenchFanOut10", 10)
BenchFanOutAll = _fan_out("BenchFanOutAll", None)
BenchSeq1000 = _sequence("BenchSeq1000", anoop, anoop, ITEMS, Items)

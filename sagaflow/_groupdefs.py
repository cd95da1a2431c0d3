"""Parallel groups and fan-outs at definition: what ``@step(each=...)`` records
(:class:`FanOutDecl`), and how ``@saga`` checks and places groups
(:func:`~sagaflow.parallel`) and fan-outs (:func:`resolve_groups`) into the
:class:`~sagaflow.spec.GroupSpec` of a group and the :class:`~sagaflow.spec.FanOutSpec`
of a fan-out. Like :mod:`sagaflow._waitdefs` for waits: every problem is appended, with
its fix, to ``problems`` (reported together by ``@saga``)."""

from __future__ import annotations

import collections.abc
import contextlib
import typing
from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from .machine import COMPENSATING_PREFIX, RESERVED_NAMES, is_reserved
from .spec import CompensationOrder, FanOutSpec, GroupSpec, StepKind, StepSpec


class GroupDecl(Protocol):
    """What ``@saga`` reads of a declared group (:class:`~sagaflow.Parallel`)."""

    limit: Any
    compensate: Any


class StepDecl(Protocol):
    """What ``@saga`` reads here of a declared step (a ``StepDef``)."""

    @property
    def group(self) -> Any: ...

    @property
    def each(self) -> FanOutDecl | None: ...

__all__ = ["FanOutDecl", "GroupDecl", "StepDecl", "check_limit", "resolve_groups"]

_ORDERS = ", ".join(repr(o.value) for o in CompensationOrder)


@attrs.frozen
class FanOutDecl:
    """What ``@step(each=..., key=..., limit=..., compensate=...)`` was given, as given."""

    field: Any
    key: Any = None
    limit: Any = None
    compensate: Any = "concurrent"


def check_limit(value: object, what: str, problems: list[str]) -> int | None:
    """A group's or fan-out's ``limit``: ``None`` (all at once) or an int >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(
            f"{what}: limit must be a whole number >= 1 (how many run at once) or None "
            f"(all at once), got {value!r}"
        )
        return None
    return value


def check_order(value: object, what: str, problems: list[str]) -> CompensationOrder:
    try:
        return CompensationOrder(getattr(value, "value", value))
    except ValueError:
        problems.append(f"{what}: compensate must be one of {_ORDERS}, got {value!r}")
        return CompensationOrder.CONCURRENT


def resolve_groups(
    cls: type,
    declared: Sequence[tuple[str, GroupDecl]],
    defs: Sequence[tuple[str, StepDecl]],
    steps: tuple[StepSpec, ...],
    problems: list[str],
) -> tuple[tuple[StepSpec, ...], tuple[GroupSpec, ...]]:
    """The steps with their ``group`` and ``each`` set, and the saga's groups
    (``declared``: the class's group attributes, by name)."""
    out = list(steps)
    _fan_outs(cls, defs, out, problems)
    found: dict[int, tuple[str, GroupDecl]] = {}
    for attr, value in declared:
        found.setdefault(id(value), (attr, value))
    members: dict[int, list[int]] = {}
    for index, (_, d) in enumerate(defs):
        g = d.group
        if g is None:
            continue
        if id(g) not in found:
            problems.append(
                f"step {out[index].name!r} is a member of {g!r}, which is not an attribute "
                "of this saga: assign the group in the class body (book = parallel()) and "
                "decorate its members with @book.step"
            )
            continue
        members.setdefault(id(g), []).append(index)
    names = {s.name for s in out}
    pivots = [s.index for s in out if s.kind is StepKind.PIVOT]
    groups: list[GroupSpec] = []
    for gid, (attr, p) in sorted(found.items(), key=lambda kv: members.get(kv[0], [-1])[0]):
        what = f"group {attr!r}"
        indices = members.get(gid, [])
        if not indices:
            problems.append(
                f"{what} (parallel()) has no members: decorate its steps with @{attr}.step, "
                "or remove it"
            )
            continue
        ok = True
        if is_reserved(attr):
            problems.append(
                f"{what}: the name is reserved for the state machine "
                f"({', '.join(sorted(RESERVED_NAMES))}, {COMPENSATING_PREFIX}*): rename it"
            )
        elif attr in names:
            problems.append(
                f"{what}: a step is also called {attr!r}, and a group's name is its state: "
                "rename the group or the step"
            )
        first, last = indices[0], indices[-1]
        if indices != list(range(first, last + 1)):
            between = [out[i].name for i in range(first, last + 1) if i not in indices]
            problems.append(
                f"{what}: its members ({', '.join(out[i].name for i in indices)}) are not "
                f"defined one after another ({', '.join(between)} between them): define a "
                "group's members together in the class body"
            )
            ok = False
        limit = check_limit(p.limit, what, problems)
        order = check_order(p.compensate, what, problems)
        after = any(
            s.kind in (StepKind.PIVOT, StepKind.RETRIABLE) for s in out[:first]
        ) or any(out[i].kind is StepKind.RETRIABLE for i in indices)
        where = (
            f"after the pivot {out[pivots[0]].name!r}"
            if pivots and pivots[0] < first
            else "after the point of no return (it holds retriable members)"
        )
        for i in indices:
            s = out[i]
            if s.wait is not None:
                problems.append(
                    f"{what}: {'timer' if s.wait.is_timer else 'wait'} {s.name!r} cannot be a "
                    "member (a group runs calls at once; a wait parks the saga): define it "
                    "before or after the group"
                )
            if s.kind is StepKind.PIVOT:
                problems.append(
                    f"{what}: step {s.name!r} is the pivot, but a pivot is one call, the "
                    "point of no return: define it outside the group (after it)"
                )
            elif s.kind is StepKind.COMPENSATABLE and after:
                problems.append(
                    f"{what} comes {where}, where nothing is undone, but its member "
                    f"{s.name!r} is compensatable: make it retriable=True (or readonly), or "
                    "move it to a group before the pivot"
                )
        if not ok:
            continue
        spec = GroupSpec(len(groups), attr, first, last, limit, order, after_pivot=after)
        for i in indices:
            out[i] = attrs.evolve(out[i], group=spec.index)
        groups.append(spec)
    return tuple(out), tuple(groups)


def _fan_outs(
    cls: type, defs: Sequence[tuple[str, StepDecl]], out: list[StepSpec], problems: list[str]
) -> None:
    """Check each ``each=`` and set the fan-out's :class:`FanOutSpec`."""
    for index, (_, d) in enumerate(defs):
        decl = d.each
        if decl is None:
            continue
        s = out[index]
        what = f"step {s.name!r}"
        if decl.field is None:
            given = [
                k for k, v in (("key", decl.key), ("limit", decl.limit)) if v is not None
            ] + (["compensate"] if decl.compensate != "concurrent" else [])
            problems.append(
                f"{what}: {'= and '.join(given)}= without each=: they say how a fan-out "
                "runs; give each='a_list_field' (one call per item), or remove them"
            )
            continue
        if s.wait is not None:
            problems.append(
                f"{'timer' if s.wait.is_timer else 'wait'} {s.name!r} cannot take each=: "
                "a wait parks the saga once; fan out in a step"
            )
            continue
        if s.kind is StepKind.PIVOT:
            problems.append(
                f"{what} is the pivot and has each=: a pivot is one call, the point of no "
                "return: make the fan-out a step before it, and the pivot a step of its own"
            )
            continue
        field = _check_field(cls, decl.field, what, problems)
        if decl.key is not None and not callable(decl.key):
            problems.append(
                f"{what}: key must be a callable of an item (lambda line: line.sku) or "
                f"None (the item's position), got {decl.key!r}"
            )
        limit = check_limit(decl.limit, what, problems)
        order = check_order(decl.compensate, what, problems)
        if field is not None:
            key = decl.key if callable(decl.key) else None
            out[index] = attrs.evolve(s, each=FanOutSpec(field, key, limit, order))


_SEQUENCES = (
    list, tuple, collections.abc.Sequence, collections.abc.MutableSequence,
    typing.Sequence, typing.MutableSequence, typing.List, typing.Tuple,  # noqa: UP006
)
_SEQUENCE_WORDS = ("list", "tuple", "Sequence", "MutableSequence", "List", "Tuple")


def _check_field(cls: type, field: object, what: str, problems: list[str]) -> str | None:
    """The fan-out's field: a field of the class whose annotation (if any) is a list,
    tuple or Sequence (an unannotated one is checked when the saga runs)."""
    fields = {f.name: f for f in attrs.fields(cls)} if attrs.has(cls) else {}
    if not isinstance(field, str) or field not in fields:
        known = ", ".join(fields) or "none"
        problems.append(
            f"{what}: each={field!r} must name a field of the saga (fields: {known}) "
            "holding the items, a list or tuple"
        )
        return None
    annotation: Any = fields[field].type
    with contextlib.suppress(Exception):  # a name not resolvable here: read the text
        annotation = typing.get_type_hints(cls).get(field, annotation)
    if annotation is None or annotation is Any:
        return field
    if isinstance(annotation, str):
        head = annotation.split("[")[0].strip().rpartition(".")[2]
        ok = head in _SEQUENCE_WORDS
    else:
        origin = typing.get_origin(annotation) or annotation
        ok = origin in _SEQUENCES
    if not ok:
        shown = annotation.__name__ if isinstance(annotation, type) else str(annotation)
        problems.append(
            f"{what}: each={field!r} names a field annotated {shown}, not a collection of "
            f"items: use a list or tuple (list[...], tuple[..., ...] or Sequence[...])"
        )
        return None
    return field

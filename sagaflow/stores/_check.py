"""Is a decoded record one that a run of its saga could have left? Every column checked.

A damaged row (a hand edit, a bug, a disk) may decode into values no run makes: a step
cursor out of range or of the wrong type, a steps list of the wrong length, an unknown
machine state, a timestamp that is not one. The engine would then fail with a plain
``IndexError`` after a participant was called again; :func:`check_record` stops it
before any step runs, with a :class:`~sagaflow.CorruptRecord` naming the saga, the
column and what it holds.
"""

from __future__ import annotations

import itertools
import math
import operator
from typing import Any

from ..codec.diagnose import short
from ..errors import CorruptRecord, SagaflowError
from ..machine import COMPENSATED, COMPLETED, FAILED, NOT_STARTED, compensation_state
from ..records import CompensationStatus, SagaRecord, SagaStatus, StepRecord, StepStatus
from ..spec import SagaSpec

_step_values = operator.attrgetter(
    "name", "status", "attempts", "started_at", "finished_at", "error", "timed_out",
    "compensation", "compensation_attempts", "compensation_started_at",
    "compensation_finished_at", "compensation_error", "wake_at", "first_item", "items",
)  # fmt: skip

__all__ = ["check_record"]

_TIMES = ("created_at", "updated_at")
_MAYBE_TIMES = ("finished_at", "wake_at", "deadline_at", "compensation_deadline_at")
_STEP_TIMES = (
    "started_at", "finished_at", "compensation_started_at", "compensation_finished_at",
    "wake_at",
)  # fmt: skip
_ENDS = {
    SagaStatus.COMPLETED: COMPLETED,
    SagaStatus.COMPENSATED: COMPENSATED,
    SagaStatus.FAILED: FAILED,
}


class _Bad(Exception):
    """One column is wrong: raised inside the checks, turned into a CorruptRecord."""

    def __init__(self, column: str, value: Any, reason: str) -> None:
        super().__init__(reason)
        self.column = column
        self.value = value
        self.reason = reason


class _Shape:
    """What the checks need of a spec, worked out once per definition."""

    __slots__ = ("compensatable", "fan_outs", "group_of", "names", "states", "states_at",
                 "transitions")

    def __init__(self, spec: SagaSpec) -> None:
        self.names = [s.name for s in spec.steps]
        self.compensatable = frozenset(
            i for i, fn in enumerate(spec.compensations) if fn is not None
        )
        #: the fan-out steps' indices (their item records follow the saga's steps)
        self.fan_outs = frozenset(s.index for s in spec.steps if s.each is not None)
        #: each step's parallel group (``None``: none)
        self.group_of = [s.group for s in spec.steps]
        #: the machine state a run is in at each step (a member's: its group)
        self.states_at = [spec.state_of(i) for i in range(len(spec.steps))]
        self.transitions = spec.transitions
        self.states = frozenset({NOT_STARTED}).union(
            *((source, dest) for source, _, dest in spec.transitions)
        )


_shapes: dict[tuple[str, str], _Shape] = {}


def _shape(spec: SagaSpec) -> _Shape:
    key = (spec.name, spec.fingerprint)
    shape = _shapes.get(key)
    if shape is None:
        shape = _shapes[key] = _Shape(spec)
    return shape


def check_record(record: SagaRecord, spec: SagaSpec | None) -> None:
    """Raise :class:`~sagaflow.CorruptRecord` (``saga_id``, ``column``, ``found``) for
    the first column of ``record`` that holds what no run could have left.

    Types and ranges are always checked. Against ``spec`` (when it is the definition the
    saga was stored under: same fingerprint) also: the steps (as many, same names), the
    state (one of the machine's, the one the status and cursor imply), the cursor and
    the undo list (in range, compensatable steps, newest first), the failures (steps
    that have a compensation) and the path (edges of the machine).
    """
    try:
        if not _looks_fine(record):  # the common case in one pass; else say what is wrong
            _check_types(record)
        if spec is not None and spec.fingerprint == record.fingerprint:
            _check_against(record, spec)
    except _Bad as bad:
        raise CorruptRecord(record.saga_id, bad.reason, bad.column, short(bad.value)) from None


def _time(v: Any) -> bool:
    """A finite number of seconds (``v - v`` is NaN for an infinity or NaN)."""
    return type(v) is int or (type(v) is float and v - v == 0.0)


def _maybe_time(v: Any) -> bool:
    return v is None or type(v) is int or (type(v) is float and v - v == 0.0)


def _looks_fine(r: SagaRecord) -> bool:
    """Whether every column of ``r`` has the type and range :func:`_check_types` wants
    (it says what is wrong when not)."""
    if not (
        type(r.saga_id) is str and r.saga_id and type(r.saga_name) is str and r.saga_name
        and type(r.fingerprint) is str and r.fingerprint and type(r.status) is SagaStatus
        and type(r.state) is str and r.state and type(r.version) is int and r.version >= 0
        and type(r.cursor) is int and r.cursor >= 0 and _time(r.created_at)
        and _time(r.updated_at) and _maybe_time(r.finished_at) and _maybe_time(r.wake_at)
        and _maybe_time(r.deadline_at) and _maybe_time(r.compensation_deadline_at)
        and (r.error is None or isinstance(r.error, SagaflowError))
        and (r.resolution is None or r.status is SagaStatus.FAILED)
        and type(r.signal_marks) is dict
        and (r.business_key is None or (type(r.business_key) is str and r.business_key))
    ):  # fmt: skip
        return False
    if r.undo or r.failures or r.resolution is not None or r.waiting is not None or (
        r.signal_marks
    ):
        return False  # seldom: the detailed checks
    times: list[Any] = []
    for s in r.steps:
        name, status, attempts, started, finished, error, timed_out, comp, comp_attempts, \
            comp_started, comp_finished, comp_error, wake, first, items = _step_values(s)
        if not (
            type(name) is str and name and type(status) is StepStatus
            and type(first) is int and first >= 0 and type(items) is int and items >= 0
            and type(attempts) is int and attempts >= 0 and type(timed_out) is bool
            and type(comp) is CompensationStatus and type(comp_attempts) is int
            and comp_attempts >= 0 and (error is None or type(error) is str)
            and (comp_error is None or type(comp_error) is str)
        ):  # fmt: skip
            return False
        times += (started, finished, comp_started, comp_finished, wake)
    # Every timestamp a finite float (or none): their sum is a finite float. (A sum that
    # overflows sends the record to the detailed checks, which pass each one.)
    found = [t for t in times if t is not None]
    if not all(type(t) is float or type(t) is int for t in found) or sum(found) - sum(found):
        return False
    return all(len(e) == 3 and type(e[0]) is type(e[1]) is type(e[2]) is str for e in r.path)


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool, not a float that happens to be whole


def _is_time(value: Any) -> bool:
    return type(value) in (float, int) and math.isfinite(value)


def _check_types(r: SagaRecord) -> None:
    for column in ("saga_id", "saga_name", "fingerprint"):
        value = getattr(r, column)
        if type(value) is not str or not value:
            raise _Bad(column, value, "a non-empty string is expected")
    if not isinstance(r.status, SagaStatus):
        raise _Bad("status", r.status, "one of " + ", ".join(s.value for s in SagaStatus))
    if type(r.state) is not str or not r.state:
        raise _Bad("state", r.state, "a state name is expected")
    if not _is_int(r.version) or r.version < 0:
        raise _Bad("version", r.version, "a version (an int >= 0) is expected")
    if not _is_int(r.cursor) or r.cursor < 0:
        raise _Bad("cursor", r.cursor, "a step position (an int >= 0) is expected")
    for column in _TIMES:
        value = getattr(r, column)
        if not _is_time(value):
            raise _Bad(column, value, "a time (a finite number of seconds) is expected")
    for column in _MAYBE_TIMES:
        value = getattr(r, column)
        if value is not None and not _is_time(value):
            raise _Bad(column, value, "a time (a finite number of seconds) or null is expected")
    undo = r.undo
    if not all(_is_int(j) and j >= 0 for j in undo):
        raise _Bad("undo", undo, "a list of step indices (ints >= 0) is expected")
    if len(set(undo)) != len(undo):
        raise _Bad("undo", undo, "each step index once is expected")
    if r.error is not None and not isinstance(r.error, SagaflowError):
        raise _Bad("error", r.error, "a sagaflow error is expected")
    failures = r.failures
    if not all(type(k) is str and type(v) is str for k, v in failures.items()):
        raise _Bad("failures", failures, "a map of step name to error text is expected")
    if r.resolution is not None:
        if type(r.resolution) is not str or not r.resolution.strip():
            raise _Bad("resolution", r.resolution, "an operator's note (text) is expected")
        if r.status is not SagaStatus.FAILED:
            raise _Bad("resolution", r.resolution,
                       f"only a FAILED saga is resolved, this one is {r.status.value}")
    for edge in r.path:
        if len(edge) != 3 or not all(type(x) is str for x in edge):
            raise _Bad("path", edge, "edges (source, trigger, destination) are expected")
    _check_wait(r)
    for i, step in enumerate(r.steps):
        problem = _step_problem(step)
        if problem is not None:
            raise _Bad("steps", step, f"step record #{i}: {problem}")


def _check_wait(r: SagaRecord) -> None:
    """The wait columns: what a saga parks on, the marks of the signals it was given,
    its business key."""
    waiting = r.waiting
    if waiting is not None:
        if type(waiting) is not str:
            raise _Bad("waiting", waiting, "a signal name, '' (a timer) or null is expected")
        if r.status is not SagaStatus.RUNNING and r.status is not SagaStatus.COMPENSATING:
            raise _Bad("waiting", waiting,
                       "only a RUNNING saga (at a wait) or a COMPENSATING one (a choreography "
                       f"between its events) is parked, this one is {r.status.value}")
        if not waiting and r.wake_at is None:
            raise _Bad("waiting", waiting, "a timer ('') with no wake time (wake_at) never wakes")
    marks = r.signal_marks
    if type(marks) is not dict or not all(
        type(k) is str and k and type(v) is int and v >= 0 for k, v in marks.items()
    ):
        raise _Bad("signal_marks", marks,
                   "a map of signal name to arrival number (an int >= 0) is expected")
    key = r.business_key
    if key is not None and (type(key) is not str or not key):
        raise _Bad("business_key", key, "a business key (non-empty text) or null is expected")


def _step_problem(s: StepRecord) -> str | None:
    if type(s.name) is not str or not s.name:
        return "its name is not a step name"
    if not isinstance(s.status, StepStatus) or not isinstance(s.compensation, CompensationStatus):
        return "its status is not one a step has"
    if not _is_int(s.attempts) or s.attempts < 0 or not _is_int(s.compensation_attempts) or (
        s.compensation_attempts < 0
    ):
        return "its attempts are not a count"
    for name in _STEP_TIMES:
        value = getattr(s, name)
        if value is not None and not _is_time(value):
            return f"its {name} is not a time"
    if not _is_int(s.first_item) or s.first_item < 0 or not _is_int(s.items) or s.items < 0:
        return "its first_item and items are not positions"
    if type(s.timed_out) is not bool:
        return "its timed_out is not a boolean"
    for value in (s.error, s.compensation_error):
        if value is not None and type(value) is not str:
            return "its error is not text"
    return None


def _check_against(r: SagaRecord, spec: SagaSpec) -> None:
    shape = _shape(spec)
    names = shape.names
    n = len(names)
    if r.saga_name != spec.name:
        raise _Bad("saga_name", r.saga_name, f"the class given is saga {spec.name!r}")
    steps = r.steps
    if [s.name for s in steps[:n]] != names:
        raise _Bad("steps", [s.name for s in steps],
                   f"saga {spec.name!r} has {n} steps: {', '.join(names)}")
    if len(steps) > n or any(s.items for s in steps):
        _check_items(r, shape, spec.name)
    state = r.state
    if state not in shape.states:
        raise _Bad("state", state, f"not a state of saga {spec.name!r}'s machine")
    _check_undo(r, shape)
    status = r.status
    cursor = r.cursor
    if status is SagaStatus.NOT_STARTED:
        expected = NOT_STARTED
    elif status is SagaStatus.RUNNING:
        if cursor >= n:
            raise _Bad("cursor", cursor, f"a running saga is at one of its {n} steps (0-{n - 1})")
        expected = shape.states_at[cursor]
    elif status is SagaStatus.COMPENSATING:
        if cursor >= len(r.undo):
            raise _Bad("cursor", cursor,
                       f"a compensating saga is at one of its {len(r.undo)} undo positions")
        expected = compensation_state(shape.states_at[r.undo[cursor]])
    else:
        if cursor > max(n, len(r.undo)) or (
            status is SagaStatus.FAILED and not r.failures and cursor >= n
        ):
            raise _Bad("cursor", cursor, f"out of range for a {status.value} saga of {n} steps")
        expected = _ENDS[status]
    if state != expected:
        raise _Bad("state", state, f"a {status.value} saga at this cursor is in {expected!r}")
    for name in r.failures:
        if not _undoable(name, r, shape):
            raise _Bad("failures", r.failures, f"{name!r} is not a step with a compensation")
    transitions = shape.transitions
    for edge in r.path:
        if edge not in transitions:
            raise _Bad("path", edge, f"not a transition of saga {spec.name!r}'s machine")


def _check_items(r: SagaRecord, shape: _Shape, saga: str) -> None:
    """The item records of the fan-outs: after the saga's own step records, each fan-out
    step's ``first_item``/``items`` covering its own, in step order, none left over."""
    steps = r.steps
    names = shape.names
    n = len(names)
    at = n  # where the next fan-out's items are expected
    for i in range(n):
        s = steps[i]
        count = s.items
        if not count:
            continue
        name = names[i]
        if i not in shape.fan_outs:
            raise _Bad("steps", s, f"step {name!r} is not a fan-out: it has no item records")
        if s.first_item != at or at + count > len(steps):
            raise _Bad("steps", s, f"the {count} item records of fan-out {name!r} are "
                       f"expected from position {at}, after the saga's steps and the items "
                       f"before, among the {len(steps)} records")
        for item in steps[at:at + count]:
            if not (item.name.startswith(name + "[") and item.name.endswith("]")):
                raise _Bad("steps", item.name,
                           f"an item record of fan-out {name!r} is named {name}[KEY]")
            if item.items:
                raise _Bad("steps", item, f"an item of fan-out {name!r} has no items itself")
        at += count
    if at != len(steps):
        raise _Bad("steps", [s.name for s in steps[at:]],
                   f"saga {saga!r} has {n} steps; the records after them belong to no "
                   "fan-out's items")


def _check_undo(r: SagaRecord, shape: _Shape) -> None:
    """The undo list: steps with a compensation, newest first, except that the members
    of one parallel group may come in any order among themselves (they are undone as a
    block, the last to complete first)."""
    undo = r.undo
    n = len(shape.names)
    for j in undo:
        if j >= n or j not in shape.compensatable:
            raise _Bad("undo", undo, f"step index {j} is not a step with a compensation")
    group_of = shape.group_of
    for a, b in itertools.pairwise(undo):
        if a <= b and (group_of[a] is None or group_of[a] != group_of[b]):
            raise _Bad("undo", undo, "step indices newest first (decreasing) are expected; "
                       "only the members of one parallel group may come in any order")


def _undoable(name: str, r: SagaRecord, shape: _Shape) -> bool:
    """Whether ``name`` is a step with a compensation, or an item of a fan-out with one."""
    names = shape.names
    if name in names:
        return names.index(name) in shape.compensatable
    for i in shape.fan_outs:
        s = r.steps[i]
        if i in shape.compensatable and any(
            item.name == name for item in r.steps[s.first_item:s.first_item + s.items]
        ):
            return True
    return False

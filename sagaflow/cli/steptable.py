"""The steps of a stored saga as ``sagaflow sagas show`` prints them: one row per step;
a parallel group's members indented under a row naming the group, a fan-out's items
indented under the fan-out step. A saga without groups or fan-outs prints as it always
has (one row per step, numbered from 1)."""

from __future__ import annotations

from ..records import CompensationStatus, SagaRecord, StepRecord
from ..spec import SagaSpec
from .text import columns, utc

__all__ = ["step_lines"]

_HEADER = ["#", "step", "kind", "status", "attempts", "compensation", "attempts", "error"]


def step_lines(record: SagaRecord, spec: SagaSpec | None) -> list[str]:
    """The steps table of ``record`` (``spec``, when known, adds kinds and groups)."""
    steps = record.steps
    known = spec is not None and spec.fingerprint == record.fingerprint
    groups = spec.groups if known and spec is not None else ()
    rows = [list(_HEADER)]
    own = len(spec.steps) if known and spec is not None else _own_steps(steps)
    for i, s in enumerate(steps[:own]):
        kind = spec.steps[i].kind.value if spec is not None and i < len(spec.steps) else "?"
        group = spec.steps[i].group if known and spec is not None else None
        if group is not None:
            g = groups[group]
            if i == g.first:
                limit = "all at once" if g.limit is None else f"{g.limit} at once"
                rows.append(["", f"{g.name}:", "parallel", f"{len(g.members)} members, "
                             f"{limit}, compensate {g.compensation.value}", "", "", "", ""])
            rows.append(_row(str(i + 1), "  " + s.name, kind, s))
            continue
        each = spec.steps[i].each if known and spec is not None else None
        if each is not None:
            kind += f", each {each.field}"
        rows.append(_row(str(i + 1), s.name, kind, s))
        if s.items and s.first_item + s.items <= len(steps):
            for k, item in enumerate(steps[s.first_item:s.first_item + s.items]):
                rows.append(_row(f"{i + 1}.{k + 1}", "  " + item.name, "item", item))
    return columns(rows, indent="  ")


def _own_steps(steps: list[StepRecord]) -> int:
    """Without the spec: how many records are the saga's steps (the items, appended
    after them, are those the fan-outs' ``first_item`` point at)."""
    firsts = [s.first_item for s in steps if s.items]
    return min(firsts) if firsts else len(steps)


def _row(number: str, name: str, kind: str, s: StepRecord) -> list[str]:
    comp = s.compensation.value if s.compensation is not CompensationStatus.NOT_NEEDED else "-"
    errors = [e for e in (s.error, s.compensation_error) if e]
    status = s.status.value + (" (timed out)" if s.timed_out else "")
    if s.wake_at is not None:
        status += f" (retry at {utc(s.wake_at)})"
    return [
        number, name, kind, status, str(s.attempts), comp,
        str(s.compensation_attempts) if comp != "-" else "", " / ".join(errors) or "",
    ]

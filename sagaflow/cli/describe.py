"""A stored saga as an operator reads it: record, steps, incident, history, what to do next."""

from __future__ import annotations

import json
from collections.abc import Sequence

import click

from .._choreodefs import CHOREOGRAPHY_ATTRIBUTE
from ..codec import default_codec
from ..events import LifecycleEvent
from ..records import (
    SagaRecord,
    SagaResult,
    SagaStatus,
    Signal,
    error_type,
    outcome,
)
from ..runner._handoff import PARKED, phase_deadline, retry_at_of
from ..spec import SagaSpec
from .steptable import step_lines
from .text import columns, utc

__all__ = ["Printer", "describe_record", "print_outcome"]


def describe_record(
    record: SagaRecord,
    spec: SagaSpec | None,
    *,
    quarantined: str | None = None,
    signals: Sequence[Signal] = (),
) -> list[str]:
    """The record's lines; ``spec`` (when the class is known) adds step kinds and data;
    ``quarantined`` is why the store set the saga aside, if it did; ``signals`` are
    those stored for it (each marked delivered or pending)."""
    duration = ""
    if record.finished_at is not None:
        duration = f" in {record.finished_at - record.created_at:.3f}s"
    lines = [
        f"saga {record.saga_id} ({record.saga_name}): {record.status.value}{duration}",
        f"  outcome     "
        f"{outcome(record.status, error_type(record.error), record.waiting is not None)}",
        f"  state       {record.state}",
        f"  created     {utc(record.created_at)}",
        f"  updated     {utc(record.updated_at)}",
        f"  finished    {utc(record.finished_at)}",
        f"  fingerprint {record.fingerprint}"
        + ("" if spec is None or spec.fingerprint == record.fingerprint
           else f" (the class now has {spec.fingerprint}: its definition changed)"),
    ]
    if record.deadline_at is not None:
        lines.append(f"  deadline    {utc(record.deadline_at)}")
    if record.waiting == PARKED:
        lines += _parked(record, spec)
    elif record.waiting is not None:
        what = f"signal {record.waiting!r}" if record.waiting else "its timer"
        until = "" if record.wake_at is None else f" until {utc(record.wake_at)}"
        lines.append(f"  waiting     for {what}{until}")
    elif record.wake_at is not None:
        lines.append(f"  retry at    {utc(record.wake_at)} (waiting to retry)")
    if record.business_key is not None:
        lines.append(f"  key         {record.business_key}")
    lines.append(f"  data        {_data_json(record, spec)}")
    if record.error is not None:
        lines.append(f"  error       {type(record.error).__name__}: {record.error}")
    if quarantined is not None:
        lines.append(f"  quarantined {quarantined}")

    lines += ["", "steps:"]
    lines += step_lines(record, spec)

    if record.failures:
        lines += ["", "incident: could not be undone, finish by hand:"]
        lines += [f"  {step}: {error}" for step, error in record.failures.items()]
    if record.resolution is not None:
        lines += ["", f"resolution: {record.resolution}"]

    if signals:
        lines += ["", f"signals ({len(signals)}):"]
        rows = [["#", "signal", "id", "at (UTC)", ""]]
        for g in signals:
            taken = g.seq <= record.signal_marks.get(g.name, 0)
            left = "pending" if not record.status.is_terminal else "not delivered"
            rows.append([str(g.seq), g.name, g.signal_id, utc(g.at),
                         "delivered" if taken else left])
        lines += columns(rows, indent="  ")

    lines += ["", f"history ({len(record.history)} events):"]
    lines += ["  " + _event_line(e, record.created_at) for e in record.history]
    if record.events:
        lines += ["", f"domain events ({len(record.events)}):"]
        lines += [f"  {e!r}" for e in record.events]

    hint = _next_steps(record, quarantined)
    if hint:
        lines += ["", f"next: {hint}"]
    return lines


def print_outcome(verb: str, result: SagaResult) -> None:
    """One line: what the operator's ``verb`` left the saga as."""
    click.echo(
        f"{verb}: saga {result.saga_id} ({result.saga_name}) is now {result.status.value}"
        + (f"; resolution: {result.resolution}" if result.resolution else "")
    )


class Printer:
    """A lifecycle listener that prints each event of the sagas acted on (a resumed
    saga's listeners hear only what happens from now on)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def __call__(self, event: LifecycleEvent) -> None:
        if self.enabled:
            click.echo(f"  {event.saga_id}: {event.describe()}")


def _event_line(event: LifecycleEvent, start: float) -> str:
    return f"{utc(event.at)}  +{event.at - start:.3f}s  {event.describe()}"


def _parked(record: SagaRecord, spec: SagaSpec | None) -> list[str]:
    """What a parked choreographed instance waits for (``waiting == PARKED``, not a
    signal): the next event for the participant of its step, or while COMPENSATING the
    compensation events; its phase's deadline (none: nothing ever wakes it), and a
    retry's time if one waits."""
    compensating = record.status is SagaStatus.COMPENSATING
    chor = None if spec is None else spec.cls.__dict__.get(CHOREOGRAPHY_ATTRIBUTE)
    if chor is None:  # the class is not known here: what the record says
        what = "compensation events" if compensating else "its next event"
    else:
        i = record.undo[record.cursor] if compensating else record.cursor
        role = next(r for r in chor.roles if r.index == i)
        if compensating:
            names = ", ".join(t.__name__ for t in chor.compensation_triggers)
            what = (f"compensation events ({names}): participant {role.participant!r} "
                    f"undoes step {role.name!r}")
        else:
            what = (f"event {role.trigger.__name__} for participant {role.participant!r} "
                    f"(step {role.name!r})")
    deadline = phase_deadline(record)
    kind = "compensation deadline" if compensating else "deadline"
    lines = [f"  waiting     for {what} (choreography)"]
    lines.append(
        f"              until its {kind} {utc(deadline)}" if deadline is not None
        else f"              no {kind}: nothing wakes it but those events"
    )
    retry_at = retry_at_of(record)
    if retry_at is not None:
        lines.append(f"  retry at    {utc(retry_at)} (its participant retries the step)")
    return lines


def _data_json(record: SagaRecord, spec: SagaSpec | None) -> str:
    # the instance as the store keeps it; without its class, the JSON as stored
    data = record.data if spec is None else json.loads(default_codec.dump_data(record))
    return json.dumps(data, default=str, ensure_ascii=False)


def _next_steps(record: SagaRecord, quarantined: str | None) -> str:
    sid = record.saga_id
    if quarantined is not None:
        return (
            "recovery and workers leave it alone: fix what made it unreadable, then "
            f"sagaflow sagas unquarantine {sid}"
        )
    if record.status is SagaStatus.FAILED and record.resolution is None:
        return (
            f"sagaflow sagas retry {sid}  (run what failed again), or "
            f"sagaflow sagas resolve {sid} --note \"what was done by hand\""
        )
    if not record.status.is_terminal:
        cancel = f", or sagaflow sagas cancel {sid} (compensate)" if (
            record.status is SagaStatus.RUNNING) else ""
        return (
            "running, or its process died: `sagaflow recover` resumes it when no process "
            f"runs it{cancel}"
        )
    return ""

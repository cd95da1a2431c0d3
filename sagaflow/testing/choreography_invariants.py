"""The invariants of a choreography run (:data:`CHOREOGRAPHY_INVARIANTS`), checked by
:func:`check_choreography` on what a run did (a :class:`~sagaflow.testing.ChoreographyRun`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from ..choreography import choreography_of as _chor_of
from ..context import Direction
from ..records import SagaStatus
from .choreography import (
    COMPENSATE,
    FORWARD,
    WORKER,
    ChoreoCall,
    ChoreographyTrace,
    Parked,
)
from .invariants import Violation

__all__ = [
    "CHOREOGRAPHY_INVARIANTS",
    "ChoreographyViolation",
    "check_choreography",
]
# --- the invariants ----------------------------------------------------------------------

#: Every invariant :func:`check_choreography` checks, by number.
CHOREOGRAPHY_INVARIANTS: dict[int, str] = {
    1: "every instance ends terminal; one unfinished when the events stop is parked (a wake "
    "time set), waiting for an event the plan withheld, and its deadline compensates it "
    "(a compensating one of a flow with no compensation deadline stays parked)",
    2: "a plan where nothing goes wrong completes every instance, compensating nothing",
    3: "an instance that compensates has every step that took effect compensated exactly "
    "once, newest first, and none that did not (one cut short by a dying participant may "
    "be: its outcome is unknown); a completed one has nothing compensated",
    4: "no effect doubled: each instance's net effect is the quiet run's when it completed, "
    "none when it compensated",
    5: "every event an instance recorded is published under its outbox id, every "
    "publication of an id carries the same event, nothing else is published, and the "
    "outbox is empty at the end",
    6: "each call is made by its step's participant (a compensation: or the worker at the "
    "deadline), with one idempotency key per step and direction over every redelivery",
    7: "handlers only run, ignore (saying why) or pass on a message; a step fails only "
    "where the plan says",
}


class ChoreographyViolation(AssertionError):
    """A choreography run broke invariants; ``violations`` lists them, ``run`` is it."""

    def __init__(self, run: ChoreographyTrace, violations: Sequence[Violation]) -> None:
        self.run = run
        self.violations = tuple(violations)
        body = "\n".join(str(v) for v in self.violations)
        super().__init__(f"the choreography {run.spec.name} broke "
                         f"{len(self.violations)} invariant(s):\n{body}\n\n{run.describe()}")

    @property
    def numbers(self) -> list[int]:
        """The numbers of the broken invariants."""
        return sorted({v.number for v in self.violations})


def check_choreography(run: ChoreographyTrace, only: Iterable[int] | None = None) -> None:
    """Raise :class:`ChoreographyViolation` unless ``run`` keeps every invariant in
    :data:`CHOREOGRAPHY_INVARIANTS` (``only``: just these numbers)."""
    wanted = set(CHOREOGRAPHY_INVARIANTS) if only is None else set(only)
    found: list[Violation] = []
    for number, check in _CHECKS.items():
        if number in wanted:
            found += [Violation(number, CHOREOGRAPHY_INVARIANTS[number], d) for d in check(run)]
    if found:
        raise ChoreographyViolation(run, found)


def _left_for_an_operator(run: ChoreographyTrace, p: Parked) -> bool:
    """Whether ``p`` is a compensating instance parked for a withheld event with no time
    to wake at: its flow has no compensation deadline, so it waits (a stalled incident)
    for its event or an operator; nothing in the flow may end it."""
    return (p.status is SagaStatus.COMPENSATING and p.waiting is not None
            and p.wake_at is None and bool(p.withheld)
            and run.spec.compensation_deadline is None)


def _c1_settles(run: ChoreographyTrace) -> list[str]:
    out: list[str] = []
    left: set[str] = set()
    for p in run.parks:
        if _left_for_an_operator(run, p):
            left.add(p.saga_id)
        elif p.waiting is None or p.wake_at is None:
            out.append(f"{p.saga_id} is {p.status.value} when the events stop, but not parked "
                       f"(waiting={p.waiting!r}, wake_at={p.wake_at!r}): nothing would wake it")
        elif not p.withheld:
            out.append(f"{p.saga_id} is {p.status.value} when the events stop, though the "
                       "plan withheld none of its messages")
    for sid, r in run.records.items():
        if not r.status.is_terminal and sid not in left:
            out.append(f"{sid} ends {r.status.value} after {run.deadline_rounds} passes of "
                       "its deadline")
    for e in run.case.starts:
        sid = _chor_of(run.case.flow).saga_id(run.case.correlation(e))
        if sid not in run.records:
            out.append(f"{sid} was never created")
    return list(dict.fromkeys(out))  # once, however many times the clock passed


def _c2_quiet(run: ChoreographyTrace) -> list[str]:
    if not run.plan.is_quiet or run.case.allow_step_errors:
        return []
    return [f"{sid} ends {r.status.value} under a plan where nothing goes wrong"
            for sid, r in run.records.items() if r.status is not SagaStatus.COMPLETED]


def _by_instance(run: ChoreographyTrace) -> dict[str, list[ChoreoCall]]:
    out: dict[str, list[ChoreoCall]] = {}
    for c in run.calls:
        out.setdefault(c.saga_id, []).append(c)
    return out


def _c3_compensation(run: ChoreographyTrace) -> list[str]:
    out = []
    calls = _by_instance(run)
    for sid, r in run.records.items():
        mine = calls.get(sid, [])
        undone = [c.step for c in mine if c.direction is COMPENSATE and c.ok]
        if r.status is SagaStatus.COMPLETED:
            if undone:
                out.append(f"{sid} COMPLETED, yet compensated {undone}")
            continue
        if r.status is not SagaStatus.COMPENSATED:
            continue
        took = {c.step for c in mine if c.direction is FORWARD and c.effect}
        # a call its participant died in, or one still running when its timeout gave up
        # on it, may have taken effect, as far as sagaflow knows
        unknown = {c.step for c in mine if c.direction is FORWARD and (
            c.injected.startswith("crash") or (not c.ok and c.error is None))} - took
        order = [s.name for s in reversed(run.spec.steps) if s.compensation is not None]
        expected = [n for n in order if n in took]
        allowed = [n for n in order if n in took or n in unknown]
        if [n for n in undone if n in took] != expected or any(
            n not in allowed for n in undone
        ) or undone != [n for n in allowed if n in undone]:
            maybe = f" (and maybe {sorted(unknown)}, cut short)" if unknown else ""
            out.append(f"{sid} COMPENSATED: the steps that took effect ({sorted(took)}){maybe} "
                       f"call for compensations {expected}, newest first, each once; it "
                       f"made {undone}")
    return out


def _c4_effects(run: ChoreographyTrace) -> list[str]:
    out = []
    chor = _chor_of(run.case.flow)
    for cid, (before, after, quiet) in run.effects.items():
        r = run.records.get(chor.saga_id(cid))
        if r is None:
            continue
        if r.status is SagaStatus.COMPENSATED and after != before:
            out.append(f"{cid} COMPENSATED but its effects went from {before!r} to {after!r}")
        elif r.status is SagaStatus.COMPLETED and quiet is not None and after != quiet:
            out.append(f"{cid} COMPLETED with effects {after!r}; the quiet run leaves {quiet!r}")
    return out


def _c5_outbox(run: ChoreographyTrace) -> list[str]:
    out = []
    expected = {f"{sid}:{i}": type(e).__name__ for sid, r in run.records.items()
                for i, e in enumerate(r.events)}
    bodies: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for p in run.published:
        if p.how == "start":
            continue
        bodies.setdefault(p.message_id, set()).add(p.body)
        if p.how == "relay":  # a republished one repeats a batch the relay died after
            counts[p.message_id] = counts.get(p.message_id, 0) + 1
    missing = sorted(set(expected) - set(bodies))
    extra = sorted(set(bodies) - set(expected))
    if missing:
        out.append(f"recorded events never published: {missing}")
    if extra:
        out.append(f"published, but no instance recorded them: {extra}")
    for mid, seen in bodies.items():
        if len(seen) > 1:
            out.append(f"{mid} was published with {len(seen)} different bodies")
    for mid, n in counts.items():
        if n != 1:
            out.append(f"the relay published {mid} {n} times (not after dying)")
    again = {p.message_id for p in run.published if p.how == "republished"}
    for t in sorted(run.plan.republished):
        if any(e == t for e in expected.values()) and not any(
            expected.get(m) == t for m in again
        ):
            out.append(f"the plan republishes {t}, but the relay never published it again")
    if run.pending_outbox:
        out.append(f"{run.pending_outbox} message(s) left in the outbox")
    return out


def _c6_who(run: ChoreographyTrace) -> list[str]:
    out = []
    roles = {r.name: r for r in _chor_of(run.case.flow).roles}
    keys: dict[tuple[str, str, Direction], set[str]] = {}
    for c in run.calls:
        keys.setdefault((c.saga_id, c.step, c.direction), set()).add(c.key)
        role = roles[c.step]
        allowed = {role.participant} | ({WORKER} if c.direction is COMPENSATE else set())
        if c.who not in allowed:
            out.append(f"call {c.seq} ({c.direction.value} {c.step} of {c.saga_id}) was made "
                       f"by {c.who}, not {role.participant}")
    for (sid, step, d), seen in keys.items():
        if len(seen) > 1:
            out.append(f"{d.value} {step} of {sid} ran under keys {sorted(seen)}")
    return out


def _c7_handlers(run: ChoreographyTrace) -> list[str]:
    out = [f"delivery {d.seq}: {d.participant} raised on {d.event} ({d.message_id}): {d.reason}"
           for d in run.deliveries if d.outcome == "error"]
    out += [f"delivery {d.seq}: {d.participant} dead-lettered {d.event}: {d.reason}"
            for d in run.deliveries if d.outcome == "dead-letter"]
    out += [f"delivery {d.seq}: {d.participant} ignored {d.event} without saying why"
            for d in run.deliveries if d.outcome == "ignored" and not d.reason]
    if not run.case.allow_step_errors:
        out += [f"call {c.seq}: {c.step} of {c.saga_id} failed on its own: {c.error!r}"
                for c in run.calls if c.error is not None and c.injected == "-"]
    return out


_CHECKS: dict[int, Callable[[ChoreographyTrace], list[str]]] = {
    1: _c1_settles, 2: _c2_quiet, 3: _c3_compensation, 4: _c4_effects, 5: _c5_outbox,
    6: _c6_who, 7: _c7_handlers,
}

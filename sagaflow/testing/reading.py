"""A run under test, read: what its calls, its lifecycle history and its result say happened.

:class:`Reading` derives the facts the invariants judge (which steps completed, were
skipped or ended unknown, where the forward steps stopped, which compensations the
outcomes call for and which ran, why a retry was the last); the invariants
(:mod:`~sagaflow.testing.invariants`) hold them to the rules.
"""

from __future__ import annotations

import math

from .. import events as ev
from ..context import Direction
from ..errors import SagaCancelled, SagaDeadlineExceeded, StepTimeout
from ..policy import backoff_delay
from ..records import SagaStatus
from ..spec import StepKind, StepSpec
from .trace import CallRecord, Trace

__all__ = ["Reading"]

FORWARD = Direction.FORWARD
#: what a call whose outcome is unknown reports
UNKNOWN = ("timeout", "cancelled", "cut")


class Reading:
    """What a run did, read from its calls, its history and its result.

    ``fwd`` / ``comp``: each step's forward calls and compensation calls, in order;
    ``skipped``, ``completed``, ``unknown`` (a call timed out or was cancelled: its
    outcome is unknown), ``guard_failed`` (failed before any call), ``expired`` (waits
    whose time ran out, with what followed: ``"continue"``, ``"compensate"``,
    ``"fail"``); ``stop``: the step where the forward steps stopped, if they did.
    """

    def __init__(self, run: Trace) -> None:
        self.run = run
        self.spec = spec = run.spec
        self.history = run.result.history
        self.fwd: dict[str, list[CallRecord]] = {s.name: [] for s in spec.steps}
        self.comp: dict[str, list[CallRecord]] = {s.name: [] for s in spec.steps}
        # by the record a call settles: a member's, an item's ("pick[a]")
        self.fwd_of: dict[str, list[CallRecord]] = {}
        self.comp_of: dict[str, list[CallRecord]] = {}
        for c in run.calls:
            (self.fwd if c.direction is FORWARD else self.comp)[c.step].append(c)
            (self.fwd_of if c.direction is FORWARD else self.comp_of).setdefault(
                c.record_name, []).append(c)
        #: whether the saga has parallel groups or fan-outs
        self.has_blocks = bool(spec.groups) or any(s.each is not None for s in spec.steps)
        self.skipped = {e.step for e in self.history if isinstance(e, ev.StepSkipped)}
        self.completed = {name for name, cs in self.fwd.items() if any(c.ok for c in cs)}
        self.unknown = {
            name
            for name, cs in self.fwd.items()
            if any(c.reported in UNKNOWN for c in cs)
        }
        #: records (members, items) whose outcome is unknown: a call timed out, was
        #: cancelled or cut off by a crash (it may have taken effect)
        self.unknown_records = {
            name for name, cs in self.fwd_of.items() if any(c.reported in UNKNOWN for c in cs)
        }
        self.completed_records = {
            name for name, cs in self.fwd_of.items() if any(c.ok for c in cs)
        }
        for s in spec.steps:
            if s.each is not None:  # a fan-out completed once all its items did
                self.completed.discard(s.name)
                if any(isinstance(e, ev.StepCompleted) and e.step == s.name
                       for e in self.history):
                    self.completed.add(s.name)
        self.guard_failed = {
            e.step
            for e in self.history
            if isinstance(e, ev.StepFailed) and e.step is not None and not self.fwd_of.get(e.step)
        }
        self.user_errors = [c for c in run.calls if c.user_error is not None]
        self.expired: dict[str, str] = {
            e.step: e.on_timeout
            for e in self.history
            if isinstance(e, ev.WaitExpired) and e.step is not None
        }
        self.continued = {name for name, how in self.expired.items() if how == "continue"}
        self._forward_end()

    # -- what the calls say happened ----------------------------------------------

    def _forward_end(self) -> None:
        """Where the forward steps stopped (``stop``), if they did, and why."""
        spec = self.spec
        done = self.completed | self.skipped | self.continued
        self.forward_done = all(s.name in done for s in spec.steps)
        self.stop: StepSpec | None = None
        if self.forward_done:
            return
        fwd_calls = [c for c in self.run.calls if c.direction is FORWARD]
        last = fwd_calls[-1] if fwd_calls else None
        if last is not None and not last.ok and last.step not in done:
            self.stop = spec.steps[last.index]
            return
        for s in spec.steps:  # nothing failed in a call: the deadline or a guard
            if s.name not in done:
                self.stop = s
                return

    @property
    def stopped_at_unknown_pivot(self) -> bool:
        """Whether the pivot stopped the saga with an unknown outcome (it timed out or
        was cancelled): then nothing is compensated and the saga ends FAILED."""
        stop = self.stop
        return stop is not None and stop.kind is StepKind.PIVOT and stop.name in self.unknown

    @property
    def stopped_by_failing_wait(self) -> bool:
        """Whether a wait whose time ran out stopped the saga with ``on_timeout='fail'``:
        then nothing is compensated and the saga ends FAILED."""
        stop = self.stop
        return stop is not None and self.expired.get(stop.name) == "fail"

    @property
    def compensating(self) -> bool:
        """Whether the calls' outcomes call for compensation."""
        if self.forward_done or self.stop is None:
            return False
        if not self.run.complete and self.run.result.status is SagaStatus.RUNNING:
            return False
        return (self.stop.kind is not StepKind.RETRIABLE and not self.stopped_at_unknown_pivot
                and not self.stopped_by_failing_wait)

    def expected_undo(self) -> list[str]:
        """The compensations the calls' outcomes call for, newest first."""
        assert self.stop is not None
        if self.stopped_at_unknown_pivot or self.stopped_by_failing_wait:
            return []
        return [
            s.name
            for s in reversed(self.spec.steps[: self.unit_end(self.stop) + 1])
            if s.compensation is not None and self.took_effect(s)
        ]

    def block_records(self, s: StepSpec) -> list[str]:
        """The records of ``s``'s calls: a fan-out's items, else its own."""
        if s.each is None:
            return [s.name]
        prefix = s.name + "["
        return [sr.name for sr in self.run.result.steps if sr.name.startswith(prefix)]

    def took_effect(self, s: StepSpec) -> bool:
        """Whether ``s`` (any of a fan-out's items) completed or may have taken effect."""
        if s.each is None:
            return s.name in self.completed or s.name in self.unknown
        done = self.completed_records | self.unknown_records
        return any(name in done for name in self.block_records(s))

    def unit_end(self, s: StepSpec) -> int:
        """The index of the last step of ``s``'s unit (its group's last member)."""
        return s.index if s.group is None else self.spec.groups[s.group].last

    def block_failed(self, name: str) -> bool:
        """Whether member (item) ``name`` was not run again because its block failed (it,
        or another member of its block, failed for good)."""
        unit = self.unit(name)
        if unit == name and self.spec.index.get(name) is not None and (
            self.spec.step(name).each is None
        ):
            return False  # not in a block
        return any(isinstance(e, (ev.StepFailed, ev.StepRejected)) and e.step is not None
                   and (e.step != name or "not run again" in (e.error or ""))
                   and self.unit(e.step) == unit for e in self.history)

    def unit_step(self, name: str) -> str:
        """The spec step a record name belongs to: ``"pick[a]"`` -> ``"pick"``."""
        head, bracket, _ = name.partition("[")
        return head if bracket and name.endswith("]") and head in self.spec.index else name

    def unit(self, name: str) -> str:
        """The unit (state) a step, member or item belongs to: its group, its fan-out."""
        step = self.unit_step(name)
        i = self.spec.index.get(step)
        return step if i is None else self.spec.state_of(i)

    def seen_undo(self) -> list[str]:
        """The compensations the history shows, in the order they ran."""
        order: list[str] = []
        for e in self.history:
            if isinstance(e, (ev.CompensationStarted, ev.CompensationFailed)) and (
                not order or order[-1] != e.step
            ):
                assert e.step is not None
                order.append(e.step)
        return order

    def planned_stop(self) -> tuple[int, str] | None:
        """The step where the plan stops the forward steps, if it does and it is reached."""
        plan, spec = self.run.plan, self.spec
        if plan is None:
            return None
        stops: list[tuple[int, str]] = []
        named = None if plan.step is None else spec.step(self.unit_step(plan.step))
        if named is not None and named.each is not None and not (
            plan.step in self.block_records(named) or (
                plan.step == named.name and self.block_records(named))
        ):
            named = None  # a fan-out with no such item (or no items at all)
        if named is not None and plan.step not in self.skipped and (
            plan.step not in self.expired
        ):
            stops.append((named.index, f"the plan fails {plan.step!r} for good"))
        d = plan.deadline
        if d is not None and spec.deadline is not None:
            for s in spec.steps[spec.index[d.step]:]:
                if s.kind is StepKind.RETRIABLE:
                    break  # the deadline does not stop retriable steps
                if d.during and s.name in self.skipped:
                    continue
                when = "while" if d.during else "before"
                stops.append((s.index, f"the plan passes the deadline {when} {s.name!r} runs"))
                break
        return min(stops) if stops else None

    def deadline_cut(self) -> bool:
        """Whether the deadline stopped the forward steps (not the plan's failures)."""
        error = self.run.result.error
        reason = getattr(error, "reason", None)
        if isinstance(error, SagaDeadlineExceeded) or isinstance(reason, SagaDeadlineExceeded):
            return True
        return self.stop is not None and (
            self.reason_to_give_up(self.stop, FORWARD) == "deadline"
        )

    def reason_to_give_up(self, s: StepSpec, direction: Direction) -> str | None:
        """Why the last call of ``s`` in ``direction`` was its last, if it failed."""
        calls = (self.fwd if direction is FORWARD else self.comp)[s.name]
        if not calls or calls[-1].ok:
            return None
        last = calls[-1]
        policy = s.retry if direction is FORWARD else s.compensation_retry
        if last.reported == "cancelled":
            return "cancelled"
        if direction is FORWARD and last.rejected:
            return "rejected"  # a business "no" is never retried
        outcome = self.run.result.error
        if isinstance(outcome, SagaCancelled) or isinstance(
            getattr(outcome, "reason", None), SagaCancelled
        ):
            return "cancelled"  # while the retry waited
        if last.attempt >= policy.attempts:
            return "budget"
        error = last.error if last.reported == "error" else StepTimeout(s.index, s.name, 0)
        if error is None or not policy.is_retryable(error):
            return "not retryable"
        if direction is FORWARD:
            limit = self.run.deadline_at if s.kind is not StepKind.RETRIABLE else None
        else:
            limit = self.run.compensation_deadline_at
        if limit is not None:
            if self.time_after_retry(s, direction, last.attempt) >= limit - 1e-6:
                return "deadline"  # the deadline passed while the retry waited
            if last.reported == "timeout" and last.timeout is not None and (
                last.at + last.timeout >= limit - 1e-6
            ):
                return "deadline"
            end = last.ended if last.ended is not None else last.at
            if end + backoff_delay(policy, last.attempt, self.rand()) >= limit - 1e-9:
                return "deadline"
        return None

    def time_after_retry(self, s: StepSpec, direction: Direction, attempt: int) -> float:
        """When the run next acted after scheduling retry ``attempt + 1`` (or -inf)."""
        kind = ev.StepRetrying if direction is FORWARD else ev.CompensationRetrying
        history = self.history
        for i, e in enumerate(history):
            if isinstance(e, kind) and e.step == s.name and e.attempt == attempt:
                return history[i + 1].at if i + 1 < len(history) else -math.inf
        return -math.inf

    def rand(self) -> float:
        """The jitter draw the run used (0 when it was not fixed)."""
        return 0.0 if self.run.rand is None else self.run.rand

    def undo_context(self, step: str) -> str:
        """What a compensation of ``step`` had to undo, in a sentence."""
        calls = self.fwd[step]
        if not calls:
            return "Its step never ran."
        last = calls[-1]
        if last.ok:
            return "Its step had completed."
        if last.reported in ("timeout", "cancelled"):
            took = "after taking effect" if last.ran_user and last.user_error is None else (
                "before taking effect: there was nothing to undo"
            )
            return f"Its step {'timed out' if last.reported == 'timeout' else 'was cancelled'}" \
                   f" {took}."
        return "Its step had failed."

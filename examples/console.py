"""The demo's console: a lifecycle listener that prints a run so a person reads it at a glance.

In the spirit of seed 001's logs: ``step n/N`` with what each step produced, retries with
their delays, the rollback with its compensations in order, then the final status, the
duration and the domain events. :class:`Demo` wires it to orchestrators on virtual time
and prints one scenario after another.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import attrs

from sagaflow import (
    CompensationError,
    CompensationStatus,
    Orchestrator,
    SagaResult,
    SagaSpec,
    SagaStatus,
    StepError,
    StepKind,
    StepStatus,
    events,
    spec_of,
)
from sagaflow.clock import duration
from sagaflow.spec import CompensationOrder
from sagaflow.stores import Store
from sagaflow.testing import VirtualClock

from ._support import BlockingStore, LoopClock

__all__ = ["Console", "Demo", "events_line", "fmt", "operator_notes", "outcome", "step_of"]

Out = Callable[[str], None]


def fmt(value: Any) -> str:
    """A value as a person writes it: money with two decimals, no quotes on text."""
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def _fields(obj: object) -> dict[str, Any]:
    """An attrs instance's fields by name (saga classes and events are attrs classes)."""
    cls: Any = type(obj)
    return {f.name: getattr(obj, f.name) for f in attrs.fields(cls)}


def events_line(domain_events: tuple[Any, ...], width: int = 110) -> str:
    """Domain events in order, with their values when that fits on a line."""
    full = " → ".join(_event_text(e) for e in domain_events)
    if len(full) <= width:
        return full
    return " → ".join(type(e).__name__ for e in domain_events)


def _event_text(event: object) -> str:
    if not attrs.has(type(event)):
        return type(event).__name__
    return f"{type(event).__name__}({', '.join(fmt(v) for v in _fields(event).values())})"


class Console:
    """A sync lifecycle listener that prints each run's progress, one line per outcome."""

    def __init__(self, out: Out = print) -> None:
        self.out = out
        self.muted = False
        self.orchestrators: list[Orchestrator] = []
        self._owner: dict[str, Orchestrator] = {}
        self._seen: dict[str, dict[str, Any]] = {}
        self._plan: dict[str, list[str]] = {}

    def _current(self, saga_id: str) -> tuple[object, Orchestrator] | None:
        """The saga's data as its store has it now, and the orchestrator running it.

        Read afresh each time: a durable store hands back a decoded copy, and the
        listener is told of an event only once the record with it is saved.
        """
        owner = self._owner.get(saga_id)
        for orch in [owner] if owner is not None else self.orchestrators:
            result = orch.get(saga_id)
            if result is not None:
                if owner is None:
                    self._owner[saga_id] = orch
                    self._seen[saga_id] = _fields(result.data)
                return result.data, orch
        return None

    def __call__(self, event: events.LifecycleEvent) -> None:
        if self.muted:
            return
        found = self._current(event.saga_id)
        if found is None:
            return
        saga, orch = found
        line = self._line(spec_of(saga), saga, orch, event)
        if line:
            self.out("   " + line)

    def _line(
        self, spec: SagaSpec, saga: object, orch: Orchestrator, e: events.LifecycleEvent
    ) -> str | None:
        n = len(spec.steps)
        if e.step is not None:
            s = spec.step(step_of(e.step))  # a fan-out's item: its step's spec
            where = f"step {s.index + 1}/{n} {e.step}"
        if isinstance(e, events.WaitStarted):
            if s.wait is None or s.wait.signal is None:
                until = time.strftime("%H:%M:%S", time.localtime(e.until or 0))
                return f"{where} ⏸ parked until {until} (a durable timer)"
            payload = f" ({s.wait.payload.__name__})" if s.wait.payload is not None else ""
            return (f"{where} ⏸ parked: waits up to {duration(s.wait.timeout or 0)} for "
                    f"signal '{s.wait.signal}'{payload}")
        if isinstance(e, events.WaitExpired):
            return (f"{where} ⏱ no signal '{e.signal}' within "
                    f"{duration(s.wait.timeout or 0) if s.wait else '?'}: {e.on_timeout}")
        if e.step is not None and s.each is not None and e.step == s.name and isinstance(
                e, events.StepCompleted | events.StepFailed):  # the fan-out as a whole
            if isinstance(e, events.StepCompleted):
                return f"{where} ✓ every item"
            return f"{where} ✗ stopped: no new item starts; the done and unknown are undone"
        if isinstance(e, events.StepRejected):
            return f"{where} ✗ rejected: {e.error}"
        if isinstance(e, events.StepCompleted):
            tries = f" (attempt {e.attempt}/{s.retry.attempts})" if e.attempt > 1 else ""
            if s.wait is not None:
                tries = " timer fired" if s.wait.signal is None else (
                    f" signal '{s.wait.signal}' received")
            return f"{where} ✓{tries}{self._produced(e.saga_id, saga)}"
        if isinstance(e, events.StepSkipped):
            return f"{where} - skipped ({s.guard_name} is false)"
        if isinstance(e, events.StepRetrying):
            return (
                f"{where} ✗ attempt {e.attempt}/{s.retry.attempts}: {e.error}; "
                f"retrying in {e.delay:.3g}s"
            )
        if isinstance(e, events.StepFailed):
            if e.timed_out:
                error = e.error or ""
                if "deadline" in error:
                    why = f"the saga's {spec.deadline:g}s deadline passed"
                elif "cancelled" in error:
                    why = "cancelled"
                else:
                    why = f"timed out after {s.timeout:g}s"
                line = f"{where} ⏱ {why}: outcome unknown"
                if s.compensation is not None:
                    line += f", so {s.compensation_name} runs too"
                return line
            if e.attempt > 1:
                return f"{where} ✗ failed for good after {e.attempt} attempts: {e.error}"
            return f"{where} ✗ {e.error}"
        if isinstance(e, events.CompensationStarted):
            plan = self._plan.get(e.saga_id)
            if plan is None:
                result = orch.get(e.saga_id)
                plan = [] if result is None else _undo_plan(spec, result)
                self._plan[e.saga_id] = plan
                return (f"↩ rolling back {len(plan)} step(s), newest first: "
                        f"{_plan_text(spec, plan)}")
            return None
        if isinstance(e, events.CompensationRetrying | events.CompensationCompleted
                      | events.CompensationFailed):
            plan = self._plan.get(e.saga_id, [])
            k = plan.index(e.step) + 1 if e.step in plan else 0
            head = f"compensation {k}/{len(plan)} {s.compensation_name} (undoes {e.step})"
            most = s.compensation_retry.attempts
            if isinstance(e, events.CompensationRetrying):
                return (
                    f"{head} ✗ attempt {e.attempt}/{most}: {e.error}; "
                    f"retrying in {e.delay:.3g}s"
                )
            if isinstance(e, events.CompensationFailed):
                return f"{head} ✗ failed for good after {e.attempt} attempt(s): {e.error}"
            done = f" (attempt {e.attempt}/{most})" if e.attempt > 1 else ""
            return f"{head} ✓{done}{self._produced(e.saga_id, saga)}"
        return None

    def _produced(self, saga_id: str, saga: object) -> str:
        """The saga's fields that the step just set: what it produced."""
        now = _fields(saga)
        before = self._seen.get(saga_id, {})
        self._seen[saga_id] = now
        changed = [f"{k}={fmt(v)}" for k, v in now.items() if before.get(k) != v]
        return "   " + ", ".join(changed) if changed else ""


def step_of(name: str) -> str:
    """The step a record's name belongs to: ``pay[P-1]`` (a fan-out's item) is ``pay``'s."""
    return name.split("[", 1)[0]


def _undo_plan(spec: SagaSpec, result: SagaResult) -> list[str]:
    """The steps being compensated, newest first (what the record has scheduled)."""
    planned = [r.name for r in _undoable(spec, result)]
    return sorted(planned, key=lambda name: -spec.step(step_of(name)).index)


def _undoable(spec: SagaSpec, result: SagaResult) -> list[Any]:
    """The records with a compensation to run or run: not a fan-out's own record (its
    items are what is undone)."""
    return [
        r for r in result.steps
        if r.compensation is not CompensationStatus.NOT_NEEDED
        and not (r.name in spec.index and spec.step(r.name).each is not None)
    ]


def _concurrent_block(spec: SagaSpec, name: str) -> str | None:
    """The block ``name`` is undone in concurrently with others: its group or fan-out."""
    s = spec.step(step_of(name))
    if s.group is not None and spec.groups[s.group].compensation is CompensationOrder.CONCURRENT:
        return spec.groups[s.group].name
    if s.each is not None and s.each.compensation is CompensationOrder.CONCURRENT:
        return s.name
    return None


def _plan_text(spec: SagaSpec, plan: list[str]) -> str:
    """The plan, a group's or fan-out's members undone at once shown as ``[a ‖ b]``."""
    parts: list[list[str]] = []
    blocks: list[str | None] = []
    for name in plan:
        block = _concurrent_block(spec, name)
        if block is not None and blocks and blocks[-1] == block:
            parts[-1].append(name)
        else:
            parts.append([name])
            blocks.append(block)
    return " → ".join(p[0] if len(p) == 1 else "[" + " ‖ ".join(p) + "]" for p in parts)


class Demo:
    """Prints scenarios: a title, the run as it happens, then its outcome.

    Sync sagas run on a :class:`VirtualClock` (backoff costs no real time), async ones on
    a :class:`LoopClock` under :func:`~examples._support.run_virtual`; the durations
    shown are virtual time, the real time taken follows in brackets. Both clocks start
    at the real time when the orchestrator is made, so the records a store keeps carry
    real dates (their intervals are the virtual ones).
    """

    def __init__(self, out: Out = print, store: Store | None = None) -> None:
        self.out = out
        self.store = store  #: shared by every orchestrator; None: a MemoryStore each
        self.console = Console(out)
        self.results: list[SagaResult] = []

    def orchestrator(self) -> Orchestrator:
        """An orchestrator for sync sagas, on a virtual clock, with a fixed jitter.

        ``rand=0.5`` puts every delay in the middle of its jitter band, so a
        ``Retry(backoff=2.0)`` waits exactly 2 s, then 4 s: the same output every run.
        """
        return self._wired(Orchestrator(
            self.store, [self.console], clock=VirtualClock(time.time()), rand=lambda: 0.5
        ))

    def async_orchestrator(self) -> Orchestrator:
        """An orchestrator for async sagas, on the running (virtual) loop's time."""
        store = None if self.store is None else BlockingStore(self.store)
        return self._wired(Orchestrator(
            store, [self.console], clock=LoopClock(), rand=lambda: 0.5
        ))

    def _wired(self, orch: Orchestrator) -> Orchestrator:
        self.console.orchestrators.append(orch)
        return orch

    def section(self, title: str, subtitle: str = "") -> None:
        self.out("")
        self.out(f"═══ {title} ═══")
        if subtitle:
            self.out(f"    {subtitle}")

    def scenario(self, title: str) -> None:
        self.out("")
        self.out(f"── {title}")

    def note(self, text: str) -> None:
        self.out(f"   {text}")

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Stop printing runs step by step (many sagas at once would interleave)."""
        self.console.muted = True
        try:
            yield
        finally:
            self.console.muted = False

    def run(self, orch: Orchestrator, saga: object, saga_id: str) -> SagaResult:
        """Run a sync saga, printing it, then its outcome (or where it parked)."""
        started = time.perf_counter()
        result = orch.run(saga, saga_id=saga_id)
        self.show(result, time.perf_counter() - started)
        return result

    def signal(
        self, orch: Orchestrator, saga_id: str, name: str, payload: object = None
    ) -> SagaResult:
        """Send a signal in this process, printing the saga as it goes on, then its outcome."""
        started = time.perf_counter()
        result = orch.signal(saga_id, name, payload)
        self.show(result, time.perf_counter() - started)
        return result

    def resume_due(self, orch: Orchestrator) -> list[SagaResult]:
        """Resume the parked sagas whose time came (``orch``'s clock), printing each."""
        started = time.perf_counter()
        resumed = orch.resume_due()
        real = time.perf_counter() - started
        results = [orch.get(saga_id) for saga_id in resumed]
        for result in results:
            assert result is not None
            self.show(result, real)
        return [r for r in results if r is not None]

    async def arun(self, orch: Orchestrator, saga: object, saga_id: str) -> SagaResult:
        """Run an async saga, printing it, then its outcome."""
        started = time.perf_counter()
        result = await orch.arun(saga, saga_id=saga_id)
        self.show(result, time.perf_counter() - started)
        return result

    def show(self, result: SagaResult, real: float | None = None) -> None:
        """Print a run's outcome: status, duration, compensations, events, operator notes.

        A saga shown again (parked, then resumed) is counted once, as it is now.
        """
        self.results = [r for r in self.results if r.saga_id != result.saga_id]
        self.results.append(result)
        if self.console.muted:
            return
        self.out("   ⇒ " + outcome(result, real))
        if result.events and result.status.is_terminal:
            self.out("     events: " + events_line(result.events))
        for line in operator_notes(result):
            self.out(f"     ‼ {line}")


def outcome(result: SagaResult, real: float | None = None) -> str:
    """One line: status, virtual duration (and real), compensations, the error's kind."""
    undoable = _undoable(spec_of(result.data), result)
    undone = sum(1 for s in undoable if s.compensation is CompensationStatus.COMPENSATED)
    planned = len(undoable)
    waiting = [s.name for s in result.steps if s.status is StepStatus.WAITING]
    if waiting:
        real_ms = f" (real {real * 1000:.0f} ms)" if real is not None else ""
        return f"{result.status.value}, parked at {waiting[0]}{real_ms}: a row in the store"
    took = result.duration or 0
    parts = [f"{result.status.value} in "
             + (f"{took:.3g}s" if took < 60 else duration(round(took)))]
    if real is not None:
        parts[0] += f" (real {real * 1000:.0f} ms)"
    if result.outcome not in ("completed", "compensated", "failed"):  # says why: rejected...
        parts.append(f"outcome {result.outcome}")
    parts.append(f"compensations {undone}/{planned}" if planned else "no compensation needed")
    error = result.error
    if error is not None and result.status is not SagaStatus.COMPLETED:
        if isinstance(error, CompensationError):
            why = f" (compensating after {_short(error.reason)})" if error.reason else ""
            parts.append(f"error: CompensationError{why}")
        else:
            parts.append(f"error: {_short(error)}")
    return " · ".join(parts)


def _short(error: BaseException) -> str:
    """An error in a few words: a step's failure was printed on its own line already."""
    if isinstance(error, StepError):
        return f"{type(error).__name__} at {error.step}"
    return f"{type(error).__name__}: {error}"


def operator_notes(result: SagaResult) -> list[str]:
    """What a FAILED saga's record says an operator must do."""
    if isinstance(result.error, CompensationError):
        return [f"could not undo {step}: {err}" for step, err in result.error.failures.items()]
    if result.status is not SagaStatus.FAILED:
        return []
    spec = spec_of(result.data)
    return [
        f"{s.name} failed for good after the pivot ({s.attempts} attempts): "
        "finish it by hand; nothing was undone"
        for s in result.steps
        if s.status in (StepStatus.FAILED, StepStatus.TIMED_OUT)
        and spec.step(step_of(s.name)).kind is StepKind.RETRIABLE
    ]

"""Failure plans: what goes wrong in one run of a saga, as a small frozen value.

A :class:`FailurePlan` says which forward step fails for good and how (or rejects the
saga), how many transient failures each step and each compensation suffers before it
succeeds, which compensations fail for good, whether (and where) the saga's deadline
passes, and what each wait receives (:class:`SignalPlan`: its signal comes while it
waits, early, late or never; twice; after a refused one; with a payload that must be
rejected). The runner (:func:`sagaflow.testing.run_plan`) injects exactly that around the user's own
functions; :func:`sagaflow.testing.failure_plans` generates plans from a saga class.

"Effect" is the question every fault raises: did the call change the world before it
failed? A forward step that *raises* is taken not to have (the step contract: an error
means nothing happened, so the engine does not compensate it); a *timeout* or a
*cancellation* leaves the outcome unknown, so the plan says which it was. Compensations
are retried, so a failing compensation may also have taken effect before it failed:
that is what makes a compensation that is not idempotent visible.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from ..errors import StepTimeout
from ..spec import OnTimeout, SagaSpec, StepKind, StepSpec, is_saga

__all__ = [
    "Arrival",
    "DeadlinePass",
    "FailurePlan",
    "Fault",
    "InjectedFault",
    "SagaCase",
    "SignalPlan",
]

S = TypeVar("S")


class Fault(enum.Enum):
    """How an injected failure shows itself to the orchestrator."""

    RAISES = "raises"  #: the call raises :class:`InjectedFault` (before taking effect)
    TIMES_OUT = "times_out"  #: the call overruns its timeout: its outcome is unknown
    CANCELLED = "cancelled"  #: the task running the saga is cancelled during the call
    #: the call raises :class:`~sagaflow.SagaRejected`: a business "no" (forward only)
    REJECTS = "rejects"

    def __repr__(self) -> str:
        return f"Fault.{self.name}"


class Arrival(enum.Enum):
    """When a wait's signal comes, in a plan's run."""

    AT_WAIT = "at_wait"  #: while the saga waits for it (delivered at once)
    EARLY = "early"  #: before the saga reaches the wait (kept, delivered when it gets there)
    LATE = "late"  #: after the wait's time ran out (the saga moved on: kept or refused)
    NEVER = "never"  #: not at all: the virtual clock runs past the wait's timeout

    def __repr__(self) -> str:
        return f"Arrival.{self.name}"

    @property
    def delivers(self) -> bool:
        """Whether the signal comes in time for its wait."""
        return self in (Arrival.AT_WAIT, Arrival.EARLY)


class InjectedFault(ConnectionError):
    """The error a failure plan makes a call raise.

    A :class:`ConnectionError`, the usual transient error, so that retry policies
    written for real outages (``retry_on=ConnectionError``) retry it too.
    """


def _counts(value: Mapping[str, int] | Iterable[tuple[str, int]] | None) -> tuple[
    tuple[str, int], ...
]:
    items = value.items() if isinstance(value, Mapping) else (value or ())
    out: dict[str, int] = {}
    for item in items:
        try:
            name, count = item
        except (TypeError, ValueError):
            raise ValueError(
                f"failure counts are a mapping of step name to count, got item {item!r}"
            ) from None
        if not isinstance(name, str):
            raise ValueError(f"failure counts are keyed by step name (str), got {name!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(
                f"failure count for {name!r} must be a whole number >= 0, got {count!r}"
            )
        if count:
            out[name] = count
    return tuple(sorted(out.items()))


def _names(value: Iterable[str] | None) -> frozenset[str]:
    if isinstance(value, str):
        raise ValueError(
            f"compensation_fails is a set of step names, got the string {value!r}: "
            f"write {{{value!r}}}"
        )
    names = frozenset(value or ())
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"compensation_fails holds step names (str), got {name!r}")
    return names


def _faults(value: Mapping[str, Fault] | Iterable[tuple[str, Fault]] | None) -> tuple[
    tuple[str, Fault], ...
]:
    items = value.items() if isinstance(value, Mapping) else (value or ())
    out: dict[str, Fault] = {}
    for name, fault in items:
        if not isinstance(name, str) or not isinstance(fault, Fault):
            raise ValueError(f"faults maps a member or item name to a Fault, got {name!r}: "
                             f"{fault!r}")
        if fault is Fault.CANCELLED:
            raise ValueError(f"faults[{name!r}] cannot be Fault.CANCELLED: plan it as step=")
        out[name] = fault
    return tuple(sorted(out.items()))


def _cut_names(value: Iterable[str] | None) -> frozenset[str]:
    if isinstance(value, str):
        raise ValueError(f"cut is a set of member or item names: write {{{value!r}}}")
    return frozenset(value or ())


def unit_of(name: str) -> str:
    """The spec step a record name belongs to: ``"pick[a]"`` -> ``"pick"``."""
    head, bracket, _ = name.partition("[")
    return head if bracket and name.endswith("]") else name


@attrs.frozen(repr=False)
class DeadlinePass:
    """The saga's deadline passes when the run reaches step ``step``.

    ``during=False``: just before the step starts (the engine compensates without
    starting it). ``during=True``: while it runs (its call is cut short by the deadline,
    having taken effect or not: ``effect``).
    """

    step: str
    during: bool = False
    effect: bool = False

    def __attrs_post_init__(self) -> None:
        if self.effect and not self.during:
            raise ValueError(
                "DeadlinePass(effect=True) needs during=True: a step the deadline "
                "stops before it starts cannot have taken effect"
            )

    def __repr__(self) -> str:
        extra = ""
        if self.during:
            extra += ", during=True"
        if self.effect:
            extra += ", effect=True"
        return f"DeadlinePass({self.step!r}{extra})"


@attrs.frozen(repr=False)
class SignalPlan:
    """What the wait ``step`` receives in a run.

    Its signal carries ``payload`` (an instance of the wait's payload class; ``None``
    for a signal without one) and comes as ``arrives`` says. ``twice``: the same signal
    (same ``signal_id``) comes again after it, and is ignored. ``another``: a second
    signal of that name (its own id) comes after it: kept for a later wait of that name,
    else left unconsumed (refused if the saga has finished). ``refused``: first a signal
    whose payload does not fit the declared class comes, which ``signal()`` refuses
    (nothing stored). ``rejects``: ``payload`` is one the user's ``rejections=``
    strategy drew, so the handler must reject the saga with it.

    A signal wait the plan does not name receives nothing: its time runs out.
    """

    step: str
    payload: Any = None
    arrives: Arrival = Arrival.AT_WAIT
    twice: bool = False
    another: bool = False
    refused: bool = False
    rejects: bool = False

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.step, str):
            raise ValueError(f"SignalPlan names a wait by its step name (str), got {self.step!r}")
        if not isinstance(self.arrives, Arrival):
            raise ValueError(f"arrives must be an Arrival, got {self.arrives!r}")
        if self.arrives is Arrival.NEVER:
            extra = [name for name in ("twice", "another", "rejects") if getattr(self, name)]
            if self.payload is not None:
                extra.insert(0, "payload")
            if extra:
                raise ValueError(
                    f"SignalPlan({self.step!r}, arrives=Arrival.NEVER) sends no signal, so it "
                    f"has no {', '.join(extra)}: drop {'it' if len(extra) == 1 else 'them'}"
                )
        if self.rejects and not self.arrives.delivers:
            raise ValueError(
                f"SignalPlan({self.step!r}, rejects=True) needs a signal that reaches its "
                f"wait (Arrival.AT_WAIT or Arrival.EARLY), not {self.arrives!r}"
            )

    @property
    def sends(self) -> bool:
        """Whether the signal is sent at all (it may come too late)."""
        return self.arrives is not Arrival.NEVER

    def __repr__(self) -> str:
        parts = [repr(self.step)]
        if self.payload is not None:
            parts.append(repr(self.payload))
        if self.arrives is not Arrival.AT_WAIT:
            parts.append(f"arrives={self.arrives!r}")
        for name in ("twice", "another", "refused", "rejects"):
            if getattr(self, name):
                parts.append(f"{name}=True")
        return f"SignalPlan({', '.join(parts)})"

    def describe(self, signal: str | None = None) -> str:
        """The plan for this wait in words."""
        what = f"the {signal!r} signal" if signal else "its signal"
        before = "after a refused one, " if self.refused else ""
        if self.arrives is Arrival.NEVER:
            said = f"{self.step} gets no signal ({before}its time runs out)"
        else:
            when = {
                Arrival.AT_WAIT: "while it waits",
                Arrival.EARLY: "before the saga reaches it",
                Arrival.LATE: "after its time ran out",
            }[self.arrives]
            said = f"{what} comes to {self.step} {before}{when}"
            if self.rejects:
                said += " with a payload it must reject"
        if self.twice:
            said += ", then again (same id)"
        if self.another:
            said += ", then another one"
        return said


def _signal_plans(value: Iterable[SignalPlan] | Mapping[str, SignalPlan] | None) -> tuple[
    SignalPlan, ...
]:
    items = list(value.values()) if isinstance(value, Mapping) else list(value or ())
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, SignalPlan):
            raise ValueError(f"signals holds SignalPlan values, got {item!r}")
        if item.step in seen:
            raise ValueError(f"signals plans wait {item.step!r} twice: give one SignalPlan each")
        seen.add(item.step)
    return tuple(sorted(items, key=lambda p: p.step))


@attrs.frozen(repr=False)
class FailurePlan(Generic[S]):
    """What goes wrong in one run; the default plan is "nothing goes wrong".

    - ``step`` fails for good with ``fault`` (every attempt left after its transient
      failures); ``effect`` says whether a timed-out or cancelled call took effect.
    - ``transient`` maps a step to how many attempts fail (with ``transient_fault``,
      taking effect or not: ``transient_effect``) before one succeeds.
    - ``compensation_transient`` maps a step to how many attempts of *its compensation*
      fail before one succeeds; ``compensation_fails`` lists the steps whose
      compensation always fails; ``compensation_effect`` says whether those failing
      compensation attempts took effect first (a lost reply).
    - ``deadline``: where the saga's deadline passes, if it does.
    - ``signals``: what each wait receives (:class:`SignalPlan`, one per wait step); a
      signal wait with none receives nothing, and its time runs out. ``Fault.REJECTS``
      on ``step`` makes that step (or a wait's handler) reject the saga.

    ``FailurePlan[MySaga]`` is the type ``st.from_type`` turns into
    ``failure_plans(MySaga)``.
    """

    step: str | None = None
    fault: Fault = Fault.RAISES
    effect: bool = False
    transient: tuple[tuple[str, int], ...] = attrs.field(default=(), converter=_counts)
    transient_fault: Fault = Fault.RAISES
    transient_effect: bool = False
    compensation_transient: tuple[tuple[str, int], ...] = attrs.field(
        default=(), converter=_counts
    )
    compensation_fails: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    compensation_effect: bool = False
    deadline: DeadlinePass | None = None
    signals: tuple[SignalPlan, ...] = attrs.field(default=(), converter=_signal_plans)
    #: more calls that fail for good, at a group or a fan-out: member (step name) or
    #: item (record name ``"pick[a]"``, or the fan-out's step name: every item) -> fault
    faults: tuple[tuple[str, Fault], ...] = attrs.field(default=(), converter=_faults)
    #: members / items a crash cuts off: when the first of them is reached, the run
    #: crashes with it and the calls of its batch not yet performed started and unsettled
    #: (``cut_effect``: it took effect first); recovery runs exactly those again
    cut: frozenset[str] = attrs.field(default=frozenset(), converter=_cut_names)
    cut_effect: bool = False
    #: the order a batch's calls are performed in: 0 as the engine gives them, else a
    #: permutation drawn from this seed (deterministic per plan)
    order: int = 0

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.fault, Fault):
            raise ValueError(f"fault must be a Fault, got {self.fault!r}")
        if self.effect and self.step is not None and self.fault is Fault.REJECTS:
            raise ValueError(
                "effect=True needs fault=Fault.TIMES_OUT or Fault.CANCELLED: a step that "
                "rejects is taken not to have taken effect (a business \"no\")"
            )
        if self.effect and self.step is not None and self.fault is Fault.RAISES:
            raise ValueError(
                "effect=True needs fault=Fault.TIMES_OUT or Fault.CANCELLED: a step that "
                "raises is taken not to have taken effect (that is the step contract)"
            )
        if self.effect and self.step is None and not self.faults:
            raise ValueError("effect=True needs a failing step: set step=...")
        if self.transient_fault is Fault.CANCELLED:
            raise ValueError(
                "transient_fault cannot be Fault.CANCELLED: a cancelled run does not "
                "retry; plan it as step=..., fault=Fault.CANCELLED"
            )
        if self.transient_fault is Fault.REJECTS:
            raise ValueError(
                "transient_fault cannot be Fault.REJECTS: a rejection is never retried; "
                "plan it as step=..., fault=Fault.REJECTS"
            )
        if self.transient_effect and self.transient_fault is Fault.RAISES:
            raise ValueError(
                "transient_effect=True needs transient_fault=Fault.TIMES_OUT: a step "
                "that raises is taken not to have taken effect"
            )
        if self.deadline is not None and not isinstance(self.deadline, DeadlinePass):
            raise ValueError(
                f"deadline must be a DeadlinePass or None, got {self.deadline!r}: "
                f"write deadline=DeadlinePass({self.deadline!r})"
            )

    # -- questions the runner and the checks ask ---------------------------------------

    def transient_failures(self, step: str) -> int:
        """How many attempts of ``step`` (an item: ``"pick[a]"``, or every item of
        ``"pick"``) fail before one succeeds."""
        counts = dict(self.transient)
        return counts.get(step, counts.get(unit_of(step), 0))

    def compensation_failures(self, step: str) -> int:
        """How many attempts of ``step``'s compensation fail before one succeeds."""
        counts = dict(self.compensation_transient)
        return counts.get(step, counts.get(unit_of(step), 0))

    def compensation_always_fails(self, step: str) -> bool:
        """Whether ``step``'s (or its fan-out's) compensation always fails."""
        return step in self.compensation_fails or unit_of(step) in self.compensation_fails

    def fault_of(self, step: str) -> Fault | None:
        """The fault that makes ``step`` (a step, member or item) fail for good."""
        if self.step is not None and self.step in (step, unit_of(step)):
            return self.fault
        faults = dict(self.faults)
        return faults.get(step, faults.get(unit_of(step)))

    def signal_plan(self, step: str) -> SignalPlan | None:
        """What wait ``step`` receives (``None``: nothing; its time runs out)."""
        for p in self.signals:
            if p.step == step:
                return p
        return None

    @property
    def is_quiet(self) -> bool:
        """Whether nothing at all goes wrong (the default plan)."""
        return attrs.evolve(self, order=0) == FailurePlan()

    def has_permanent_failure(self, spec: SagaSpec) -> bool:
        """Whether something in this plan stops the forward steps, for ``spec``.

        A failing step or a deadline does; so do transient failures that the step's
        retry policy does not retry, or more of them than it has attempts; so does a
        wait whose signal does not come in time (unless it declares
        ``on_timeout='continue'``) or comes with a payload it must reject.
        """
        if self.step is not None or self.deadline is not None or self.faults:
            return True
        for s in spec.steps:
            w = s.wait
            if w is None or w.signal is None:
                continue
            p = self.signal_plan(s.name)
            if p is not None and p.rejects:
                return True
            if (p is None or not p.arrives.delivers) and w.on_timeout is not OnTimeout.CONTINUE:
                return True
        for name, count in self.transient:
            s = spec.step(unit_of(name))
            if count >= s.retry.attempts or not s.retry.is_retryable(
                sample_error(s, self.transient_fault)
            ):
                return True
        return False

    def validate(self, spec: SagaSpec) -> None:
        """Raise ``ValueError`` naming every way this plan does not fit ``spec``."""
        problems: list[str] = []
        names = [s.name for s in spec.steps]
        known = ", ".join(names)

        def check_step(name: str, what: str) -> StepSpec | None:
            if name not in spec.index and unit_of(name) in spec.index:
                s = spec.steps[spec.index[unit_of(name)]]
                if s.each is not None:
                    return s  # an item of a fan-out
                problems.append(f"{what} names {name!r}, but {s.name!r} is no fan-out")
                return None
            if name not in spec.index:
                problems.append(f"{what} names step {name!r}, which saga {spec.name!r} "
                                f"does not have (steps: {known})")
                return None
            return spec.steps[spec.index[name]]

        if self.step is not None:
            s = check_step(self.step, "step")
            if s is not None and self.fault is Fault.TIMES_OUT and not can_time_out(spec, s):
                problems.append(
                    f"step {s.name!r} cannot time out: it has timeout=None and the saga "
                    "no deadline (a wait's handler runs with no limit); give it a timeout "
                    "or plan another fault"
                )
            if s is not None and s.wait is not None and s.wait.signal is not None:
                p = self.signal_plan(s.name)
                if p is None or not p.arrives.delivers:
                    problems.append(
                        f"step names wait {s.name!r}, whose handler never runs: the plan "
                        "sends its signal in time with signals=[SignalPlan("
                        f"{s.name!r}, ...)] or plans no failure there"
                    )
        for name, _ in self.transient:
            s = check_step(name, "transient")
            if s is not None and self.transient_fault is Fault.TIMES_OUT and s.timeout is None:
                problems.append(
                    f"transient timeouts of step {name!r} are impossible: it has "
                    "timeout=None"
                )
        for name in sorted({n for n, _ in self.compensation_transient} | self.compensation_fails):
            s = check_step(name, "a compensation failure")
            if s is not None and s.compensation is None:
                problems.append(
                    f"step {name!r} is {s.kind.value} and has no compensation to fail"
                )
        for name, fault in self.faults:
            s = check_step(name, "faults")
            if s is not None and s.group is None and s.each is None:
                problems.append(f"faults names {name!r}, which is neither a group member nor "
                                "a fan-out (its item): plan it as step=")
            elif s is not None and fault is Fault.TIMES_OUT and not can_time_out(spec, s):
                problems.append(f"{name!r} cannot time out: it has timeout=None")
        for name in sorted(self.cut):
            s = check_step(name, "cut")
            if s is not None and s.group is None and s.each is None:
                problems.append(f"cut names {name!r}, which is neither a group member nor "
                                "a fan-out item: a crash cuts off members and items")
        if self.deadline is not None:
            if spec.deadline is None:
                problems.append(
                    f"the plan passes the deadline, but saga {spec.name!r} has none: "
                    "set @saga(deadline=...) or drop deadline="
                )
            check_step(self.deadline.step, "deadline")
        for p in self.signals:
            s = check_step(p.step, "a SignalPlan")
            if s is None:
                continue
            w = s.wait
            if w is None or w.signal is None:
                what = "a timer" if w is not None else f"a {s.kind.value} step"
                waits = ", ".join(repr(x.name) for x in spec.steps
                                  if x.wait is not None and x.wait.signal is not None)
                problems.append(f"a SignalPlan names {p.step!r}, which is {what}, not a wait "
                                f"for a signal (waits: {waits or 'none'})")
            elif p.sends and w.payload is not None and p.payload is None:
                problems.append(
                    f"SignalPlan({p.step!r}) sends signal {w.signal!r} with no payload, but "
                    f"it carries a {w.payload.__qualname__}: give payload="
                )
            elif p.sends and w.payload is None and p.payload is not None:
                problems.append(
                    f"SignalPlan({p.step!r}) gives a payload, but signal {w.signal!r} "
                    "carries none: drop it"
                )
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise ValueError(f"{self!r} does not fit saga {spec.name!r}:\n{lines}")

    # -- showing it ----------------------------------------------------------------

    def __repr__(self) -> str:
        parts: list[str] = []
        if self.step is not None:
            parts.append(f"step={self.step!r}")
            parts.append(f"fault={self.fault!r}")
        if self.effect:
            parts.append("effect=True")
        if self.transient:
            parts.append(f"transient={dict(self.transient)!r}")
            if self.transient_fault is not Fault.RAISES:
                parts.append(f"transient_fault={self.transient_fault!r}")
            if self.transient_effect:
                parts.append("transient_effect=True")
        if self.compensation_transient:
            parts.append(f"compensation_transient={dict(self.compensation_transient)!r}")
        if self.compensation_fails:
            parts.append(f"compensation_fails={set(sorted(self.compensation_fails))!r}")
        if self.compensation_effect:
            parts.append("compensation_effect=True")
        if self.deadline is not None:
            parts.append(f"deadline={self.deadline!r}")
        if self.signals:
            parts.append(f"signals={list(self.signals)!r}")
        if self.faults:
            parts.append(f"faults={dict(self.faults)!r}")
        if self.cut:
            parts.append(f"cut={set(sorted(self.cut))!r}")
        if self.cut_effect:
            parts.append("cut_effect=True")
        if self.order:
            parts.append(f"order={self.order!r}")
        return f"FailurePlan({', '.join(parts)})"

    def describe(self) -> str:
        """The plan in words, one clause per failure."""
        said: list[str] = []
        for name, count in self.transient:
            how = "times out" if self.transient_fault is Fault.TIMES_OUT else "raises"
            eff = " (after taking effect)" if self.transient_effect else ""
            said.append(f"{name} {how}{eff} {_times(count)} then succeeds")
        if self.step is not None:
            verb = {
                Fault.RAISES: "raises",
                Fault.TIMES_OUT: "times out",
                Fault.CANCELLED: "is cancelled",
                Fault.REJECTS: "rejects the saga",
            }[self.fault]
            eff = "" if self.fault in (Fault.RAISES, Fault.REJECTS) else (
                " after taking effect" if self.effect else " before taking effect"
            )
            said.append(f"{self.step} {verb}{eff}" + (
                "" if self.fault is Fault.REJECTS else " for good"
            ))
        if self.deadline is not None:
            d = self.deadline
            when = "while it runs" if d.during else "before it starts"
            said.append(f"the deadline passes at {d.step} ({when})")
        eff = " after taking effect" if self.compensation_effect else ""
        for name, count in self.compensation_transient:
            said.append(f"{name}'s compensation raises{eff} {_times(count)} then succeeds")
        for name in sorted(self.compensation_fails):
            said.append(f"{name}'s compensation always raises{eff}")
        said.extend(p.describe() for p in self.signals)
        for name, fault in self.faults:
            said.append(f"{name} {fault.value.replace('_', ' ')} for good")
        if self.cut:
            eff = " (after taking effect)" if self.cut_effect else ""
            said.append(f"a crash cuts off {', '.join(sorted(self.cut))}{eff}")
        if self.order:
            said.append(f"a batch's calls run in order #{self.order}")
        return "; ".join(said) if said else "nothing goes wrong"


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def can_time_out(spec: SagaSpec, s: StepSpec) -> bool:
    """Whether a call of ``s`` has any time limit: its own timeout or the deadline (a
    wait's handler, run when its signal is delivered, has none)."""
    if s.wait is not None and s.wait.signal is not None:
        return s.timeout is not None
    return s.timeout is not None or (
        spec.deadline is not None and s.kind is not StepKind.RETRIABLE
    )


def sample_error(s: StepSpec, fault: Fault) -> BaseException:
    """The error the engine sees for ``fault`` on step ``s`` (for retry decisions)."""
    if fault is Fault.TIMES_OUT:
        return StepTimeout(s.index, s.name, s.timeout or 0.0)
    return InjectedFault(f"injected: {s.name}")


@attrs.frozen
class SagaCase:
    """A saga instance with what property tests need around it.

    ``setup`` puts the participants back in their initial state; it is called before
    every run (never while a strategy draws). ``snapshot`` returns a comparable picture
    of the participants' state: with it, a run that ends COMPENSATED must leave the
    world as it found it, and :func:`~sagaflow.testing.assert_compensations_idempotent`
    can tell whether a second compensation changes anything. ``allow_step_errors``:
    this saga's inputs may make a forward step fail on its own (a declined card), so
    :func:`~sagaflow.testing.check_invariants` does not report that.
    """

    saga: Any
    setup: Any = None  #: Callable[[], None] | None
    snapshot: Any = None  #: Callable[[], object] | None
    allow_step_errors: bool = False

    def __attrs_post_init__(self) -> None:
        if isinstance(self.saga, type) or not is_saga(self.saga):
            raise TypeError(
                f"SagaCase needs an instance of a saga class, got {self.saga!r}"
            )
        for what in ("setup", "snapshot"):
            fn = getattr(self, what)
            if fn is not None and not callable(fn):
                raise TypeError(f"SagaCase.{what} must be callable or None, got {fn!r}")

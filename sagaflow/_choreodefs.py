"""Declaring a choreography: ``@choreography``, its ``step(emits=..., participant=...)``
and ``.compensate(emits=...)``, checked into a :class:`ChoreographySpec`.

A choreography goes through ``@saga`` (same validation, same state machine, same
diagrams); what it adds is recorded here: which event starts an instance, the field that
correlates every event to it, and for each step its participant, the event that
triggers it and the events it publishes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import attrs

from . import definition as _defs
from .definition import UNSET, CompensationDef, StepDef, _Unset, saga
from .errors import SagaDefinitionError
from .policy import Retry
from .spec import SagaSpec, StepFn, StepKind, callable_name, spec_of

__all__ = [
    "CHOREOGRAPHY_ATTRIBUTE",
    "ChoreographySpec",
    "FlowFailed",
    "Role",
    "StepDue",
    "choreography",
    "choreography_of",
    "step",
]

T = TypeVar("T")

#: The class attribute ``@choreography`` leaves its :class:`ChoreographySpec` in.
CHOREOGRAPHY_ATTRIBUTE = "__sagaflow_choreography__"


@attrs.frozen
class FlowFailed:
    """Published (from the instance's outbox) when a step of a choreography fails for
    good: the participants of the steps done before it compensate, one after another,
    each triggered by this or by the compensation event of the one undone before."""

    flow: str
    correlation: str
    step: str
    reason: str


@attrs.frozen
class StepDue:
    """Published (from the instance's outbox) by whoever resumes a due instance (a
    worker, :meth:`~sagaflow.Orchestrator.resume_due`, recovery) when a step's retry (or
    a compensation's, ``compensation``) came due and its participant did not make it
    (it died during the backoff): ``participant`` performs it, as its trigger event
    would have made it. ``retry_at``: when the retry was due (the last attempt failed:
    it is retried, not taken as cut off)."""

    flow: str
    correlation: str
    step: str
    participant: str
    compensation: bool = False
    retry_at: float | None = None


@attrs.frozen(eq=False)
class ChoreoStepDef(StepDef):
    """A :class:`~sagaflow.definition.StepDef` that also says which participant runs
    it and which event it publishes on success (and its compensation's)."""

    emits: Any = None
    participant: Any = None
    #: what each ``.compensate(emits=...)`` gave, by the compensation's id
    compensation_emits: dict[int, Any] = attrs.field(factory=dict, repr=False)

    def compensate(  # type: ignore[override]
        self,
        fn: StepFn | None = None,
        /,
        *,
        emits: Any = None,
        timeout: float | _Unset | None = UNSET,
        retry: Retry | _Unset = UNSET,
    ) -> CompensationDef | Callable[[StepFn], CompensationDef]:
        """This step's compensation, publishing ``emits`` when it has undone the step:
        ``@reserve.compensate(emits=StockReleased)``."""
        attach = super().compensate(timeout=timeout, retry=retry)

        def attach_emits(fn: StepFn) -> CompensationDef:
            comp = attach(fn)
            self.compensation_emits[id(comp)] = emits
            return comp

        return attach_emits if fn is None else attach_emits(fn)


def step(
    fn: StepFn | None = None,
    /,
    *,
    emits: Any = None,
    participant: Any = None,
    name: str | None = None,
    timeout: float | _Unset | None = UNSET,
    retry: Retry | _Unset = UNSET,
    readonly: bool = False,
    pivot: bool = False,
    retriable: bool = False,
    when: Any = None,
) -> Any:
    """A step of a choreography: ``participant`` (a name) runs it when the event before
    it arrives (the start event for the first step, the previous step's ``emits`` for
    the others) and it publishes an ``emits`` event on success. The kinds, ``timeout``
    and ``retry`` are :func:`sagaflow.step`'s. ``when=`` is refused at definition (a
    :class:`~sagaflow.SagaDefinitionError` saying what to do instead): a step that is
    skipped would publish nothing for the next participant to react to."""

    def make(fn: StepFn) -> StepDef:
        made = ChoreoStepDef(
            fn=fn, name=name, timeout=timeout, retry=retry, readonly=readonly, pivot=pivot,
            retriable=retriable, emits=emits, participant=participant, when=when,
        )
        with _defs._lock:
            _defs._made_for.setdefault(_defs._owner_of(fn), []).append(made)
        return made

    return make if fn is None else make(fn)


@attrs.frozen
class Role:
    """One step of a choreography: who runs it, what triggers it, what it publishes."""

    index: int
    name: str
    participant: str
    trigger: type
    emits: type
    #: what its compensation publishes (``None``: it has no compensation)
    compensation_emits: type | None


@attrs.frozen(eq=False)
class ChoreographySpec:
    """What ``@choreography`` recorded besides the saga's spec."""

    name: str
    start: type
    correlation: str
    roles: tuple[Role, ...]
    build: Callable[[Any], Any] | None = None

    @property
    def participants(self) -> tuple[str, ...]:
        """The participants' names, in step order, each once."""
        return tuple(dict.fromkeys(r.participant for r in self.roles))

    @property
    def compensation_triggers(self) -> tuple[type, ...]:
        """The events that move a compensating instance on: :class:`FlowFailed` and every
        compensation's event."""
        return (FlowFailed, *(r.compensation_emits for r in self.roles if r.compensation_emits))

    def saga_id(self, correlation: object) -> str:
        """The id of the instance correlated by ``correlation``: ``"{flow}:{value}"``."""
        return f"{self.name}:{correlation}"

    def edge_label(self, step: str, compensation: bool = False) -> str:
        """The event name a diagram writes on the edge into ``step`` (its trigger), or
        into its compensation."""
        for r in self.roles:
            if r.name == step:
                if compensation:
                    return "FlowFailed"
                return r.trigger.__name__
        return ""


def choreography_of(obj: object) -> ChoreographySpec:
    """The :class:`ChoreographySpec` of a choreography class or instance."""
    cls = obj if isinstance(obj, type) else type(obj)
    found = cls.__dict__.get(CHOREOGRAPHY_ATTRIBUTE)
    if not isinstance(found, ChoreographySpec):
        raise TypeError(
            f"{cls.__qualname__} is not a choreography: decorate it with "
            "@sagaflow.choreography(start=..., correlation=...)"
        )
    return found


def is_choreography(obj: object) -> bool:
    """Whether ``obj`` is a choreography class or an instance of one."""
    cls = obj if isinstance(obj, type) else type(obj)
    return isinstance(cls.__dict__.get(CHOREOGRAPHY_ATTRIBUTE), ChoreographySpec)


def choreography(
    *,
    start: type,
    correlation: str,
    deadline: float | None = None,
    compensation_deadline: float | None = None,
    name: str | None = None,
    build: Callable[[Any], Any] | None = None,
) -> Callable[[type[T]], type[T]]:
    """Make a class a choreographed saga: each step is run by its participant when the
    event before it arrives, and publishes its own.

    ``start`` is the event class that creates an instance (its fields fill the class's
    fields of the same names, or ``build(event)`` makes the instance); ``correlation``
    names the field, on the class and on every event, whose value identifies the
    instance (its saga id is ``"{name}:{value}"``). ``deadline`` (seconds): an instance
    that has not finished its steps by then is compensated by whoever resumes due sagas
    (a worker, :meth:`Orchestrator.resume_due`). The class is a saga: validated by
    ``@saga``, stored, listed and drawn like any other.
    """

    def decorate(cls: type[T]) -> type[T]:
        made: Any = cls if attrs.has(cls) else attrs.define(cls)
        flow_name = name if name is not None else made.__name__
        problems: list[str] = []
        try:
            made = saga(
                name=name, deadline=deadline, compensation_deadline=compensation_deadline,
                key=correlation if isinstance(correlation, str) else None,
            )(made)
        except SagaDefinitionError as exc:
            problems.extend(exc.problems)
            spec = None
        else:
            spec = spec_of(made)
        chor = _check(made, flow_name, spec, start, correlation, build, problems)
        if problems:
            raise SagaDefinitionError(flow_name, problems)
        assert chor is not None
        setattr(made, CHOREOGRAPHY_ATTRIBUTE, chor)
        return cast("type[T]", made)

    return decorate


def _fields(cls: object) -> list[str]:
    return [f.name for f in attrs.fields(cls)] if isinstance(cls, type) and attrs.has(cls) else []


def _event_problem(what: str, cls: object, correlation: str) -> str | None:
    if not (isinstance(cls, type) and attrs.has(cls)):
        return f"{what} must be an attrs class (@attrs.frozen), got {cls!r}"
    if correlation not in _fields(cls):
        return (
            f"{what} {cls.__qualname__} has no field {correlation!r}: every event of the "
            f"choreography carries the correlation field (add '{correlation}: str')"
        )
    return None


def _check(
    cls: type, flow: str, spec: SagaSpec | None, start: object, correlation: object,
    build: object, problems: list[str],
) -> ChoreographySpec | None:
    """The choreography's spec, or ``None`` with its problems noted."""
    if not isinstance(correlation, str) or correlation not in _fields(cls):
        problems.append(
            f"correlation={correlation!r} must name one of the class's fields "
            f"({', '.join(_fields(cls))}): the value that identifies an instance"
        )
        return None
    bad = _event_problem("the start event", start, correlation)
    if bad:
        problems.append(bad)
    if build is not None and not callable(build):
        problems.append(f"build= must be a callable of the start event, got {build!r}")
    defs: dict[int, StepDef] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            if isinstance(value, StepDef):
                defs[id(value.fn)] = value
    if spec is None:
        return None
    roles: list[Role] = []
    seen: dict[type, str] = {start: "the start event"} if isinstance(start, type) else {}
    trigger: Any = start
    for s in spec.steps:
        d = defs.get(id(s.fn))
        what = f"step {s.name!r}"
        if s.wait is not None or s.group is not None or s.each is not None:
            problems.append(
                f"{what}: a choreography's steps are plain steps (no waits, timers, parallel "
                "groups or fan-outs): each is one participant's reaction to one event"
            )
        if s.when is not None:
            # Refused rather than skipped: a skipped step would have to publish its
            # trigger on for the next participant, an event nobody's code emitted.
            problems.append(
                f"{what}: when= is not supported in a choreography (a skipped step would "
                "publish no event, and the next participant would never react): drop when= "
                "and test the condition in the step itself (return early when there is "
                "nothing to do; its emits= event is still published and the flow goes on)"
            )
        if not isinstance(d, ChoreoStepDef) or d.emits is None:
            problems.append(
                f"{what} has no emits: declare it with sagaflow.choreography.step("
                "emits=EventClass, participant='name') (the event it publishes on success "
                "triggers the next step)"
            )
            trigger = None
            continue
        if not isinstance(d.participant, str) or not d.participant.strip():
            problems.append(
                f"{what}: participant must name the service that runs it (a non-empty "
                f"string), got {d.participant!r}"
            )
        bad = _event_problem(f"{what}: emits=", d.emits, correlation)
        if bad:
            problems.append(bad)
        comp_emits: Any = None
        if s.compensation is not None:
            owned = [e for c in d.compensations for k, e in d.compensation_emits.items()
                     if k == id(c) and c.fn is s.compensation]
            comp_emits = owned[0] if owned else None
            cname = s.compensation_name or callable_name(s.compensation)
            if comp_emits is None:
                problems.append(
                    f"compensation {cname!r} of {what} has no emits: declare it with "
                    f"@{s.name}.compensate(emits=EventClass) (the event it publishes when "
                    "the step is undone moves the compensation on)"
                )
            else:
                bad = _event_problem(f"compensation {cname!r}: emits=", comp_emits, correlation)
                if bad:
                    problems.append(bad)
        for event, whose in ((d.emits, what), (comp_emits, f"the compensation of {what}")):
            if isinstance(event, type):
                if event in seen:
                    problems.append(
                        f"{whose} emits {event.__qualname__}, as {seen[event]} does: each "
                        "event type triggers one thing: give each its own event class"
                    )
                seen[event] = whose
        if s.kind is not StepKind.COMPENSATABLE and comp_emits is not None:
            comp_emits = None
        roles.append(Role(
            s.index, s.name, d.participant if isinstance(d.participant, str) else "",
            trigger if isinstance(trigger, type) else object, d.emits, comp_emits,
        ))
        trigger = d.emits
    if problems:
        return None
    return ChoreographySpec(flow, cast("type", start), correlation, tuple(roles),
                            cast("Callable[[Any], Any] | None", build))

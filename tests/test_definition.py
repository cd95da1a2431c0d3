"""@saga / @step / .compensate: valid definitions produce a spec; every malformed one is
reported, all problems at once, each with its fix."""

from __future__ import annotations

import attrs
import pytest
from transitions import Machine

from sagaflow import (
    Retry,
    SagaDefinitionError,
    StepKind,
    is_saga,
    saga,
    spec_of,
    step,
)
from sagaflow.policy import COMPENSATION_RETRY, NO_RETRY, RETRIABLE_RETRY


def problems_of(build) -> list[str]:
    with pytest.raises(SagaDefinitionError) as info:
        build()
    assert isinstance(info.value, TypeError)
    return list(info.value.problems)


def only_problem(build) -> str:
    found = problems_of(build)
    assert len(found) == 1, found
    return found[0]


def test_valid_saga_builds_spec_with_kinds_policies_and_tables() -> None:
    def needs_approval(s: object) -> bool:
        return True

    @saga(name="unbundle", deadline=60.0)
    class Unbundle:
        bundle: str
        original_price: int = 0

        @step(readonly=True)
        def validate(self, ctx): ...

        @step(timeout=5.0, retry=Retry(attempts=3, backoff=0.2))
        def price(self, ctx): ...

        @price.compensate
        def restore_price(self, ctx): ...

        @step(when=needs_approval, timeout=None)
        def approve(self, ctx): ...

        @approve.compensate(timeout=2.0, retry=Retry(attempts=9))
        def cancel_approval(self, ctx): ...

        @step(pivot=True)
        def modify(self, ctx): ...

        @step(retriable=True)
        async def audit(self, ctx): ...

    spec = spec_of(Unbundle)
    assert spec is spec_of(Unbundle("b"))
    assert attrs.has(Unbundle) and is_saga(Unbundle)
    assert spec.name == "unbundle" and spec.deadline == 60.0
    assert [s.name for s in spec.steps] == ["validate", "price", "approve", "modify", "audit"]
    assert [s.kind for s in spec.steps] == [
        StepKind.READONLY,
        StepKind.COMPENSATABLE,
        StepKind.COMPENSATABLE,
        StepKind.PIVOT,
        StepKind.RETRIABLE,
    ]
    price, approve, audit = spec.step("price"), spec.step("approve"), spec.step("audit")
    assert price.timeout == 5.0 and price.retry == Retry(attempts=3, backoff=0.2)
    assert spec.steps[0].timeout == 30.0 and spec.steps[0].retry == NO_RETRY
    assert approve.timeout is None and approve.guard_name == "needs_approval"
    assert approve.compensation_timeout == 2.0 and approve.compensation_retry.attempts == 9
    assert price.compensation_retry == COMPENSATION_RETRY
    assert audit.retry == RETRIABLE_RETRY and audit.is_async and spec.is_async
    assert spec.pivot_index == 3
    assert spec.forward[1] is Unbundle.__dict__["price"].fn
    assert spec.compensations == (
        None,
        Unbundle.__dict__["restore_price"].fn,
        Unbundle.__dict__["cancel_approval"].fn,
        None,
        None,
    )
    assert isinstance(spec.machine, Machine)
    assert set(spec.machine.states) == {
        "not_started",
        "validate",
        "price",
        "approve",
        "modify",
        "audit",
        "compensating_price",
        "compensating_approve",
        "completed",
        "compensated",
        "failed",
    }
    # one machine per class, no model attached to it
    assert spec.machine.models == []
    with pytest.raises(KeyError, match="no step 'nope'"):
        spec.step("nope")


def test_plain_class_becomes_attrs_and_steps_stay_callable() -> None:
    @saga
    class Plain:
        x: int

        @step
        def a(self, ctx):
            return self.x + ctx

        @a.compensate
        def undo_a(self, ctx): ...

    assert attrs.has(Plain)
    assert Plain(2).a(3) == 5  # a step is still the method on an instance
    assert spec_of(Plain).name == "Plain"


def test_machine_transitions_follow_steps_and_conditionals() -> None:
    @saga
    class S:
        @step
        def a(self, ctx): ...

        @a.compensate
        def ua(self, ctx): ...

        @step(when=lambda s: True)
        def b(self, ctx): ...

        @b.compensate
        def ub(self, ctx): ...

        @step
        def c(self, ctx): ...

        @c.compensate
        def uc(self, ctx): ...

    t = spec_of(S).transitions
    assert ("not_started", "start", "a") in t
    assert ("a", "advance", "b") in t and ("b", "skip", "c") in t
    assert ("c", "advance", "completed") in t
    # c raised: b may have been skipped, so a compensating chain may start at b or a
    assert ("c", "compensate", "compensating_b") in t
    assert ("c", "compensate", "compensating_c") in t  # c timed out: its effect is unknown
    assert ("c", "compensate", "compensating_a") in t  # b was skipped
    assert ("c", "compensate", "compensated") not in t  # a certainly ran: undo it
    assert ("compensating_c", "undone", "compensating_b") in t
    assert ("compensating_c", "undone", "compensating_a") in t
    assert ("compensating_a", "undone", "compensated") in t
    assert ("compensating_a", "undo_failed", "failed") in t
    assert ("a", "compensate", "compensated") in t  # a raised: nothing to undo


# --- malformed definitions: one test per distinct mistake, checking its message ---------


def test_no_steps() -> None:
    def build():
        @saga
        class Empty:
            x: int

    assert "it has no steps" in only_problem(build)


def test_duplicate_step_names() -> None:
    def build():
        @saga
        class S:
            @step(name="pay", readonly=True)
            def a(self, ctx): ...

            @step(name="pay", readonly=True)
            def b(self, ctx): ...

    msg = only_problem(build)
    assert "'pay': duplicate step name" in msg and "unique name" in msg


def test_step_defined_twice_in_class_body() -> None:
    def build():
        @saga
        class Twice:
            @step(readonly=True)
            def a(self, ctx): ...

            @step(readonly=True)
            def a(self, ctx): ...  # noqa: F811

    msg = only_problem(build)
    assert "'a' is defined twice" in msg and "its own name" in msg


def test_two_compensations_of_one_name_say_so_with_the_fix() -> None:
    # The second `undo` replaces the first in the class body: step a silently loses its
    # compensation. The error must name the clash, not claim a has none.
    def build():
        @saga
        class S:
            @step
            def a(self, ctx): ...

            @a.compensate
            def undo(self, ctx): ...

            @step
            def b(self, ctx): ...

            @b.compensate
            def undo(self, ctx): ...  # noqa: F811

    msg = only_problem(build)
    assert "the compensations of steps 'a' and 'b' are both named 'undo'" in msg
    assert "give each compensation its own name (undo_a, undo_b)" in msg


def test_a_compensation_named_as_a_step_says_so() -> None:
    def build():
        @saga
        class S:
            @step
            def a(self, ctx): ...

            @a.compensate
            def b(self, ctx): ...

            @step(readonly=True)
            def b(self, ctx): ...  # noqa: F811

    msg = only_problem(build)
    assert "compensation 'b' of step 'a' and step 'b' are both named 'b'" in msg
    assert "its own name" in msg


def test_undecorated_mixin_steps_do_not_leak_into_a_saga_of_the_same_name() -> None:
    # The same class name in two modules: a mixin (never decorated) in one, a saga in the
    # other. The saga's definition must see its own body only.
    mixin_source = (
        "from sagaflow import step\n"
        "class Shared:\n"
        "    @step(readonly=True)\n"
        "    def a(self, ctx): ...\n"
        "    @step(readonly=True)\n"
        "    def a(self, ctx): ...\n"
    )
    saga_source = (
        "from sagaflow import saga, step\n"
        "@saga\n"
        "class Shared:\n"
        "    @step(readonly=True)\n"
        "    def a(self, ctx): ...\n"
    )
    exec(compile(mixin_source, "mixins.py", "exec"), {"__name__": "tests_mixins"})
    namespace: dict[str, object] = {"__name__": "tests_sagas"}
    exec(compile(saga_source, "sagas.py", "exec"), namespace)
    assert [s.name for s in spec_of(namespace["Shared"]).steps] == ["a"]


def test_compensation_for_unknown_step() -> None:
    @saga
    class Other:
        @step
        def foreign(self, ctx): ...

        @foreign.compensate
        def undo_foreign(self, ctx): ...

    def build():
        @saga
        class S:
            @step(readonly=True)
            def a(self, ctx): ...

            undo = Other.__dict__["foreign"].compensate(lambda self, ctx: None)

    msg = only_problem(build)
    assert "'undo' is attached to 'foreign', which is not a step of this saga" in msg


def test_compensation_attached_twice() -> None:
    def build():
        @saga
        class S:
            @step
            def a(self, ctx): ...

            @a.compensate
            def undo_one(self, ctx): ...

            @a.compensate
            def undo_two(self, ctx): ...

    msg = only_problem(build)
    assert "step 'a' has 2 compensations ('undo_one', 'undo_two'): keep exactly one" in msg


def test_step_of_no_kind() -> None:
    def build():
        @saga
        class S:
            @step
            def charge(self, ctx): ...

    msg = only_problem(build)
    assert "'charge' has no compensation and no kind" in msg
    assert "@charge.compensate" in msg and "readonly=True" in msg


def test_kinds_out_of_order() -> None:
    def build():
        @saga
        class S:
            @step(pivot=True)
            def p(self, ctx): ...

            @step
            def late(self, ctx): ...

            @late.compensate
            def undo_late(self, ctx): ...

            @step(pivot=True)
            def p2(self, ctx): ...

    found = problems_of(build)
    assert any("'late' is compensatable but comes after 'p'" in p for p in found)
    assert any("'p2' is a second pivot after 'p'" in p for p in found)


def test_retriable_without_pivot_after_compensatable() -> None:
    def build():
        @saga
        class S:
            @step
            def a(self, ctx): ...

            @a.compensate
            def ua(self, ctx): ...

            @step(retriable=True)
            def r1(self, ctx): ...

            @step(retriable=True)
            def r2(self, ctx): ...

    msg = only_problem(build)
    assert "'r1' is retriable but follows compensatable steps (a) with no pivot" in msg


@pytest.mark.parametrize("kind", ["readonly", "pivot", "retriable"])
def test_compensation_on_step_that_cannot_have_one(kind: str) -> None:
    def build():
        @saga
        class S:
            @step(**{kind: True})
            def a(self, ctx): ...

            @a.compensate
            def ua(self, ctx): ...

    msg = only_problem(build)
    assert f"'a' is {kind} and has a compensation" in msg
    assert f"remove {kind}=True or the compensation" in msg


def test_two_kinds_at_once() -> None:
    def build():
        @saga
        class S:
            @step(readonly=True, pivot=True)
            def a(self, ctx): ...

    assert "'a' is marked readonly and pivot: a step has exactly one kind" in only_problem(build)


@pytest.mark.parametrize("bad", [0, -1.5, float("nan"), "5", True])
def test_invalid_timeout(bad: object) -> None:
    def build():
        @saga
        class S:
            @step(readonly=True, timeout=bad)
            def a(self, ctx): ...

    msg = only_problem(build)
    assert "step 'a': timeout must be a number of seconds > 0 or None" in msg


def test_invalid_retry_and_compensation_options() -> None:
    def build():
        @saga
        class S:
            @step(retry=3)
            def a(self, ctx): ...

            @a.compensate(timeout=-1, retry="often")
            def ua(self, ctx): ...

    found = problems_of(build)
    assert any(
        "step 'a': retry must be a sagaflow.Retry, got 3: use retry=Retry(attempts=3)" in p
        for p in found
    )
    assert any("compensation 'ua' of step 'a': timeout must be" in p for p in found)
    assert any("compensation 'ua' of step 'a': retry must be a sagaflow.Retry" in p for p in found)


def test_invalid_when() -> None:
    def build():
        @saga
        class S:
            @step(readonly=True, when="approval_needed")
            def a(self, ctx): ...

    assert "'a': when must be a predicate of the saga instance" in only_problem(build)


def test_step_that_is_not_a_function() -> None:
    def build():
        @saga
        class S:
            a = step(staticmethod(lambda ctx: None), readonly=True)

    msg = only_problem(build)
    assert "step 'a' is a staticmethod, not a function" in msg and "def name(self, ctx)" in msg


def test_step_with_wrong_signature() -> None:
    def build():
        @saga
        class S:
            @step(readonly=True)
            def a(self): ...

            @step(readonly=True)
            def b(self, ctx, extra): ...

    found = problems_of(build)
    assert len(found) == 2
    assert all("must take (self, ctx)" in p for p in found)


def test_reserved_and_invalid_step_names() -> None:
    def build():
        @saga
        class S:
            @step(readonly=True)
            def completed(self, ctx): ...

            @step(readonly=True, name="not an identifier")
            def b(self, ctx): ...

    found = problems_of(build)
    assert any("'completed': the name is reserved" in p for p in found)
    assert any("name must be a Python identifier" in p for p in found)


def test_invalid_saga_options_and_flags() -> None:
    def build():
        @saga(deadline=-5, compensation_deadline="soon")
        class S:
            @step(readonly="yes")
            def a(self, ctx): ...

    found = problems_of(build)
    assert any("@saga(deadline=...): timeout must be" in p for p in found)
    assert any("@saga(compensation_deadline=...): timeout must be" in p for p in found)
    assert any("readonly must be True or False, got 'yes'" in p for p in found)


def test_every_problem_reported_at_once_in_one_error() -> None:
    def build():
        @saga
        class Broken:
            @step
            def a(self, ctx): ...

            @step(pivot=True, timeout=0)
            def b(self): ...

            @b.compensate
            def ub(self, ctx): ...

    with pytest.raises(SagaDefinitionError) as info:
        build()
    err = info.value
    assert len(err.problems) == 4
    text = str(err)
    assert text.startswith("saga 'Broken' has 4 definition problems:")
    assert text.count("\n  - ") == 4


def test_saga_applied_to_non_class_or_twice() -> None:
    with pytest.raises(SagaDefinitionError, match="decorates a class"):
        saga(lambda: None)  # type: ignore[call-overload]

    @saga
    class S:
        @step(readonly=True)
        def a(self, ctx): ...

    with pytest.raises(SagaDefinitionError, match="applied twice"):
        saga(S)


def test_spec_of_non_saga_names_the_fix() -> None:
    class NotASaga:
        pass

    with pytest.raises(
        TypeError, match=r"NotASaga is not a saga class: decorate it with @sagaflow\.saga"
    ):
        spec_of(NotASaga)
    assert not is_saga(NotASaga())


def test_retry_validates_its_values() -> None:
    with pytest.raises(ValueError, match="attempts must be a whole number >= 1"):
        Retry(attempts=0)
    with pytest.raises(ValueError, match="multiplier must be >= 1"):
        Retry(multiplier=0.5)
    with pytest.raises(ValueError, match="jitter is a fraction"):
        Retry(jitter=2)
    with pytest.raises(ValueError, match="retry_on takes exception types"):
        Retry(retry_on=("ValueError",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retry_if must be a callable"):
        Retry(retry_if=1)  # type: ignore[arg-type]
    assert Retry(retry_on=KeyError).retry_on == (KeyError,)


def test_saga_inherits_steps_subclass_overrides() -> None:
    @saga
    class Base:
        @step(readonly=True)
        def a(self, ctx): ...

        @step(readonly=True)
        def b(self, ctx): ...

    @saga(name="child")
    @attrs.define
    class Child(Base):
        @step(readonly=True, timeout=1.0)
        def b(self, ctx): ...

    spec = spec_of(Child)
    assert [s.name for s in spec.steps] == ["a", "b"]
    assert spec.step("b").timeout == 1.0 and spec_of(Base).step("b").timeout == 30.0


def test_machine_graph_check_finds_traps_and_unreachable_states() -> None:
    from sagaflow.machine import check_graph

    states = ["not_started", "a", "b", "island", "completed", "compensated", "failed"]
    allowed = frozenset(
        {
            ("not_started", "start", "a"),
            ("a", "advance", "b"),
            ("b", "advance", "b"),  # b never finishes
            ("a", "compensate", "compensated"),
        }
    )
    problems = check_graph(states, allowed)
    assert "state 'island' cannot be reached from 'not_started'" in problems
    assert "state 'b' cannot reach a terminal state" in problems
    assert "state 'island' cannot reach a terminal state" in problems
    assert not any("'failed' cannot be reached" in p for p in problems)
    # and every saga defined in this module passed it at decoration time
    assert check_graph(
        list(spec_of(_ThreeKinds).machine.states), spec_of(_ThreeKinds).transitions
    ) == []


@saga
class _ThreeKinds:
    @step(readonly=True)
    def look(self, ctx): ...

    @step(when=lambda s: True)
    def maybe(self, ctx): ...

    @maybe.compensate
    def unmaybe(self, ctx): ...

    @step(pivot=True)
    def commit(self, ctx): ...

    @step(retriable=True)
    def tell(self, ctx): ...


def test_every_public_name_is_importable() -> None:
    import sagaflow

    missing = [name for name in sagaflow.__all__ if not hasattr(sagaflow, name)]
    assert missing == []
    namespace: dict[str, object] = {}
    exec("from sagaflow import *", namespace)
    assert {"saga", "step", "Orchestrator", "SagaSpec", "spec_of"} <= set(namespace)

"""Parallel groups and fan-outs at definition: ``parallel()``, ``@group.step`` and
``@step(each=...)`` give the expected GroupSpec / FanOutSpec / StepSpec; every malformed
one is refused, all problems at once, each with its fix."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import pytest

from sagaflow import (
    Parallel,
    Retry,
    SagaDefinitionError,
    StepKind,
    parallel,
    saga,
    spec_of,
    step,
    wait,
)
from sagaflow.spec import CompensationOrder, FanOutSpec, GroupSpec


def problems_of(build) -> list[str]:
    with pytest.raises(SagaDefinitionError) as info:
        build()
    return list(info.value.problems)


def only_problem(build) -> str:
    found = problems_of(build)
    assert len(found) == 1, found
    return found[0]


@attrs.frozen
class Line:
    sku: str


def sku_of(line: Line) -> str:
    return line.sku


def place_order() -> type:
    @saga
    class PlaceOrder:
        order_id: str
        lines: list[Line]
        book = parallel(limit=3, compensate="concurrent")

        @step(readonly=True)
        def validate(self, ctx): ...

        @book.step(timeout=5, retry=Retry(3))
        def reserve_stock(self, ctx): ...

        @reserve_stock.compensate
        def release_stock(self, ctx): ...

        @book.step
        def charge(self, ctx): ...

        @charge.compensate
        def refund(self, ctx): ...

        @step(each="lines", key=sku_of, limit=10, compensate="reverse")
        def pick(self, line, ctx): ...

        @pick.compensate
        def unpick(self, line, ctx): ...

        @step(pivot=True)
        def confirm(self, ctx): ...

    return PlaceOrder


def test_a_group_and_a_fan_out_give_their_specs() -> None:
    spec = spec_of(place_order())
    assert spec.groups == (
        GroupSpec(0, "book", 1, 2, 3, CompensationOrder.CONCURRENT, after_pivot=False),
    )
    assert spec.groups[0].members == range(1, 3)
    assert [s.name for s in spec.steps] == [
        "validate", "reserve_stock", "charge", "pick", "confirm"
    ]
    assert [s.group for s in spec.steps] == [None, 0, 0, None, None]
    assert spec.step("reserve_stock").timeout == 5.0
    assert spec.step("reserve_stock").retry == Retry(3)
    assert spec.step("charge").compensation_name == "refund"
    assert spec.step("pick").each == FanOutSpec("lines", sku_of, 10, CompensationOrder.REVERSE)
    assert spec.step("pick").kind is StepKind.COMPENSATABLE
    assert [s.each for s in spec.steps if s.name != "pick"] == [None] * 4
    assert [spec.state_of(i) for i in range(5)] == [
        "validate", "book", "book", "pick", "confirm"
    ]
    assert spec.pivot_index == 4


def test_parallel_defaults_and_a_group_after_the_pivot() -> None:
    @saga
    class After:
        ship = parallel()

        @step(pivot=True)
        def confirm(self, ctx): ...

        @ship.step(retriable=True)
        def email(self, ctx): ...

        @ship.step(readonly=True, when=lambda s: True)
        def audit(self, ctx): ...

    spec = spec_of(After)
    assert isinstance(After.__dict__["ship"], Parallel)
    assert spec.groups == (
        GroupSpec(0, "ship", 1, 2, None, CompensationOrder.CONCURRENT, after_pivot=True),
    )
    assert spec.step("email").retry.attempts > 1  # a retriable member's default retry


def test_a_fan_out_without_key_or_limit_and_with_a_tuple_or_sequence() -> None:
    @saga
    class Fan:
        a: tuple[int, ...]
        b: Sequence[int]
        c: list  # type: ignore[type-arg]

        @step(each="a", readonly=True)
        def one(self, item, ctx): ...

        @step(each="b", readonly=True)
        def two(self, item, ctx): ...

        @step(each="c", readonly=True)
        def three(self, item, ctx): ...

    spec = spec_of(Fan)
    assert [s.each for s in spec.steps] == [
        FanOutSpec(f, None, None, CompensationOrder.CONCURRENT) for f in "abc"
    ]


def test_the_fingerprint_covers_groups_and_fan_outs() -> None:
    def build(limit=3, order="concurrent", each_limit=10, grouped=True) -> str:
        @saga(name="F")
        class F:
            lines: list[Line]
            book = parallel(limit=limit, compensate=order)

            @book.step
            def a(self, ctx): ...

            @a.compensate
            def undo_a(self, ctx): ...

            if grouped:
                @book.step
                def b(self, ctx): ...
            else:
                @step
                def b(self, ctx): ...

            @b.compensate
            def undo_b(self, ctx): ...

            @step(each="lines", limit=each_limit, readonly=True)
            def c(self, item, ctx): ...

        return spec_of(F).fingerprint

    base = build()
    assert base == build()
    assert len({base, build(limit=2), build(order="reverse"), build(each_limit=None),
                build(grouped=False)}) == 5


def test_a_saga_without_groups_keeps_its_fingerprint() -> None:
    @saga(name="Plain")
    class Plain:
        @step(readonly=True)
        def a(self, ctx): ...

    # the fingerprint of a saga without groups or fan-outs is what it was before them
    import hashlib

    expected = hashlib.sha256(b"Plain/a:readonly:False:False").hexdigest()[:16]
    assert spec_of(Plain).fingerprint == expected


# ------------------------------------------------------------------ refusals, with fixes


def test_a_pivot_inside_a_group() -> None:
    def build():
        @saga
        class S:
            g = parallel()

            @g.step(readonly=True)
            def a(self, ctx): ...

            @g.step(pivot=True)
            def b(self, ctx): ...

    assert "pivot is one call" in only_problem(build)
    assert "define it outside the group" in only_problem(build)


def test_a_compensatable_member_after_the_pivot() -> None:
    def build():
        @saga
        class S:
            g = parallel()

            @step(pivot=True)
            def p(self, ctx): ...

            @g.step(retriable=True)
            def a(self, ctx): ...

            @g.step
            def b(self, ctx): ...

            @b.compensate
            def undo_b(self, ctx): ...

    problem = only_problem(build)
    assert "after the pivot 'p'" in problem and "'b' is compensatable" in problem
    assert "make it retriable=True" in problem


def test_an_empty_group() -> None:
    def build():
        @saga
        class S:
            g = parallel()

            @step(readonly=True)
            def a(self, ctx): ...

    problem = only_problem(build)
    assert "group 'g' (parallel()) has no members" in problem
    assert "@g.step" in problem


def test_members_not_contiguous() -> None:
    def build():
        @saga
        class S:
            g = parallel()

            @g.step(readonly=True)
            def a(self, ctx): ...

            @step(readonly=True)
            def b(self, ctx): ...

            @g.step(readonly=True)
            def c(self, ctx): ...

    problem = only_problem(build)
    assert "not defined one after another (b between them)" in problem
    assert "define a group's members together" in problem


def test_a_wait_cannot_be_a_member() -> None:
    def build():
        @saga
        class S:
            g = parallel()

            @g.step
            @wait("go", timeout=60)
            def w(self, ctx): ...

    assert any("not a function" in p for p in problems_of(build))


def test_fan_out_field_not_a_field_or_not_a_collection() -> None:
    def build_missing():
        @saga
        class S:
            lines: list[int]

            @step(each="items", readonly=True)
            def a(self, item, ctx): ...

    problem = only_problem(build_missing)
    assert "each='items' must name a field of the saga (fields: lines)" in problem

    def build_scalar():
        @saga
        class S:
            count: int

            @step(each="count", readonly=True)
            def a(self, item, ctx): ...

    problem = only_problem(build_scalar)
    assert "annotated int" in problem and "use a list or tuple" in problem


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "3"])
def test_a_limit_below_one_or_not_an_int(limit) -> None:
    def build_group():
        @saga
        class S:
            g = parallel(limit=limit)

            @g.step(readonly=True)
            def a(self, ctx): ...

    def build_fan():
        @saga
        class S:
            xs: list[int]

            @step(each="xs", limit=limit, readonly=True)
            def a(self, item, ctx): ...

    for build in (build_group, build_fan):
        problem = only_problem(build)
        assert "limit must be a whole number >= 1" in problem and repr(limit) in problem


def test_compensate_not_concurrent_or_reverse() -> None:
    def build():
        @saga
        class S:
            xs: list[int]
            g = parallel(compensate="backwards")

            @g.step(readonly=True)
            def a(self, ctx): ...

            @step(each="xs", compensate="sideways", readonly=True)
            def b(self, item, ctx): ...

    found = problems_of(build)
    assert len(found) == 2
    assert all("compensate must be one of 'concurrent', 'reverse'" in p for p in found)


def test_two_members_with_one_name() -> None:
    def build():
        @saga
        class S:
            g = parallel()

            @g.step(readonly=True)
            def a(self, ctx): ...

            @g.step(readonly=True, name="a")
            def b(self, ctx): ...

    assert "duplicate step name" in only_problem(build)


def test_a_group_name_that_clashes_with_a_step_or_is_reserved() -> None:
    def build_clash():
        @saga
        class S:
            g = parallel()

            @g.step(readonly=True, name="g")
            def a(self, ctx): ...

    assert "a step is also called 'g'" in only_problem(build_clash)

    def build_reserved():
        @saga
        class S:
            compensating_x = parallel()

            @compensating_x.step(readonly=True)
            def a(self, ctx): ...

    problem = only_problem(build_reserved)
    assert "group 'compensating_x': the name is reserved" in problem and "rename it" in problem


def test_fan_out_wrong_signatures() -> None:
    def build():
        @saga
        class S:
            xs: list[int]

            @step(each="xs")
            def a(self, ctx): ...

            @a.compensate
            def undo_a(self, ctx): ...

    found = problems_of(build)
    assert len(found) == 2
    assert all("must take (self, item, ctx)" in p for p in found)


def test_a_member_with_a_wrong_signature() -> None:
    def build():
        @saga
        class S:
            g = parallel()

            @g.step(readonly=True)
            def a(self, item, ctx): ...

    assert "must take (self, ctx)" in only_problem(build)


def test_each_on_a_pivot() -> None:
    def build():
        @saga
        class S:
            xs: list[int]

            @step(each="xs", pivot=True)
            def a(self, item, ctx): ...

    problem = only_problem(build)
    assert "is the pivot and has each=" in problem and "a pivot is one call" in problem


def test_key_without_each() -> None:
    def build():
        @saga
        class S:
            @step(key=sku_of, readonly=True)
            def a(self, ctx): ...

    problem = only_problem(build)
    assert "key= without each=" in problem and "give each='a_list_field'" in problem


def test_a_non_callable_key() -> None:
    def build():
        @saga
        class S:
            xs: list[int]

            @step(each="xs", key="sku", readonly=True)  # type: ignore[arg-type]
            def a(self, item, ctx): ...

    assert "key must be a callable of an item" in only_problem(build)


def test_every_problem_at_once() -> None:
    def build():
        @saga
        class S:
            xs: list[int]
            g = parallel(limit=0)
            empty = parallel()

            @g.step(pivot=True)
            def a(self, ctx): ...

            @step(each="nope", retriable=True)
            def b(self, item, ctx): ...

    found = problems_of(build)
    assert len(found) == 4, found


PlaceOrderSaga = place_order()


def test_sagaflow_check_shows_groups_and_fan_outs() -> None:
    from click.testing import CliRunner

    from sagaflow.cli import main

    out = CliRunner().invoke(main, ["check", f"{__name__}:PlaceOrderSaga"])
    assert out.exit_code == 0, out.output
    assert ": 5 steps," in out.output
    assert (
        "  parallel groups:\n    book: reserve_stock, charge (3 at once, undone concurrent)\n"
        in out.output
    )
    assert (
        "  fan-outs:\n    pick: each item of lines (10 at once, key sku_of, undone reverse)\n"
        in out.output
    )

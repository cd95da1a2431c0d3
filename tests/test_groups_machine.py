"""The machine of sagas with parallel groups and fan-outs: a group is one state (its
name), ``compensating_<group>`` undoes its members; exactly the edges the engine relies on."""

from __future__ import annotations

import attrs

from sagaflow import parallel, saga, spec_of, step
from sagaflow.machine import check_graph, units_of


def edges(cls: type) -> set[tuple[str, str, str]]:
    spec = spec_of(cls)
    assert check_graph(list(spec.machine.states), spec.transitions) == []
    return set(spec.transitions)


def test_a_group_before_the_pivot() -> None:
    @saga
    class S:
        book = parallel(limit=2)

        @step
        def a(self, ctx): ...

        @a.compensate
        def undo_a(self, ctx): ...

        @book.step
        def m1(self, ctx): ...

        @m1.compensate
        def undo_m1(self, ctx): ...

        @book.step(readonly=True)
        def m2(self, ctx): ...

        @step(pivot=True)
        def p(self, ctx): ...

    spec = spec_of(S)
    assert list(spec.machine.states) == [
        "not_started", "a", "book", "p", "compensating_a", "compensating_book",
        "completed", "compensated", "failed",
    ]
    assert [u.name for u in units_of(spec.steps, spec.groups)] == ["a", "book", "p"]
    assert edges(S) == {
        ("not_started", "start", "a"),
        ("a", "advance", "book"),
        ("a", "compensate", "compensating_a"),
        ("a", "compensate", "compensated"),
        ("book", "advance", "p"),
        ("book", "compensate", "compensating_book"),
        ("book", "compensate", "compensating_a"),
        ("p", "advance", "completed"),
        ("p", "fail", "failed"),
        ("p", "compensate", "compensating_book"),
        ("compensating_book", "undone", "compensating_a"),
        ("compensating_book", "undo_failed", "compensating_a"),
        ("compensating_a", "undone", "compensated"),
        ("compensating_a", "undone", "failed"),
        ("compensating_a", "undo_failed", "failed"),
        ("failed", "retry", "compensating_a"),
        ("failed", "retry", "compensating_book"),
        ("failed", "retry", "p"),
    }


def test_a_group_of_retriable_members_after_the_pivot() -> None:
    @saga
    class S:
        notify = parallel()

        @step(pivot=True)
        def p(self, ctx): ...

        @notify.step(retriable=True)
        def email(self, ctx): ...

        @notify.step(retriable=True)
        def sms(self, ctx): ...

        @step(retriable=True)
        def close(self, ctx): ...

    assert spec_of(S).groups[0].after_pivot
    assert edges(S) == {
        ("not_started", "start", "p"),
        ("p", "advance", "notify"),
        ("p", "fail", "failed"),
        ("p", "compensate", "compensated"),
        ("notify", "advance", "close"),
        ("notify", "fail", "failed"),
        ("close", "advance", "completed"),
        ("close", "fail", "failed"),
        ("failed", "retry", "p"),
        ("failed", "retry", "notify"),
        ("failed", "retry", "close"),
    }


def test_a_fan_out_never_stops_the_undo_walk() -> None:
    @saga
    class S:
        lines: list[int]

        @step
        def a(self, ctx): ...

        @a.compensate
        def undo_a(self, ctx): ...

        @step(each="lines")
        def pick(self, item, ctx): ...

        @pick.compensate
        def unpick(self, item, ctx): ...

        @step
        def b(self, ctx): ...

        @b.compensate
        def undo_b(self, ctx): ...

    got = edges(S)
    # from b, the walk passes the fan-out (perhaps no items) and stops at a
    assert {e for e in got if e[0] == "b" and e[1] == "compensate"} == {
        ("b", "compensate", "compensating_b"),
        ("b", "compensate", "compensating_pick"),
        ("b", "compensate", "compensating_a"),
    }
    assert {e for e in got if e[0] == "compensating_b"} == {
        ("compensating_b", "undone", "compensating_pick"),
        ("compensating_b", "undo_failed", "compensating_pick"),
        ("compensating_b", "undone", "compensating_a"),
        ("compensating_b", "undo_failed", "compensating_a"),
    }
    assert {e for e in got if e[0] == "pick"} == {
        ("pick", "advance", "b"),
        ("pick", "compensate", "compensating_pick"),
        ("pick", "compensate", "compensating_a"),
    }


def test_a_conditional_member_skips_inside_its_group() -> None:
    def is_big(s: object) -> bool:
        return True

    @saga
    class S:
        g = parallel()

        @g.step(when=is_big)
        def m(self, ctx): ...

        @m.compensate
        def undo_m(self, ctx): ...

        @g.step(readonly=True)
        def n(self, ctx): ...

        @step
        def b(self, ctx): ...

        @b.compensate
        def undo_b(self, ctx): ...

    got = edges(S)
    assert not any(t == "skip" for _, t, _ in got)  # a member's guard skips inside
    # the group's only compensatable member is conditional: the walk goes past it
    assert {e for e in got if e[0] == "compensating_b"} == {
        ("compensating_b", "undone", "compensating_g"),
        ("compensating_b", "undo_failed", "compensating_g"),
        ("compensating_b", "undone", "compensated"),
        ("compensating_b", "undone", "failed"),
        ("compensating_b", "undo_failed", "failed"),
    }
    assert ("g", "compensate", "compensating_g") in got


def test_a_group_with_only_readonly_members() -> None:
    @saga
    class S:
        look = parallel()

        @step
        def a(self, ctx): ...

        @a.compensate
        def undo_a(self, ctx): ...

        @look.step(readonly=True)
        def x(self, ctx): ...

        @look.step(readonly=True)
        def y(self, ctx): ...

    spec = spec_of(S)
    assert "compensating_look" not in spec.machine.states
    assert {e for e in edges(S) if e[0] == "look"} == {
        ("look", "advance", "completed"),
        ("look", "compensate", "compensating_a"),
    }


def test_a_readonly_group_after_the_pivot_fails_and_retries() -> None:
    @saga
    class S:
        look = parallel()

        @step(pivot=True)
        def p(self, ctx): ...

        @look.step(readonly=True)
        def x(self, ctx): ...

    got = edges(S)
    assert ("look", "fail", "failed") in got and ("failed", "retry", "look") in got
    assert not any(e[0] == "look" and e[1] == "compensate" for e in got)


def test_check_graph_is_clean_for_a_mixed_saga() -> None:
    @attrs.frozen
    class Line:
        sku: str

    @saga
    class Mixed:
        lines: list[Line]
        book = parallel(limit=3, compensate="reverse")
        tell = parallel()

        @step(readonly=True)
        def validate(self, ctx): ...

        @book.step
        def reserve(self, ctx): ...

        @reserve.compensate
        def release(self, ctx): ...

        @book.step(when=lambda s: True)
        def charge(self, ctx): ...

        @charge.compensate
        def refund(self, ctx): ...

        @step(each="lines", key=lambda line: line.sku)
        def pick(self, line, ctx): ...

        @pick.compensate
        def unpick(self, line, ctx): ...

        @step(pivot=True)
        def confirm(self, ctx): ...

        @step(each="lines", retriable=True)
        def label(self, line, ctx): ...

        @tell.step(retriable=True)
        def email(self, ctx): ...

        @tell.step(readonly=True)
        def log(self, ctx): ...

    spec = spec_of(Mixed)
    assert [spec.state_of(i) for i in range(len(spec.steps))] == [
        "validate", "book", "book", "pick", "confirm", "label", "tell", "tell"
    ]
    edges(Mixed)  # check_graph clean

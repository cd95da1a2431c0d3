"""Diagrams of sagas with parallel groups and fan-outs: a group is a fork bar, its members
(each with its own compensation) and a join bar, in DOT and Mermaid (and so SVG); a
fan-out is its step marked with its field and limit; a run colours each member by its
step record and counts a fan-out's items."""

from __future__ import annotations

from test_groups_definition import Line, place_order

from sagaflow import SagaResult, SagaStatus, StepRecord, StepStatus, spec_of
from sagaflow.diagram import render
from sagaflow.records import CompensationStatus

PlaceOrder = place_order()


def test_dot_draws_the_fork_the_members_and_the_join() -> None:
    dot = render(PlaceOrder, "dot")
    assert "subgraph cluster_book {" in dot
    assert 'label="book\\nparallel, ≤3 at once\\nundo concurrent"' in dot
    assert 'book [label="" ' in dot  # the fork bar is the group's state
    assert '"book/join" [label="" ' in dot
    for member, undo in (("reserve_stock", "release_stock"), ("charge", "refund")):
        assert f'{member} [label="{member}\\nundo by {undo}"' in dot
        assert f"book -> {member} " in dot and f'{member} -> "book/join" ' in dot
    # the group's transitions leave from its join bar
    assert '"book/join" -> pick [label=advance' in dot
    assert '"book/join" -> compensating_book [label=compensate' in dot
    assert 'compensating_book [label="compensating_book\\nundo by release_stock, refund' in dot
    # the fan-out: its field and limit; its compensation per item, in reverse
    assert 'pick [label="pick\\n\u00d7lines (≤10)"' in dot
    assert (
        'compensating_pick [label="compensating_pick\\nundo by unpick\\neach item, reverse"'
        in dot
    )
    assert render(PlaceOrder, "dot") == dot  # byte-stable


def test_mermaid_draws_the_fork_the_members_and_the_join() -> None:
    text = render(PlaceOrder, "mermaid")
    lines = text.splitlines()
    for expected in (
        "    state book <<fork>>",
        "    state book_join <<join>>",
        "    book --> reserve_stock",
        "    reserve_stock --> book_join",
        "    book --> charge",
        "    charge --> book_join",
        "    note left of book : book#58; parallel, ≤3 at once, undo concurrent",
        "    validate --> book : advance",
        "    book_join --> pick : advance",
        "    reserve_stock : undo by release_stock",
        "    pick : \u00d7lines (≤10)",
        "    class pick,reserve_stock,charge forwardStep",
    ):
        assert expected in lines, expected
    assert render(PlaceOrder, "mermaid") == text


def test_svg_renders() -> None:
    svg = render(PlaceOrder, "svg")
    assert "<svg" in svg and "reserve_stock" in svg and "cluster_book" in svg


def classed(lines: list[str], look: str) -> list[str]:
    """The Mermaid ids given the class ``look``."""
    [members] = [line.split()[1] for line in lines if line.startswith("    class ")
                 and line.endswith(f" {look}")]
    return members.split(",")


def result(steps: list[StepRecord], path: list[tuple[str, str, str]],
           status: SagaStatus = SagaStatus.RUNNING) -> SagaResult:
    data = PlaceOrder(order_id="o-1", lines=[Line("a"), Line("b"), Line("c")])
    return SagaResult(
        "s-1", spec_of(PlaceOrder).name, status, None, (), (), tuple(steps), data,
        0.0, 1.0, None if status is SagaStatus.RUNNING else 1.0, None, tuple(path),
    )


def test_a_run_colours_each_member_by_its_record() -> None:
    run = result(
        [
            StepRecord("validate", StepStatus.COMPLETED, 1),
            StepRecord("reserve_stock", StepStatus.COMPLETED, 1),
            StepRecord("charge", StepStatus.RUNNING, 2),
            StepRecord("pick"),
            StepRecord("confirm"),
        ],
        [("not_started", "start", "validate"), ("validate", "advance", "book")],
    )
    dot = render(run, "dot")
    member = 'reserve_stock [label="reserve_stock\\nundo by release_stock\\n'
    assert member + 'done" color="#2e7d32"' in dot
    assert 'charge [label="charge\\nundo by refund\\nrunning, attempt 2" color="#1565c0"' in dot
    assert 'label="book\\nparallel, ≤3 at once\\nundo concurrent\\n<< current state >>"' in dot
    assert 'book [label="" color="#1565c0" fillcolor="#1565c0"' in dot
    text = render(run, "mermaid").splitlines()
    assert "reserve_stock" in classed(text, "ranDone")
    assert "charge" in classed(text, "ranRunning")
    note = "    note left of book : book#58; parallel, ≤3 at once, undo concurrent"
    assert note + ", current state" in text
    assert render(run, "dot") == dot


def test_a_run_shows_members_undone_and_a_fan_outs_items() -> None:
    run = result(
        [
            StepRecord("validate", StepStatus.COMPLETED, 1),
            StepRecord("reserve_stock", StepStatus.COMPLETED, 1,
                       compensation=CompensationStatus.COMPENSATED),
            StepRecord("charge", StepStatus.COMPLETED, 1,
                       compensation=CompensationStatus.FAILED, compensation_error="bank down"),
            StepRecord("pick", StepStatus.FAILED, 1, first_item=5, items=3,
                       compensation=CompensationStatus.COMPENSATED),
            StepRecord("confirm"),
            StepRecord("pick[a]", StepStatus.COMPLETED, 1,
                       compensation=CompensationStatus.COMPENSATED),
            StepRecord("pick[b]", StepStatus.FAILED, 1, error="no stock"),
            StepRecord("pick[c]", StepStatus.PENDING),
        ],
        [
            ("not_started", "start", "validate"), ("validate", "advance", "book"),
            ("book", "advance", "pick"), ("pick", "compensate", "compensating_pick"),
            ("compensating_pick", "undone", "compensating_book"),
            ("compensating_book", "undo_failed", "failed"),
        ],
        SagaStatus.FAILED,
    )
    dot = render(run, "dot")
    member = 'reserve_stock [label="reserve_stock\\nundo by release_stock\\n'
    assert member + 'done, undone" color="#b26a00"' in dot
    assert "charge\\nundo by refund\\ndone, COULD NOT BE UNDONE, bank down" in dot
    assert "3 items: 1 undone, 1 failed, 1 pending" in dot
    # the group's undo: one member could not be undone
    undo = 'compensating_book [label="compensating_book\\nundo by release_stock, refund\\n'
    assert undo + 'concurrent" color="#c62828"' in dot
    text = render(run, "mermaid")
    assert "reserve_stock" in classed(text.splitlines(), "ranUndone")
    assert "charge" in classed(text.splitlines(), "ranUndoFailed")
    assert render(run, "mermaid") == text

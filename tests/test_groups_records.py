"""Records of parallel groups and fan-outs (issue 12): a fan-out's item records after
the saga's steps, a member or item waiting to retry. They are checked on load (damage is
a CorruptRecord naming it, never a crash), stored and loaded by every store (the steps
column re-encodes only what changed, also when item records were appended), carried by
the whole-record JSON, and shown by ``sagaflow sagas show`` under their group or step.

No group saga runs yet here (the engine comes separately): the records are made by hand,
against a spec made a fan-out/group one with ``attrs.evolve``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from postgres_cluster import cluster_url, drop_schema, fresh_schema

import sagaflow.codec as codec
from sagaflow import (
    CompensationStatus,
    CorruptRecord,
    SagaRecord,
    SagaStatus,
    StepRecord,
    StepStatus,
    saga,
    spec_of,
    step,
)
from sagaflow.cli.describe import describe_record
from sagaflow.codec.steps import dump_steps, load_steps
from sagaflow.engine import new_record
from sagaflow.spec import CompensationOrder, FanOutSpec, GroupSpec, SagaSpec
from sagaflow.stores import MemoryStore, Store
from sagaflow.stores._check import check_record
from sagaflow.stores.sqlite import SQLiteStore

NOW = 1_700_000_000.0


@saga(name="groups-records-shop")
class Shop:
    lines: list[str] = attrs.field(factory=list)

    @step(readonly=True)
    def validate(self, ctx):
        pass

    @step
    def reserve(self, ctx):
        pass

    @reserve.compensate
    def release(self, ctx):
        pass

    @step
    def charge(self, ctx):
        pass

    @charge.compensate
    def refund(self, ctx):
        pass

    @step
    def pick(self, ctx):
        pass

    @pick.compensate
    def unpick(self, ctx):
        pass

    @step(pivot=True)
    def confirm(self, ctx):
        pass


PLAIN = spec_of(Shop)
CONCURRENT = CompensationOrder.CONCURRENT


def grouped() -> SagaSpec:
    """Shop as the definitions will make it: reserve and charge a parallel group
    ``book``, pick a fan-out over ``lines``; its machine has the group's states."""
    steps = list(PLAIN.steps)
    steps[1] = attrs.evolve(steps[1], group=0)
    steps[2] = attrs.evolve(steps[2], group=0)
    steps[3] = attrs.evolve(steps[3], each=FanOutSpec("lines", None, None, CONCURRENT))
    edges = {
        ("not_started", "start", "validate"), ("validate", "advance", "book"),
        ("book", "advance", "pick"), ("pick", "advance", "confirm"),
        ("confirm", "advance", "completed"), ("book", "compensate", "compensating_book"),
        ("pick", "compensate", "compensating_pick"),
        ("compensating_pick", "undone", "compensating_book"),
        ("compensating_book", "undone", "compensated"),
        ("compensating_pick", "undo_failed", "failed"),
    }  # fmt: skip
    return attrs.evolve(
        PLAIN, steps=tuple(steps), groups=(GroupSpec(0, "book", 1, 2, 3, CONCURRENT),),
        fingerprint=PLAIN.fingerprint + "-grouped", transitions=frozenset(edges),
    )  # fmt: skip


SPEC = grouped()


def picking(keys: tuple[str, ...] = ("a", "b", "c")) -> SagaRecord:
    """A run of the grouped Shop at its fan-out: the group done (charge after a retry),
    the items appended, one done, one waiting to retry, one not started."""
    record = new_record(PLAIN, Shop(list(keys)), "g-1", NOW)
    record.fingerprint = SPEC.fingerprint
    record.status, record.state, record.cursor = SagaStatus.RUNNING, "pick", 3
    for s in record.steps[:3]:
        s.status, s.attempts, s.started_at, s.finished_at = (
            StepStatus.COMPLETED, 1, NOW + 1, NOW + 2,
        )
    record.steps[2].attempts = 2
    pick = record.steps[3]
    pick.status, pick.started_at = StepStatus.RUNNING, NOW + 3
    pick.first_item, pick.items = len(record.steps), len(keys)
    record.steps += [StepRecord(f"pick[{k}]") for k in keys]
    if keys:
        done = record.steps[5]
        done.status, done.attempts, done.finished_at = StepStatus.COMPLETED, 1, NOW + 4
    if len(keys) > 1:
        wait = record.steps[6]
        wait.status, wait.attempts, wait.wake_at = StepStatus.RUNNING, 1, NOW + 9
        wait.error = "ConnectionError: busy"
    return record


def damage(record: SagaRecord, spec: SagaSpec = SPEC) -> CorruptRecord:
    with pytest.raises(CorruptRecord) as caught:
        check_record(record, spec)
    return caught.value


# --- the load checks -----------------------------------------------------------------------


def test_a_record_with_items_and_a_member_waiting_is_fine() -> None:
    check_record(picking(), SPEC)
    check_record(picking(()), SPEC)  # an empty collection: no items
    fresh = new_record(PLAIN, Shop(), "g-2", NOW)
    fresh.fingerprint = SPEC.fingerprint
    check_record(fresh, SPEC)  # not started: no items yet


def test_items_are_refused_by_a_spec_without_the_fan_out() -> None:
    record = picking()
    record.fingerprint = PLAIN.fingerprint
    record.state = "pick"
    bad = damage(record, PLAIN)
    assert bad.column == "steps" and "not a fan-out" in bad.reason


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda r: r.steps.append(StepRecord("pick[z]")), "belong to no fan-out"),
        (lambda r: r.steps.pop(), "expected from position 5"),
        (lambda r: setattr(r.steps[3], "first_item", 6), "expected from position 5"),
        (lambda r: setattr(r.steps[3], "items", 4), "expected from position 5"),
        (lambda r: setattr(r.steps[3], "items", 2), "belong to no fan-out"),
        (lambda r: setattr(r.steps[6], "name", "charge[b]"), "is named pick[KEY]"),
        (lambda r: setattr(r.steps[6], "name", "pick[b"), "is named pick[KEY]"),
        (lambda r: setattr(r.steps[6], "items", 1), "has no items itself"),
        (lambda r: setattr(r.steps[1], "items", 1), "'reserve' is not a fan-out"),
        (lambda r: r.steps.insert(4, StepRecord("extra")), "has 5 steps"),
        (lambda r: r.steps.__delitem__(4), "has 5 steps"),
    ],
)
def test_damaged_items_are_refused_by_name(change: Any, says: str) -> None:
    record = picking()
    change(record)
    bad = damage(record)
    assert bad.column == "steps" and says in bad.reason and bad.saga_id == "g-1"


@pytest.mark.parametrize(
    "bad",
    [{"first_item": -1}, {"items": "3"}, {"items": True}, {"wake_at": float("nan")},
     {"wake_at": "soon"}],
)
def test_the_new_columns_have_their_types(bad: dict[str, Any]) -> None:
    record = picking()
    for name, value in bad.items():
        setattr(record.steps[6], name, value)
    for spec in (SPEC, None):
        found = damage(record, spec)  # type: ignore[arg-type]
        assert found.column == "steps" and "step record #6" in found.reason


def compensating(undo: list[int], cursor: int = 0) -> SagaRecord:
    record = picking()
    record.status, record.cursor, record.undo = SagaStatus.COMPENSATING, cursor, undo
    record.state = "compensating_" + SPEC.state_of(undo[cursor])
    return record


@pytest.mark.parametrize("undo", [[3, 2, 1], [3, 1, 2], [2, 1], [1, 2], [2], [3]])
def test_a_groups_members_are_undone_in_any_order_among_themselves(undo: list[int]) -> None:
    check_record(compensating(undo), SPEC)
    check_record(compensating(undo, len(undo) - 1), SPEC)


@pytest.mark.parametrize(
    ("undo", "says"),
    [
        ([2, 3], "newest first"),  # the group before the fan-out after it
        ([1, 3, 2], "newest first"),
        ([3, 3], "each step index once"),
        ([2, 1, 2], "each step index once"),
        ([0], "not a step with a compensation"),
        ([4], "not a step with a compensation"),
    ],
)
def test_the_undo_list_otherwise_keeps_its_checks(undo: list[int], says: str) -> None:
    record = compensating([3])
    record.undo = undo
    bad = damage(record)
    assert bad.column == "undo" and says in bad.reason


def test_the_undo_list_without_groups_is_newest_first() -> None:
    record = new_record(PLAIN, Shop(), "g-3", NOW)
    record.status, record.state, record.undo = SagaStatus.COMPENSATING, "compensating_charge", [
        1, 2,
    ]
    bad = damage(record, PLAIN)
    assert bad.column == "undo" and "newest first" in bad.reason


def test_a_running_saga_at_a_group_is_in_the_groups_state() -> None:
    record = picking(())
    record.state, record.cursor = "book", 1
    check_record(record, SPEC)
    record.state = "validate"  # a state of the machine, not the one at a member
    bad = damage(record)
    assert bad.column == "state" and "'book'" in bad.reason


def test_an_items_failed_compensation_is_an_incident() -> None:
    record = picking()
    record.status, record.state, record.cursor = SagaStatus.FAILED, "failed", 0
    record.failures = {"pick[a]": "boom"}
    check_record(record, SPEC)
    record.failures = {"pick[q]": "boom"}
    assert damage(record).column == "failures"


# --- the codec: old records unchanged, new fields carried ----------------------------------

#: step records as sagaflow wrote them before groups (what a store of then holds)
OLD_STEPS = (
    '[{"name":"validate","status":"COMPLETED","attempts":1,"started_at":1.5,'
    '"finished_at":2.5},{"name":"reserve","status":"COMPLETED","attempts":2,"error":'
    '"ConnectionError: busy","compensation":"COMPENSATED","compensation_attempts":1},'
    '{"name":"charge"}]'
)


def test_an_old_record_decodes_and_encodes_byte_identical() -> None:
    steps = load_steps(OLD_STEPS)
    assert [(s.wake_at, s.first_item, s.items) for s in steps] == [(None, 0, 0)] * 3
    assert steps[1].compensation is CompensationStatus.COMPENSATED
    assert dump_steps(steps) == OLD_STEPS
    assert codec.default_codec.dump_steps(steps) == OLD_STEPS


def test_the_new_fields_round_trip() -> None:
    record = picking()
    text = dump_steps(record.steps)
    assert '"first_item":5,"items":3' in text and '"wake_at":1700000009.0' in text
    assert load_steps(text) == record.steps
    whole = codec.loads(codec.dumps(record), Shop)
    assert whole.steps == record.steps
    assert codec.decode_record(codec.encode_record(record), None).steps == record.steps


# --- the stores: items appended after the first save ---------------------------------------

STORES = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    schema = url = None
    if request.param == "postgres":
        from sagaflow.stores.postgres import PostgresStore

        url = cluster_url(request.config)
        schema = fresh_schema()
        s: Store = PostgresStore(url, schema=schema)
    elif request.param == "sqlite":
        s = SQLiteStore(tmp_path / "sagas.db")
    else:
        s = MemoryStore()
    yield s
    close = getattr(s, "close", None)
    if close is not None:
        close()
    if url is not None and schema is not None:
        drop_schema(url, schema)


def same_steps(store: Store, record: SagaRecord) -> None:
    loaded = store.load(record.saga_id)
    assert loaded is not None
    assert loaded.steps == record.steps
    assert (loaded.status, loaded.state, loaded.cursor) == (
        record.status, record.state, record.cursor,
    )


def test_items_appended_after_the_first_save_are_stored(store: Store) -> None:
    record = picking(())
    record.steps[3].items = 0
    assert store.create(record) is None
    same_steps(store, record)
    # the fan-out starts: its items are appended, the step record points at them
    record.steps[3].first_item, record.steps[3].items = 5, 2
    record.steps += [StepRecord("pick[a]"), StepRecord("pick[b]")]
    store.save(record)
    same_steps(store, record)
    # one item changes (only it is re-encoded), then one waits to retry
    record.steps[5].status, record.steps[5].attempts = StepStatus.COMPLETED, 1
    store.save(record)
    same_steps(store, record)
    record.steps[6].status, record.steps[6].wake_at = StepStatus.RUNNING, NOW + 5
    store.save(record)
    same_steps(store, record)
    # a second fan-out's worth of records later (the list only grows)
    record.steps += [StepRecord("pick[c]")]
    record.steps[3].items = 3
    store.save(record)
    same_steps(store, record)


# --- sagaflow sagas show ------------------------------------------------------------------


def steps_table(record: SagaRecord, spec: SagaSpec | None) -> list[str]:
    lines = describe_record(record, spec)
    start = lines.index("steps:") + 1
    return lines[start:lines.index("", start)]


def test_show_puts_members_under_their_group_and_items_under_their_step() -> None:
    table = steps_table(picking(), SPEC)
    assert [line.split()[:3] for line in table] == [
        ["#", "step", "kind"],
        ["1", "validate", "readonly"],
        ["book:", "parallel", "2"],
        ["2", "reserve", "compensatable"],
        ["3", "charge", "compensatable"],
        ["4", "pick", "compensatable,"],
        ["4.1", "pick[a]", "item"],
        ["4.2", "pick[b]", "item"],
        ["4.3", "pick[c]", "item"],
        ["5", "confirm", "pivot"],
    ]
    text = "\n".join(table)
    assert "2 members, 3 at once, compensate concurrent" in text
    assert "compensatable, each lines" in text
    # members and items are indented under their group and step
    assert "   reserve" in table[3] and "   pick[a]" in table[6]
    assert "RUNNING (retry at 2023-11-14T22:13:29.000Z)" in table[7]
    assert "ConnectionError: busy" in table[7]
    assert table[4].split()[4] == "2"  # charge's attempts


def test_show_without_the_class_still_groups_items() -> None:
    table = steps_table(picking(), None)
    assert [line.split()[0] for line in table] == [
        "#", "1", "2", "3", "4", "4.1", "4.2", "4.3", "5",
    ]


def test_show_of_a_saga_without_groups_is_unchanged() -> None:
    record = new_record(PLAIN, Shop(), "g-4", NOW)
    record.steps[1].status, record.steps[1].attempts = StepStatus.COMPLETED, 1
    record.steps[1].compensation = CompensationStatus.FAILED
    record.steps[1].compensation_attempts = 3
    record.steps[1].compensation_error = "boom"
    assert steps_table(record, PLAIN) == [
        "  #  step      kind           status     attempts  compensation  attempts  error",
        "  1  validate  readonly       PENDING    0         -",
        "  2  reserve   compensatable  COMPLETED  1         FAILED        3         boom",
        "  3  charge    compensatable  PENDING    0         -",
        "  4  pick      compensatable  PENDING    0         -",
        "  5  confirm   pivot          PENDING    0         -",
    ]


def test_sagas_show_prints_a_stored_fan_outs_items(tmp_path: Path) -> None:
    """Through the command, from a SQLite file: the class known here has another
    definition than the record's, so kinds are shown but the record as stored is not
    checked against it; the items still sit under their step, the diagram is not drawn."""
    from click.testing import CliRunner

    from sagaflow.cli import main

    store = SQLiteStore(tmp_path / "sagas.db")
    store.create(picking())
    store.close()
    result = CliRunner().invoke(
        main, ["sagas", "show", "g-1", "--store", f"sqlite:///{tmp_path / 'sagas.db'}",
               "--import", "test_groups_records"], catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    rows = [line.split()[:2] for line in out[out.index("steps:") + 1:]][:9]
    assert rows[5:8] == [["4.1", "pick[a]"], ["4.2", "pick[b]"], ["4.3", "pick[c]"]]
    assert "RUNNING (retry at 2023-11-14T22:13:29.000Z)" in result.output
    assert "diagram: not drawn: the record was made by another definition" in result.output

"""The codec: records to JSON and back, faithfully, with clear errors for what cannot be."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import uuid
import zoneinfo
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_sagas import (
    ORDER_SPEC,
    Address,
    Charged,
    Item,
    Level,
    Order,
    Tier,
    assert_same,
    possible,
    record_of,
)

from sagaflow import (
    AlreadyExecuting,
    CompensationError,
    CompensationStatus,
    InvalidTransition,
    SagaCancelled,
    SagaDeadlineExceeded,
    SagaDefinitionChanged,
    SagaDefinitionError,
    SagaflowError,
    SagaStatus,
    StepError,
    StepRecord,
    StepStatus,
    StepTimeout,
    events,
    saga,
    step,
)
from sagaflow.codec import (
    Codec,
    CodecError,
    CorruptRecord,
    decode_record,
    default_codec,
    dumps,
    encode_record,
    import_path,
    loads,
)
from sagaflow.events import LifecycleEvent
from sagaflow.stores.sqlite import SQLiteStore

# -- strategies ------------------------------------------------------------------

plain_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
any_text = st.text(max_size=12)  # lone surrogates too: JSON escapes them
timestamps = st.floats(min_value=0, max_value=4e9, allow_nan=False)
maybe_ts = st.none() | timestamps
decimals = st.decimals(allow_nan=False)
zones = st.sampled_from(
    [None, dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)),
     zoneinfo.ZoneInfo("Europe/Paris")]
)
datetimes = st.datetimes(timezones=zones, allow_imaginary=False)
items = st.builds(Item, sku=any_text, qty=st.integers(), price=decimals)
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | any_text
    | decimals
    | st.uuids()
    | datetimes
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.binary(max_size=8)
    | st.sampled_from(Tier)
    | st.sampled_from(Level)
    | items
)
hashables = st.recursive(
    st.none() | st.booleans() | st.integers() | any_text | st.uuids() | decimals,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=4,
)
#: What a field typed Any, or a domain event, may hold: it must come back as itself.
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(any_text | st.sampled_from(["$type", "$x", "items"]), inner,
                          max_size=3)
        | st.dictionaries(hashables, inner, max_size=3)
        | st.tuples(inner, inner)
        | st.sets(hashables, max_size=3)
        | st.frozensets(hashables, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def orders(draw: st.DrawFn) -> Order:
    order = Order(
        order_id=draw(st.uuids()),
        amount=draw(decimals),
        placed=draw(st.none() | datetimes),
        day=draw(st.none() | st.dates()),
        tier=draw(st.sampled_from(Tier)),
        level=draw(st.sampled_from(Level)),
        address=draw(st.builds(Address, street=any_text, zip=st.none() | any_text)),
        items=draw(st.lists(items, max_size=3)),
        tags=draw(st.frozensets(any_text, max_size=3)),
        pair=draw(st.tuples(st.integers(), any_text)),
        counts=draw(st.dictionaries(any_text, st.integers(), max_size=3)),
        note=draw(st.none() | any_text),
        extra=draw(st.dictionaries(any_text, values, max_size=3)),
        anything=draw(values),
        blob=draw(st.binary(max_size=8)),
        delay=draw(st.timedeltas()),
    )
    order.charged_id = draw(st.none() | any_text)
    return order


def step_records(name: str) -> st.SearchStrategy[StepRecord]:
    return st.builds(
        StepRecord,
        name=st.just(name),
        status=st.sampled_from(StepStatus),
        attempts=st.integers(0, 50),
        started_at=maybe_ts,
        finished_at=maybe_ts,
        error=st.none() | any_text,
        timed_out=st.booleans(),
        compensation=st.sampled_from(CompensationStatus),
        compensation_attempts=st.integers(0, 50),
        compensation_started_at=maybe_ts,
        compensation_finished_at=maybe_ts,
        compensation_error=st.none() | any_text,
    )


EVENT_CLASSES = sorted(
    (c for c in vars(events).values()
     if isinstance(c, type) and issubclass(c, LifecycleEvent)),
    key=lambda c: c.__name__,
)
BASE_FIELDS = {f.name for f in attrs.fields(LifecycleEvent)}
EXTRA_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "delay": st.floats(allow_nan=False),
    "timed_out": st.booleans(),
    "action": plain_text,
    "note": st.none() | plain_text,
}


@st.composite
def lifecycle_events(draw: st.DrawFn, saga_id: str, saga_name: str) -> LifecycleEvent:
    cls = draw(st.sampled_from(EVENT_CLASSES))
    extra = {
        f.name: draw(EXTRA_FIELDS[f.name])
        for f in attrs.fields(cls)
        if f.name not in BASE_FIELDS and f.name in EXTRA_FIELDS
    }
    return cls(
        saga_id, saga_name, draw(timestamps), draw(st.none() | plain_text),
        draw(st.integers(0, 100)), draw(st.none() | plain_text), **extra,
    )


exceptions = st.builds(ValueError, any_text) | st.builds(ConnectionError, any_text)
step_failures = st.builds(StepError, st.integers(0, 9), any_text, exceptions | any_text)
sagaflow_errors = st.one_of(
    step_failures,
    st.builds(StepTimeout, st.integers(0, 9), any_text, st.floats(0.001, 1e6)),
    st.builds(SagaDeadlineExceeded, st.floats(0.001, 1e6), st.none() | any_text),
    st.builds(SagaCancelled, st.none() | any_text),
    st.builds(CompensationError, st.dictionaries(any_text, any_text, max_size=3),
              st.none() | step_failures),
    st.builds(AlreadyExecuting, any_text, any_text),
    st.builds(InvalidTransition, any_text, any_text, any_text, any_text),
    st.builds(SagaDefinitionError, any_text, st.lists(any_text, min_size=1, max_size=3)),
    st.builds(SagaDefinitionChanged, any_text, any_text, any_text, any_text),
)


@st.composite
def records(draw: st.DrawFn, max_history: int = 8, max_events: int = 4):
    saga_id = draw(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1,
                           max_size=12))
    record = record_of(draw(orders()), saga_id, now=draw(timestamps))
    name = record.saga_name
    record.status = draw(st.sampled_from(SagaStatus))
    record.state = draw(plain_text)
    record.steps = [draw(step_records(s.name)) for s in ORDER_SPEC.steps]
    record.cursor = draw(st.integers(0, 5))
    record.undo = draw(st.lists(st.integers(0, 2), max_size=3))
    record.wake_at = draw(maybe_ts)
    record.deadline_at = draw(maybe_ts)
    record.compensation_deadline_at = draw(maybe_ts)
    record.updated_at = draw(timestamps)
    record.finished_at = draw(maybe_ts)
    record.error = draw(st.none() | sagaflow_errors)
    record.failures = draw(st.dictionaries(any_text, any_text, max_size=3))
    record.events = draw(st.lists(values, max_size=max_events))
    record.history = draw(st.lists(lifecycle_events(saga_id, name), max_size=max_history))
    record.version = draw(st.integers(0, 10_000))
    record.resolution = draw(st.none() | plain_text)
    return record


def same_value(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (sets compared by ==)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(v, b[k]) for k, v in a.items())
    if isinstance(a, dt.datetime):
        return a == b and a.tzinfo == b.tzinfo and a.utcoffset() == b.utcoffset()
    if isinstance(a, float) and a != a:
        return b != b  # NaN is itself
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)  # the same digits and exponent; NaNs too
    return bool(a == b)


# -- round trips -----------------------------------------------------------------


@given(values)
def test_any_value_comes_back_as_itself(value: Any) -> None:
    encoded = default_codec.encode_value(value)
    text = json.dumps(encoded)
    assert same_value(default_codec.decode_value(json.loads(text)), value)


@given(records())
def test_a_record_round_trips_through_its_json_form(record) -> None:
    back = decode_record(json.loads(json.dumps(encode_record(record))), Order)
    assert_same(back, record)
    assert same_value(back.events, record.events)
    assert same_value(back.data.extra, record.data.extra)
    assert same_value(back.data.anything, record.data.anything)
    assert_same(loads(dumps(record), Order), record)


@pytest.fixture(scope="module")
def writer_and_reader(tmp_path_factory: pytest.TempPathFactory):
    """Two stores on one file: the reader never saw what the writer wrote."""
    path = tmp_path_factory.mktemp("rt") / "rt.db"
    with SQLiteStore(path, synchronous="OFF") as writer, \
            SQLiteStore(path, synchronous="OFF") as reader:
        reader.register(Order)
        yield writer, reader


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=records(max_history=80, max_events=40))  # past INLINE: some events spill
def test_a_record_round_trips_through_sqlite(writer_and_reader, record) -> None:
    writer, reader = writer_and_reader
    possible(record)  # what a store's decode accepts: a record a run could leave
    record.saga_id = uuid.uuid4().hex  # one file for all examples
    for e in record.history:
        e.saga_id = record.saga_id
    assert writer.create(record) is None
    back = reader.load(record.saga_id)
    assert_same(back, record)
    assert same_value(back.events, record.events)
    assert same_value(back.data.anything, record.data.anything)


def test_the_json_form_is_readable() -> None:
    record = record_of(Order(amount=decimal.Decimal("9.90"), tier=Tier.SILVER), "r-1")
    record.error = StepError(1, "charge", ValueError("boom"))
    record.events = [Charged(uuid.UUID(int=7), decimal.Decimal("1.5")), ("Reserved", "x")]
    record.history.append(events.StepRetrying("r-1", "store-order", 5.0, "charge", 1,
                                              "boom", delay=0.5))
    form = encode_record(record)
    assert form["data"]["amount"] == "9.90"
    assert form["data"]["tier"] == "silver"
    assert form["data"]["order_id"] == str(uuid.UUID(int=1))
    assert form["error"] == {
        "type": "StepError",
        "message": "step 2 'charge' failed: ValueError: boom",
        "step_index": 1,
        "step": "charge",
        "cause": "ValueError: boom",
    }
    assert form["events"] == [
        {"$type": "store_sagas:Charged",
         "value": {"order_id": str(uuid.UUID(int=7)), "amount": "1.5"}},
        {"$type": "tuple", "items": ["Reserved", "x"]},
    ]
    assert form["history"][-1] == {
        "type": "StepRetrying", "at": 5.0, "step": "charge", "attempt": 1, "error": "boom",
        "detail": {"delay": 0.5},
    }
    assert form["history"][0] == {"type": "SagaStarted", "at": record.created_at}


def test_nested_errors_keep_their_reason() -> None:
    reason = StepError(0, "pay", TimeoutError("slow"))
    error = CompensationError({"pay": "ConnectionError: down"}, reason)
    back = default_codec.decode_error(json.loads(json.dumps(default_codec.encode_error(error))))
    assert isinstance(back, CompensationError)
    assert back.failures == {"pay": "ConnectionError: down"}
    assert isinstance(back.reason, StepError) and back.reason.step == "pay"
    assert str(back) == str(error)


def test_errors_stored_under_their_old_names_still_load() -> None:
    # Before 0.2.0 the errors were called StepFailed and CompensationFailed.
    stored = {
        "type": "CompensationFailed",
        "message": "1 compensation could not be done",
        "failures": {"pay": "ConnectionError: down"},
        "reason": {"$error": {"type": "StepFailed", "message": "m", "step_index": 0,
                              "step": "pay", "cause": "TimeoutError: slow"}},
    }
    back = default_codec.decode_error(stored)
    assert isinstance(back, CompensationError)
    assert isinstance(back.reason, StepError) and back.reason.step == "pay"


class AppError(SagaflowError):
    """A user's own error type, outside sagaflow.errors."""

    def __init__(self, code: int, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"app error {code}: {detail}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.code, self.detail))


def test_errors_outside_sagaflow_are_tagged_by_import_path() -> None:
    form = default_codec.encode_error(AppError(7, "nope"))
    assert form["type"] == "test_codec:AppError"
    back = default_codec.decode_error(form)
    assert isinstance(back, AppError) and back.code == 7


def test_an_error_whose_class_is_gone_comes_back_as_its_message() -> None:
    back = default_codec.decode_error({"type": "nowhere.mod:Gone", "message": "it broke"})
    assert type(back) is SagaflowError and str(back) == "it broke"


# -- what cannot be stored: clear errors at the first save -----------------------


class Money:
    """Not attrs, not a dataclass: the codec does not know it until registered."""

    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and other.cents == self.cents

    def __hash__(self) -> int:
        return hash(self.cents)


@saga(name="priced")
class Priced:
    price: Money | None = None

    @step(readonly=True)
    def look(self, ctx): ...


def test_a_field_of_an_unknown_type_is_named_with_the_fix(tmp_path: Path) -> None:
    codec = Codec()
    with SQLiteStore(tmp_path / "x.db", codec=codec) as store:
        with pytest.raises(CodecError) as caught:
            store.create(record_of(Priced(Money(5)), "p-1"))
        message = str(caught.value)
        assert "Priced.price" in message and "Money" in message
        assert "sagaflow.codec.register" in message
        assert store.load("p-1") is None  # nothing was written

        codec.register(Money, lambda m: m.cents, lambda v: Money(v))
        record = record_of(Priced(Money(5)), "p-1")
        assert store.create(record) is None
        assert store.load("p-1").data.price == Money(5)


@pytest.mark.parametrize(
    ("fields", "where", "what"),
    [
        ({"anything": object()}, "field 'anything'", "object"),
        ({"extra": {"k": [1, object()]}}, "field \"extra['k'][1]\"", "object"),
        ({"items": [Item("a", 1, decimal.Decimal(1)), Item("b", 2, object())]},
         "field 'items[1].price'", "object"),
    ],
)
def test_an_unserializable_value_is_named_at_the_first_save(
    tmp_path: Path, fields: dict[str, Any], where: str, what: str
) -> None:
    with SQLiteStore(tmp_path / "x.db") as store:
        with pytest.raises(CodecError) as caught:
            store.create(record_of(Order(**fields), "bad-1"))
        message = str(caught.value)
        assert "saga 'store-order' (id 'bad-1')" in message
        assert where in message and what in message
        assert isinstance(caught.value, TypeError)  # usage errors subclass the builtin
        assert store.load("bad-1") is None


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"counts": {"a": "not a number"}},
         "field 'counts' holds {'a': 'not a number'} (dict), which would not load back"),
        ({"note": 5}, "field 'note' holds 5 (int), which would load back as '5' (str)"),
        ({"pair": [1, "x"]}, "field 'pair' holds [1, 'x'] (list), which would load back as"),
        ({"address": Address(street=7)}, "field 'address.street' holds 7 (int)"),
    ],
)
def test_a_value_that_would_not_load_back_as_itself_is_refused(
    tmp_path: Path, fields: dict[str, Any], where: str
) -> None:
    with SQLiteStore(tmp_path / "x.db") as store, pytest.raises(CodecError) as caught:
        store.create(record_of(Order(**fields), "typo-1"))
    assert where in str(caught.value)


def test_an_unserializable_domain_event_is_named(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "x.db") as store:
        record = record_of(Order(), "ev-1")
        store.create(record)
        record.events.append(("fine",))
        record.events.append(object())
        with pytest.raises(CodecError) as caught:
            store.save(record)
        message = str(caught.value)
        assert "domain event #1" in message and "object" in message
        assert store.load("ev-1").version == 0  # the failed save wrote nothing


def test_register_on_the_default_codec() -> None:
    class Celsius(float):
        pass

    from sagaflow import codec as codec_module

    with pytest.raises(CodecError):
        default_codec.encode_value(Point(1, 2))
    codec_module.register(Point, lambda p: [p.x, p.y], lambda v: Point(*v))
    assert default_codec.decode_value(default_codec.encode_value(Point(1, 2))) == Point(1, 2)
    with pytest.raises(TypeError, match="takes a type"):
        codec_module.register("Point", str, str)  # type: ignore[arg-type]
    assert Celsius  # a float subclass is stored as a float, not refused
    assert default_codec.encode_value(Celsius(1.5)) == 1.5


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (other.x, other.y) == (self.x, self.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


def test_malformed_json_forms_are_reported_with_the_saga_id() -> None:
    form = encode_record(record_of(Order(), "m-1"))
    form["steps"] = [{"name": "reserve", "status": "NO SUCH STATUS"}]
    with pytest.raises(CorruptRecord, match="saga 'm-1'"):
        decode_record(form, Order)
    with pytest.raises(CorruptRecord):
        loads("{not json", Order)


def test_import_path_explains_what_cannot_be_imported() -> None:
    assert import_path("decimal:Decimal") is decimal.Decimal
    with pytest.raises(CodecError, match="inside a function"):
        import_path("mod:f.<locals>.C")
    with pytest.raises(CodecError, match="cannot import"):
        import_path("no_such_module_xyz:C")
    with pytest.raises(CodecError, match="not a 'module:QualName'"):
        import_path("justaname")


def test_a_lone_surrogate_in_an_error_message_does_not_break_the_save(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "x.db") as store:
        record = record_of(Order(), "s-1")
        store.create(record)
        bad = b"caf\xff".decode("utf-8", "surrogateescape")
        record.history.append(events.StepFailed("s-1", "store-order", 1.0, "reserve", 1, bad))
        store.save(record)
        assert store.load("s-1").history[-1].error == "caf\\udcff"


def step_form(step_record: StepRecord) -> dict[str, Any]:
    """A step record's JSON form, written out: its fields that differ from their defaults,
    enums by value."""
    out = {}
    for f in attrs.fields(StepRecord):
        value = getattr(step_record, f.name)
        if f.default is attrs.NOTHING or value != f.default:
            out[f.name] = getattr(value, "value", value)
    return out


@given(st.builds(
    StepRecord,
    name=any_text,
    status=st.sampled_from(StepStatus),
    attempts=st.integers(),
    started_at=st.none() | st.floats(allow_nan=False),
    finished_at=maybe_ts,
    error=st.none() | any_text,
    timed_out=st.booleans(),
    compensation=st.sampled_from(CompensationStatus),
    compensation_attempts=st.integers(0, 9),
    compensation_started_at=maybe_ts,
    compensation_finished_at=maybe_ts,
    compensation_error=st.none() | any_text,
))
def test_a_step_record_round_trips_with_its_defaults_left_out(step_record: StepRecord) -> None:
    codec = default_codec
    text = codec.dump_step(step_record)
    assert json.loads(text) == step_form(step_record)
    assert codec.load_steps(f"[{text}]") == [step_record]


def test_step_records_written_by_0_1_still_load() -> None:
    # sagaflow 0.1 wrote ASCII-only JSON with the json module: NaN/Infinity literals,
    # escaped lone surrogates, exponents with a sign.
    text = (
        '[{"name":"reserve"},'
        '{"name":"charge","status":"FAILED","attempts":2,"started_at":1e+16,'
        '"finished_at":Infinity,"error":"caf\\udcff \\u00e9"},'
        '{"name":"ship","compensation":"COMPENSATED","compensation_started_at":1.5}]'
    )
    reserve, charge, ship = default_codec.load_steps(text)
    assert reserve == StepRecord("reserve")
    assert charge.status is StepStatus.FAILED and charge.started_at == 1e16
    assert charge.finished_at == float("inf")
    assert charge.error == "caf\udcff \u00e9"
    assert ship.compensation is CompensationStatus.COMPENSATED
    with pytest.raises(ValueError, match="attempts"):
        default_codec.load_steps('[{"name":"x","attempts":"2"}]')


@given(
    st.sampled_from(EVENT_CLASSES),
    st.floats(allow_nan=False) | st.integers(0, 10**12).map(float),
    st.none() | plain_text,
    st.integers(0, 10**6),
    st.none() | plain_text,
)
def test_a_lifecycle_event_round_trips_through_its_inline_form(
    cls: type[LifecycleEvent], at: float, step_name: str | None, attempt: int, error: str | None
) -> None:
    event = cls("s", "n", at, step_name, attempt, error)
    text = default_codec.history_text(default_codec.history_row(event))
    assert default_codec.history_item(event) == text
    back = default_codec.event_from_item(json.loads(text), "s", "n")
    assert back == event
    # A lone surrogate is escaped (a database column cannot hold it), the same both ways.
    for odd in (cls("s", "n", at, "caf\udcff", attempt, error),
                cls("s", "n", at, step_name, attempt, "caf\udcff é")):
        assert default_codec.history_item(odd) == default_codec.history_text(
            default_codec.history_row(odd)
        )


# -- the msgspec path and the general path agree -----------------------------------


@attrs.define
class Line:
    sku: str
    qty: int
    price: decimal.Decimal
    due: dt.date | None = None


@saga(name="native-order")
class NativeOrder:
    """Only types msgspec writes in sagaflow's form: encoded straight from the instance."""

    order_id: uuid.UUID
    amount: decimal.Decimal
    ratio: float
    placed: dt.datetime | None
    day: dt.date
    tier: Tier
    level: Level
    ship_to: Address
    lines: list[Line]
    tags: frozenset[str]
    pair: tuple[int, str]
    counts: dict[str, int]
    kind: Literal["a", "b"]
    note: str | None
    flag: bool

    @step(readonly=True)
    def look(self, ctx): ...


native_orders = st.builds(
    NativeOrder,
    order_id=st.uuids(),
    amount=st.decimals(),  # NaN and infinities too
    ratio=st.floats(),
    placed=st.none() | datetimes,
    day=st.dates(),
    tier=st.sampled_from(Tier),
    level=st.sampled_from(Level),
    ship_to=st.builds(Address, street=any_text, zip=st.none() | any_text),
    lines=st.lists(st.builds(Line, sku=any_text, qty=st.integers(), price=decimals,
                             due=st.none() | st.dates()), max_size=3),
    tags=st.frozensets(any_text, max_size=3),
    pair=st.tuples(st.integers(), any_text),
    counts=st.dictionaries(any_text, st.integers(), max_size=3),
    kind=st.sampled_from(["a", "b"]),
    note=st.none() | any_text,
    flag=st.booleans(),
)


def same_fields(a: Any, b: Any) -> bool:
    return type(a) is type(b) and all(
        same_value(getattr(a, f.name), getattr(b, f.name)) for f in attrs.fields(type(a))
    )


@given(native_orders)
def test_saga_data_round_trips_whichever_path_writes_it(order: NativeOrder) -> None:
    codec = default_codec
    record = record_of(order, "n-1")
    text = codec.dump_data(record, verify=True)  # verify: loads back as itself
    assert same_fields(codec.load_data(text, NativeOrder), order)
    # What the general path (cattrs) writes, msgspec's decoder reads, and the other way.
    general = json.dumps(codec.converter.unstructure(order, NativeOrder))
    assert same_fields(codec.load_data(general, NativeOrder), order)
    assert same_fields(codec.converter.structure(json.loads(text), NativeOrder), order)
    form = json.loads(text)
    assert form["amount"] == str(order.amount) and form["order_id"] == str(order.order_id)
    assert form["tier"] == order.tier.value and form["ship_to"]["street"] == order.ship_to.street


def test_a_zone_and_a_non_finite_float_keep_their_form() -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    order = NativeOrder(uuid.UUID(int=3), decimal.Decimal("NaN"), float("-inf"),
                        dt.datetime(2024, 10, 27, 2, 30, tzinfo=paris), dt.date(2024, 1, 2),
                        Tier.GOLD, Level.HIGH, Address("x"), [], frozenset(), (1, "a"), {},
                        "a", None, True)
    text = default_codec.dump_data(record_of(order, "z-1"), verify=True)
    form = json.loads(text)
    assert form["placed"] == "2024-10-27T02:30:00+02:00[Europe/Paris]"
    assert form["ratio"] == "-inf" and form["amount"] == "NaN"
    back = default_codec.load_data(text, NativeOrder)
    assert back.placed.tzinfo == paris and back.ratio == float("-inf")
    assert back.amount.is_nan()
    utc = default_codec.dump_data(record_of(attrs.evolve(order, placed=dt.datetime(
        2024, 1, 1, tzinfo=dt.UTC), ratio=0.5, amount=decimal.Decimal(1)), "z-2"))
    assert json.loads(utc)["placed"] in ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00+00:00")


def test_saga_data_written_by_0_1_still_loads() -> None:
    # sagaflow 0.1: the json module's ASCII-only text, NaN literals, "+00:00".
    text = (
        '{"order_id":"00000000-0000-0000-0000-000000000003","amount":"1.50","ratio":NaN,'
        '"placed":"2024-01-01T00:00:00+00:00","day":"2024-01-02","tier":"gold","level":2,'
        '"ship_to":{"street":"caf\\u00e9 \\udcff","zip":null},"lines":[{"sku":"a","qty":1,'
        '"price":"2"}],"tags":["x"],"pair":[1,"a"],"counts":{"a":1},"kind":"b","note":null,'
        '"flag":false}'
    )
    back = default_codec.load_data(text, NativeOrder)
    assert back.amount == decimal.Decimal("1.50") and back.ratio != back.ratio
    assert back.placed == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert back.ship_to.street == "caf\u00e9 \udcff"
    assert back.lines == [Line("a", 1, decimal.Decimal(2))] and back.level is Level.HIGH


@given(st.floats())
def test_a_non_finite_float_under_any_comes_back(value: float) -> None:
    text = json.dumps(default_codec.encode_value([value]), allow_nan=False)
    assert same_value(default_codec.decode_value(json.loads(text)), [value])


@attrs.define
class Slot:
    at: dt.datetime
    weight: float


@dataclasses.dataclass
class Window:
    opens: dt.date
    slot: Slot


@saga(name="native-nested")
class Booking:
    """Checked values (floats, datetimes) in nested classes, a dataclass among them."""

    window: Window
    first: dt.datetime | None = None

    @step(readonly=True)
    def look(self, ctx): ...


@given(
    st.builds(Slot, at=datetimes, weight=st.floats()),
    st.dates(),
    st.none() | datetimes,
)
def test_checked_values_in_nested_classes_come_back(slot: Slot, opens: dt.date, first) -> None:
    booking = Booking(Window(opens, slot), first)
    text = default_codec.dump_data(record_of(booking, "b-1"), verify=True)
    back = default_codec.load_data(text, Booking)
    assert same_value(back.window.slot.at, slot.at)
    assert same_value(back.window.slot.weight, slot.weight)
    assert back.window.opens == opens and same_value(back.first, first)


@given(st.builds(Charged, order_id=st.uuids(), amount=decimals) | items)
def test_a_domain_event_is_written_alike_by_either_path(event: Any) -> None:
    record = record_of(Order(), "e-1")
    text = default_codec.dump_event(event, record, 0)  # msgspec, from the instance
    assert json.loads(text) == default_codec.encode_value(event)  # cattrs' form
    assert default_codec.load_event(text) == event


@pytest.mark.parametrize("event", [
    events.StepRetrying("s", "n", 1.5, "pay", 1, "boom", delay=0.25),
    events.StepFailed("s", "n", 1.5, "pay", 2, "caf\udcff", timed_out=True),
    events.OperatorAction("s", "n", 1.5, None, 0, None, action="retry", note="é back"),
    events.StepFailed("s", "n", float("inf"), "pay", 2, None),
])
def test_history_item_with_subclass_fields_is_the_text_of_the_row(event) -> None:
    text = default_codec.history_item(event)
    assert text == default_codec.history_text(default_codec.history_row(event))
    back = default_codec.event_from_item(default_codec.loads_json(text), "s", "n")
    assert type(back) is type(event) and back.at == event.at

"""Saga classes and record builders shared by the store tests (module level, so that a
fresh store, or a new process, can import them by their stored type path)."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from typing import Any

import attrs

from sagaflow import Retry, SagaRecord, SagaStatus, saga, spec_of, step
from sagaflow.engine import new_record


class Tier(enum.Enum):
    GOLD = "gold"
    SILVER = "silver"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.define
class Address:
    street: str
    zip: str | None = None


@attrs.frozen
class Item:
    sku: str
    qty: int
    price: decimal.Decimal


@attrs.frozen
class Charged:
    """A domain event."""

    order_id: uuid.UUID
    amount: decimal.Decimal


@saga(name="store-order")
class Order:
    """Every kind of field the codec promises to round-trip."""

    order_id: uuid.UUID = uuid.UUID(int=1)
    amount: decimal.Decimal = decimal.Decimal("0")
    placed: dt.datetime | None = None
    day: dt.date | None = None
    tier: Tier = Tier.GOLD
    level: Level = Level.LOW
    address: Address = attrs.field(factory=lambda: Address("Main St 1"))
    items: list[Item] = attrs.field(factory=list)
    tags: frozenset[str] = frozenset()
    pair: tuple[int, str] = (0, "")
    counts: dict[str, int] = attrs.field(factory=dict)
    note: str | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)
    anything: Any = None
    blob: bytes = b""
    delay: dt.timedelta = dt.timedelta(0)
    charged_id: str | None = attrs.field(default=None, init=False)

    @step
    def reserve(self, ctx):
        ctx.emit(("Reserved", str(self.order_id)))

    @reserve.compensate
    def release(self, ctx):
        ctx.emit({"released": str(self.order_id)})

    @step(retry=Retry(attempts=3, backoff=0.5, jitter=0.0))
    def charge(self, ctx):
        if self.note == "flaky" and ctx.attempt < 2:
            raise ConnectionError("gateway busy")
        if self.note == "decline":
            raise ValueError("card declined")
        self.charged_id = ctx.idempotency_key
        ctx.emit(Charged(self.order_id, self.amount))

    @charge.compensate
    def refund(self, ctx):
        ctx.emit(Tier.SILVER)

    @step(pivot=True)
    def ship(self, ctx):
        self.placed = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


ORDER_SPEC = spec_of(Order)


@saga(name="store-other")
class Other:
    n: int = 0

    @step(readonly=True)
    def look(self, ctx):
        pass


def record_of(saga_obj: object, saga_id: str, now: float = 1_700_000_000.0) -> SagaRecord:
    """A fresh record of ``saga_obj``, as the orchestrator makes it before create()."""
    return new_record(spec_of(saga_obj), saga_obj, saga_id, now)


def fields_of(record: SagaRecord) -> dict[str, Any]:
    """What must survive a store: every field, the error as (type, message)."""
    out = {f.name: getattr(record, f.name) for f in attrs.fields(SagaRecord)}
    error = out.pop("error")
    out["error"] = None if error is None else (type(error), str(error))
    out["status"] = SagaStatus(out["status"])
    return out


def assert_same(loaded: SagaRecord, expected: SagaRecord, *, version: bool = True) -> None:
    """``loaded`` has every field of ``expected``."""
    a, b = fields_of(loaded), fields_of(expected)
    if not version:
        a.pop("version")
        b.pop("version")
    for key in b:
        assert a[key] == b[key], f"{key}: {a[key]!r} != {b[key]!r}"


def possible(record: SagaRecord) -> SagaRecord:
    """``record`` (drawn at random, for a codec's round trip) made one that a run of
    :class:`Order` could leave, as a store's decode checks: its state, cursor, undo list,
    failures and resolution agree with its status; its path is edges of the machine."""
    names = [s.name for s in ORDER_SPEC.steps]
    undoable = [i for i, fn in enumerate(ORDER_SPEC.compensations) if fn is not None]
    record.undo = sorted({undoable[j % len(undoable)] for j in record.undo}, reverse=True)
    failures = list(record.failures.values())
    record.failures = {names[undoable[k % len(undoable)]]: v for k, v in enumerate(failures)}
    status = record.status
    if status is SagaStatus.NOT_STARTED:
        record.cursor, record.state = 0, "not_started"
    elif status is SagaStatus.RUNNING:
        record.cursor %= len(names)
        record.state = names[record.cursor]
    elif status is SagaStatus.COMPENSATING:
        record.undo = record.undo or [undoable[0]]
        record.cursor %= len(record.undo)
        record.state = "compensating_" + names[record.undo[record.cursor]]
    else:
        record.state = status.value.lower()
        record.cursor = len(record.undo) if record.failures else len(names) - 1
    if status is not SagaStatus.FAILED or not (record.resolution or "").strip():
        record.resolution = None
    record.path = [e for e in record.path if e in ORDER_SPEC.transitions]
    return record

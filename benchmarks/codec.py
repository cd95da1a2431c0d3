"""The codec: encode and decode per step record, lifecycle event, saga data, domain event
and whole record (a recovery's decode and first save), against msgspec on the same objects
(the raw baseline) and, where git has it, sagaflow 0.1's codec (read from git into a
temporary module: it is kept nowhere else), all in the same process."""

from __future__ import annotations

import datetime as dt
import decimal
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from sagaflow import StepRecord, StepStatus, events, saga, step
from sagaflow.codec import Codec
from sagaflow.engine import new_record
from sagaflow.errors import StepError
from sagaflow.records import CompensationStatus, SagaRecord
from sagaflow.spec import spec_of

_ROOT = Path(__file__).resolve().parent.parent


def old_codec() -> ModuleType | None:
    """sagaflow 0.1's ``sagaflow/codec.py`` from git, as ``sagaflow._codec_0_1``."""
    try:
        rev = subprocess.run(
            ["git", "rev-list", "-1", "HEAD", "--", "sagaflow/codec.py"],
            cwd=_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
        source = subprocess.run(
            ["git", "show", f"{rev}^:sagaflow/codec.py"],
            cwd=_ROOT, capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    if not rev or not source:
        return None
    path = Path(tempfile.mkdtemp()) / "codec_0_1.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("sagaflow._codec_0_1", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # it no longer fits today's package: absolute figures only
        print(f"(sagaflow 0.1's codec does not load here: {exc!r})")
        return None
    return module


@saga(name="bench-transfer")
class Transfer:
    """Typical saga data: text, money, an id and a time."""

    source: str
    target: str
    amount: decimal.Decimal
    transfer_id: uuid.UUID
    requested: dt.datetime
    approval_id: str | None = None

    @step
    def debit(self, ctx: Any) -> None: ...

    @debit.compensate
    def credit_back(self, ctx: Any) -> None: ...

    @step(readonly=True)
    def check(self, ctx: Any) -> None: ...

    @step(pivot=True)
    def notify(self, ctx: Any) -> None: ...


@saga(name="bench-basket")
class Basket:
    """Saga data the general path handles: a named zone, a timedelta, an untyped dict."""

    basket_id: uuid.UUID
    placed: dt.datetime
    hold: dt.timedelta
    lines: dict[str, Any]

    @step(readonly=True)
    def reserve(self, ctx: Any) -> None: ...


def _transfer_record() -> SagaRecord:
    data = Transfer("alice", "bob", decimal.Decimal("30.00"), uuid.UUID(int=42),
                    dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC), "ap-7")
    record = new_record(spec_of(Transfer), data, "t-1", 1_700_000_000.0)
    t = 1_700_000_000.0
    for i, s in enumerate(record.steps):
        s.status, s.attempts = StepStatus.COMPLETED, 1
        s.started_at, s.finished_at = t + i, t + i + 0.01
    record.steps[1].compensation = CompensationStatus.COMPENSATED
    for i, name in enumerate(("debit", "check", "notify")):
        record.history.append(events.StepStarted("t-1", "bench-transfer", t + i, name, 1))
        record.history.append(events.StepCompleted("t-1", "bench-transfer", t + i + 0.01, name, 1))
    record.history.append(events.StepRetrying("t-1", "bench-transfer", t + 4, "check", 1,
                                              "ConnectionError: busy", delay=0.5))
    record.events = [{"debited": "30.00"}, ("Credited", uuid.UUID(int=42), decimal.Decimal("30"))]
    record.error = StepError(1, "check", ConnectionError("busy"))
    return record


def _paired(fns: list[Callable[[], Any] | None], n: int, rounds: int) -> list[float | None]:
    """Median seconds per call of each of ``fns``, their rounds interleaved (a round of
    each in turn), so that load on the machine weighs on all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            if fn is None:
                continue
            start = time.perf_counter()
            for _ in range(n):
                fn()
            times[i].append((time.perf_counter() - start) / n)
    return [statistics.median(t) if t else None for t in times]


def cases(codec: Any) -> dict[str, Callable[[], Any]]:
    """What a store does with each piece, through ``codec`` (today's or 0.1's)."""
    record = _transfer_record()
    step_ = record.steps[0]
    step_text = codec.dump_step(step_)
    event = record.history[-2]  # StepCompleted: two such events per step
    event_text = codec.history_text(codec.history_row(event))
    retrying = record.history[-1]  # StepRetrying: an error and a subclass field
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    basket = new_record(spec_of(Basket), Basket(
        uuid.UUID(int=7), dt.datetime(2024, 10, 27, 2, 30, tzinfo=paris),
        dt.timedelta(hours=2), {"sku-1": decimal.Decimal("9.90"), "sku-2": 3}), "b-1", 1.0)
    data_text = codec.dump_data(record)
    basket_text = codec.dump_data(basket)
    domain = record.events[1]
    domain_text = codec.dump_event(domain, record, 1)
    loads = codec.loads_json
    steps_text = "[" + ",".join(codec.dump_step(s) for s in record.steps) + "]"
    history_texts = [codec.history_text(codec.history_row(e)) for e in record.history]
    history_text = "[" + ",".join(history_texts) + "]"
    event_texts = [codec.dump_event(e, record, i) for i, e in enumerate(record.events)]
    error_text = codec.dumps_json(codec.encode_error(record.error))

    history_item = getattr(codec, "history_item", None)
    if history_item is None:  # 0.1: the row, then its text
        def history_item(e: Any) -> str:
            return str(codec.history_text(codec.history_row(e)))

    def recovery() -> None:
        # A recovery's decode of the row, then its first save (everything re-encoded).
        data = codec.load_data(data_text, Transfer)
        steps = codec.load_steps(steps_text)
        history = [codec.event_from_item(i, "t-1", "bench-transfer") for i in loads(history_text)]
        domain_events = [codec.load_event(t) for t in event_texts]
        error = codec.decode_error(loads(error_text))
        back = SagaRecord("t-1", "bench-transfer", record.fingerprint, data, steps,
                          record.created_at, error=error, events=domain_events, history=history)
        codec.dump_data(back, verify=True)
        ",".join(codec.dump_step(s) for s in steps)
        ",".join(history_item(e) for e in history)
        [codec.dump_event(e, back, i) for i, e in enumerate(domain_events)]
        codec.dumps_json(codec.encode_error(error))

    out: dict[str, Callable[[], Any]] = {
        "step record: encode": lambda: codec.dump_step(step_),
        "step record: decode": lambda: codec.load_steps(f"[{step_text}]"),
        "lifecycle event: encode": lambda: codec.history_text(codec.history_row(event)),
        "lifecycle event: encode (item)": lambda: history_item(event),
        "lifecycle event (retrying): encode": lambda: history_item(retrying),
        "lifecycle event: decode": lambda: codec.event_from_item(
            loads(event_text), "t-1", "bench-transfer"),
        "saga data (typical): encode": lambda: codec.dump_data(record),
        "saga data (typical): decode": lambda: codec.load_data(data_text, Transfer),
        "saga data (typical): first save": lambda: codec.dump_data(record, verify=True),
        "saga data (zone, Any): encode": lambda: codec.dump_data(basket),
        "saga data (zone, Any): decode": lambda: codec.load_data(basket_text, Basket),
        "domain event: encode": lambda: codec.dump_event(domain, record, 1),
        "domain event: decode": lambda: codec.load_event(domain_text),
        "whole record: decode + first save": recovery,
    }
    return out


def raw_cases() -> dict[str, Callable[[], Any]]:
    """msgspec alone on the same objects: what a compiled library costs at least."""
    record = _transfer_record()
    enc = msgspec.json.Encoder()
    step_ = record.steps[0]
    step_bytes = enc.encode(step_)
    step_dec = msgspec.json.Decoder(StepRecord)
    item = ["StepCompleted", 1_700_000_002.01, "notify", 1]
    item_bytes = enc.encode(item)
    data_bytes = enc.encode(record.data)
    data_dec = msgspec.json.Decoder(Transfer)
    return {
        "step record: encode": lambda: enc.encode(step_),
        "step record: decode": lambda: step_dec.decode(step_bytes),
        "lifecycle event: encode": lambda: enc.encode(item),
        "lifecycle event: decode": lambda: msgspec.json.decode(item_bytes),
        "saga data (typical): encode": lambda: enc.encode(record.data),
        "saga data (typical): decode": lambda: data_dec.decode(data_bytes),
    }


def report(quick: bool = False) -> None:
    rounds, n = (3, 2_000) if quick else (15, 10_000)
    old = old_codec()
    new_cases = cases(Codec())
    old_cases = cases(old.Codec()) if old is not None else {}
    raw = raw_cases()
    print(f"sagaflow codec benchmark (medians of {rounds} interleaved rounds of {n} calls; "
          "µs per call)")
    print(f"{'case':36} {'0.2 µs':>8} {'0.1 µs':>8} {'0.1/0.2':>8} {'msgspec':>8} {'0.2/raw':>8}")
    for name, fn in new_cases.items():
        count = max(n // 20, 100) if name.startswith("whole") else n
        t, tb, tr = _paired([fn, old_cases.get(name), raw.get(name)], count, rounds)
        assert t is not None
        print(
            f"{name:36} {t * 1e6:8.2f} "
            + (f"{tb * 1e6:8.2f} {tb / t:7.1f}x " if tb else f"{'-':>8} {'-':>8} ")
            + (f"{tr * 1e6:8.2f} {t / tr:7.1f}x" if tr else f"{'-':>8} {'-':>8}")
        )
    print("  whole record: a 3-step Transfer with 7 lifecycle events, 2 domain events and its "
          "error, decoded from its columns and encoded again (verify on), as a recovery does")
    print("  lifecycle event: a StepCompleted; encode is history_text(history_row(event)), "
          "encode (item) Codec.history_item, the same text in one call")

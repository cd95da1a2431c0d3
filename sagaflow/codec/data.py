"""The saga instance (``record.data``) as JSON text, by its class's declared field types.

A store writes the data at every checkpoint and reads it at every recovery, so a class
whose declared types msgspec writes in sagaflow's own form (:mod:`.native`) is encoded and
decoded by msgspec straight from the instance: about ten times faster than through
cattrs. Everything else, and any
value a check sends back (a named zone, a non-finite float, a lone surrogate, a value not
of its declared type), takes the general path: cattrs (:mod:`.convert`) and the JSON text.
Both paths write the same form, and either reads what the other wrote.

The first save of a saga (``verify=True``) also loads the text back and compares, so a
field whose value would not come back as itself is named now, not in a recovery.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import attrs
import msgspec

from ..errors import CodecError
from ..records import SagaRecord
from .convert import FIX, type_name
from .diagnose import (
    culprit,
    declared_at,
    describe_failure,
    difference,
    field_problem,
    round_trip,
    round_trips,
    short,
    stores,
)
from .native import Plan, plan_for
from .text import dumps, encode, loads
from .values import Values

__all__ = ["SagaData"]

class SagaData:
    """Encodes and decodes saga instances; one per codec."""

    def __init__(self, values: Values) -> None:
        self.values = values
        self._lock = threading.Lock()
        self._plans: dict[type, Plan] = {}
        #: the plans of the classes checked at a first save
        self._checked: dict[type, Plan] = {}

    def forget(self) -> None:
        """Drop what was learnt of classes (a type was registered: plans change)."""
        with self._lock:
            self._plans = {}
            self._checked = {}

    def _plan(self, cls: type) -> Plan:
        plan = self._plans.get(cls)
        if plan is None:
            plan = plan_for(cls, self.values.is_registered)
            with self._lock:
                self._plans[cls] = plan
        return plan

    def dump(self, record: SagaRecord, *, verify: bool = False) -> str:
        """``record.data`` as JSON text; ``verify`` also checks that it loads back as
        an equal instance (a store passes it at a saga's first save)."""
        data = record.data
        cls = type(data)
        plan = self._checked.get(cls)
        if plan is None:
            try:
                self._check_class(cls)
            except CodecError as exc:
                raise CodecError(f"{_where(record)}: {exc}") from exc
            plan = self._plan(cls)
            with self._lock:
                self._checked[cls] = plan
        text = None
        if plan.decoder is not None and (not plan.checks or plan.native(data)):
            try:
                text = encode(data).decode()
            except (TypeError, ValueError, OverflowError):  # the general path says why
                text = None
        if text is None:
            try:
                text = dumps(self.values.converter.unstructure(data, cls))
            except (TypeError, ValueError, AttributeError, RecursionError) as exc:
                raise self._explain(record, exc) from exc
        if verify:
            self._verify(record, text)
        return text

    def load(self, text: str | bytes, cls: type) -> Any:
        """The instance of ``cls`` from :meth:`dump`'s text (or sagaflow 0.1's)."""
        decoder = self._plan(cls).decoder
        if decoder is not None:
            try:
                return decoder.decode(text)
            except msgspec.DecodeError:  # a form only the general path reads
                pass
        return self.values.converter.structure(loads(text), cls)

    def _check_class(self, cls: type) -> None:
        """A field type nothing can store fails here, at the first save."""
        if not (attrs.has(cls) or dataclasses.is_dataclass(cls)):
            raise CodecError(
                f"a saga's data must be an attrs class (what @saga makes); "
                f"got a {type_name(cls)}"
            )
        converter = self.values.converter
        problem = field_problem(cls, converter)
        if problem is not None:
            raise CodecError(problem)
        try:
            converter.get_unstructure_hook(cls)
            converter.get_structure_hook(cls)
        except Exception as exc:  # cattrs raises several kinds here; report them alike
            raise CodecError(f"{type_name(cls)} cannot be stored as JSON: {exc}") from exc

    def _explain(self, record: SagaRecord, exc: BaseException) -> CodecError:
        """Find the field that failed and say what to do about it."""
        path, value = culprit(record.data, self.values, stores)
        if path is None:
            return CodecError(f"{_where(record)}: its data cannot be stored as JSON: {exc}")
        name = type_name(type(value))
        return CodecError(
            f"{_where(record)}: field {path!r} holds a {name} ({short(value)}), which cannot "
            f"be stored as JSON: {exc}. To fix: " + FIX.format(name=name)
        )

    def _verify(self, record: SagaRecord, text: str) -> None:
        data = record.data
        try:
            back = self.load(text, type(data))
            failure: BaseException | None = None
        except Exception as exc:  # any failure to load is what we are here to report
            back, failure = None, exc
        if failure is None and difference(data, back, "") is None:
            return
        path, value = culprit(data, self.values, round_trips)
        if path is None:
            detail = "?" if failure is None else describe_failure(failure)
            raise CodecError(
                f"{_where(record)}: its data would not load back as itself ({detail}): check "
                "that each field holds a value of its annotated type"
            ) from failure
        declared = declared_at(data, path)
        try:
            after: Any = round_trip(self.values, value, declared)
            outcome = f"load back as {short(after)} ({type_name(type(after))})"
        except Exception as exc:  # the value does not load back at all
            outcome = f"not load back ({describe_failure(exc)})"
        raise CodecError(
            f"{_where(record)}: field {path!r} holds {short(value)} ({type_name(type(value))}), "
            f"which would {outcome}: make the value match the field's annotation, or "
            "annotate the field with the value's type"
        ) from failure


def _where(record: SagaRecord) -> str:
    return f"saga {record.saga_name!r} (id {record.saga_id!r})"

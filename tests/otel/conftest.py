"""An OpenTelemetry SDK per test: spans to an in-memory exporter, metrics to an
in-memory reader, and the :class:`~sagaflow.otel.Telemetry` that writes to both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import otel_sagas
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sagaflow.otel import Telemetry


class Otel:
    """One SDK: its telemetry, what it exported, and a tracer for the steps' own spans."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = Telemetry(self.tracer_provider, self.meter_provider)

    def spans(self, prefix: str = "") -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(prefix)]

    def one(self, name: str) -> ReadableSpan:
        found = [s for s in self.exporter.get_finished_spans() if s.name == name]
        assert len(found) == 1, [s.name for s in self.exporter.get_finished_spans()]
        return found[0]

    def points(self, metric: str) -> list[Any]:
        """The data points of ``metric`` (cumulative so far)."""
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == metric
            for point in m.data.data_points
        ]

    def counted(self, metric: str) -> dict[str, int]:
        """``metric``'s count by saga class."""
        return {
            p.attributes["sagaflow.saga.class"]: p.value for p in self.points(metric)
        }

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    otel_sagas.reset(o.tracer_provider.get_tracer("the steps' own"))
    yield o
    otel_sagas.reset(None)
    o.shutdown()

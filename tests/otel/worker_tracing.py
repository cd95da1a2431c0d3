"""Imported by a ``sagaflow worker --telemetry`` process (``--import worker_tracing``):
sets up OpenTelemetry's global tracer provider, as an application's module would, with
an exporter that appends each finished span's name and attributes to the file named by
``$SAGAFLOW_SPANS`` (one JSON line per span), then brings in the sagas it runs."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from wait_sagas import Approval, Nap, Twice  # noqa: F401  (what the worker runs)


class ToFile(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps({"name": span.name,
                                      "attributes": dict(span.attributes or {})}) + "\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ToFile(os.environ["SAGAFLOW_SPANS"])))
trace.set_tracer_provider(provider)

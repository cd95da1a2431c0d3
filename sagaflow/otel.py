"""OpenTelemetry for saga runs: spans and metrics (the ``sagaflow[otel]`` extra).

``Orchestrator(store, telemetry=Telemetry())`` and every run is traced and measured
through the OpenTelemetry API (the SDK, exporters and their setup are the
application's: without providers given, the global ones are used).

Spans (kind INTERNAL):

- ``saga <Class>``: one per run of a saga, that is per time a driver takes it up (its
  first run; a run resumed after recovery, a signal, an operator's retry; each event a
  choreography's participant handles). Every run of one saga is in **one trace, derived
  from the saga id** (:func:`saga_context`: SHA-256 of the id), as a child of the saga's
  context, so nothing has to be stored in the record and a run resumed by another
  process, days later, lands in the same trace. A resumed run also carries a ``Link``
  to that context (``sagaflow.link = "resumed"``), and any run a ``Link`` to the span
  that was current where it was started (``sagaflow.link = "caller"``: the request
  that started the saga, the worker's or a consumer's span). The saga's context itself
  is never a span of its own (no process sees a saga's whole life); a backend shows it
  as the trace's missing root.
- ``step <step>`` and ``compensate <step>``: one per attempt of a step or of a
  compensation (a parallel group's member and a fan-out's item each their own), a child
  of the run's span, current while the user's function runs, in whatever thread or task
  it runs on: the spans a step makes itself (HTTP, database) nest under it.

Attributes: ``sagaflow.saga.id``, ``sagaflow.saga.class``, ``sagaflow.step``,
``sagaflow.direction`` (forward/compensate), ``sagaflow.attempt``,
``sagaflow.outcome`` (a call: ok, error, rejected, timeout, cancelled, interrupted; a run: the
saga's outcome word, as ``sagaflow sagas list`` shows it, or ``error``/``interrupted``
when an exception out of the driver ended the run), ``sagaflow.item`` (a fan-out
item's record), ``sagaflow.resumed``, ``sagaflow.status``; and OpenTelemetry's
``code.function.name`` and ``error.type``. A failed call has status ERROR and the
exception recorded; so has a run that ended other than COMPLETED, and one that an
exception out of the driver ended (the store raised on a save: the saga is left RUNNING
for recovery). A call abandoned past
its timeout (a plain ``def`` cannot be stopped) ends its span when it returns.

Metrics (meter ``sagaflow``): counters ``sagaflow.sagas.started`` (first runs) and
``sagaflow.sagas.completed`` / ``.compensated`` / ``.failed`` / ``.rejected`` (a
rejected saga counts as rejected only), by ``sagaflow.saga.class``; histogram
``sagaflow.step.duration`` (seconds) by class, step, direction and outcome.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from contextvars import Token
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as _context
    from opentelemetry import metrics, trace
    from opentelemetry.trace import (
        Link,
        NonRecordingSpan,
        SpanContext,
        StatusCode,
        TraceFlags,
    )
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "sagaflow.otel needs the OpenTelemetry API: pip install 'sagaflow[otel]'"
    ) from exc

from . import __version__
from .context import Direction
from .errors import SagaRejected
from .records import SagaStatus, error_type, outcome

if TYPE_CHECKING:
    from .engine import Call
    from .records import SagaRecord
    from .spec import SagaSpec

__all__ = ["Telemetry", "saga_context"]

_FORWARD = Direction.FORWARD
_monotonic = time.monotonic
#: The histogram's advised boundaries, in seconds (OpenTelemetry's HTTP duration ones).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def saga_context(saga_id: str, sampled: bool = True) -> SpanContext:
    """The span context every run of saga ``saga_id`` is a child of: its trace id is the
    first 16 bytes of SHA-256 of ``"sagaflow:" + saga_id``, its span id the next 8 (so a
    saga's trace is found from its id alone). Remote: no span of it is ever exported."""
    digest = hashlib.sha256(f"sagaflow:{saga_id}".encode()).digest()
    return SpanContext(
        int.from_bytes(digest[:16], "big") or 1,
        int.from_bytes(digest[16:24], "big") or 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )


def _qualified(fn: Callable[..., Any]) -> str:
    fn = getattr(fn, "__wrapped__", fn)
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}" if module else name


class _Run:
    __slots__ = ("context", "span")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.context = trace.set_span_in_context(span, _context.Context())


class Telemetry:
    """Spans and metrics of the runs of an orchestrator (see the module's doc):
    ``Orchestrator(..., telemetry=Telemetry())``. ``tracer_provider`` and
    ``meter_provider``: where they go (default: OpenTelemetry's global providers)."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer("sagaflow", __version__, tracer_provider)
        meter = metrics.get_meter("sagaflow", __version__, meter_provider)
        self._counters = {
            word: meter.create_counter(
                f"sagaflow.sagas.{word}", unit="{saga}", description=f"sagas {word}"
            )
            for word in ("started", "completed", "compensated", "failed", "rejected")
        }
        self.step_duration = meter.create_histogram(
            "sagaflow.step.duration", unit="s",
            description="how long an attempt of a step or a compensation took",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self._runs: dict[str, _Run] = {}  # the run of each saga being driven, by saga id

    # --- what the drivers call (sagaflow.runtime.Instrument) -------------------------

    def begin(self, spec: SagaSpec, record: SagaRecord) -> None:
        """A run of ``record`` begins: its span (see the module's doc)."""
        # A fresh record holds its SagaStarted only: anything more, a run came before.
        resumed = len(record.history) > 1
        caller = trace.get_current_span().get_span_context()
        anchor = saga_context(record.saga_id, caller.trace_flags.sampled if caller.is_valid
                              else True)
        links = []
        if caller.is_valid:
            links.append(Link(caller, {"sagaflow.link": "caller"}))
        if resumed:
            links.append(Link(anchor, {"sagaflow.link": "resumed"}))
        span = self.tracer.start_span(
            f"saga {spec.name}",
            context=trace.set_span_in_context(NonRecordingSpan(anchor), _context.Context()),
            links=links,
            attributes={
                "sagaflow.saga.id": record.saga_id,
                "sagaflow.saga.class": spec.name,
                "sagaflow.resumed": resumed,
            },
        )
        self._runs[record.saga_id] = _Run(span)
        if not resumed:
            self._counters["started"].add(1, {"sagaflow.saga.class": spec.name})

    def end(
        self, spec: SagaSpec, record: SagaRecord, error: BaseException | None = None
    ) -> None:
        """The run of ``record`` is over: its span ends with the saga's outcome; a saga
        that ended is counted. ``error``: the exception raised out of the driver (the
        store failed, the process is interrupted): the saga, still where the store has it
        (recovery resumes it), is not the run's outcome, so the span says ``error`` (or
        ``interrupted``) and records it."""
        run = self._runs.pop(record.saga_id, None)
        if run is None:
            return
        status = record.status
        word = outcome(status, error_type(record.error), record.waiting is not None)
        span = run.span
        span.set_attribute("sagaflow.status", status.value)
        if error is not None and not isinstance(error, asyncio.CancelledError):
            # A cancelled run compensated (shielded) first: its outcome is the saga's.
            word = "error" if isinstance(error, Exception) else "interrupted"
            span.set_attribute("sagaflow.outcome", word)
            span.record_exception(error)
            span.set_attribute("error.type", _qualified(type(error)))
            span.set_status(StatusCode.ERROR, f"{word}: {type(error).__name__}")
            span.end()
            return
        span.set_attribute("sagaflow.outcome", word)
        if status.is_terminal:
            if status is SagaStatus.COMPLETED:
                counter = "completed"
            elif word == "rejected":
                counter = "rejected"
            else:
                counter = "compensated" if status is SagaStatus.COMPENSATED else "failed"
            self._counters[counter].add(1, {"sagaflow.saga.class": spec.name})
            if status is not SagaStatus.COMPLETED:
                error = record.error
                if error is not None:
                    span.record_exception(error)
                    span.set_attribute("error.type", _qualified(type(error)))
                span.set_status(StatusCode.ERROR, word)
        span.end()

    def wrap(
        self, fn: Callable[..., Any], is_async: bool, spec: SagaSpec, record: SagaRecord,
        call: Call,
    ) -> Callable[..., Any]:
        """``fn`` made to run as ``call``: in its own span, made current, measured."""
        run = self._runs.get(record.saga_id)
        parent = None if run is None else run.context
        step = spec.steps[call.index].name
        direction = "forward" if call.direction is _FORWARD else "compensate"
        attributes: dict[str, Any] = {
            "sagaflow.saga.id": record.saga_id,
            "sagaflow.saga.class": spec.name,
            "sagaflow.step": step,
            "sagaflow.direction": direction,
            "sagaflow.attempt": call.attempt,
            "code.function.name": _qualified(fn),
        }
        if call.item >= 0:
            attributes["sagaflow.item"] = record.steps[call.slot].name
        name = f"{'step' if call.direction is _FORWARD else 'compensate'} {step}"
        measure = {
            "sagaflow.saga.class": spec.name, "sagaflow.step": step,
            "sagaflow.direction": direction,
        }
        # The driver's own limit starts after this: a call still running at ``due`` is
        # one the driver gives up on (timed out), whatever it does afterwards.
        due = None if call.timeout is None else _monotonic() + call.timeout
        tracer = self.tracer

        def close(span: trace.Span, started: float, error: BaseException | None) -> None:
            now = _monotonic()
            if due is not None and now >= due:
                word = "timeout"
            elif error is None:
                word = "ok"
            elif isinstance(error, SagaRejected):
                word = "rejected"
            elif isinstance(error, Exception):
                word = "error"
            elif isinstance(error, asyncio.CancelledError):  # its group failed, its task...
                word = "cancelled"
            else:  # KeyboardInterrupt, SystemExit: the process is going down
                word = "interrupted"
            span.set_attribute("sagaflow.outcome", word)
            if word in ("error", "rejected", "timeout"):
                if isinstance(error, Exception):
                    span.record_exception(error)
                span.set_attribute(
                    "error.type", "timeout" if word == "timeout" else _qualified(type(error))
                )
                span.set_status(StatusCode.ERROR, word)
            span.end()
            self.step_duration.record(now - started, {**measure, "sagaflow.outcome": word})

        def opened() -> tuple[trace.Span, Token[_context.Context], float]:
            """The call's span, made current here (the token to detach it), and when."""
            span = tracer.start_span(name, parent, attributes=attributes)
            return span, _context.attach(trace.set_span_in_context(span)), _monotonic()

        if is_async:
            async def traced_call(*args: Any) -> Any:
                span, token, started = opened()
                try:
                    result = await fn(*args)
                except BaseException as exc:
                    close(span, started, exc)
                    raise
                finally:
                    _context.detach(token)
                close(span, started, None)
                return result

            return traced_call

        def traced_def(*args: Any) -> Any:
            span, token, started = opened()
            try:
                result = fn(*args)
            except BaseException as exc:
                close(span, started, exc)
                raise
            finally:
                _context.detach(token)
            close(span, started, None)
            return result

        return traced_def

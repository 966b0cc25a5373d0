"""JSON logs with trace ids, OpenTelemetry traces/metrics (OTLP when configured), context inject/extract."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from contentpipe.common.context import request_id_var, user_id_var
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# Never let credentials reach a log line even if someone passes them as `extra`.
_REDACTED_KEYS = {"authorization", "token", "access_token", "refresh_token", "jwt", "secret", "password"}
_configured_service: str | None = None
_instrumented = False
# Spans of our own making (client spans, per-step spans) only when they are exported somewhere.
_tracing = False


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, service, trace/span ids, user and request ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "service": self._service,
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        user_id = user_id_var.get()
        if user_id:
            entry["user_id"] = user_id
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key in _STANDARD_ATTRS or key.startswith("_"):
                continue
            entry[key] = "[redacted]" if key.lower() in _REDACTED_KEYS else value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON lines at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # library warnings become JSON lines too
    # Third-party chatter stays at WARNING unless we debug.
    for noisy in ("alembic", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "DEBUG" else logging.INFO)
    # These loggers only speak from WARNING up, even when debugging: httpx logs every request URL at INFO, and some
    # platforms (Graph, Instagram) carry tokens, codes and client secrets in the query string; SQLAlchemy's INFO is
    # every statement with its parameters (token columns included, if only encrypted).
    for leaky in ("httpx", "httpcore", "sqlalchemy.engine"):
        logging.getLogger(leaky).setLevel(logging.WARNING)


def setup_telemetry(service: str, *, log_level: str = "INFO", otlp_endpoint: str | None = None) -> None:
    """Configure logs, tracer and meter providers, and (with an OTLP endpoint) httpx instrumentation. Call once."""
    global _configured_service, _instrumented
    setup_logging(service, log_level)
    if otlp_endpoint:
        enable_tracing()
    if _configured_service is not None:
        return
    _configured_service = service
    resource = Resource.create({"service.name": f"contentpipe-{service}", "service.namespace": "contentpipe"})
    tracer_provider = TracerProvider(resource=resource)
    readers = []
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    # httpx spans only matter where they are exported: without an exporter the instrumentation still built a
    # recording span and a duration histogram per outbound request (~10 % of a 500-generation fan-out's CPU).
    if otlp_endpoint and not _instrumented:
        _instrumented = True
        try:
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            HTTPXClientInstrumentor().instrument()
        except Exception:  # instrumentation is best effort; never stop a service for it
            logging.getLogger(__name__).warning("httpx instrumentation unavailable", exc_info=True)


def enable_tracing(enabled: bool = True) -> None:
    """Turn on (off) the spans whose only use is export; setup_telemetry turns them on with an OTLP endpoint."""
    global _tracing
    _tracing = enabled


def tracing_enabled() -> bool:
    """Whether spans are exported: without it, hot paths skip creating spans (propagation still works)."""
    return _tracing


def optional_span(
    tracer: trace.Tracer,
    name: str,
    *,
    context: Any = None,
    links: Sequence[trace.Link] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[Any]:
    """`tracer.start_as_current_span(...)` when traces are exported. Otherwise no span is made, but a `context`
    (a caller's, from `extract_context`) is made current, so log lines still carry the caller's trace id."""
    if _tracing:
        return tracer.start_as_current_span(name, context=context, links=links, attributes=attributes)
    if context is None:
        return contextlib.nullcontext()
    return _attached(context)


@contextlib.contextmanager
def _attached(context: Any) -> Iterator[None]:
    """Make an OpenTelemetry Context current for the block."""
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def incoming_context(metadata: Mapping[str, str]) -> Any:
    """The trace an incoming call belongs to, without a span: the caller's (`traceparent`), else a new trace id.

    Used instead of the OpenTelemetry server interceptor when traces are not exported: that interceptor records a
    span and two histograms per call that nothing reads. Log lines and calls to peers still carry one trace id.
    """
    if "traceparent" in metadata:
        return propagate.extract(metadata)
    span_context = trace.SpanContext(
        trace_id=random.getrandbits(128) or 1,
        span_id=random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))


def server_interceptor() -> Any | None:
    """The OpenTelemetry grpc.aio server interceptor (spans + metrics per RPC), or None if unavailable."""
    try:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        return aio_server_interceptor()  # type: ignore[no-untyped-call]
    except Exception:
        return None


def get_tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def get_meter(name: str) -> metrics.Meter:
    return metrics.get_meter(name)


def inject_context(carrier: dict[str, str] | None = None) -> dict[str, str]:
    """The current W3C trace context as a dict (store it with a run so a worker can link to it later)."""
    carrier = {} if carrier is None else carrier
    propagate.inject(carrier)
    return carrier


def extract_context(carrier: Mapping[str, str]) -> Any:
    """An OpenTelemetry Context from a stored carrier (use as `context=` or for a span Link)."""
    return propagate.extract(dict(carrier))


def trace_id_from(carrier: Mapping[str, str]) -> str:
    """The trace id in a stored carrier as 32 hex digits (what tracing backends search by); "" if none."""
    span_context = trace.get_current_span(extract_context(carrier)).get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else ""


def span_link_from(carrier: Mapping[str, str]) -> trace.Link | None:
    """A Link to the span stored in `carrier`, for work that runs later than the call that caused it."""
    span_context = trace.get_current_span(extract_context(carrier)).get_span_context()
    return trace.Link(span_context) if span_context.is_valid else None

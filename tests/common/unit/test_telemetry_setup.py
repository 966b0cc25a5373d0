"""Outbound HTTP is instrumented only when traces are exported (each check runs in a fresh interpreter: telemetry
set-up is once per process); incoming calls join the caller's trace without a span; a service process keeps the
collector off its start-up heap."""

from __future__ import annotations

import subprocess
import sys

import pytest
from contentpipe.common.telemetry import incoming_context
from opentelemetry import trace

CHECK = """
import sys
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from contentpipe.common.telemetry import setup_telemetry, tracing_enabled
setup_telemetry("generation", log_level="WARNING", otlp_endpoint=sys.argv[1] or None)
print(HTTPXClientInstrumentor().is_instrumented_by_opentelemetry, tracing_enabled())
"""


@pytest.mark.parametrize(("endpoint", "expected"), [("", "False False"), ("http://127.0.0.1:4317", "True True")])
def test_httpx_is_instrumented_only_with_an_otlp_endpoint(endpoint: str, expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK, endpoint], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split("\n")[-2] == expected


def _trace_id(context: object) -> int:
    return trace.get_current_span(context).get_span_context().trace_id  # type: ignore[arg-type]


def test_an_incoming_call_joins_the_callers_trace_or_starts_one_without_a_span() -> None:
    joined = incoming_context({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    assert format(_trace_id(joined), "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    first, second = incoming_context({}), incoming_context({})
    assert _trace_id(first) != 0 and _trace_id(first) != _trace_id(second)
    assert not trace.get_current_span(first).is_recording()


GC_CHECK = """
import gc, sys
from contentpipe.common.cli import Subcommand, service_main

async def probe(args, environ):
    print(gc.get_freeze_count() > 10_000, gc.get_threshold()[0])
    return 0

sys.exit(service_main("probe", [Subcommand("probe", "print the collector's state", probe)], ["probe"]))
"""


def test_a_service_process_freezes_its_start_up_heap_and_collects_young_objects_less_often() -> None:
    result = subprocess.run([sys.executable, "-c", GC_CHECK], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["True", "10000"]

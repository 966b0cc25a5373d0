"""Outbound HTTP is instrumented only when traces are exported (each check runs in a fresh interpreter: telemetry
set-up is once per process)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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

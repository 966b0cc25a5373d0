"""The trace id a stored run's carrier names: what `runs get` shows to find the run in a tracing backend."""

from __future__ import annotations

import pytest
from contentpipe.common.telemetry import trace_id_from

pytestmark = pytest.mark.unit


def test_a_w3c_traceparent_gives_its_trace_id() -> None:
    carrier = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    assert trace_id_from(carrier) == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    "carrier", [{}, {"traceparent": "garbage"}, {"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"}]
)
def test_no_valid_trace_gives_an_empty_id(carrier: dict[str, str]) -> None:
    assert trace_id_from(carrier) == ""

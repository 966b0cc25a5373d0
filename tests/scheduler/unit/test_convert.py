"""Wire conversions refuse values Python cannot hold with a field violation, never an INTERNAL error."""

from __future__ import annotations

from datetime import timedelta

import pytest
from contentpipe.common.errors import InvalidArgument
from contentpipe.scheduler.entrypoints.convert import to_datetime, to_timedelta
from google.protobuf import duration_pb2, timestamp_pb2


def test_huge_duration_is_a_field_violation() -> None:
    with pytest.raises(InvalidArgument) as caught:
        to_timedelta(duration_pb2.Duration(seconds=2**62), "job.catch_up_window")
    assert [v.field for v in caught.value.violations] == ["job.catch_up_window"]


def test_negative_duration_is_a_field_violation() -> None:
    with pytest.raises(InvalidArgument):
        to_timedelta(duration_pb2.Duration(seconds=-1), "job.retry_policy.initial_backoff")


def test_ordinary_duration_converts() -> None:
    assert to_timedelta(duration_pb2.Duration(seconds=90, nanos=5_000_000), "d") == timedelta(
        seconds=90, milliseconds=5
    )


def test_out_of_range_timestamp_is_a_field_violation() -> None:
    with pytest.raises(InvalidArgument):
        to_datetime(timestamp_pb2.Timestamp(seconds=2**62), "job.run_time")

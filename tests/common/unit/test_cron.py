"""Fire times in a zone across DST, asserted exactly (Europe/Berlin, 2026: 29 March and 25 October)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from contentpipe.common.cron import CronSchedule
from contentpipe.common.errors import InvalidArgument

pytestmark = pytest.mark.unit


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def fires(expression: str, zone: str, start: datetime, count: int) -> list[tuple[str, str, bool, bool]]:
    return [
        (f.time.strftime("%m-%d %H:%M"), f.local_time.isoformat(), f.in_dst_gap, f.in_dst_overlap)
        for f in CronSchedule(expression, zone).fire_times(start, count)
    ]


def test_fixed_time_in_the_spring_gap_fires_once_at_the_first_valid_instant() -> None:
    assert fires("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27), 4) == [
        ("03-27 01:30", "2026-03-27T02:30:00+01:00", False, False),
        ("03-28 01:30", "2026-03-28T02:30:00+01:00", False, False),
        ("03-29 01:00", "2026-03-29T03:00:00+02:00", True, False),
        ("03-30 00:30", "2026-03-30T02:30:00+02:00", False, False),
    ]


def test_fixed_time_in_the_autumn_overlap_fires_once_at_the_first_occurrence() -> None:
    assert fires("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24), 3) == [
        ("10-24 00:30", "2026-10-24T02:30:00+02:00", False, False),
        ("10-25 00:30", "2026-10-25T02:30:00+02:00", False, True),
        ("10-26 01:30", "2026-10-26T02:30:00+01:00", False, False),
    ]


def test_weekday_mornings_keep_local_nine_across_both_transitions() -> None:
    assert [t for t, *_ in fires("0 9 * * MON-FRI", "Europe/Berlin", utc(2026, 3, 26), 4)] == [
        "03-26 08:00",
        "03-27 08:00",
        "03-30 07:00",
        "03-31 07:00",
    ]
    assert [t for t, *_ in fires("0 9 * * MON-FRI", "Europe/Berlin", utc(2026, 10, 22), 4)] == [
        "10-22 07:00",
        "10-23 07:00",
        "10-26 08:00",
        "10-27 08:00",
    ]


def test_stepped_expression_keeps_real_cadence_through_the_repeated_hour() -> None:
    got = CronSchedule("*/15 * * * *", "Europe/Berlin").fire_times(utc(2026, 10, 24, 23, 30), 12)
    times = [f.time for f in got]
    assert times == [utc(2026, 10, 24, 23, 45) + timedelta(minutes=15 * k) for k in range(12)]
    assert [f.local_time.strftime("%H:%M%z") for f in got[:7]] == [
        "01:45+0200",
        "02:00+0200",
        "02:15+0200",
        "02:30+0200",
        "02:45+0200",
        "02:00+0100",
        "02:15+0100",
    ]
    assert [f.in_dst_overlap for f in got] == [False] + [True] * 8 + [False] * 3


def test_stepped_expression_through_the_gap_fires_once_at_three() -> None:
    assert fires("*/15 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0, 30), 4) == [
        ("03-29 00:45", "2026-03-29T01:45:00+01:00", False, False),
        ("03-29 01:00", "2026-03-29T03:00:00+02:00", True, False),
        ("03-29 01:15", "2026-03-29T03:15:00+02:00", False, False),
        ("03-29 01:30", "2026-03-29T03:30:00+02:00", False, False),
    ]


def test_next_after_from_inside_the_repeated_hour() -> None:
    schedule = CronSchedule("*/15 * * * *", "Europe/Berlin")
    assert schedule.next_after(utc(2026, 10, 25, 0, 50)).time == utc(2026, 10, 25, 1, 0)  # 02:50 CEST -> 02:00 CET
    assert schedule.next_after(utc(2026, 10, 25, 1, 20)).time == utc(2026, 10, 25, 1, 30)
    fixed = CronSchedule("30 2 * * *", "Europe/Berlin")
    assert fixed.next_after(utc(2026, 10, 25, 1, 20)).time == utc(2026, 10, 26, 1, 30)


@pytest.mark.parametrize(
    ("expression", "zone", "field"),
    [
        ("0 0 31 2 *", "UTC", "cron.expression"),
        ("CRON_TZ=Europe/Berlin 0 9 * * *", "", "cron.expression"),
        ("0 0 9 * * *", "UTC", "cron.expression"),
        ("@daily", "UTC", "cron.expression"),
        ("61 * * * *", "UTC", "cron.expression"),
        ("", "UTC", "cron.expression"),
        ("0 9 * * *", "Mars/Olympus", "cron.time_zone"),
        ("0 9 * * *", "../etc/passwd", "cron.time_zone"),
        # ZoneInfo raises OSError / IsADirectoryError / ValueError for these, not ZoneInfoNotFoundError (fuzz).
        ("0 9 * * *", "a" * 300, "cron.time_zone"),
        ("0 9 * * *", "Europe/" + "a" * 300, "cron.time_zone"),
        ("0 9 * * *", "Europe", "cron.time_zone"),
        ("0 9 * * *", "a\x00", "cron.time_zone"),
    ],
)
def test_invalid_schedules_are_refused_naming_the_field(expression: str, zone: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        CronSchedule(expression, zone)
    assert [v.field for v in caught.value.violations] == [field]


def test_never_firing_expression_says_why() -> None:
    with pytest.raises(InvalidArgument) as caught:
        CronSchedule("0 0 31 2 *", "UTC")
    assert caught.value.reason == "CRON_NEVER_FIRES"
    assert "never fire" in caught.value.violations[0].description


def test_new_york_every_minute_and_period() -> None:
    schedule = CronSchedule("*/1 * * * *", "America/New_York")
    first = schedule.next_after(datetime(2026, 11, 29, 3, 0, 30, tzinfo=UTC))
    assert first.time == utc(2026, 11, 29, 3, 1)
    assert first.local_time.isoformat() == "2026-11-28T22:01:00-05:00"
    assert schedule.period(utc(2026, 11, 29)) == timedelta(minutes=1)
    assert CronSchedule("0 9 * * MON-FRI", "UTC").period(utc(2026, 11, 29)) == timedelta(days=1)

"""Planning a due job: one-off jobs, start and end times, truncation of a long outage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from contentpipe.scheduler.domain.model import Job, first_fire_time, missed_while_paused, plan_due_job
from contentpipe.scheduler.domain.policies import Decision, MisfirePolicy

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 29, 12, 0, 30, tzinfo=UTC)


def cron_job(expression: str = "0 * * * *", **kwargs: object) -> Job:
    return Job(id="job-a", owner="u", pipeline="pipelines/p", cron_expression=expression, **kwargs)  # type: ignore[arg-type]


def test_first_fire_honours_start_and_end() -> None:
    assert first_fire_time(cron_job(), NOW) == datetime(2026, 11, 29, 13, tzinfo=UTC)
    start = datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert first_fire_time(cron_job(start_time=start), NOW) == start  # the start itself is a fire time
    assert first_fire_time(cron_job(end_time=NOW + timedelta(minutes=5)), NOW) is None
    one_off = Job(id="o", owner="u", pipeline="pipelines/p", run_time=NOW + timedelta(hours=2))
    assert first_fire_time(one_off, NOW) == NOW + timedelta(hours=2)


def test_one_off_fires_once_then_completes() -> None:
    job = Job(id="o", owner="u", pipeline="pipelines/p", run_time=NOW, next_fire_time=NOW)
    plan = plan_due_job(job, NOW + timedelta(seconds=5), running=False, buffered=False)
    assert plan.decisions == [(NOW, Decision.RUN)] and plan.complete and plan.next_fire_time is None


def test_end_time_stops_the_schedule() -> None:
    end = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
    job = cron_job(
        "*/10 * * * *",
        end_time=end,
        next_fire_time=datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
        period=timedelta(minutes=10),
    )
    plan = plan_due_job(job, NOW, running=False, buffered=False)
    assert [d for _, d in plan.decisions] == [Decision.RUN]
    assert plan.next_fire_time == datetime(2026, 11, 29, 12, 10, tzinfo=UTC) and not plan.complete
    late = plan_due_job(job, end + timedelta(hours=1), running=False, buffered=False)
    assert late.complete and late.next_fire_time is None
    # 12:00 .. 12:30, all an hour late: past the catch-up window (1 h, capped at the 10 min period).
    assert [d for _, d in late.decisions] == [Decision.MISSED] * 4


def test_a_week_long_outage_of_an_every_minute_job_is_bounded_and_resumes_after_now() -> None:
    job = cron_job("* * * * *", next_fire_time=NOW - timedelta(days=7), misfire_policy=MisfirePolicy.SKIP)
    plan = plan_due_job(job, NOW, running=False, buffered=False)
    assert len(plan.decisions) == 1000 and plan.truncated
    assert plan.next_fire_time == datetime(2026, 11, 29, 12, 1, tzinfo=UTC)
    missed, truncated = missed_while_paused(job, NOW)
    assert len(missed) == 1000 and truncated

"""Rows of the scheduler's tables to domain objects and back."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from contentpipe.scheduler.domain.model import (
    Job,
    JobRun,
    JobRunState,
    JobState,
    JobStats,
    Notification,
    NotificationKind,
)
from contentpipe.scheduler.domain.policies import MISFIRE_GRACE, Backoff, MisfirePolicy, OverlapPolicy


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _delta(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def job_from_row(row: Any, now: datetime | None = None) -> Job:
    m = row._mapping
    overdue = bool(
        now is not None
        and m["state"] == JobState.ACTIVE
        and m["next_fire_time"] is not None
        and m["next_fire_time"] < now - MISFIRE_GRACE
    )
    return Job(
        id=m["id"],
        owner=m["owner"],
        pipeline=m["pipeline"],
        display_name=m["display_name"],
        cron_expression=m["cron_expression"],
        time_zone=m["time_zone"],
        run_time=m["run_time"],
        start_time=m["start_time"],
        end_time=m["end_time"],
        state=JobState(m["state"]),
        state_reason=m["state_reason"],
        state_reason_code=m["state_reason_code"],
        next_fire_time=m["next_fire_time"],
        last_fire_time=m["last_fire_time"],
        last_outcome=m["last_outcome"],
        consecutive_failures=m["consecutive_failures"],
        max_retries=m["max_retries"],
        backoff=Backoff(
            initial=timedelta(seconds=m["initial_backoff_s"]),
            multiplier=m["backoff_multiplier"],
            maximum=timedelta(seconds=m["max_backoff_s"]),
        ),
        misfire_policy=MisfirePolicy(m["misfire_policy"]),
        max_catch_up_runs=m["max_catch_up_runs"],
        catch_up_window=_delta(m["catch_up_window_s"]),
        overlap_policy=OverlapPolicy(m["overlap_policy"]),
        period=_delta(m["period_s"]),
        paused_at=m["paused_at"],
        stats=JobStats(
            last_lag=_delta(m["last_lag_s"]),
            missed_count=m["missed_count"],
            skipped_count=m["skipped_count"],
            triggered_count=m["triggered_count"],
            overdue=overdue,
        ),
        create_time=m["create_time"],
        update_time=m["update_time"],
        version=m["version"],
    )


def job_values(job: Job) -> dict[str, Any]:
    """Columns a create or an update writes (counters and leases are managed elsewhere)."""
    return {
        "owner": job.owner,
        "pipeline": job.pipeline,
        "display_name": job.display_name,
        "cron_expression": job.cron_expression,
        "time_zone": job.time_zone,
        "run_time": job.run_time,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "state": int(job.state),
        "state_reason": job.state_reason,
        "state_reason_code": job.state_reason_code,
        "next_fire_time": job.next_fire_time,
        "consecutive_failures": job.consecutive_failures,
        "max_retries": job.max_retries,
        "initial_backoff_s": job.backoff.initial.total_seconds(),
        "backoff_multiplier": job.backoff.multiplier,
        "max_backoff_s": job.backoff.maximum.total_seconds(),
        "misfire_policy": int(job.misfire_policy),
        "max_catch_up_runs": job.max_catch_up_runs,
        "catch_up_window_s": _seconds(job.catch_up_window),
        "overlap_policy": int(job.overlap_policy),
        "period_s": _seconds(job.period),
        "paused_at": job.paused_at,
    }


def run_from_row(row: Any) -> JobRun:
    m = row._mapping
    return JobRun(
        id=m["id"],
        job_id=m["job_id"],
        nominal_time=m["nominal_time"],
        state=JobRunState(m["state"]),
        trigger_time=m["trigger_time"],
        pipeline_run=m["pipeline_run"],
        attempt=m["attempt"],
        next_retry_time=m["next_retry_time"],
        finish_time=m["finish_time"],
        message=m["message"],
        manual=m["manual"],
    )


def run_from_row_dict(row: dict[str, Any]) -> JobRun:
    return JobRun(
        id=row["id"],
        job_id=row["job_id"],
        nominal_time=row["nominal_time"],
        state=JobRunState(row["state"]),
        trigger_time=row["trigger_time"],
        pipeline_run=row["pipeline_run"],
        attempt=row["attempt"],
        message=row["message"],
        manual=row["manual"],
    )


def notification_from_row(row: Any) -> Notification:
    m = row._mapping
    return Notification(
        id=m["id"],
        owner=m["owner"],
        kind=NotificationKind(m["kind"]),
        title=m["title"],
        message=m["message"],
        job=m["job"],
        pipeline_run=m["pipeline_run"],
        connection=m["connection"],
        create_time=m["create_time"],
        acknowledge_time=m["acknowledge_time"],
        deliver_time=m["deliver_time"],
    )

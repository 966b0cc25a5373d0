"""Translation between API messages and the scheduler's plain values (the only place that knows both)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contentpipe.api.scheduler.v1 import notification_service_pb2 as npb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2 as pb
from contentpipe.common.cron import FireTime
from contentpipe.common.errors import InvalidArgument
from contentpipe.common.etags import etag_for
from contentpipe.scheduler.domain.model import Job, JobRun, Notification
from contentpipe.scheduler.service_layer.jobs import JobInput
from google.protobuf import duration_pb2, timestamp_pb2


def to_datetime(stamp: timestamp_pb2.Timestamp, field: str) -> datetime:
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.single(field, "timestamp out of range") from None


def to_timedelta(value: duration_pb2.Duration, field: str) -> timedelta:
    if value.seconds < 0 or value.nanos < 0:
        raise InvalidArgument.single(field, "must not be negative")
    try:
        return timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)
    except OverflowError:  # beyond timedelta's ~2.7 million years; every bound we check is far smaller
        raise InvalidArgument.single(field, "duration out of range") from None


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def duration(value: timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    out = duration_pb2.Duration()
    out.FromTimedelta(value)
    return out


def job_input(message: pb.Job) -> JobInput:
    schedule = message.WhichOneof("schedule")
    retry = message.retry_policy
    has_retry = message.HasField("retry_policy")
    return JobInput(
        pipeline=message.pipeline,
        display_name=message.display_name,
        cron_expression=message.cron.expression if schedule == "cron" else None,
        time_zone=message.cron.time_zone if schedule == "cron" else "",
        run_time=to_datetime(message.run_time, "job.run_time") if schedule == "run_time" else None,
        start_time=to_datetime(message.start_time, "job.start_time") if message.HasField("start_time") else None,
        end_time=to_datetime(message.end_time, "job.end_time") if message.HasField("end_time") else None,
        has_retry_policy=has_retry,
        max_retries=retry.max_retries if has_retry and retry.HasField("max_retries") else None,
        initial_backoff=(
            to_timedelta(retry.initial_backoff, "job.retry_policy.initial_backoff")
            if retry.HasField("initial_backoff")
            else None
        ),
        multiplier=retry.multiplier,
        max_backoff=(
            to_timedelta(retry.max_backoff, "job.retry_policy.max_backoff") if retry.HasField("max_backoff") else None
        ),
        misfire_policy=int(message.misfire_policy),
        max_catch_up_runs=message.max_catch_up_runs,
        catch_up_window=(
            to_timedelta(message.catch_up_window, "job.catch_up_window")
            if message.HasField("catch_up_window")
            else None
        ),
        overlap_policy=int(message.overlap_policy),
    )


def job_message(job: Job) -> pb.Job:
    message = pb.Job(
        name=job.name,
        owner=job.owner,
        pipeline=job.pipeline,
        display_name=job.display_name,
        state=int(job.state),  # type: ignore[arg-type]
        state_reason=job.state_reason,
        last_outcome=job.last_outcome,  # type: ignore[arg-type]
        consecutive_failures=job.consecutive_failures,
        retry_policy=pb.RetryPolicy(
            max_retries=job.max_retries,
            initial_backoff=duration(job.backoff.initial),
            multiplier=job.backoff.multiplier,
            max_backoff=duration(job.backoff.maximum),
        ),
        misfire_policy=int(job.misfire_policy),  # type: ignore[arg-type]
        max_catch_up_runs=job.max_catch_up_runs,
        catch_up_window=duration(job.catch_up_window),
        overlap_policy=int(job.overlap_policy),  # type: ignore[arg-type]
        stats=pb.JobStats(
            last_lag=duration(job.stats.last_lag),
            missed_count=job.stats.missed_count,
            skipped_count=job.stats.skipped_count,
            triggered_count=job.stats.triggered_count,
            overdue=job.stats.overdue,
        ),
        create_time=timestamp(job.create_time),
        update_time=timestamp(job.update_time),
        etag=etag_for(job.version),
    )
    if job.cron_expression is not None:
        message.cron.CopyFrom(pb.CronSchedule(expression=job.cron_expression, time_zone=job.time_zone))
    elif job.run_time is not None:
        message.run_time.FromDatetime(job.run_time)
    for field_name, value in (
        ("start_time", job.start_time),
        ("end_time", job.end_time),
        ("next_fire_time", job.next_fire_time),
        ("last_fire_time", job.last_fire_time),
    ):
        if value is not None:
            getattr(message, field_name).FromDatetime(value)
    return message


def job_run_message(run: JobRun) -> pb.JobRun:
    return pb.JobRun(
        name=run.name,
        nominal_time=timestamp(run.nominal_time),
        trigger_time=timestamp(run.trigger_time),
        state=int(run.state),  # type: ignore[arg-type]
        pipeline_run=run.pipeline_run,
        attempt=run.attempt,
        next_retry_time=timestamp(run.next_retry_time) if run.state == 4 else None,
        finish_time=timestamp(run.finish_time),
        message=run.message,
        manual=run.manual,
    )


def fire_time_message(fire: FireTime) -> pb.FireTime:
    return pb.FireTime(
        time=timestamp(fire.time),
        local_time=fire.local_time.isoformat(),
        in_dst_gap=fire.in_dst_gap,
        in_dst_overlap=fire.in_dst_overlap,
    )


def notification_message(notification: Notification) -> npb.Notification:
    return npb.Notification(
        name=notification.name,
        owner=notification.owner,
        kind=int(notification.kind),  # type: ignore[arg-type]
        title=notification.title,
        message=notification.message,
        job=notification.job,
        pipeline_run=notification.pipeline_run,
        connection=notification.connection,
        create_time=timestamp(notification.create_time),
        acknowledge_time=timestamp(notification.acknowledge_time),
        deliver_time=timestamp(notification.deliver_time),
    )

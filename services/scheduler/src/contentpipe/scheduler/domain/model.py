"""Jobs, job runs and notifications as plain values, and the plan for a due job."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum

from contentpipe.common.cron import CronSchedule, cron_schedule
from contentpipe.scheduler.domain.policies import (
    DEFAULT_MAX_CATCH_UP_RUNS,
    DEFAULT_MAX_RETRIES,
    Backoff,
    Decision,
    MisfirePolicy,
    OverlapPolicy,
    apply_overlap,
    effective_catch_up_window,
    plan_misfires,
)

# At most this many fire times are recorded for one job in one pass (a long outage of a */1 job).
MAX_RECORDS_PER_PASS = 1000


class JobState(IntEnum):
    """Values match the API enum JobState."""

    ACTIVE = 1
    PAUSED = 2
    DEACTIVATED = 3


class JobRunState(IntEnum):
    """Values match the API enum JobRunState."""

    TRIGGERED = 1
    SUCCEEDED = 2
    FAILED = 3
    RETRY_SCHEDULED = 4
    MISSED = 5
    SKIPPED = 6
    COALESCED = 7
    BUFFERED = 8
    CANCELED = 9


ACTIVE_RUN_STATES = (JobRunState.TRIGGERED, JobRunState.RETRY_SCHEDULED)
TERMINAL_RUN_STATES = (JobRunState.SUCCEEDED, JobRunState.FAILED, JobRunState.CANCELED)


class StateReasonCode:
    """Why a job is not ACTIVE, machine-readable (kept next to the human `state_reason`)."""

    PAUSED_BY_USER = "PAUSED_BY_USER"
    PIPELINE_PAUSED = "PIPELINE_PAUSED"
    PIPELINE_DELETED = "PIPELINE_DELETED"
    FAILURES = "TOO_MANY_FAILURES"
    COMPLETED = "COMPLETED"


class NotificationKind(IntEnum):
    """Values match the API enum NotificationKind."""

    JOB_DEACTIVATED = 1
    JOB_RECOVERED = 2
    RUN_FAILED_PERMANENTLY = 3
    CONNECTION_NEEDS_REAUTH = 4
    JOB_PAUSED = 5


@dataclass(frozen=True, slots=True)
class JobStats:
    last_lag: timedelta | None = None
    missed_count: int = 0
    skipped_count: int = 0
    triggered_count: int = 0
    overdue: bool = False


@dataclass(frozen=True, slots=True)
class Job:
    """A job as stored. Times are aware UTC datetimes."""

    id: str
    owner: str
    pipeline: str
    display_name: str = ""
    cron_expression: str | None = None
    time_zone: str = "UTC"
    run_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    state: JobState = JobState.ACTIVE
    state_reason: str = ""
    state_reason_code: str = ""
    next_fire_time: datetime | None = None
    last_fire_time: datetime | None = None
    last_outcome: int = 0
    consecutive_failures: int = 0
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff: Backoff = field(default_factory=Backoff)
    misfire_policy: MisfirePolicy = MisfirePolicy.LATEST
    max_catch_up_runs: int = DEFAULT_MAX_CATCH_UP_RUNS
    catch_up_window: timedelta | None = None
    overlap_policy: OverlapPolicy = OverlapPolicy.SKIP
    period: timedelta | None = None
    paused_at: datetime | None = None
    stats: JobStats = field(default_factory=JobStats)
    create_time: datetime | None = None
    update_time: datetime | None = None
    version: int = 1

    @property
    def name(self) -> str:
        return f"jobs/{self.id}"

    def schedule(self) -> CronSchedule | None:
        if self.cron_expression is None:
            return None
        return cron_schedule(self.cron_expression, self.time_zone)


@dataclass(frozen=True, slots=True)
class JobRun:
    id: str
    job_id: str
    nominal_time: datetime
    state: JobRunState
    trigger_time: datetime | None = None
    pipeline_run: str = ""
    attempt: int = 0
    next_retry_time: datetime | None = None
    finish_time: datetime | None = None
    message: str = ""
    manual: bool = False

    @property
    def name(self) -> str:
        return f"jobs/{self.job_id}/runs/{self.id}"


@dataclass(frozen=True, slots=True)
class Notification:
    id: str
    owner: str
    kind: NotificationKind
    title: str
    message: str
    job: str = ""
    pipeline_run: str = ""
    connection: str = ""
    create_time: datetime | None = None
    acknowledge_time: datetime | None = None
    deliver_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"notifications/{self.id}"


def first_fire_time(job: Job, now: datetime) -> datetime | None:
    """The next nominal time of a (new, changed or resumed) job after `now`, honouring start/end."""
    if job.run_time is not None:
        fire: datetime | None = job.run_time
    else:
        schedule = job.schedule()
        assert schedule is not None
        after = now
        if job.start_time is not None and job.start_time > now:
            after = job.start_time - timedelta(microseconds=1)
        fire = schedule.next_after(after).time
    if fire is not None and job.end_time is not None and fire > job.end_time:
        return None
    return fire


@dataclass(frozen=True, slots=True)
class DuePlan:
    """What processing a due job decided: one decision per fire time, and the job's next state."""

    decisions: list[tuple[datetime, Decision]]
    next_fire_time: datetime | None
    complete: bool  # one-off fired or end time passed: the job becomes DEACTIVATED (COMPLETED)
    truncated: bool = False


def plan_due_job(job: Job, now: datetime, *, running: bool, buffered: bool) -> DuePlan:
    """Enumerate the due fire times of an ACTIVE job whose next fire time is <= now and decide each."""
    assert job.next_fire_time is not None
    schedule = job.schedule()
    if schedule is None:
        due, truncated = [job.next_fire_time], False
        next_fire: datetime | None = None
    else:
        until = now if job.end_time is None else min(now, job.end_time)
        due, truncated, following = schedule.times_until(job.next_fire_time, until, limit=MAX_RECORDS_PER_PASS)
        if following is None or until < now:
            following = schedule.next_after(now).time
        next_fire = following
        if job.end_time is not None and next_fire > job.end_time:
            next_fire = None
    window = effective_catch_up_window(job.misfire_policy, job.catch_up_window, job.period, job.max_catch_up_runs)
    decisions = plan_misfires(due, now, job.misfire_policy, window, job.max_catch_up_runs)
    decisions = apply_overlap(decisions, job.overlap_policy, running=running, buffered=buffered)
    return DuePlan(decisions, next_fire, complete=next_fire is None, truncated=truncated)


def missed_while_paused(job: Job, now: datetime) -> tuple[list[datetime], bool]:
    """Fire times between the job's stale next fire time and now: recorded MISSED on resume, never run."""
    if job.next_fire_time is None or job.next_fire_time > now:
        return [], False
    schedule = job.schedule()
    if schedule is None:
        return [job.next_fire_time], False
    return schedule.times_between(job.next_fire_time, now, limit=MAX_RECORDS_PER_PASS)

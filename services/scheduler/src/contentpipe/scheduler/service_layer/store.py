"""The repository port of the scheduler: values exchanged with it and the protocol the adapter implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from contentpipe.scheduler.domain.model import Job, JobRun, JobRunState, JobState, Notification, NotificationKind
from contentpipe.scheduler.domain.policies import Decision


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """An active job run leased for dispatch, polling or retry, with its job's owner and pipeline."""

    run: JobRun
    owner: str
    pipeline: str


@dataclass(frozen=True, slots=True)
class DueRecord:
    """The outcome of planning one claimed job: run records to insert and the job's next state."""

    job: Job
    decisions: list[tuple[datetime, Decision]]
    next_fire_time: datetime | None
    state: JobState = JobState.ACTIVE
    state_reason: str = ""
    state_reason_code: str = ""
    messages: dict[Decision, str] = field(default_factory=dict)


# Plans one claimed job: (job, the database's now, a run of it is going, a fire time of it is buffered) -> record.
PlanDue = Callable[[Job, datetime, bool, bool], DueRecord]


@dataclass(frozen=True, slots=True)
class DueBatch:
    """One batch of due jobs claimed, planned and recorded in one transaction."""

    now: datetime
    records: list[DueRecord]
    # The new run records to trigger: TRIGGERED and leased to this worker so nobody else dispatches them meanwhile.
    to_dispatch: list[ClaimedRun]


@dataclass(frozen=True, slots=True)
class RunChange:
    """New values for a leased active run (the lease is released with it)."""

    run_id: str
    job_id: str
    state: JobRunState
    pipeline_run: str
    attempt: int
    next_check_at: datetime | None = None
    next_retry_time: datetime | None = None
    finish_time: datetime | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class FailureCount:
    consecutive_failures: int
    max_retries: int
    deactivations: int
    state: JobState


@dataclass(frozen=True, slots=True)
class NotificationDraft:
    owner: str
    kind: NotificationKind
    title: str
    message: str
    dedupe_key: str
    job: str = ""
    pipeline_run: str = ""
    connection: str = ""


class SchedulerStore(Protocol):
    async def now(self) -> datetime: ...

    async def ping(self) -> None: ...

    async def insert_job(self, job: Job, *, request_id: str | None) -> Job: ...

    async def get_job(self, job_id: str) -> Job | None: ...

    async def list_jobs(
        self,
        *,
        owner: str,
        pipeline: str | None,
        state: JobState | None,
        overdue_only: bool,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Job]: ...

    async def save_job(self, job: Job, *, expected_version: int) -> Job: ...

    async def delete_job(self, job_id: str) -> None: ...

    async def record_not_run(self, job: Job, times: Sequence[datetime], state: JobRunState, message: str) -> int: ...

    async def record_due_jobs(
        self,
        plan: PlanDue,
        *,
        limit: int,
        lease_owner: str,
        claim_seconds: float,
        dispatch_lease_seconds: float,
        owner: str | None = None,
        job_id: str | None = None,
    ) -> DueBatch: ...

    async def release_runs(self, lease_owner: str, run_ids: Sequence[str]) -> int: ...

    async def claim_active_runs(
        self,
        *,
        limit: int,
        lease_owner: str,
        lease_seconds: float,
        owner: str | None = None,
        job_id: str | None = None,
    ) -> tuple[datetime, list[ClaimedRun]]: ...

    async def apply_run_changes(self, lease_owner: str, changes: Sequence[RunChange]) -> None: ...

    async def record_successes(self, job_ids: Sequence[str]) -> list[Job]: ...

    async def count_failure(self, job_id: str) -> FailureCount | None: ...

    async def deactivate_for_failures(self, job_id: str, *, epoch: int, reason: str) -> int | None: ...

    async def mark_failure_notified(self, job_id: str) -> None: ...

    async def pause_for_pipeline(self, job_id: str, *, code: str, reason: str) -> bool: ...

    async def promote_buffered(self, job_ids: Sequence[str]) -> int: ...

    async def insert_manual_run(
        self, job: Job, *, request_id: str | None, lease_owner: str, lease_seconds: float
    ) -> tuple[JobRun, bool]: ...

    async def get_run(self, run_id: str) -> JobRun | None: ...

    async def list_runs(
        self, job_id: str, *, state: JobRunState | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[JobRun]: ...

    async def add_notifications(self, drafts: Sequence[NotificationDraft], *, deliver: bool) -> int: ...

    async def list_notifications(
        self, owner: str, *, unread_only: bool, after: tuple[datetime, str] | None, limit: int
    ) -> list[Notification]: ...

    async def get_notification(self, owner: str, notification_id: str) -> Notification | None: ...

    async def acknowledge_notification(self, owner: str, notification_id: str) -> Notification | None: ...

    async def claim_outbox(
        self, *, limit: int, lease_owner: str, lease_seconds: float
    ) -> tuple[datetime, list[Notification]]: ...

    async def finish_delivery(
        self,
        notification_id: str,
        *,
        lease_owner: str,
        delivered: bool,
        next_attempt_at: datetime | None,
        error: str = "",
    ) -> None: ...

    async def delivery_attempts(self, notification_id: str) -> int: ...

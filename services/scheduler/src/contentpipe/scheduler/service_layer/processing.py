"""One processing pass: reconcile active runs, then claim due jobs, decide, record and trigger them.

Exactly once per fire time: a job run's identity is (job, nominal time) under a unique constraint; a worker
triggers only the records its INSERT created, with a pipelines `request_id` derived from that identity, so a
re-sent call after a crash returns the same pipeline run. A batch of due jobs is claimed, planned and recorded in
one transaction (row locks, FOR UPDATE SKIP LOCKED, on PostgreSQL), and run records being triggered or polled are
leased, so any number of `serve` loops and `tick` processes can run at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar, cast

from contentpipe.common.error_class import ErrorClass
from contentpipe.common.errors import (
    ContentpipeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unimplemented,
)
from contentpipe.scheduler.domain.model import (
    Job,
    JobRunState,
    JobState,
    NotificationKind,
    StateReasonCode,
    plan_due_job,
)
from contentpipe.scheduler.domain.policies import Decision, deactivation_threshold, run_request_id
from contentpipe.scheduler.service_layer.metrics import ScheduleMetrics
from contentpipe.scheduler.service_layer.ports import PipelineRunInfo, PipelineRunStatus, Pipelines, RunTrigger
from contentpipe.scheduler.service_layer.store import (
    ClaimedRun,
    DueRecord,
    NotificationDraft,
    RunChange,
    SchedulerStore,
)

_log = logging.getLogger(__name__)
T = TypeVar("T")
ItemT = TypeVar("ItemT")

_MESSAGES = {
    Decision.MISSED: "not run: its time passed beyond the catch-up window (or the misfire policy is SKIP)",
    Decision.COALESCED: "not run: folded into the catch-up run of a later fire time (misfire LATEST)",
    Decision.SKIPPED: "not run: the previous run was still going (overlap SKIP)",
    Decision.BUFFERED: "waiting for the previous run to end (overlap BUFFER_ONE)",
}
_PERMANENT = (ErrorClass.PERMANENT, ErrorClass.NEEDS_REAUTH)
# After a pipelines service answered UNIMPLEMENTED to the batch call (an older version during a rolling
# upgrade), triggers go one by one this long before the batch call is tried again.
BATCH_RETRY_AFTER_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class ProcessingSettings:
    batch_size: int = 500
    dispatch_concurrency: int = 64
    # New runs of one owner are queued together, up to this many per BatchRunPipelines call (1: one RunPipeline
    # call per run). One call instead of dozens saves most of the per-call work on both sides.
    trigger_batch_size: int = 100
    # Batches whose pipelines calls may be in flight while the next batch is claimed.
    pipeline_depth: int = 3
    # A batch of due jobs is claimed, planned and recorded in one transaction; one stuck longer than this is ended
    # by the database (its jobs are due again for the other workers).
    claim_timeout_seconds: float = 30.0
    # Run records being triggered are leased this long, so nobody re-sends them meanwhile.
    dispatch_lease_seconds: float = 60.0
    # How often a triggered pipeline run is polled for its outcome.
    poll_interval: timedelta = timedelta(seconds=10)
    max_poll_interval: timedelta = timedelta(minutes=5)
    # Wait before re-sending a trigger whose call failed transiently.
    redispatch_delay: timedelta = timedelta(seconds=5)


@dataclass(slots=True)
class PassResult:
    claimed: int = 0
    triggered: int = 0
    reconciled: int = 0
    not_run: int = 0
    errors: int = 0
    unreachable: bool = False
    error_messages: list[str] = field(default_factory=list)

    def add(self, other: PassResult) -> None:
        self.claimed += other.claimed
        self.triggered += other.triggered
        self.reconciled += other.reconciled
        self.not_run += other.not_run
        self.errors += other.errors
        self.unreachable = self.unreachable or other.unreachable


@dataclass(slots=True)
class _Batch:
    """Outcomes of one batch of pipelines calls, written back together."""

    changes: list[RunChange] = field(default_factory=list)
    succeeded_jobs: list[str] = field(default_factory=list)
    ended_jobs: list[str] = field(default_factory=list)
    failures: list[tuple[ClaimedRun, PipelineRunInfo]] = field(default_factory=list)
    pauses: list[tuple[ClaimedRun, str, str]] = field(default_factory=list)


def _is_transient(exc: ContentpipeError) -> bool:
    return not isinstance(exc, (NotFound, FailedPrecondition, InvalidArgument))


class Processor:
    """Runs passes; shared by the gRPC ProcessDueJobs/TriggerJob, the serve loop and `tick`."""

    def __init__(
        self,
        store: SchedulerStore,
        pipelines: Pipelines,
        *,
        lease_owner: str,
        settings: ProcessingSettings | None = None,
        metrics: ScheduleMetrics | None = None,
        deliver_notifications: bool = False,
    ) -> None:
        self._store = store
        self._pipelines = pipelines
        self._lease_owner = lease_owner
        self._settings = settings or ProcessingSettings()
        self._metrics = metrics or ScheduleMetrics()
        self._deliver = deliver_notifications
        self._semaphore = asyncio.Semaphore(self._settings.dispatch_concurrency)
        # Run records this worker leases right now (being triggered or polled), given back on graceful shutdown.
        self._held_runs: set[str] = set()
        # Monotonic time before which triggers are sent one by one (the pipelines service lacked the batch call).
        self._single_calls_until = 0.0

    @property
    def lease_owner(self) -> str:
        return self._lease_owner

    async def process(self, limit: int, *, owner: str | None = None, job_id: str | None = None) -> PassResult:
        """Reconcile active runs, then process up to `limit` due jobs."""
        result = PassResult()
        await self._process_active_runs(result, limit=limit, owner=owner, job_id=job_id)
        remaining = limit
        # Batches overlap: while one batch waits on the pipelines service, the next is claimed and recorded.
        dispatching: set[asyncio.Task[None]] = set()
        try:
            while remaining > 0:
                batch = min(self._settings.batch_size, remaining)
                due = await self._store.record_due_jobs(
                    self._plan,
                    limit=batch,
                    lease_owner=self._lease_owner,
                    claim_seconds=self._settings.claim_timeout_seconds,
                    dispatch_lease_seconds=self._settings.dispatch_lease_seconds,
                    owner=owner,
                    job_id=job_id,
                )
                if not due.records:
                    break
                result.claimed += len(due.records)
                remaining -= len(due.records)
                for record in due.records:
                    self._count_not_run(record, result)
                dispatching.add(asyncio.create_task(self._dispatch_new(due.to_dispatch, due.now, result)))
                if len(dispatching) >= self._settings.pipeline_depth:
                    done, dispatching = await asyncio.wait(dispatching, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()
                if len(due.records) < batch:
                    break
        finally:
            if dispatching:
                await asyncio.gather(*dispatching)
        return result

    async def release_held(self) -> int:
        """On graceful shutdown: release the run records this worker still leases (its claims of due jobs end with
        their transactions)."""
        if not self._held_runs:
            return 0
        released = await self._store.release_runs(self._lease_owner, sorted(self._held_runs))
        self._held_runs.clear()
        return released

    async def dispatch_one(self, claimed: ClaimedRun) -> PassResult:
        """Trigger one record we just created (TriggerJob)."""
        result = PassResult()
        now = claimed.run.trigger_time or await self._store.now()
        await self._dispatch_new([claimed], now, result)
        return result

    # ------------------------------------------------------------------ planning

    def _plan(self, job: Job, now: datetime, running: bool, buffered: bool) -> DueRecord:
        plan = plan_due_job(job, now, running=running, buffered=buffered)
        state, reason, code = job.state, job.state_reason, job.state_reason_code
        if plan.complete:
            state, code = JobState.DEACTIVATED, StateReasonCode.COMPLETED
            reason = "the one-off job fired" if job.run_time is not None else "the schedule's end time has passed"
        messages = dict(_MESSAGES)
        runs = [t for t, d in plan.decisions if d is Decision.RUN]
        if runs:
            messages[Decision.COALESCED] = f"not run: folded into the catch-up run for {runs[-1].isoformat()}"
        return DueRecord(
            job=job,
            decisions=plan.decisions,
            next_fire_time=plan.next_fire_time,
            state=state,
            state_reason=reason,
            state_reason_code=code,
            messages=messages,
        )

    def _count_not_run(self, record: DueRecord, result: PassResult) -> None:
        for _, decision in record.decisions:
            if decision in (Decision.MISSED, Decision.COALESCED, Decision.SKIPPED):
                result.not_run += 1
                self._metrics.not_run(record.job.id, decision.name.lower())

    # ------------------------------------------------------------------ calling the pipelines service

    async def _call_each(self, items: Sequence[ItemT], call: Callable[[ItemT], Awaitable[T]]) -> list[T | Exception]:
        """`call` on every item, at most `dispatch_concurrency` calls at once over all batches in flight; the
        outcomes in the items' order, an exception being an outcome. A few lanes that take the next item, not a
        task per item: a batch of 500 calls costs 64 tasks, not 500."""
        outcomes: list[T | Exception | None] = [None] * len(items)
        indexes = iter(range(len(items)))

        async def lane() -> None:
            for index in indexes:
                async with self._semaphore:
                    try:
                        outcomes[index] = await call(items[index])
                    except Exception as exc:
                        outcomes[index] = exc

        await asyncio.gather(*(lane() for _ in range(min(self._settings.dispatch_concurrency, len(items)))))
        return cast("list[T | Exception]", outcomes)

    async def _dispatch_new(self, runs: Sequence[ClaimedRun], now: datetime, result: PassResult) -> None:
        """Create the pipeline runs of records we own (concurrently, bounded) and record the outcomes."""
        if not runs:
            return
        self._held_runs.update(c.run.id for c in runs)
        batch = _Batch()
        outcomes = await self._trigger(runs)
        for claimed, outcome in zip(runs, outcomes, strict=True):
            self._on_trigger_outcome(claimed, outcome, now, batch, result)
        await self._flush(batch, now, result)

    async def _trigger(self, runs: Sequence[ClaimedRun]) -> list[PipelineRunInfo | Exception]:
        """Queue the first attempt of each record; the outcomes in the records' order. An owner's runs go together
        in BatchRunPipelines calls of up to `trigger_batch_size`; a lone run goes as RunPipeline, and so does every
        run while the pipelines service lacks the batch call."""
        outcomes: list[PipelineRunInfo | Exception | None] = [None] * len(runs)
        groups: list[list[int]] = []
        singles: list[int] = []
        size = self._settings.trigger_batch_size
        if size > 1 and time.monotonic() >= self._single_calls_until:
            by_owner: dict[str, list[int]] = {}
            for index, claimed in enumerate(runs):
                by_owner.setdefault(claimed.owner, []).append(index)
            for indexes in by_owner.values():
                for start in range(0, len(indexes), size):
                    chunk = indexes[start : start + size]
                    if len(chunk) > 1:
                        groups.append(chunk)
                    else:
                        singles.extend(chunk)
        else:
            singles = list(range(len(runs)))

        async def run_group(chunk: list[int]) -> list[PipelineRunInfo | ContentpipeError]:
            return await self._pipelines.run_pipelines(
                runs[chunk[0]].owner, [self._run_trigger(runs[i]) for i in chunk]
            )

        for chunk, answer in zip(groups, await self._call_each(groups, run_group), strict=True):
            if isinstance(answer, Unimplemented):
                if time.monotonic() >= self._single_calls_until:
                    _log.warning(
                        "the pipelines service has no BatchRunPipelines (an older version?): triggering runs one "
                        "by one for %.0f s",
                        BATCH_RETRY_AFTER_SECONDS,
                    )
                self._single_calls_until = time.monotonic() + BATCH_RETRY_AFTER_SECONDS
                singles.extend(chunk)
            elif isinstance(answer, Exception):
                for index in chunk:
                    outcomes[index] = answer
            else:
                for index, outcome in zip(chunk, answer, strict=True):
                    outcomes[index] = outcome
        single_outcomes = await self._call_each([runs[i] for i in singles], self._run_pipeline)
        for index, single in zip(singles, single_outcomes, strict=True):
            outcomes[index] = single
        return cast("list[PipelineRunInfo | Exception]", outcomes)

    @staticmethod
    def _run_trigger(claimed: ClaimedRun) -> RunTrigger:
        run = claimed.run
        return RunTrigger(
            pipeline=claimed.pipeline,
            request_id=run_request_id(run.job_id, run.nominal_time, 1, manual=run.manual),
            job=f"jobs/{run.job_id}",
            nominal_time=run.nominal_time,
        )

    async def _run_pipeline(self, claimed: ClaimedRun) -> PipelineRunInfo:
        return await self._pipelines.run_pipeline(claimed.owner, self._run_trigger(claimed))

    def _on_trigger_outcome(
        self,
        claimed: ClaimedRun,
        outcome: PipelineRunInfo | BaseException,
        now: datetime,
        batch: _Batch,
        result: PassResult,
        *,
        attempt: int = 1,
        previous_run: str = "",
    ) -> None:
        run = claimed.run
        if isinstance(outcome, PipelineRunInfo):
            result.triggered += 1
            lag = (now - run.nominal_time).total_seconds() if attempt == 1 and not run.manual else None
            if lag is not None:
                self._metrics.lag(run.job_id, lag)
            self._metrics.triggered(run.job_id)
            batch.changes.append(
                RunChange(
                    run_id=run.id,
                    job_id=run.job_id,
                    state=JobRunState.TRIGGERED,
                    pipeline_run=outcome.name,
                    attempt=attempt,
                    next_check_at=now + self._settings.poll_interval,
                )
            )
            return
        pipeline_refused = isinstance(outcome, NotFound) or (
            isinstance(outcome, FailedPrecondition) and (attempt == 1 or "PAUSED" in outcome.reason)
        )
        if pipeline_refused:
            paused = not isinstance(outcome, NotFound)
            code = StateReasonCode.PIPELINE_PAUSED if paused else StateReasonCode.PIPELINE_DELETED
            reason = (
                f"{claimed.pipeline} is paused; the job is paused until it is resumed"
                if paused
                else f"{claimed.pipeline} no longer exists (or is no longer accessible)"
            )
            batch.pauses.append((claimed, code, reason))
            state = JobRunState.MISSED if attempt == 1 else JobRunState.FAILED
            batch.changes.append(self._final(claimed, state, now, reason, attempt=attempt, pipeline_run=previous_run))
            batch.ended_jobs.append(run.job_id)
            return
        if isinstance(outcome, ContentpipeError) and not _is_transient(outcome):
            # The pipelines service refuses the call as such (e.g. invalid): a failure that retrying won't fix.
            info = PipelineRunInfo(
                name=previous_run,
                status=PipelineRunStatus.FAILED,
                error_class=ErrorClass.PERMANENT,
                error_reason=outcome.reason,
                error_message=outcome.message,
            )
            batch.failures.append((claimed, info))
            return
        # Transient (UNAVAILABLE, deadline, quota, auth misconfiguration, a bug): try again on a later pass.
        result.errors += 1
        self._metrics.dispatch_error("resume" if attempt > 1 else "run")
        message = outcome.message if isinstance(outcome, ContentpipeError) else repr(outcome)
        if isinstance(outcome, ContentpipeError) and outcome.reason == "UNAVAILABLE":
            result.unreachable = True
        if not isinstance(outcome, ContentpipeError):
            _log.error("unexpected error calling the pipelines service", exc_info=outcome)
        result.error_messages.append(message)
        batch.changes.append(
            RunChange(
                run_id=run.id,
                job_id=run.job_id,
                state=run.state,
                pipeline_run=run.pipeline_run,
                attempt=run.attempt,
                next_retry_time=run.next_retry_time,
                next_check_at=now + self._settings.redispatch_delay,
                message=f"trigger failed, will retry: {message}"[:500],
            )
        )

    def _final(
        self,
        claimed: ClaimedRun,
        state: JobRunState,
        now: datetime,
        message: str,
        *,
        attempt: int | None = None,
        pipeline_run: str | None = None,
    ) -> RunChange:
        run = claimed.run
        return RunChange(
            run_id=run.id,
            job_id=run.job_id,
            state=state,
            pipeline_run=run.pipeline_run if pipeline_run is None else pipeline_run,
            attempt=run.attempt if attempt is None else attempt,
            finish_time=now,
            message=message[:1000],
        )

    # ------------------------------------------------------------------ active runs

    async def _process_active_runs(
        self, result: PassResult, *, limit: int, owner: str | None, job_id: str | None
    ) -> None:
        remaining = limit
        while remaining > 0:
            batch_size = min(self._settings.batch_size, remaining)
            now, claimed = await self._store.claim_active_runs(
                limit=batch_size,
                lease_owner=self._lease_owner,
                lease_seconds=self._settings.dispatch_lease_seconds,
                owner=owner,
                job_id=job_id,
            )
            if not claimed:
                return
            self._held_runs.update(c.run.id for c in claimed)
            remaining -= len(claimed)
            batch = _Batch()
            outcomes = await self._call_each(claimed, self._act_on)
            for item, outcome in zip(claimed, outcomes, strict=True):
                run = item.run
                if not run.pipeline_run and run.state is JobRunState.TRIGGERED:
                    self._on_trigger_outcome(item, outcome, now, batch, result)
                elif run.state is JobRunState.RETRY_SCHEDULED:
                    self._on_trigger_outcome(
                        item, outcome, now, batch, result, attempt=run.attempt + 1, previous_run=run.pipeline_run
                    )
                else:
                    self._on_poll_outcome(item, outcome, now, batch, result)
            await self._flush(batch, now, result)
            if len(claimed) < batch_size:
                return

    async def _act_on(self, claimed: ClaimedRun) -> PipelineRunInfo:
        run = claimed.run
        if run.state is JobRunState.RETRY_SCHEDULED:
            return await self._pipelines.resume_pipeline_run(
                claimed.owner,
                run.pipeline_run,
                request_id=run_request_id(run.job_id, run.nominal_time, run.attempt + 1, manual=run.manual),
            )
        if not run.pipeline_run:
            return await self._run_pipeline(claimed)
        return await self._pipelines.get_pipeline_run(claimed.owner, run.pipeline_run)

    def _on_poll_outcome(
        self,
        claimed: ClaimedRun,
        outcome: PipelineRunInfo | BaseException,
        now: datetime,
        batch: _Batch,
        result: PassResult,
    ) -> None:
        run = claimed.run
        if isinstance(outcome, NotFound):
            reason = f"{run.pipeline_run} no longer exists; {claimed.pipeline} was probably deleted"
            batch.pauses.append((claimed, StateReasonCode.PIPELINE_DELETED, reason))
            batch.changes.append(self._final(claimed, JobRunState.CANCELED, now, reason))
            batch.ended_jobs.append(run.job_id)
            result.reconciled += 1
            return
        if isinstance(outcome, BaseException):
            result.errors += 1
            self._metrics.dispatch_error("poll")
            if isinstance(outcome, ContentpipeError) and outcome.reason == "UNAVAILABLE":
                result.unreachable = True
            if not isinstance(outcome, ContentpipeError):
                _log.error("unexpected error polling a pipeline run", exc_info=outcome)
            batch.changes.append(
                RunChange(
                    run_id=run.id,
                    job_id=run.job_id,
                    state=run.state,
                    pipeline_run=run.pipeline_run,
                    attempt=run.attempt,
                    next_check_at=now + self._settings.poll_interval,
                    message=run.message,
                )
            )
            return
        if not outcome.terminal:
            batch.changes.append(
                RunChange(
                    run_id=run.id,
                    job_id=run.job_id,
                    state=JobRunState.TRIGGERED,
                    pipeline_run=run.pipeline_run,
                    attempt=run.attempt,
                    next_check_at=now + self._poll_delay(run.trigger_time, now),
                )
            )
            return
        result.reconciled += 1
        if outcome.status is PipelineRunStatus.SUCCEEDED:
            batch.changes.append(self._final(claimed, JobRunState.SUCCEEDED, now, ""))
            batch.succeeded_jobs.append(run.job_id)
            batch.ended_jobs.append(run.job_id)
        elif outcome.status is PipelineRunStatus.CANCELED:
            batch.changes.append(self._final(claimed, JobRunState.CANCELED, now, "the pipeline run was cancelled"))
            batch.ended_jobs.append(run.job_id)
        else:
            batch.failures.append((claimed, outcome))

    def _poll_delay(self, triggered: datetime | None, now: datetime) -> timedelta:
        """Poll young runs often and long runs rarely: a quarter of the run's age, within [poll, max_poll]."""
        age = now - triggered if triggered is not None else timedelta(0)
        return min(max(age / 4, self._settings.poll_interval), self._settings.max_poll_interval)

    # ------------------------------------------------------------------ writing outcomes back

    async def _flush(self, batch: _Batch, now: datetime, result: PassResult) -> None:
        drafts: list[NotificationDraft] = []
        for claimed, info in batch.failures:
            change, notes = await self._failure(claimed, info, now)
            batch.changes.append(change)
            drafts.extend(notes)
            if change.state is not JobRunState.RETRY_SCHEDULED:
                batch.ended_jobs.append(claimed.run.job_id)
        await self._store.apply_run_changes(self._lease_owner, batch.changes)
        self._held_runs.difference_update(change.run_id for change in batch.changes)
        for claimed, code, reason in batch.pauses:
            if await self._store.pause_for_pipeline(claimed.run.job_id, code=code, reason=reason):
                drafts.append(
                    NotificationDraft(
                        owner=claimed.owner,
                        kind=NotificationKind.JOB_PAUSED,
                        title=f"Job jobs/{claimed.run.job_id} was paused",
                        message=f"{reason}. Resume the job (ResumeJob) once the pipeline can run again.",
                        dedupe_key=f"paused:{claimed.run.job_id}:{claimed.run.id}",
                        job=f"jobs/{claimed.run.job_id}",
                    )
                )
        for job in await self._store.record_successes(sorted(set(batch.succeeded_jobs))):
            drafts.append(
                NotificationDraft(
                    owner=job.owner,
                    kind=NotificationKind.JOB_RECOVERED,
                    title=f"Job {job.name} succeeded again",
                    message=f"A run of {job.pipeline} succeeded after earlier failures.",
                    dedupe_key=f"recovered:{job.id}:{now.isoformat()}",
                    job=job.name,
                )
            )
        for job_id in set(batch.succeeded_jobs):
            self._metrics.consecutive_failures(job_id, 0)
        if batch.ended_jobs:
            await self._store.promote_buffered(sorted(set(batch.ended_jobs)))
        if drafts:
            await self._store.add_notifications(drafts, deliver=self._deliver)

    async def _failure(
        self, claimed: ClaimedRun, info: PipelineRunInfo, now: datetime
    ) -> tuple[RunChange, list[NotificationDraft]]:
        """A run failed for good on the pipelines side: retry with backoff, fail, or deactivate the job."""
        run = claimed.run
        job_name = f"jobs/{run.job_id}"
        counted = await self._store.count_failure(run.job_id)
        detail = info.error_message or info.error_reason or "the pipeline run failed"
        if counted is None:  # the job was deleted meanwhile
            return self._final(claimed, JobRunState.FAILED, now, detail, pipeline_run=info.name or None), []
        self._metrics.consecutive_failures(run.job_id, counted.consecutive_failures)
        threshold = deactivation_threshold(counted.max_retries)
        notes: list[NotificationDraft] = []
        if counted.consecutive_failures >= threshold:
            reason = (
                f"{counted.consecutive_failures} consecutive failed runs "
                f"(max_retries {counted.max_retries}); last error: {detail}"
            )
            epoch = await self._store.deactivate_for_failures(run.job_id, epoch=counted.deactivations, reason=reason)
            if epoch is not None:
                notes.append(
                    NotificationDraft(
                        owner=claimed.owner,
                        kind=NotificationKind.JOB_DEACTIVATED,
                        title=f"Job {job_name} was deactivated",
                        message=f"{reason}. Fix the cause, then ResumeJob to reactivate it.",
                        dedupe_key=f"deactivated:{run.job_id}:{epoch}",
                        job=job_name,
                        pipeline_run=info.name,
                        connection=info.connection,
                    )
                )
            message = f"failed; job deactivated after {counted.consecutive_failures} consecutive failures: {detail}"
            return self._final(claimed, JobRunState.FAILED, now, message, pipeline_run=info.name or None), notes
        if info.error_class in _PERMANENT:
            reauth = info.error_class is ErrorClass.NEEDS_REAUTH
            what = info.connection or "a connection"
            notes.append(
                NotificationDraft(
                    owner=claimed.owner,
                    kind=NotificationKind.CONNECTION_NEEDS_REAUTH
                    if reauth
                    else NotificationKind.RUN_FAILED_PERMANENTLY,
                    title=(f"{what} must be reconnected" if reauth else f"A run of {job_name} failed permanently"),
                    message=(
                        f"{detail}. Reconnect {what}; the job's next fire time will try again."
                        if reauth
                        else f"{detail}. It is not retried; the job's next fire time will try again."
                    ),
                    dedupe_key=f"run-failed:{run.id}:{run.attempt}",
                    job=job_name,
                    pipeline_run=info.name,
                    connection=info.connection,
                )
            )
            await self._store.mark_failure_notified(run.job_id)
            return self._final(claimed, JobRunState.FAILED, now, f"failed permanently: {detail}"), notes
        job = await self._store.get_job(run.job_id)
        delay = job.backoff.delay(run.attempt - 1) if job is not None else timedelta(minutes=1)
        retry_at = now + delay
        return (
            RunChange(
                run_id=run.id,
                job_id=run.job_id,
                state=JobRunState.RETRY_SCHEDULED,
                pipeline_run=info.name or run.pipeline_run,
                attempt=run.attempt,
                next_retry_time=retry_at,
                next_check_at=retry_at,
                message=f"attempt {run.attempt} failed ({detail}); retry at {retry_at.isoformat()}",
            ),
            notes,
        )

"""Use cases on jobs: create/get/list/update(upsert)/delete, pause/resume, trigger, runs, preview."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from contentpipe.common.cron import CronSchedule, FireTime
from contentpipe.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from contentpipe.common.etags import check_etag
from contentpipe.common.ids import new_id, parse_name
from contentpipe.scheduler.domain.model import (
    Job,
    JobRun,
    JobRunState,
    JobState,
    StateReasonCode,
    first_fire_time,
    missed_while_paused,
)
from contentpipe.scheduler.domain.policies import (
    DEFAULT_MAX_CATCH_UP_RUNS,
    DEFAULT_MAX_RETRIES,
    Backoff,
    MisfirePolicy,
    OverlapPolicy,
)
from contentpipe.scheduler.service_layer.ports import Pipelines
from contentpipe.scheduler.service_layer.processing import Processor
from contentpipe.scheduler.service_layer.store import ClaimedRun, SchedulerStore

_JOB_ID = re.compile(r"^[a-z][a-z0-9-]{3,62}$")
# The pipelines service keeps one job per pipeline under this id (its schedule step upserts it). The id is
# global, so it is reserved: `pipeline-<id>` may only schedule `pipelines/<id>`, which the ownership check
# of the pipeline then limits to that pipeline's owner (nobody can squat another user's id).
PIPELINE_JOB_PREFIX = "pipeline-"
UPDATABLE_FIELDS = _ALL_FIELDS = (
    "display_name",
    "cron",
    "run_time",
    "start_time",
    "end_time",
    "retry_policy",
    "misfire_policy",
    "max_catch_up_runs",
    "catch_up_window",
    "overlap_policy",
)
_SCHEDULE_FIELDS = {"cron", "run_time", "start_time", "end_time"}


@dataclass(frozen=True, slots=True)
class JobInput:
    """A job as a caller wrote it (translated from the API message; unset values are None/0/'')."""

    pipeline: str = ""
    display_name: str = ""
    cron_expression: str | None = None
    time_zone: str = ""
    run_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    has_retry_policy: bool = False
    max_retries: int | None = None
    initial_backoff: timedelta | None = None
    multiplier: float = 0.0
    max_backoff: timedelta | None = None
    misfire_policy: int = 0
    max_catch_up_runs: int = 0
    catch_up_window: timedelta | None = None
    overlap_policy: int = 0


def _check_request_id(request_id: str) -> None:
    if len(request_id) > 128:
        raise InvalidArgument.single("request_id", "at most 128 characters")


def _backoff(value: JobInput, violations: list[FieldViolation]) -> tuple[int, Backoff]:
    max_retries = DEFAULT_MAX_RETRIES if value.max_retries is None else value.max_retries
    if not 0 <= max_retries <= 20:
        violations.append(FieldViolation("job.retry_policy.max_retries", "must be 0 to 20"))
    initial = value.initial_backoff or Backoff().initial
    if not timedelta(seconds=1) <= initial <= timedelta(days=1):
        violations.append(FieldViolation("job.retry_policy.initial_backoff", "must be 1 s to 1 day"))
    multiplier = value.multiplier or Backoff().multiplier
    if not 1.0 <= multiplier <= 10.0:
        violations.append(FieldViolation("job.retry_policy.multiplier", "must be 1.0 to 10.0"))
    maximum = value.max_backoff or Backoff().maximum
    if not timedelta(seconds=1) <= maximum <= timedelta(days=1):
        violations.append(FieldViolation("job.retry_policy.max_backoff", "must be 1 s to 1 day"))
    return max_retries, Backoff(initial=initial, multiplier=multiplier, maximum=maximum)


def build_job(job_id: str, owner: str, value: JobInput, now: datetime) -> Job:
    """Validate every field of a full job and build it with its first fire time (ACTIVE)."""
    violations: list[FieldViolation] = []
    if not value.pipeline:
        violations.append(FieldViolation("job.pipeline", "required: pipelines/{pipeline_id}"))
    else:
        try:
            parse_name("pipelines/{id}", value.pipeline, field="job.pipeline")
        except InvalidArgument as exc:
            violations.extend(exc.violations)
    if len(value.display_name) > 200:
        violations.append(FieldViolation("job.display_name", "at most 200 characters"))
    period: timedelta | None = None
    if (value.cron_expression is None) == (value.run_time is None):
        violations.append(FieldViolation("job.cron", "exactly one of cron or run_time is required"))
    elif value.cron_expression is not None:
        try:
            schedule = CronSchedule(value.cron_expression, value.time_zone, field_prefix="job.cron")
            period = schedule.period(now)
        except InvalidArgument as exc:
            violations.extend(exc.violations)
    if value.start_time and value.end_time and value.end_time <= value.start_time:
        violations.append(FieldViolation("job.end_time", "must be after start_time"))
    max_retries, backoff = _backoff(value, violations)
    try:
        misfire = MisfirePolicy(value.misfire_policy or MisfirePolicy.LATEST)
    except ValueError:
        violations.append(FieldViolation("job.misfire_policy", "unknown value"))
        misfire = MisfirePolicy.LATEST
    try:
        overlap = OverlapPolicy(value.overlap_policy or OverlapPolicy.SKIP)
    except ValueError:
        violations.append(FieldViolation("job.overlap_policy", "unknown value"))
        overlap = OverlapPolicy.SKIP
    max_catch_up = value.max_catch_up_runs or DEFAULT_MAX_CATCH_UP_RUNS
    if not 1 <= max_catch_up <= 100:
        violations.append(FieldViolation("job.max_catch_up_runs", "must be 1 to 100 (0: 10)"))
    if value.catch_up_window is not None and not timedelta(0) <= value.catch_up_window <= timedelta(days=366):
        violations.append(FieldViolation("job.catch_up_window", "must be 0 to 366 days"))
    if violations:
        fields = ", ".join(v.field for v in violations)
        raise InvalidArgument(f"invalid job: {fields}", violations)
    job = Job(
        id=job_id,
        owner=owner,
        pipeline=value.pipeline,
        display_name=value.display_name,
        cron_expression=None if value.cron_expression is None else " ".join(value.cron_expression.split()),
        time_zone=(value.time_zone or "UTC") if value.cron_expression is not None else "UTC",
        run_time=value.run_time,
        start_time=value.start_time,
        end_time=value.end_time,
        max_retries=max_retries,
        backoff=backoff,
        misfire_policy=misfire,
        max_catch_up_runs=max_catch_up,
        catch_up_window=value.catch_up_window,
        overlap_policy=overlap,
        period=period,
    )
    return _with_first_fire(job, now)


def _with_first_fire(job: Job, now: datetime) -> Job:
    fire = first_fire_time(job, now)
    if fire is None:
        return replace(
            job,
            next_fire_time=None,
            state=JobState.DEACTIVATED,
            state_reason="no fire time left before the end time",
            state_reason_code=StateReasonCode.COMPLETED,
        )
    return replace(job, next_fire_time=fire)


def _merge(current: Job, value: JobInput, paths: set[str]) -> JobInput:
    """The job as it would be after applying `value` on the fields in `paths` (the rest kept)."""

    def pick(field_name: str, new: object, old: object) -> object:
        return new if field_name in paths else old

    cron_expression, time_zone, run_time = current.cron_expression, current.time_zone, current.run_time
    if "cron" in paths and value.cron_expression is not None:
        cron_expression, time_zone, run_time = value.cron_expression, value.time_zone, None
    elif "run_time" in paths and value.run_time is not None:
        cron_expression, time_zone, run_time = None, "", value.run_time
    elif {"cron", "run_time"} <= paths:
        cron_expression, run_time = None, None  # both cleared: refused by validation
    keep_retry = "retry_policy" not in paths
    return JobInput(
        pipeline=current.pipeline,
        display_name=str(pick("display_name", value.display_name, current.display_name)),
        cron_expression=cron_expression,
        time_zone=time_zone,
        run_time=run_time,
        start_time=value.start_time if "start_time" in paths else current.start_time,
        end_time=value.end_time if "end_time" in paths else current.end_time,
        max_retries=current.max_retries if keep_retry else value.max_retries,
        initial_backoff=current.backoff.initial if keep_retry else value.initial_backoff,
        multiplier=current.backoff.multiplier if keep_retry else value.multiplier,
        max_backoff=current.backoff.maximum if keep_retry else value.max_backoff,
        misfire_policy=int(current.misfire_policy) if "misfire_policy" not in paths else value.misfire_policy,
        max_catch_up_runs=current.max_catch_up_runs if "max_catch_up_runs" not in paths else value.max_catch_up_runs,
        catch_up_window=current.catch_up_window if "catch_up_window" not in paths else value.catch_up_window,
        overlap_policy=int(current.overlap_policy) if "overlap_policy" not in paths else value.overlap_policy,
    )


def _check_reserved_id(job_id: str, pipeline: str) -> None:
    if not job_id.startswith(PIPELINE_JOB_PREFIX):
        return
    expected = f"pipelines/{job_id.removeprefix(PIPELINE_JOB_PREFIX)}"
    if pipeline != expected:
        raise InvalidArgument.single(
            "job_id",
            f"ids starting with {PIPELINE_JOB_PREFIX!r} are reserved for the schedule step of the pipeline they "
            f"name: {job_id!r} may only schedule {expected}; choose another id or leave it empty",
        )


def mask_paths(paths: list[str]) -> set[str]:
    """Top-level updatable fields named by an update mask (`*`: all; the entrypoint fills an absent one)."""
    if paths == ["*"]:
        return set(_ALL_FIELDS)
    if not paths:
        raise InvalidArgument.single("update_mask", "nothing to update: name the fields to change")
    chosen: set[str] = set()
    for path in paths:
        head = path.split(".", 1)[0]
        if head not in _ALL_FIELDS:
            raise InvalidArgument.single("update_mask", f"field {path!r} cannot be updated")
        chosen.add(head)
    return chosen


class JobService:
    def __init__(self, store: SchedulerStore, pipelines: Pipelines, processor: Processor) -> None:
        self._store = store
        self._pipelines = pipelines
        self._processor = processor

    async def _owned(self, owner: str, name: str, *, field: str = "name") -> Job:
        job_id = parse_name("jobs/{id}", name, field=field)
        job = await self._store.get_job(job_id)
        if job is None or job.owner != owner:
            raise NotFound(f"job {name} not found", reason="JOB_NOT_FOUND")
        return job

    async def _check_pipeline(self, owner: str, pipeline: str) -> None:
        try:
            await self._pipelines.get_pipeline(owner, pipeline)
        except NotFound:
            raise NotFound(f"pipeline {pipeline} not found", reason="PIPELINE_NOT_FOUND") from None

    async def create_job(
        self, owner: str, value: JobInput, *, job_id: str = "", request_id: str = "", validate_only: bool = False
    ) -> Job:
        _check_request_id(request_id)
        if job_id and not _JOB_ID.match(job_id):
            raise InvalidArgument.single("job_id", "4 to 63 characters of [a-z0-9-], starting with a letter")
        now = await self._store.now()
        job = build_job(job_id or new_id(), owner, value, now)
        _check_reserved_id(job.id, job.pipeline)
        await self._check_pipeline(owner, job.pipeline)
        if validate_only:
            return replace(job, create_time=now, update_time=now)
        return await self._store.insert_job(replace(job, create_time=now), request_id=request_id or None)

    async def get_job(self, owner: str, name: str) -> Job:
        return await self._owned(owner, name)

    async def list_jobs(
        self,
        owner: str,
        *,
        pipeline: str,
        state: JobState | None,
        overdue_only: bool,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Job]:
        if pipeline:
            parse_name("pipelines/{id}", pipeline, field="pipeline")
        return await self._store.list_jobs(
            owner=owner, pipeline=pipeline or None, state=state, overdue_only=overdue_only, after=after, limit=limit
        )

    async def update_job(
        self, owner: str, name: str, value: JobInput, paths: list[str], *, allow_missing: bool, etag: str = ""
    ) -> Job:
        fields = mask_paths(paths)
        job_id = parse_name("jobs/{id}", name, field="job.name")
        current = await self._store.get_job(job_id)
        if current is None or current.owner != owner:
            if current is None and allow_missing:
                if not _JOB_ID.match(job_id) and len(job_id) != 32:
                    raise InvalidArgument.single("job.name", "job id: 4 to 63 characters of [a-z0-9-]")
                try:
                    return await self.create_job(owner, value, job_id=job_id)
                except AlreadyExists:
                    # Lost a create race with an identical upsert: apply as an update instead.
                    current = await self._store.get_job(job_id)
                    if current is None or current.owner != owner:
                        raise NotFound(f"job {name} not found", reason="JOB_NOT_FOUND") from None
            else:
                raise NotFound(f"job {name} not found", reason="JOB_NOT_FOUND")
        check_etag(etag, current.version, f"jobs/{current.id}")
        merged = _merge(current, value, fields)
        now = await self._store.now()
        rebuilt = build_job(current.id, owner, merged, now)
        schedule_changed = (
            rebuilt.cron_expression != current.cron_expression
            or rebuilt.time_zone != current.time_zone
            or rebuilt.run_time != current.run_time
            or rebuilt.start_time != current.start_time
            or rebuilt.end_time != current.end_time
        )
        updated = replace(
            current,
            display_name=rebuilt.display_name,
            cron_expression=rebuilt.cron_expression,
            time_zone=rebuilt.time_zone,
            run_time=rebuilt.run_time,
            start_time=rebuilt.start_time,
            end_time=rebuilt.end_time,
            max_retries=rebuilt.max_retries,
            backoff=rebuilt.backoff,
            misfire_policy=rebuilt.misfire_policy,
            max_catch_up_runs=rebuilt.max_catch_up_runs,
            catch_up_window=rebuilt.catch_up_window,
            overlap_policy=rebuilt.overlap_policy,
            period=rebuilt.period,
        )
        if schedule_changed:
            updated = replace(updated, next_fire_time=rebuilt.next_fire_time)
            if current.state is JobState.DEACTIVATED and current.state_reason_code == StateReasonCode.COMPLETED:
                # A finished one-off (or ended) job given a new time fires again (one job per pipeline).
                updated = replace(
                    updated,
                    state=rebuilt.state,
                    state_reason=rebuilt.state_reason,
                    state_reason_code=rebuilt.state_reason_code,
                )
            elif current.state is JobState.ACTIVE and rebuilt.state is JobState.DEACTIVATED:
                updated = replace(
                    updated,
                    state=rebuilt.state,
                    state_reason=rebuilt.state_reason,
                    state_reason_code=rebuilt.state_reason_code,
                )
        if updated == current:
            return current
        return await self._store.save_job(updated, expected_version=current.version)

    async def delete_job(self, owner: str, name: str) -> None:
        job = await self._owned(owner, name)
        await self._store.delete_job(job.id)

    async def pause_job(self, owner: str, name: str, reason: str) -> Job:
        if len(reason) > 500:
            raise InvalidArgument.single("reason", "at most 500 characters")
        job = await self._owned(owner, name)
        if job.state is JobState.DEACTIVATED:
            raise FailedPrecondition(
                f"job {name} is DEACTIVATED ({job.state_reason}); ResumeJob reactivates it", reason="JOB_DEACTIVATED"
            )
        if job.state is JobState.PAUSED:
            return job
        now = await self._store.now()
        paused = replace(
            job,
            state=JobState.PAUSED,
            state_reason=reason or "paused by the owner",
            state_reason_code=StateReasonCode.PAUSED_BY_USER,
            paused_at=now,
        )
        return await self._store.save_job(paused, expected_version=job.version)

    async def resume_job(self, owner: str, name: str) -> Job:
        """Back to ACTIVE; fire times that passed meanwhile are recorded MISSED (never run: no flood)."""
        job = await self._owned(owner, name)
        if job.state is JobState.ACTIVE:
            return job
        now = await self._store.now()
        if job.state_reason_code != StateReasonCode.COMPLETED:
            missed, truncated = missed_while_paused(job, now)
            what = "paused" if job.state is JobState.PAUSED else "deactivated"
            note = f"not run: the job was {what} at this time ({job.state_reason})"
            if truncated:
                note += "; older fire times of the outage are not listed one by one"
            await self._store.record_not_run(job, missed, JobRunState.MISSED, note[:1000])
        resumed = _with_first_fire(
            replace(
                job,
                state=JobState.ACTIVE,
                state_reason="",
                state_reason_code="",
                consecutive_failures=0,
                paused_at=None,
            ),
            now,
        )
        return await self._store.save_job(resumed, expected_version=job.version)

    async def trigger_job(self, owner: str, name: str, request_id: str) -> JobRun:
        """Run the job's pipeline now, once, outside its schedule (any state but deleted)."""
        _check_request_id(request_id)
        job = await self._owned(owner, name)
        run, created = await self._store.insert_manual_run(
            job, request_id=request_id or None, lease_owner=self._processor.lease_owner, lease_seconds=60
        )
        if created:
            await self._processor.dispatch_one(ClaimedRun(run=run, owner=job.owner, pipeline=job.pipeline))
        stored = await self._store.get_run(run.id)
        return stored or run

    async def list_runs(
        self,
        owner: str,
        parent: str,
        *,
        state: JobRunState | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[JobRun]:
        job = await self._owned(owner, parent, field="parent")
        return await self._store.list_runs(job.id, state=state, after=after, limit=limit)

    async def preview(self, expression: str, time_zone: str, count: int, start: datetime | None) -> list[FireTime]:
        if count < 0 or count > 100:
            raise InvalidArgument.single("count", "must be 1 to 100 (0: 10)")
        schedule = CronSchedule(expression, time_zone, field_prefix="cron")
        after = start or await self._store.now()
        return schedule.fire_times(after, count or 10)

"""gRPC servicer for SchedulerService: translate, call one use case, translate back."""

from __future__ import annotations

from typing import Any

from contentpipe.api.scheduler.v1 import scheduler_service_pb2 as pb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2_grpc
from contentpipe.common.auth import SERVICE_ROLE, current_principal
from contentpipe.common.errors import InvalidArgument
from contentpipe.common.field_masks import effective_update_mask
from contentpipe.common.ids import parse_name
from contentpipe.common.pagination import PageTokenCodec, keyset_after, next_keyset_token, page_size
from contentpipe.scheduler.domain.model import JobRunState, JobState
from contentpipe.scheduler.entrypoints import convert
from contentpipe.scheduler.service_layer.jobs import UPDATABLE_FIELDS, JobService
from contentpipe.scheduler.service_layer.processing import Processor

MAX_PROCESS_LIMIT = 10_000
DEFAULT_PROCESS_LIMIT = 500


def _job_state(value: int) -> JobState | None:
    if value == 0:
        return None
    try:
        return JobState(value)
    except ValueError:
        raise InvalidArgument.single("state", "unknown job state") from None


def _run_state(value: int) -> JobRunState | None:
    if value == 0:
        return None
    try:
        return JobRunState(value)
    except ValueError:
        raise InvalidArgument.single("state", "unknown job run state") from None


class SchedulerServiceServicer(scheduler_service_pb2_grpc.SchedulerServiceServicer):
    """Thin: translate requests, call the service layer, translate results; raise ContentpipeError."""

    def __init__(self, jobs: JobService, processor: Processor, codec: PageTokenCodec) -> None:
        self._jobs = jobs
        self._processor = processor
        self._codec = codec

    async def CreateJob(self, request: pb.CreateJobRequest, context: Any) -> pb.CreateJobResponse:
        job = await self._jobs.create_job(
            current_principal().user_id,
            convert.job_input(request.job),
            job_id=request.job_id,
            request_id=request.request_id,
            validate_only=request.validate_only,
        )
        return pb.CreateJobResponse(job=convert.job_message(job))

    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.GetJobResponse:
        job = await self._jobs.get_job(current_principal().user_id, request.name)
        return pb.GetJobResponse(job=convert.job_message(job))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        limit = page_size(request.page_size)
        state = _job_state(int(request.state))
        query = f"{request.pipeline}|{int(request.state)}|{request.overdue_only}"
        after = keyset_after(self._codec, request.page_token, query=query)
        jobs = await self._jobs.list_jobs(
            current_principal().user_id,
            pipeline=request.pipeline,
            state=state,
            overdue_only=request.overdue_only,
            after=after,
            limit=limit + 1,
        )
        token = next_keyset_token(self._codec, [(j.create_time, j.id) for j in jobs], limit, query=query)
        return pb.ListJobsResponse(jobs=[convert.job_message(j) for j in jobs[:limit]], next_page_token=token)

    async def UpdateJob(self, request: pb.UpdateJobRequest, context: Any) -> pb.UpdateJobResponse:
        job = await self._jobs.update_job(
            current_principal().user_id,
            request.job.name,
            convert.job_input(request.job),
            effective_update_mask(request.job, request.update_mask.paths, UPDATABLE_FIELDS),
            allow_missing=request.allow_missing,
            etag=request.job.etag,
        )
        return pb.UpdateJobResponse(job=convert.job_message(job))

    async def DeleteJob(self, request: pb.DeleteJobRequest, context: Any) -> pb.DeleteJobResponse:
        await self._jobs.delete_job(current_principal().user_id, request.name)
        return pb.DeleteJobResponse()

    async def PauseJob(self, request: pb.PauseJobRequest, context: Any) -> pb.PauseJobResponse:
        job = await self._jobs.pause_job(current_principal().user_id, request.name, request.reason)
        return pb.PauseJobResponse(job=convert.job_message(job))

    async def ResumeJob(self, request: pb.ResumeJobRequest, context: Any) -> pb.ResumeJobResponse:
        job = await self._jobs.resume_job(current_principal().user_id, request.name)
        return pb.ResumeJobResponse(job=convert.job_message(job))

    async def TriggerJob(self, request: pb.TriggerJobRequest, context: Any) -> pb.TriggerJobResponse:
        run = await self._jobs.trigger_job(current_principal().user_id, request.name, request.request_id)
        return pb.TriggerJobResponse(job_run=convert.job_run_message(run))

    async def ProcessDueJobs(self, request: pb.ProcessDueJobsRequest, context: Any) -> pb.ProcessDueJobsResponse:
        if not 0 <= request.limit <= MAX_PROCESS_LIMIT:
            raise InvalidArgument.single("limit", f"must be 0 to {MAX_PROCESS_LIMIT} (0: {DEFAULT_PROCESS_LIMIT})")
        principal = current_principal()
        everybody = principal.role == SERVICE_ROLE and not principal.on_behalf_of_service
        owner = None if everybody else principal.user_id
        job_id = parse_name("jobs/{id}", request.job, field="job") if request.job else None
        if job_id is not None and owner is not None:
            await self._jobs.get_job(owner, request.job)  # NOT_FOUND for another user's job
        result = await self._processor.process(request.limit or DEFAULT_PROCESS_LIMIT, owner=owner, job_id=job_id)
        return pb.ProcessDueJobsResponse(
            claimed=result.claimed,
            triggered=result.triggered,
            reconciled=result.reconciled,
            not_run=result.not_run,
            errors=result.errors,
        )

    async def ListJobRuns(self, request: pb.ListJobRunsRequest, context: Any) -> pb.ListJobRunsResponse:
        limit = page_size(request.page_size)
        state = _run_state(int(request.state))
        query = f"{request.parent}|{int(request.state)}"
        after = keyset_after(self._codec, request.page_token, query=query)
        runs = await self._jobs.list_runs(
            current_principal().user_id, request.parent, state=state, after=after, limit=limit + 1
        )
        token = next_keyset_token(self._codec, [(r.nominal_time, r.id) for r in runs], limit, query=query)
        return pb.ListJobRunsResponse(
            job_runs=[convert.job_run_message(r) for r in runs[:limit]], next_page_token=token
        )

    async def PreviewSchedule(self, request: pb.PreviewScheduleRequest, context: Any) -> pb.PreviewScheduleResponse:
        current_principal()
        start = convert.to_datetime(request.start_time, "start_time") if request.HasField("start_time") else None
        fires = await self._jobs.preview(request.cron.expression, request.cron.time_zone, request.count, start)
        return pb.PreviewScheduleResponse(fire_times=[convert.fire_time_message(f) for f in fires])

"""Calls to the generation, oauth (connections, posting) and scheduler services through their v1 stubs.

Background work (the run engine) acts for the run's owner with a service token; validation during an
incoming call passes no metadata, so the channel forwards the caller's own token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import grpc.aio
from contentpipe.api.generation.v1 import generation_service_pb2 as gen_pb
from contentpipe.api.generation.v1 import generation_service_pb2_grpc as gen_grpc
from contentpipe.api.oauth.v1 import connection_service_pb2 as conn_pb
from contentpipe.api.oauth.v1 import connection_service_pb2_grpc as conn_grpc
from contentpipe.api.oauth.v1 import platform_pb2
from contentpipe.api.oauth.v1 import posting_service_pb2 as post_pb
from contentpipe.api.oauth.v1 import posting_service_pb2_grpc as post_grpc
from contentpipe.api.scheduler.v1 import scheduler_service_pb2 as sched_pb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2_grpc as sched_grpc
from contentpipe.common.channels import ServiceToken
from contentpipe.common.grpc_errors import error_from_rpc
from contentpipe.pipelines import codec
from contentpipe.pipelines.domain.model import Platform, PostState
from contentpipe.pipelines.service_layer.ports import (
    PIPELINE_PAUSED_REASON,
    ConnectionInfo,
    GenerationRequest,
    GenerationStatus,
    JobSpec,
    JobStatus,
    PostRequest,
    PostStatus,
)
from google.protobuf import duration_pb2, field_mask_pb2

Metadata = Sequence[tuple[str, str]]
CALL_TIMEOUT_SECONDS = 10.0
_GEN_STATE = {value: name.removeprefix("GENERATION_STATE_") for name, value in gen_pb.GenerationState.items()}
_PLATFORM = {value: name.removeprefix("PLATFORM_") for name, value in platform_pb2.Platform.items()}
_CONNECTION_STATUS = {
    value: name.removeprefix("CONNECTION_STATUS_") for name, value in conn_pb.ConnectionStatus.items()
}


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


class _Acting:
    def __init__(self, token: ServiceToken) -> None:
        self._token = token

    def metadata(self, owner: str) -> Metadata:
        return self._token.peer_call_metadata(owner)


class GrpcConnections(_Acting):
    def __init__(self, channel: grpc.aio.Channel, token: ServiceToken) -> None:
        super().__init__(token)
        self._stub = conn_grpc.ConnectionServiceStub(channel)

    async def get(self, name: str, *, acting_for: str | None) -> ConnectionInfo:
        metadata = self.metadata(acting_for) if acting_for else None
        try:
            response = await self._stub.GetConnection(
                conn_pb.GetConnectionRequest(name=name), metadata=metadata, timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        connection = response.connection
        platform = _PLATFORM.get(connection.platform, "UNSPECIFIED")
        return ConnectionInfo(
            name=connection.name,
            platform=Platform(platform) if platform in Platform.__members__ else Platform.UNSPECIFIED,
            status=_CONNECTION_STATUS.get(connection.status, "UNSPECIFIED"),
        )


def _generation_message(request: GenerationRequest) -> gen_pb.Generation:
    generation = gen_pb.Generation(
        kind=codec.generation_kind_pb(request.kind),  # type: ignore[arg-type]
        prompt=request.prompt,
        provider=request.provider,
        model=request.model,
    )
    if request.options:
        codec.from_dict(request.options, generation.options)
    return generation


def post_message(request: PostRequest) -> post_pb.Post:
    """The Post a step's target becomes, for CreatePost (and its validate_only dry run)."""
    # A pipeline's media come from its generation steps: disclosed as AI-made where the platform takes it.
    post = post_pb.Post(connection=request.connection, text=request.text, ai_generated=bool(request.media))
    for item in request.media:
        post.media.add(
            uri=item.uri,
            kind=post_pb.MEDIA_KIND_IMAGE if item.kind == "IMAGE" else post_pb.MEDIA_KIND_VIDEO,
            content_type=item.content_type,
            size_bytes=item.size_bytes,
            duration_seconds=item.duration_seconds,
            width=item.width,
            height=item.height,
            sha256=item.sha256,
        )
    if request.options:
        codec.from_dict(request.options, post.options)
    return post


def _generation_status(generation: gen_pb.Generation) -> GenerationStatus:
    return GenerationStatus(
        name=generation.name,
        state=_GEN_STATE.get(generation.state, "UNSPECIFIED"),
        assets=tuple(codec.to_dict(asset) for asset in generation.outputs),
        text=generation.text,
        error_reason=generation.error.reason,
        error_message=generation.error.message,
        error_retryable=generation.error.retryable,
    )


class GrpcGenerations(_Acting):
    def __init__(self, channel: grpc.aio.Channel, token: ServiceToken) -> None:
        super().__init__(token)
        self._stub = gen_grpc.GenerationServiceStub(channel)

    async def create(self, owner: str, request: GenerationRequest, request_id: str, name: str = "") -> GenerationStatus:
        try:
            response = await self._stub.CreateGeneration(
                gen_pb.CreateGenerationRequest(
                    generation=_generation_message(request),
                    request_id=request_id,
                    generation_id=name.removeprefix("generations/"),
                ),
                metadata=self.metadata(owner),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return _generation_status(response.generation)

    async def validate(self, request: GenerationRequest) -> Mapping[str, Any]:
        # No metadata: the channel forwards the caller's own token (this runs inside their CreatePipeline).
        try:
            response = await self._stub.CreateGeneration(
                gen_pb.CreateGenerationRequest(generation=_generation_message(request), validate_only=True),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return codec.to_dict(response.generation.options)

    async def get(self, owner: str, name: str) -> GenerationStatus:
        try:
            response = await self._stub.GetGeneration(
                gen_pb.GetGenerationRequest(name=name), metadata=self.metadata(owner), timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return _generation_status(response.generation)

    async def wait(self, owner: str, name: str, max_wait: float) -> GenerationStatus:
        request = gen_pb.WaitGenerationRequest(name=name, timeout=_duration(max_wait))
        try:
            response = await self._stub.WaitGeneration(
                request, metadata=self.metadata(owner), timeout=max_wait + CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # a generation service older than the long poll
                return await self.get(owner, name)
            raise error_from_rpc(exc) from None
        return _generation_status(response.generation)

    async def cancel(self, owner: str, name: str) -> None:
        try:
            await self._stub.CancelGeneration(
                gen_pb.CancelGenerationRequest(name=name), metadata=self.metadata(owner), timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None


def _post_status(post: post_pb.Post) -> PostStatus:
    return PostStatus(
        name=post.name,
        state=codec.POST_STATE.get(post.state, PostState.UNSPECIFIED),
        permalink=post.permalink,
        error_class=codec.POST_ERROR_CLASS.get(post.last_error.error_class),
        error_reason=post.last_error.reason,
        error_message=post.last_error.message,
        next_attempt_time=codec.dt(post.next_attempt_time, post.HasField("next_attempt_time")),
    )


class GrpcPosts(_Acting):
    def __init__(self, channel: grpc.aio.Channel, token: ServiceToken) -> None:
        super().__init__(token)
        self._stub = post_grpc.PostingServiceStub(channel)

    async def create(self, owner: str, request: PostRequest, request_id: str, name: str = "") -> PostStatus:
        try:
            response = await self._stub.CreatePost(
                post_pb.CreatePostRequest(
                    post=post_message(request), request_id=request_id, post_id=name.removeprefix("posts/")
                ),
                metadata=self.metadata(owner),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return _post_status(response.post)

    async def validate(self, request: PostRequest) -> None:
        try:
            await self._stub.CreatePost(
                post_pb.CreatePostRequest(post=post_message(request), validate_only=True),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    async def get(self, owner: str, name: str) -> PostStatus:
        try:
            response = await self._stub.GetPost(
                post_pb.GetPostRequest(name=name), metadata=self.metadata(owner), timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return _post_status(response.post)

    async def wait(self, owner: str, name: str, max_wait: float) -> PostStatus:
        request = post_pb.WaitPostRequest(name=name, timeout=_duration(max_wait))
        try:
            response = await self._stub.WaitPost(
                request, metadata=self.metadata(owner), timeout=max_wait + CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # an oauth service older than the long poll
                return await self.get(owner, name)
            raise error_from_rpc(exc) from None
        return _post_status(response.post)

    async def cancel(self, owner: str, name: str) -> None:
        try:
            await self._stub.CancelPost(
                post_pb.CancelPostRequest(name=name), metadata=self.metadata(owner), timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None


class GrpcJobs(_Acting):
    def __init__(self, channel: grpc.aio.Channel, token: ServiceToken) -> None:
        super().__init__(token)
        self._stub = sched_grpc.SchedulerServiceStub(channel)

    async def upsert(self, owner: str, spec: JobSpec) -> JobStatus:
        """UpdateJob with allow_missing: creates the pipeline's job on the first run, updates it afterwards."""
        job = sched_pb.Job(name=f"jobs/{spec.job_id}", pipeline=spec.pipeline, display_name=spec.display_name)
        if spec.cron_expression is not None:
            job.cron.expression = spec.cron_expression
            job.cron.time_zone = spec.time_zone
        elif spec.run_time is not None:
            stamp = codec.ts(spec.run_time)
            assert stamp is not None
            job.run_time.CopyFrom(stamp)
        mask = field_mask_pb2.FieldMask(paths=["display_name", "cron", "run_time"])
        try:
            response = await self._stub.UpdateJob(
                sched_pb.UpdateJobRequest(job=job, update_mask=mask, allow_missing=True),
                metadata=self.metadata(owner),
                timeout=CALL_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        result = response.job
        next_fire: datetime | None = codec.dt(result.next_fire_time, result.HasField("next_fire_time"))
        return JobStatus(name=result.name, next_fire_time=next_fire)

    async def _jobs_of(self, pipeline: str) -> list[sched_pb.Job]:
        jobs: list[sched_pb.Job] = []
        token = ""
        while True:
            try:
                # No metadata: the caller's own token (this runs inside their UpdatePipeline).
                response = await self._stub.ListJobs(
                    sched_pb.ListJobsRequest(pipeline=pipeline, page_size=1000, page_token=token),
                    timeout=CALL_TIMEOUT_SECONDS,
                )
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc) from None
            jobs.extend(response.jobs)
            token = response.next_page_token
            if not token:
                return jobs

    async def pause_for_pipeline(self, pipeline: str) -> list[str]:
        paused: list[str] = []
        for job in await self._jobs_of(pipeline):
            if job.state != sched_pb.JOB_STATE_ACTIVE:
                continue
            try:
                await self._stub.PauseJob(
                    sched_pb.PauseJobRequest(name=job.name, reason=PIPELINE_PAUSED_REASON),
                    timeout=CALL_TIMEOUT_SECONDS,
                )
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc) from None
            paused.append(job.name)
        return paused

    async def resume_for_pipeline(self, pipeline: str) -> list[str]:
        resumed: list[str] = []
        for job in await self._jobs_of(pipeline):
            if job.state != sched_pb.JOB_STATE_PAUSED or job.state_reason != PIPELINE_PAUSED_REASON:
                continue
            try:
                await self._stub.ResumeJob(sched_pb.ResumeJobRequest(name=job.name), timeout=CALL_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc) from None
            resumed.append(job.name)
        return resumed

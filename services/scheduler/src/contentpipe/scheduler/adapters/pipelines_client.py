"""The pipelines service through its generated stub, acting for a job's owner with a service token."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import grpc
import grpc.aio
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc
from contentpipe.common.channels import ServiceToken
from contentpipe.common.context import REQUEST_ID_HEADER
from contentpipe.common.error_class import ErrorClass
from contentpipe.common.errors import ContentpipeError, Internal, Unavailable
from contentpipe.common.grpc_errors import error_from_code, error_from_rpc
from contentpipe.scheduler.service_layer.ports import PipelineInfo, PipelineRunInfo, PipelineRunStatus, RunTrigger
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Per-method deadlines (seconds): triggers and polls are small; the processing loop must not hang on them.
RUN_TIMEOUT = 10.0
READ_TIMEOUT = 5.0
# A batch queues up to a few hundred runs, concurrently on the pipelines side.
BATCH_RUN_TIMEOUT = 30.0


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a Timestamp (one per trigger: `Timestamp.FromDatetime` costs several times more)."""
    since = value - _EPOCH
    return timestamp_pb2.Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def _run_request(trigger: RunTrigger) -> pb.RunPipelineRequest:
    return pb.RunPipelineRequest(
        name=trigger.pipeline,
        request_id=trigger.request_id,
        job=trigger.job,
        nominal_time=_timestamp(trigger.nominal_time) if trigger.nominal_time is not None else None,
    )


_ERROR_CLASS = {
    pb.STEP_ERROR_CLASS_RETRYABLE: ErrorClass.RETRYABLE,
    pb.STEP_ERROR_CLASS_PERMANENT: ErrorClass.PERMANENT,
    pb.STEP_ERROR_CLASS_NEEDS_REAUTH: ErrorClass.NEEDS_REAUTH,
    pb.STEP_ERROR_CLASS_RATE_LIMITED: ErrorClass.RATE_LIMITED,
}


_STATUS = {int(status): status for status in PipelineRunStatus}


def run_info(run: pb.PipelineRun) -> PipelineRunInfo:
    """The parts of a PipelineRun the scheduler acts on; the connection to reconnect for NEEDS_REAUTH."""
    status = _STATUS.get(run.state, PipelineRunStatus.UNSPECIFIED)
    if status is not PipelineRunStatus.FAILED and not run.HasField("error"):
        # A run just created, still going or done (every trigger's answer): no error, nothing to reconnect.
        return PipelineRunInfo(name=run.name, status=status)
    connection = ""
    for step in run.steps:
        for target in step.targets:
            if target.error.error_class == pb.STEP_ERROR_CLASS_NEEDS_REAUTH:
                connection = target.connection
                break
        if connection:
            break
    return PipelineRunInfo(
        name=run.name,
        status=status,
        error_class=_ERROR_CLASS.get(run.error.error_class),
        error_reason=run.error.reason,
        error_message=run.error.message,
        connection=connection,
    )


class GrpcPipelines:
    """Implements service_layer.ports.Pipelines on one shared channel (created in bootstrap)."""

    def __init__(self, channel: grpc.aio.Channel, token: ServiceToken | None) -> None:
        self._channel = channel
        self._stub = pb_grpc.PipelineServiceStub(channel)
        self._token = token

    def _metadata(self, owner: str, request_id: str = "") -> tuple[tuple[str, str], ...] | None:
        # Without a service token (JWKS-only deployments) the caller's own token is propagated by the channel.
        metadata = self._token.peer_call_metadata(owner) if self._token is not None else ()
        if request_id:
            # The trigger's idempotency key doubles as the call's request id: one id to grep in both services' logs.
            metadata = (*metadata, (REQUEST_ID_HEADER, request_id))
        return metadata or None

    async def get_pipeline(self, owner: str, pipeline: str) -> PipelineInfo:
        try:
            response = await self._stub.GetPipeline(
                pb.GetPipelineRequest(name=pipeline), metadata=self._metadata(owner), timeout=READ_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        p = response.pipeline
        return PipelineInfo(name=p.name, owner=p.owner, paused=p.state == pb.PIPELINE_STATE_PAUSED)

    async def run_pipeline(self, owner: str, trigger: RunTrigger) -> PipelineRunInfo:
        try:
            response = await self._stub.RunPipeline(
                _run_request(trigger), metadata=self._metadata(owner, trigger.request_id), timeout=RUN_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return run_info(response.run)

    async def run_pipelines(
        self, owner: str, triggers: Sequence[RunTrigger]
    ) -> list[PipelineRunInfo | ContentpipeError]:
        request = pb.BatchRunPipelinesRequest(requests=[_run_request(trigger) for trigger in triggers])
        try:
            response = await self._stub.BatchRunPipelines(
                request, metadata=self._metadata(owner), timeout=BATCH_RUN_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        if len(response.results) != len(triggers):
            raise Internal(
                f"BatchRunPipelines answered {len(response.results)} results for {len(triggers)} requests",
                reason="BATCH_RESULTS_MISMATCH",
            )
        return [
            run_info(result.run)
            if result.HasField("run")
            else error_from_code(result.error.code, result.error.message, reason=result.error.reason or None)
            for result in response.results
        ]

    async def get_pipeline_run(self, owner: str, run: str) -> PipelineRunInfo:
        try:
            response = await self._stub.GetPipelineRun(
                pb.GetPipelineRunRequest(name=run), metadata=self._metadata(owner), timeout=READ_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return run_info(response.run)

    async def resume_pipeline_run(self, owner: str, run: str, *, request_id: str) -> PipelineRunInfo:
        try:
            response = await self._stub.ResumePipelineRun(
                pb.ResumePipelineRunRequest(name=run, request_id=request_id),
                metadata=self._metadata(owner, request_id),
                timeout=RUN_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return run_info(response.run)

    async def check_reachable(self) -> None:
        """gRPC health of the pipelines service; Unavailable unless it answers SERVING."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=READ_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"pipelines service unreachable: {exc.code().name}", reason="PIPELINES_UNREACHABLE"
            ) from None
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise Unavailable("pipelines service is not SERVING", reason="PIPELINES_UNREACHABLE")

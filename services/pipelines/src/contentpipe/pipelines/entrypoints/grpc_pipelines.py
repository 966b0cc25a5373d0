"""gRPC servicer for PipelineService: translate requests, call one use case, translate the result."""

from __future__ import annotations

import contextlib
from typing import Any

import grpc.aio
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc
from contentpipe.common.auth import current_principal
from contentpipe.common.errors import ContentpipeError, InvalidArgument
from contentpipe.common.field_masks import effective_update_mask
from contentpipe.common.grpc_errors import status_code_for
from contentpipe.common.ids import parse_name, parse_name_parts
from contentpipe.common.pagination import PageTokenCodec, page_size
from contentpipe.common.request_checks import optional_seconds
from contentpipe.pipelines import codec
from contentpipe.pipelines.domain.model import PIPELINE_PATTERN, RUN_PATTERN, PipelineRun, PipelineState, RunState
from contentpipe.pipelines.service_layer.pipelines import UPDATABLE_FIELDS, PipelineDraft, PipelineService
from contentpipe.pipelines.service_layer.ports import RunFilter
from contentpipe.pipelines.service_layer.runs import RunRequest, RunService

Context = grpc.aio.ServicerContext[Any, Any]


def _draft(message: pb.Pipeline) -> PipelineDraft:
    return PipelineDraft(
        display_name=message.display_name,
        description=message.description,
        state=codec.PIPELINE_STATE.get(message.state),
        steps=tuple(codec.step_from_proto(step, index) for index, step in enumerate(message.steps)),
        etag=message.etag,
    )


def _run_request(message: pb.RunPipelineRequest) -> RunRequest | ContentpipeError:
    """One request of a batch, or why it cannot be read."""
    try:
        return RunRequest(
            pipeline_id=parse_name(PIPELINE_PATTERN, message.name),
            request_id=message.request_id,
            job=message.job,
            nominal_time=codec.dt(message.nominal_time, message.HasField("nominal_time"), field="nominal_time"),
        )
    except ContentpipeError as exc:
        return exc


def _run_result(index: int, outcome: PipelineRun | ContentpipeError) -> pb.RunPipelineResult:
    """The result of request `index`; its field errors named from the batch (`requests[3].name: …`)."""
    if not isinstance(outcome, ContentpipeError):
        return pb.RunPipelineResult(run=codec.run_to_proto(outcome))
    message = outcome.message
    if isinstance(outcome, InvalidArgument) and outcome.violations:
        message = "; ".join(f"requests[{index}].{v.field}: {v.description}" for v in outcome.violations)
    return pb.RunPipelineResult(
        error=pb.RunPipelineError(code=status_code_for(outcome).value[0], message=message, reason=outcome.reason)
    )


def _owner() -> str:
    return current_principal().user_id


class PipelineServiceServicer(pipeline_service_pb2_grpc.PipelineServiceServicer):
    def __init__(self, pipelines: PipelineService, runs: RunService, page_tokens: PageTokenCodec) -> None:
        self._pipelines = pipelines
        self._runs = runs
        self._tokens = page_tokens

    async def CreatePipeline(self, request: pb.CreatePipelineRequest, context: Context) -> pb.CreatePipelineResponse:
        pipeline = await self._pipelines.create(
            _owner(), _draft(request.pipeline), request.request_id, request.validate_only
        )
        return pb.CreatePipelineResponse(pipeline=codec.pipeline_to_proto(pipeline))

    async def GetPipeline(self, request: pb.GetPipelineRequest, context: Context) -> pb.GetPipelineResponse:
        pipeline_id = parse_name(PIPELINE_PATTERN, request.name)
        return pb.GetPipelineResponse(
            pipeline=codec.pipeline_to_proto(await self._pipelines.get(_owner(), pipeline_id))
        )

    async def ListPipelines(self, request: pb.ListPipelinesRequest, context: Context) -> pb.ListPipelinesResponse:
        limit = page_size(request.page_size)
        state = codec.PIPELINE_STATE.get(request.state)
        query = f"state={request.state}"
        cursor = self._tokens.decode(request.page_token, query=query)
        page = await self._pipelines.list_page(_owner(), state, limit, dict(cursor.last) if cursor else None)
        token = self._tokens.encode(page.next_cursor, query=query) if page.next_cursor else ""
        return pb.ListPipelinesResponse(
            pipelines=[codec.pipeline_to_proto(item) for item in page.items], next_page_token=token
        )

    async def UpdatePipeline(self, request: pb.UpdatePipelineRequest, context: Context) -> pb.UpdatePipelineResponse:
        pipeline_id = parse_name(PIPELINE_PATTERN, request.pipeline.name, field="pipeline.name")
        paths = effective_update_mask(request.pipeline, request.update_mask.paths, UPDATABLE_FIELDS)
        pipeline = await self._pipelines.update(_owner(), pipeline_id, _draft(request.pipeline), paths)
        return pb.UpdatePipelineResponse(pipeline=codec.pipeline_to_proto(pipeline))

    async def DeletePipeline(self, request: pb.DeletePipelineRequest, context: Context) -> pb.DeletePipelineResponse:
        pipeline_id = parse_name(PIPELINE_PATTERN, request.name)
        in_flight = await self._pipelines.delete(_owner(), pipeline_id, request.etag)
        for run in in_flight:
            with contextlib.suppress(ContentpipeError):
                await self._runs.cancel_children(run)
        return pb.DeletePipelineResponse()

    async def RunPipeline(self, request: pb.RunPipelineRequest, context: Context) -> pb.RunPipelineResponse:
        pipeline_id = parse_name(PIPELINE_PATTERN, request.name)
        nominal = codec.dt(request.nominal_time, request.HasField("nominal_time"), field="nominal_time")
        run = await self._runs.run(_owner(), pipeline_id, request.request_id, request.job, nominal)
        return pb.RunPipelineResponse(run=codec.run_to_proto(run))

    async def BatchRunPipelines(
        self, request: pb.BatchRunPipelinesRequest, context: Context
    ) -> pb.BatchRunPipelinesResponse:
        requests = [_run_request(item) for item in request.requests]
        outcomes = await self._runs.run_many(_owner(), requests)
        return pb.BatchRunPipelinesResponse(
            results=[_run_result(index, outcome) for index, outcome in enumerate(outcomes)]
        )

    async def GetPipelineRun(self, request: pb.GetPipelineRunRequest, context: Context) -> pb.GetPipelineRunResponse:
        pipeline_id, run_id = parse_name_parts(RUN_PATTERN, request.name)
        return pb.GetPipelineRunResponse(run=codec.run_to_proto(await self._runs.get(_owner(), pipeline_id, run_id)))

    async def WaitPipelineRun(self, request: pb.WaitPipelineRunRequest, context: Context) -> pb.WaitPipelineRunResponse:
        pipeline_id, run_id = parse_name_parts(RUN_PATTERN, request.name)
        if request.state and request.state not in codec.RUN_STATE:
            raise InvalidArgument.single("state", f"unknown run state {request.state}")
        timeout = optional_seconds(request, "timeout")
        run = await self._runs.wait(
            _owner(), pipeline_id, run_id, seen=codec.RUN_STATE.get(request.state), max_wait=timeout
        )
        return pb.WaitPipelineRunResponse(run=codec.run_to_proto(run))

    async def ListPipelineRuns(
        self, request: pb.ListPipelineRunsRequest, context: Context
    ) -> pb.ListPipelineRunsResponse:
        if request.parent == "pipelines/-":
            pipeline_id: str | None = None
        else:
            pipeline_id = parse_name(PIPELINE_PATTERN, request.parent, field="parent")
        if request.state not in codec.RUN_STATE and request.state != pb.PIPELINE_RUN_STATE_UNSPECIFIED:
            raise InvalidArgument.single("state", "unknown run state")
        state: RunState | None = codec.RUN_STATE.get(request.state)
        after = codec.dt(request.create_time_after, request.HasField("create_time_after"), field="create_time_after")
        before = codec.dt(
            request.create_time_before, request.HasField("create_time_before"), field="create_time_before"
        )
        limit = page_size(request.page_size)
        query = f"parent={request.parent}&state={request.state}&after={after}&before={before}"
        cursor = self._tokens.decode(request.page_token, query=query)
        page = await self._runs.list_page(
            RunFilter(owner=_owner(), pipeline_id=pipeline_id, state=state, created_after=after, created_before=before),
            limit,
            dict(cursor.last) if cursor else None,
        )
        token = self._tokens.encode(page.next_cursor, query=query) if page.next_cursor else ""
        return pb.ListPipelineRunsResponse(runs=[codec.run_to_proto(run) for run in page.items], next_page_token=token)

    async def CancelPipelineRun(
        self, request: pb.CancelPipelineRunRequest, context: Context
    ) -> pb.CancelPipelineRunResponse:
        pipeline_id, run_id = parse_name_parts(RUN_PATTERN, request.name)
        return pb.CancelPipelineRunResponse(
            run=codec.run_to_proto(await self._runs.cancel(_owner(), pipeline_id, run_id))
        )

    async def ResumePipelineRun(
        self, request: pb.ResumePipelineRunRequest, context: Context
    ) -> pb.ResumePipelineRunResponse:
        pipeline_id, run_id = parse_name_parts(RUN_PATTERN, request.name)
        run = await self._runs.resume(
            _owner(), pipeline_id, run_id, request.request_id, use_latest_revision=request.use_latest_revision
        )
        return pb.ResumePipelineRunResponse(run=codec.run_to_proto(run))


__all__ = ["PipelineServiceServicer", "PipelineState"]

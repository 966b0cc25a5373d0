"""A scripted PipelineService (real gRPC, loopback) to test how the CLI renders answers, errors and runs."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import grpc
from contentpipe.api.generation.v1 import generation_service_pb2 as gen_pb
from contentpipe.api.oauth.v1 import posting_service_pb2 as post_pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

RUN_NAME = "pipelines/p1/runs/r1"


def abort(context: grpc.ServicerContext, code: int, message: str, *details: object) -> None:
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)  # type: ignore[arg-type]
        packed.append(item)
    context.abort_with_status(rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed)))


def run_at(state: int, steps: Sequence[pb.StepRun], error: pb.StepError | None = None) -> pb.PipelineRun:
    run = pb.PipelineRun(name=RUN_NAME, state=state, steps=steps)  # type: ignore[arg-type]
    run.create_time.FromSeconds(1_900_000_000)
    if error is not None:
        run.error.CopyFrom(error)
    return run


def succeeding_run_script() -> list[pb.PipelineRun]:
    pending = pb.STEP_RUN_STATE_PENDING
    video_done = pb.StepRun(
        step_id="video",
        state=pb.STEP_RUN_STATE_SUCCEEDED,
        attempts=1,
        outputs=pb.StepOutputs(
            generation="generations/g1",
            assets=[
                gen_pb.Asset(
                    uri="file:///data/generated-content/u/g1/0.mp4",
                    content_type="video/mp4",
                    width=320,
                    height=240,
                    duration_seconds=2,
                )
            ],
        ),
    )
    post_done = pb.StepRun(
        step_id="post",
        state=pb.STEP_RUN_STATE_SUCCEEDED,
        attempts=1,
        targets=[
            pb.TargetResult(
                connection="connections/c1",
                post="posts/x1",
                post_state=post_pb.POST_STATE_PUBLISHED,
                permalink="file:///data/outbox/x1/post.json",
            )
        ],
    )
    schedule_done = pb.StepRun(
        step_id="schedule", state=pb.STEP_RUN_STATE_SUCCEEDED, attempts=1, outputs=pb.StepOutputs(job="jobs/j1")
    )
    schedule_done.outputs.next_run_time.FromJsonString("2030-01-02T09:00:00Z")
    return [
        run_at(
            pb.PIPELINE_RUN_STATE_QUEUED, [pb.StepRun(step_id=s, state=pending) for s in ("video", "post", "schedule")]
        ),
        run_at(
            pb.PIPELINE_RUN_STATE_RUNNING,
            [pb.StepRun(step_id="video", state=pb.STEP_RUN_STATE_RUNNING, attempts=1)]
            + [pb.StepRun(step_id=s, state=pending) for s in ("post", "schedule")],
        ),
        run_at(pb.PIPELINE_RUN_STATE_RUNNING, [video_done, post_done, pb.StepRun(step_id="schedule", state=pending)]),
        run_at(pb.PIPELINE_RUN_STATE_SUCCEEDED, [video_done, post_done, schedule_done]),
    ]


def failing_run_script() -> list[pb.PipelineRun]:
    error = pb.StepError(
        error_class=pb.STEP_ERROR_CLASS_NEEDS_REAUTH,
        reason="CONNECTION_NEEDS_REAUTH",
        message="step post: connections/c1 must be connected again",
    )
    failed = pb.StepRun(step_id="post", state=pb.STEP_RUN_STATE_FAILED, attempts=1, error=error)
    return [
        run_at(
            pb.PIPELINE_RUN_STATE_RUNNING, [pb.StepRun(step_id="post", state=pb.STEP_RUN_STATE_RUNNING, attempts=1)]
        ),
        run_at(pb.PIPELINE_RUN_STATE_FAILED, [failed], error=error),
    ]


class FakePipelineService(pb_grpc.PipelineServiceServicer):
    """Stores created pipelines; GetPipelineRun replays `script` (one entry per call, then the last)."""

    def __init__(self, script: Sequence[pb.PipelineRun] = ()) -> None:
        self.pipelines: dict[str, pb.Pipeline] = {}
        self.script = list(script)
        self.authorizations: list[str] = []
        self.resumes: list[pb.ResumePipelineRunRequest] = []
        self._lock = threading.Lock()
        # Cleared: GetPipelineRun keeps answering the current entry (a run that stays where it is).
        self.advancing = threading.Event()
        self.advancing.set()

    def _auth(self, context: grpc.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata())
        self.authorizations.append(str(metadata.get("authorization", "")))

    def CreatePipeline(
        self, request: pb.CreatePipelineRequest, context: grpc.ServicerContext
    ) -> pb.CreatePipelineResponse:
        self._auth(context)
        for index, step in enumerate(request.pipeline.steps):
            if step.HasField("generate_content") and not step.generate_content.prompt:
                field = f"pipeline.steps[{index}].generate_content.prompt"
                abort(
                    context,
                    code_pb2.INVALID_ARGUMENT,
                    f"{field}: required",
                    error_details_pb2.ErrorInfo(reason="PIPELINE_INVALID", domain="pipelines.contentpipe"),
                    error_details_pb2.BadRequest(
                        field_violations=[
                            error_details_pb2.BadRequest.FieldViolation(field=field, description="required")
                        ]
                    ),
                )
        pipeline = pb.Pipeline()
        pipeline.CopyFrom(request.pipeline)
        pipeline.name = f"pipelines/p{len(self.pipelines) + 1}"
        pipeline.state = pb.PIPELINE_STATE_ACTIVE
        pipeline.revision = 1
        self.pipelines[pipeline.name] = pipeline
        return pb.CreatePipelineResponse(pipeline=pipeline)

    def GetPipeline(self, request: pb.GetPipelineRequest, context: grpc.ServicerContext) -> pb.GetPipelineResponse:
        self._auth(context)
        if request.name not in self.pipelines:
            abort(
                context,
                code_pb2.NOT_FOUND,
                f"{request.name} not found",
                error_details_pb2.ErrorInfo(reason="PIPELINE_NOT_FOUND"),
            )
        return pb.GetPipelineResponse(pipeline=self.pipelines[request.name])

    def ListPipelines(
        self, request: pb.ListPipelinesRequest, context: grpc.ServicerContext
    ) -> pb.ListPipelinesResponse:
        self._auth(context)
        return pb.ListPipelinesResponse(pipelines=list(self.pipelines.values()))

    def ListPipelineRuns(
        self, request: pb.ListPipelineRunsRequest, context: grpc.ServicerContext
    ) -> pb.ListPipelineRunsResponse:
        self._auth(context)
        runs = [run for run in self.script[:1] if request.parent in ("pipelines/-", run.name.split("/runs/")[0])]
        return pb.ListPipelineRunsResponse(runs=runs)

    def RunPipeline(self, request: pb.RunPipelineRequest, context: grpc.ServicerContext) -> pb.RunPipelineResponse:
        self._auth(context)
        if request.name not in self.pipelines:
            abort(context, code_pb2.NOT_FOUND, f"{request.name} not found")
        return pb.RunPipelineResponse(run=self.script[0])

    def GetPipelineRun(
        self, request: pb.GetPipelineRunRequest, context: grpc.ServicerContext
    ) -> pb.GetPipelineRunResponse:
        self._auth(context)
        with self._lock:
            advance = len(self.script) > 1 and self.advancing.is_set()
            run = self.script.pop(0) if advance else self.script[0]
        return pb.GetPipelineRunResponse(run=run)

    def ResumePipelineRun(
        self, request: pb.ResumePipelineRunRequest, context: grpc.ServicerContext
    ) -> pb.ResumePipelineRunResponse:
        self._auth(context)
        self.resumes.append(request)
        parent = request.name.split("/runs/", 1)[0]
        failed = self.script[0]
        revision = self.pipelines[parent].revision if request.use_latest_revision else failed.pipeline_revision
        resumed = pb.PipelineRun(name=f"{parent}/runs/r2", state=pb.PIPELINE_RUN_STATE_QUEUED)
        resumed.pipeline_revision = revision
        return pb.ResumePipelineRunResponse(run=resumed)

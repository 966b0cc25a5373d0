"""Helpers for the pipelines integration tests: a client for the real service and builders of pipelines."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from contentpipe.api.generation.v1 import generation_service_pb2 as gen_pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc
from google.protobuf.duration_pb2 import Duration

from tests.pipelines.fakes import FakePeers
from tests.support import ServiceProcess, bearer

FAST_ENGINE = {
    "PIPELINES_POLL_INITIAL_SECONDS": "0.05",
    "PIPELINES_POLL_MAX_SECONDS": "0.2",
    "PIPELINES_CLAIM_INTERVAL_SECONDS": "0.1",
    "PIPELINES_LEASE_SECONDS": "2",
}
TERMINAL = (pb.PIPELINE_RUN_STATE_SUCCEEDED, pb.PIPELINE_RUN_STATE_FAILED, pb.PIPELINE_RUN_STATE_CANCELED)


def start_pipelines(
    start_service: Callable[..., ServiceProcess], database_url: str, peers: FakePeers, **env: str
) -> ServiceProcess:
    return start_service("pipelines", database_url=database_url, env={**peers.env(), **FAST_ENGINE, **env})


class Client:
    def __init__(self, address: str, user: str, channel: grpc.Channel | None = None) -> None:
        self.channel = channel or grpc.insecure_channel(address)
        self.stub = pb_grpc.PipelineServiceStub(self.channel)
        self.user = user

    def __getattr__(self, rpc: str) -> Callable[..., Any]:
        method = getattr(self.stub, rpc)

        def call(request: Any, timeout: float = 15.0) -> Any:
            return method(request, metadata=bearer(self.user), timeout=timeout)

        return call

    def wait_run(self, name: str, timeout: float = 30.0) -> pb.PipelineRun:
        deadline = time.monotonic() + timeout
        while True:
            run = self.GetPipelineRun(pb.GetPipelineRunRequest(name=name)).run
            if run.state in TERMINAL:
                return run  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise AssertionError(f"run not terminal after {timeout}s: {run}")
            time.sleep(0.1)

    def close(self) -> None:
        self.channel.close()


def fast_retry(max_attempts: int = 3) -> pb.RetryPolicy:
    return pb.RetryPolicy(
        max_attempts=max_attempts,
        initial_backoff=Duration(nanos=50_000_000),
        backoff_multiplier=2.0,
        max_backoff=Duration(nanos=200_000_000),
    )


def generate_step(step_id: str = "video", kind: int = gen_pb.GENERATION_KIND_VIDEO, **kwargs: Any) -> pb.Step:
    return pb.Step(
        id=step_id,
        retry_policy=kwargs.pop("retry_policy", fast_retry()),
        generate_content=pb.GenerateContentStep(
            kind=kind,  # type: ignore[arg-type]
            prompt=kwargs.pop("prompt", "A sunrise over {{ run.trigger_date }}"),
            provider="local",
        ),
    )


def post_step(connections: list[str], step_id: str = "post", media: str = "video", **kwargs: Any) -> pb.Step:
    return pb.Step(
        id=step_id,
        retry_policy=kwargs.pop("retry_policy", fast_retry()),
        post_to_platform=pb.PostToPlatformStep(
            connections=connections,
            caption=kwargs.pop("caption", "{{ pipeline.display_name }}: {{ steps.video.assets[0].uri }}"),
            media_step_id=media,
        ),
    )


def schedule_step(step_id: str = "next", expression: str = "0 9 * * *", zone: str = "Europe/Berlin") -> pb.Step:
    return pb.Step(
        id=step_id,
        schedule_pipeline=pb.SchedulePipelineStep(cron=pb.CronSchedule(expression=expression, time_zone=zone)),
    )


def create(client: Client, *steps: pb.Step, name: str = "Daily video") -> pb.Pipeline:
    pipeline = pb.Pipeline(display_name=name, steps=list(steps))
    return client.CreatePipeline(pb.CreatePipelineRequest(pipeline=pipeline)).pipeline  # type: ignore[no-any-return]


def run(client: Client, pipeline: pb.Pipeline, request_id: str = "") -> pb.PipelineRun:
    return client.RunPipeline(pb.RunPipelineRequest(name=pipeline.name, request_id=request_id)).run  # type: ignore[no-any-return]

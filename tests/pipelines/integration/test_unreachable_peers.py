"""CreatePipeline with a peer down: UNAVAILABLE naming what could not be checked, never accepted unchecked."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc

from tests.pipelines.integration.support import generate_step, post_step
from tests.support import ServiceProcess, bearer, free_port

pytestmark = pytest.mark.integration


def test_a_peer_that_is_down_makes_create_unavailable_saying_what_was_not_checked(tmp_path: Path) -> None:
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens here: generation and oauth are down
    pipelines = ServiceProcess(
        "pipelines",
        tmp_path / "pipelines",
        env={
            "CONTENTPIPE_GENERATION_ADDR": nobody,
            "CONTENTPIPE_OAUTH_ADDR": nobody,
            "CONTENTPIPE_SCHEDULER_ADDR": nobody,
        },
    )
    pipelines.start(timeout=120)
    try:
        with grpc.insecure_channel(pipelines.address) as channel:
            stub = pb_grpc.PipelineServiceStub(channel)
            me = bearer(f"user-{uuid.uuid4().hex[:8]}")
            cases = [
                ([generate_step()], "pipeline.steps[0].generate_content could not be checked: the generation service"),
                (
                    [post_step(["connections/abc"], media="", caption="hello")],
                    "connections/abc could not be checked: the oauth (connections) service",
                ),
            ]
            for steps, expected in cases:
                for validate_only in (True, False):
                    request = pb.CreatePipelineRequest(
                        pipeline=pb.Pipeline(display_name="Down", steps=steps), validate_only=validate_only
                    )
                    with pytest.raises(grpc.RpcError) as caught:
                        stub.CreatePipeline(request, metadata=me, timeout=30)
                    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
                    details = caught.value.details() or ""
                    assert expected in details and "nothing was created or changed, try again" in details, details
            assert not stub.ListPipelines(pb.ListPipelinesRequest(), metadata=me).pipelines
    finally:
        pipelines.terminate()

"""WaitPipelineRun: a long poll that answers when the run's state changes, with GetPipelineRun's access rules."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from google.protobuf.duration_pb2 import Duration

from tests.pipelines.fakes import FakePeers
from tests.pipelines.integration.support import FAST_ENGINE, Client, create, generate_step, post_step, run
from tests.support import ServiceProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def peers() -> Iterator[FakePeers]:
    with FakePeers() as fakes:
        yield fakes


def _pipeline(client: Client, peers: FakePeers) -> pb.Pipeline:
    connection = peers.add_connection(client.user)
    return create(client, generate_step(), post_step([connection]))


def test_wait_answers_when_the_run_finishes_in_this_process(
    start_service: Callable[..., ServiceProcess], database_url: str, peers: FakePeers
) -> None:
    service = start_service("pipelines", database_url=database_url, env={**peers.env(), **FAST_ENGINE})
    client = Client(service.address, f"user-{uuid.uuid4().hex[:8]}")
    queued = run(client, _pipeline(client, peers))

    done = client.WaitPipelineRun(pb.WaitPipelineRunRequest(name=queued.name, timeout=Duration(seconds=30)), 40).run

    assert done.name == queued.name
    assert done.state == pb.PIPELINE_RUN_STATE_SUCCEEDED
    assert [step.state for step in done.steps] == [pb.STEP_RUN_STATE_SUCCEEDED] * 2
    # A state other than the one seen answers at once (terminal: nothing more will change).
    again = client.WaitPipelineRun(
        pb.WaitPipelineRunRequest(name=queued.name, state=pb.PIPELINE_RUN_STATE_SUCCEEDED), 5
    ).run
    assert again.state == pb.PIPELINE_RUN_STATE_SUCCEEDED


def test_wait_returns_at_its_bound_and_sees_another_replicas_work(
    start_service: Callable[..., ServiceProcess], database_url: str, peers: FakePeers, tmp_path: Path
) -> None:
    # An API-only replica (no engine): its runs stay QUEUED until an engine replica on the same database runs them.
    api = start_service(
        "pipelines", database_url=database_url, env={**peers.env(), **FAST_ENGINE, "PIPELINES_WORKER_ENABLED": "0"}
    )
    client = Client(api.address, f"user-{uuid.uuid4().hex[:8]}")
    queued = run(client, _pipeline(client, peers))

    started = time.monotonic()
    still = client.WaitPipelineRun(
        pb.WaitPipelineRunRequest(
            name=queued.name, state=pb.PIPELINE_RUN_STATE_QUEUED, timeout=Duration(nanos=300_000_000)
        ),
        10,
    ).run
    assert still.state == pb.PIPELINE_RUN_STATE_QUEUED
    assert time.monotonic() - started >= 0.3

    engine = ServiceProcess(
        "pipelines", tmp_path / "engine-replica", database_url=database_url, env={**peers.env(), **FAST_ENGINE}
    ).start()
    try:
        done = client.WaitPipelineRun(pb.WaitPipelineRunRequest(name=queued.name, timeout=Duration(seconds=30)), 40).run
    finally:
        engine.terminate()
    assert done.state == pb.PIPELINE_RUN_STATE_SUCCEEDED


def test_wait_answers_at_once_when_another_replica_runs_the_run(
    start_service: Callable[..., ServiceProcess], postgres_url: str, peers: FakePeers
) -> None:
    # Both replicas re-read every 10 s: an answer within 3 s on the API-only replica can only come from the engine
    # replica's notification (PostgreSQL LISTEN/NOTIFY).
    env = {**peers.env(), **FAST_ENGINE, "CONTENTPIPE_LONG_POLL_RECHECK": "10s"}
    api = start_service("pipelines", database_url=postgres_url, env={**env, "PIPELINES_WORKER_ENABLED": "0"})
    start_service("pipelines", database_url=postgres_url, env=env)  # runs the engine
    client = Client(api.address, f"user-{uuid.uuid4().hex[:8]}")
    pipeline = _pipeline(client, peers)

    started = time.monotonic()
    queued = run(client, pipeline)
    done = client.WaitPipelineRun(pb.WaitPipelineRunRequest(name=queued.name, timeout=Duration(seconds=30)), 40).run
    answered = time.monotonic() - started

    assert done.state == pb.PIPELINE_RUN_STATE_SUCCEEDED
    assert answered < 3, f"WaitPipelineRun answered after {answered:.2f} s"


def test_wait_refuses_like_get(
    start_service: Callable[..., ServiceProcess], database_url: str, peers: FakePeers
) -> None:
    service = start_service(
        "pipelines", database_url=database_url, env={**peers.env(), **FAST_ENGINE, "PIPELINES_WORKER_ENABLED": "0"}
    )
    owner = Client(service.address, f"user-{uuid.uuid4().hex[:8]}")
    stranger = Client(service.address, f"user-{uuid.uuid4().hex[:8]}")
    queued = run(owner, _pipeline(owner, peers))

    def code(client: Client, request: pb.WaitPipelineRunRequest) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as caught:
            client.WaitPipelineRun(request, 10)
        return caught.value.code()

    assert code(stranger, pb.WaitPipelineRunRequest(name=queued.name)) == grpc.StatusCode.NOT_FOUND
    assert code(owner, pb.WaitPipelineRunRequest(name="pipelines/x")) == grpc.StatusCode.INVALID_ARGUMENT
    negative = pb.WaitPipelineRunRequest(name=queued.name, timeout=Duration(seconds=-1))
    assert code(owner, negative) == grpc.StatusCode.INVALID_ARGUMENT
    unknown_state = pb.WaitPipelineRunRequest(name=queued.name, state=99)  # type: ignore[arg-type]
    assert code(owner, unknown_state) == grpc.StatusCode.INVALID_ARGUMENT
    with grpc.insecure_channel(service.address) as channel:
        anonymous = channel.unary_unary(
            "/contentpipe.api.pipelines.v1.PipelineService/WaitPipelineRun",
            request_serializer=pb.WaitPipelineRunRequest.SerializeToString,
            response_deserializer=pb.WaitPipelineRunResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as caught:
            anonymous(pb.WaitPipelineRunRequest(name=queued.name), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

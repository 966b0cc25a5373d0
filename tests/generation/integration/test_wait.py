"""WaitGeneration through a real generation process: answers with the finished generation, at its bound with the
generation as it is, and refuses like GetGeneration; on PostgreSQL, at once when another replica finished it."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest
from contentpipe.api.generation.v1 import generation_service_pb2 as pb
from google.protobuf.duration_pb2 import Duration

from tests.generation.support import GenerationClient
from tests.support import ServiceProcess, bearer

pytestmark = pytest.mark.integration


def test_wait_generation(database_url: str, start_service: Callable[..., ServiceProcess]) -> None:
    service = start_service("generation", database_url=database_url)
    with GenerationClient(service.address) as client:
        created = client.create(kind=pb.GENERATION_KIND_TEXT, prompt="a haiku about tides", provider="local")
        request = pb.WaitGenerationRequest(name=created.name, timeout=Duration(seconds=30))
        done = client.stub.WaitGeneration(request, metadata=bearer("user-1"), timeout=40).generation
        assert done.state == pb.GENERATION_STATE_SUCCEEDED, done
        assert done.text

        # Waiting for a change from a terminal state ends at the bound, with the generation unchanged.
        request = pb.WaitGenerationRequest(
            name=created.name, state=pb.GENERATION_STATE_SUCCEEDED, timeout=Duration(nanos=200_000_000)
        )
        assert client.stub.WaitGeneration(request, metadata=bearer("user-1"), timeout=10).generation == done

        with pytest.raises(grpc.RpcError) as info:
            client.stub.WaitGeneration(
                pb.WaitGenerationRequest(name=created.name), metadata=bearer("user-2"), timeout=10
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            client.stub.WaitGeneration(
                pb.WaitGenerationRequest(name=created.name, timeout=Duration(seconds=-5)),
                metadata=bearer("user-1"),
                timeout=10,
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "timeout" in (info.value.details() or "")


def test_wait_generation_answers_at_once_when_another_replica_finishes_it(
    postgres_url: str, start_service: Callable[..., ServiceProcess]
) -> None:
    # Re-reads every 10 s: an answer within 3 s can only come from the worker replica's notification.
    slow_recheck = {"CONTENTPIPE_LONG_POLL_RECHECK": "10s"}
    api_only = start_service(
        "generation", database_url=postgres_url, env={**slow_recheck, "GENERATION_WORKER_ENABLED": "0"}
    )
    start_service("generation", database_url=postgres_url, env=slow_recheck)  # runs the worker
    with GenerationClient(api_only.address) as client:
        started = time.monotonic()
        created = client.create(kind=pb.GENERATION_KIND_TEXT, prompt="a haiku about tides", provider="local")
        request = pb.WaitGenerationRequest(name=created.name, timeout=Duration(seconds=30))
        done = client.stub.WaitGeneration(request, metadata=bearer("user-1"), timeout=40).generation
        answered = time.monotonic()
    assert done.state == pb.GENERATION_STATE_SUCCEEDED, done
    assert answered - started < 3, f"WaitGeneration answered after {answered - started:.2f} s"

"""Helpers for generation tests: a blocking client of a running service and polling to a terminal state."""

from __future__ import annotations

import time
from typing import Any

import grpc
from contentpipe.api.generation.v1 import generation_service_pb2 as pb
from contentpipe.api.generation.v1 import generation_service_pb2_grpc as pb_grpc
from contentpipe.common.grpc_errors import error_from_rpc

from tests.support import bearer

TERMINAL = {pb.GENERATION_STATE_SUCCEEDED, pb.GENERATION_STATE_FAILED, pb.GENERATION_STATE_CANCELED}


class GenerationClient:
    def __init__(self, address: str, user: str = "user-1") -> None:
        self._channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.GenerationServiceStub(self._channel)
        self.user = user

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GenerationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(
        self, request_id: str = "", validate_only: bool = False, generation_id: str = "", **fields: Any
    ) -> pb.Generation:
        options = fields.pop("options", {})
        generation = pb.Generation(options=pb.GenerationOptions(**options), **fields)
        request = pb.CreateGenerationRequest(
            generation=generation, request_id=request_id, validate_only=validate_only, generation_id=generation_id
        )
        return self.stub.CreateGeneration(request, metadata=bearer(self.user), timeout=10).generation

    def get(self, name: str) -> pb.Generation:
        return self.stub.GetGeneration(
            pb.GetGenerationRequest(name=name), metadata=bearer(self.user), timeout=10
        ).generation

    def cancel(self, name: str) -> pb.Generation:
        request = pb.CancelGenerationRequest(name=name)
        return self.stub.CancelGeneration(request, metadata=bearer(self.user), timeout=15).generation

    def list(self, **fields: Any) -> pb.ListGenerationsResponse:
        request = pb.ListGenerationsRequest(**fields)
        return self.stub.ListGenerations(request, metadata=bearer(self.user), timeout=10)

    def wait(self, name: str, timeout: float = 60.0) -> pb.Generation:
        deadline = time.monotonic() + timeout
        while True:
            generation = self.get(name)
            if generation.state in TERMINAL:
                return generation
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} still {pb.GenerationState.Name(generation.state)}: {generation}")
            time.sleep(0.1)


def rpc_error(exc: grpc.RpcError) -> Any:
    """The application error behind a failed call (code, reason and field violations)."""
    return error_from_rpc(exc)  # type: ignore[arg-type]

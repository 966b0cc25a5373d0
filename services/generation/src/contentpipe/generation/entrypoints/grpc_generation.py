"""gRPC servicer for GenerationService; every RPC answers UNIMPLEMENTED until its issue lands."""

from __future__ import annotations

from contentpipe.api.generation.v1 import generation_service_pb2_grpc


class GenerationServiceServicer(generation_service_pb2_grpc.GenerationServiceServicer):
    """Thin: translate requests, call the service layer, translate results; raise ContentpipeError."""

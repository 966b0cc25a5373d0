"""gRPC servicer for PipelineService; every RPC answers UNIMPLEMENTED until its issue lands."""

from __future__ import annotations

from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc


class PipelineServiceServicer(pipeline_service_pb2_grpc.PipelineServiceServicer):
    """Thin: translate requests, call the service layer, translate results; raise ContentpipeError."""

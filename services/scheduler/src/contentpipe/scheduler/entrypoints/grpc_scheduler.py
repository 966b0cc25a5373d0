"""gRPC servicer for SchedulerService; every RPC answers UNIMPLEMENTED until its issue lands."""

from __future__ import annotations

from contentpipe.api.scheduler.v1 import scheduler_service_pb2_grpc


class SchedulerServiceServicer(scheduler_service_pb2_grpc.SchedulerServiceServicer):
    """Thin: translate requests, call the service layer, translate results; raise ContentpipeError."""

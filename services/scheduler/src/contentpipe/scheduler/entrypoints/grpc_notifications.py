"""gRPC servicer for NotificationService; every RPC answers UNIMPLEMENTED until its issue lands."""

from __future__ import annotations

from contentpipe.api.scheduler.v1 import notification_service_pb2_grpc


class NotificationServiceServicer(notification_service_pb2_grpc.NotificationServiceServicer):
    """Thin: translate requests, call the service layer, translate results; raise ContentpipeError."""

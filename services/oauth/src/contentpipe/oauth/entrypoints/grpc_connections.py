"""gRPC servicer for ConnectionService; every RPC answers UNIMPLEMENTED until its issue lands."""

from __future__ import annotations

from contentpipe.api.oauth.v1 import connection_service_pb2_grpc


class ConnectionServiceServicer(connection_service_pb2_grpc.ConnectionServiceServicer):
    """Thin: translate requests, call the service layer, translate results; raise ContentpipeError."""

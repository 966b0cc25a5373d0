"""gRPC servicer for PostingService; every RPC answers UNIMPLEMENTED until its issue lands."""

from __future__ import annotations

from contentpipe.api.oauth.v1 import posting_service_pb2_grpc


class PostingServiceServicer(posting_service_pb2_grpc.PostingServiceServicer):
    """Thin: translate requests, call the service layer, translate results; raise ContentpipeError."""

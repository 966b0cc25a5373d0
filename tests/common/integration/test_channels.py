"""Peer calls through create_channel carry the caller's token, request id and a shrinking deadline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from contentpipe.common import telemetry
from contentpipe.common.channels import ServiceToken, create_channel
from contentpipe.common.server import ServiceRegistration, run_server
from contentpipe.common.settings import load_common_settings
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from tests.support import TEST_JWT_SECRET, bearer, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(params=[False, True], ids=["untraced", "traced"])
def tracing(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Peer calls behave the same whether or not client spans are made (only exported traces need them)."""
    telemetry.enable_tracing(request.param)
    yield request.param
    telemetry.enable_tracing(False)


async def test_relay_propagates_identity_request_id_and_deadline(tracing: bool) -> None:
    # Services install a TracerProvider in setup_telemetry; without one there is no span to propagate.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    port = free_port()
    settings = load_common_settings(
        "pipelines",
        {
            "CONTENTPIPE_JWT_SECRET": TEST_JWT_SECRET,
            "PIPELINES_GRPC_PORT": str(port),
            "CONTENTPIPE_GRPC_REFLECTION": "0",
        },
    )
    peer = create_channel(f"127.0.0.1:{port}")
    service_token = ServiceToken(TEST_JWT_SECRET, "pipelines")

    async def echo(request: bytes, context: Any) -> bytes:
        seen = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        return json.dumps(
            {
                "authorization": seen.get("authorization"),
                "request_id": seen.get("x-request-id"),
                "acting_for": seen.get("x-contentpipe-user"),
                "traceparent": seen.get("traceparent", ""),
                "remaining": context.time_remaining(),
            }
        ).encode()

    async def relay(request: bytes, context: Any) -> bytes:
        stub = peer.unary_unary("/test.Relay/Echo", None, None)
        if request == b"as-service":
            # A worker with no incoming identity acting for a user.
            result: bytes = await stub(b"", metadata=service_token.peer_call_metadata("user-42"))
        else:
            result = await stub(b"")
        return result

    def add(servicer: object, server: grpc.aio.Server) -> None:
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Relay": grpc.unary_unary_rpc_method_handler(relay),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Relay", handlers),))

    stop = asyncio.Event()
    server_task = asyncio.create_task(
        run_server(settings, [ServiceRegistration("test.Relay", add, object())], stop_event=stop)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await channel.channel_ready()
            caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
            metadata = (
                *bearer("user-7"),
                ("x-request-id", "req-123"),
                ("traceparent", f"00-{caller_trace}-00f067aa0ba902b7-01"),
            )
            call = channel.unary_unary("/test.Relay/Relay", None, None)
            seen = json.loads(await call(b"", metadata=metadata, timeout=3))
            assert seen["authorization"] == dict(metadata)["authorization"]
            assert seen["request_id"] == "req-123"
            # The relay joined the caller's trace (with or without spans of its own) and passed it on.
            assert seen["traceparent"].split("-")[1] == caller_trace
            untraced_caller = json.loads(await call(b"", metadata=bearer("user-7"), timeout=3))
            assert len(untraced_caller["traceparent"].split("-")[1]) == 32  # a trace started by the relay
            assert 0 < seen["remaining"] < 3
            worker = json.loads(await call(b"as-service", metadata=bearer("user-7"), timeout=3))
            assert worker["acting_for"] == "user-42"
            assert worker["authorization"] != dict(metadata)["authorization"]
    finally:
        stop.set()
        assert await server_task == 0
        await peer.close(None)


async def test_absent_peer_fails_unavailable_after_bounded_retries() -> None:
    channel = create_channel(f"127.0.0.1:{free_port()}", default_timeout=5)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary("/test.Nobody/Call", None, None)(b"")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close(None)

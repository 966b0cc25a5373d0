"""A real server refuses undecodable bytes and NUL text as INVALID_ARGUMENT, after authentication, never UNKNOWN."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest
from contentpipe.api.generation.v1 import generation_service_pb2 as gen
from contentpipe.common.grpc_errors import error_from_rpc
from contentpipe.common.server import ServiceRegistration, run_server
from contentpipe.common.settings import load_common_settings

from tests.support import TEST_JWT_SECRET, bearer, free_port

pytestmark = pytest.mark.integration

METHOD = "/test.Generations/Get"


async def test_malformed_bytes_and_nul_text_are_invalid_argument_and_never_reach_the_servicer() -> None:
    port = free_port()
    settings = load_common_settings(
        "generation",
        {
            "CONTENTPIPE_JWT_SECRET": TEST_JWT_SECRET,
            "GENERATION_GRPC_PORT": str(port),
            "CONTENTPIPE_GRPC_REFLECTION": "0",
        },
    )
    reached: list[str] = []

    async def get(request: gen.GetGenerationRequest, context: Any) -> gen.Generation:
        reached.append(request.name)
        return gen.Generation(name=request.name)

    def add(servicer: object, server: grpc.aio.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            get,
            request_deserializer=gen.GetGenerationRequest.FromString,
            response_serializer=gen.Generation.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Generations", {"Get": handler}),))

    stop = asyncio.Event()
    server_task = asyncio.create_task(
        run_server(settings, [ServiceRegistration("test.Generations", add, object())], stop_event=stop)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await channel.channel_ready()
            raw = channel.unary_unary(METHOD, None, gen.Generation.FromString)

            async def failure(payload: bytes, metadata: tuple[tuple[str, str], ...]) -> grpc.aio.AioRpcError:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await raw(payload, metadata=metadata, timeout=5)
                return raised.value

            # Authentication still comes first: an anonymous caller learns nothing about the body.
            assert (await failure(b"\x08", ())).code() == grpc.StatusCode.UNAUTHENTICATED
            for payload in (b"\x08", b"\xff\xff\xff\xff", b"\x0a\x02\xc3\x28", b"\x0a\x64abc"):
                err = await failure(payload, bearer("user-1"))
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (payload, err.details())
                assert error_from_rpc(err).reason == "MALFORMED_REQUEST"
                assert "GetGenerationRequest" in (err.details() or "")

            nul = gen.GetGenerationRequest(name="generations/a\x00b").SerializeToString()
            err = await failure(nul, bearer("user-1"))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            refused = error_from_rpc(err)
            assert refused.reason == "NUL_IN_TEXT"
            assert [v.field for v in refused.violations] == ["name"]  # type: ignore[attr-defined]

            assert reached == []
            ok = gen.GetGenerationRequest(name="generations/1").SerializeToString()
            assert (await raw(ok, metadata=bearer("user-1"), timeout=5)).name == "generations/1"
            assert reached == ["generations/1"]
    finally:
        stop.set()
        await server_task

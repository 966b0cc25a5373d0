"""Wrap the behaviour of a grpc.aio method handler (unary request methods) for server interceptors."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

UnaryBehavior = Callable[[Any, Any], Awaitable[Any]]
# A wrapper receives the request, the context and a zero-argument coroutine function running the call.
UnaryWrapper = Callable[[Any, Any, Callable[[], Awaitable[Any]]], Awaitable[Any]]


async def _call(behavior: Callable[[Any, Any], Any], request: Any, context: Any) -> Any:
    # Generated *Servicer bases are sync (they set UNIMPLEMENTED and raise); real handlers are async.
    result = behavior(request, context)
    if inspect.isawaitable(result):
        return await result
    return result


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any] | None, wrapper: UnaryWrapper
) -> grpc.RpcMethodHandler[Any, Any] | None:
    """Return `handler` with `wrapper` around its unary_unary or unary_stream behaviour.

    Streaming-request methods (only reflection here) are passed through untouched.
    """
    if handler is None:
        return None
    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            return await wrapper(request, context, lambda: _call(inner, request, context))

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        inner_stream = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            items: list[Any] = []

            async def collect() -> None:
                # Streams are only used by health Watch; buffering keeps the wrapper logic unary-shaped.
                result = inner_stream(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        items.append(item)
                elif inspect.isawaitable(result):
                    await result

            await wrapper(request, context, collect)
            for item in items:
                yield item

        return grpc.unary_stream_rpc_method_handler(
            unary_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler

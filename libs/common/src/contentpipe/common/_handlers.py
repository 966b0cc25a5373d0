"""Wrap the behaviour of a grpc.aio method handler (unary request methods) for server interceptors."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from contentpipe.common.request_checks import check_request, tolerant_deserializer

UnaryBehavior = Callable[[Any, Any], Awaitable[Any]]
# A wrapper receives the request, the context and a zero-argument coroutine function running the call.
UnaryWrapper = Callable[[Any, Any, Callable[[], Awaitable[Any]]], Awaitable[Any]]
# Marks the behaviours wrap_handler builds, so the request is checked once, right before the servicer.
_WRAPPED = "_contentpipe_wrapped"


def _is_servicer(behavior: object) -> bool:
    return not getattr(behavior, _WRAPPED, False)


async def _call(behavior: Callable[[Any, Any], Any], request: Any, context: Any) -> Any:
    if _is_servicer(behavior):
        # Innermost layer: interceptors (authentication) have run; malformed requests stop here.
        check_request(request)
    # Generated *Servicer bases are sync (they set UNIMPLEMENTED and raise); real handlers are async.
    result = behavior(request, context)
    if inspect.isawaitable(result):
        return await result
    return result


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any] | None, wrapper: UnaryWrapper
) -> grpc.RpcMethodHandler[Any, Any] | None:
    """Return `handler` with `wrapper` around its unary_unary or unary_stream behaviour.

    The request deserializer is made tolerant (bytes that do not parse become an `UndecodableRequest`,
    refused as INVALID_ARGUMENT before the servicer runs, instead of grpc's UNKNOWN). Streaming-request
    methods (only reflection here) are passed through untouched.
    """
    if handler is None:
        return None
    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            return await wrapper(request, context, lambda: _call(inner, request, context))

        setattr(unary_unary, _WRAPPED, True)
        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=tolerant_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        inner_stream = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            items: list[Any] = []

            async def collect() -> None:
                # Streams are only used by health Watch; buffering keeps the wrapper logic unary-shaped.
                if _is_servicer(inner_stream):
                    check_request(request)
                result = inner_stream(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        items.append(item)
                elif inspect.isawaitable(result):
                    await result

            await wrapper(request, context, collect)
            for item in items:
                yield item

        setattr(unary_stream, _WRAPPED, True)
        return grpc.unary_stream_rpc_method_handler(
            unary_stream,
            request_deserializer=tolerant_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    return handler

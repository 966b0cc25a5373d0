"""Channels to peer services: retries for UNAVAILABLE, deadlines, identity/request-id/trace propagation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import grpc
import grpc.aio
from contentpipe.common import telemetry
from contentpipe.common.auth import ACT_AS_USER_HEADER, SERVICE_ROLE, mint_token
from contentpipe.common.context import REQUEST_ID_HEADER, authorization_var, remaining_budget, request_id_var
from contentpipe.common.ids import new_id
from contentpipe.common.settings import TlsSettings
from contentpipe.common.tls import channel_credentials, channel_options
from opentelemetry import trace

_tracer = telemetry.get_tracer(__name__)
DEFAULT_CALL_TIMEOUT_SECONDS = 10.0
# Leave the caller enough time to turn a peer failure into its own answer.
DEADLINE_MARGIN_SECONDS = 0.05

_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{}],  # every method; only UNAVAILABLE is retried (the request never reached a handler)
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}
CHANNEL_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)


class ServiceToken:
    """Mints short-lived `role=service` tokens so workers without an incoming call can act for a user."""

    def __init__(self, secret: str, service: str, *, ttl_seconds: float = 300) -> None:
        self._secret = secret
        self._subject = f"service:{service}"
        self._ttl = ttl_seconds
        self._token: str | None = None
        self._expires_at = 0.0

    def token(self) -> str:
        # Re-mint a minute before expiry so a token never dies mid-call.
        if self._token is None or time.time() > self._expires_at - 60:
            self._token = mint_token(self._secret, self._subject, role=SERVICE_ROLE, ttl_seconds=self._ttl)
            self._expires_at = time.time() + self._ttl
        return self._token

    def peer_call_metadata(self, user_id: str) -> tuple[tuple[str, str], ...]:
        """Metadata for a call made on behalf of `user_id` (pass as `metadata=` to a stub call)."""
        return (("authorization", f"Bearer {self.token()}"), (ACT_AS_USER_HEADER, user_id))


def _merge_metadata(existing: Any) -> list[tuple[str, str | bytes]]:
    metadata: list[tuple[str, str | bytes]] = list(existing or ())
    keys = {key.lower() for key, _ in metadata}
    if "authorization" not in keys:
        authorization = authorization_var.get()
        if authorization:
            metadata.append(("authorization", authorization))
    if REQUEST_ID_HEADER not in keys:
        metadata.append((REQUEST_ID_HEADER, request_id_var.get() or new_id()))
    carrier = telemetry.inject_context() if trace.get_current_span().get_span_context().is_valid else {}
    for key, value in carrier.items():
        if key not in keys:
            metadata.append((key, value))
    return metadata


def _timeout(requested: float | None, default: float) -> float:
    timeout = requested if requested is not None else default
    budget = remaining_budget()
    if budget is not None:
        timeout = min(timeout, max(budget - DEADLINE_MARGIN_SECONDS, 0.001))
    return timeout


class _PeerUnaryUnary(grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    """One outgoing unary method: deadline, authorization, request id and trace context added in one step.

    This replaces a chain of grpc.aio client interceptors (each of which wraps every call in an intercepted call
    object and an extra task): the call goes straight to the channel's own multicallable. A client span is only
    started when tracing exports somewhere (`telemetry.tracing_enabled()`); the trace context of the current span
    is propagated either way.
    """

    def __init__(self, inner: grpc.aio.UnaryUnaryMultiCallable, method: str, default_timeout: float) -> None:  # type: ignore[type-arg]
        self._inner = inner
        self._method = method
        self._default_timeout = default_timeout

    def __call__(  # noqa: PLR0917 - the signature of grpc.aio.UnaryUnaryMultiCallable
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        options: dict[str, Any] = {
            "timeout": _timeout(timeout, self._default_timeout),
            "metadata": _merge_metadata(metadata),
            "credentials": credentials,
            "wait_for_ready": wait_for_ready,
            "compression": compression,
        }
        if telemetry.tracing_enabled():
            return self._traced(request, options)
        return self._inner(request, **options)

    async def _traced(self, request: Any, options: dict[str, Any]) -> Any:
        name = self._method.lstrip("/")
        service, _, method = name.rpartition("/")
        with _tracer.start_as_current_span(
            name,
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
        ) as span:
            # The metadata was built before the span existed: propagate the client span instead.
            options["metadata"] = _merge_metadata(
                [(k, v) for k, v in options["metadata"] if k not in {"traceparent", "tracestate"}]
            )
            try:
                return await self._inner(request, **options)
            except grpc.aio.AioRpcError as exc:
                span.set_attribute("rpc.grpc.status_code", exc.code().value[0])
                span.set_status(trace.Status(trace.StatusCode.ERROR, exc.code().name))
                raise


class PeerChannel(grpc.aio.Channel):
    """A grpc.aio channel to a peer whose unary calls carry the caller's deadline, identity, request id and
    trace context (see `_PeerUnaryUnary`); everything else is the plain channel's."""

    def __init__(self, inner: grpc.aio.Channel, default_timeout: float) -> None:
        self._inner = inner
        self._default_timeout = default_timeout

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.UnaryUnaryMultiCallable:  # type: ignore[type-arg]
        inner = cast(Any, self._inner).unary_unary(
            method, request_serializer, response_deserializer, _registered_method
        )
        return _PeerUnaryUnary(inner, method, self._default_timeout)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.unary_stream(*args, **kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.stream_unary(*args, **kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.stream_stream(*args, **kwargs)

    async def __aenter__(self) -> PeerChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.close(None)

    async def close(self, grace: float | None = None) -> None:
        await self._inner.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._inner.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._inner.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._inner.channel_ready()


def create_channel(
    target: str,
    *,
    default_timeout: float = DEFAULT_CALL_TIMEOUT_SECONDS,
    tls: TlsSettings | None = None,
) -> grpc.aio.Channel:
    """A channel to a peer (`host:port`); create once in bootstrap, close on shutdown.

    Plaintext unless `tls` names a CA bundle (`CONTENTPIPE_TLS_CA_FILE`): then TLS, presenting the client
    certificate for mutual TLS when the settings have one. UNAVAILABLE is retried by gRPC itself (the service
    config above: 4 attempts, jittered exponential backoff); every mutating RPC between the services carries a
    request id, so a retried call never acts twice.
    """
    if tls is not None and tls.peers_use_tls:
        inner = grpc.aio.secure_channel(
            target, channel_credentials(tls), options=[*CHANNEL_OPTIONS, *channel_options(tls)]
        )
    else:
        inner = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    return PeerChannel(inner, default_timeout)

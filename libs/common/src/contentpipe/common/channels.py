"""Channels to peer services: retries for UNAVAILABLE, deadlines, identity/request-id/trace propagation."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio
from contentpipe.common import telemetry
from contentpipe.common.auth import ACT_AS_USER_HEADER, SERVICE_ROLE, mint_token
from contentpipe.common.context import authorization_var, remaining_budget, request_id_var
from contentpipe.common.ids import new_id
from contentpipe.common.settings import TlsSettings
from contentpipe.common.tls import channel_credentials, channel_options

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
    if "x-request-id" not in keys:
        metadata.append(("x-request-id", request_id_var.get() or new_id()))
    carrier = telemetry.inject_context()
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


class PropagatingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg,misc]
    """Adds deadline, authorization, request id and trace context to every outgoing unary call."""

    def __init__(self, default_timeout: float = DEFAULT_CALL_TIMEOUT_SECONDS) -> None:
        self._default_timeout = default_timeout

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=_timeout(client_call_details.timeout, self._default_timeout),
            metadata=grpc.aio.Metadata(*_merge_metadata(client_call_details.metadata)),
            credentials=client_call_details.credentials,
            wait_for_ready=client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


def create_channel(
    target: str,
    *,
    default_timeout: float = DEFAULT_CALL_TIMEOUT_SECONDS,
    extra_interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    tls: TlsSettings | None = None,
) -> grpc.aio.Channel:
    """A grpc.aio channel to a peer (`host:port`); create once in bootstrap, close on shutdown.

    Plaintext unless `tls` names a CA bundle (`CONTENTPIPE_TLS_CA_FILE`): then TLS, presenting the client
    certificate for mutual TLS when the settings have one.
    """
    # OTel first (outermost): its span is current when ours injects, and it sets traceparent itself.
    interceptors: list[Any] = [*telemetry.client_interceptors(), PropagatingInterceptor(default_timeout)]
    interceptors.extend(extra_interceptors)
    if tls is not None and tls.peers_use_tls:
        return grpc.aio.secure_channel(
            target,
            channel_credentials(tls),
            options=[*CHANNEL_OPTIONS, *channel_options(tls)],
            interceptors=interceptors,
        )
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)

"""One invocation's connections: a channel per service, the bearer token, and error translation for every call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc.aio
from contentpipe.api.generation.v1 import generation_service_pb2_grpc
from contentpipe.api.oauth.v1 import connection_service_pb2_grpc, posting_service_pb2_grpc
from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc
from contentpipe.api.scheduler.v1 import notification_service_pb2_grpc, scheduler_service_pb2_grpc
from contentpipe.cli import stack
from contentpipe.cli.config import CliConfig
from contentpipe.cli.errors import EXIT_UNAVAILABLE, EXIT_USAGE, CliError, cli_error_from_rpc, not_running_hint
from contentpipe.common.auth import mint_token
from contentpipe.common.channels import create_channel
from contentpipe.common.ids import new_id

ResponseT = TypeVar("ResponseT")

LOCAL_TOKEN_TTL_SECONDS = 3600
PROBE_SECONDS = 1.0  # how long a missing token waits to learn whether anything listens at all


def read_secret(config: CliConfig) -> str | None:
    try:
        return config.secret_path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


class Session:
    """Channels are opened lazily (a command touching one service opens one) and closed by `close()`."""

    def __init__(self, config: CliConfig) -> None:
        self.config = config
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._token: str | None = None

    def channel(self, service: str) -> grpc.aio.Channel:
        if service not in self._channels:
            self._channels[service] = create_channel(
                self.config.addresses[service], default_timeout=self.config.timeout, tls=self.config.tls
            )
        return self._channels[service]

    @property
    def generations(self) -> generation_service_pb2_grpc.GenerationServiceStub:
        return generation_service_pb2_grpc.GenerationServiceStub(self.channel("generation"))

    @property
    def connections(self) -> connection_service_pb2_grpc.ConnectionServiceStub:
        return connection_service_pb2_grpc.ConnectionServiceStub(self.channel("oauth"))

    @property
    def posts(self) -> posting_service_pb2_grpc.PostingServiceStub:
        return posting_service_pb2_grpc.PostingServiceStub(self.channel("oauth"))

    @property
    def pipelines(self) -> pipeline_service_pb2_grpc.PipelineServiceStub:
        return pipeline_service_pb2_grpc.PipelineServiceStub(self.channel("pipelines"))

    @property
    def scheduler(self) -> scheduler_service_pb2_grpc.SchedulerServiceStub:
        return scheduler_service_pb2_grpc.SchedulerServiceStub(self.channel("scheduler"))

    @property
    def notifications(self) -> notification_service_pb2_grpc.NotificationServiceStub:
        return notification_service_pb2_grpc.NotificationServiceStub(self.channel("scheduler"))

    async def token_for(self, service: str) -> str:
        """--token / CONTENTPIPE_TOKEN, else a local-user token when the address is a `contentpipe up` service."""
        if self.config.token:
            return self.config.token
        if self._token is None:
            address = self.config.addresses[service]
            secret = read_secret(self.config)
            if secret is None or address not in self.config.local_addresses.values():
                # With nothing listening, "no token" sends people after the wrong problem: say what is wrong.
                if not await stack.answers(self.channel(service), PROBE_SECONDS):  # TLS as configured
                    raise CliError(
                        f"the services are not running: nothing answers for {service} at {address}",
                        EXIT_UNAVAILABLE,
                        hint=not_running_hint(self.config.address_sources.get(service, "default")),
                    )
                raise CliError(
                    f"no token for {service} at {address}",
                    EXIT_USAGE,
                    hint="set CONTENTPIPE_TOKEN or pass --token; with services started by `contentpipe up` "
                    "a token for the local user is used automatically",
                )
            self._token = mint_token(secret, self.config.user, ttl_seconds=LOCAL_TOKEN_TTL_SECONDS)
        return self._token

    async def call(
        self,
        service: str,
        rpc: Callable[..., ResponseT],
        request: Any,
        *,
        deadline: float | None = None,
    ) -> ResponseT:
        """Call `rpc` with the bearer token and a fresh request id; errors become CliError with the exit code."""
        token = await self.token_for(service)
        metadata = (("authorization", f"Bearer {token}"), ("x-request-id", new_id()))
        try:
            # The generated stubs are typed for the sync API; on a grpc.aio channel the call is awaitable.
            pending = cast(
                "Awaitable[ResponseT]", rpc(request, metadata=metadata, timeout=deadline or self.config.timeout)
            )
            return await pending
        except grpc.aio.AioRpcError as err:
            raise cli_error_from_rpc(
                err,
                service=service,
                address=self.config.addresses[service],
                source=self.config.address_sources.get(service, "default"),
            ) from None

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()

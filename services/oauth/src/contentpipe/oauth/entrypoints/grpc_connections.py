"""gRPC servicer for ConnectionService: translate requests, call the connections use case, translate results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from contentpipe.api.oauth.v1 import connection_service_pb2 as pb
from contentpipe.api.oauth.v1 import connection_service_pb2_grpc, platform_pb2
from contentpipe.common.auth import current_principal
from contentpipe.common.errors import InvalidArgument
from contentpipe.common.ids import parse_name
from contentpipe.common.pagination import PageTokenCodec, keyset_after, keyset_token, page_size
from contentpipe.oauth.domain.connections import Connection, ConnectionStatus, Platform
from contentpipe.oauth.service_layer.connections import ConnectionService
from contentpipe.oauth.service_layer.connections_ports import PlatformSpec
from google.protobuf import timestamp_pb2

_PLATFORMS: dict[int, Platform] = {
    platform_pb2.PLATFORM_INSTAGRAM: Platform.INSTAGRAM,
    platform_pb2.PLATFORM_TWITTER: Platform.TWITTER,
    platform_pb2.PLATFORM_LINKEDIN: Platform.LINKEDIN,
    platform_pb2.PLATFORM_TIKTOK: Platform.TIKTOK,
    platform_pb2.PLATFORM_GOOGLE: Platform.GOOGLE,
    platform_pb2.PLATFORM_FACEBOOK: Platform.FACEBOOK,
    platform_pb2.PLATFORM_OUTBOX: Platform.OUTBOX,
}
_PLATFORM_ENUM = {v: k for k, v in _PLATFORMS.items()}
_STATUSES: dict[int, ConnectionStatus] = {
    pb.CONNECTION_STATUS_ACTIVE: ConnectionStatus.ACTIVE,
    pb.CONNECTION_STATUS_REFRESH_FAILING: ConnectionStatus.REFRESH_FAILING,
    pb.CONNECTION_STATUS_NEEDS_REAUTH: ConnectionStatus.NEEDS_REAUTH,
    pb.CONNECTION_STATUS_REVOKED: ConnectionStatus.REVOKED,
}
_STATUS_ENUM = {v: k for k, v in _STATUSES.items()}
NAME_PATTERN = "connections/{id}"


def _platform(value: int, *, required: bool) -> Platform | None:
    if value == platform_pb2.PLATFORM_UNSPECIFIED:
        if required:
            raise InvalidArgument.single("platform", "required")
        return None
    platform = _PLATFORMS.get(value)
    if platform is None:
        raise InvalidArgument.single("platform", f"unknown platform {value}")
    return platform


def _status(value: int) -> ConnectionStatus | None:
    if value == pb.CONNECTION_STATUS_UNSPECIFIED:
        return None
    status = _STATUSES.get(value)
    if status is None:
        raise InvalidArgument.single("status", f"unknown status {value}")
    return status


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def connection_message(c: Connection) -> pb.Connection:
    message = pb.Connection(
        name=c.name,
        owner=c.owner,
        platform=_PLATFORM_ENUM[c.platform],  # type: ignore[arg-type]
        status=_STATUS_ENUM[c.status],  # type: ignore[arg-type]
        profile=pb.Profile(
            account_id=c.profile.account_id,
            username=c.profile.username,
            display_name=c.profile.display_name,
            avatar_uri=c.profile.avatar_uri,
            profile_uri=c.profile.profile_uri,
        ),
        granted_scopes=list(c.granted_scopes),
        has_refresh_token=bool(c.tokens.refresh_token),
        sub_accounts=[pb.SubAccount(id=s.id, display_name=s.display_name, kind=s.kind) for s in c.sub_accounts],
        metadata=dict(c.metadata),
    )
    stamps: dict[str, Any] = {
        "access_token_expire_time": c.tokens.expires_at,
        "last_refresh_time": c.last_refresh_at,
        "create_time": c.create_time,
        "update_time": c.update_time,
    }
    for field, value in stamps.items():
        stamp = _timestamp(value)
        if stamp is not None:
            getattr(message, field).CopyFrom(stamp)
    if c.last_error is not None:
        message.last_error.CopyFrom(
            pb.ConnectionError(
                reason=c.last_error.reason, message=c.last_error.message, time=_timestamp(c.last_error.time)
            )
        )
    return message


def platform_message(spec: PlatformSpec) -> pb.PlatformInfo:
    return pb.PlatformInfo(
        platform=_PLATFORM_ENUM[spec.platform],  # type: ignore[arg-type]
        display_name=spec.display_name,
        required_scopes=list(spec.required_scopes),
        uses_pkce=spec.uses_pkce,
        supports_refresh=spec.supports_refresh,
    )


class ConnectionServiceServicer(connection_service_pb2_grpc.ConnectionServiceServicer):
    """Thin: translate requests, call the service layer, translate results; raise ContentpipeError."""

    def __init__(self, connections: ConnectionService, codec: PageTokenCodec) -> None:
        self._connections = connections
        self._codec = codec

    async def ListPlatforms(self, request: pb.ListPlatformsRequest, context: Any) -> pb.ListPlatformsResponse:
        return pb.ListPlatformsResponse(platforms=[platform_message(s) for s in self._connections.platforms()])

    async def StartConnection(self, request: pb.StartConnectionRequest, context: Any) -> pb.StartConnectionResponse:
        started = await self._connections.start(
            current_principal().user_id,
            _platform(request.platform, required=False),
            request.redirect_uri,
            list(request.extra_scopes),
        )
        return pb.StartConnectionResponse(
            authorization_uri=started.authorization_uri,
            state=started.state,
            expire_time=_timestamp(started.expires_at),
        )

    async def CompleteConnection(
        self, request: pb.CompleteConnectionRequest, context: Any
    ) -> pb.CompleteConnectionResponse:
        connection = await self._connections.complete(
            current_principal().user_id,
            _platform(request.platform, required=True),
            request.code,
            request.state,
        )
        return pb.CompleteConnectionResponse(connection=connection_message(connection))

    async def GetConnection(self, request: pb.GetConnectionRequest, context: Any) -> pb.GetConnectionResponse:
        connection = await self._connections.get(current_principal().user_id, parse_name(NAME_PATTERN, request.name))
        return pb.GetConnectionResponse(connection=connection_message(connection))

    async def ListConnections(self, request: pb.ListConnectionsRequest, context: Any) -> pb.ListConnectionsResponse:
        owner = current_principal().user_id
        limit = page_size(request.page_size)
        platform = _platform(request.platform, required=False)
        status = _status(request.status)
        query = f"{platform or ''}|{status or ''}"
        after = keyset_after(self._codec, request.page_token, query=query)
        page = await self._connections.list_page(owner, platform=platform, status=status, limit=limit, after=after)
        token = ""
        if page.next_after is not None:
            token = keyset_token(self._codec, page.next_after[0], page.next_after[1], query=query)
        return pb.ListConnectionsResponse(
            connections=[connection_message(c) for c in page.connections], next_page_token=token
        )

    async def RefreshConnection(
        self, request: pb.RefreshConnectionRequest, context: Any
    ) -> pb.RefreshConnectionResponse:
        connection = await self._connections.refresh_now(
            current_principal().user_id, parse_name(NAME_PATTERN, request.name)
        )
        return pb.RefreshConnectionResponse(connection=connection_message(connection))

    async def DeleteConnection(self, request: pb.DeleteConnectionRequest, context: Any) -> pb.DeleteConnectionResponse:
        outcome = await self._connections.delete(current_principal().user_id, parse_name(NAME_PATTERN, request.name))
        return pb.DeleteConnectionResponse(
            revoked_at_platform=outcome.revoked_at_platform, revoke_error=outcome.revoke_error
        )

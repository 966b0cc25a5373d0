"""Connections acceptance through a real gRPC server: for each platform StartConnection → the platform's authorization
parameters → CompleteConnection against a server speaking its protocol → listed ACTIVE with its profile →
RefreshConnection renews → DeleteConnection revokes and removes; outbox; another user's connection is NOT_FOUND;
no token in clear in the database, the logs or any error."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from contentpipe.api.oauth.v1 import connection_service_pb2 as pb
from contentpipe.api.oauth.v1 import platform_pb2

from tests.fakes.oauth_platforms import CLIENTS
from tests.oauth.connections.support import (
    PLATFORMS,
    REDIRECT_URI,
    Stack,
    assert_no_tokens,
    connect,
    consent,
    database_dump,
    error_reason,
    query_of,
)
from tests.support import bearer

pytestmark = pytest.mark.integration

USER = f"user-{uuid.uuid4().hex[:8]}"
OTHER = f"other-{uuid.uuid4().hex[:8]}"


def _check_authorization_parameters(platform: str, uri: str, state: str) -> None:
    q = query_of(uri)
    assert q["state"] == state
    assert q["redirect_uri"] == REDIRECT_URI
    assert q["response_type"] == "code"
    if platform == "twitter":
        assert q["client_id"] == "x-client-id"
        assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
        assert set(q["scope"].split(" ")) >= {
            "tweet.read",
            "tweet.write",
            "users.read",
            "offline.access",
            "media.write",
        }
    elif platform == "linkedin":
        assert "code_challenge" not in q
        assert set(q["scope"].split(" ")) >= {"openid", "profile", "w_member_social"}
    elif platform == "tiktok":
        assert q["client_key"] == "tt-client-key" and "client_id" not in q
        assert q["scope"].split(",") == ["user.info.basic", "user.info.profile", "video.publish", "video.upload"]
    elif platform == "google":
        assert q["access_type"] == "offline" and q["prompt"] == "consent"
        assert q["code_challenge_method"] == "S256"
        assert "https://www.googleapis.com/auth/youtube.upload" in q["scope"].split(" ")
        assert "https://www.googleapis.com/auth/youtube.readonly" in q["scope"].split(" ")  # channels.list
    elif platform == "facebook":
        assert "/v99.0/dialog/oauth" in uri
        assert q["scope"].split(",") == [
            "pages_show_list",
            "pages_manage_posts",
            "pages_read_engagement",
            "business_management",
        ]
    elif platform == "instagram":
        assert q["scope"].split(",") == ["instagram_business_basic", "instagram_business_content_publish"]


async def test_list_platforms_shows_configured_platforms_and_outbox(
    stub: Any,
) -> None:
    reply = await stub.ListPlatforms(pb.ListPlatformsRequest(), metadata=bearer(USER))
    by_platform = {p.platform: p for p in reply.platforms}
    assert set(by_platform) == {*PLATFORMS.values(), platform_pb2.PLATFORM_OUTBOX}
    assert by_platform[platform_pb2.PLATFORM_TWITTER].uses_pkce
    assert "offline.access" in by_platform[platform_pb2.PLATFORM_TWITTER].required_scopes
    assert not by_platform[platform_pb2.PLATFORM_OUTBOX].supports_refresh


@pytest.mark.parametrize("platform", list(PLATFORMS))
async def test_connect_list_refresh_delete(platform: str, stack: Stack, stub: Any) -> None:
    enum = PLATFORMS[platform]
    started = await stub.StartConnection(
        pb.StartConnectionRequest(platform=enum, redirect_uri=REDIRECT_URI), metadata=bearer(USER)
    )
    _check_authorization_parameters(platform, started.authorization_uri, started.state)
    code, state = consent(started.authorization_uri)
    assert state == started.state
    done = await stub.CompleteConnection(
        pb.CompleteConnectionRequest(platform=enum, code=code, state=state), metadata=bearer(USER)
    )
    connection = done.connection
    assert connection.status == pb.CONNECTION_STATUS_ACTIVE
    assert connection.owner == USER and connection.platform == enum
    assert connection.profile.account_id and connection.profile.display_name
    if platform == "facebook":
        # its own Page and the one its Business Manager owns (business_management granted)
        assert [(s.id, s.kind) for s in connection.sub_accounts] == [
            ("page-1", "facebook_page"),
            ("page-biz-1", "facebook_page"),
        ]
        assert connection.metadata["api_version"] == "v99.0"
    if platform in ("twitter", "tiktok", "google", "linkedin"):
        assert connection.has_refresh_token

    listed = await stub.ListConnections(pb.ListConnectionsRequest(platform=enum), metadata=bearer(USER))
    assert [c.name for c in listed.connections] == [connection.name]
    assert listed.connections[0].profile == connection.profile

    # Another user sees nothing of it.
    for call, request in (
        (stub.GetConnection, pb.GetConnectionRequest(name=connection.name)),
        (stub.RefreshConnection, pb.RefreshConnectionRequest(name=connection.name)),
        (stub.DeleteConnection, pb.DeleteConnectionRequest(name=connection.name)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request, metadata=bearer(OTHER))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert not (await stub.ListConnections(pb.ListConnectionsRequest(), metadata=bearer(OTHER))).connections

    if platform == "instagram":
        # ig_refresh_token refuses tokens younger than 24 h: refused here, without asking, and the connection stays
        with pytest.raises(grpc.aio.AioRpcError) as young:
            await stub.RefreshConnection(pb.RefreshConnectionRequest(name=connection.name), metadata=bearer(USER))
        assert young.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(young.value) == "TOKEN_TOO_YOUNG" and "24 h" in str(young.value.details())
        assert stack.fakes.calls["instagram.refresh"] == stack.fakes.calls["instagram.refresh_too_young"] == 0
        again = await stub.GetConnection(pb.GetConnectionRequest(name=connection.name), metadata=bearer(USER))
        assert again.connection.status == pb.CONNECTION_STATUS_ACTIVE
    else:
        before = stack.oidc.stats()["refresh"] if platform == "google" else None
        refreshed = (
            await stub.RefreshConnection(pb.RefreshConnectionRequest(name=connection.name), metadata=bearer(USER))
        ).connection
        assert refreshed.status == pb.CONNECTION_STATUS_ACTIVE
        assert refreshed.last_refresh_time.ToDatetime() > connection.last_refresh_time.ToDatetime()
        if platform == "google":
            assert stack.oidc.stats()["refresh"] == before + 1  # type: ignore[operator]
        elif platform == "facebook":
            assert stack.fakes.calls["facebook.exchange"] >= 2  # connect + re-exchange
        else:
            assert stack.fakes.calls[f"{platform}.refresh"] >= 1

    dump = database_dump(stack.database_url)
    assert connection.profile.account_id in dump  # the dump does read the rows
    assert_no_tokens(dump, stack.issued_tokens(), "the database")

    deleted = await stub.DeleteConnection(pb.DeleteConnectionRequest(name=connection.name), metadata=bearer(USER))
    if platform == "instagram":
        assert not deleted.revoked_at_platform and "no revoke endpoint" in deleted.revoke_error
    else:
        assert deleted.revoked_at_platform, deleted.revoke_error
        assert deleted.revoke_error == ""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetConnection(pb.GetConnectionRequest(name=connection.name), metadata=bearer(USER))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value) == "CONNECTION_NOT_FOUND"


async def test_google_rotated_refresh_tokens_are_stored_so_refreshes_keep_working(stack: Stack, stub: Any) -> None:
    """The OIDC provider rotates refresh tokens and refuses a spent one: refreshing twice only works when the
    rotated token was stored; reconnecting the same Google account updates the connection in place."""
    connection = await connect(stub, "google", USER)
    before = stack.oidc.stats()["refresh"]
    for _ in range(2):
        refreshed = await stub.RefreshConnection(
            pb.RefreshConnectionRequest(name=connection.name), metadata=bearer(USER)
        )
        assert refreshed.connection.status == pb.CONNECTION_STATUS_ACTIVE
        await asyncio.sleep(2.1)  # past the window in which refresh-now requests share one refresh
    assert stack.oidc.stats()["refresh"] == before + 2
    again = await connect(stub, "google", USER)
    assert again.name == connection.name and again.has_refresh_token
    deleted = await stub.DeleteConnection(pb.DeleteConnectionRequest(name=again.name), metadata=bearer(USER))
    assert deleted.revoked_at_platform


async def test_outbox_connection_needs_no_authorization_and_is_idempotent(
    stub: Any,
) -> None:
    request = pb.CompleteConnectionRequest(platform=platform_pb2.PLATFORM_OUTBOX)
    first = (await stub.CompleteConnection(request, metadata=bearer(USER))).connection
    second = (await stub.CompleteConnection(request, metadata=bearer(USER))).connection
    assert first.name == second.name
    assert first.status == pb.CONNECTION_STATUS_ACTIVE and first.platform == platform_pb2.PLATFORM_OUTBOX
    assert first.metadata["outbox_dir"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetConnection(pb.GetConnectionRequest(name=first.name), metadata=bearer(OTHER))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    deleted = await stub.DeleteConnection(pb.DeleteConnectionRequest(name=first.name), metadata=bearer(USER))
    assert not deleted.revoked_at_platform


async def test_list_is_paginated_newest_first_and_filtered(
    stub: Any,
) -> None:
    user = f"pager-{uuid.uuid4().hex[:6]}"
    names = [(await connect(stub, p, user)).name for p in ("twitter", "tiktok", "linkedin")]
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListConnections(
            pb.ListConnectionsRequest(page_size=2, page_token=token), metadata=bearer(user)
        )
        seen += [c.name for c in page.connections]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(names))
    only = await stub.ListConnections(
        pb.ListConnectionsRequest(status=pb.CONNECTION_STATUS_NEEDS_REAUTH), metadata=bearer(user)
    )
    assert not only.connections
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListConnections(pb.ListConnectionsRequest(page_size=2, page_token="garbage"), metadata=bearer(user))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_logs_hold_no_token(stack: Stack) -> None:
    """Runs after the flows above in this module (pytest keeps file order)."""
    assert stack.issued_tokens()
    secrets = stack.issued_tokens() | {secret for _, secret in CLIENTS.values()} | {"google-secret"}
    assert_no_tokens(stack.service.logs(), secrets, "the service log")

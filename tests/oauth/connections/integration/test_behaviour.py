"""Connection rules through the real gRPC server: state checks, redirect allowlist, partially granted scopes,
reconnects in place, invalid_grant and transient refresh failures, two replicas racing on a rotating refresh token,
key rotation; no token in any error message."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from contentpipe.api.oauth.v1 import connection_service_pb2 as pb
from contentpipe.api.oauth.v1 import connection_service_pb2_grpc, platform_pb2

from tests.oauth.connections.support import (
    KEY_1,
    KEY_2,
    PLATFORMS,
    REDIRECT_URI,
    Stack,
    assert_no_tokens,
    connect,
    consent,
    database_dump,
    error_reason,
)
from tests.support import TEST_JWT_SECRET, ServiceProcess, bearer
from tests.support.processes import REPO_ROOT

pytestmark = pytest.mark.integration

ERRORS: list[str] = []  # every error message seen in this module, checked for tokens at the end


@pytest.fixture
def user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


async def _refused(call: object, request: object, user: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, metadata=bearer(user))  # type: ignore[operator]
    ERRORS.append(caught.value.details() or "")
    return caught.value


async def _start(stub: Any, platform: str, user: str) -> tuple[str, str]:
    started = await stub.StartConnection(
        pb.StartConnectionRequest(platform=PLATFORMS[platform], redirect_uri=REDIRECT_URI), metadata=bearer(user)
    )
    return consent(started.authorization_uri)


async def test_tampered_replayed_cross_user_and_cross_platform_state_is_refused(stub: Any, user: str) -> None:
    code, state = await _start(stub, "twitter", user)
    ident, expiry, mac = state.split(".")
    tampered = [
        f"{ident}.{int(expiry) + 600}.{mac}",  # longer life
        f"{ident}.{expiry}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}",  # forged mac
        f"{ident[:-1]}{'0' if ident[-1] != '0' else '1'}.{expiry}.{mac}",  # another row
        "not-a-state",
    ]
    twitter = platform_pb2.PLATFORM_TWITTER
    for bad in tampered:
        error = await _refused(
            stub.CompleteConnection, pb.CompleteConnectionRequest(platform=twitter, code=code, state=bad), user
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_reason(error) == "STATE_INVALID", bad
    other = await _refused(
        stub.CompleteConnection, pb.CompleteConnectionRequest(platform=twitter, code=code, state=state), "someone-else"
    )
    assert other.code() == grpc.StatusCode.INVALID_ARGUMENT and error_reason(other) == "STATE_USER_MISMATCH"
    cross = await _refused(
        stub.CompleteConnection,
        pb.CompleteConnectionRequest(platform=platform_pb2.PLATFORM_TIKTOK, code=code, state=state),
        user,
    )
    assert cross.code() == grpc.StatusCode.INVALID_ARGUMENT and error_reason(cross) == "STATE_PLATFORM_MISMATCH"
    # None of the refusals burnt the state: its owner completes it once; a replay is refused.
    done = await stub.CompleteConnection(
        pb.CompleteConnectionRequest(platform=twitter, code=code, state=state), metadata=bearer(user)
    )
    assert done.connection.status == pb.CONNECTION_STATUS_ACTIVE
    replay = await _refused(
        stub.CompleteConnection, pb.CompleteConnectionRequest(platform=twitter, code=code, state=state), user
    )
    assert replay.code() == grpc.StatusCode.FAILED_PRECONDITION and error_reason(replay) == "STATE_ALREADY_USED"


async def test_redirect_uri_must_be_on_the_allowlist(stub: Any, user: str) -> None:
    for uri in ("https://evil.example/callback", "https://app.contentpipe.test/oauth/callback#x", ""):
        error = await _refused(
            stub.StartConnection,
            pb.StartConnectionRequest(platform=platform_pb2.PLATFORM_TWITTER, redirect_uri=uri),
            user,
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "redirect_uri" in (error.details() or "")
    unspecified = await _refused(stub.StartConnection, pb.StartConnectionRequest(redirect_uri=REDIRECT_URI), user)
    assert unspecified.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("platform", "unticked"),
    [("twitter", "tweet.write"), ("facebook", "pages_manage_posts"), ("tiktok", "video.publish")],
)
async def test_partially_granted_scopes_are_refused_with_the_missing_ones(
    platform: str, unticked: str, stack: Stack, stub: Any, user: str
) -> None:
    stack.fakes.untick[platform] = {unticked}
    try:
        code, state = await _start(stub, platform, user)
        error = await _refused(
            stub.CompleteConnection,
            pb.CompleteConnectionRequest(platform=PLATFORMS[platform], code=code, state=state),
            user,
        )
    finally:
        stack.fakes.untick.clear()
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "SCOPES_MISSING" and unticked in (error.details() or "")
    assert not (await stub.ListConnections(pb.ListConnectionsRequest(), metadata=bearer(user))).connections


async def test_reconnecting_updates_in_place_and_keeps_the_stored_refresh_token(
    stack: Stack, stub: Any, user: str
) -> None:
    first = await connect(stub, "linkedin", user)
    assert first.has_refresh_token
    stack.fakes.linkedin_refresh_tokens = False  # the second consent returns no refresh token
    try:
        second = await connect(stub, "linkedin", user)
    finally:
        stack.fakes.linkedin_refresh_tokens = True
    assert second.name == first.name and second.create_time == first.create_time
    assert second.has_refresh_token
    refreshed = await stub.RefreshConnection(pb.RefreshConnectionRequest(name=second.name), metadata=bearer(user))
    assert refreshed.connection.status == pb.CONNECTION_STATUS_ACTIVE  # the kept refresh token still works
    listed = await stub.ListConnections(pb.ListConnectionsRequest(), metadata=bearer(user))
    assert len(listed.connections) == 1


async def test_invalid_grant_turns_the_connection_needs_reauth(stack: Stack, stub: Any, user: str) -> None:
    connection = await connect(stub, "twitter", user)
    stack.fakes.refresh.clear()  # the refresh token died at X (revoked by the user, or spent elsewhere)
    error = await _refused(stub.RefreshConnection, pb.RefreshConnectionRequest(name=connection.name), user)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "CONNECTION_NEEDS_REAUTH"
    after = (await stub.GetConnection(pb.GetConnectionRequest(name=connection.name), metadata=bearer(user))).connection
    assert after.status == pb.CONNECTION_STATUS_NEEDS_REAUTH
    assert after.last_error.reason == "INVALID_GRANT" and after.last_error.time.seconds > 0
    again = await _refused(stub.RefreshConnection, pb.RefreshConnectionRequest(name=connection.name), user)
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION  # stops trying


async def test_transient_refresh_failure_keeps_the_connection_and_recovers(stack: Stack, stub: Any, user: str) -> None:
    connection = await connect(stub, "tiktok", user)
    stack.fakes.fail_refresh_with["tiktok"] = 503
    try:
        error = await _refused(stub.RefreshConnection, pb.RefreshConnectionRequest(name=connection.name), user)
    finally:
        stack.fakes.fail_refresh_with.clear()
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    failing = (
        await stub.GetConnection(pb.GetConnectionRequest(name=connection.name), metadata=bearer(user))
    ).connection
    assert failing.status == pb.CONNECTION_STATUS_REFRESH_FAILING
    assert failing.last_error.reason == "PLATFORM_UNAVAILABLE" and failing.has_refresh_token
    ok = await stub.RefreshConnection(pb.RefreshConnectionRequest(name=connection.name), metadata=bearer(user))
    assert ok.connection.status == pb.CONNECTION_STATUS_ACTIVE and not ok.connection.HasField("last_error")


async def test_two_replicas_racing_on_a_rotating_refresh_token_refresh_once(
    stack: Stack, stub: Any, user: str, tmp_path: Path
) -> None:
    connection = await connect(stub, "twitter", user)
    replica = ServiceProcess("oauth", tmp_path / "replica", database_url=stack.database_url, env=stack.env).start()
    try:
        before = stack.fakes.calls["twitter.refresh"]
        channel = grpc.aio.insecure_channel(replica.address)
        other = connection_service_pb2_grpc.ConnectionServiceStub(channel)
        request = pb.RefreshConnectionRequest(name=connection.name)
        replies = await asyncio.gather(
            *(s.RefreshConnection(request, metadata=bearer(user)) for s in (stub, other, stub, other))
        )
        await channel.close(None)
    finally:
        replica.terminate()
    assert stack.fakes.calls["twitter.refresh"] - before == 1
    assert {r.connection.status for r in replies} == {pb.CONNECTION_STATUS_ACTIVE}
    assert len({r.connection.last_refresh_time.ToDatetime() for r in replies}) == 1
    # The rotated refresh token was stored: the next refresh works (a stale one would be refused by the fake).
    await asyncio.sleep(2.1)  # past the window in which refresh-now requests share one refresh
    nxt = await stub.RefreshConnection(request, metadata=bearer(user))
    assert nxt.connection.status == pb.CONNECTION_STATUS_ACTIVE
    assert stack.fakes.calls["twitter.refresh"] - before == 2


async def test_a_refresh_in_flight_at_shutdown_is_still_saved(
    stack: Stack, stub: Any, user: str, tmp_path: Path
) -> None:
    """SIGTERM while X is answering a refresh (the old refresh token already spent): the replica stops only after
    storing the rotated token, so the connection keeps working elsewhere."""
    connection = await connect(stub, "twitter", user)
    env = {**stack.env, "CONTENTPIPE_SHUTDOWN_GRACE_SECONDS": "1"}
    replica = ServiceProcess("oauth", tmp_path / "replica", database_url=stack.database_url, env=env).start()
    channel = grpc.aio.insecure_channel(replica.address)
    before = stack.fakes.calls["twitter.refresh"]
    refused = stack.fakes.calls["twitter.refresh_refused"]
    stack.fakes.refresh_delay = 2.5  # longer than the replica's shutdown grace: the RPC gets cancelled
    try:
        call = connection_service_pb2_grpc.ConnectionServiceStub(channel).RefreshConnection(
            pb.RefreshConnectionRequest(name=connection.name), metadata=bearer(user)
        )
        pending = asyncio.ensure_future(call)
        while stack.fakes.calls["twitter.refresh"] == before:
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(replica.terminate) == 0
        with pytest.raises(grpc.aio.AioRpcError):
            await pending
    finally:
        stack.fakes.refresh_delay = 0.0
        await channel.close(None)
        replica.terminate()
    await asyncio.sleep(2.1)
    again = await stub.RefreshConnection(pb.RefreshConnectionRequest(name=connection.name), metadata=bearer(user))
    assert again.connection.status == pb.CONNECTION_STATUS_ACTIVE
    assert stack.fakes.calls["twitter.refresh_refused"] == refused


async def test_rotate_keys_re_encrypts_every_row_under_the_first_key(
    stack: Stack, stub: Any, user: str, tmp_path: Path
) -> None:
    connection = await connect(stub, "facebook", user)
    assert "v1:k1:" in database_dump(stack.database_url, raw=False)
    env = {
        **stack.env,
        "OAUTH_TOKEN_KEYS": f"{KEY_2},{KEY_1}",
        "OAUTH_DATABASE_URL": stack.database_url,
        "CONTENTPIPE_JWT_SECRET": TEST_JWT_SECRET,
        "CONTENTPIPE_DATA_DIR": str(tmp_path / "rotate"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "contentpipe.oauth", "rotate-keys"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    dump = database_dump(stack.database_url, raw=False)
    assert "v1:k1:" not in dump and "v1:k2:" in dump
    only_new = ServiceProcess(
        "oauth", tmp_path / "k2", database_url=stack.database_url, env={**stack.env, "OAUTH_TOKEN_KEYS": KEY_2}
    ).start()
    try:
        channel = grpc.aio.insecure_channel(only_new.address)
        fresh = connection_service_pb2_grpc.ConnectionServiceStub(channel)
        refreshed = await fresh.RefreshConnection(
            pb.RefreshConnectionRequest(name=connection.name), metadata=bearer(user)
        )
        assert refreshed.connection.status == pb.CONNECTION_STATUS_ACTIVE
        assert [s.id for s in refreshed.connection.sub_accounts] == ["page-1", "page-biz-1"]
        await channel.close(None)
    finally:
        only_new.terminate()


def test_no_error_message_holds_a_token(stack: Stack) -> None:
    assert ERRORS
    assert_no_tokens("\n".join(ERRORS), stack.issued_tokens(), "error messages")
    assert_no_tokens(database_dump(stack.database_url), stack.issued_tokens(), "the database")

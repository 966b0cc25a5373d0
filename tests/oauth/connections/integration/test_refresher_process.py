"""The background refresher in two real replicas on one database: connections inside the margin are renewed
continuously, and no rotating refresh token is ever spent twice (the fake would refuse the second use)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from contentpipe.api.oauth.v1 import connection_service_pb2 as pb

from tests.oauth.connections.support import Stack, connect
from tests.support import ServiceProcess, bearer

pytestmark = pytest.mark.integration

# Every token the fakes issue lives 2 h; a margin above that keeps every connection due, so both replicas'
# refreshers compete for the same rows on every pass.
STACK_ENV = {"OAUTH_REFRESH_MARGIN": "3h", "OAUTH_REFRESH_INTERVAL": "200ms"}


async def test_two_replicas_refreshers_never_spend_a_refresh_token_twice(stack: Stack, tmp_path: Path) -> None:
    user = f"r-{uuid.uuid4().hex[:8]}"
    channel, stub = stack.stub()
    replica = ServiceProcess("oauth", tmp_path / "replica", database_url=stack.database_url, env=stack.env).start()
    try:
        names = [(await connect(stub, platform, user)).name for platform in ("twitter", "tiktok")]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and min(stack.fakes.calls[f"{p}.refresh"] for p in ("twitter", "tiktok")) < 5:
            await asyncio.sleep(0.2)
        for name in names:
            got = (await stub.GetConnection(pb.GetConnectionRequest(name=name), metadata=bearer(user))).connection
            assert got.status == pb.CONNECTION_STATUS_ACTIVE, got.last_error
            assert got.last_refresh_time.seconds > 0
        logs = stack.service.logs() + replica.logs()
    finally:
        replica.terminate()
        await channel.close(None)
    assert "refresh failed" not in logs and "Traceback" not in logs
    assert "connection refreshed" in replica.logs() and "connection refreshed" in stack.service.logs()  # both worked
    assert stack.fakes.calls["twitter.refresh"] >= 5 and stack.fakes.calls["tiktok.refresh"] >= 5
    assert stack.fakes.calls["twitter.refresh_refused"] == 0
    assert stack.fakes.calls["tiktok.refresh_refused"] == 0

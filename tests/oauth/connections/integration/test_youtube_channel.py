"""The YouTube channel lookup (`channels.list?mine=true`) needs youtube.readonly: an operator who configured only
youtube.upload gets a failed connection naming the fix, not a connection that silently lacks its channel."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tests.fakes.oidc import YOUTUBE_UPLOAD
from tests.oauth.connections.support import connect, error_reason

pytestmark = pytest.mark.integration

STACK_ENV = {"GOOGLE_SCOPES": f"openid email profile {YOUTUBE_UPLOAD}"}


async def test_connection_without_youtube_readonly_fails_naming_the_scope(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await connect(stub, "google")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "YOUTUBE_SCOPE_MISSING"
    assert "youtube.readonly" in str(caught.value.details())

"""Outbound HTTP: Retry-After parsing, bounded retries for safe methods only, and the SSRF URL policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from contentpipe.common.errors import InvalidArgument
from contentpipe.common.http import (
    OutboundUrlPolicy,
    create_http_client,
    parse_retry_after,
    retrying_request,
    shared_tls_context,
)

pytestmark = pytest.mark.unit


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def _client(responses: list[httpx.Response], seen: list[str]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return responses.pop(0)

    return create_http_client(transport=httpx.MockTransport(handler))


async def test_retry_after_header_delays_next_attempt() -> None:
    seen: list[str] = []
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    responses = [httpx.Response(429, headers={"retry-after": "3"}), httpx.Response(200, json={"ok": True})]
    async with _client(responses, seen) as client:
        response = await retrying_request(client, "GET", "https://api.example.test/x", sleep=sleep)
    assert response.status_code == 200
    assert slept == [3.0]
    assert seen == ["GET", "GET"]


async def test_unsafe_methods_are_not_retried_unless_declared() -> None:
    seen: list[str] = []
    async with _client([httpx.Response(503)], seen) as client:
        response = await retrying_request(client, "POST", "https://api.example.test/x")
    assert response.status_code == 503
    assert seen == ["POST"]


async def test_retries_are_bounded() -> None:
    seen: list[str] = []

    async def sleep(seconds: float) -> None:
        assert 0 <= seconds <= 20

    async with _client([httpx.Response(502) for _ in range(10)], seen) as client:
        response = await retrying_request(
            client, "POST", "https://api.example.test/x", retry_methods={"POST"}, max_attempts=3, sleep=sleep
        )
    assert response.status_code == 502
    assert len(seen) == 3


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost:8080/",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.8/",
        "http://[::1]/",
        "ftp://example.com/file",
        "file:///etc/passwd",
    ],
)
async def test_url_policy_refuses_local_private_and_non_http(url: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        await OutboundUrlPolicy(field="webhook_url").check(url)
    assert info.value.violations[0].field == "webhook_url"


async def test_url_policy_can_allow_private_for_local_demos() -> None:
    await OutboundUrlPolicy(allow_private=True).check("http://127.0.0.1:9000/hook")
    assert OutboundUrlPolicy.is_public("93.184.216.34")


async def test_clients_share_one_loaded_ca_bundle() -> None:
    # Each load of the CA bundle costs ~50 ms of CPU; a service builds several clients at start-up.
    first, second = create_http_client(), create_http_client(max_connections=5)
    try:
        contexts = {id(client._transport._pool._ssl_context) for client in (first, second)}  # type: ignore[attr-defined]
        assert contexts == {id(shared_tls_context())}
    finally:
        await first.aclose()
        await second.aclose()

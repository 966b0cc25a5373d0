"""Token refresh outcomes (OpenTelemetry) by platform and result, after real refreshes against the loopback fakes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from contentpipe.common.database import create_engine, run_migrations
from contentpipe.common.http import create_http_client
from contentpipe.oauth.adapters.connection_repository import SqlConnectionStore
from contentpipe.oauth.adapters.crypto import TokenCipher, parse_token_keys
from contentpipe.oauth.adapters.platforms import build_platform_clients
from contentpipe.oauth.bootstrap import MIGRATIONS, VERSION_TABLE
from contentpipe.oauth.config import load_config
from contentpipe.oauth.domain.connections import ConnectionStatus, Platform
from contentpipe.oauth.domain.connections_state import StateSigner
from contentpipe.oauth.service_layer.connections import ConnectionService, RedirectAllowlist
from contentpipe.oauth.service_layer.metrics import OAuthMetrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.fakes import LoopbackHTTPServer
from tests.fakes.oauth_platforms import FakePlatforms
from tests.oauth.connections.integration.test_token_provider import Clock
from tests.oauth.connections.support import KEY_1, REDIRECT_URI, consent
from tests.support import TEST_JWT_SECRET

pytestmark = pytest.mark.integration


def counters(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, str], ...], int]:
    data = reader.get_metrics_data()
    out: dict[tuple[tuple[str, str], ...], int] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        key = tuple(sorted((str(k), str(v)) for k, v in (point.attributes or {}).items()))
                        out[key] = int(point.value)  # type: ignore[union-attr]
    return out


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakePlatforms, str]]:
    fakes = FakePlatforms()
    with LoopbackHTTPServer(fakes.app()) as server:
        yield fakes, server.url


async def test_refresh_outcomes_are_counted_by_platform_and_result(
    database_url: str, fake_server: tuple[FakePlatforms, str]
) -> None:
    fakes, url = fake_server
    reader = InMemoryMetricReader()
    metrics = OAuthMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    config = load_config(
        {**FakePlatforms.env(url), "CONTENTPIPE_JWT_SECRET": TEST_JWT_SECRET, "OAUTH_TOKEN_KEYS": KEY_1}
    )
    await run_migrations(database_url, MIGRATIONS, VERSION_TABLE)
    clock, http, engine = Clock(), create_http_client(), create_engine(database_url)
    service = ConnectionService(
        SqlConnectionStore(engine, TokenCipher(parse_token_keys(KEY_1)), lease_seconds=30),
        build_platform_clients(config.platforms, http, clock=clock),
        StateSigner(b"state-secret"),
        RedirectAllowlist((REDIRECT_URI,), ()),
        clock=clock,
        metrics=metrics,
    )
    owner = f"metrics-{uuid.uuid4().hex[:10]}"
    try:
        connections = {}
        for platform in (Platform.TWITTER, Platform.TIKTOK):
            started = await service.start(owner, platform, REDIRECT_URI, [])
            code, state = consent(started.authorization_uri)
            connections[platform] = await service.complete(owner, platform, code, state)
        clock.advance(timedelta(hours=1, minutes=50))  # inside the refresh margin
        await service.fresh_credentials(owner, connections[Platform.TWITTER].id)
        fakes.fail_refresh_with["tiktok"] = 503
        await service.fresh_credentials(owner, connections[Platform.TIKTOK].id)
        failing = await service.get(owner, connections[Platform.TIKTOK].id)
        assert failing.status is ConnectionStatus.REFRESH_FAILING
    finally:
        fakes.fail_refresh_with.clear()
        await http.aclose()
        await engine.dispose()

    assert counters(reader, "contentpipe.oauth.token.refreshes") == {
        (("platform", "twitter"), ("result", "success")): 1,
        (("platform", "tiktok"), ("reason", "PLATFORM_UNAVAILABLE"), ("result", "error")): 1,
    }

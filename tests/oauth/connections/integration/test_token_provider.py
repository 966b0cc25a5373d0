"""The TokenProvider and the background refresher, in process on SQLite and PostgreSQL against the loopback fakes,
with a movable clock: refresh within the margin exactly once across racing workers, backoff, give-up, expiry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from contentpipe.common.database import create_engine, run_migrations
from contentpipe.common.errors import FailedPrecondition, NotFound
from contentpipe.common.http import create_http_client
from contentpipe.oauth.adapters.connection_repository import SqlConnectionStore
from contentpipe.oauth.adapters.crypto import TokenCipher, parse_token_keys
from contentpipe.oauth.adapters.platforms import build_platform_clients
from contentpipe.oauth.bootstrap import MIGRATIONS, VERSION_TABLE
from contentpipe.oauth.config import load_config
from contentpipe.oauth.domain.connections import Connection, ConnectionStatus, Platform
from contentpipe.oauth.domain.connections_state import StateSigner
from contentpipe.oauth.service_layer.connections import ConnectionService, RedirectAllowlist

from tests.fakes import LoopbackHTTPServer
from tests.fakes.oauth_platforms import FakePlatforms
from tests.oauth.connections.support import KEY_1, REDIRECT_URI, consent
from tests.support import TEST_JWT_SECRET
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class World:
    fakes: FakePlatforms
    clock: Clock
    replicas: list[ConnectionService]  # two services, each with its own engine: two replicas

    @property
    def service(self) -> ConnectionService:
        return self.replicas[0]

    async def connect(self, platform: Platform, owner: str) -> Connection:
        started = await self.service.start(owner, platform, REDIRECT_URI, [])
        code, state = consent(started.authorization_uri)
        return await self.service.complete(owner, platform, code, state)


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakePlatforms, str]]:
    fakes = FakePlatforms()
    with LoopbackHTTPServer(fakes.app()) as server:
        yield fakes, server.url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own database: refresh_due must only meet the connections these tests made."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('token-provider') / 'oauth.db'}"
        return
    request.getfixturevalue("postgres_url")  # skipped locally / failed under CI when PostgreSQL is down
    with fresh_database() as url:
        yield url


@pytest.fixture
async def world(database_url: str, fake_server: tuple[FakePlatforms, str]) -> AsyncIterator[World]:
    fakes, url = fake_server
    fakes.calls.clear()
    fakes.fail_refresh_with.clear()
    fakes.linkedin_refresh_tokens = True
    config = load_config(
        {**FakePlatforms.env(url), "CONTENTPIPE_JWT_SECRET": TEST_JWT_SECRET, "OAUTH_TOKEN_KEYS": KEY_1}
    )
    await run_migrations(database_url, MIGRATIONS, VERSION_TABLE)
    clock = Clock()
    cipher = TokenCipher(parse_token_keys(KEY_1))
    http = create_http_client()
    engines = [create_engine(database_url) for _ in range(2)]
    replicas = [
        ConnectionService(
            SqlConnectionStore(engine, cipher, lease_seconds=30),
            build_platform_clients(config.platforms, http, clock=clock),
            StateSigner(b"state-secret"),
            RedirectAllowlist((REDIRECT_URI,), ()),
            outbox_dir="outbox-dir",
            clock=clock,
        )
        for engine in engines
    ]
    yield World(fakes, clock, replicas)
    await http.aclose()
    for engine in engines:
        await engine.dispose()


@pytest.fixture
def owner() -> str:
    return f"tp-{uuid.uuid4().hex[:10]}"


async def test_expired_state_is_refused(world: World, owner: str) -> None:
    started = await world.service.start(owner, Platform.TWITTER, REDIRECT_URI, [])
    assert started.expires_at - world.clock.now <= timedelta(minutes=10)
    code, state = consent(started.authorization_uri)
    world.clock.advance(timedelta(minutes=10, seconds=1))
    with pytest.raises(FailedPrecondition) as caught:
        await world.service.complete(owner, Platform.TWITTER, code, state)
    assert caught.value.reason == "STATE_EXPIRED"


async def test_two_background_refreshers_renew_each_due_connection_exactly_once(world: World, owner: str) -> None:
    x = await world.connect(Platform.TWITTER, owner)
    tiktok = await world.connect(Platform.TIKTOK, owner)
    assert await world.service.refresh_due() == 0 or world.fakes.calls["twitter.refresh"] == 0
    world.clock.advance(timedelta(hours=2) - timedelta(minutes=10))  # inside the 15-minute margin
    await asyncio.gather(*(r.refresh_due() for r in world.replicas), *(r.refresh_due() for r in world.replicas))
    assert world.fakes.calls["twitter.refresh"] == 1
    assert world.fakes.calls["tiktok.refresh"] == 1
    for before in (x, tiktok):
        after = await world.service.get(owner, before.id)
        assert after.status is ConnectionStatus.ACTIVE
        assert after.tokens.refresh_token != before.tokens.refresh_token  # rotated and stored
        assert after.tokens.expires_at is not None and after.tokens.expires_at > world.clock.now + timedelta(hours=1)
        assert after.last_refresh_at == world.clock.now
    await asyncio.gather(*(r.refresh_due() for r in world.replicas))
    assert world.fakes.calls["twitter.refresh"] == 1  # nothing due any more


async def test_callers_needing_a_token_share_one_refresh(world: World, owner: str) -> None:
    x = await world.connect(Platform.TWITTER, owner)
    same = await world.replicas[1].fresh_credentials(owner, x.id)
    assert same.access_token == x.tokens.access_token and world.fakes.calls["twitter.refresh"] == 0
    world.clock.advance(timedelta(hours=1, minutes=50))
    results = await asyncio.gather(*(world.replicas[i % 2].fresh_credentials(owner, x.id) for i in range(6)))
    assert world.fakes.calls["twitter.refresh"] == 1
    assert len({r.access_token for r in results}) == 1 and results[0].access_token != x.tokens.access_token
    assert results[0].account_id == x.profile.account_id and results[0].platform is Platform.TWITTER
    assert "access_token" not in repr(results[0]) or x.tokens.access_token not in repr(results[0])


async def test_token_provider_errors_name_the_connection(world: World, owner: str) -> None:
    x = await world.connect(Platform.TWITTER, owner)
    with pytest.raises(NotFound) as missing:
        await world.service.fresh_credentials("intruder", x.id)
    assert missing.value.reason == "CONNECTION_NOT_FOUND"
    world.fakes.refresh.clear()  # the grant dies at the platform
    world.clock.advance(timedelta(hours=1, minutes=50))
    with pytest.raises(FailedPrecondition) as dead:
        await world.service.fresh_credentials(owner, x.id)
    assert dead.value.reason == "CONNECTION_NEEDS_REAUTH" and dead.value.metadata == {"connection": x.name}
    summary = await world.service.get_connection(owner, x.id)
    assert summary.status is ConnectionStatus.NEEDS_REAUTH

    fb = await world.connect(Platform.FACEBOOK, owner)
    creds = await world.service.fresh_credentials(owner, fb.id)
    assert [(s.id, s.kind, bool(s.access_token)) for s in creds.sub_accounts] == [
        ("page-1", "facebook_page", True),
        ("page-biz-1", "facebook_page", True),  # owned through Business Manager
    ]
    assert creds.metadata["api_version"] == "v99.0"
    await world.service.mark_needs_reauth(owner, fb.id, "Graph code 190 while publishing")
    with pytest.raises(FailedPrecondition) as marked:
        await world.service.force_refresh(owner, fb.id)
    assert marked.value.reason == "CONNECTION_NEEDS_REAUTH"
    outbox = await world.service.complete(owner, Platform.OUTBOX, "", "")
    outbox_creds = await world.service.fresh_credentials(owner, outbox.id)
    assert outbox_creds.platform is Platform.OUTBOX and outbox_creds.metadata["outbox_dir"] == "outbox-dir"


async def test_transient_failures_back_off_then_give_up(world: World, owner: str) -> None:
    x = await world.connect(Platform.TWITTER, owner)
    world.fakes.fail_refresh_with["twitter"] = 503
    world.clock.advance(timedelta(hours=1, minutes=50))
    await world.service.refresh_due()
    failing = await world.service.get(owner, x.id)
    assert failing.status is ConnectionStatus.REFRESH_FAILING and failing.refresh_failures == 1
    assert failing.last_error is not None and failing.last_error.reason == "PLATFORM_UNAVAILABLE"
    assert failing.next_refresh_at is not None and failing.next_refresh_at > world.clock.now
    # Still usable while the access token lasts.
    assert (await world.service.fresh_credentials(owner, x.id)).access_token == x.tokens.access_token
    for _ in range(3):
        world.clock.advance(timedelta(days=2))
        await world.service.refresh_due()
    gave_up = await world.service.get(owner, x.id)
    assert gave_up.status is ConnectionStatus.NEEDS_REAUTH
    assert gave_up.last_error is not None and gave_up.last_error.reason == "REFRESH_GAVE_UP"
    assert gave_up.tokens.refresh_token == x.tokens.refresh_token  # never wiped


async def test_linkedin_without_refresh_token_lasts_until_expiry_then_needs_reauth(world: World, owner: str) -> None:
    world.fakes.linkedin_refresh_tokens = False
    li = await world.connect(Platform.LINKEDIN, owner)
    assert not li.tokens.refresh_token
    world.clock.advance(timedelta(days=60) - timedelta(minutes=5))
    await world.service.refresh_due()
    waiting = await world.service.get(owner, li.id)
    assert waiting.status is ConnectionStatus.ACTIVE and waiting.next_refresh_at == li.tokens.expires_at
    world.clock.advance(timedelta(minutes=10))
    await world.service.refresh_due()
    expired = await world.service.get(owner, li.id)
    assert expired.status is ConnectionStatus.NEEDS_REAUTH
    assert expired.last_error is not None and expired.last_error.reason == "TOKEN_EXPIRED"

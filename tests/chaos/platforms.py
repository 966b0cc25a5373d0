"""The platforms chaos users post to, and how to read back what each one actually holds."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from contentpipe.api.oauth.v1 import connection_service_pb2 as conn
from contentpipe.api.oauth.v1 import platform_pb2

from tests.chaos.faults import FaultInjector
from tests.chaos.invariants import DeliveredPost
from tests.fakes import LoopbackHTTPServer
from tests.fakes.oauth_platforms import FakePlatforms
from tests.fakes.publishing_platforms import FakeX
from tests.security.fakes import REDIRECT_URI, TOKEN_KEYS
from tests.security.tenants import consent

if TYPE_CHECKING:
    from tests.chaos.runner import Driver


class Platform(Protocol):
    name: str
    faults: FaultInjector | None

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def service_env(self) -> dict[str, str]: ...
    def connect(self, driver: Driver, user: str) -> str: ...
    def delivered(self) -> list[DeliveredPost]: ...


class OutboxPlatform:
    """The embedded outbox: posts land as files in a folder the oauth service writes."""

    name = "outbox"
    faults: FaultInjector | None = None

    def __init__(self, workdir: Path) -> None:
        self.folder = workdir / "outbox"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def stop(self) -> None:
        return None

    def service_env(self) -> dict[str, str]:
        return {
            "OAUTH_OUTBOX_DIR": str(self.folder),
            "OAUTH_POSTING_POLL_INTERVAL": "300ms",
            "OAUTH_POSTING_LEASE": "6s",
            "OAUTH_POSTING_BACKOFF": "1s",
            "OAUTH_POSTING_BACKOFF_MAX": "5s",
            "OAUTH_POSTING_RECONCILE_DELAY": "1s",
        }

    def connect(self, driver: Driver, user: str) -> str:
        request = conn.CompleteConnectionRequest(platform=platform_pb2.PLATFORM_OUTBOX)
        return str(driver.call("CompleteConnection", request, user).connection.name)

    def delivered(self) -> list[DeliveredPost]:
        """`<outbox>/<post id>/post.json` per published post (staging folders are not posts yet)."""
        found: list[DeliveredPost] = []
        for document in sorted(self.folder.glob("*/post.json")):
            if document.parent.name.startswith("."):
                continue
            try:
                post = json.loads(document.read_text())
            except (OSError, ValueError):
                continue
            found.append(DeliveredPost("outbox", str(post.get("id", document.parent.name)), str(post.get("text", ""))))
        return found


class _IssuedTokens(dict[str, str]):
    """FakeX's accepted tokens: whatever access token the OAuth fake handed out for X is the account's."""

    def __init__(self, oauth: FakePlatforms) -> None:
        super().__init__()
        self._oauth = oauth

    def get(self, token: str, default: str | None = None) -> str | None:  # type: ignore[override]
        if self._oauth.access.get(token) == "twitter":
            return self._oauth.accounts["twitter"].id
        return default


class XPlatform:
    """X: its OAuth endpoints (authorize/token/users/me) and its publishing API (media upload, POST /2/tweets).

    The publishing fake is flaky during the chaos (5xx, 429 + Retry-After, slow, created-but-never-answered).
    """

    name = "twitter"

    def __init__(self, seed: int) -> None:
        self.oauth = FakePlatforms()
        self.api = FakeX()
        self.api.tokens = _IssuedTokens(self.oauth)
        self.faults: FaultInjector | None = FaultInjector(self.api.app(), "x", rng=random.Random(seed + 3))
        self._oauth_server = LoopbackHTTPServer(self.oauth.app())
        self._api_server = LoopbackHTTPServer(self.faults)

    def start(self) -> None:
        self._oauth_server.start()
        self._api_server.start()
        self.api.base_url = self._api_server.url

    def stop(self) -> None:
        self._api_server.stop()
        self._oauth_server.stop()

    def service_env(self) -> dict[str, str]:
        return {
            **FakePlatforms.env(self._oauth_server.url),
            "OAUTH_PUBLISH_TWITTER_URL": self._api_server.url,
            "OAUTH_REDIRECT_URIS": REDIRECT_URI,
            "OAUTH_TOKEN_KEYS": TOKEN_KEYS,
        }

    def connect(self, driver: Driver, user: str) -> str:
        started = driver.call(
            "StartConnection",
            conn.StartConnectionRequest(platform=platform_pb2.PLATFORM_TWITTER, redirect_uri=REDIRECT_URI),
            user,
        )
        code, state = consent(started.authorization_uri)
        request = conn.CompleteConnectionRequest(platform=platform_pb2.PLATFORM_TWITTER, code=code, state=state)
        return str(driver.call("CompleteConnection", request, user, attempts=1).connection.name)

    def delivered(self) -> list[DeliveredPost]:
        return [DeliveredPost("twitter", post.id, post.text) for post in list(self.api.posts)]


def chaos_platforms(workdir: Path, *, seed: int, names: list[str]) -> list[Platform]:
    """The platforms named in PLATFORMS (`none`: pipelines only generate, nothing is posted)."""
    known: dict[str, Platform] = {"outbox": OutboxPlatform(workdir), "twitter": XPlatform(seed)}
    unknown = sorted(set(names) - set(known) - {"none"})
    if unknown:
        raise ValueError(f"PLATFORMS: unknown {unknown}; known: {sorted(known)} or none")
    return [known[name] for name in names if name in known]

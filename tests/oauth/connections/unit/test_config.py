"""oauth settings: real endpoints by default, overrides, TikTok's client key, the redirect allowlist."""

from __future__ import annotations

import pytest
from contentpipe.common.settings import ConfigError
from contentpipe.common.workqueue import QueueSettings
from contentpipe.oauth.config import DEFAULT_LOCAL_REDIRECT_URI, load_config
from contentpipe.oauth.service_layer.connections import RedirectAllowlist

pytestmark = pytest.mark.unit

BASE = {"CONTENTPIPE_JWT_SECRET": "s" * 32}


def test_defaults_are_the_real_endpoints_and_only_credentialed_platforms_are_configured() -> None:
    config = load_config(
        {**BASE, "TWITTER_CLIENT_ID": "id", "TWITTER_CLIENT_SECRET": "secret", "TIKTOK_CLIENT_KEY": "k"}
    )
    assert config.platforms["twitter"].token_url == "https://api.x.com/2/oauth2/token"
    assert config.platforms["twitter"].configured
    assert config.platforms["tiktok"].client_id == "k" and not config.platforms["tiktok"].configured  # no secret
    assert config.platforms["facebook"].token_url == "https://graph.facebook.com/v25.0/oauth/access_token"
    assert config.refresh_margin_seconds == 900
    assert "secret" not in repr(config.platforms["twitter"])


def test_graph_version_and_endpoints_come_from_the_environment() -> None:
    config = load_config({**BASE, "FACEBOOK_API_VERSION": "v30.0", "GOOGLE_TOKEN_URL": "http://127.0.0.1:9/token"})
    assert config.platforms["facebook"].authorize_url == "https://www.facebook.com/v30.0/dialog/oauth"
    assert config.platforms["google"].token_url == "http://127.0.0.1:9/token"
    with pytest.raises(ConfigError, match="GOOGLE_TOKEN_URL"):
        load_config({**BASE, "GOOGLE_TOKEN_URL": "ftp://x"})


def test_token_keys_are_validated_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="OAUTH_TOKEN_KEYS"):
        load_config({**BASE, "OAUTH_TOKEN_KEYS": "k1:short"})


def test_redirect_allowlist_from_website_and_explicit_uris() -> None:
    config = load_config(
        {
            **BASE,
            "CONTENTPIPE_WEBSITE_URL": "https://app.example.com",
            "OAUTH_REDIRECT_URIS": "http://127.0.0.1:8765/cb",
        }
    )
    allow = RedirectAllowlist(config.redirect_uris, config.redirect_prefixes)
    assert allow.allows("https://app.example.com/oauth/callback")
    assert allow.allows("http://127.0.0.1:8765/cb")
    assert not allow.allows("http://127.0.0.1:8765/cb2")
    assert not allow.allows("https://app.example.com.evil.net/cb")
    assert not allow.allows("https://app.example.com/cb#frag")
    assert not allow.allows("javascript:alert(1)")
    assert not allow.allows("http://[not-an-ip]/")
    assert not allow.allows("http://127.0.0.1:99999/cb")
    local = load_config(BASE)
    assert local.redirect_uris == (DEFAULT_LOCAL_REDIRECT_URI,)
    with pytest.raises(ConfigError, match="OAUTH_REDIRECT_URIS"):
        load_config({**BASE, "OAUTH_REDIRECT_URIS": "not a uri"})


async def test_google_long_scope_names_count_as_the_requested_openid_scopes() -> None:
    import httpx
    from contentpipe.oauth.adapters.platforms.google import GoogleAdapter

    config = load_config({**BASE, "GOOGLE_CLIENT_ID": "id", "GOOGLE_CLIENT_SECRET": "s"})
    async with httpx.AsyncClient() as http:
        adapter = GoogleAdapter(config.platforms["google"], http)
        tokens = adapter.token_set(
            {
                "access_token": "a",
                "expires_in": 3599,
                "scope": "https://www.googleapis.com/auth/userinfo.email openid "
                "https://www.googleapis.com/auth/youtube.upload https://www.googleapis.com/auth/userinfo.profile "
                "https://www.googleapis.com/auth/youtube.readonly",
            },
            what="t",
        )
    assert set(tokens.scopes or ()) >= set(adapter.spec.required_scopes)


def test_posting_queue_variables_fill_the_shared_queue_settings() -> None:
    config = load_config(
        {
            **BASE,
            "OAUTH_POSTING_WORKER_ID": "pod-7",
            "OAUTH_POSTING_LEASE": "45s",
            "OAUTH_POSTING_POLL_INTERVAL": "2s",
            "OAUTH_POSTING_CONCURRENCY": "3",
        }
    )
    assert config.posting is not None
    assert config.posting.worker.queue == QueueSettings(
        owner="pod-7", lease_seconds=45.0, poll_interval=2.0, concurrency=3, claim_batch=3
    )

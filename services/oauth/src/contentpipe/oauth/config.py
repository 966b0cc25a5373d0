"""Configuration of the oauth service: CommonSettings plus oauth's own variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from contentpipe.common.settings import (
    CommonSettings,
    ConfigError,
    env_duration,
    env_int,
    env_optional,
    env_str,
    load_common_settings,
)
from contentpipe.oauth.adapters.crypto import parse_token_keys
from contentpipe.oauth.adapters.platforms.settings import PlatformSettings, load_platform_settings
from contentpipe.oauth.adapters.publishers.settings import PostingConfig, load_posting_config

SERVICE = "oauth"

# The `contentpipe connections connect` listener (RFC 8252 loopback redirect); allowed when nothing else is set.
DEFAULT_LOCAL_REDIRECT_URI = "http://127.0.0.1:8765/callback"


def _redirect_allowlist(environ: Mapping[str, str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(exact URIs, prefixes): OAUTH_REDIRECT_URIS entries are exact; CONTENTPIPE_WEBSITE_URL allows its pages."""
    exact: list[str] = []
    for uri in (u.strip() for u in environ.get("OAUTH_REDIRECT_URIS", "").split(",")):
        if not uri:
            continue
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise ConfigError(f"OAUTH_REDIRECT_URIS: expected absolute http(s) URIs without fragment, got {uri!r}")
        exact.append(uri)
    prefixes: list[str] = []
    website = env_optional(environ, "CONTENTPIPE_WEBSITE_URL")
    if website:
        parts = urlsplit(website)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"CONTENTPIPE_WEBSITE_URL: expected an absolute http(s) URL, got {website!r}")
        prefixes.append(f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/")
    if not exact and not prefixes:
        exact.append(DEFAULT_LOCAL_REDIRECT_URI)
    return tuple(exact), tuple(prefixes)


@dataclass(frozen=True, slots=True)
class OauthConfig:
    """Everything the oauth service reads from the environment, validated once at start-up."""

    common: CommonSettings
    # OAUTH_TOKEN_KEYS; None: a key generated once into `token_key_file` (local use only).
    token_keys: str | None = field(default=None, repr=False)
    token_key_file: Path = Path(".contentpipe/oauth-token-keys")
    state_secret: str | None = field(default=None, repr=False)
    redirect_uris: tuple[str, ...] = (DEFAULT_LOCAL_REDIRECT_URI,)
    redirect_prefixes: tuple[str, ...] = ()
    platforms: dict[str, PlatformSettings] = field(default_factory=dict)
    refresh_margin_seconds: float = 900.0
    refresh_interval_seconds: float = 30.0
    refresh_lease_seconds: float = 60.0
    refresh_batch: int = 50
    http_timeout_seconds: float = 15.0
    outbox_dir: Path = Path(".contentpipe/outbox")
    # Posting: OAUTH_POSTING_*, OAUTH_PUBLISH_<PLATFORM>_URL, OAUTH_MEDIA_FILE_ROOTS (publishers/settings.py).
    posting: PostingConfig | None = None
    # The hosted OAuth callback: OAUTH_CALLBACK_URL is the public address platforms redirect to (register it in
    # each developer console); the HTTP listener serves its path on OAUTH_CALLBACK_HOST:OAUTH_CALLBACK_PORT.
    callback_url: str | None = None
    callback_host: str = "127.0.0.1"
    callback_port: int = 0


def load_config(environ: Mapping[str, str]) -> OauthConfig:
    """Build the config from `environ`; raises ConfigError naming the bad variable."""
    common = load_common_settings(SERVICE, environ)
    token_keys = env_optional(environ, "OAUTH_TOKEN_KEYS")
    if token_keys is not None:
        try:
            parse_token_keys(token_keys)
        except ValueError as exc:
            raise ConfigError(f"OAUTH_TOKEN_KEYS: {exc}") from None
    exact, prefixes = _redirect_allowlist(environ)
    callback_url = env_optional(environ, "OAUTH_CALLBACK_URL")
    callback_port = env_int(environ, "OAUTH_CALLBACK_PORT", 8080 if callback_url else 0, minimum=0, maximum=65535)
    if callback_url is not None:
        parts = urlsplit(callback_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(
                f"OAUTH_CALLBACK_URL: expected an absolute http(s) URL without query, got {callback_url!r}"
            )
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError("OAUTH_CALLBACK_URL: platforms redirect only to https (http is for loopback tests)")
        exact = tuple(dict.fromkeys([*exact, callback_url]))  # allowed exactly, like OAUTH_REDIRECT_URIS
    return OauthConfig(
        common=common,
        token_keys=token_keys,
        token_key_file=Path(common.data_dir) / "oauth-token-keys",
        state_secret=env_optional(environ, "OAUTH_STATE_SECRET"),
        redirect_uris=exact,
        redirect_prefixes=prefixes,
        platforms=load_platform_settings(environ),
        refresh_margin_seconds=env_duration(environ, "OAUTH_REFRESH_MARGIN", 900.0),
        refresh_interval_seconds=env_duration(environ, "OAUTH_REFRESH_INTERVAL", 30.0),
        refresh_lease_seconds=env_duration(environ, "OAUTH_REFRESH_LEASE", 60.0),
        refresh_batch=env_int(environ, "OAUTH_REFRESH_BATCH", 50, minimum=1, maximum=1000),
        http_timeout_seconds=env_duration(environ, "OAUTH_HTTP_TIMEOUT", 15.0),
        outbox_dir=Path(env_str(environ, "OAUTH_OUTBOX_DIR", str(Path(common.data_dir) / "outbox"))),
        posting=load_posting_config(environ, Path(common.data_dir), common.grpc_port),
        callback_url=callback_url,
        callback_host=env_str(environ, "OAUTH_CALLBACK_HOST", common.grpc_host),
        callback_port=callback_port,
    )

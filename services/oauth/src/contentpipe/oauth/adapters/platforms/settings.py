"""OAuth platforms' client settings from the environment: credentials and endpoints (the real ones by default).

They live beside the platform adapters that use them; config.py only gathers them into OauthConfig.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from contentpipe.common.settings import ConfigError, env_optional, env_str


@dataclass(frozen=True, slots=True)
class PlatformSettings:
    """One platform's client credentials and endpoints (the real ones by default; tests point them elsewhere)."""

    name: str
    client_id: str | None
    client_secret: str | None = field(repr=False)
    authorize_url: str
    token_url: str
    api_base_url: str
    revoke_url: str = ""
    userinfo_url: str = ""
    api_version: str = ""
    exchange_url: str = ""  # Instagram: graph host for the long-lived exchange and refresh
    scopes: tuple[str, ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.client_id and self.client_secret)


# name → (env prefix, defaults); the defaults are the platforms' documented production endpoints.
_PLATFORM_DEFAULTS: dict[str, dict[str, str]] = {
    "instagram": {
        "authorize_url": "https://www.instagram.com/oauth/authorize",
        "token_url": "https://api.instagram.com/oauth/access_token",
        "exchange_url": "https://graph.instagram.com",
        "api_base_url": "https://graph.instagram.com",
        "api_version": "v21.0",
        "scopes": "instagram_business_basic,instagram_business_content_publish",
    },
    "twitter": {
        "authorize_url": "https://x.com/i/oauth2/authorize",
        "token_url": "https://api.x.com/2/oauth2/token",
        "revoke_url": "https://api.x.com/2/oauth2/revoke",
        "api_base_url": "https://api.x.com",
        "scopes": "tweet.read tweet.write users.read offline.access media.write",
    },
    "linkedin": {
        "authorize_url": "https://www.linkedin.com/oauth/v2/authorization",
        "token_url": "https://www.linkedin.com/oauth/v2/accessToken",
        "revoke_url": "https://www.linkedin.com/oauth/v2/revoke",
        "userinfo_url": "https://api.linkedin.com/v2/userinfo",
        "api_base_url": "https://api.linkedin.com",
        "scopes": "openid profile email w_member_social",
    },
    "tiktok": {
        "authorize_url": "https://www.tiktok.com/v2/auth/authorize/",
        "token_url": "https://open.tiktokapis.com/v2/oauth/token/",
        "revoke_url": "https://open.tiktokapis.com/v2/oauth/revoke/",
        "userinfo_url": "https://open.tiktokapis.com/v2/user/info/",
        "api_base_url": "https://open.tiktokapis.com",
        "scopes": "user.info.basic,user.info.profile,video.publish,video.upload",
    },
    "google": {
        "authorize_url": "https://accounts.google.com/o/oauth2/v2/auth",
        "token_url": "https://oauth2.googleapis.com/token",
        "revoke_url": "https://oauth2.googleapis.com/revoke",
        "userinfo_url": "https://openidconnect.googleapis.com/v1/userinfo",
        "api_base_url": "https://www.googleapis.com",
        # youtube.readonly: channels.list?mine=true (the channel behind the connection) is 403 without it
        "scopes": "openid email profile https://www.googleapis.com/auth/youtube.upload "
        "https://www.googleapis.com/auth/youtube.readonly",
    },
    "facebook": {
        "authorize_url": "https://www.facebook.com/{version}/dialog/oauth",
        "token_url": "https://graph.facebook.com/{version}/oauth/access_token",
        "api_base_url": "https://graph.facebook.com",
        "api_version": "v25.0",
        # business_management: Pages owned through Business Manager are listed only with it
        "scopes": "pages_show_list,pages_manage_posts,pages_read_engagement,business_management",
    },
}
PLATFORM_NAMES = tuple(_PLATFORM_DEFAULTS)


def _one_platform(environ: Mapping[str, str], name: str) -> PlatformSettings:
    prefix = name.upper()
    defaults = _PLATFORM_DEFAULTS[name]
    values = {key: env_str(environ, f"{prefix}_{key.upper()}", default) for key, default in defaults.items()}
    version = values.get("api_version", "")
    for key in ("authorize_url", "token_url"):
        values[key] = values[key].replace("{version}", version)
    # TikTok calls the client id its "client key": TIKTOK_CLIENT_KEY is the one variable for it.
    client_id = env_optional(environ, "TIKTOK_CLIENT_KEY" if name == "tiktok" else f"{prefix}_CLIENT_ID")
    for key, value in values.items():
        if key.endswith("_url") and urlsplit(value).scheme not in ("http", "https"):
            raise ConfigError(f"{prefix}_{key.upper()}: expected an http(s) URL, got {value!r}")
    scopes = tuple(values.pop("scopes").replace(",", " ").split())
    return PlatformSettings(
        name=name,
        client_id=client_id,
        client_secret=env_optional(environ, f"{prefix}_CLIENT_SECRET"),
        scopes=scopes,
        **values,
    )


def load_platform_settings(environ: Mapping[str, str]) -> dict[str, PlatformSettings]:
    """`<PLATFORM>_CLIENT_ID`/`_CLIENT_SECRET` (TikTok: `TIKTOK_CLIENT_KEY`) and `<PLATFORM>_<ENDPOINT>` overrides."""
    return {name: _one_platform(environ, name) for name in PLATFORM_NAMES}

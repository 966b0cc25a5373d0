"""One OAuth adapter per platform, all behind `PlatformClient` (service_layer.connections_ports)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import httpx
from contentpipe.oauth.adapters.platforms.base import PlatformAdapter, now_utc
from contentpipe.oauth.adapters.platforms.facebook import FacebookAdapter
from contentpipe.oauth.adapters.platforms.google import GoogleAdapter
from contentpipe.oauth.adapters.platforms.instagram import InstagramAdapter
from contentpipe.oauth.adapters.platforms.linkedin import LinkedInAdapter
from contentpipe.oauth.adapters.platforms.settings import PlatformSettings
from contentpipe.oauth.adapters.platforms.tiktok import TikTokAdapter
from contentpipe.oauth.adapters.platforms.twitter import TwitterAdapter
from contentpipe.oauth.domain.connections import Platform
from contentpipe.oauth.service_layer.connections_ports import PlatformClient

ADAPTERS: dict[Platform, type[PlatformAdapter]] = {
    Platform.INSTAGRAM: InstagramAdapter,
    Platform.TWITTER: TwitterAdapter,
    Platform.LINKEDIN: LinkedInAdapter,
    Platform.TIKTOK: TikTokAdapter,
    Platform.GOOGLE: GoogleAdapter,
    Platform.FACEBOOK: FacebookAdapter,
}


def build_platform_clients(
    settings: dict[str, PlatformSettings],
    http: httpx.AsyncClient,
    *,
    clock: Callable[[], datetime] = now_utc,
) -> dict[Platform, PlatformClient]:
    """Adapters for the platforms this deployment has client credentials for."""
    clients: dict[Platform, PlatformClient] = {}
    for platform, adapter in ADAPTERS.items():
        platform_settings = settings.get(platform.value)
        if platform_settings is not None and platform_settings.configured:
            clients[platform] = adapter(platform_settings, http, clock=clock)  # type: ignore[assignment]
    return clients

"""oauth metrics (OpenTelemetry): posts finished by platform and state, token refresh outcomes by platform."""

from __future__ import annotations

import functools
from typing import Any

from contentpipe.common.telemetry import get_meter


class OAuthMetrics:
    """Instruments created once; the posting worker and the connections service report terminal events."""

    def __init__(self, meter: Any = None) -> None:
        meter = meter if meter is not None else get_meter("contentpipe.oauth")
        self._posts = meter.create_counter(
            "contentpipe.oauth.posts.finished",
            description="Posts that reached PUBLISHED, FAILED, CANCELED or UNCONFIRMED, by platform and state",
        )
        self._refreshes = meter.create_counter(
            "contentpipe.oauth.token.refreshes",
            description="Token refresh attempts at the platform, by platform and result (success, error, needs_reauth)",
        )

    def post_finished(self, platform: str, state: str) -> None:
        self._posts.add(1, {"platform": platform, "state": state})

    def token_refresh(self, platform: str, result: str, reason: str = "") -> None:
        attributes = {"platform": platform, "result": result}
        if reason:
            attributes["reason"] = reason
        self._refreshes.add(1, attributes)


@functools.cache
def default_metrics() -> OAuthMetrics:
    return OAuthMetrics()

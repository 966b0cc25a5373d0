"""oauth metrics (OpenTelemetry): posts finished by platform and state, token refresh outcomes by platform, posting
queue depth and oldest age (observable gauges over a sample the process refreshes periodically), media conformance
results and conversion time."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from contentpipe.common.telemetry import get_meter

_log = logging.getLogger(__name__)


class QueueStats(Protocol):
    async def queue_stats(self) -> tuple[int, datetime | None]: ...


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
        self._conversions = meter.create_counter(
            "contentpipe.oauth.media.conformance",
            description="Media items checked before publishing, by platform, kind and result (conforms, converted, "
            "reused, impossible, conversion_failed, conversion_timeout, ...)",
        )
        self._conversion_seconds = meter.create_histogram(
            "contentpipe.oauth.media.conversion.duration",
            unit="s",
            description="Time to render and check one rendition, by platform and kind",
        )
        self._queued = 0
        self._oldest_age = 0.0
        meter.create_observable_gauge(
            "contentpipe.oauth.posts.queued",
            callbacks=[self._observe_queued],
            description="Posts waiting in QUEUED (last sample)",
        )
        meter.create_observable_gauge(
            "contentpipe.oauth.posts.queued.oldest_age",
            callbacks=[self._observe_oldest_age],
            unit="s",
            description="Age of the oldest QUEUED post (0 when none is waiting; last sample)",
        )

    def _observe_queued(self, _options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        return [Observation(self._queued)]

    def _observe_oldest_age(self, _options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        return [Observation(self._oldest_age)]

    def queue_sample(self, depth: int, oldest: datetime | None, now: datetime) -> None:
        self._queued = depth
        self._oldest_age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0

    def post_finished(self, platform: str, state: str) -> None:
        self._posts.add(1, {"platform": platform, "state": state})

    def media_checked(self, platform: str, kind: str, result: str) -> None:
        self._conversions.add(1, {"platform": platform, "kind": kind, "result": result})

    def media_converted(self, platform: str, kind: str, seconds: float) -> None:
        self._conversion_seconds.record(seconds, {"platform": platform, "kind": kind})

    def token_refresh(self, platform: str, result: str, reason: str = "") -> None:
        attributes = {"platform": platform, "result": result}
        if reason:
            attributes["reason"] = reason
        self._refreshes.add(1, attributes)


async def sample_queue_forever(source: QueueStats, metrics: OAuthMetrics, interval_seconds: float = 15.0) -> None:
    """One cheap aggregate query per interval (not per claim) feeds the queue gauges."""
    while True:
        try:
            depth, oldest = await source.queue_stats()
            metrics.queue_sample(depth, oldest, datetime.now(UTC))
        except Exception:
            _log.warning("sampling the posting queue failed", exc_info=True)
        await asyncio.sleep(interval_seconds)


@functools.cache
def default_metrics() -> OAuthMetrics:
    return OAuthMetrics()

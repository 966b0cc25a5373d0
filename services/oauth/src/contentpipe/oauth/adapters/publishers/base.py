"""What every platform publisher shares: the HTTP client, settings, media access and the processing poll loop."""

from __future__ import annotations

import time
from typing import Any

import httpx
from contentpipe.oauth.adapters.publishers.calls import PlatformCaller
from contentpipe.oauth.adapters.publishers.media import MediaFetcher
from contentpipe.oauth.adapters.publishers.settings import PublisherSettings
from contentpipe.oauth.domain.posts import Platform, normalize_text
from contentpipe.oauth.service_layer.posting_ports import (
    OutcomeUnknown,
    PublishContext,
    Reconciliation,
    RetryableFailure,
    Verdict,
)


class PublisherBase:
    platform: Platform

    def __init__(self, http: httpx.AsyncClient, settings: PublisherSettings, media: MediaFetcher) -> None:
        self.http = http
        self.settings = settings
        self.media = media

    def caller(self, ctx: PublishContext, *, account: str | None = None, **kwargs: Any) -> PlatformCaller:
        return PlatformCaller(
            self.http,
            ctx,
            self.platform,
            account=account or ctx.post.account_id,
            policy=self.settings.limits,
            **kwargs,
        )

    def deadline(self) -> float:
        return time.monotonic() + self.settings.processing_timeout

    def check_deadline(self, deadline: float, what: str, *, after_create: bool = False) -> None:
        if time.monotonic() > deadline:
            message = f"{what} still processing after {self.settings.processing_timeout:g} s"
            if after_create:
                raise OutcomeUnknown("STILL_PROCESSING", message)
            raise RetryableFailure("PROCESSING_TIMEOUT", message)

    def absent_or_unknown(self, ctx: PublishContext, found: bool) -> Reconciliation:
        """After listing recent posts without a match: proven absent only once the create call must be over."""
        if found:
            raise AssertionError("caller handles matches")
        if not normalize_text(ctx.post.text):
            return Reconciliation(Verdict.UNKNOWN, reason="NO_FINGERPRINT")
        sent = ctx.post.create_sent_time
        age = (ctx.now() - sent).total_seconds() if sent else self.settings.reconcile_grace
        if age >= self.settings.reconcile_grace:
            return Reconciliation(Verdict.NOT_PUBLISHED, reason="NOT_IN_RECENT_POSTS")
        return Reconciliation(
            Verdict.UNKNOWN, reason="RECONCILE_TOO_EARLY", retry_after=self.settings.reconcile_grace - age + 0.5
        )


def matches(post_text: str, candidate: object) -> bool:
    wanted = normalize_text(post_text)
    return bool(wanted) and isinstance(candidate, str) and normalize_text(candidate) == wanted

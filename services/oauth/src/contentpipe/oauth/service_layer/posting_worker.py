"""The posting queue's worker: leases due posts, publishes each through its platform's publisher, never twice.

Per post: rate-limit blocks and daily caps are checked first (a blocked account's post is deferred, state QUEUED with
`next_attempt_time`, and other accounts keep flowing); then the publisher runs with a journal that commits the
in-flight mark before the irreversible create call and the platform's id the moment it returns. A post whose create
was sent is only ever reconciled with the platform afterwards (PUBLISHED, safely re-queued, or UNCONFIRMED).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from contentpipe.common.error_class import ErrorClass
from contentpipe.common.errors import ContentpipeError, NotFound
from contentpipe.common.telemetry import extract_context, get_tracer, optional_span
from contentpipe.common.workqueue import LEASE_RETURNED, Handled, LeasedWorker, QueueSettings, WakeSignal
from contentpipe.oauth.domain.posts import Platform, Post, PostError, PostState, utcnow
from contentpipe.oauth.service_layer.metrics import OAuthMetrics, default_metrics
from contentpipe.oauth.service_layer.posting_ports import (
    Credentials,
    LeaseLost,
    MediaConformer,
    OutcomeUnknown,
    PostRepository,
    PublishContext,
    Publisher,
    PublishFailure,
    RateLimitedFailure,
    RateLimitStore,
    ReauthFailure,
    Reconciliation,
    RejectedFailure,
    RetryableFailure,
    Verdict,
    account_limit_key,
    app_limit_key,
    credentials_view,
)
from contentpipe.oauth.service_layer.tokens import TokenProvider

_log = logging.getLogger(__name__)
_tracer = get_tracer(__name__)


@dataclass(frozen=True, slots=True)
class PostingWorkerSettings:
    # The lease owner, lease, poll interval, posts in flight on this replica, claim batch.
    queue: QueueSettings
    max_attempts: int = 5
    backoff_base_seconds: float = 5.0
    backoff_max_seconds: float = 600.0
    reconcile_delay_seconds: float = 5.0
    max_reconcile_attempts: int = 10
    daily_caps: Mapping[Platform, int] = field(default_factory=dict)


class _Journal:
    """PublishJournal backed by the repository; every note is a fenced, committed save."""

    def __init__(self, worker: PostingWorker, post: Post) -> None:
        self._worker = worker
        self._post = post

    async def checkpoint(self, **progress: Any) -> None:
        self._post.progress.update(progress)
        await self._worker.save(self._post)

    async def arm(self) -> None:
        self._post.arm_create(self._worker.clock())
        await self._worker.save(self._post)

    async def disarm(self) -> None:
        # Only called when the platform answered the create call with a definite refusal: nothing was created.
        self._post.create_sent_time = None
        await self._worker.save(self._post)

    async def created(self, platform_post_id: str, permalink: str = "") -> None:
        self._post.record_platform_id(platform_post_id, permalink, self._worker.clock())
        await self._worker.save(self._post)


class PostingWorker:
    def __init__(
        self,
        repository: PostRepository,
        tokens: TokenProvider,
        publishers: Mapping[Platform, Publisher],
        limits: RateLimitStore,
        settings: PostingWorkerSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
        metrics: OAuthMetrics | None = None,
        conformer: MediaConformer | None = None,
        wake: WakeSignal | None = None,
    ) -> None:
        self._repository = repository
        self._conformer = conformer
        self.metrics = metrics if metrics is not None else default_metrics()
        self._tokens = tokens
        self._publishers = publishers
        self._limits = limits
        self.settings = settings
        self.clock = clock
        self._lease_returned: set[str] = set()  # posts being handled whose last save gave the lease back
        # Claims, lease renewal, wake-ups and release: the common work-queue runtime; this class is the handler.
        self.queue: LeasedWorker[Post] = LeasedWorker(
            "posting",
            repository,
            self._run_one,
            settings.queue,
            key=lambda post: post.id,
            wake=wake,
        )

    def wake(self) -> None:
        """A post became due: claim now rather than at the next poll (and tell the other replicas)."""
        self.queue.wake.set()

    @property
    def in_flight(self) -> int:
        return self.queue.in_flight

    async def run(self) -> None:
        """Claim and dispatch until cancelled; on cancellation stop the tasks and give back their leases."""
        await self.queue.run()

    async def run_once(self) -> int:
        """Claim what is due now and process it to the end (tests, `process-pending`)."""
        queue = self.settings.queue
        claimed = await self._repository.claim(queue.owner, queue.claim_batch, queue.lease_seconds)
        await asyncio.gather(*(self._run_one(post) for post in claimed))
        return len(claimed)

    async def save(self, post: Post, *, release: bool = False) -> None:
        if not await self._repository.save(post, self.settings.queue.owner, release=release):
            raise LeaseLost(post.id)
        if release:
            self._lease_returned.add(post.id)
        if release and (post.state.terminal or post.state is PostState.UNCONFIRMED):
            self.metrics.post_finished(post.platform.value, post.state.value)

    async def _run_one(self, post: Post) -> Handled | None:
        try:
            # Parented by the call that created the post: the platform's HTTP calls land in the caller's trace.
            with optional_span(
                _tracer,
                "oauth.post.publish",
                context=extract_context(post.trace_context) if post.trace_context else None,
                attributes={"contentpipe.post": post.name, "contentpipe.platform": post.platform.value},
            ):
                await self.process(post)
            if post.id in self._lease_returned:
                return LEASE_RETURNED  # every way out of `process` ends with a save that gives the lease back
        except LeaseLost:
            _log.warning("lease on post lost; another worker has it", extra={"post_id": post.id})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.exception("posting crashed", extra={"post_id": post.id})
            with contextlib.suppress(Exception):
                await self._after_bug(post, exc)
        finally:
            self._lease_returned.discard(post.id)
        return None

    # ------------------------------------------------------------------ one post

    async def process(self, post: Post) -> None:
        """Publish (or reconcile) a post as its claim left it: the claim started the attempt (Post.start_attempt)."""
        now = self.clock()
        publisher = self._publishers.get(post.platform)
        if publisher is None:
            post.fail(
                PostError(
                    ErrorClass.REJECTED_BY_PLATFORM,
                    "PLATFORM_NOT_CONFIGURED",
                    f"publishing to {post.platform.value} is not configured",
                    now,
                )
            )
            await self.save(post, release=True)
            return
        if post.create_sent_time is not None or post.platform_post_id:
            await self._reconcile(post, publisher)
            return
        # A platform that never reports limits (the outbox) has no blocks to look up: one query fewer per post.
        if await self._deferred_by_limits(post, blocks=getattr(publisher, "reports_rate_limits", True)):
            return
        credentials = await self._credentials(post)
        if credentials is None:
            return
        ctx = self._context(post, credentials)
        originals = post.media
        try:
            if self._conformer is not None and post.media:
                # The publisher sees renditions the platform accepts. Only in memory: saves never write `media`,
                # so the stored post keeps the user's originals (and a retry conforms again, reusing renditions).
                post.media = await self._conformer.conform(post)
            result = await publisher.publish(ctx)
        except PublishFailure as failure:
            post.media = originals
            await self._on_failure(post, publisher, failure)
            return
        finally:
            post.media = originals
        post.mark_published(result.platform_post_id, result.permalink, self.clock())
        post.last_error = None
        await self.save(post, release=True)
        _log.info("post published", extra={"post_id": post.id, "platform": post.platform.value})

    def _context(self, post: Post, credentials: Credentials) -> PublishContext:
        owner, connection_id = post.owner, post.connection_id

        async def refresh() -> Credentials:
            try:
                fresh = await self._tokens.force_refresh(owner, connection_id)
                if fresh is None or not getattr(fresh, "access_token", None):
                    fresh = await self._tokens.fresh_credentials(owner, connection_id)
            except ContentpipeError as exc:
                raise _token_failure(exc) from None
            return credentials_view(fresh)

        async def report_limit(key: str, until: datetime, reason: str) -> None:
            await self._limits.block(key, until, reason)

        return PublishContext(post, credentials, _Journal(self, post), refresh, report_limit, self.clock)

    async def _credentials(self, post: Post) -> Credentials | None:
        try:
            raw = await self._tokens.fresh_credentials(post.owner, post.connection_id)
        except ContentpipeError as exc:
            await self._on_failure(post, None, _token_failure(exc))
            return None
        return credentials_view(raw)

    async def _deferred_by_limits(self, post: Post, *, blocks: bool) -> bool:
        """Defer the post while its app or account is blocked (when the platform reports limits) or capped."""
        now = self.clock()
        keys = [app_limit_key(post.platform), account_limit_key(post.platform, post.account_id)]
        blocked = await self._limits.blocked(keys, now) if blocks else None
        if blocked is not None:
            key, until, reason = blocked
            self._defer(
                post,
                until,
                PostError(
                    ErrorClass.RATE_LIMITED,
                    "RATE_LIMITED",
                    f"{reason or 'rate limit'} ({key}) until {until.isoformat()}",
                    now,
                ),
            )
            await self.save(post, release=True)
            return True
        return await self._capped(post)

    async def _capped(self, post: Post) -> bool:
        """Defer the post when its account reached the platform's configured daily cap."""
        now = self.clock()
        cap = self.settings.daily_caps.get(post.platform, 0)
        if cap > 0:
            count, oldest = await self._repository.count_recent(
                post.platform, post.account_id, now - timedelta(hours=24), post.id
            )
            if count >= cap:
                until = (oldest or now) + timedelta(hours=24)
                self._defer(
                    post,
                    until,
                    PostError(
                        ErrorClass.RATE_LIMITED,
                        "DAILY_CAP_REACHED",
                        f"{count} posts in 24 h reach the {post.platform.value} daily cap of {cap}",
                        now,
                    ),
                )
                await self.save(post, release=True)
                return True
        return False

    def _defer(self, post: Post, until: datetime, error: PostError) -> None:
        post.defer(until, error, self.clock())
        if error.error_class is ErrorClass.RATE_LIMITED and post.attempts > 0:
            post.attempts -= 1  # waiting for a reset is not a failed attempt

    async def _on_failure(self, post: Post, publisher: Publisher | None, failure: PublishFailure) -> None:
        now = self.clock()
        if isinstance(failure, RateLimitedFailure):
            await self._limits.block(failure.scope_key, failure.until, failure.reason)
        if post.platform_post_id and post.state is PostState.PUBLISHING:
            # The platform returned its id before something later (a permalink lookup, a status) failed: it is live.
            post.mark_published(post.platform_post_id, post.permalink, now)
            await self.save(post, release=True)
            return
        proven_unpublished = isinstance(failure, RejectedFailure) and failure.unpublished
        if post.create_sent_time is not None and not proven_unpublished:
            # The create call left and nobody proved it failed: ask the platform, never just send it again.
            if isinstance(failure, ReauthFailure):
                with contextlib.suppress(Exception):
                    await self._tokens.mark_needs_reauth(post.owner, post.connection_id, failure.reason)
            retryable = not isinstance(failure, RejectedFailure | ReauthFailure)
            await self._unconfirmed(post, publisher if retryable else None, failure.reason, failure.message)
            return
        if isinstance(failure, RateLimitedFailure):
            post.create_sent_time = None
            self._defer(
                post, max(failure.until, now), PostError(ErrorClass.RATE_LIMITED, failure.reason, failure.message, now)
            )
        elif isinstance(failure, ReauthFailure):
            with contextlib.suppress(Exception):
                await self._tokens.mark_needs_reauth(post.owner, post.connection_id, failure.reason)
            post.fail(
                PostError(
                    ErrorClass.NEEDS_REAUTH,
                    "CONNECTION_NEEDS_REAUTH",
                    f"{post.connection} must be authorized again: {failure.message}",
                    now,
                )
            )
        elif isinstance(failure, RejectedFailure):
            post.fail(PostError(ErrorClass.REJECTED_BY_PLATFORM, failure.reason, failure.message, now))
        else:
            retry_after = failure.retry_after if isinstance(failure, RetryableFailure) else None
            self._retry_or_fail(post, failure.reason, failure.message, retry_after)
        await self.save(post, release=True)

    def _retry_or_fail(self, post: Post, reason: str, message: str, retry_after: float | None) -> None:
        now = self.clock()
        error = PostError(ErrorClass.RETRYABLE, reason, message, now)
        if post.attempts >= self.settings.max_attempts:
            post.fail(
                PostError(ErrorClass.RETRYABLE, reason, f"gave up after {post.attempts} attempts: {message}", now)
            )
            return
        s = self.settings
        delay = random.uniform(
            s.backoff_base_seconds / 2,
            min(s.backoff_max_seconds, s.backoff_base_seconds * 2 ** max(0, post.attempts - 1)),
        )
        post.defer(now + timedelta(seconds=max(delay, retry_after or 0.0)), error, now)

    async def _unconfirmed(self, post: Post, publisher: Publisher | None, reason: str, message: str) -> None:
        now = self.clock()
        can_ask = publisher is not None and post.reconcile_attempts < self.settings.max_reconcile_attempts
        retry_at = now + timedelta(seconds=self.settings.reconcile_delay_seconds) if can_ask else None
        post.mark_unconfirmed(
            PostError(
                ErrorClass.RETRYABLE,
                reason or "OUTCOME_UNKNOWN",
                f"the create call's outcome is unknown: {message}",
                now,
            ),
            retry_at,
        )
        await self.save(post, release=True)
        _log.warning("post unconfirmed", extra={"post_id": post.id, "reason": reason})

    async def _reconcile(self, post: Post, publisher: Publisher) -> None:
        try:
            credentials = credentials_view(await self._tokens.fresh_credentials(post.owner, post.connection_id))
        except ContentpipeError as exc:
            # It may be live already: without a token nobody can ask the platform, so a person decides
            # (or, for a transient token error, the worker asks again later). Never FAILED, never re-sent.
            failure = _token_failure(exc)
            await self._unconfirmed(
                post, publisher if isinstance(failure, RetryableFailure) else None, failure.reason, failure.message
            )
            return
        try:
            result = await publisher.reconcile(self._context(post, credentials))
        except PublishFailure as failure:
            if isinstance(failure, RateLimitedFailure):
                await self._limits.block(failure.scope_key, failure.until, failure.reason)
            result = Reconciliation(
                Verdict.UNKNOWN, reason=failure.reason, retry_after=self.settings.reconcile_delay_seconds
            )
        await self._apply(post, result)

    async def _apply(self, post: Post, result: Reconciliation) -> None:
        now = self.clock()
        if result.verdict is Verdict.PUBLISHED and result.published is not None:
            post.mark_published(result.published.platform_post_id, result.published.permalink, now)
            await self.save(post, release=True)
            _log.info("post reconciled: published", extra={"post_id": post.id})
            return
        if result.verdict is Verdict.NOT_PUBLISHED:
            post.requeue_not_published(now, keep_progress=result.keep_progress)
            await self.save(post, release=True)
            _log.info("post reconciled: not published, queued again", extra={"post_id": post.id})
            self.wake()
            return
        if result.verdict is Verdict.PENDING:
            post.next_attempt_time = now + timedelta(
                seconds=result.retry_after or self.settings.reconcile_delay_seconds
            )
            post.update_time = now
            await self.save(post, release=True)
            return
        if result.retry_after is None or post.reconcile_attempts + 1 >= self.settings.max_reconcile_attempts:
            retry_at = None
        else:
            retry_at = now + timedelta(seconds=result.retry_after)
        post.mark_unconfirmed(
            PostError(
                ErrorClass.RETRYABLE,
                result.reason or "OUTCOME_UNKNOWN",
                "the platform cannot tell yet whether the post went out; "
                + ("asking again later" if retry_at else "resolve it by hand (ResolvePost)"),
                now,
            ),
            retry_at,
        )
        await self.save(post, release=True)

    async def _after_bug(self, post: Post, exc: Exception) -> None:
        current = await self._repository.get(post.id)
        if current is None or current.state.terminal or current.state is PostState.UNCONFIRMED:
            return
        if post.create_sent_time is not None:
            await self._unconfirmed(post, None, "INTERNAL", f"internal error ({type(exc).__name__})")
            return
        if post.state is PostState.PUBLISHING:
            self._retry_or_fail(post, "INTERNAL", f"internal error ({type(exc).__name__})", None)
            await self.save(post, release=True)


def _token_failure(exc: ContentpipeError) -> PublishFailure:
    """Map the token provider's errors: a dead grant is NEEDS_REAUTH, a missing connection a refusal."""
    name = type(exc).__name__
    if (
        name in ("FailedPrecondition", "PermissionDenied", "Unauthenticated")
        or "REAUTH" in exc.reason
        or ("INVALID_GRANT" in exc.reason or "REVOKED" in exc.reason)
    ):
        return ReauthFailure(exc.reason, exc.message)
    if isinstance(exc, NotFound):
        return RejectedFailure("CONNECTION_NOT_FOUND", exc.message)
    return RetryableFailure("TOKEN_UNAVAILABLE", exc.message, getattr(exc, "retry_after", None))


__all__ = ["OutcomeUnknown", "PostingWorker", "PostingWorkerSettings", "Sequence"]

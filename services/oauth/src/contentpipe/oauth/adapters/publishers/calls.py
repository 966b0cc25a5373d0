"""One HTTP call to a platform, with the rules every publisher shares.

- A 401 (or Graph error 190) refreshes the token once and repeats the request once.
- Rate-limit headers are read on every answer (`x-rate-limit-*` on X, `X-App-Usage` / `X-Business-Use-Case-Usage`
  on Meta, `Retry-After`) and reported as blocks per app or per account; a 429 raises RateLimitedFailure.
- Calls before the create call are retried (bounded, jittered) on transport errors and 5xx.
- The create call is sent exactly once: a timeout, reset or 5xx after it left is OutcomeUnknown; a connect error
  (nothing left) or a definite 4xx answer disarms the in-flight mark, since nothing was created.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from contentpipe.common.http import backoff_delay, parse_retry_after
from contentpipe.oauth.adapters.publishers.refusals import operator_refusal
from contentpipe.oauth.domain.posts import Platform
from contentpipe.oauth.service_layer.posting_ports import (
    OutcomeUnknown,
    PublishContext,
    RateLimitedFailure,
    ReauthFailure,
    RejectedFailure,
    RetryableFailure,
    account_limit_key,
    app_limit_key,
)

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
META_RATE_CODES = {4, 17, 32, 613, *range(80001, 80010), 80014}
META_APP_CODES = {4}
_UPPER = re.compile(r"[^A-Z0-9]+")


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """How long to wait when a platform says "too many" without saying until when."""

    default_block_seconds: float = 900.0
    meta_usage_threshold: float = 90.0
    inline_wait_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class Block:
    key: str
    until: datetime
    reason: str


def upper_snake(value: object) -> str:
    return _UPPER.sub("_", str(value).upper()).strip("_")[:80] or "PLATFORM_ERROR"


def error_details(response: httpx.Response) -> tuple[str, str, dict[str, Any]]:
    """(reason, message, body) of an error answer, whatever the platform's error shape."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    reason, message = "", ""
    err = body.get("error")
    if isinstance(err, dict):  # Meta / Google / TikTok
        errors = err.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            reason = str(errors[0].get("reason", ""))
        reason = reason or str(err.get("error_subcode") or err.get("code") or err.get("type") or "")
        message = str(err.get("message") or err.get("error_user_msg") or "")
    elif isinstance(err, str):
        reason, message = err, str(body.get("error_description", ""))
    if not message:
        message = str(body.get("detail") or body.get("message") or body.get("title") or "")
    if not reason:
        kind = str(body.get("type", ""))
        reason = kind.rsplit("/", 1)[-1] if kind.startswith("http") else str(body.get("serviceErrorCode", "") or "")
    if isinstance(body.get("errors"), list) and body["errors"] and not message:
        first = body["errors"][0]
        if isinstance(first, dict):
            message = str(first.get("message", ""))
            reason = reason or str(first.get("code", ""))
    return upper_snake(reason or f"HTTP_{response.status_code}"), (message or response.reason_phrase)[:500], body


def _epoch(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if number <= 0:
        return None
    if number < 1e9:  # some send seconds-until-reset
        return None
    return datetime.fromtimestamp(number, tz=ZoneInfo("UTC"))


def _json_header(response: httpx.Response, name: str) -> Any:
    raw = response.headers.get(name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def observed_blocks(
    platform: Platform, account: str, response: httpx.Response, now: datetime, policy: LimitPolicy
) -> list[Block]:
    """Blocks the answer's rate-limit headers call for (also on success: stop before the platform says 429)."""
    blocks: list[Block] = []
    account_key = account_limit_key(platform, account)
    if platform is Platform.TWITTER:
        remaining = response.headers.get("x-rate-limit-remaining")
        reset = _epoch(response.headers.get("x-rate-limit-reset"))
        if remaining is not None and remaining.strip().isdigit() and int(remaining) <= 0:
            blocks.append(
                Block(
                    account_key,
                    reset or now + timedelta(seconds=policy.default_block_seconds),
                    "x-rate-limit-remaining is 0",
                )
            )
    elif platform in (Platform.FACEBOOK, Platform.INSTAGRAM):
        usage = _json_header(response, "x-app-usage")
        if isinstance(usage, dict):
            peak = max((float(v) for v in usage.values() if isinstance(v, int | float)), default=0.0)
            if peak >= policy.meta_usage_threshold:
                blocks.append(
                    Block(
                        app_limit_key(platform),
                        now + timedelta(seconds=policy.default_block_seconds),
                        f"X-App-Usage at {peak:g}%",
                    )
                )
        buc = _json_header(response, "x-business-use-case-usage")
        if isinstance(buc, dict):
            for entries in buc.values():
                for entry in entries if isinstance(entries, list) else []:
                    if not isinstance(entry, dict):
                        continue
                    minutes = float(entry.get("estimated_time_to_regain_access") or 0)
                    peak = max(float(entry.get(k) or 0) for k in ("call_count", "total_cputime", "total_time"))
                    if minutes > 0:
                        blocks.append(
                            Block(
                                account_key,
                                now + timedelta(minutes=minutes),
                                "X-Business-Use-Case-Usage: access regained later",
                            )
                        )
                    elif peak >= policy.meta_usage_threshold:
                        blocks.append(
                            Block(
                                account_key,
                                now + timedelta(seconds=policy.default_block_seconds),
                                f"X-Business-Use-Case-Usage at {peak:g}%",
                            )
                        )
    return blocks


def _next_pacific_midnight(now: datetime) -> datetime:
    pacific = now.astimezone(ZoneInfo("America/Los_Angeles"))
    tomorrow = (pacific + timedelta(days=1)).replace(hour=0, minute=0, second=5, microsecond=0)
    return tomorrow.astimezone(ZoneInfo("UTC"))


def limit_refusal(
    platform: Platform, account: str, response: httpx.Response, now: datetime, policy: LimitPolicy
) -> Block | None:
    """The block an error answer stands for, when it is a rate limit or quota (None: some other error)."""
    status = response.status_code
    reason, _message, body = error_details(response) if status >= 400 else ("", "", {})
    account_key = account_limit_key(platform, account)
    hinted = parse_retry_after(response.headers.get("retry-after"))
    fallback = now + timedelta(seconds=hinted if hinted is not None else policy.default_block_seconds)
    if platform is Platform.TWITTER and status == 429:
        reset = _epoch(response.headers.get("x-rate-limit-reset"))
        return Block(account_key, reset or fallback, "X rate limit (429)")
    if platform in (Platform.FACEBOOK, Platform.INSTAGRAM):
        err: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
        code = int(err.get("code") or 0) if str(err.get("code") or "0").isdigit() else 0
        if status == 429 or code in META_RATE_CODES:
            regained = [b.until for b in observed_blocks(platform, account, response, now, policy)]
            until = max(regained, default=fallback)
            key = app_limit_key(platform) if code in META_APP_CODES else account_key
            return Block(key, until, f"Meta rate limit (code {code or status})")
        return None
    if (
        platform is Platform.GOOGLE
        and status in (403, 429)
        and reason in ("QUOTAEXCEEDED", "RATELIMITEXCEEDED", "UPLOADLIMITEXCEEDED", "USERRATELIMITEXCEEDED")
    ):
        if reason == "QUOTAEXCEEDED":  # the project's daily quota: resets at midnight Pacific
            return Block(app_limit_key(platform), _next_pacific_midnight(now), "YouTube quota exceeded")
        return Block(account_key, fallback, f"YouTube {reason.lower()}")
    if platform is Platform.TIKTOK and (status == 429 or "RATE_LIMIT" in reason or reason.startswith("SPAM_RISK")):
        reset = _epoch(response.headers.get("x-ratelimit-reset"))
        return Block(account_key, reset or fallback, f"TikTok {reason.lower() or 'rate limit'}")
    if status == 429:
        return Block(account_key, fallback, f"{platform.value} rate limit (429)")
    return None


def _is_auth_error(platform: Platform, response: httpx.Response) -> bool:
    if response.status_code == 401:
        return True
    if platform in (Platform.FACEBOOK, Platform.INSTAGRAM) and response.status_code in (400, 403):
        _reason, _message, body = error_details(response)
        err: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
        return str(err.get("code")) == "190"
    return False


class PlatformCaller:
    """Sends one publish's requests with its context's token; `token_param` puts it in the query (Graph API)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        ctx: PublishContext,
        platform: Platform,
        *,
        account: str,
        policy: LimitPolicy,
        token_param: str | None = None,
        token: Callable[[PublishContext], str] | None = None,
        max_attempts: int = 4,
        base_delay: float = 0.5,
    ) -> None:
        self.http = http
        self.ctx = ctx
        self.platform = platform
        self.account = account
        self.policy = policy
        self._token_param = token_param
        self._token = token or (lambda c: c.credentials.access_token)
        self._max_attempts = max_attempts
        self._base_delay = base_delay

    def _auth(self, kwargs: dict[str, Any], authorize: bool) -> dict[str, Any]:
        out = dict(kwargs)
        if not authorize:
            return out
        token = self._token(self.ctx)
        if self._token_param:
            params = dict(out.get("params") or {})
            params[self._token_param] = token
            out["params"] = params
        else:
            headers = dict(out.get("headers") or {})
            headers["Authorization"] = f"Bearer {token}"
            out["headers"] = headers
        return out

    async def _report(self, response: httpx.Response) -> None:
        for block in observed_blocks(self.platform, self.account, response, self.ctx.now(), self.policy):
            await self.ctx.report_limit(block.key, block.until, block.reason)

    async def send(  # noqa: PLR0915  # one decision table: reads better whole
        self,
        method: str,
        url: str,
        *,
        create: bool = False,
        authorize: bool = True,
        accept: Collection[int] = (),
        retry: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """The answer when it is a success (2xx/3xx or in `accept`); otherwise the matching PublishFailure."""
        refreshed = False
        attempt = 0
        label = "create call" if create else f"{method} request"
        while True:
            attempt += 1
            may_retry = retry and not create and attempt < self._max_attempts
            try:
                response = await self.http.request(method, url, **self._auth(kwargs, authorize))
            except _NOT_SENT as exc:
                if may_retry:
                    await asyncio.sleep(backoff_delay(attempt - 1, base=self._base_delay))
                    continue
                if create:
                    await self.ctx.journal.disarm()
                raise RetryableFailure(
                    "PLATFORM_UNREACHABLE", f"{self.platform.value} unreachable ({type(exc).__name__})"
                ) from None
            except httpx.TransportError as exc:
                if create:
                    raise OutcomeUnknown(
                        "CREATE_OUTCOME_UNKNOWN",
                        f"{label} to {self.platform.value} failed after it was sent ({type(exc).__name__})",
                    ) from None
                if may_retry:
                    await asyncio.sleep(backoff_delay(attempt - 1, base=self._base_delay))
                    continue
                raise RetryableFailure(
                    "PLATFORM_TRANSPORT_ERROR", f"{self.platform.value}: {type(exc).__name__}"
                ) from None
            await self._report(response)
            status = response.status_code
            if status < 400 or status in accept:
                return response
            if _is_auth_error(self.platform, response):
                if not refreshed:
                    refreshed = True
                    try:
                        self.ctx.credentials = await self.ctx.refresh()
                    except Exception:
                        if create:  # the 401 proves the create did not happen
                            await self.ctx.journal.disarm()
                        raise
                    attempt -= 1
                    continue
                if create:
                    await self.ctx.journal.disarm()
                raise ReauthFailure("TOKEN_REJECTED", f"{self.platform.value} refused the refreshed token")
            block = limit_refusal(self.platform, self.account, response, self.ctx.now(), self.policy)
            if block is not None:
                wait = (block.until - self.ctx.now()).total_seconds()
                if may_retry and wait <= self.policy.inline_wait_seconds:
                    await asyncio.sleep(max(0.0, wait))
                    continue
                if create:
                    await self.ctx.journal.disarm()
                raise RateLimitedFailure("RATE_LIMITED", block.reason, block.key, block.until)
            reason, message, _body = error_details(response)
            if status >= 500 or status == 408:
                if create:
                    raise OutcomeUnknown(
                        "CREATE_OUTCOME_UNKNOWN",
                        f"{self.platform.value} answered {status} to the create call: {message}",
                    )
                if may_retry:
                    await asyncio.sleep(backoff_delay(attempt - 1, base=self._base_delay))
                    continue
                raise RetryableFailure(f"PLATFORM_{status}", f"{self.platform.value} answered {status}: {message}")
            if create:
                await self.ctx.journal.disarm()
            raise operator_refusal(self.platform, reason, message) or RejectedFailure(
                reason, f"{self.platform.value} refused the {label} ({status}): {message}"
            )


async def poll_delay(hint: float | None, configured: float, cap: float) -> None:
    """Sleep before the next processing-status poll: the platform's hint, capped by configuration."""
    await asyncio.sleep(min(cap, max(configured, hint or 0.0)) if hint else configured)

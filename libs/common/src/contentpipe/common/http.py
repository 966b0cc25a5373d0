"""Outbound HTTP: a shared httpx.AsyncClient factory, bounded jittered retries, and an SSRF URL policy."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from contentpipe.common.errors import InvalidArgument

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 60.0


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """The CA bundle, loaded once per process: each load costs ~50-200 ms of CPU, and every httpx client (and every
    transport given no context) would load its own at start-up."""
    return httpx.create_ssl_context()


def create_http_client(
    *,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    headers: Mapping[str, str] | None = None,
    base_url: str = "",
    max_connections: int = 50,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """One client per upstream, created in bootstrap and closed (`aclose`) on shutdown."""
    return httpx.AsyncClient(
        timeout=timeout,
        headers={"user-agent": "contentpipe/0.1", **(headers or {})},
        base_url=base_url,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        follow_redirects=False,  # redirects could bypass the URL policy; callers decide explicitly
        transport=transport,
        verify=shared_tls_context(),
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or unparsable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 20.0) -> float:
    """Exponential backoff with full jitter (attempt 0 is the first retry)."""
    return random.uniform(0, min(cap, base * (2**attempt)))


async def retrying_request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    retry_methods: Collection[str] = ("GET", "HEAD", "OPTIONS"),
    max_attempts: int = 4,
    base_delay: float = 0.5,
    max_delay: float = 20.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    **kwargs: Any,
) -> httpx.Response:
    """Send a request, retrying transport errors and 408/425/429/5xx for methods the caller marks safe.

    A 429/503 `Retry-After` sets the wait (capped at 60 s). The last response is returned as is (the
    caller maps it); the last transport error is raised when every attempt failed to connect.
    """
    retryable = method.upper() in {m.upper() for m in retry_methods}
    attempts = max_attempts if retryable else 1
    for attempt in range(attempts):
        last_try = attempt == attempts - 1
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.TransportError:
            if last_try:
                raise
            await sleep(backoff_delay(attempt, base=base_delay, cap=max_delay))
            continue
        if last_try or response.status_code not in RETRYABLE_STATUS:
            return response
        delay = backoff_delay(attempt, base=base_delay, cap=max_delay)
        if response.status_code in (429, 503):
            hinted = parse_retry_after(response.headers.get("retry-after"))
            if hinted is not None:
                delay = min(hinted, MAX_RETRY_AFTER_SECONDS)
        await response.aclose()
        await sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class OutboundUrlPolicy:
    """Refuses URLs a user supplies that would reach our own network (SSRF): only http(s) to public IPs.

    `allow_private=True` (CONTENTPIPE_ALLOW_PRIVATE_URLS=1) is for local demos and loopback fakes.
    """

    def __init__(self, *, allow_private: bool = False, field: str = "url") -> None:
        self._allow_private = allow_private
        self._field = field

    @staticmethod
    def is_public(address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", maxsplit=1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        # `is_global` also excludes shared address space (100.64.0.0/10, carrier-grade NAT) and other
        # special-purpose ranges that `is_private` leaves out.
        return ip.is_global and not (
            ip.is_private
            or ip.is_loopback
            or ip.is_link_local
            or ip.is_multicast
            or ip.is_reserved
            or ip.is_unspecified
            or str(ip) == "169.254.169.254"
        )

    async def check(self, url: str) -> None:
        """Raise InvalidArgument(field) unless `url` is http(s) and every resolved address is public."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:  # a bad IPv6 literal or a port outside 0-65535
            raise InvalidArgument.single(self._field, f"is not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument.single(self._field, "must be an http or https URL with a host")
        if self._allow_private:
            return
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise InvalidArgument.single(self._field, f"host {parts.hostname!r} does not resolve") from None
        for info in infos:
            if not self.is_public(str(info[4][0])):
                raise InvalidArgument.single(self._field, "must not point to a private or local address")

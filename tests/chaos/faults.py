"""Flaky external APIs: an ASGI wrapper around a loopback fake that injects the failures real providers have.

Per request, when enabled: ~10 % 5xx, some 429 with Retry-After, some answers slower than any client deadline,
and some creates (POST) that take effect at the fake but whose answer never arrives.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class FaultRates:
    server_error: float = 0.10
    throttled: float = 0.04
    slow: float = 0.02
    lost_answer: float = 0.02  # POST only: the fake acts, the client never hears back
    slow_seconds: float = 40.0
    retry_after_seconds: int = 1


@dataclass
class FaultInjector:
    """Wrap `app`; flip `enabled` to start/stop the chaos; `counts` says what was injected."""

    app: ASGIApp
    name: str
    rates: FaultRates = field(default_factory=FaultRates)
    rng: random.Random = field(default_factory=random.Random)
    enabled: bool = False
    counts: Counter[str] = field(default_factory=Counter)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        roll = self.rng.random()
        rates = self.rates
        if roll < rates.server_error:
            self.counts["5xx"] += 1
            await _respond(send, self.rng.choice([500, 502, 503]), {"error": "injected server error"})
            return
        roll -= rates.server_error
        if roll < rates.throttled:
            self.counts["429"] += 1
            headers = [(b"retry-after", str(rates.retry_after_seconds).encode())]
            await _respond(send, 429, {"error": "injected throttling"}, headers)
            return
        roll -= rates.throttled
        if roll < rates.slow:
            self.counts["slow"] += 1
            await asyncio.sleep(rates.slow_seconds)
            await self.app(scope, receive, send)
            return
        roll -= rates.slow
        if roll < rates.lost_answer and scope.get("method") == "POST":
            self.counts["lost_answer"] += 1

            async def swallow(message: Message) -> None:
                return None

            await self.app(scope, receive, swallow)  # the effect happens at the fake...
            await asyncio.sleep(rates.slow_seconds)  # ...and the answer never comes in time
            await _respond(send, 504, {"error": "injected lost answer"})
            return
        await self.app(scope, receive, send)


async def _respond(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": payload})

"""Webhook sender signing with the Standard Webhooks scheme (webhook-id, webhook-timestamp, webhook-signature).

The signature comes from `standardwebhooks`, the reference library of the spec; receivers verify with
`standardwebhooks.Webhook(secret).verify(body, headers)` or any other official verifier.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import httpx
from contentpipe.common.http import parse_retry_after
from contentpipe.scheduler.service_layer.ports import WebhookResult
from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 - the scheme prefix, not a secret


def decode_secret(secret: str) -> bytes:
    """`whsec_<base64>` (or bare base64) → key bytes; ValueError on anything else.

    Stricter than the library's own parsing (which pads and skips invalid characters): a mistyped secret is a
    configuration error at start-up, not signatures no receiver accepts.
    """
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(raw, validate=True)
    except (ValueError, TypeError):
        raise ValueError("expected whsec_<base64>") from None
    if len(key) < 16:
        raise ValueError("the secret must be at least 16 bytes (24+ base64 characters)")
    return key


class StandardWebhookSender:
    """POSTs one notification per call; the outbox decides about retries (so one call = one attempt)."""

    def __init__(self, client: httpx.AsyncClient, url: str, secret: str) -> None:
        self._client = client
        self._url = url
        self._webhook = Webhook(decode_secret(secret))

    async def send(self, message_id: str, body: bytes) -> WebhookResult:
        now = datetime.now(UTC).replace(microsecond=0)
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._webhook.sign(message_id, now, body.decode()),
        }
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return WebhookResult(delivered=False, error=f"{type(exc).__name__}: {exc}"[:300])
        if 200 <= response.status_code < 300:
            return WebhookResult(delivered=True)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return WebhookResult(delivered=False, retry_after=retry_after, error=f"HTTP {response.status_code}")

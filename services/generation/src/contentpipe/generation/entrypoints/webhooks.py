"""Replicate webhook endpoint: verifies the Standard-Webhooks signature (reference A7) and wakes the poller.

A tiny HTTP/1.1 server on asyncio streams (one POST route), so the service needs no web framework. Deliveries
are idempotent: a duplicate only wakes a poller that then reads the same state again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

_log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
TOLERANCE_SECONDS = 300


class WebhookRejected(Exception):
    pass


def verify_webhook(
    secret: str, headers: dict[str, str], body: bytes, *, now: float | None = None, tolerance: int = TOLERANCE_SECONDS
) -> None:
    """Raise WebhookRejected unless one `v1,` signature matches HMAC-SHA256(id.timestamp.body) and the time is fresh."""
    message_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not message_id or not timestamp.isdigit() or not signatures:
        raise WebhookRejected("missing webhook-id, webhook-timestamp or webhook-signature")
    if abs((now if now is not None else time.time()) - int(timestamp)) > tolerance:
        raise WebhookRejected("webhook timestamp outside the tolerance")
    key = base64.b64decode(secret.split("_", 1)[1] if secret.startswith("whsec_") else secret)
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for entry in signatures.split():
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature.encode(), expected):
            return
    raise WebhookRejected("no matching signature")


class WebhookReceiver:
    def __init__(self, secret: str, deliver: Callable[[dict[str, Any]], None]) -> None:
        self._secret = secret
        self._deliver = deliver
        self._seen: OrderedDict[str, None] = OrderedDict()

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        """The HTTP status to answer for one delivery."""
        try:
            verify_webhook(self._secret, headers, body)
        except (WebhookRejected, ValueError) as exc:
            _log.warning("webhook rejected", extra={"error": str(exc)})
            return 401
        message_id = headers["webhook-id"]
        if message_id in self._seen:
            return 200
        try:
            prediction = json.loads(body)
        except ValueError:
            return 400
        self._seen[message_id] = None
        while len(self._seen) > 10_000:
            self._seen.popitem(last=False)
        if isinstance(prediction, dict):
            self._deliver(prediction)
        return 200


async def start_webhook_server(
    host: str, port: int, secret: str, deliver: Callable[[dict[str, Any]], None]
) -> asyncio.Server:
    receiver = WebhookReceiver(secret, deliver)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status = 400
        try:
            async with asyncio.timeout(10):
                request_line = (await reader.readline()).decode("latin-1").split()
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if len(request_line) >= 2 and request_line[0] == "POST" and 0 <= length <= MAX_BODY_BYTES:
                    body = await reader.readexactly(length)
                    status = receiver.handle(headers, body)
                elif length > MAX_BODY_BYTES:
                    status = 413
                else:
                    status = 405
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, ConnectionError):
            status = 400
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 405: "Method Not Allowed", 413: "Too Large"}
        with contextlib.suppress(ConnectionError):
            writer.write(
                f"HTTP/1.1 {status} {reason.get(status, '')}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, host, port)

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
from urllib.parse import parse_qsl

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


WebhookRoute = Callable[[dict[str, str], dict[str, str], bytes], int]


def cog_webhook_route(key: bytes, deliver: Callable[[dict[str, Any]], None]) -> WebhookRoute:
    """Cog does not sign webhooks: the URL carries `sig` = HMAC(key, prediction id), checked here."""

    def handle(headers: dict[str, str], query: dict[str, str], body: bytes) -> int:
        prediction_id = query.get("id", "")
        expected = hmac.new(key, prediction_id.encode(), hashlib.sha256).hexdigest()
        if not prediction_id or not hmac.compare_digest(query.get("sig", ""), expected):
            return 401
        try:
            prediction = json.loads(body)
        except ValueError:
            return 400
        if not isinstance(prediction, dict) or str(prediction.get("id", prediction_id)) != prediction_id:
            return 400
        prediction.setdefault("id", prediction_id)
        deliver(prediction)
        return 200

    return handle


def replicate_webhook_route(secret: str, deliver: Callable[[dict[str, Any]], None]) -> WebhookRoute:
    receiver = WebhookReceiver(secret, deliver)
    return lambda headers, query, body: receiver.handle(headers, body)


async def start_webhook_server(host: str, port: int, routes: dict[str, WebhookRoute]) -> asyncio.Server:
    """Serve `POST <path>` for each route; anything else is 404/405."""

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
                path, _, raw_query = (request_line[1] if len(request_line) >= 2 else "").partition("?")
                route = routes.get(path)
                if route is None:
                    status = 404
                elif request_line[0] != "POST":
                    status = 405
                elif not 0 <= length <= MAX_BODY_BYTES:
                    status = 413
                else:
                    body = await reader.readexactly(length)
                    status = route(headers, dict(parse_qsl(raw_query)), body)
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, ConnectionError):
            status = 400
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}
        with contextlib.suppress(ConnectionError):
            head = f"HTTP/1.1 {status} {reason.get(status, 'Payload Too Large')}\r\n"
            writer.write(f"{head}content-length: 0\r\nconnection: close\r\n\r\n".encode())
            await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, host, port)

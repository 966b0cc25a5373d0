"""Webhook endpoints: `POST /webhooks/replicate` (Standard-Webhooks signature, reference A7) and `POST /webhooks/cog`.

Served by uvicorn + Starlette (ASGI): a maintained HTTP parser, and request bodies read as a stream, so a Cog result
with a video inlined as a `data:` URI (megabytes) is written to disk as it arrives, up to
GENERATION_WEBHOOK_MAX_BODY, instead of being held in memory or refused. A Cog delivery is persisted before it is
acknowledged (a 5xx makes Cog retry it), so a result that arrives while no worker waits for it, e.g. right after a
restart, is found by the worker instead of running the prediction again. Deliveries are idempotent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from contentpipe.common.asgi import serve_asgi
from contentpipe.generation.entrypoints.webhook_spool import BodyTooLarge, extract_data_uris
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_log = logging.getLogger(__name__)

REPLICATE_MAX_BODY_BYTES = 1024 * 1024  # Replicate outputs are URLs: its bodies are small
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


class CogDeliveries(Protocol):
    """Where a verified Cog delivery goes: persisted, then handed to the waiting step (the Cog provider)."""

    async def receive(self, prediction: dict[str, Any]) -> None: ...

    async def refuse(self, prediction_id: str, message: str) -> None:
        """A delivery we could not accept (too large): fail the prediction's generation with `message`."""


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    cog_key: bytes
    spool_dir: Path
    max_body_bytes: int
    replicate_secret: str | None = None


def cog_signature(key: bytes, prediction_id: str) -> str:
    """Cog does not sign webhooks: the URL we give it carries `sig` = HMAC(key, prediction id)."""
    return hmac.new(key, prediction_id.encode(), hashlib.sha256).hexdigest()


def generation_of(prediction_id: str) -> str:
    """Our Cog prediction ids are `{generation id}-{role}`."""
    return prediction_id.rsplit("-", 1)[0]


def webhook_app(
    settings: WebhookSettings,
    cog: CogDeliveries,
    replicate_deliver: Callable[[dict[str, Any]], None] | None = None,
) -> Starlette:
    """The ASGI app serving both webhook routes."""
    replicate = (
        WebhookReceiver(settings.replicate_secret, replicate_deliver)
        if settings.replicate_secret and replicate_deliver is not None
        else None
    )

    async def replicate_route(request: Request) -> Response:
        if replicate is None:
            return Response(status_code=404)
        try:
            body = await _read_small(request, REPLICATE_MAX_BODY_BYTES)
        except BodyTooLarge:
            _log.warning("replicate webhook refused: body too large")
            return Response(status_code=413)
        return Response(status_code=replicate.handle({k.lower(): v for k, v in request.headers.items()}, body))

    async def cog_route(request: Request) -> Response:
        prediction_id = request.query_params.get("id", "")
        if not prediction_id or not hmac.compare_digest(
            request.query_params.get("sig", ""), cog_signature(settings.cog_key, prediction_id)
        ):
            return Response(status_code=401)
        settings.spool_dir.mkdir(parents=True, exist_ok=True)
        spooled = settings.spool_dir / f"{secrets.token_hex(8)}.json"
        try:
            try:
                await _spool(request, spooled, settings.max_body_bytes)
            except BodyTooLarge as exc:
                message = (
                    f"the Cog server's result for prediction {prediction_id} was larger than "
                    f"GENERATION_WEBHOOK_MAX_BODY ({exc.limit} bytes) and was refused; raise it, or run the Cog "
                    "server with --upload-url so outputs arrive as URLs"
                )
                _log.warning("cog webhook refused: body too large", extra={
                    "generation_id": generation_of(prediction_id), "prediction": prediction_id,
                    "limit": exc.limit})  # fmt: skip
                await cog.refuse(prediction_id, message)
                return Response(status_code=413)
            outputs_dir = settings.spool_dir / "outputs"
            try:
                prediction = await asyncio.to_thread(extract_data_uris, spooled, outputs_dir)
            except ValueError:
                _log.warning("cog webhook refused: not JSON", extra={"generation_id": generation_of(prediction_id)})
                return Response(status_code=400)
        finally:
            spooled.unlink(missing_ok=True)
        if not isinstance(prediction, dict) or str(prediction.get("id", prediction_id)) != prediction_id:
            return Response(status_code=400)
        prediction.setdefault("id", prediction_id)
        try:
            await cog.receive(prediction)
        except Exception:
            # Not durable: answer 5xx so that Cog sends it again.
            _log.exception("cog webhook not stored", extra={"generation_id": generation_of(prediction_id)})
            return Response(status_code=503)
        return Response(status_code=200)

    return Starlette(
        routes=[
            Route("/webhooks/replicate", replicate_route, methods=["POST"]),
            Route("/webhooks/cog", cog_route, methods=["POST"]),
        ]
    )


async def _read_small(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit)
    return bytes(body)


async def _spool(request: Request, path: Path, limit: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)  # refused before reading: the sender learns it at once
    size = 0
    handle = await asyncio.to_thread(path.open, "wb")
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            await asyncio.to_thread(handle.write, chunk)
    finally:
        await asyncio.to_thread(handle.close)


async def serve_webhooks(app: Starlette, host: str, port: int) -> None:
    """Serve `app` until cancelled (the service's shutdown), then stop accepting and finish requests in flight."""
    await serve_asgi(app, host, port, name="generation-webhooks")

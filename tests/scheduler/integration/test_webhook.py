"""Notifications delivered to a signed webhook (Standard Webhooks), verified by a loopback receiver."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime, timedelta

import pytest
from contentpipe.scheduler import bootstrap
from contentpipe.scheduler.adapters.tables import notifications
from contentpipe.scheduler.config import load_config
from contentpipe.scheduler.service_layer.jobs import JobInput
from sqlalchemy import update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes import LoopbackHTTPServer
from tests.scheduler.conftest import clean_database, scheduler_env
from tests.scheduler.fake_pipelines import FakePipelines, fail

pytestmark = pytest.mark.integration


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, written from the Standard Webhooks spec (not from our sender)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body.decode()}".encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    if abs(time.time() - int(headers["webhook-timestamp"])) > 300:
        return False
    return any(
        version == "v1" and hmac.compare_digest(signature, expected)
        for version, _, signature in (part.partition(",") for part in headers["webhook-signature"].split(" "))
    )


async def test_deactivation_notification_is_delivered_once_signed_and_retried_after_503(
    database_url: str, fake_pipelines: FakePipelines
) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    received: list[tuple[dict[str, str], bytes]] = []
    answers = [503, 200]

    async def hook(request: Request) -> Response:
        body = await request.body()
        received.append(({k.lower(): v for k, v in request.headers.items()}, body))
        return Response(status_code=answers.pop(0) if answers else 200)

    await clean_database(database_url)
    fake_pipelines.add_pipeline("pipelines/p1", "user-1")
    fake_pipelines.state.outcome = lambda run: fail()
    with LoopbackHTTPServer(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as receiver:
        env = scheduler_env(
            database_url,
            fake_pipelines.address,
            NOTIFICATION_WEBHOOK_URL=f"{receiver.url}/hook",
            NOTIFICATION_WEBHOOK_SECRET=secret,
        )
        components = bootstrap.build(load_config(env))
        try:
            job = await components.jobs.create_job(
                "user-1", JobInput(pipeline="pipelines/p1", cron_expression="0 0 1 1 *", max_retries=1)
            )
            engine = components.engine
            from contentpipe.scheduler.adapters.tables import job_runs, jobs

            now = (await components.store.now()).replace(microsecond=0)
            async with engine.begin() as conn:
                await conn.execute(update(jobs).values(next_fire_time=now))
            await components.processor.process(10)
            async with engine.begin() as conn:
                await conn.execute(
                    update(job_runs).values(next_check_at=datetime.fromisoformat("2000-01-01T00:00:00+00:00"))
                )
            await components.processor.process(10)  # failure 1 of max 1: deactivated, notified
            assert components.delivery is not None
            assert await components.delivery.deliver_due() == 0  # 503: retried later with backoff
            [note] = await components.notifications.list("user-1", unread_only=False, after=None, limit=10)
            assert note.deliver_time is None
            assert await components.delivery.deliver_due() == 0  # not due yet: backoff holds
            async with engine.begin() as conn:
                await conn.execute(update(notifications).values(next_delivery_at=now - timedelta(seconds=1)))
            assert await components.delivery.deliver_due() == 1
            assert await components.delivery.deliver_due() == 0  # delivered once, never again
            [note] = await components.notifications.list("user-1", unread_only=False, after=None, limit=10)
            assert note.deliver_time is not None
        finally:
            await components.close()

    assert len(received) == 2
    (first_headers, _), (headers, body) = received
    assert headers["webhook-id"] == first_headers["webhook-id"] == note.id
    assert verify_standard_webhook(secret, headers, body)
    assert not verify_standard_webhook("whsec_" + base64.b64encode(b"x" * 24).decode(), headers, body)
    assert Webhook(secret).verify(body, headers) == json.loads(body)  # the reference verifier accepts it too
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"x" * 24).decode()).verify(body, headers)
    payload = json.loads(body)
    assert payload["type"] == "notification.job_deactivated"
    assert payload["data"]["job"] == job.name

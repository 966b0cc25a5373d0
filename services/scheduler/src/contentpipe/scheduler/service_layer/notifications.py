"""Notifications: listing and acknowledging, and the webhook outbox (Standard Webhooks, at most once per id)."""

from __future__ import annotations

import json
import logging
import random
from datetime import datetime, timedelta

from contentpipe.common.errors import NotFound
from contentpipe.common.ids import parse_name
from contentpipe.scheduler.domain.model import Notification
from contentpipe.scheduler.service_layer.ports import WebhookResult, WebhookSender
from contentpipe.scheduler.service_layer.store import SchedulerStore

_log = logging.getLogger(__name__)

MAX_DELIVERY_ATTEMPTS = 12
_INITIAL_DELAY = timedelta(seconds=5)
_MAX_DELAY = timedelta(hours=1)


class NotificationService:
    def __init__(self, store: SchedulerStore) -> None:
        self._store = store

    async def list(
        self, owner: str, *, unread_only: bool, after: tuple[datetime, str] | None, limit: int
    ) -> list[Notification]:
        return await self._store.list_notifications(owner, unread_only=unread_only, after=after, limit=limit)

    async def get(self, owner: str, name: str) -> Notification:
        notification = await self._store.get_notification(owner, parse_name("notifications/{id}", name))
        if notification is None:
            raise NotFound(f"notification {name} not found", reason="NOTIFICATION_NOT_FOUND")
        return notification

    async def acknowledge(self, owner: str, name: str) -> Notification:
        notification_id = parse_name("notifications/{id}", name)
        notification = await self._store.acknowledge_notification(owner, notification_id)
        if notification is None:
            raise NotFound(f"notification {name} not found", reason="NOTIFICATION_NOT_FOUND")
        return notification


def webhook_body(notification: Notification) -> bytes:
    """The JSON payload (Standard Webhooks shape: type, timestamp, data)."""
    created = notification.create_time.isoformat() if notification.create_time else ""
    payload = {
        "type": f"notification.{notification.kind.name.lower()}",
        "timestamp": created,
        "data": {
            "name": notification.name,
            "owner": notification.owner,
            "kind": notification.kind.name,
            "title": notification.title,
            "message": notification.message,
            "job": notification.job,
            "pipeline_run": notification.pipeline_run,
            "connection": notification.connection,
            "create_time": created,
        },
    }
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


class WebhookDelivery:
    """Delivers the outbox: each notification is leased to one deliverer and marked delivered on a 2xx."""

    def __init__(self, store: SchedulerStore, sender: WebhookSender, *, lease_owner: str) -> None:
        self._store = store
        self._sender = sender
        self._lease_owner = lease_owner

    async def deliver_due(self, limit: int = 100) -> int:
        now, due = await self._store.claim_outbox(limit=limit, lease_owner=self._lease_owner, lease_seconds=60)
        delivered = 0
        for notification in due:
            try:
                result = await self._sender.send(notification.id, webhook_body(notification))
            except Exception as exc:  # the sender maps HTTP errors; anything else must not stop the outbox
                _log.exception("webhook delivery crashed", extra={"notification": notification.name})
                result = WebhookResult(delivered=False, error=repr(exc))
            if result.delivered:
                delivered += 1
                await self._store.finish_delivery(
                    notification.id, lease_owner=self._lease_owner, delivered=True, next_attempt_at=None
                )
                continue
            attempts = await self._store.delivery_attempts(notification.id) + 1
            if attempts >= MAX_DELIVERY_ATTEMPTS:
                next_at = None
                _log.warning("webhook delivery given up", extra={"notification": notification.name})
            else:
                ceiling = min(_INITIAL_DELAY * (2 ** (attempts - 1)), _MAX_DELAY)
                delay = timedelta(seconds=random.uniform(ceiling.total_seconds() / 2, ceiling.total_seconds()))
                if result.retry_after is not None:
                    delay = max(delay, timedelta(seconds=result.retry_after))
                next_at = now + delay
            await self._store.finish_delivery(
                notification.id,
                lease_owner=self._lease_owner,
                delivered=False,
                next_attempt_at=next_at,
                error=result.error,
            )
        return delivered

"""Notifications: insert once per dedupe key, list, acknowledge, and the webhook delivery outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from contentpipe.common.database import claim_rows, db_now
from contentpipe.common.ids import new_id
from contentpipe.scheduler.adapters.sql_base import SqlStoreBase
from contentpipe.scheduler.adapters.sql_rows import (
    notification_from_row,
)
from contentpipe.scheduler.adapters.tables import notifications
from contentpipe.scheduler.domain.model import (
    Notification,
)
from contentpipe.scheduler.service_layer.store import (
    NotificationDraft,
)
from sqlalchemy import and_, or_, select, update


class SqlNotifications(SqlStoreBase):
    """The notifications part of service_layer.store.SchedulerStore."""

    async def add_notifications(self, drafts: Sequence[NotificationDraft], *, deliver: bool) -> int:
        """Insert notifications; a repeated dedupe key is ignored (notify once). Returns how many were new."""
        if not drafts:
            return 0
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            rows = [
                {
                    "id": new_id(),
                    "owner": d.owner,
                    "kind": int(d.kind),
                    "title": d.title[:300],
                    "message": d.message,
                    "job": d.job,
                    "pipeline_run": d.pipeline_run,
                    "connection": d.connection,
                    "dedupe_key": d.dedupe_key[:200],
                    "create_time": now,
                    "delivery_attempts": 0,
                    "next_delivery_at": now if deliver else None,
                    "delivery_error": "",
                }
                for d in drafts
            ]
            statement = (
                self._insert(notifications)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["dedupe_key"])
                .returning(notifications.c.id)
            )
            return len((await session.execute(statement)).all())

    async def list_notifications(
        self, owner: str, *, unread_only: bool, after: tuple[datetime, str] | None, limit: int
    ) -> list[Notification]:
        async with self._sessions() as session:
            query = select(notifications).where(notifications.c.owner == owner)
            if unread_only:
                query = query.where(notifications.c.acknowledge_time.is_(None))
            if after is not None:
                created, last_id = after
                query = query.where(
                    or_(
                        notifications.c.create_time < created,
                        and_(notifications.c.create_time == created, notifications.c.id < last_id),
                    )
                )
            query = query.order_by(notifications.c.create_time.desc(), notifications.c.id.desc()).limit(limit)
            return [notification_from_row(row) for row in (await session.execute(query)).all()]

    async def get_notification(self, owner: str, notification_id: str) -> Notification | None:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(notifications).where(notifications.c.id == notification_id, notifications.c.owner == owner)
                )
            ).first()
            return None if row is None else notification_from_row(row)

    async def acknowledge_notification(self, owner: str, notification_id: str) -> Notification | None:
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            await session.execute(
                update(notifications)
                .where(
                    notifications.c.id == notification_id,
                    notifications.c.owner == owner,
                    notifications.c.acknowledge_time.is_(None),
                )
                .values(acknowledge_time=now)
            )
            row = (
                await session.execute(
                    select(notifications).where(notifications.c.id == notification_id, notifications.c.owner == owner)
                )
            ).first()
            return None if row is None else notification_from_row(row)

    async def claim_outbox(
        self, *, limit: int, lease_owner: str, lease_seconds: float
    ) -> tuple[datetime, list[Notification]]:
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            rows = await claim_rows(
                session,
                notifications,
                where=[
                    notifications.c.next_delivery_at.is_not(None),
                    notifications.c.next_delivery_at <= now,
                    notifications.c.deliver_time.is_(None),
                ],
                order_by=[notifications.c.next_delivery_at],
                limit=limit,
                lease_owner=lease_owner,
                lease_seconds=lease_seconds,
                now=now,
            )
            return now, [notification_from_row(row) for row in rows]

    async def finish_delivery(
        self,
        notification_id: str,
        *,
        lease_owner: str,
        delivered: bool,
        next_attempt_at: datetime | None,
        error: str = "",
    ) -> None:
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            values: dict[str, Any] = {
                "delivery_attempts": notifications.c.delivery_attempts + 1,
                "lease_owner": None,
                "lease_expires_at": None,
                "delivery_error": error[:500],
            }
            if delivered:
                values |= {"deliver_time": now, "next_delivery_at": None}
            else:
                values |= {"next_delivery_at": next_attempt_at}
            await session.execute(
                update(notifications)
                .where(notifications.c.id == notification_id, notifications.c.lease_owner == lease_owner)
                .values(values)
            )

    async def delivery_attempts(self, notification_id: str) -> int:
        async with self._sessions() as session:
            value = (
                await session.execute(
                    select(notifications.c.delivery_attempts).where(notifications.c.id == notification_id)
                )
            ).scalar_one_or_none()
            return int(value or 0)

"""gRPC servicer for NotificationService."""

from __future__ import annotations

from typing import Any

from contentpipe.api.scheduler.v1 import notification_service_pb2 as pb
from contentpipe.api.scheduler.v1 import notification_service_pb2_grpc
from contentpipe.common.auth import current_principal
from contentpipe.common.pagination import PageTokenCodec, keyset_after, next_keyset_token, page_size
from contentpipe.scheduler.entrypoints import convert
from contentpipe.scheduler.service_layer.notifications import NotificationService


class NotificationServiceServicer(notification_service_pb2_grpc.NotificationServiceServicer):
    """Thin: translate requests, call the service layer, translate results; raise ContentpipeError."""

    def __init__(self, notifications: NotificationService, codec: PageTokenCodec) -> None:
        self._notifications = notifications
        self._codec = codec

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: Any
    ) -> pb.ListNotificationsResponse:
        limit = page_size(request.page_size)
        query = f"notifications|{request.unread_only}"
        after = keyset_after(self._codec, request.page_token, query=query)
        items = await self._notifications.list(
            current_principal().user_id, unread_only=request.unread_only, after=after, limit=limit + 1
        )
        token = next_keyset_token(self._codec, [(n.create_time, n.id) for n in items], limit, query=query)
        return pb.ListNotificationsResponse(
            notifications=[convert.notification_message(n) for n in items[:limit]], next_page_token=token
        )

    async def GetNotification(self, request: pb.GetNotificationRequest, context: Any) -> pb.GetNotificationResponse:
        notification = await self._notifications.get(current_principal().user_id, request.name)
        return pb.GetNotificationResponse(notification=convert.notification_message(notification))

    async def AcknowledgeNotification(
        self, request: pb.AcknowledgeNotificationRequest, context: Any
    ) -> pb.AcknowledgeNotificationResponse:
        notification = await self._notifications.acknowledge(current_principal().user_id, request.name)
        return pb.AcknowledgeNotificationResponse(notification=convert.notification_message(notification))

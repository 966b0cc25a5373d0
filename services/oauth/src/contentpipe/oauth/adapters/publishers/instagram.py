"""Instagram: create the media container from the asset URL (carousel children first), poll `status_code` until
FINISHED, then `media_publish` exactly once. The container's own status tells, after any crash, whether it went out.
"""

from __future__ import annotations

from typing import Any

from contentpipe.oauth.adapters.publishers.base import PublisherBase, matches
from contentpipe.oauth.adapters.publishers.calls import PlatformCaller, poll_delay
from contentpipe.oauth.domain.posts import MediaKind, Platform
from contentpipe.oauth.service_layer.posting_ports import (
    PublishContext,
    Published,
    Reconciliation,
    RejectedFailure,
    RetryableFailure,
    Verdict,
)


class InstagramPublisher(PublisherBase):
    platform = Platform.INSTAGRAM

    @property
    def base(self) -> str:
        return f"{self.settings.instagram_url}/{self.settings.instagram_version}"

    def _call(self, ctx: PublishContext) -> PlatformCaller:
        return self.caller(ctx, token_param="access_token")  # noqa: S106  # the parameter's name

    def _user(self, ctx: PublishContext) -> str:
        return ctx.credentials.account_id or ctx.post.account_id

    async def publish(self, ctx: PublishContext) -> Published:
        call = self._call(ctx)
        container = str(ctx.post.progress.get("container_id") or "")
        if container:
            status = await self._status(call, container)
            if status in ("ERROR", "EXPIRED"):
                container = ""
        if not container:
            container = await self._create_container(call, ctx)
            await ctx.journal.checkpoint(container_id=container)
        await self._wait_finished(call, container)
        await ctx.journal.arm()
        response = await call.send(
            "POST", f"{self.base}/{self._user(ctx)}/media_publish", params={"creation_id": container}, create=True
        )
        media_id = str(response.json().get("id") or "")
        if not media_id:
            raise RejectedFailure("NO_POST_ID", "Instagram published without returning the media id")
        await ctx.journal.created(media_id)
        return Published(media_id, await self._permalink(call, media_id))

    async def _create_container(self, call: PlatformCaller, ctx: PublishContext) -> str:
        post = ctx.post
        user = self._user(ctx)
        params: dict[str, Any]
        if len(post.media) == 1:
            item = post.media[0]
            if item.kind is MediaKind.IMAGE:
                params = {"image_url": item.uri, "caption": post.text}
            else:
                params = {"media_type": "REELS", "video_url": item.uri, "caption": post.text}
                if post.options.instagram_share_to_feed is not None:
                    params["share_to_feed"] = "true" if post.options.instagram_share_to_feed else "false"
        else:
            children = []
            for item in post.media:
                child: dict[str, Any] = {"is_carousel_item": "true"}
                if item.kind is MediaKind.IMAGE:
                    child["image_url"] = item.uri
                else:
                    child.update(media_type="VIDEO", video_url=item.uri)
                created = await call.send("POST", f"{self.base}/{user}/media", params=child)
                children.append(str(created.json()["id"]))
            for child_id in children:
                await self._wait_finished(call, child_id)
            params = {"media_type": "CAROUSEL", "children": ",".join(children), "caption": post.text}
        response = await call.send("POST", f"{self.base}/{user}/media", params=params)
        return str(response.json()["id"])

    async def _status(self, call: PlatformCaller, container: str) -> str:
        response = await call.send("GET", f"{self.base}/{container}", params={"fields": "status_code,status"})
        return str(response.json().get("status_code") or "")

    async def _wait_finished(self, call: PlatformCaller, container: str) -> None:
        deadline = self.deadline()
        while True:
            response = await call.send("GET", f"{self.base}/{container}", params={"fields": "status_code,status"})
            body = response.json()
            code = body.get("status_code")
            if code in ("FINISHED", "PUBLISHED"):
                return
            if code == "ERROR":
                raise RejectedFailure(
                    "MEDIA_PROCESSING_FAILED", f"Instagram could not process the media: {body.get('status', 'error')}"
                )
            if code == "EXPIRED":
                raise RetryableFailure("CONTAINER_EXPIRED", "the Instagram container expired before publishing")
            self.check_deadline(deadline, "Instagram container")
            await poll_delay(None, self.settings.poll_interval, self.settings.poll_max_interval)

    async def _permalink(self, call: PlatformCaller, media_id: str) -> str:
        try:  # the post is live already: a failed lookup must not fail it
            response = await call.send("GET", f"{self.base}/{media_id}", params={"fields": "permalink"})
            return str(response.json().get("permalink") or "")
        except Exception:
            return ""

    async def reconcile(self, ctx: PublishContext) -> Reconciliation:
        post = ctx.post
        call = self._call(ctx)
        if post.platform_post_id:
            return Reconciliation(
                Verdict.PUBLISHED,
                Published(post.platform_post_id, post.permalink or await self._permalink(call, post.platform_post_id)),
            )
        container = str(post.progress.get("container_id") or "")
        if not container:
            return Reconciliation(Verdict.NOT_PUBLISHED, reason="NO_CONTAINER", keep_progress=False)
        status = await self._status(call, container)
        if status == "FINISHED":  # never published: the same container can be published now
            return Reconciliation(Verdict.NOT_PUBLISHED, reason="CONTAINER_FINISHED")
        if status == "IN_PROGRESS":
            return Reconciliation(
                Verdict.PENDING, reason="CONTAINER_IN_PROGRESS", retry_after=self.settings.poll_interval
            )
        if status in ("ERROR", "EXPIRED"):
            return Reconciliation(Verdict.NOT_PUBLISHED, reason=f"CONTAINER_{status}", keep_progress=False)
        if status != "PUBLISHED":
            return Reconciliation(
                Verdict.UNKNOWN, reason="CONTAINER_STATUS_UNKNOWN", retry_after=self.settings.poll_interval
            )
        media = await call.send(
            "GET",
            f"{self.base}/{self._user(ctx)}/media",
            params={"fields": "id,caption,permalink,timestamp", "limit": "50"},
        )
        for item in media.json().get("data") or []:
            if matches(post.text, item.get("caption")):
                return Reconciliation(Verdict.PUBLISHED, Published(str(item["id"]), str(item.get("permalink") or "")))
        return Reconciliation(Verdict.PUBLISHED, Published(container, ""), reason="CONTAINER_PUBLISHED")

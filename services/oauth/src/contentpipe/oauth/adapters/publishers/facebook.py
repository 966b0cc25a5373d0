"""Facebook Pages, with the Page's own token: text to `/feed`, one photo to `/photos`, several photos uploaded
unpublished then attached to one `/feed` post, a video to `/videos`. The create call is sent exactly once.
"""

from __future__ import annotations

import json
from datetime import timedelta

from contentpipe.oauth.adapters.publishers.base import PublisherBase, matches
from contentpipe.oauth.adapters.publishers.calls import PlatformCaller
from contentpipe.oauth.domain.posts import Media, MediaKind, Platform
from contentpipe.oauth.service_layer.posting_ports import (
    PublishContext,
    Published,
    Reconciliation,
    RejectedFailure,
    Verdict,
)


def _page_token(ctx: PublishContext) -> str:
    page = ctx.post.options.facebook_page_id
    return ctx.credentials.sub_account_tokens.get(page) or ctx.credentials.access_token


class FacebookPublisher(PublisherBase):
    platform = Platform.FACEBOOK

    @property
    def base(self) -> str:
        return f"{self.settings.facebook_url}/{self.settings.facebook_version}"

    def _call(self, ctx: PublishContext) -> PlatformCaller:
        return self.caller(
            ctx,
            account=ctx.post.options.facebook_page_id,
            token_param="access_token",  # noqa: S106  # the query parameter's name
            token=_page_token,
        )

    async def publish(self, ctx: PublishContext) -> Published:
        post = ctx.post
        page = post.options.facebook_page_id
        call = self._call(ctx)
        images = [m for m in post.media if m.kind is MediaKind.IMAGE]
        videos = [m for m in post.media if m.kind is MediaKind.VIDEO]
        if videos:
            async with self.media.open(videos[0]) as local:
                source = await local.read_all()
            await ctx.journal.arm()
            response = await call.send(
                "POST",
                f"{self.base}/{page}/videos",
                create=True,
                data={"description": post.text, "published": "true"},
                files={"source": ("video.mp4", source, local.content_type)},
            )
            video_id = str(response.json().get("id") or "")
            return await self._created(ctx, video_id, f"https://www.facebook.com/{page}/videos/{video_id}")
        if len(images) == 1:
            source, content_type = await self._bytes(images[0])
            await ctx.journal.arm()
            response = await call.send(
                "POST",
                f"{self.base}/{page}/photos",
                create=True,
                data={"message": post.text, "published": "true"},
                files={"source": ("photo", source, content_type)},
            )
            body = response.json()
            post_id = str(body.get("post_id") or body.get("id") or "")
            return await self._created(ctx, post_id, f"https://www.facebook.com/{post_id}")
        photo_ids: list[str] = list(post.progress.get("photo_ids") or [])
        if images and len(photo_ids) != len(images):
            photo_ids = []
            for item in images:  # unpublished uploads: invisible until attached, safe to repeat
                source, content_type = await self._bytes(item)
                uploaded = await call.send(
                    "POST",
                    f"{self.base}/{page}/photos",
                    data={"published": "false"},
                    files={"source": ("photo", source, content_type)},
                )
                photo_ids.append(str(uploaded.json()["id"]))
            await ctx.journal.checkpoint(photo_ids=photo_ids)
        data = {"message": post.text, "published": "true"}
        for index, photo in enumerate(photo_ids):
            data[f"attached_media[{index}]"] = json.dumps({"media_fbid": photo})
        await ctx.journal.arm()
        response = await call.send(
            "POST", f"{self.base}/{page}/feed", params={"fields": "id,permalink_url"}, data=data, create=True
        )
        body = response.json()
        post_id = str(body.get("id") or "")
        return await self._created(
            ctx, post_id, str(body.get("permalink_url") or f"https://www.facebook.com/{post_id}")
        )

    async def _bytes(self, item: Media) -> tuple[bytes, str]:
        async with self.media.open(item) as local:
            return await local.read_all(), local.content_type

    async def _created(self, ctx: PublishContext, post_id: str, link: str) -> Published:
        if not post_id:
            raise RejectedFailure("NO_POST_ID", "Facebook accepted the post but returned no id")
        await ctx.journal.created(post_id, link)
        return Published(post_id, link)

    async def reconcile(self, ctx: PublishContext) -> Reconciliation:
        post = ctx.post
        if post.platform_post_id:
            return Reconciliation(Verdict.PUBLISHED, Published(post.platform_post_id, post.permalink))
        page = post.options.facebook_page_id
        sent = post.create_sent_time or ctx.now()
        since = str(int((sent - timedelta(minutes=5)).timestamp()))
        call = self._call(ctx)
        video = any(m.kind is MediaKind.VIDEO for m in post.media)
        edge, text_field = ("videos", "description") if video else ("feed", "message")
        response = await call.send(
            "GET",
            f"{self.base}/{page}/{edge}",
            params={"fields": f"id,{text_field},created_time,permalink_url", "since": since, "limit": "100"},
        )
        for item in response.json().get("data") or []:
            if matches(post.text, item.get(text_field)):
                return Reconciliation(
                    Verdict.PUBLISHED, Published(str(item["id"]), str(item.get("permalink_url") or ""))
                )
        return self.absent_or_unknown(ctx, False)

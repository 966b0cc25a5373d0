"""Facebook Pages, with the Page's own token (never the user's): text to `/feed`, one photo to `/photos`, several
photos uploaded unpublished then attached to one `/feed` post, a video through the Resumable Upload API on the
graph-video host (start, transfer chunks read from disk, finish). The create call (finish for videos) is sent once.
"""

from __future__ import annotations

import json
from datetime import timedelta

from contentpipe.oauth.adapters.publishers.base import PublisherBase, matches
from contentpipe.oauth.adapters.publishers.calls import PlatformCaller
from contentpipe.oauth.adapters.publishers.refusals import FACEBOOK_PAGE_PERMISSION_MISSING, FACEBOOK_PERMISSION_FIX
from contentpipe.oauth.domain.posts import Media, MediaKind, Platform
from contentpipe.oauth.service_layer.posting_ports import (
    PublishContext,
    Published,
    Reconciliation,
    RejectedFailure,
    Verdict,
)


def _page_token(ctx: PublishContext) -> str:
    token = ctx.credentials.sub_account_tokens.get(ctx.post.options.facebook_page_id, "")
    if not token:  # publishing with the user token is refused by Graph: say what to fix instead
        raise RejectedFailure(
            FACEBOOK_PAGE_PERMISSION_MISSING,
            f"{FACEBOOK_PERMISSION_FIX} (the connection holds no Page token for Page "
            f"{ctx.post.options.facebook_page_id})",
        )
    return token


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
        _page_token(ctx)  # no Page token: fail before uploading anything
        if videos:
            video_id = await self._upload_video(call, ctx, videos[0])
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

    async def _upload_video(self, call: PlatformCaller, ctx: PublishContext, item: Media) -> str:
        """Resumable Upload API on graph-video: the file goes up in the chunks Graph asks for, never whole in
        memory; `finish` publishes it (the irreversible call). An interrupted upload starts a new session: an
        unfinished one is never published."""
        post = ctx.post
        page = post.options.facebook_page_id
        url = f"{self.settings.facebook_video_url}/{self.settings.facebook_version}/{page}/videos"
        async with self.media.open(item) as local:
            started = (
                await call.send("POST", url, data={"upload_phase": "start", "file_size": str(local.size)})
            ).json()
            session, video_id = str(started["upload_session_id"]), str(started["video_id"])
            first, end = int(started["start_offset"]), int(started["end_offset"])
            while first < end:
                answer = await call.send(
                    "POST",
                    url,
                    data={"upload_phase": "transfer", "upload_session_id": session, "start_offset": str(first)},
                    files={
                        "video_file_chunk": ("chunk", await local.read(first, end - first), "application/octet-stream")
                    },
                )
                first, end = int(answer.json()["start_offset"]), int(answer.json()["end_offset"])
        await ctx.journal.checkpoint(video_id=video_id)
        await ctx.journal.arm()
        await call.send(
            "POST",
            url,
            create=True,
            data={
                "upload_phase": "finish",
                "upload_session_id": session,
                "description": post.text,
                "published": "true",
            },
        )
        return video_id

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

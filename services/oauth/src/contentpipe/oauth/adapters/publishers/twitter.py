"""X: chunked media upload (initialize, append, finalize, status polls), then `POST /2/tweets` exactly once.

Reconciliation after an unknown outcome lists the account's posts since the create call and looks for ours by
its normalized text (links rewritten to t.co are ignored on both sides).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from contentpipe.oauth.adapters.publishers.base import PublisherBase, matches
from contentpipe.oauth.adapters.publishers.calls import PlatformCaller, poll_delay
from contentpipe.oauth.domain.posts import Media, MediaKind, Platform
from contentpipe.oauth.domain.posts_rules import text_too_long
from contentpipe.oauth.service_layer.posting_ports import (
    PublishContext,
    Published,
    Reconciliation,
    RejectedFailure,
    Verdict,
)


def _category(item: Media, content_type: str) -> str:
    if item.kind is MediaKind.VIDEO:
        return "tweet_video"
    return "tweet_gif" if content_type == "image/gif" else "tweet_image"


def permalink(post_id: str, username: str = "") -> str:
    return f"https://x.com/{username}/status/{post_id}" if username else f"https://x.com/i/web/status/{post_id}"


class TwitterPublisher(PublisherBase):
    platform = Platform.TWITTER

    @property
    def base(self) -> str:
        return self.settings.twitter_url

    async def publish(self, ctx: PublishContext) -> Published:
        # Checked at CreatePost too; a post queued before (or a rule change) must not spend an upload first.
        too_long = text_too_long(ctx.post.text, Platform.TWITTER)
        if too_long:
            raise RejectedFailure("TEXT_TOO_LONG", f"X counts the text as {too_long}")
        call = self.caller(ctx)
        media_ids: list[str] = list(ctx.post.progress.get("media_ids") or [])
        if ctx.post.media and len(media_ids) != len(ctx.post.media):
            media_ids = [await self._upload(call, item) for item in ctx.post.media]
            await ctx.journal.checkpoint(media_ids=media_ids)
        body: dict[str, Any] = {"text": ctx.post.text}
        if media_ids:
            body["media"] = {"media_ids": media_ids}
        if ctx.post.options.twitter_reply_to_post_id:
            body["reply"] = {"in_reply_to_tweet_id": ctx.post.options.twitter_reply_to_post_id}
        if ctx.post.options.ai_generated and media_ids:
            body["made_with_ai"] = True  # X's disclosure for AI-generated media
        await ctx.journal.arm()
        response = await call.send("POST", f"{self.base}/2/tweets", json=body, create=True)
        post_id = str((response.json().get("data") or {}).get("id") or "")
        if not post_id:
            raise RejectedFailure("NO_POST_ID", "X accepted the post but returned no id")
        link = permalink(post_id, ctx.credentials.username)
        await ctx.journal.created(post_id, link)
        return Published(post_id, link)

    async def _upload(self, call: PlatformCaller, item: Media) -> str:
        async with self.media.open(item) as local:
            init = await call.send(
                "POST",
                f"{self.base}/2/media/upload/initialize",
                json={
                    "media_type": local.content_type,
                    "total_bytes": local.size,
                    "media_category": _category(item, local.content_type),
                },
            )
            media_id = str(init.json()["data"]["id"])
            chunk = self.settings.x_chunk_bytes
            for index in range(max(1, math.ceil(local.size / chunk))):
                data = await local.read(index * chunk, chunk)
                await call.send(
                    "POST",
                    f"{self.base}/2/media/upload/{media_id}/append",
                    data={"segment_index": str(index)},
                    files={"media": ("blob", data, "application/octet-stream")},
                )
        final = await call.send("POST", f"{self.base}/2/media/upload/{media_id}/finalize", json={})
        info = (final.json().get("data") or {}).get("processing_info")
        deadline = self.deadline()
        while info and info.get("state") in ("pending", "in_progress"):
            self.check_deadline(deadline, "X media")
            await poll_delay(
                float(info.get("check_after_secs") or 0), self.settings.poll_interval, self.settings.poll_max_interval
            )
            status = await call.send(
                "GET", f"{self.base}/2/media/upload", params={"command": "STATUS", "media_id": media_id}
            )
            info = (status.json().get("data") or {}).get("processing_info")
        if info and info.get("state") == "failed":
            error = info.get("error") or {}
            raise RejectedFailure(
                "MEDIA_PROCESSING_FAILED", f"X could not process the media: {error.get('message', 'failed')}"
            )
        return media_id

    async def reconcile(self, ctx: PublishContext) -> Reconciliation:
        post = ctx.post
        if post.platform_post_id:
            return Reconciliation(
                Verdict.PUBLISHED, Published(post.platform_post_id, post.permalink or permalink(post.platform_post_id))
            )
        sent = post.create_sent_time or ctx.now()
        call = self.caller(ctx)
        response = await call.send(
            "GET",
            f"{self.base}/2/users/{ctx.credentials.account_id or post.account_id}/tweets",
            params={
                "max_results": "100",
                "tweet.fields": "created_at",
                "start_time": (sent - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )
        for tweet in response.json().get("data") or []:
            if matches(post.text, tweet.get("text")):
                tweet_id = str(tweet["id"])
                return Reconciliation(
                    Verdict.PUBLISHED, Published(tweet_id, permalink(tweet_id, ctx.credentials.username))
                )
        return self.absent_or_unknown(ctx, False)

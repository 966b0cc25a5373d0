"""YouTube `videos.insert` as a resumable upload. The session URI is saved before any byte goes up; an interrupted
upload is probed (`Content-Range: bytes */N`) and resumed from the offset YouTube holds. The irreversible moment is
the last byte: the post is armed right before the chunk that carries it, and a probe afterwards tells whether the
video exists (200/201 with its id) or not (308: resume; 404/410: the session is gone, start again).
"""

from __future__ import annotations

from typing import Any

from contentpipe.oauth.adapters.publishers.base import PublisherBase
from contentpipe.oauth.adapters.publishers.calls import PlatformCaller
from contentpipe.oauth.adapters.publishers.media import LocalMedia
from contentpipe.oauth.domain.posts import Platform
from contentpipe.oauth.service_layer.posting_ports import (
    OutcomeUnknown,
    PublishContext,
    Published,
    PublishFailure,
    RateLimitedFailure,
    Reconciliation,
    RejectedFailure,
    RetryableFailure,
    Verdict,
)

MAX_INTERRUPTIONS = 8


def permalink(video_id: str) -> str:
    return f"https://www.youtube.com/watch?v={video_id}"


def _offset(response: Any) -> int:
    """Next byte to send after a 308: one past the `Range: bytes=0-N` end; 0 without a Range header."""
    value = response.headers.get("range", "")
    if "-" not in value:
        return 0
    return int(value.rsplit("-", 1)[1]) + 1


class YouTubePublisher(PublisherBase):
    platform = Platform.GOOGLE

    @property
    def base(self) -> str:
        return self.settings.youtube_url

    def _resource(self, ctx: PublishContext) -> dict[str, Any]:
        o = ctx.post.options
        snippet: dict[str, Any] = {
            "title": o.youtube_title,
            "description": o.youtube_description or ctx.post.text,
            "categoryId": o.youtube_category_id or "22",
        }
        if o.youtube_tags:
            snippet["tags"] = list(o.youtube_tags)
        status: dict[str, Any] = {
            "privacyStatus": o.youtube_privacy_status or "private",
            "selfDeclaredMadeForKids": o.youtube_made_for_kids,
        }
        if o.ai_generated:
            status["containsSyntheticMedia"] = True  # YouTube's disclosure for realistic AI-made video
        return {"snippet": snippet, "status": status}

    async def publish(self, ctx: PublishContext) -> Published:
        call = self.caller(ctx)
        async with self.media.open(ctx.post.media[0]) as local:
            session = str(ctx.post.progress.get("session_uri") or "")
            offset = 0
            if session:
                probe = await self._probe(call, session, local.size)
                if isinstance(probe, Published):
                    await ctx.journal.created(probe.platform_post_id, probe.permalink)
                    return probe
                if probe is None:
                    session = ""
                else:
                    offset = probe
            if not session:
                response = await call.send(
                    "POST",
                    f"{self.base}/upload/youtube/v3/videos",
                    params={"uploadType": "resumable", "part": "snippet,status"},
                    headers={
                        "X-Upload-Content-Length": str(local.size),
                        "X-Upload-Content-Type": local.content_type or "video/mp4",
                    },
                    json=self._resource(ctx),
                )
                session = response.headers.get("location", "")
                if not session:
                    raise RetryableFailure("NO_UPLOAD_SESSION", "YouTube opened no upload session")
                await ctx.journal.checkpoint(session_uri=session)
            result = await self._upload(call, ctx, session, local, offset)
        await ctx.journal.created(result.platform_post_id, result.permalink)
        return result

    async def _upload(
        self, call: PlatformCaller, ctx: PublishContext, session: str, local: LocalMedia, offset: int
    ) -> Published:
        chunk = self.settings.youtube_chunk_bytes
        interruptions = 0
        while True:
            last = min(local.size, offset + chunk) - 1
            final = last == local.size - 1
            if final and ctx.post.create_sent_time is None:
                await ctx.journal.arm()
            try:
                response = await call.send(
                    "PUT",
                    session,
                    accept=(308,),
                    retry=False,
                    content=await local.read(offset, last - offset + 1),
                    headers={
                        "Content-Type": local.content_type or "video/mp4",
                        "Content-Range": f"bytes {offset}-{last}/{local.size}",
                    },
                )
            except (RetryableFailure, OutcomeUnknown) as failure:
                # Interrupted: ask YouTube how much it holds and go on from there (or learn the video exists).
                interruptions += 1
                if interruptions > MAX_INTERRUPTIONS:
                    if final:
                        raise OutcomeUnknown("UPLOAD_INTERRUPTED", failure.message) from None
                    raise
                probe = await self._probe(call, session, local.size)
                if isinstance(probe, Published):
                    return probe
                if probe is None:  # the session is gone: nothing was created; start over on the next attempt
                    await ctx.journal.checkpoint(session_uri="")
                    if ctx.post.create_sent_time is not None:
                        await ctx.journal.disarm()
                    raise RetryableFailure("UPLOAD_SESSION_EXPIRED", "the YouTube upload session expired") from None
                offset = probe
                continue
            except (RateLimitedFailure, RejectedFailure):
                if ctx.post.create_sent_time is not None:
                    await ctx.journal.disarm()  # a definite refusal of the bytes: no video was created
                raise
            if response.status_code == 308:
                offset = _offset(response)
                continue
            return self._video(response)

    def _video(self, response: Any) -> Published:
        video_id = str(response.json().get("id") or "")
        if not video_id:
            raise OutcomeUnknown("NO_VIDEO_ID", "YouTube finished the upload without a video id")
        return Published(video_id, permalink(video_id))

    async def _probe(self, call: PlatformCaller, session: str, total: int) -> Published | int | None:
        """The video (upload complete), the offset to resume from, or None when the session is gone."""
        try:
            response = await call.send(
                "PUT",
                session,
                accept=(308, 404, 410),
                headers={"Content-Range": f"bytes */{total}", "Content-Length": "0"},
            )
        except RejectedFailure:
            return None
        if response.status_code in (404, 410):
            return None
        if response.status_code == 308:
            return _offset(response)
        return self._video(response)

    async def reconcile(self, ctx: PublishContext) -> Reconciliation:
        post = ctx.post
        if post.platform_post_id:
            return Reconciliation(Verdict.PUBLISHED, Published(post.platform_post_id, permalink(post.platform_post_id)))
        session = str(post.progress.get("session_uri") or "")
        if not session:
            return Reconciliation(Verdict.NOT_PUBLISHED, reason="NO_UPLOAD_SESSION", keep_progress=False)
        try:
            async with self.media.open(post.media[0]) as local:
                size = local.size
            probe = await self._probe(self.caller(ctx), session, size)
        except PublishFailure as failure:
            return Reconciliation(Verdict.UNKNOWN, reason=failure.reason, retry_after=self.settings.poll_interval)
        if isinstance(probe, Published):
            return Reconciliation(Verdict.PUBLISHED, probe)
        if probe is None:
            return Reconciliation(Verdict.NOT_PUBLISHED, reason="UPLOAD_SESSION_GONE", keep_progress=False)
        return Reconciliation(Verdict.NOT_PUBLISHED, reason="UPLOAD_INCOMPLETE")

"""TikTok Content Posting: creator info, then init (FILE_UPLOAD in chunks, or PULL_FROM_URL; photos pull only),
then poll the publish status. Init is the irreversible call: from then on the `publish_id` is what we ask about.

PULL_FROM_URL only works for URLs under a domain or prefix verified for the app in TikTok's developer portal
(`OAUTH_PUBLISH_TIKTOK_VERIFIED_URL_PREFIXES`): a video elsewhere is uploaded as a file instead, and a photo post
(pull only) from elsewhere fails before anything is sent, with a message naming the fix.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from contentpipe.oauth.adapters.publishers.base import PublisherBase
from contentpipe.oauth.adapters.publishers.calls import PlatformCaller, poll_delay, upper_snake
from contentpipe.oauth.adapters.publishers.media import LocalMedia
from contentpipe.oauth.adapters.publishers.refusals import TIKTOK_URL_FIX, TIKTOK_URL_NOT_VERIFIED, operator_refusal
from contentpipe.oauth.domain.posts import MediaKind, Platform
from contentpipe.oauth.service_layer.posting_ports import (
    OutcomeUnknown,
    PublishContext,
    Published,
    Reconciliation,
    RejectedFailure,
    Verdict,
)

_JSON = {"Content-Type": "application/json; charset=UTF-8"}
MB = 1024 * 1024
SINGLE_CHUNK_MAX = 64 * MB


def chunk_plan(size: int, chunk: int) -> tuple[int, int]:
    """(chunk_size, total_chunk_count) as the media-transfer guide wants them.

    Up to 64 MB the file goes as one chunk (chunk_size = video_size). Above, `chunk` (5-64 MB) per chunk and
    floor(size / chunk) chunks: the last one takes the remainder (less than two chunks, so at most 128 MB).
    """
    if size <= SINGLE_CHUNK_MAX:
        return size, 1
    return chunk, size // chunk


def url_verified(url: str, prefixes: tuple[str, ...]) -> bool:
    """`url` lies under a verified URL prefix (`https://cdn.example.com/media/`) or domain (`example.com`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    for prefix in prefixes:
        if "://" in prefix:
            if url.startswith(prefix):
                return True
        elif parts.hostname == prefix or parts.hostname.endswith(f".{prefix}"):
            return True
    return False


def _check(body: dict[str, Any]) -> dict[str, Any]:
    error = body.get("error") or {}
    code = str(error.get("code") or "ok")
    if code != "ok":
        message = str(error.get("message", code))
        reason = upper_snake(code)
        raise operator_refusal(Platform.TIKTOK, reason, message) or RejectedFailure(
            reason, f"TikTok refused: {message}"
        )
    return dict(body.get("data") or {})


class TikTokPublisher(PublisherBase):
    platform = Platform.TIKTOK

    @property
    def base(self) -> str:
        return f"{self.settings.tiktok_url}/v2/post/publish"

    async def publish(self, ctx: PublishContext) -> Published:
        post = ctx.post
        call = self.caller(ctx)
        creator = _check((await call.send("POST", f"{self.base}/creator_info/query/", headers=_JSON)).json())
        options = creator.get("privacy_level_options") or []
        level = post.options.tiktok_privacy_level
        if options and level not in options:
            raise RejectedFailure(
                "PRIVACY_LEVEL_OPTION_MISMATCH", f"privacy level {level} is not one of the creator's options {options}"
            )
        limit = float(creator.get("max_video_post_duration_sec") or 0)
        videos = [m for m in post.media if m.kind is MediaKind.VIDEO]
        if limit and videos and videos[0].duration_seconds > limit:
            raise RejectedFailure("DURATION_CHECK_FAILED", f"the creator may post videos up to {limit:g} s")
        username = str(creator.get("creator_username") or "")
        await ctx.journal.checkpoint(username=username)
        post_info: dict[str, Any] = {
            "privacy_level": level,
            "disable_comment": post.options.tiktok_disable_comment,
        }
        if post.options.ai_generated:
            post_info["is_aigc"] = True
        verified = self.settings.tiktok_verified_url_prefixes
        if videos:
            item = videos[0]
            # A video's caption is its title (up to 2,200 characters).
            post_info |= {
                "title": post.text,
                "disable_duet": post.options.tiktok_disable_duet,
                "disable_stitch": post.options.tiktok_disable_stitch,
            }
            if url_verified(item.uri, verified):
                await ctx.journal.arm()
                init = await call.send(
                    "POST",
                    f"{self.base}/video/init/",
                    headers=_JSON,
                    create=True,
                    json={"post_info": post_info, "source_info": {"source": "PULL_FROM_URL", "video_url": item.uri}},
                )
                publish_id = str(_check(init.json()).get("publish_id") or "")
                await ctx.journal.checkpoint(publish_id=publish_id)
            else:
                async with self.media.open(item) as local:
                    publish_id = await self._file_upload(call, ctx, post_info, local)
        else:
            unverified = [m.uri for m in post.media if not url_verified(m.uri, verified)]
            if unverified:  # photo posts are pull-only: TikTok would refuse these URLs (url_ownership_unverified)
                raise RejectedFailure(
                    TIKTOK_URL_NOT_VERIFIED, f"{TIKTOK_URL_FIX}; not under a verified prefix: {unverified[0]}"
                )
            # A photo post's caption is its description (up to 4,000); its title (up to 90) is optional: unset.
            post_info["description"] = post.text
            await ctx.journal.arm()
            init = await call.send(
                "POST",
                f"{self.base}/content/init/",
                headers=_JSON,
                create=True,
                json={
                    "post_info": post_info,
                    "post_mode": "DIRECT_POST",
                    "media_type": "PHOTO",
                    "source_info": {
                        "source": "PULL_FROM_URL",
                        "photo_cover_index": 0,
                        "photo_images": [m.uri for m in post.media],
                    },
                },
            )
            publish_id = str(_check(init.json()).get("publish_id") or "")
            await ctx.journal.checkpoint(publish_id=publish_id)
        return await self._wait_published(call, ctx, publish_id)

    async def _file_upload(
        self, call: PlatformCaller, ctx: PublishContext, post_info: dict[str, Any], local: LocalMedia
    ) -> str:
        chunk_size, count = chunk_plan(local.size, self.settings.tiktok_chunk_bytes)
        await ctx.journal.arm()
        init = await call.send(
            "POST",
            f"{self.base}/video/init/",
            headers=_JSON,
            create=True,
            json={
                "post_info": post_info,
                "source_info": {
                    "source": "FILE_UPLOAD",
                    "video_size": local.size,
                    "chunk_size": chunk_size,
                    "total_chunk_count": count,
                },
            },
        )
        data = _check(init.json())
        publish_id, upload_url = str(data.get("publish_id") or ""), str(data.get("upload_url") or "")
        await ctx.journal.checkpoint(publish_id=publish_id)
        try:
            for index in range(count):
                first = index * chunk_size
                last = local.size - 1 if index == count - 1 else first + chunk_size - 1
                await call.send(
                    "PUT",
                    upload_url,
                    authorize=False,
                    content=await local.read(first, last - first + 1),
                    headers={
                        "Content-Type": local.content_type or "video/mp4",
                        "Content-Range": f"bytes {first}-{last}/{local.size}",
                    },
                )
        except RejectedFailure:
            raise
        except Exception as exc:  # the post exists at TikTok now: ask its status, never init again
            raise OutcomeUnknown("UPLOAD_INTERRUPTED", f"TikTok upload interrupted ({type(exc).__name__})") from None
        return publish_id

    async def _status(self, call: PlatformCaller, publish_id: str) -> dict[str, Any]:
        response = await call.send("POST", f"{self.base}/status/fetch/", headers=_JSON, json={"publish_id": publish_id})
        return _check(response.json())

    def _published(self, ctx: PublishContext, publish_id: str, data: dict[str, Any]) -> Published:
        ids = data.get("publicaly_available_post_id") or data.get("publicly_available_post_id") or []
        post_id = str(ids[0]) if ids else publish_id
        username = str(ctx.post.progress.get("username") or "")
        link = f"https://www.tiktok.com/@{username}/video/{post_id}" if ids and username else ""
        return Published(post_id, link)

    async def _wait_published(self, call: PlatformCaller, ctx: PublishContext, publish_id: str) -> Published:
        deadline = self.deadline()
        while True:
            data = await self._status(call, publish_id)
            status = data.get("status")
            if status == "PUBLISH_COMPLETE":
                result = self._published(ctx, publish_id, data)
                await ctx.journal.created(result.platform_post_id, result.permalink)
                return result
            if status == "FAILED":
                raise RejectedFailure(
                    str(data.get("fail_reason") or "failed").upper()[:80],
                    f"TikTok could not publish: {data.get('fail_reason', 'failed')}",
                    unpublished=True,
                )
            self.check_deadline(deadline, "TikTok post", after_create=True)
            await poll_delay(None, self.settings.poll_interval, self.settings.poll_max_interval)

    async def reconcile(self, ctx: PublishContext) -> Reconciliation:
        post = ctx.post
        if post.platform_post_id:
            return Reconciliation(Verdict.PUBLISHED, Published(post.platform_post_id, post.permalink))
        publish_id = str(post.progress.get("publish_id") or "")
        if not publish_id:  # init may or may not have been taken: TikTok cannot be asked without its id
            return Reconciliation(Verdict.UNKNOWN, reason="NO_PUBLISH_ID")
        data = await self._status(self.caller(ctx), publish_id)
        status = data.get("status")
        if status == "PUBLISH_COMPLETE":
            return Reconciliation(Verdict.PUBLISHED, self._published(ctx, publish_id, data))
        if status == "FAILED":
            return Reconciliation(
                Verdict.NOT_PUBLISHED, reason=str(data.get("fail_reason") or "FAILED").upper(), keep_progress=False
            )
        return Reconciliation(
            Verdict.PENDING, reason=str(status or "PROCESSING"), retry_after=self.settings.poll_interval
        )

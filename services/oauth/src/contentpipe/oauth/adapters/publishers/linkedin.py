"""LinkedIn: image or video upload (initialize, PUT bytes; videos in parts, finalize, poll AVAILABLE), then
`POST /rest/posts` with the versioned REST headers; the post URN is the `x-restli-id` header, recorded at once.

A post may only reference media that is AVAILABLE, and member (`w_member_social`) tokens often cannot read an
image's status: the status is polled where it can be read, and a create refused because the media is "not in
AVAILABLE state" (a definite refusal: nothing was created) is sent again after a wait, bounded by the processing
timeout, then retried later by the queue as a transient failure.

Reconciliation cannot list the member's posts (`GET /rest/posts?q=author` needs read permission that
`w_member_social` does not give): without the URN recorded from `x-restli-id`, the outcome stays unknown and a
person resolves it, never a blind second post.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

from contentpipe.oauth.adapters.publishers.base import PublisherBase
from contentpipe.oauth.adapters.publishers.calls import PlatformCaller, poll_delay
from contentpipe.oauth.domain.posts import Media, MediaKind, Platform
from contentpipe.oauth.service_layer.posting_ports import (
    PublishContext,
    Published,
    Reconciliation,
    RejectedFailure,
    RetryableFailure,
    Verdict,
)

_LITTLE_TEXT = re.compile(r"([\\<>#~_|\[\]*(){}@])")


def little_text(text: str) -> str:
    """LinkedIn's "little text" commentary: these characters are markup unless escaped."""
    return _LITTLE_TEXT.sub(r"\\\1", text)


def permalink(urn: str) -> str:
    return f"https://www.linkedin.com/feed/update/{urn}"


class LinkedInPublisher(PublisherBase):
    platform = Platform.LINKEDIN

    def _headers(self) -> dict[str, str]:
        return {"LinkedIn-Version": self.settings.linkedin_version, "X-Restli-Protocol-Version": "2.0.0"}

    @property
    def base(self) -> str:
        return f"{self.settings.linkedin_url}/rest"

    @staticmethod
    def author(ctx: PublishContext) -> str:
        account = ctx.credentials.account_id or ctx.post.account_id
        return account if account.startswith("urn:li:") else f"urn:li:person:{account}"

    async def publish(self, ctx: PublishContext) -> Published:
        call = self.caller(ctx)
        urns: list[str] = list(ctx.post.progress.get("media_urns") or [])
        if ctx.post.media and len(urns) != len(ctx.post.media):
            urns = [await self._upload(call, ctx, item) for item in ctx.post.media]
            await ctx.journal.checkpoint(media_urns=urns)
        body: dict[str, Any] = {
            "author": self.author(ctx),
            "commentary": little_text(ctx.post.text),
            "visibility": ctx.post.options.linkedin_visibility or "PUBLIC",
            "distribution": {
                "feedDistribution": "MAIN_FEED",
                "targetEntities": [],
                "thirdPartyDistributionChannels": [],
            },
            "lifecycleState": "PUBLISHED",
            "isReshareDisabledByAuthor": False,
        }
        if len(urns) == 1:
            body["content"] = {"media": {"id": urns[0]}}
        elif urns:
            body["content"] = {"multiImage": {"images": [{"id": urn} for urn in urns]}}
        deadline = self.deadline()
        while True:
            await ctx.journal.arm()
            try:
                response = await call.send(
                    "POST", f"{self.base}/posts", json=body, headers=self._headers(), create=True
                )
                break
            except RejectedFailure as refused:  # a 4xx: disarmed, nothing was created
                if not _media_not_available(refused):
                    raise
                if time.monotonic() > deadline:
                    raise RetryableFailure(
                        "MEDIA_NOT_AVAILABLE",
                        f"LinkedIn media still not AVAILABLE after {self.settings.processing_timeout:g} s",
                        retry_after=self.settings.poll_max_interval,
                    ) from None
                await poll_delay(None, self.settings.poll_interval, self.settings.poll_max_interval)
        urn = response.headers.get("x-restli-id", "")
        if not urn:
            raise RejectedFailure("NO_POST_ID", "LinkedIn created the post without an x-restli-id header")
        await ctx.journal.created(urn, permalink(urn))
        return Published(urn, permalink(urn))

    async def _upload(self, call: PlatformCaller, ctx: PublishContext, item: Media) -> str:
        owner = self.author(ctx)
        async with self.media.open(item) as local:
            if item.kind is MediaKind.IMAGE:
                init = await call.send(
                    "POST",
                    f"{self.base}/images",
                    params={"action": "initializeUpload"},
                    headers=self._headers(),
                    json={"initializeUploadRequest": {"owner": owner}},
                )
                value = init.json()["value"]
                await call.send(
                    "PUT",
                    value["uploadUrl"],
                    content=await local.read_all(),
                    headers={**self._headers(), "Content-Type": "application/octet-stream"},
                )
                image = str(value["image"])
                await self._wait_image(call, image)
                return image
            init = await call.send(
                "POST",
                f"{self.base}/videos",
                params={"action": "initializeUpload"},
                headers=self._headers(),
                json={
                    "initializeUploadRequest": {
                        "owner": owner,
                        "fileSizeBytes": local.size,
                        "uploadCaptions": False,
                        "uploadThumbnail": False,
                    }
                },
            )
            value = init.json()["value"]
            video = str(value["video"])
            etags: list[str] = []
            for part in value.get("uploadInstructions") or []:
                first, last = int(part["firstByte"]), int(part["lastByte"])
                uploaded = await call.send(
                    "PUT",
                    part["uploadUrl"],
                    content=await local.read(first, last - first + 1),
                    headers={"Content-Type": "application/octet-stream"},
                    authorize=False,
                )
                etags.append(uploaded.headers.get("etag", ""))
        await call.send(
            "POST",
            f"{self.base}/videos",
            params={"action": "finalizeUpload"},
            headers=self._headers(),
            json={
                "finalizeUploadRequest": {
                    "video": video,
                    "uploadToken": value.get("uploadToken", ""),
                    "uploadedPartIds": etags,
                }
            },
        )
        deadline = self.deadline()
        while True:
            status = await call.send("GET", f"{self.base}/videos/{quote(video, safe='')}", headers=self._headers())
            state = status.json().get("status")
            if state == "AVAILABLE":
                return video
            if state == "PROCESSING_FAILED":
                raise RejectedFailure(
                    "MEDIA_PROCESSING_FAILED",
                    f"LinkedIn could not process the video: {status.json().get('processingFailureReason', 'failed')}",
                )
            self.check_deadline(deadline, "LinkedIn video")
            await poll_delay(None, self.settings.poll_interval, self.settings.poll_max_interval)

    async def _wait_image(self, call: PlatformCaller, image: str) -> None:
        """Poll the image until AVAILABLE where the token may read it; a member token that may not (403) leaves
        it to the create call's retry."""
        deadline = self.deadline()
        while True:
            try:
                status = await call.send(
                    "GET", f"{self.base}/images/{quote(image, safe='')}", headers=self._headers(), retry=False
                )
            except RejectedFailure:
                return
            state = status.json().get("status")
            if state == "AVAILABLE":
                return
            if state == "PROCESSING_FAILED":
                raise RejectedFailure("MEDIA_PROCESSING_FAILED", "LinkedIn could not process the image")
            if time.monotonic() > deadline:
                return  # the create call's retry takes over
            await poll_delay(None, self.settings.poll_interval, self.settings.poll_max_interval)

    async def reconcile(self, ctx: PublishContext) -> Reconciliation:
        post = ctx.post
        if post.platform_post_id:
            return Reconciliation(Verdict.PUBLISHED, Published(post.platform_post_id, permalink(post.platform_post_id)))
        # The URN from x-restli-id was never recorded, and a w_member_social app cannot list the member's posts:
        # nobody can tell without looking. No retry_after: a person checks the profile and resolves the post.
        return Reconciliation(Verdict.UNKNOWN, reason="LINKEDIN_OUTCOME_UNKNOWN")


def _media_not_available(refused: RejectedFailure) -> bool:
    text = f"{refused.reason} {refused.message}".upper()
    return "AVAILABLE" in text or "WAITING_UPLOAD" in text

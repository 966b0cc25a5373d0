"""The embedded `outbox` platform: each post becomes `<outbox>/<post id>/post.json` plus copies of its media.

The folder appears in one atomic rename, so a post is in the outbox completely or not at all, and at most once:
the post id is the folder name, and a folder that already exists is the proof it went out.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import mimetypes
import os
import shutil
import uuid
from pathlib import Path

from contentpipe.oauth.adapters.publishers.media import MediaFetcher
from contentpipe.oauth.domain.posts import Platform, Post
from contentpipe.oauth.service_layer.posting_ports import (
    PublishContext,
    Published,
    Reconciliation,
    RetryableFailure,
    Verdict,
)


class OutboxPublisher:
    platform = Platform.OUTBOX

    def __init__(self, folder: Path, media: MediaFetcher) -> None:
        self._folder = folder
        self._media = media

    def _target(self, ctx: PublishContext) -> Path:
        folder = ctx.credentials.metadata.get("outbox_dir") or str(self._folder)
        return Path(folder) / ctx.post.id

    @staticmethod
    def _published(target: Path, post: Post) -> Published:
        return Published(platform_post_id=post.id, permalink=(target / "post.json").as_uri())

    async def publish(self, ctx: PublishContext) -> Published:
        post = ctx.post
        target = self._target(ctx)
        if (target / "post.json").exists():
            return self._published(target, post)
        staging = target.parent / f".staging-{post.id}-{uuid.uuid4().hex[:8]}"
        try:
            await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=True)
            items = []
            for index, item in enumerate(post.media):
                async with self._media.open(item) as local:
                    ext = mimetypes.guess_extension(local.content_type or item.mime) or ""
                    name = f"media-{index}{ext}"
                    await asyncio.to_thread(shutil.copyfile, local.path, staging / name)
                digest = hashlib.sha256(await asyncio.to_thread((staging / name).read_bytes)).hexdigest()
                items.append(
                    {
                        "file": name,
                        "uri": item.uri,
                        "kind": item.kind.value,
                        "content_type": local.content_type or item.mime,
                        "sha256": digest,
                    }
                )
            document = {
                "id": post.id,
                "name": post.name,
                "owner": post.owner,
                "connection": post.connection,
                "text": post.text,
                "media": items,
                "options": post.options.to_dict(),
                "fingerprint": post.fingerprint,
                "published_time": ctx.now().isoformat(),
            }
            await asyncio.to_thread((staging / "post.json").write_text, json.dumps(document, indent=2))
            await ctx.journal.arm()
            try:
                await asyncio.to_thread(os.rename, staging, target)
            except OSError:
                if (target / "post.json").exists():  # another worker (or our earlier self) got there first
                    return self._published(target, post)
                raise
        except OSError as exc:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            if post.create_sent_time is not None and not (target / "post.json").exists():
                await ctx.journal.disarm()
            raise RetryableFailure("OUTBOX_WRITE_FAILED", f"writing to the outbox failed: {exc.strerror}") from None
        result = self._published(target, post)
        await ctx.journal.created(result.platform_post_id, result.permalink)
        return result

    async def reconcile(self, ctx: PublishContext) -> Reconciliation:
        target = self._target(ctx)
        if (target / "post.json").exists():
            return Reconciliation(Verdict.PUBLISHED, self._published(target, ctx.post))
        return Reconciliation(Verdict.NOT_PUBLISHED, reason="NOT_IN_OUTBOX")

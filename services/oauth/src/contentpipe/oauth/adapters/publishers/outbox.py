"""The embedded `outbox` platform: each post becomes `<outbox>/<post id>/post.json` plus copies of its media.

The folder appears in one atomic rename, so a post is in the outbox completely or not at all, and at most once:
the post id is the folder name, and a folder that already exists is the proof it went out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mimetypes
import os
import shutil
import uuid
from pathlib import Path

from contentpipe.oauth.adapters.publishers.media import LocalMedia, MediaFetcher
from contentpipe.oauth.domain.posts import Media, Platform, Post
from contentpipe.oauth.service_layer.posting_ports import (
    PublishContext,
    Published,
    Reconciliation,
    RetryableFailure,
    Verdict,
)


class OutboxPublisher:
    platform = Platform.OUTBOX
    reports_rate_limits = False  # a local folder: nothing ever blocks it (the worker skips the block lookup)

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
        # No journal (arm/created): the publish is idempotent by construction, a retry after a crash finds the
        # folder and answers with it, so the two extra committed writes a remote platform needs buy nothing here.
        post = ctx.post
        target = self._target(ctx)
        async with contextlib.AsyncExitStack() as stack:
            sources = [(item, await stack.enter_async_context(self._media.open(item))) for item in post.media]
            try:
                await asyncio.to_thread(self._write, target, post, sources, ctx.now().isoformat())
            except OSError as exc:
                raise RetryableFailure("OUTBOX_WRITE_FAILED", f"writing to the outbox failed: {exc.strerror}") from None
        return self._published(target, post)

    @staticmethod
    def _write(target: Path, post: Post, sources: list[tuple[Media, LocalMedia]], published_time: str) -> None:
        """Stage the folder and rename it into place (one worker thread for all the file work)."""
        if (target / "post.json").exists():
            return
        staging = target.parent / f".staging-{post.id}-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir(parents=True, exist_ok=True)
            items = []
            for index, (item, local) in enumerate(sources):
                content_type = local.content_type or item.mime
                name = f"media-{index}{mimetypes.guess_extension(content_type) or ''}"
                shutil.copyfile(local.path, staging / name)
                items.append(
                    {
                        "file": name,
                        "uri": item.uri,
                        "kind": item.kind.value,
                        "content_type": content_type,
                        "sha256": hashlib.sha256((staging / name).read_bytes()).hexdigest(),
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
                "published_time": published_time,
            }
            (staging / "post.json").write_text(json.dumps(document, indent=2))
            try:
                os.rename(staging, target)
            except OSError:
                if not (target / "post.json").exists():  # else another worker (or our earlier self) got there first
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def reconcile(self, ctx: PublishContext) -> Reconciliation:
        target = self._target(ctx)
        if (target / "post.json").exists():
            return Reconciliation(Verdict.PUBLISHED, self._published(target, ctx.post))
        return Reconciliation(Verdict.NOT_PUBLISHED, reason="NOT_IN_OUTBOX")

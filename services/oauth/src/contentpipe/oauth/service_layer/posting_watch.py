"""Waking WaitPost at once: a post repository that announces every committed change of a post's state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from contentpipe.common.changes import ChangeNotifier
from contentpipe.common.workqueue import Lease
from contentpipe.oauth.domain.posts import Platform, Post, PostState
from contentpipe.oauth.service_layer.posting_ports import Added, ListQuery, PostRepository


class NotifyingPostRepository:
    """A PostRepository that calls `notifier.notify(id)` after each committed write that can change a post's
    state (claim, save, update_unleased); everything else goes straight to `inner`."""

    def __init__(self, inner: PostRepository, notifier: ChangeNotifier) -> None:
        self._inner = inner
        self._notifier = notifier

    async def add(self, post: Post, lease: Lease | None = None) -> Added:
        return await self._inner.add(post, lease)

    async def get(self, post_id: str) -> Post | None:
        return await self._inner.get(post_id)

    async def find_by_request(self, owner: str, request_id: str) -> Post | None:
        return await self._inner.find_by_request(owner, request_id)

    async def page(self, query: ListQuery) -> list[Post]:
        return await self._inner.page(query)

    async def update_unleased(self, post: Post, expected: PostState) -> bool:
        updated = await self._inner.update_unleased(post, expected)
        if updated:
            self._notifier.notify(post.id, post.snapshot(), final=post.state.terminal)
        return updated

    async def queue_stats(self) -> tuple[int, datetime | None]:
        return await self._inner.queue_stats()

    async def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[Post]:
        claimed = await self._inner.claim(worker_id, limit, lease_seconds)
        for post in claimed:
            self._notifier.notify(post.id, post.snapshot())
        return claimed

    async def save(self, post: Post, worker_id: str, *, release: bool = False) -> bool:
        saved = await self._inner.save(post, worker_id, release=release)
        if saved:
            self._notifier.notify(post.id, post.snapshot(), final=post.state.terminal)
        return saved

    async def renew(self, worker_id: str, ids: Sequence[str], lease_seconds: float) -> set[str]:
        return await self._inner.renew(worker_id, ids, lease_seconds)

    async def release(self, worker_id: str, ids: Sequence[str] | None = None) -> None:
        await self._inner.release(worker_id, ids)

    async def count_recent(
        self, platform: Platform, account_id: str, since: datetime, exclude: str
    ) -> tuple[int, datetime | None]:
        return await self._inner.count_recent(platform, account_id, since, exclude)

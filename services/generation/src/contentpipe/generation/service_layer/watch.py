"""Waking WaitGeneration at once: a repository that announces every committed save of a generation."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Protocol

from contentpipe.common.changes import ChangeNotifier
from contentpipe.common.workqueue import Lease
from contentpipe.generation.domain.model import Generation
from contentpipe.generation.service_layer.ports import Added, GenerationRepository, ListQuery, PredictionClaims


class StoredGenerations(GenerationRepository, PredictionClaims, Protocol):
    """The repository the service builds on: generations and the provider predictions they hold."""


class NotifyingRepository:
    """A GenerationRepository that calls `notifier.notify(id)` after each committed save and claim (the state
    changes a WaitGeneration in this process waits for); everything else goes straight to `inner`."""

    def __init__(self, inner: StoredGenerations, notifier: ChangeNotifier) -> None:
        self._inner = inner
        self._notifier = notifier

    async def add(self, generation: Generation, lease: Lease | None = None) -> Added:
        return await self._inner.add(generation, lease)

    async def get(self, generation_id: str) -> Generation | None:
        return await self._inner.get(generation_id)

    async def page(self, query: ListQuery) -> list[Generation]:
        return await self._inner.page(query)

    async def save(self, generation: Generation) -> bool:
        saved = await self._inner.save(generation)
        if saved:
            self._notifier.notify(generation.id, copy.copy(generation), final=generation.state.terminal)
        return saved

    async def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[Generation]:
        claimed = await self._inner.claim(worker_id, limit, lease_seconds)
        for generation in claimed:
            self._notifier.notify(generation.id, copy.copy(generation))
        return claimed

    async def renew(self, worker_id: str, ids: Sequence[str], lease_seconds: float) -> set[str]:
        return await self._inner.renew(worker_id, ids, lease_seconds)

    async def release(self, worker_id: str, ids: Sequence[str] | None = None) -> None:
        await self._inner.release(worker_id, ids)

    async def hold_prediction(self, provider: str, prediction_id: str, generation_id: str) -> bool:
        return await self._inner.hold_prediction(provider, prediction_id, generation_id)

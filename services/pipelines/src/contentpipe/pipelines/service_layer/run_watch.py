"""Waking WaitPipelineRun at once: a run repository that announces every committed save of a run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from contentpipe.common.changes import ChangeNotifier
from contentpipe.common.workqueue import Lease
from contentpipe.pipelines.domain.model import PipelineRun
from contentpipe.pipelines.service_layer.ports import Page, RunFilter, RunRepository


class NotifyingRunRepository:
    """A RunRepository that calls `notifier.notify(run id)` after each committed save (every state change of a run
    goes through `save`); everything else goes straight to `inner`. Waiters in other replicas re-read on their own
    (see contentpipe.common.changes)."""

    def __init__(self, inner: RunRepository, notifier: ChangeNotifier) -> None:
        self._inner = inner
        self._notifier = notifier

    async def save(self, run: PipelineRun, lease_owner: str) -> None:
        await self._inner.save(run, lease_owner)
        self._notifier.notify(run.id, run)  # frozen: the object is the snapshot

    async def add(self, run: PipelineRun, lease: Lease | None = None) -> PipelineRun:
        return await self._inner.add(run, lease)

    async def get(self, owner: str, pipeline_id: str | None, run_id: str) -> PipelineRun | None:
        return await self._inner.get(owner, pipeline_id, run_id)

    async def find_by_request_id(self, owner: str, request_id: str) -> PipelineRun | None:
        return await self._inner.find_by_request_id(owner, request_id)

    async def list_page(self, where: RunFilter, limit: int, after: Mapping[str, Any] | None) -> Page:
        return await self._inner.list_page(where, limit, after)

    async def claim(
        self,
        lease_owner: str,
        limit: int,
        lease_seconds: float,
        *,
        exclude_owners: Sequence[str] = (),
        run_id: str | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[PipelineRun]:
        return await self._inner.claim(
            lease_owner, limit, lease_seconds, exclude_owners=exclude_owners, run_id=run_id, exclude_ids=exclude_ids
        )

    async def renew(self, run_ids: Sequence[str], lease_owner: str, lease_seconds: float) -> set[str]:
        return await self._inner.renew(run_ids, lease_owner, lease_seconds)

    async def release(self, run_ids: Sequence[str] | None, lease_owner: str) -> None:
        await self._inner.release(run_ids, lease_owner)

    async def request_cancel(self, owner: str, run_id: str) -> None:
        await self._inner.request_cancel(owner, run_id)

    async def cancel_requested(self, run_id: str) -> bool:
        return await self._inner.cancel_requested(run_id)

    async def cancel_requested_among(self, run_ids: Sequence[str]) -> set[str]:
        return await self._inner.cancel_requested_among(run_ids)

    async def cancel_runs_of_pipeline(self, pipeline_id: str) -> list[PipelineRun]:
        return await self._inner.cancel_runs_of_pipeline(pipeline_id)

"""The run queue's handler on the common work-queue runtime: per-user limits, cancel watching, run outcomes.

Claims, lease renewal, wake-ups, bounded concurrency and release are `contentpipe.common.workqueue.LeasedWorker`'s.
This module adds what is particular to runs: a claim that skips users already at `max_per_user` runs on this
replica, a watch that looks for cancel requests of every run held here in one query each `cancel_check_interval`,
and the handler that executes one run and turns its failures into the right outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from contentpipe.common import errors
from contentpipe.common.error_class import ErrorClass
from contentpipe.common.workqueue import LEASE_RETURNED, Handled, Lease, LeasedWorker, WakeSignal
from contentpipe.pipelines.domain.model import (
    PipelineRun,
    RunState,
    StepError,
)
from contentpipe.pipelines.service_layer.engine.core import EngineSettings, now_utc
from contentpipe.pipelines.service_layer.engine.executor import RunExecutor
from contentpipe.pipelines.service_layer.metrics import PipelineMetrics, default_metrics
from contentpipe.pipelines.service_layer.ports import (
    LeaseLost,
    Peers,
    RunRepository,
)

_log = logging.getLogger(__name__)


class _RunLeases:
    """The run repository as the runtime's `LeaseQueue` (its argument order)."""

    def __init__(self, runs: RunRepository) -> None:
        self._runs = runs

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[PipelineRun]:
        return await self._runs.claim(owner, limit, lease_seconds)

    async def renew(self, owner: str, ids: Sequence[str], lease_seconds: float) -> set[str]:
        return await self._runs.renew(ids, owner, lease_seconds)

    async def release(self, owner: str, ids: Sequence[str] | None = None) -> None:
        await self._runs.release(ids, owner)


class Worker:
    """Executes claimed runs concurrently, within the per-replica (`queue.concurrency`) and per-user limits."""

    def __init__(
        self,
        runs: RunRepository,
        peers: Peers,
        settings: EngineSettings,
        metrics: PipelineMetrics | None = None,
        *,
        wake: WakeSignal | None = None,
    ) -> None:
        self._runs = runs
        self._peers = peers
        self._settings = settings
        self._metrics = metrics if metrics is not None else default_metrics()
        self._cancel_events: dict[str, asyncio.Event] = {}
        self._reserved_owners: Counter[str] = Counter()  # users of runs being inserted for `start`
        self.queue: LeasedWorker[PipelineRun] = LeasedWorker(
            "pipelines",
            _RunLeases(runs),
            self._execute,
            settings.queue,
            key=lambda run: run.id,
            wake=wake,
            claim=self._claim,
            watch=self._watch_cancel_requests,
            watch_interval=settings.cancel_check_interval,
        )

    @property
    def in_flight(self) -> int:
        return self.queue.in_flight

    def reserve(self, run: PipelineRun) -> Lease | None:
        """The lease to insert `run` with when this replica can execute it at once (`RunDispatch`): the loop runs,
        has room, and the run's user is below `max_per_user` here."""
        held = Counter(held.owner for held in self.queue.held()) + self._reserved_owners
        if held[run.owner] >= self._settings.max_per_user:
            return None
        lease = self.queue.reserve()
        if lease is not None:
            self._reserved_owners[run.owner] += 1
        return lease

    def start(self, run: PipelineRun) -> None:
        self._reserved_owners[run.owner] -= 1
        self.queue.start_reserved(run)

    def unreserve(self, run: PipelineRun) -> None:
        self._reserved_owners[run.owner] -= 1
        self.queue.unreserve()

    def wake(self) -> None:
        """A run was queued: claim now rather than at the next interval (and tell the other replicas)."""
        self.queue.wake.set()

    async def run_forever(self) -> None:
        """Claim and execute until cancelled; then stop the runs here and give their leases back."""
        await self.queue.run()

    async def drain(self) -> int:
        """Execute every claimable run to the end, then return how many were executed (batch mode)."""
        return await self.queue.drain()

    async def _claim(
        self, owner: str, limit: int, lease_seconds: float, held: Sequence[PipelineRun]
    ) -> list[PipelineRun]:
        """Claim runs of users below their limit here; a batch that brings a user over it gives the surplus back."""
        counts = Counter(run.owner for run in held)
        limit_per_user = self._settings.max_per_user
        excluded = [user for user, count in counts.items() if count >= limit_per_user]
        claimed = await self._runs.claim(
            owner,
            limit,
            lease_seconds,
            exclude_owners=excluded,
            # A run whose lease lapsed while it still runs here is not leased again by this replica.
            exclude_ids=[run.id for run in held],
        )
        kept: list[PipelineRun] = []
        surplus: list[str] = []
        for run in claimed:
            if counts[run.owner] >= limit_per_user:
                surplus.append(run.id)
                continue
            counts[run.owner] += 1
            kept.append(run)
        if surplus:
            # For other replicas (or this one, once a run of that user ends) at once, not after the lease.
            await self._runs.release(surplus, owner)
        if surplus or excluded:
            self.queue.left_work_behind()  # runs of users at their limit wait: claim again when one of theirs ends
        return kept

    async def _watch_cancel_requests(self, run_ids: Sequence[str]) -> None:
        """One query for all runs held here: wake the runs whose cancellation was requested (or that were deleted)."""
        for run_id in await self._runs.cancel_requested_among(run_ids):
            event = self._cancel_events.get(run_id)
            if event is not None:
                event.set()

    async def _execute(self, run: PipelineRun) -> Handled | None:
        cancel_event = self._cancel_events.setdefault(run.id, asyncio.Event())
        executor = RunExecutor(self._runs, self._peers, self._settings, cancel_event, metrics=self._metrics)
        try:
            executed = await executor.execute(run)
            if executed.state.terminal:
                return LEASE_RETURNED  # the write that ended the run cleared its lease
        except LeaseLost:
            _log.warning("lease lost; another worker continues the run", extra={"run": run.name})
        except errors.Unavailable:
            # Our own database hiccuped: the run is not at fault. Its lease is given back when this returns; it
            # continues from its last recorded step at the next claim.
            _log.warning("database unavailable; the run will be picked up again", extra={"run": run.name})
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("run crashed in the engine", extra={"run": run.name})
            current = executor.run or run
            error = StepError(
                ErrorClass.PERMANENT,
                "ENGINE_ERROR",
                "the pipelines engine hit an internal error; resume the run to try again",
            )
            with contextlib.suppress(Exception):
                crashed = replace(current, state=RunState.FAILED, error=error, finish_time=now_utc())
                await self._runs.save(crashed, self._settings.queue.owner)
                self._metrics.transition(current, crashed)
        finally:
            # No await between here and the runtime dropping the task: the watch cannot re-create the event.
            self._cancel_events.pop(run.id, None)
        return None

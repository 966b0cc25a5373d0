"""Claims runs and executes them concurrently, renewing leases and watching for cancel requests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import replace

from contentpipe.common import errors
from contentpipe.common.error_class import ErrorClass
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


class Worker:
    """Claims runs and executes them concurrently, within per-replica and per-user limits."""

    def __init__(
        self, runs: RunRepository, peers: Peers, settings: EngineSettings, metrics: PipelineMetrics | None = None
    ) -> None:
        self._runs = runs
        self._peers = peers
        self._settings = settings
        self._metrics = metrics if metrics is not None else default_metrics()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._owners: dict[str, str] = {}
        self._cancel_events: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def wake(self) -> None:
        """A run was queued: claim now rather than at the next interval."""
        self._wake.set()

    async def run_forever(self) -> None:
        renewer = asyncio.create_task(self._renew_forever(), name="lease-renewer")
        try:
            while True:
                try:
                    await self.claim_once()
                except Exception:
                    _log.exception("claiming runs failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._settings.claim_interval)
                self._wake.clear()
        finally:
            renewer.cancel()
            await self._stop_tasks()

    async def drain(self) -> int:
        """Execute every claimable run to the end, then return how many were executed (batch mode)."""
        renewer = asyncio.create_task(self._renew_forever(), name="lease-renewer")
        executed = 0
        try:
            while True:
                claimed = await self.claim_once()
                executed += claimed
                if not self._tasks and not claimed:
                    return executed
                if self._tasks:
                    await asyncio.wait(
                        list(self._tasks.values()),
                        timeout=self._settings.claim_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
        finally:
            renewer.cancel()
            await self._stop_tasks()

    async def claim_once(self) -> int:
        capacity = self._settings.max_in_flight - len(self._tasks)
        if capacity <= 0:
            return 0
        counts = Counter(self._owners.values())
        saturated = [owner for owner, count in counts.items() if count >= self._settings.max_per_user]
        claimed = await self._runs.claim(
            self._settings.worker_id,
            capacity,
            self._settings.lease_seconds,
            exclude_owners=saturated,
            # A run whose lease lapsed while its task is still here is not started twice in this process.
            exclude_ids=list(self._tasks),
        )
        surplus: list[str] = []
        started = 0
        for run in claimed:
            if counts[run.owner] >= self._settings.max_per_user:
                surplus.append(run.id)
                continue
            counts[run.owner] += 1
            self._start(run)
            started += 1
        if surplus:
            await self._runs.release(surplus, self._settings.worker_id)
        return started

    def _start(self, run: PipelineRun) -> None:
        self._owners[run.id] = run.owner
        self._cancel_events[run.id] = asyncio.Event()
        task = asyncio.create_task(self._execute(run), name=f"run-{run.id}")
        self._tasks[run.id] = task

    async def _execute(self, run: PipelineRun) -> None:
        executor = RunExecutor(
            self._runs, self._peers, self._settings, self._cancel_events[run.id], metrics=self._metrics
        )
        try:
            await executor.execute(run)
        except LeaseLost:
            _log.warning("lease lost; another worker continues the run", extra={"run": run.name})
        except errors.Unavailable:
            # Our own database hiccuped: the run is not at fault. Give it back; it continues from its last
            # recorded step at the next claim.
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
                await self._runs.save(crashed, self._settings.worker_id)
                self._metrics.transition(current, crashed)
        finally:
            if self._tasks.get(run.id) is asyncio.current_task():
                self._tasks.pop(run.id, None)
                self._owners.pop(run.id, None)
                self._cancel_events.pop(run.id, None)
                with contextlib.suppress(Exception):
                    await self._runs.release([run.id], self._settings.worker_id)

    async def _renew_forever(self) -> None:
        """Renew leases every third of their length, and look for cancel requests of all runs in one query."""
        interval = max(self._settings.lease_seconds / 3, 0.05)
        loop = asyncio.get_running_loop()
        next_renewal = loop.time() + interval
        while True:
            await asyncio.sleep(min(self._settings.cancel_check_interval, interval))
            ids = list(self._tasks)
            if not ids:
                continue
            try:
                for run_id in await self._runs.cancel_requested_among(ids):
                    event = self._cancel_events.get(run_id)
                    if event is not None:
                        event.set()
            except Exception:
                _log.exception("looking for cancel requests failed; retrying")
            if loop.time() < next_renewal:
                continue
            next_renewal = loop.time() + interval
            try:
                held = await self._runs.renew(ids, self._settings.worker_id, self._settings.lease_seconds)
            except Exception:
                _log.exception("renewing leases failed; retrying")
                continue
            for run_id in ids:
                task = self._tasks.get(run_id)
                if run_id not in held and task is not None and not task.done():
                    _log.warning("lease lost; stopping the run here", extra={"run_id": run_id})
                    task.cancel()

    async def _stop_tasks(self) -> None:
        tasks = list(self._tasks.values())
        ids = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._runs.release(ids, self._settings.worker_id)

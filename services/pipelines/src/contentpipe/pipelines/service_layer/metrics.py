"""Run metrics (OpenTelemetry): runs started and finished by state, step durations by step kind, queue depth and
the age of the oldest queued run (observable gauges over a sample the worker process refreshes periodically)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from contentpipe.common.telemetry import get_meter
from contentpipe.pipelines.domain.model import PipelineRun, StepState

_STEP_FINISHED = (StepState.SUCCEEDED, StepState.FAILED, StepState.CANCELED)
_log = logging.getLogger(__name__)


class QueueStats(Protocol):
    async def queue_stats(self) -> tuple[int, datetime | None]:
        """How many runs are QUEUED, and the create time of the oldest one (None when none is)."""
        ...


class PipelineMetrics:
    """Instruments created once; the engine reports each saved transition of a run."""

    def __init__(self, meter: Any = None) -> None:
        meter = meter if meter is not None else get_meter("contentpipe.pipelines")
        self._started = meter.create_counter(
            "contentpipe.pipelines.runs.started", description="Runs a worker started executing (QUEUED -> RUNNING)"
        )
        self._finished = meter.create_counter(
            "contentpipe.pipelines.runs.finished", description="Runs that reached a terminal state, by state"
        )
        self._step_duration = meter.create_histogram(
            "contentpipe.pipelines.step.duration",
            unit="s",
            description="Time from a step's first attempt to its terminal state (retries included), by kind",
        )
        self._queued = 0
        self._oldest_age = 0.0
        meter.create_observable_gauge(
            "contentpipe.pipelines.runs.queued",
            callbacks=[self._observe_queued],
            description="Runs waiting in QUEUED (last sample)",
        )
        meter.create_observable_gauge(
            "contentpipe.pipelines.runs.queued.oldest_age",
            callbacks=[self._observe_oldest_age],
            unit="s",
            description="Age of the oldest QUEUED run (0 when none is waiting; last sample)",
        )

    def _observe_queued(self, _options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        return [Observation(self._queued)]

    def _observe_oldest_age(self, _options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        return [Observation(self._oldest_age)]

    def queue_sample(self, depth: int, oldest: datetime | None, now: datetime) -> None:
        self._queued = depth
        self._oldest_age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0

    def run_started(self, run: PipelineRun) -> None:
        self._started.add(1, {"trigger": run.trigger.kind.value})

    def transition(self, before: PipelineRun | None, after: PipelineRun) -> None:
        """Record what changed between two saved versions of a run (steps that finished, the run finishing)."""
        for index, step_run in enumerate(after.steps):
            previous = before.steps[index] if before is not None and index < len(before.steps) else None
            if step_run.state not in _STEP_FINISHED or (previous is not None and previous.state == step_run.state):
                continue
            if step_run.start_time is None or step_run.finish_time is None:
                continue  # a PENDING step canceled with its run never ran
            seconds = max((step_run.finish_time - step_run.start_time).total_seconds(), 0.0)
            kind = after.definition[index].kind if index < len(after.definition) else "unknown"
            self._step_duration.record(seconds, {"kind": kind, "state": step_run.state.value})
        if after.state.terminal and (before is None or not before.state.terminal):
            self._finished.add(1, {"state": after.state.value})


async def sample_queue_forever(source: QueueStats, metrics: PipelineMetrics, interval_seconds: float = 15.0) -> None:
    """One cheap aggregate query per interval (not per claim) feeds the queue gauges."""
    while True:
        try:
            depth, oldest = await source.queue_stats()
            metrics.queue_sample(depth, oldest, datetime.now(UTC))
        except Exception:
            _log.warning("sampling the run queue failed", exc_info=True)
        await asyncio.sleep(interval_seconds)


@functools.cache
def default_metrics() -> PipelineMetrics:
    return PipelineMetrics()

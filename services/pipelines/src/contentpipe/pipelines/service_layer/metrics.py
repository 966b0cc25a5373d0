"""Run metrics (OpenTelemetry): runs started and finished by state, step durations by step kind."""

from __future__ import annotations

import functools
from typing import Any

from contentpipe.common.telemetry import get_meter
from contentpipe.pipelines.domain.model import PipelineRun, StepState

_STEP_FINISHED = (StepState.SUCCEEDED, StepState.FAILED, StepState.CANCELED)


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


@functools.cache
def default_metrics() -> PipelineMetrics:
    return PipelineMetrics()

"""Schedule-health metrics per job (OpenTelemetry): lag, missed/skipped/coalesced, failures, dispatch errors."""

from __future__ import annotations

from typing import Any

from contentpipe.common.telemetry import get_meter


class ScheduleMetrics:
    """Instruments created once; each call records with the job as an attribute (per-schedule, rule 15)."""

    def __init__(self, meter: Any = None) -> None:
        meter = meter if meter is not None else get_meter("contentpipe.scheduler")
        self._lag = meter.create_histogram(
            "scheduler.job.lag", unit="s", description="Actual trigger time minus nominal fire time"
        )
        self._not_run = meter.create_counter(
            "scheduler.job.runs_not_run", description="Fire times recorded missed, coalesced or skipped"
        )
        self._triggered = meter.create_counter("scheduler.job.runs_triggered", description="Pipeline runs created")
        self._errors = meter.create_counter(
            "scheduler.dispatch.errors", description="Calls to the pipelines service that failed transiently"
        )
        create_gauge = getattr(meter, "create_gauge", None)
        self._failures: Any = (
            create_gauge("scheduler.job.consecutive_failures", description="Failed runs in a row per job")
            if create_gauge is not None
            else None
        )

    def lag(self, job_id: str, seconds: float) -> None:
        self._lag.record(max(seconds, 0.0), {"job": job_id})

    def not_run(self, job_id: str, outcome: str, count: int = 1) -> None:
        if count:
            self._not_run.add(count, {"job": job_id, "outcome": outcome})

    def triggered(self, job_id: str, count: int = 1) -> None:
        self._triggered.add(count, {"job": job_id})

    def dispatch_error(self, operation: str) -> None:
        self._errors.add(1, {"operation": operation})

    def consecutive_failures(self, job_id: str, value: int) -> None:
        if self._failures is not None:
            self._failures.set(value, {"job": job_id})

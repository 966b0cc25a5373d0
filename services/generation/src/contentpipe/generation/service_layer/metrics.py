"""Generation metrics (OpenTelemetry): latency by provider and model, generations finished by state."""

from __future__ import annotations

from typing import Any

from contentpipe.common.telemetry import get_meter
from contentpipe.generation.domain.model import Generation


class GenerationMetrics:
    """Instruments created once; `finished` is called when a generation reaches a terminal state."""

    def __init__(self, meter: Any = None) -> None:
        meter = meter if meter is not None else get_meter("contentpipe.generation")
        self._duration = meter.create_histogram(
            "contentpipe.generation.duration",
            unit="s",
            description="Time from a generation's start (or creation if it never started) to its terminal state",
        )
        self._finished = meter.create_counter(
            "contentpipe.generation.finished", description="Generations that reached a terminal state"
        )

    def finished(self, generation: Generation) -> None:
        if not generation.state.terminal:
            return
        attributes = {
            "provider": generation.provider,
            "model": generation.model,
            "state": generation.state.value,
        }
        self._finished.add(1, attributes)
        began = generation.start_time or generation.create_time
        if generation.finish_time is not None:
            seconds = max((generation.finish_time - began).total_seconds(), 0.0)
            self._duration.record(seconds, attributes)

"""Run metrics (OpenTelemetry) after real executions through the engine: started, finished by state, step durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from contentpipe.pipelines.domain.model import PipelineRun, RunState
from contentpipe.pipelines.service_layer.engine.executor import RunExecutor
from contentpipe.pipelines.service_layer.metrics import PipelineMetrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.pipelines.unit.memory import FakePeerServices, MemoryRuns
from tests.pipelines.unit.test_engine import SETTINGS, failed, make_run, post, video

pytestmark = pytest.mark.unit


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, str], object]]]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, list[tuple[dict[str, str], object]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = (point.count, point.sum)  # type: ignore[union-attr]
                    attributes = {str(k): str(v) for k, v in (point.attributes or {}).items()}
                    out.setdefault(metric.name, []).append((attributes, value))
    return out


async def _execute(metrics: PipelineMetrics, peers: FakePeerServices, run: PipelineRun) -> PipelineRun:
    runs = MemoryRuns()
    await runs.add(run)
    (claimed,) = await runs.claim("w1", 1, 5)
    return await RunExecutor(runs, peers.peers(), SETTINGS, metrics=metrics).execute(claimed)


async def test_runs_record_started_finished_by_state_and_step_durations_by_kind() -> None:
    reader = InMemoryMetricReader()
    metrics = PipelineMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    ok = await _execute(metrics, FakePeerServices(), make_run(video(), post("connections/a"), run_id="r1"))
    bad = await _execute(
        metrics, FakePeerServices(generation_outcomes=[failed(False)]), make_run(video(), post("connections/a"))
    )
    assert ok.state == RunState.SUCCEEDED and bad.state == RunState.FAILED

    points = _points(reader)
    assert points["contentpipe.pipelines.runs.started"] == [({"trigger": "MANUAL"}, 2)]
    assert sorted(points["contentpipe.pipelines.runs.finished"], key=str) == [
        ({"state": "FAILED"}, 1),
        ({"state": "SUCCEEDED"}, 1),
    ]
    steps = {(a["kind"], a["state"]): v for a, v in points["contentpipe.pipelines.step.duration"]}
    # The failed run's post step never started: no duration for it.
    assert set(steps) == {
        ("generate_content", "SUCCEEDED"),
        ("generate_content", "FAILED"),
        ("post_to_platform", "SUCCEEDED"),
    }
    histogram = steps[("generate_content", "SUCCEEDED")]
    assert isinstance(histogram, tuple) and histogram[0] == 1 and histogram[1] >= 0


async def test_queue_gauges_report_the_last_sample() -> None:
    reader = InMemoryMetricReader()
    metrics = PipelineMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    now = datetime.now(UTC)
    metrics.queue_sample(3, now - timedelta(seconds=90), now)
    points = _points(reader)
    assert points["contentpipe.pipelines.runs.queued"] == [({}, 3)]
    assert points["contentpipe.pipelines.runs.queued.oldest_age"] == [({}, 90.0)]
    metrics.queue_sample(0, None, now)
    points = _points(reader)
    assert points["contentpipe.pipelines.runs.queued"] == [({}, 0)]
    assert points["contentpipe.pipelines.runs.queued.oldest_age"] == [({}, 0.0)]

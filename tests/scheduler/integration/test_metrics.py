"""Per-job schedule-health metrics (OpenTelemetry) after an outage: lag, coalesced/missed, triggered."""

from __future__ import annotations

from datetime import timedelta

import pytest
from contentpipe.scheduler.service_layer.jobs import JobInput
from contentpipe.scheduler.service_layer.metrics import ScheduleMetrics
from contentpipe.scheduler.service_layer.processing import Processor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.scheduler.conftest import Harness

pytestmark = pytest.mark.integration


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, str], object]]]:
    data = reader.get_metrics_data()
    out: dict[str, list[tuple[dict[str, str], object]]] = {}
    assert data is not None
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


async def test_outage_is_visible_per_job_in_metrics(harness: Harness) -> None:
    h = harness
    reader = InMemoryMetricReader()
    metrics = ScheduleMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    processor = Processor(h.components.store, h.components.pipelines, lease_owner="metrics-test", metrics=metrics)
    h.fake.add_pipeline("pipelines/p1", "user-1")
    now = await h.now()
    latest = now.replace(second=0, microsecond=0) - timedelta(minutes=2)
    job = await h.components.jobs.create_job(
        "user-1", JobInput(pipeline="pipelines/p1", cron_expression=f"{latest.minute} * * * *"), job_id="metered"
    )
    await h.set_next_fire(job.id, latest - timedelta(hours=2))
    await processor.process(10)

    points = _points(reader)
    assert points["scheduler.job.runs_not_run"] == [({"job": "metered", "outcome": "coalesced"}, 2)]
    assert points["scheduler.job.runs_triggered"] == [({"job": "metered"}, 1)]
    [(attributes, histogram)] = points["scheduler.job.lag"]
    assert isinstance(histogram, tuple)
    count, total = histogram
    assert attributes == {"job": "metered"} and count == 1
    assert 120 <= total < 300  # the catch-up ran about two minutes after its nominal time
    stored = await h.components.store.get_job(job.id)
    assert stored is not None and stored.stats.last_lag is not None
    assert timedelta(minutes=2) <= stored.stats.last_lag < timedelta(minutes=5)
    assert stored.stats.missed_count == 2 and stored.stats.triggered_count == 1
